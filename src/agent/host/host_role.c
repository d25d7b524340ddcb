/* The `host` role: choose the accelerator, adopt or start the configured VMs,
 * report their states and samples, carry out the server's orders. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host/accel.h"
#include "agent/agent_role.h"
#include "agent/host/host_data.h"
#include "agent/host/host_fence.h"
#include "agent/host/host_reboot.h"
#include "agent/host/host_vm.h"
#include "agent/host/vm.h"
#include "common/cleanup.h"
#include "common/log.h"

/* An order waiting for the VM to get where it asked. */
struct pending_order {
    json_t *id; /* NULL when none */
    char action[24];
    json_t *overtaken; /* a vm_stop's id that a vm_kill overtook: answered with it */
};

struct host_role {
    struct agent *agent;
    struct accel_probe *probe;
    char accel[8];
    struct ram_dir ram; /* ram_dir, checked at start */
    struct qemu_allow qemu_allow;
    struct host_vm_env env;
    struct host_vm **vms;
    struct pending_order *pending;
    size_t n_vms;
    bool stopping_all; /* leave(stop): waiting for every QEMU to end */
    /* Self-fencing (docs/fencing.md). */
    struct host_fence *fence;
};

static struct host_role *role_of(struct agent *a)
{
    return a->role_data;
}

static size_t vm_index(const struct host_role *r, const struct host_vm *vm)
{
    for (size_t i = 0; i < r->n_vms; i++)
        if (r->vms[i] == vm)
            return i;
    return r->n_vms;
}

static void finish_order(struct host_role *r, size_t i, bool ok, const char *error)
{
    struct pending_order *p = &r->pending[i];
    if (p->id == NULL)
        return;
    agent_reply(r->agent, p->id, ok, error);
    json_decref(p->id);
    p->id = NULL;
    if (p->overtaken) {
        agent_reply(r->agent, p->overtaken, ok, error);
        json_decref(p->overtaken);
        p->overtaken = NULL;
    }
}

/* Whether the VM's new state answers its pending order. */
static void check_pending(struct host_role *r, size_t i)
{
    struct pending_order *p = &r->pending[i];
    struct host_vm *vm = r->vms[i];
    enum vm_state s = host_vm_state(vm);
    if (p->id == NULL)
        return;
    if (strcmp(p->action, "vm_start") == 0) {
        if (s == VM_STATE_RUNNING || s == VM_STATE_PAUSED)
            finish_order(r, i, true, NULL);
        else if (!vm_state_is_live(s))
            finish_order(r, i, false, host_vm_cause(vm));
    } else if (strcmp(p->action, "vm_warm_restart") == 0) {
        /* answered by on_warm_done */
    } else if (!host_vm_has_process(vm) && !host_vm_preparing(vm)) {
        finish_order(r, i, true, NULL);
    }
}

static bool all_stopped(const struct host_role *r)
{
    for (size_t i = 0; i < r->n_vms; i++)
        if (host_vm_has_process(r->vms[i]) || host_vm_preparing(r->vms[i]))
            return false;
    return true;
}

static void on_vm_changed(struct host_vm *vm, int64_t ts_ms, void *opaque)
{
    struct host_role *r = opaque;
    json_t *body = json_pack("{s:s, s:s, s:s, s:I, s:I}", "vm", host_vm_name(vm), "state",
                             vm_state_name(host_vm_state(vm)), "cause", host_vm_cause(vm), "ts_ms",
                             (json_int_t)ts_ms, "boots", (json_int_t)host_vm_boots(vm));
    if (body && host_vm_pid(vm) > 0)
        json_object_set_new(body, "pid", json_integer(host_vm_pid(vm)));
    if (body && host_vm_has_process(vm) && host_vm_qemu(vm))
        json_object_set_new(body, "qemu", json_string(host_vm_qemu(vm)));
    host_fence_patch(r->fence, host_vm_name(vm), host_vm_state(vm), host_vm_cause(vm),
                     host_vm_pid(vm), body);
    host_fence_sync(r->fence, r->vms, r->n_vms);
    agent_report_event(r->agent, body);
    size_t i = vm_index(r, vm);
    if (i < r->n_vms)
        check_pending(r, i);
    if (r->stopping_all && all_stopped(r))
        agent_role_left(r->agent);
}

