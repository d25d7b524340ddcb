/* The inventory: hosts and VMs as the agents last described them.
 * Every message is validated completely before anything changes, so a bad
 * message never leaves a half-updated host behind. */
#include "server/inventory.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "server/inventory_priv.h"

#define NAME_MAX_LEN 64

const char *inv_vm_state_name(enum inv_vm_state s)
{
    const char *name = proto_vm_state_name((int)s);
    return name ? name : "unknown";
}

int inv_vm_state_parse(const char *s)
{
    return proto_vm_state_parse(s);
}

static const char *const watchdog_names[] = {
    [INV_WATCHDOG_UNKNOWN] = "unknown", [INV_WATCHDOG_ARMED] = "armed",
    [INV_WATCHDOG_PAUSED] = "paused",   [INV_WATCHDOG_DOWN] = "down",
    [INV_WATCHDOG_OFF] = "off",
};

const char *inv_watchdog_name(enum inv_watchdog w)
{
    return (size_t)w < sizeof(watchdog_names) / sizeof(watchdog_names[0]) ? watchdog_names[w]
                                                                          : "unknown";
}

const char *inv_host_state_name(enum inv_host_state s)
{
    return s == INV_HOST_CONNECTED ? "connected" : "lost";
}

bool inventory_valid_name(const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len > NAME_MAX_LEN)
        return false;
    for (; *s; s++) {
        bool ok = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                  (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* --- typed access to message members, with messages naming the member --- */

static int get_string(json_t *obj, const char *where, const char *key, bool required,
                      const char **out, vcr_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return vcr_error_make(err, EPROTO, "%s.%s: missing; expected a string", where, key);
        return 0;
    }
    if (!json_is_string(v))
        return vcr_error_make(err, EPROTO, "%s.%s: expected a string", where, key);
    *out = json_string_value(v);
    return 0;
}

static int get_name(json_t *obj, const char *where, const char *key, const char **out,
                    vcr_error_t *err)
{
    if (get_string(obj, where, key, true, out, err) < 0)
        return -1;
    if (!inventory_valid_name(*out))
        return vcr_error_make(err, EPROTO,
                              "%s.%s: `%s` is not a valid name; allowed: 1..%d of letters, "
                              "digits, '.', '_', '-'",
                              where, key, *out, NAME_MAX_LEN);
    return 0;
}

static int get_one_of(json_t *obj, const char *where, const char *key, const char *const *allowed,
                      const char **out, vcr_error_t *err)
{
    if (get_string(obj, where, key, true, out, err) < 0)
        return -1;
    char list[128] = "";
    for (const char *const *a = allowed; *a; a++) {
        if (strcmp(*a, *out) == 0)
            return 0;
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", a == allowed ? "" : ", ",
                 *a);
    }
    return vcr_error_make(err, EPROTO, "%s.%s: `%s` is not allowed; allowed: %s", where, key, *out,
                          list);
}

/* Non-negative integers: pids, times, sizes. */
static int get_int(json_t *obj, const char *where, const char *key, bool required, int64_t *out,
                   vcr_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    *out = 0;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return vcr_error_make(err, EPROTO, "%s.%s: missing; expected an integer", where, key);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return vcr_error_make(err, EPROTO, "%s.%s: expected a non-negative integer", where, key);
    *out = json_integer_value(v);
    return 0;
}

static int get_state(json_t *obj, const char *where, const char *key, enum inv_vm_state *out,
                     vcr_error_t *err)
{
    const char *s;
    if (get_string(obj, where, key, true, &s, err) < 0)
        return -1;
    int st = inv_vm_state_parse(s);
    if (st < 0)
        return vcr_error_make(err, EPROTO,
                              "%s.%s: `%s` is not a VM state; allowed: starting, running, "
                              "paused, shutdown, stopped, crashed, panicked, failed, restarting",
                              where, key, s);
    *out = (enum inv_vm_state)st;
    return 0;
}

/* --- objects --- */

static void vm_free(struct inv_vm *vm)
{
    if (vm == NULL)
        return;
    free(vm->name);
    free(vm->cause);
    free(vm->address);
    free(vm->accel);
    free(vm->qemu);
    free(vm->ram);
    free(vm->ram_backing);
    free(vm->disk);
    free(vm->disk_base);
    free(vm);
}

