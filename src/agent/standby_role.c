/* The `standby` role: one LXC container per protected service inside a
 * standby VM, created from a template on an overlay, on the VM's bridge br0
 * with its own address; reports containers and load; carries out the
 * server's container orders (docs/protocol.md).  liblxc calls are
 * synchronous: each order blocks the loop for its duration (start ~0.2 s,
 * shutdown at most STANDBY_STOP_TIMEOUT_S), far below the server's host
 * timeout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lxc/lxccontainer.h>

#include "agent/agent_role.h"
#include "agent/standby.h"
#include "agent/standby_ct.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define STANDBY_CT_MAX         256
#define STANDBY_STOP_TIMEOUT_S 2

struct standby_role {
    struct agent *agent;
    const char *lxcpath;
    const char *templates_dir;
    struct standby_ct *cts[STANDBY_CT_MAX];
    size_t n_cts;
    bool have_cpu;
    struct standby_cpu_times cpu;
};

static struct standby_role *role_of(struct agent *a)
{
    return a->role_data;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

static int standby_init(struct agent *a, vcr_error_t *err)
{
    struct standby_role *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    r->agent = a;
    r->lxcpath = STANDBY_LXCPATH;
    r->templates_dir = STANDBY_TEMPLATES_DIR;
    a->role_data = r;
    adopt_existing(r);
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
    uint64_t now = mono_ns();
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

static void reply_done(struct standby_role *r, json_t *id, struct standby_ct *ct, int64_t t0_ms)
{
    json_t *members = json_pack("{s:I}", "ms", (json_int_t)(vcr_mono_ms() - t0_ms));
    if (members && ct)
        json_object_set_new(members, "container", standby_ct_json(ct, false, 0));
    agent_reply_with(r->agent, id, true, NULL, members);
}

static void order_create(struct standby_role *r, json_t *id, json_t *msg, int64_t t0)
{
    cleanup_error vcr_error_t err = NULL;
    struct standby_ct_spec spec;
    if (standby_ct_spec_from_json(msg, &spec, &err) < 0) {
        agent_reply(r->agent, id, false, vcr_error_msg(err));
        return;
    }
    if (find_ct(r, spec.name) < r->n_cts || r->n_cts >= STANDBY_CT_MAX) {
        agent_reply(r->agent, id, false,
                    r->n_cts >= STANDBY_CT_MAX ? "too many containers" : "container exists");
        return;
    }
    struct standby_ct *ct = standby_ct_create(r->lxcpath, r->templates_dir, &spec, &err);
    if (ct == NULL) {
        log_error("container %s: create: %s", spec.name, vcr_error_msg(err));
        agent_reply(r->agent, id, false, vcr_error_msg(err));
        return;
    }
    r->cts[r->n_cts++] = ct;
    log_info("container %s: created (service %s, %s/%d, template %s) in %lld ms", spec.name,
             spec.service, spec.address, spec.prefix, spec.template,
             (long long)(vcr_mono_ms() - t0));
    json_t *start = json_object_get(msg, "start");
    if (json_is_true(start)) {
        if (standby_ct_start(ct, &err) < 0) {
            log_error("container %s: start: %s", spec.name, vcr_error_msg(err));
            agent_reply(r->agent, id, false, vcr_error_msg(err));
            return;
        }
        log_info("container %s: created and started in %lld ms", spec.name,
                 (long long)(vcr_mono_ms() - t0));
    }
    reply_done(r, id, ct, t0);
}

static void standby_order(struct agent *a, json_t *id, const char *action, const char *vm,
                          json_t *msg)
{
    struct standby_role *r = role_of(a);
    int64_t t0 = vcr_mono_ms();
    if (strcmp(action, "container_create") == 0) {
        order_create(r, id, msg, t0);
        return;
    }
    bool start = strcmp(action, "container_start") == 0;
    bool stop = strcmp(action, "container_stop") == 0;
    bool destroy = strcmp(action, "container_destroy") == 0;
    if (!start && !stop && !destroy) {
        char msg_text[200];
        snprintf(msg_text, sizeof(msg_text),
                 "action `%.40s` is not one of the standby role's: container_create, "
                 "container_start, container_stop, container_destroy",
                 action);
        agent_reply(a, id, false, msg_text);
        return;
    }
    json_t *name_v = json_object_get(msg, "name");
    const char *name = json_is_string(name_v) ? json_string_value(name_v) : vm;
    size_t i = find_ct(r, name);
    if (i == r->n_cts) {
        /* Fencing-style idempotence: stopping or destroying nothing succeeds. */
        if (start)
            agent_reply(a, id, false, "no such container");
        else
            reply_done(r, id, NULL, t0);
        return;
    }
    struct standby_ct *ct = r->cts[i];
    cleanup_error vcr_error_t err = NULL;
    int rc = start  ? standby_ct_start(ct, &err)
             : stop ? standby_ct_stop(ct, STANDBY_STOP_TIMEOUT_S, &err)
                    : standby_ct_destroy(ct, &err);
    if (rc < 0) {
        log_error("container %s: %s: %s", name, action, vcr_error_msg(err));
        agent_reply(a, id, false, vcr_error_msg(err));
        return;
    }
    log_info("container %s: %s done in %lld ms", name, action, (long long)(vcr_mono_ms() - t0));
    if (destroy) {
        reply_done(r, id, NULL, t0);
        standby_ct_free(ct);
        r->cts[i] = r->cts[--r->n_cts];
        return;
    }
    reply_done(r, id, ct, t0);
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
