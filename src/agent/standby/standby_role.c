/* The `standby` role: one LXC container per protected service inside a
 * standby VM, created from a template on an overlay, on the VM's bridge br0
 * with its own address; reports containers and load; carries out the
 * server's container orders (docs/protocol.md).  liblxc calls are
 * synchronous and take seconds under TCG, so each order's work runs in a
 * child process (standby_job.c) while the loop goes on with heartbeats,
 * samples and the orders of other containers; one order at a time per
 * container (a second one is refused as busy).  Live migration's orders
 * (docs/agent.md "Migration (CRIU)"): checkpoint and restore run in a child
 * like the others; the image chunks and the cleanup are quick file work done
 * on the loop, under the same busy rule. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lxc/lxccontainer.h>

#include "agent/agent_role.h"
#include "agent/standby/standby_address.h"
#include "agent/standby/standby.h"
#include "agent/standby/standby_ct.h"
#include "agent/standby/standby_data.h"
#include "agent/standby/standby_role_priv.h"
#include "agent/data_image.h"
#include "agent/standby_job.h"
#include "agent/standby_migrate.h"
#include "agent/standby_stream.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/durable.h"
#include "common/log.h"

static struct standby_role *role_of(struct agent *a)
{
    return a->role_data;
}

static size_t find_ct(const struct standby_role *r, const char *name)
{
    for (size_t i = 0; i < r->n_cts; i++)
        if (strcmp(standby_ct_name(r->cts[i]), name) == 0)
            return i;
    return r->n_cts;
}

static void adopt_existing(struct standby_role *r)
{
    char **names = NULL;
    int n = list_defined_containers(r->lxcpath, &names, NULL);
    for (int i = 0; i < n; i++) {
        cleanup_error vcr_error_t err = NULL;
        struct standby_ct *ct =
            r->n_cts < STANDBY_CT_MAX ? standby_ct_adopt(r->lxcpath, names[i], &err) : NULL;
        if (ct) {
            r->cts[r->n_cts++] = ct;
            log_info("container %s: adopted (%s)", names[i], standby_ct_state(ct));
        } else {
            log_warn("container %s: not adopted: %s", names[i], vcr_error_msg(err));
        }
        free(names[i]);
    }
    free(names);
}

/* CRIU probes the kernel's features (kerndat: ~0.2 s under TCG) at every start
 * unless an earlier run of this boot left them in its cache (/run/criu.kdat,
 * tmpfs).  Without this, a VM's first CRIU run pays them: for the target of a
 * migration that is the restore, inside the downtime (docs/migration.md "Where
 * the 2 s of downtime go").  `criu check --feature mem_dirty_track` (the
 * pre-dump's need) probes and fills the cache once, in a child at start. */