static void vms_free(struct inv_vm **vms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vm_free(vms[i]);
    free(vms);
}

static void host_free(struct inv_host *h)
{
    if (h == NULL)
        return;
    free(h->name);
    free(h->role);
    free(h->accel);
    free(h->agent_version);
    vms_free(h->vms, h->n_vms);
    json_decref(h->containers);
    json_decref(h->vm_load);
    free(h);
}

/* A standby agent's `containers` (hello, sample): objects with a valid name;
 * kept as sent for GET /v1/status.  Absent: the list is left as it was. */
static int take_containers(struct inv_host *h, json_t *msg, const char *where, vcr_error_t *err)
{
    json_t *list = json_object_get(msg, "containers");
    if (list == NULL)
        return 0;
    if (!json_is_array(list))
        return vcr_error_make(err, EPROTO, "%s.containers: expected an array", where);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        if (!json_is_object(c) || !json_is_string(json_object_get(c, "name")) ||
            !inventory_valid_name(json_string_value(json_object_get(c, "name"))))
            return vcr_error_make(err, EPROTO, "%s.containers[%zu]: expected {\"name\": NAME, ...}",
                                  where, i);
    }
    json_decref(h->containers);
    h->containers = json_deep_copy(list);
    h->containers_seq++;
    json_t *load = json_object_get(msg, "vm_load");
    if (json_is_object(load)) {
        json_decref(h->vm_load);
        h->vm_load = json_deep_copy(load);
    }
    return 0;
}

struct inventory *inventory_new(void)
{
    struct inventory *inv = calloc(1, sizeof(struct inventory));
    if (inv && (inv->index = calloc(1, sizeof(*inv->index))) == NULL) {
        free(inv);
        return NULL;
    }
    if (inv)
        inv->index->stale = true;
    return inv;
}

void inventory_free(struct inventory *inv)
{
    if (inv == NULL)
        return;
    for (size_t i = 0; i < inv->n_hosts; i++)
        host_free(inv->hosts[i]);
    free(inv->hosts);
    json_decref(inv->moving);
    free(inv->index->hosts.slots);
    free(inv->index->vms.slots);
    free(inv->index);
    free(inv);
}

struct inv_vm *host_find_vm(const struct inv_host *h, const char *name)
{
    for (size_t i = 0; i < h->n_vms; i++)
        if (strcmp(h->vms[i]->name, name) == 0)
            return h->vms[i];
    return NULL;
}

/* Replaces *field with a copy of value (NULL stays NULL).  -1 when out of memory. */
static int set_str(char **field, const char *value)
{
    char *copy = NULL;
    if (value && (copy = strdup(value)) == NULL)
        return -1;
    free(*field);
    *field = copy;
    return 0;
}

static struct inv_vm *vm_from_hello(json_t *obj, const char *where, vcr_error_t *err)
{
    const char *name, *address, *accel, *cause, *qemu, *ram, *ram_backing, *disk, *base;
    enum inv_vm_state state;
    int64_t pid, memory_mb, vcpus, boots;
    if (!json_is_object(obj)) {
        vcr_error_make(err, EPROTO, "%s: expected an object", where);
        return NULL;
    }
    if (get_name(obj, where, "name", &name, err) < 0 ||
        get_state(obj, where, "state", &state, err) < 0 ||
        get_int(obj, where, "pid", false, &pid, err) < 0 ||
        get_int(obj, where, "boots", false, &boots, err) < 0 ||
        get_string(obj, where, "address", false, &address, err) < 0 ||
        get_int(obj, where, "memory_mb", false, &memory_mb, err) < 0 ||
        get_int(obj, where, "vcpus", false, &vcpus, err) < 0 ||
        get_string(obj, where, "accel", false, &accel, err) < 0 ||
        get_string(obj, where, "cause", false, &cause, err) < 0 ||
        get_string(obj, where, "qemu", false, &qemu, err) < 0 ||
        get_string(obj, where, "ram", false, &ram, err) < 0 ||
        get_string(obj, where, "ram_backing", false, &ram_backing, err) < 0 ||
        get_string(obj, where, "disk", false, &disk, err) < 0 ||
        get_string(obj, where, "disk_base", false, &base, err) < 0)
        return NULL;
    struct inv_vm *vm = calloc(1, sizeof(*vm));
    if (vm == NULL || set_str(&vm->name, name) < 0 || set_str(&vm->address, address) < 0 ||
        set_str(&vm->accel, accel) < 0 || set_str(&vm->cause, cause) < 0 ||
        set_str(&vm->qemu, qemu) < 0 || set_str(&vm->ram, ram) < 0 ||
        set_str(&vm->ram_backing, ram_backing) < 0 || set_str(&vm->disk, disk) < 0 ||
        set_str(&vm->disk_base, base) < 0) {
        vm_free(vm);
        vcr_error_make(err, ENOMEM, "%s: out of memory", where);
        return NULL;
    }
    vm->state = state;
    vm->pid = pid;
    vm->boots = json_object_get(obj, "boots") ? boots : -1;
    vm->memory_mb = memory_mb;
    vm->vcpus = vcpus;
    return vm;
}