static void remove_orphan_ram(const struct vcr_agent_config *cfg)
{
    const char **names = calloc(cfg->n_vms ? cfg->n_vms : 1, sizeof(*names));
    if (names == NULL)
        return;
    for (size_t i = 0; i < cfg->n_vms; i++)
        names[i] = cfg->vms[i].name;
    vm_remove_orphan_ram(cfg->ram_dir, cfg->state_dir, cfg->host, names, cfg->n_vms);
    /* RAM files left in /dev/shm from before ram_dir pointed elsewhere: none is
     * used any more, unless its QEMU still runs. */
    if (strcmp(cfg->ram_dir, VM_SHM_DIR) != 0)
        vm_remove_orphan_ram(VM_SHM_DIR, cfg->state_dir, cfg->host, NULL, 0);
    free(names);
}

static void start_vms(struct host_role *r)
{
    const struct vcr_agent_config *cfg = r->agent->cfg;
    remove_orphan_ram(cfg);
    for (size_t i = 0; i < cfg->n_vms; i++) {
        cleanup_error vcr_error_t err = NULL;
        struct host_vm *vm = host_vm_new(&r->env, &cfg->vms[i], on_vm_changed, r, &err);
        if (vm == NULL) {
            log_error("%s", vcr_error_msg(err));
            continue;
        }
        r->vms[r->n_vms++] = vm;
        bool fenced = host_fence_blocks_autostart(r->fence, cfg->vms[i].name);
        if (host_vm_warm_recover(vm, fenced) || host_vm_adopt(vm) || host_vm_found_ended(vm))
            continue;
        if (fenced) {
            log_warn("VM %s: not autostarted: it was self-fenced (%s/fenced.json); only a "
                     "vm_start order brings it back",
                     cfg->vms[i].name, cfg->state_dir);
            continue;
        }
        if (!cfg->vms[i].autostart) {
            log_info("VM %s: not started (autostart: false)", cfg->vms[i].name);
            continue;
        }
        if (host_vm_start(vm, "autostart", &err) < 0)
            log_error("%s", vcr_error_msg(err));
    }
}

/* The server must know what it may count on before it relies on a self-fence
 * (docs/fencing.md, "Reporting"): hello carries it, this message each change. */
static void on_fence_changed(void *opaque)
{
    struct host_role *r = opaque;
    if (r->fence) /* NULL while host_fence_new attaches: the first hello says it */
        agent_report(r->agent, "self_fence", host_fence_report(r->fence));
}

static json_t *host_hello_extra(struct agent *a)
{
    return json_pack("{s:o}", "self_fence", host_fence_report(role_of(a)->fence));
}

static void on_accel(const struct accel_choice *choice, void *opaque)
{
    struct host_role *r = opaque;
    snprintf(r->accel, sizeof(r->accel), "%s", choice->accel);
    log_info("accel: %s (%s)", choice->accel, choice->reason);
    accel_probe_free(r->probe);
    r->probe = NULL;
    if (r->agent->leaving) {
        agent_role_left(r->agent);
        return;
    }
    /* The watchdog counts from its start and the server connection opens only
     * now: started before the accelerator probe (up to its deadline, 15-20 s), it
     * would fence the VMs of an agent that never had a chance to call in. */
    cleanup_error vcr_error_t err = NULL;
    struct agent *a = r->agent;
    r->fence = host_fence_new(a->base, a->cfg->state_dir, a->cfg->fence_timeout_ms, NULL,
                              on_fence_changed, r, &err);
    if (r->fence == NULL) {
        log_error("%s", vcr_error_msg(err));
        event_base_loopbreak(a->base);
        return;
    }
    start_vms(r);
    host_fence_sync(r->fence, r->vms, r->n_vms);
    agent_role_ready(r->agent, r->accel);
}

/* VM_QEMU_RUN_ROOT/HOST-HASH (vm.h): made 0700 for QEMU's user, who binds
 * the warm restart's migration sockets in it after -runas.  Each level must be
 * a directory (not a link) of root, or the last one of that user. */