static int criu_probe_work(void *arg, vcr_error_t *err)
{
    (void)arg;
    char *argv[] = {"criu", "check", "--feature", "mem_dirty_track", NULL};
    cleanup_error vcr_error_t probe_err = NULL;
    standby_run_program(argv, &probe_err);
    /* A dump locks the container's network while it runs, a restore until
     * its sockets are back: with iptables that is two iptables-restore execs
     * a side (~0.1 s under TCG, inside the downtime); CRIU does the same
     * through libnftables in its own process once told to (the dump records
     * the method in its inventory, and the restore follows it).  Only when
     * this kernel has what it needs (nf_tables with set concatenations), and
     * never in an operator's own CRIU_CONFIG_FILE. */
    const char *conf_env = getenv("CRIU_CONFIG_FILE");
    const char *lock = "iptables";
    cleanup_error vcr_error_t nft_err = NULL;
    if (conf_env == NULL || strcmp(conf_env, STANDBY_CRIU_CONF) != 0) {
        lock = "CRIU's own (CRIU_CONFIG_FILE is the operator's)";
    } else {
        char *nft_argv[] = {"criu", "check", "--feature", "network_lock_nftables", NULL};
        static const char conf[] = "network-lock nftables\n";
        if (standby_run_program(nft_argv, &nft_err) == 0 &&
            vcr_file_replace(STANDBY_CRIU_CONF, conf, sizeof(conf) - 1, &nft_err) == 0)
            lock = "nftables";
        else
            unlink(STANDBY_CRIU_CONF ".tmp");
    }
    cleanup_json json_t *res = json_pack("{s:s, s:s?, s:s?}", "network_lock", lock, "probe_error",
                                         probe_err ? vcr_error_msg(probe_err) : NULL,
                                         "nftables_error", nft_err ? vcr_error_msg(nft_err) : NULL);
    cleanup_free char *text = res ? json_dumps(res, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

/* CRIU's own options for every criu that liblxc starts (liblxc exec's it with
 * the agent's environment and has no way to add one): the file that
 * CRIU_CONFIG_FILE names, empty (CRIU's defaults) until criu_probe_work has
 * seen that the kernel can do better.  An operator's CRIU_CONFIG_FILE wins. */
static void criu_conf_init(void)
{
    if (getenv("CRIU_CONFIG_FILE"))
        return;
    cleanup_error vcr_error_t err = NULL;
    if (vcr_file_replace(STANDBY_CRIU_CONF, "", 0, &err) < 0) {
        log_warn("criu: %s (CRIU runs with its defaults)", vcr_error_msg(err));
        return;
    }
    setenv("CRIU_CONFIG_FILE", STANDBY_CRIU_CONF, 1);
}

static void criu_probe_done(struct standby_job *job, const char *error, void *opaque)
{
    struct standby_role *r = opaque;
    r->criu_probe = NULL;
    cleanup_json json_t *res = error ? NULL : json_loads(standby_job_result(job), 0, NULL);
    const char *probe_error = json_string_value(json_object_get(res, "probe_error"));
    const char *lock = json_string_value(json_object_get(res, "network_lock"));
    const char *nft_error = json_string_value(json_object_get(res, "nftables_error"));
    if (error || probe_error)
        log_warn("criu check at start: %s (a first checkpoint or restore here probes the "
                 "kernel itself)",
                 error ? error : probe_error);
    else
        log_info("criu: kernel features probed and cached for this boot (criu check); "
                 "network lock: %s",
                 lock ? lock : "iptables");
    if (nft_error)
        log_warn("criu: the network lock stays iptables: %s", nft_error);
}

static int standby_init(struct agent *a, vcr_error_t *err)
{
    struct standby_role *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    r->agent = a;
    r->lxcpath = STANDBY_LXCPATH;
    r->lib_dir = STANDBY_LIB_DIR;
    snprintf(r->images_dir, sizeof(r->images_dir), "%s/%s", r->lib_dir, STANDBY_IMAGES_SUB);
    r->migrate_dir = STANDBY_MIGRATE_DIR;
    r->data_dir = STANDBY_DATA_DIR;
    a->role_data = r;
    adopt_existing(r);
    criu_conf_init();
    cleanup_error vcr_error_t probe_err = NULL;
    r->criu_probe = standby_job_run(a->base, criu_probe_work, NULL, criu_probe_done, r, &probe_err);
    if (r->criu_probe == NULL)
        log_warn("criu check at start: %s", vcr_error_msg(probe_err));
    /* Containers share the VM's kernel: no accelerator of our own. */
    agent_role_ready(a, "none");
    return 0;
}

static json_t *standby_vm_list(struct agent *a)
{
    (void)a;
    return json_array();
}

static json_t *containers_json(struct standby_role *r, bool with_load)
{
    json_t *list = json_array();
    uint64_t now = vcr_mono_ns();
    for (size_t i = 0; list && i < r->n_cts; i++)
        json_array_append_new(list, standby_ct_json(r->cts[i], with_load, now));
    return list;
}

static json_t *standby_hello_extra(struct agent *a)
{
    return json_pack("{s:o}", "containers", containers_json(role_of(a), false));
}

static json_t *standby_sample(struct agent *a)
{
    (void)a;
    return json_array();
}

static json_t *vm_load(struct standby_role *r)
{
    char buf[8192];
    cleanup_error vcr_error_t err = NULL;
    struct standby_cpu_times t;
    int ncpus = 1;
    json_t *cpu = json_null();
    if (standby_read_file("/proc/stat", buf, sizeof(buf), &err) == 0 &&
        standby_parse_proc_stat(buf, &t, &ncpus, &err) == 0) {
        if (r->have_cpu) {
            json_decref(cpu);
            cpu = json_real(standby_vm_cpu_pct(&r->cpu, &t));
        }
        r->cpu = t;
        r->have_cpu = true;
    }
    int64_t total = 0, avail = 0;
    if (standby_read_file("/proc/meminfo", buf, sizeof(buf), &err) < 0 ||
        standby_parse_meminfo(buf, &total, &avail, &err) < 0)
        log_debug("vm load: %s", vcr_error_msg(err));
    return json_pack("{s:o, s:i, s:I, s:I}", "cpu_pct", cpu, "ncpus", ncpus, "mem_total_kb",
                     (json_int_t)total, "mem_used_kb", (json_int_t)(total - avail));
}

static json_t *standby_sample_extra(struct agent *a)
{
    struct standby_role *r = role_of(a);
    return json_pack("{s:o, s:o}", "containers", containers_json(r, true), "vm_load", vm_load(r));
}

/* extra (JSON object text, may be NULL or ""): members the job's child added. */
static void reply_done(struct standby_role *r, json_t *id, struct standby_ct *ct, int64_t t0_ms,
                       const char *extra)
{
    json_t *members = json_pack("{s:I}", "ms", (json_int_t)(vcr_mono_ms() - t0_ms));
    if (members && extra && extra[0]) {
        json_t *more = json_loads(extra, 0, NULL);
        if (json_is_object(more))
            json_object_update(members, more);
        else
            log_warn("job result is not a JSON object: %.200s", extra);
        json_decref(more);
    }
    if (members && ct)
        json_object_set_new(members, "container", standby_ct_json(ct, false, 0));
    agent_reply_with(r->agent, id, true, NULL, members);
}

static struct standby_pending *find_pending(const struct standby_role *r, const char *name)
{
    for (size_t i = 0; i < r->n_pending; i++)
        if (strcmp(r->pending[i]->name, name) == 0)
            return r->pending[i];
    return NULL;
}

static void pending_free(struct standby_pending *p)
{
    struct standby_role *r = p->r;
    for (size_t i = 0; i < r->n_pending; i++)
        if (r->pending[i] == p) {
            r->pending[i] = r->pending[--r->n_pending];
            break;
        }
    json_decref(p->id);
    json_decref(p->order);
    json_decref(p->restore_data);
    free(p);
}

static size_t index_of(const struct standby_role *r, const struct standby_ct *ct)
{
    for (size_t i = 0; i < r->n_cts; i++)
        if (r->cts[i] == ct)
            return i;
    return r->n_cts;
}

/* On the loop, once the child has ended. */
static void job_done(struct standby_job *job, const char *error, void *opaque)
{
    struct standby_pending *p = opaque;
    struct standby_role *r = p->r;
    long long ms = (long long)(vcr_mono_ms() - p->t0);
    if (p->id == NULL) { /* a stream_receive: the sender's reply carries its verdict */
        if (error)
            log_error("%s: %s (after %lld ms)", p->action, error, ms);
        else
            log_info("%s done in %lld ms: %s", p->action, ms, standby_job_result(job));
        pending_free(p);
        return;
    }
    bool create =
        strcmp(p->action, "container_create") == 0 || strcmp(p->action, "container_restore") == 0;
    /* A create leaves a container even when its start failed: take it on
     * (a failed restore leaves none, and adopting it fails quietly). */
    if (create && find_ct(r, p->name) == r->n_cts && r->n_cts < STANDBY_CT_MAX) {
        cleanup_error vcr_error_t err = NULL;
        struct standby_ct *ct = standby_ct_adopt(r->lxcpath, p->name, &err);
        if (ct)
            r->cts[r->n_cts++] = ct;
        else if (error == NULL)
            error = vcr_error_msg(err);
    }
    if (error) {
        log_error("container %s: %s: %s (after %lld ms)", p->name, p->action, error, ms);
        agent_refuse(r->agent, p->id, standby_job_error_status(job), error);
        pending_free(p);
        return;
    }
    log_info("container %s: %s done in %lld ms", p->name, p->action, ms);
    size_t i = find_ct(r, p->name);
    if (strcmp(p->action, "container_destroy") == 0) {
        reply_done(r, p->id, NULL, p->t0, NULL);
        i = index_of(r, p->ct);
        if (i < r->n_cts) {
            standby_ct_free(r->cts[i]);
            r->cts[i] = r->cts[--r->n_cts];
        }
    } else {
        reply_done(r, p->id, i < r->n_cts ? r->cts[i] : NULL, p->t0, standby_job_result(job));
    }
    pending_free(p);
}

static void run_pending(struct standby_role *r, struct standby_pending *p)
{
    cleanup_error vcr_error_t err = NULL;
    r->pending[r->n_pending++] = p;
    p->job = standby_job_run(r->agent->base, job_work, p, job_done, p, &err);
    if (p->job == NULL) {
        agent_reply(r->agent, p->id, false, vcr_error_msg(err));
        pending_free(p);
    }
}

/* The pending image_prune's name (no container has it: '(' is not a name). */
#define STANDBY_IMAGE_PRUNE_NAME "(image cache)"

/* The standby role's orders.  `job`: the work runs in a child process;
 * otherwise it is quick and done on the loop.  `ct`: the container must exist
 * (CT_EXISTS), must not (CT_ABSENT), or either (CT_ANY); stopping and
 * destroying an unknown container succeed (CT_IDEMPOTENT, like fencing). */
enum ct_need { CT_ANY, CT_EXISTS, CT_ABSENT, CT_IDEMPOTENT };
struct standby_action {
    const char *name;
    bool job;
    enum ct_need ct;
};
static const struct standby_action standby_actions[] = {
    {"container_create", true, CT_ABSENT},
    {"container_start", true, CT_EXISTS},
    {"container_stop", true, CT_IDEMPOTENT},
    {"container_destroy", true, CT_IDEMPOTENT},
    {"container_checkpoint", true, CT_EXISTS},
    {"container_image_read", false, CT_ANY},
    {"container_image_write", false, CT_ANY},
    {"container_image_unpack", true, CT_ANY},
    {"container_restore", true, CT_ABSENT},
    {"container_migrate_cleanup", false, CT_ANY},
    {"data_write", false, CT_ANY},
    {"data_read", false, CT_ANY},
    {"data_install", true, CT_ANY},
    {"data_attach", true, CT_EXISTS},
    {"data_export", true, CT_ANY},
    {"data_space", false, CT_ANY},
    {"image_prune", true, CT_ANY},
    {"container_address", true, CT_EXISTS},
    {"stream_receive", false, CT_ANY},
    {"stream_send", true, CT_ANY},
};
#define N_ACTIONS (sizeof(standby_actions) / sizeof(standby_actions[0]))

/* stream_receive, on the loop: the listener opened and handed to a child
 * that receives the file (standby_stream.h); the reply says the port at once.
 * The child's pending entry has a name of its own (not the container's), so
 * that the orders that follow the transfer are not refused as busy while
 * the child is still being reaped. */
static json_t *stream_receive_start(struct standby_role *r, json_t *msg, vcr_error_t *err)
{
    static unsigned serial;
    struct standby_stream_order o;
    if (standby_stream_order_from_json(msg, false, &o, err) < 0)
        return NULL;
    if (r->n_pending >= STANDBY_CT_MAX)
        return vcr_error_make(err, EBUSY, "too many orders under way"), NULL;
    cleanup_close int dir_fd = o.data ? standby_data_dir_open(r->data_dir, o.service, NULL, 0, err)
                                      : standby_migrate_dir_open(r->migrate_dir, o.name, err);
    if (dir_fd < 0)
        return NULL;
    uint16_t port = 0;
    cleanup_close int listen_fd = standby_stream_listen(&port, err);
    if (listen_fd < 0)
        return NULL;
    struct standby_pending *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    p->r = r;
    p->t0 = vcr_mono_ms();
    snprintf(p->action, sizeof(p->action), "stream_receive");
    snprintf(p->name, sizeof(p->name), "(stream %u)", ++serial);
    p->order = json_incref(msg);
    p->stream_listen_fd = listen_fd;
    p->stream_dir_fd = dir_fd;
    r->pending[r->n_pending++] = p;
    p->job = standby_job_run(r->agent->base, job_work, p, job_done, p, err);
    if (p->job == NULL) {
        pending_free(p);
        return NULL;
    }
    log_info("container %s: stream_receive of %llu bytes on port %u", o.name,
             (unsigned long long)o.bytes, (unsigned)port);
    return json_pack("{s:i}", "port", (int)port);
}

/* The quick orders, on the loop: a chunk of an image file, or the cleanup. */
static void loop_order(struct standby_role *r, json_t *id, const char *action, json_t *msg,
                       const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    json_t *members = NULL;
    if (strncmp(action, "data_", 5) == 0) {
        members = standby_data_loop_order(r->data_dir, action, msg, &err);
    } else if (strcmp(action, "stream_receive") == 0) {
        members = stream_receive_start(r, msg, &err);
    } else if (strcmp(action, "container_image_read") == 0) {
        struct standby_image_read rq;
        if (standby_image_read_from_json(msg, &rq, &err) == 0)
            members = standby_image_read(r->migrate_dir, &rq, &err);
    } else if (strcmp(action, "container_image_write") == 0) {
        struct standby_image_write w;
        if (standby_image_write_from_json(msg, &w, &err) == 0) {
            members = standby_image_write(r->migrate_dir, &w, &err);
            standby_image_write_release(&w);
        }
    } else if (standby_migrate_cleanup(r->migrate_dir, name, &err) == 0) {
        /* A migration that carried a service's data: its packed copy, on the source. */
        const char *service = json_string_value(json_object_get(msg, "service"));
        if (service)
            standby_data_forget_outgoing(r->data_dir, service);
        members = json_object();
    }
    if (members == NULL) {
        log_warn("container %s: %s: %s", name, action, vcr_error_msg(err));
        agent_refuse(r->agent, id, err ? vcr_error_status(err) : ENOMEM,
                     err ? vcr_error_msg(err) : "out of memory");
        return;
    }
    agent_reply_with(r->agent, id, true, NULL, members);
}

static void standby_order(struct agent *a, json_t *id, const char *action, const char *vm,
                          json_t *msg)
{
    struct standby_role *r = role_of(a);
    const struct standby_action *act =
        agent_order_row(a, id, action, standby_actions, N_ACTIONS, sizeof(standby_actions[0]));
    if (act == NULL)
        return;
    bool create = strcmp(action, "container_create") == 0;
    bool restore = strcmp(action, "container_restore") == 0;
    json_t *hold = json_object_get(msg, "hold_for_test_ms");
    bool faults = VCR_TEST_FAULTS && a->test_faults;
    if (hold && (!faults || !json_is_integer(hold) || json_integer_value(hold) < 0 ||
                 json_integer_value(hold) > 60000)) {
        agent_reply(a, id, false,
                    faults            ? "`hold_for_test_ms` must be an integer from 0 to 60000"
                    : VCR_TEST_FAULTS ? "`hold_for_test_ms` needs an agent run with --test-faults"
                                      : "`hold_for_test_ms` needs an agent built (meson "
                                        "-Dtest_faults=true) and run with --test-faults");
        return;
    }
    struct standby_pending *p = calloc(1, sizeof(*p));
    if (p == NULL || r->n_pending >= STANDBY_CT_MAX) {
        free(p);
        agent_reply(a, id, false, "out of memory");
        return;
    }
    p->r = r;
    p->t0 = vcr_mono_ms();
    p->hold_ms = hold ? (int)json_integer_value(hold) : 0;
    snprintf(p->action, sizeof(p->action), "%s", action);
    cleanup_error vcr_error_t err = NULL;
    if ((create || restore) && find_pending(r, STANDBY_IMAGE_PRUNE_NAME)) {
        agent_refuse(a, id, EBUSY, "the image cache is being pruned; try again");
        free(p);
        return;
    }
    if (create || restore) {
        if (standby_ct_spec_from_json(msg, &p->spec, &err) < 0) {
            agent_reply(a, id, false, vcr_error_msg(err));
            free(p);
            return;
        }
        snprintf(p->name, sizeof(p->name), "%s", p->spec.name);
        p->start = create && json_is_true(json_object_get(msg, "start"));
        json_t *data = json_object_get(msg, "data");
        if (restore && data && !json_is_null(data)) {
            if (!json_is_object(data)) {
                agent_reply(a, id, false, "data: expected {service, path}");
                free(p);
                return;
            }
            p->restore_data = json_incref(data);
        }
    } else if (strcmp(action, "container_checkpoint") == 0 ||
               strcmp(action, "container_image_unpack") == 0) {
        struct standby_checkpoint_order o;
        if (standby_checkpoint_from_json(msg, &o, &err) < 0) {
            agent_reply(a, id, false, vcr_error_msg(err));
            free(p);
            return;
        }
        snprintf(p->name, sizeof(p->name), "%s", o.name);
        p->phase = o.phase;
    } else if (strcmp(action, "image_prune") == 0) {
        /* A create or restore between its image's unpack and its overlay's
         * mount would lose the rootfs under it. */
        for (size_t k = 0; k < r->n_pending; k++)
            if (strcmp(r->pending[k]->action, "container_create") == 0 ||
                strcmp(r->pending[k]->action, "container_restore") == 0) {
                char text[200];
                snprintf(text, sizeof(text),
                         "image cache: container `%s` is being made (%s); prune again once it "
                         "is done",
                         r->pending[k]->name, r->pending[k]->action);
                agent_refuse(a, id, EBUSY, text);
                free(p);
                return;
            }
        snprintf(p->name, sizeof(p->name), "%s", STANDBY_IMAGE_PRUNE_NAME);
    } else {
        json_t *name_v = json_object_get(msg, "name");
        snprintf(p->name, sizeof(p->name), "%.64s",
                 json_is_string(name_v) ? json_string_value(name_v)
                 : vm                   ? vm
                                        : "");
        if (!act->job && !standby_valid_name(p->name)) {
            char text[200];
            snprintf(text, sizeof(text),
                     "name: `%.80s` is not a name; allowed: 1..64 of letters, digits, '.', "
                     "'_', '-'",
                     p->name);
            agent_reply(a, id, false, text);
            free(p);
            return;
        }
    }
    struct standby_pending *busy = find_pending(r, p->name);
    if (busy) {
        char text[200];
        snprintf(text, sizeof(text), "container `%s` is busy with an earlier %s order (%lld ms)",
                 p->name, busy->action, (long long)(vcr_mono_ms() - busy->t0));
        agent_refuse(a, id, EBUSY, text);
        free(p);
        return;
    }
    size_t i = find_ct(r, p->name);
    if (act->ct == CT_ABSENT && (i < r->n_cts || r->n_cts >= STANDBY_CT_MAX)) {
        if (r->n_cts >= STANDBY_CT_MAX)
            agent_refuse(a, id, ENOSPC, "too many containers");
        else
            agent_refuse(a, id, EEXIST, "container exists");
        free(p);
        return;
    }
    if ((act->ct == CT_EXISTS || act->ct == CT_IDEMPOTENT) && i == r->n_cts) {
        if (act->ct == CT_EXISTS)
            agent_refuse(a, id, ENOENT, "no such container");
        else
            reply_done(r, id, NULL, p->t0, NULL);
        free(p);
        return;
    }
    if (!act->job) {
        loop_order(r, id, action, msg, p->name);
        free(p);
        return;
    }
    p->ct = act->ct == CT_ABSENT || i == r->n_cts ? NULL : r->cts[i];
    p->id = json_incref(id);
    if (strncmp(action, "data_", 5) == 0 || strncmp(action, "stream_", 7) == 0 ||
        strcmp(action, "image_prune") == 0 || strcmp(action, "container_address") == 0)
        p->order = json_incref(msg);
    run_pending(r, p);
}

static void standby_leave(struct agent *a, bool stop)
{
    struct standby_role *r = role_of(a);
    for (size_t i = 0; stop && i < r->n_cts; i++) {
        cleanup_error vcr_error_t err = NULL;
        if (standby_ct_stop(r->cts[i], STANDBY_STOP_TIMEOUT_S, &err) < 0)
            log_error("container %s: %s", standby_ct_name(r->cts[i]), vcr_error_msg(err));
    }
    agent_role_left(a);
}

static void standby_fini(struct agent *a)
{
    struct standby_role *r = role_of(a);
    if (r == NULL)
        return;
    /* Their children run on and finish the work; nobody waits for the reply. */
    if (r->criu_probe)
        standby_job_free(r->criu_probe);
    while (r->n_pending) {
        standby_job_free(r->pending[0]->job);
        pending_free(r->pending[0]);
    }
    for (size_t i = 0; i < r->n_cts; i++)
        standby_ct_free(r->cts[i]);
    free(r);
    a->role_data = NULL;
}

const struct agent_role_ops standby_role_ops = {
    .name = "standby",
    .init = standby_init,
    .vm_list = standby_vm_list,
    .sample = standby_sample,
    .order = standby_order,
    .leave = standby_leave,
    .fini = standby_fini,
    .hello_extra = standby_hello_extra,
    .sample_extra = standby_sample_extra,
};