/* {timeout_ms, watchdog, pause_ms?}: a hello's `self_fence` or the message of
 * that name; absent (NULL) from an agent that does not report it. */
static int parse_self_fence(json_t *obj, const char *where, int64_t now_ms,
                            struct inv_self_fence *out, vcr_error_t *err)
{
    static const char *const reported[] = {"armed", "paused", "down", "off", NULL};
    *out = (struct inv_self_fence){.watchdog = INV_WATCHDOG_UNKNOWN, .reported_ms = now_ms};
    if (obj == NULL)
        return 0;
    if (!json_is_object(obj))
        return vcr_error_make(err, EPROTO, "%s: expected an object", where);
    const char *watchdog;
    if (get_int(obj, where, "timeout_ms", true, &out->timeout_ms, err) < 0 ||
        get_one_of(obj, where, "watchdog", reported, &watchdog, err) < 0 ||
        get_int(obj, where, "pause_ms", false, &out->pause_ms, err) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(watchdog_names) / sizeof(watchdog_names[0]); i++)
        if (strcmp(watchdog_names[i], watchdog) == 0)
            out->watchdog = (enum inv_watchdog)i;
    return 0;
}

static const char *const roles[] = {"host", "standby", NULL};
static const char *const accels[] = {"kvm", "tcg", "none", NULL};

struct inv_host *inventory_apply_hello(struct inventory *inv, json_t *hello, int64_t now_ms,
                                       bool *came_up, vcr_error_t *err)
{
    const char *name, *role, *agent_version, *accel;
    int64_t pid;
    if (get_name(hello, "hello", "host", &name, err) < 0 ||
        get_one_of(hello, "hello", "role", roles, &role, err) < 0 ||
        get_string(hello, "hello", "agent_version", true, &agent_version, err) < 0 ||
        get_int(hello, "hello", "pid", true, &pid, err) < 0 ||
        get_one_of(hello, "hello", "accel", accels, &accel, err) < 0)
        return NULL;
    struct inv_self_fence self_fence;
    if (parse_self_fence(json_object_get(hello, "self_fence"), "hello.self_fence", now_ms,
                         &self_fence, err) < 0)
        return NULL;
    json_t *list = json_object_get(hello, "vms");
    if (!json_is_array(list)) {
        vcr_error_make(err, EPROTO, "hello.vms: %s; expected an array of VM objects",
                       list ? "not an array" : "missing");
        return NULL;
    }
    size_t n = json_array_size(list);
    struct inv_vm **vms = calloc(n ? n : 1, sizeof(*vms));
    if (vms == NULL) {
        vcr_error_errno(err, "hello");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char where[48];
        snprintf(where, sizeof(where), "hello.vms[%zu]", i);
        vms[i] = vm_from_hello(json_array_get(list, i), where, err);
        for (size_t j = 0; vms[i] && j < i; j++)
            if (strcmp(vms[j]->name, vms[i]->name) == 0) {
                vcr_error_make(err, EPROTO, "%s.name: `%s` is listed twice", where, vms[i]->name);
                vm_free(vms[i]);
                vms[i] = NULL;
            }
        if (vms[i] == NULL) {
            vms_free(vms, i);
            return NULL;
        }
    }

    struct inv_host *h = inventory_find_host(inv, name);
    bool is_new = h == NULL;
    if (is_new) {
        struct inv_host **grown = realloc(inv->hosts, (inv->n_hosts + 1) * sizeof(*grown));
        if (grown)
            inv->hosts = grown;
        h = calloc(1, sizeof(*h));
        if (grown == NULL || h == NULL || set_str(&h->name, name) < 0) {
            host_free(h);
            vms_free(vms, n);
            vcr_error_make(err, ENOMEM, "hello from `%s`: out of memory", name);
            return NULL;
        }
        metrics_histogram_init(&h->heartbeat_gap, inv_heartbeat_gap_bounds,
                               inv_heartbeat_gap_n_bounds);
        inv->hosts[inv->n_hosts++] = h;
        index_stale(inv);
    }
    if (set_str(&h->role, role) < 0 || set_str(&h->accel, accel) < 0 ||
        set_str(&h->agent_version, agent_version) < 0) {
        vms_free(vms, n);
        vcr_error_make(err, ENOMEM, "hello from `%s`: out of memory", name);
        return NULL;
    }
    *came_up = is_new || h->state == INV_HOST_LOST;
    h->agent_pid = pid;
    h->self_fence = self_fence;
    h->state = INV_HOST_CONNECTED;
    h->last_seen_ms = now_ms;
    h->last_heartbeat_ms = 0; /* a new connection: no gap across the reconnect */
    for (size_t i = 0; i < n; i++) {
        /* A warm restart already under way keeps its deadline across the re-sync. */
        struct inv_vm *old = host_find_vm(h, vms[i]->name);
        if (vms[i]->state == INV_VM_RESTARTING)
            vms[i]->restart_deadline_ms = old && old->restart_deadline_ms
                                              ? old->restart_deadline_ms
                                              : now_ms + INV_RESTART_DEADLINE_MS;
    }
    index_stale(inv);
    vms_free(h->vms, h->n_vms);
    h->vms = vms;
    h->n_vms = n;
    if (take_containers(h, hello, "hello", err) < 0)
        return NULL;
    return h;
}