static int open_private_dir(const char *dir, uid_t other, vcr_error_t *err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        vcr_error_errno(err, "`%s`", dir);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (st.st_uid != 0 && st.st_uid != other) {
        close(fd);
        return vcr_error_make(err, EPERM, "`%s`: owned by uid %u; allowed: root's or qemu_user's",
                              dir, (unsigned)st.st_uid);
    }
    return fd;
}

static char *qemu_run_dir(const struct vcr_agent_config *cfg)
{
    char *dir = NULL;
    if (asprintf(&dir, VM_QEMU_RUN_ROOT "/%s-%08x", cfg->host, vm_state_dir_hash(cfg->state_dir)) <
        0)
        return NULL;
    return dir;
}

static int make_qemu_run_dir(const struct vcr_agent_config *cfg, vcr_error_t *err)
{
    cleanup_free char *dir = qemu_run_dir(cfg);
    if (dir == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cleanup_close int root = open_private_dir(VM_QEMU_RUN_ROOT, 0, err);
    if (root < 0 || fchown(root, 0, 0) < 0 || fchmod(root, 0755) < 0)
        return root < 0 ? -1 : vcr_error_errno(err, "`%s`", VM_QEMU_RUN_ROOT);
    cleanup_close int fd = open_private_dir(dir, cfg->qemu_uid, err);
    if (fd < 0 || fchown(fd, cfg->qemu_uid, cfg->qemu_gid) < 0 || fchmod(fd, 0700) < 0)
        return fd < 0 ? -1 : vcr_error_errno(err, "`%s`", dir);
    return 0;
}

static int host_init(struct agent *a, vcr_error_t *err)
{
    struct host_role *r = calloc(1, sizeof(*r));
    size_t n = a->cfg->n_vms ? a->cfg->n_vms : 1;
    if (r == NULL || (r->vms = calloc(n, sizeof(*r->vms))) == NULL ||
        (r->pending = calloc(n, sizeof(*r->pending))) == NULL) {
        if (r)
            free(r->vms);
        free(r);
        return vcr_error_make(err, ENOMEM, "host role: out of memory");
    }
    r->agent = a;
    /* The RAM files' filesystem (ram_dir.h): tmpfs or hugetlbfs, nothing else. */
    if (ram_dir_probe(a->cfg->ram_dir, &r->ram, err) < 0) {
        free(r->vms);
        free(r->pending);
        free(r);
        return -1;
    }
    if (qemu_allow_init(&r->qemu_allow, a->cfg->qemu_allowed, a->cfg->n_qemu_allowed, a->cfg->qemu,
                        err) < 0) {
        free(r->vms);
        free(r->pending);
        free(r);
        return -1;
    }
    if (make_qemu_run_dir(a->cfg, err) < 0) {
        qemu_allow_clear(&r->qemu_allow);
        free(r->vms);
        free(r->pending);
        free(r);
        return -1;
    }
    for (size_t i = 0; i < r->qemu_allow.n; i++)
        log_info("QEMU binary allowed: %s", r->qemu_allow.paths[i]);
    /* The config resolved the user's ids if there are VMs and it is not root. */
    bool runas = a->cfg->qemu_uid != 0;
    if (runas)
        log_info("QEMU runs as %s (uid %u)", a->cfg->qemu_user, (unsigned)a->cfg->qemu_uid);
    else if (a->cfg->n_vms)
        log_warn("QEMU runs as root (qemu_user: root)");
    if (r->ram.backing == RAM_BACKING_HUGETLBFS)
        log_info("ram_dir %s: hugetlbfs, pages of %llu kB", r->ram.path,
                 (unsigned long long)(r->ram.page_size >> 10));
    else
        log_info("ram_dir %s: tmpfs", r->ram.path);
    r->env = (struct host_vm_env){
        .base = a->base,
        .qemu = a->cfg->qemu,
        .qemu_allow = &r->qemu_allow,
        .host = a->cfg->host,
        .state_dir = a->cfg->state_dir,
        .qemu_user = runas ? a->cfg->qemu_user : NULL,
        .qemu_uid = a->cfg->qemu_uid,
        .qemu_gid = a->cfg->qemu_gid,
        .accel = r->accel,
        .ram = &r->ram,
        .disk = {.qemu_img = a->cfg->qemu_img,
                 .genisoimage = a->cfg->genisoimage,
                 .host = a->cfg->host,
                 .state_dir = a->cfg->state_dir},
        .test_faults = VCR_TEST_FAULTS && a->test_faults,
    };
    a->role_data = r;
    r->probe = accel_resolve(a->base, a->cfg, on_accel, r, err);
    return r->probe ? 0 : -1;
}

static json_t *host_vm_list(struct agent *a)
{
    struct host_role *r = role_of(a);
    json_t *list = json_array();
    for (size_t i = 0; list && i < r->n_vms; i++) {
        json_t *vm = host_vm_json(r->vms[i]);
        const struct host_vm *v = r->vms[i];
        host_fence_patch(r->fence, host_vm_name(v), host_vm_state(v), host_vm_cause(v),
                         host_vm_has_process(v) ? host_vm_pid(v) : 0, vm);
        json_array_append_new(list, vm);
    }
    return list;
}

static json_t *host_sample(struct agent *a)
{
    struct host_role *r = role_of(a);
    json_t *list = json_array();
    for (size_t i = 0; list && i < r->n_vms; i++) {
        json_t *s = host_vm_sample(r->vms[i]);
        if (s)
            json_array_append_new(list, s);
    }
    return list;
}

static void on_warm_done(struct host_vm *vm, const struct host_vm_warm_result *res, void *opaque)
{
    struct host_role *r = opaque;
    size_t i = vm_index(r, vm);
    if (i >= r->n_vms || r->pending[i].id == NULL)
        return;
    json_t *members =
        json_pack("{s:s, s:b, s:f, s:f, s:f, s:f, s:f, s:I, s:s}", "vm", host_vm_name(vm),
                  "fallback", res->fallback, "launch_ms", res->launch_ms, "pause_ms", res->pause_ms,
                  "suspend_ms", res->suspend_ms, "resume_ms", res->resume_ms, "downtime_ms",
                  res->downtime_ms, "state_bytes", (json_int_t)res->state_bytes, "qemu", res->qemu);
    json_t *at = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "order", res->at.order,
                           "spawned", res->at.spawned, "ready", res->at.ready, "listening",
                           res->at.listening, "gate", res->at.gate, "stop", res->at.stop,
                           "migrated", res->at.migrated, "cont", res->at.cont);
    if (members && at)
        json_object_set_new(members, "at_ms", at);
    else
        json_decref(at);
    struct pending_order *p = &r->pending[i];
    agent_reply_with(r->agent, p->id, res->ok, res->ok ? NULL : res->error, members);
    json_decref(p->id);
    p->id = NULL;
}