static bool vm_state_has_process(enum inv_vm_state s)
{
    return s == INV_VM_STARTING || s == INV_VM_RUNNING || s == INV_VM_PAUSED ||
           s == INV_VM_PANICKED || s == INV_VM_RESTARTING;
}

int inventory_apply_vm_event(struct inventory *inv, const char *host, json_t *msg, vcr_error_t *err)
{
    return inventory_apply_vm_event_at(inv, host, msg, 0, NULL, err);
}

int inventory_apply_vm_event_at(struct inventory *inv, const char *host, json_t *msg,
                                int64_t now_ms, enum inv_restart_change *change, vcr_error_t *err)
{
    if (change)
        *change = INV_RESTART_NONE;
    struct inv_host *h = inventory_find_host(inv, host);
    if (h == NULL)
        return vcr_error_make(err, ENOENT, "vm_event: host `%s` has not said hello", host);
    const char *name, *cause, *qemu;
    enum inv_vm_state state;
    int64_t ts_ms, pid, boots;
    if (get_name(msg, "vm_event", "vm", &name, err) < 0 ||
        get_state(msg, "vm_event", "state", &state, err) < 0 ||
        get_string(msg, "vm_event", "cause", true, &cause, err) < 0 ||
        get_int(msg, "vm_event", "ts_ms", true, &ts_ms, err) < 0 ||
        get_int(msg, "vm_event", "pid", false, &pid, err) < 0 ||
        get_int(msg, "vm_event", "boots", false, &boots, err) < 0 ||
        get_string(msg, "vm_event", "qemu", false, &qemu, err) < 0)
        return -1;
    struct inv_vm *vm = host_find_vm(h, name);
    if (vm == NULL) {
        struct inv_vm **grown = realloc(h->vms, (h->n_vms + 1) * sizeof(*grown));
        if (grown)
            h->vms = grown;
        vm = calloc(1, sizeof(*vm));
        if (grown == NULL || vm == NULL || set_str(&vm->name, name) < 0) {
            vm_free(vm);
            return vcr_error_make(err, ENOMEM, "vm_event for `%s`: out of memory", name);
        }
        vm->boots = -1;
        h->vms[h->n_vms++] = vm;
        index_stale(inv);
    }
    if (set_str(&vm->cause, cause) < 0 || (qemu && set_str(&vm->qemu, qemu) < 0))
        return vcr_error_make(err, ENOMEM, "vm_event for `%s`: out of memory", name);
    enum inv_restart_change ch = INV_RESTART_NONE;
    if (state == INV_VM_RESTARTING) {
        if (vm->state != INV_VM_RESTARTING || vm->restart_deadline_ms == 0) {
            vm->restart_deadline_ms = now_ms + INV_RESTART_DEADLINE_MS;
            ch = INV_RESTART_BEGAN;
        }
    } else if (vm->state == INV_VM_RESTARTING) {
        ch = state == INV_VM_RUNNING ? INV_RESTART_DONE : INV_RESTART_FAILED;
        vm->restart_deadline_ms = 0;
    }
    if (change)
        *change = ch;
    vm->state = state;
    vm->state_ts_ms = ts_ms;
    if (!vm_state_has_process(state))
        vm->has_sample = false; /* the last sample described a process that is gone */
    if (json_object_get(msg, "pid"))
        vm->pid = pid;
    if (json_object_get(msg, "boots"))
        vm->boots = boots;
    return 0;
}

int inventory_apply_self_fence(struct inventory *inv, const char *host, json_t *msg, int64_t now_ms,
                               vcr_error_t *err)
{
    struct inv_host *h = inventory_find_host(inv, host);
    if (h == NULL)
        return vcr_error_make(err, ENOENT, "self_fence: host `%s` has not said hello", host);
    struct inv_self_fence self_fence;
    if (parse_self_fence(msg, "self_fence", now_ms, &self_fence, err) < 0)
        return -1;
    h->self_fence = self_fence;
    return 0;
}

int inventory_apply_sample(struct inventory *inv, const char *host, json_t *msg, vcr_error_t *err)
{
    struct inv_host *h = inventory_find_host(inv, host);
    if (h == NULL)
        return vcr_error_make(err, ENOENT, "sample: host `%s` has not said hello", host);
    int64_t ts_ms;
    if (get_int(msg, "sample", "ts_ms", true, &ts_ms, err) < 0)
        return -1;
    json_t *list = json_object_get(msg, "vms");
    if (!json_is_array(list))
        return vcr_error_make(err, EPROTO, "sample.vms: expected an array");
    size_t i;
    json_t *entry;
    json_array_foreach(list, i, entry)
    {
        char where[48];
        snprintf(where, sizeof(where), "sample.vms[%zu]", i);
        const char *name;
        int64_t rss;
        if (!json_is_object(entry))
            return vcr_error_make(err, EPROTO, "%s: expected an object", where);
        if (get_string(entry, where, "vm", true, &name, err) < 0 ||
            get_int(entry, where, "rss_kb", true, &rss, err) < 0)
            return -1;
        if (!json_is_number(json_object_get(entry, "cpu_pct")) ||
            json_number_value(json_object_get(entry, "cpu_pct")) < 0)
            return vcr_error_make(err, EPROTO, "%s.cpu_pct: expected a non-negative number", where);
    }
    json_array_foreach(list, i, entry)
    {
        struct inv_vm *vm = host_find_vm(h, json_string_value(json_object_get(entry, "vm")));
        if (vm == NULL)
            continue;
        vm->has_sample = true;
        vm->cpu_pct = json_number_value(json_object_get(entry, "cpu_pct"));
        vm->rss_kb = json_integer_value(json_object_get(entry, "rss_kb"));
        vm->sample_ts_ms = ts_ms;
    }
    return take_containers(h, msg, "sample", err);
}

/* Fine steps around the default heartbeat (250 ms) and up to the default host
 * timeout (1250 ms), then coarser: a gap near the timeout is what matters. */
const double inv_heartbeat_gap_bounds[] = {0.1,  0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6,
                                           0.75, 1.0, 1.25, 1.5, 2.0,  3.5, 10.0};
const size_t inv_heartbeat_gap_n_bounds =
    sizeof(inv_heartbeat_gap_bounds) / sizeof(inv_heartbeat_gap_bounds[0]);

void inventory_host_heartbeat(struct inventory *inv, const char *host, int64_t now_ms)
{
    struct inv_host *h = inventory_find_host(inv, host);
    if (h == NULL)
        return;
    if (h->last_heartbeat_ms > 0 && now_ms >= h->last_heartbeat_ms) {
        int64_t gap = now_ms - h->last_heartbeat_ms;
        metrics_histogram_observe(&h->heartbeat_gap, (double)gap / 1000.0);
        if (gap > h->heartbeat_gap_max_ms)
            h->heartbeat_gap_max_ms = gap;
    }
    h->last_heartbeat_ms = now_ms;
}