/* One kind of order of the host role.  run answers the order itself and
 * returns 1, or starts it and returns 0 (the VM's next state change answers:
 * check_pending), or returns -1 with *err (refused). */
typedef int (*host_order_fn)(struct host_role *r, size_t i, json_t *id, const char *action,
                             json_t *order, vcr_error_t *err);

static int order_start(struct host_role *r, size_t i, json_t *id, const char *action, json_t *order,
                       vcr_error_t *err)
{
    (void)id;
    (void)action;
    (void)order;
    return host_vm_start(r->vms[i], "started on order", err);
}

/* Already down is success: what the order asks for holds (fencing is idempotent). */
static int stop_or_kill(struct host_role *r, size_t i, json_t *id, bool kill, vcr_error_t *err)
{
    if (!host_vm_has_process(r->vms[i]) && !host_vm_preparing(r->vms[i])) {
        agent_reply(r->agent, id, true, NULL);
        return 1;
    }
    return kill ? host_vm_kill(r->vms[i], err)
                : host_vm_stop(r->vms[i], HOST_VM_STOP_GRACE_MS, err);
}

static int order_stop(struct host_role *r, size_t i, json_t *id, const char *action, json_t *order,
                      vcr_error_t *err)
{
    (void)action;
    (void)order;
    return stop_or_kill(r, i, id, false, err);
}