void inventory_host_seen(struct inventory *inv, const char *host, int64_t now_ms)
{
    struct inv_host *h = inventory_find_host(inv, host);
    if (h)
        h->last_seen_ms = now_ms;
}

size_t inventory_forgive_silence(struct inventory *inv, int64_t ms)
{
    size_t count = 0;
    for (size_t i = 0; i < inv->n_hosts; i++) {
        struct inv_host *h = inv->hosts[i];
        if (h->state != INV_HOST_CONNECTED || ms <= 0)
            continue;
        h->last_seen_ms += ms;
        count++;
    }
    return count;
}

size_t inventory_expire_hosts(struct inventory *inv, int64_t now_ms, int64_t timeout_ms,
                              inv_lost_cb lost, void *opaque)
{
    size_t count = 0;
    for (size_t i = 0; i < inv->n_hosts; i++) {
        struct inv_host *h = inv->hosts[i];
        int64_t silent = now_ms - h->last_seen_ms;
        if (h->state != INV_HOST_CONNECTED || silent <= timeout_ms)
            continue;
        h->state = INV_HOST_LOST;
        count++;
        if (lost)
            lost(h, silent, opaque);
    }
    return count;
}

size_t inventory_expire_restarts(struct inventory *inv, int64_t now_ms, inv_overrun_cb overrun,
                                 void *opaque)
{
    size_t count = 0;
    for (size_t i = 0; i < inv->n_hosts; i++)
        for (size_t j = 0; j < inv->hosts[i]->n_vms; j++) {
            struct inv_vm *vm = inv->hosts[i]->vms[j];
            if (vm->state != INV_VM_RESTARTING || vm->restart_deadline_ms == 0 ||
                now_ms <= vm->restart_deadline_ms)
                continue;
            char cause[128];
            snprintf(cause, sizeof(cause), "warm restart not done within %d ms",
                     INV_RESTART_DEADLINE_MS);
            set_str(&vm->cause, cause);
            vm->state = INV_VM_FAILED;
            vm->restart_deadline_ms = 0;
            count++;
            if (overrun)
                overrun(inv->hosts[i], vm, opaque);
        }
    return count;
}

/* 0 stands for "not known" in the inventory; the API says null. */

static json_t *vm_json_base(const struct inv_vm *vm);
static json_t *known_int(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

/* A lost host's VMs: what its agent last said is history, not the present. */
static json_t *vm_json(const struct inv_vm *vm, bool host_lost, int64_t now_ms, int64_t now_wall_ms)
{
    json_t *o = vm_json_base(vm);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "last_state", json_string(inv_vm_state_name(vm->state)));
    if (host_lost)
        json_object_set_new(o, "state", json_string("unknown"));
    json_object_set_new(o, "qemu", vm->qemu ? json_string(vm->qemu) : json_null());
    json_object_set_new(o, "ram", vm->ram ? json_string(vm->ram) : json_null());
    json_object_set_new(o, "ram_backing",
                        vm->ram_backing ? json_string(vm->ram_backing) : json_null());
    json_object_set_new(o, "disk", vm->disk ? json_string(vm->disk) : json_null());
    json_object_set_new(o, "disk_base", vm->disk_base ? json_string(vm->disk_base) : json_null());
    json_object_set_new(o, "restart_deadline_ms",
                        vm->restart_deadline_ms
                            ? json_integer(now_wall_ms + (vm->restart_deadline_ms - now_ms))
                            : json_null());
    return o;
}

static json_t *vm_json_base(const struct inv_vm *vm)
{
    return json_pack("{s:s, s:s, s:s?, s:o, s:s?, s:o, s:o, s:s?, s:o, s:o, s:o, s:o}", "name",
                     vm->name, "state", inv_vm_state_name(vm->state), "cause", vm->cause, "pid",
                     known_int(vm->pid), "address", vm->address, "memory_mb",
                     known_int(vm->memory_mb), "vcpus", known_int(vm->vcpus), "accel", vm->accel,
                     "state_ts_ms", known_int(vm->state_ts_ms), "cpu_pct",
                     vm->has_sample ? json_real(vm->cpu_pct) : json_null(), "rss_kb",
                     vm->has_sample ? json_integer(vm->rss_kb) : json_null(), "sample_ts_ms",
                     vm->has_sample ? json_integer(vm->sample_ts_ms) : json_null());
}