static int order_kill(struct host_role *r, size_t i, json_t *id, const char *action, json_t *order,
                      vcr_error_t *err)
{
    (void)action;
    (void)order;
    return stop_or_kill(r, i, id, true, err);
}

static int order_warm_restart(struct host_role *r, size_t i, json_t *id, const char *action,
                              json_t *order, vcr_error_t *err)
{
    struct agent *a = r->agent;
    json_t *qemu = json_object_get(order, "qemu");
    json_t *exit_at = json_object_get(order, "agent_exit_for_test");
    if (qemu && !json_is_string(qemu) && !json_is_null(qemu))
        return vcr_error_make(err, EINVAL, "`qemu` must be a path string");
    if (exit_at && !(VCR_TEST_FAULTS && a->test_faults))
        return vcr_error_make(err, EINVAL,
                              "`agent_exit_for_test` needs an agent %s with --test-faults",
                              VCR_TEST_FAULTS ? "run" : "built (meson -Dtest_faults=true) and run");
    if (exit_at && !host_vm_warm_exit_point_valid(json_string_value(exit_at)))
        return vcr_error_make(err, EINVAL,
                              "`agent_exit_for_test` must be one of: " HOST_VM_WARM_EXIT_POINTS);
    struct host_vm_warm_options o = {.qemu = json_string_value(qemu),
                                     .agent_exit_at = json_string_value(exit_at)};
    /* Registered first: the callback may run before host_vm_warm_restart returns. */
    r->pending[i].id = json_incref(id);
    snprintf(r->pending[i].action, sizeof(r->pending[i].action), "%s", action);
    if (host_vm_warm_restart(r->vms[i], &o, on_warm_done, r, err) < 0) {
        json_decref(r->pending[i].id);
        r->pending[i].id = NULL;
        return -1;
    }
    return 1;
}

static int order_volume(struct host_role *r, size_t i, json_t *id, const char *action,
                        json_t *order, vcr_error_t *err)
{
    (void)err;
    host_volume_order(r->agent, r->vms[i], id, action, order); /* answers itself (host_reboot.c) */
    return 1;
}

static int order_data(struct host_role *r, size_t i, json_t *id, const char *action, json_t *order,
                      vcr_error_t *err)
{
    (void)err;
    host_data_order(r->agent, r->vms[i], id, action, order); /* answers itself (host_data.c) */
    return 1;
}

static const struct host_order_kind {
    const char *action;
    host_order_fn run;
} host_orders[] = {
    {"vm_start", order_start},
    {"vm_stop", order_stop},
    {"vm_kill", order_kill},
    {"vm_warm_restart", order_warm_restart},
    {"vm_flush", order_volume},
    {"vm_reboot", order_volume},
    {"volume_snapshot", order_data},
    {"volume_snapshot_read", order_data},
    {"volume_restore_write", order_data},
    {"volume_restore", order_data},
};
#define N_HOST_ORDERS (sizeof(host_orders) / sizeof(host_orders[0]))

static void host_order(struct agent *a, json_t *id, const char *action, const char *name,
                       json_t *order)
{
    struct host_role *r = role_of(a);
    const struct host_order_kind *kind =
        agent_order_row(a, id, action, host_orders, N_HOST_ORDERS, sizeof(host_orders[0]));
    if (kind == NULL)
        return;
    char msg[256];
    size_t i = 0;
    while (i < r->n_vms && strcmp(host_vm_name(r->vms[i]), name) != 0)
        i++;
    if (i == r->n_vms) {
        snprintf(msg, sizeof(msg), "no VM `%s` on host %s", name, a->cfg->host);
        agent_refuse(a, id, ENOENT, msg);
        return;
    }
    /* A kill overtakes a stop in its grace (a fence, or an operator who will
     * not wait): both are answered when QEMU has gone. */
    bool overtake = r->pending[i].id && strcmp(r->pending[i].action, "vm_stop") == 0 &&
                    strcmp(action, "vm_kill") == 0;
    /* A stop or kill cancels a start still preparing the VM's disks (seconds
     * for a large volume): the start is answered as cancelled. */
    if (r->pending[i].id && strcmp(r->pending[i].action, "vm_start") == 0 &&
        (strcmp(action, "vm_kill") == 0 || strcmp(action, "vm_stop") == 0) &&
        host_vm_preparing(r->vms[i])) {
        snprintf(msg, sizeof(msg), "VM `%s`: cancelled by a %s order before its qemu started", name,
                 action);
        finish_order(r, i, false, msg);
    }
    if (r->pending[i].id && !overtake) {
        snprintf(msg, sizeof(msg), "VM `%s` is busy with an earlier %s order", name,
                 r->pending[i].action);
        agent_refuse(a, id, EBUSY, msg);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    int rc = kind->run(r, i, id, action, order, &err);
    if (rc < 0) {
        agent_refuse(a, id, vcr_error_status(err), vcr_error_msg(err));
        return;
    }
    if (rc > 0)
        return;
    if (overtake) {
        log_info("VM %s: vm_kill overtakes the vm_stop in its grace", name);
        r->pending[i].overtaken = r->pending[i].id;
    }
    r->pending[i].id = json_incref(id);
    snprintf(r->pending[i].action, sizeof(r->pending[i].action), "%s", action);
    check_pending(r, i);
}

static void host_leave(struct agent *a, bool stop)
{
    struct host_role *r = role_of(a);
    if (r->probe) {
        /* Still choosing the accelerator: nothing runs yet. */
        agent_role_left(a);
        return;
    }
    if (!stop || all_stopped(r)) {
        agent_role_left(a);
        return;
    }
    r->stopping_all = true;
    for (size_t i = 0; i < r->n_vms; i++) {
        cleanup_error vcr_error_t err = NULL;
        if ((host_vm_has_process(r->vms[i]) || host_vm_preparing(r->vms[i])) &&
            host_vm_stop(r->vms[i], 0, &err) < 0)
            log_warn("%s", vcr_error_msg(err));
    }
}

static void host_server_heard(struct agent *a, int64_t evidence_ms)
{
    struct host_role *r = role_of(a);
    if (r)
        host_fence_feed(r->fence, evidence_ms);
}

static void host_server_fence_limit(struct agent *a, uint32_t fence_after_ms)
{
    struct host_role *r = role_of(a);
    if (r)
        host_fence_limit(r->fence, fence_after_ms);
}

/* The agent's directory for QEMU's user (make_qemu_run_dir) holds only the
 * migration sockets of warm restarts under way; a QEMU that runs on after
 * the agent never needs it, and the next agent makes it again.  Removed when
 * no warm restart is left half done (its socket stays with it for the agent
 * that takes the restart over): one directory per agent and state directory
 * would otherwise pile up in /run. */
static void remove_qemu_run_dir(struct host_role *r)
{
    for (size_t i = 0; i < r->n_vms; i++)
        if (host_vm_restarting(r->vms[i]))
            return;
    cleanup_free char *dir = qemu_run_dir(r->agent->cfg);
    if (dir && rmdir(dir) < 0 && errno != ENOENT)
        log_warn("cannot remove `%s`: %s", dir, strerror(errno));
}

static void host_fini(struct agent *a)
{
    struct host_role *r = role_of(a);
    if (r == NULL)
        return;
    accel_probe_free(r->probe);
    host_fence_sync(r->fence, r->vms, r->n_vms);
    host_fence_free(r->fence);
    remove_qemu_run_dir(r);
    for (size_t i = 0; i < r->n_vms; i++) {
        json_decref(r->pending[i].id);
        json_decref(r->pending[i].overtaken);
        host_vm_free(r->vms[i]);
    }
    free(r->vms);
    free(r->pending);
    qemu_allow_clear(&r->qemu_allow);
    free(r);
    a->role_data = NULL;
}

const struct agent_role_ops host_role_ops = {
    .name = "host",
    .init = host_init,
    .vm_list = host_vm_list,
    .sample = host_sample,
    .order = host_order,
    .leave = host_leave,
    .fini = host_fini,
    .server_heard = host_server_heard,
    .server_fence_limit = host_server_fence_limit,
    .hello_extra = host_hello_extra,
};