/* A container is only as known as its host: a lost host's are `unknown`, with
 * the state last reported as `last_state` (as for VMs). */
static json_t *containers_json(const struct inv_host *h)
{
    if (h->state != INV_HOST_LOST)
        return json_incref(h->containers);
    json_t *list = json_deep_copy(h->containers);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        json_t *state = json_object_get(c, "state");
        if (state)
            json_object_set(c, "last_state", state);
        json_object_set_new(c, "state", json_string("unknown"));
    }
    return list;
}

json_t *inventory_self_fence_json(const struct inv_host *h, int64_t now_ms, int64_t now_wall_ms)
{
    const struct inv_self_fence *f = &h->self_fence;
    if (f->watchdog == INV_WATCHDOG_UNKNOWN)
        return json_null();
    json_t *o = json_pack("{s:I, s:s, s:I}", "timeout_ms", (json_int_t)f->timeout_ms, "watchdog",
                          inv_watchdog_name(f->watchdog), "reported_ms",
                          (json_int_t)(now_wall_ms - (now_ms - f->reported_ms)));
    if (o && f->watchdog == INV_WATCHDOG_PAUSED)
        json_object_set_new(o, "pause_ms", json_integer(f->pause_ms));
    return o ? o : json_null();
}

json_t *inventory_status_json(const struct inventory *inv, int64_t now_ms, int64_t now_wall_ms)
{
    cleanup_json json_t *hosts = json_array();
    if (hosts == NULL)
        return NULL;
    for (size_t i = 0; i < inv->n_hosts; i++) {
        const struct inv_host *h = inv->hosts[i];
        json_t *vms = json_array();
        for (size_t j = 0; vms && j < h->n_vms; j++)
            if (json_array_append_new(
                    vms, vm_json(h->vms[j], h->state == INV_HOST_LOST, now_ms, now_wall_ms)) < 0) {
                json_decref(vms);
                vms = NULL;
            }
        json_t *host = json_pack(
            "{s:s, s:s?, s:s, s:s?, s:s?, s:I, s:I, s:o}", "name", h->name, "role", h->role,
            "state", inv_host_state_name(h->state), "accel", h->accel, "agent_version",
            h->agent_version, "agent_pid", (json_int_t)h->agent_pid, "last_seen_ms",
            (json_int_t)(now_wall_ms - (now_ms - h->last_seen_ms)), "vms", vms);
        if (host)
            json_object_set_new(host, "self_fence",
                                inventory_self_fence_json(h, now_ms, now_wall_ms));
        if (host)
            json_object_set_new(host, "cut_off_until_ms",
                                h->cut_off_until_ms > now_ms
                                    ? json_integer(now_wall_ms + (h->cut_off_until_ms - now_ms))
                                    : json_null());
        if (host && h->containers)
            json_object_set_new(host, "containers", containers_json(h));
        if (host && h->vm_load)
            json_object_set(host, "vm_load", h->vm_load);
        if (json_array_append_new(hosts, host) < 0)
            return NULL;
    }
    return json_pack("{s:O}", "hosts", hosts);
}

json_t *inventory_host_container(const struct inv_host *h, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(h->containers, i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

struct inv_host *inventory_find_container_host(const struct inventory *inv, const char *name,
                                               const char *preferred)
{
    struct inv_host *found = NULL;
    for (size_t i = 0; i < inv->n_hosts; i++) {
        struct inv_host *h = inv->hosts[i];
        if (h->state != INV_HOST_CONNECTED || h->role == NULL || strcmp(h->role, "standby") != 0 ||
            !inventory_host_container(h, name))
            continue;
        if (preferred && strcmp(h->name, preferred) == 0)
            return h;
        if (found == NULL)
            found = h;
    }
    return found;
}

void inventory_set_moving(struct inventory *inv, const char *name, bool moving)
{
    if (inv->moving == NULL)
        inv->moving = json_object();
    if (moving)
        json_object_set_new(inv->moving, name, json_true());
    else
        json_object_del(inv->moving, name);
}

bool inventory_is_moving(const struct inventory *inv, const char *name)
{
    return inv->moving && json_object_get(inv->moving, name) != NULL;
}
