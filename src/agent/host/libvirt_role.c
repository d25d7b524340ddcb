/* The `libvirt` role: a host agent whose VMs are the configured domains of a
 * libvirt daemon (docs/agent.md, "The libvirt role").  To the server it is a
 * host like any other: hello lists the domains with wire states
 * (proto_state.h), lifecycle events become vm_events, samples come from
 * virDomainGetInfo/virDomainMemoryStats, and vm_kill (the server's fence)
 * is virDomainDestroy.
 *
 * Events: libvirt's default event loop (virEventRegisterDefaultImpl) runs in
 * one thread of its own, whose only work is libvirt's socket and keepalive
 * I/O and our two callbacks; each callback writes one fixed-size record to a
 * pipe read by the agent's libevent loop, where everything else happens.  We
 * chose this over registering libvirt's event hooks on libevent
 * (virEventRegisterImpl) because libvirt calls those hooks from its own
 * threads and expects their handle/timeout semantics (updates and removals
 * with deferred free callbacks), which libevent does not share; a pipe is one
 * small, obviously thread-safe hand-over.  The other libvirt calls (state,
 * samples, orders) are made from the agent's loop: they are quick RPCs to a
 * local daemon, bounded by the connection's keepalive when it hangs.
 *
 * What cannot be seen (libvirtd unreachable, a domain not defined) is
 * reported `unknown`, never `crashed`: the server does not recover a service
 * on it.  The connection is re-opened every LV_RECONNECT_MS until it works,
 * and the domains' states are re-read then.
 *
 * Self-fencing reuses the host role's watchdog (host_fence.h): it is given
 * the domains' QEMU pids from libvirt's pid files (a local qemu:///system
 * daemon: LV_QEMU_PID_DIR), and SIGKILLs them when the server is lost. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/agent_role.h"
#include "agent/host/host_fence.h"
#include "agent/host/host_sampler.h"
#include "agent/host/host_vm.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define LV_RECONNECT_MS 1000
/* libvirt's keepalive: a daemon that does not answer for interval * (count + 1)
 * seconds is taken as gone (the connection is closed, then re-opened). */
#define LV_KEEPALIVE_INTERVAL_S 1
#define LV_KEEPALIVE_COUNT      3
/* Where a local qemu:///system daemon keeps its QEMU pid files. */
#define LV_QEMU_PID_DIR "/run/libvirt/qemu"
#define LV_NAME_MAX     64

/* One record of the pipe from libvirt's event thread (< PIPE_BUF: atomic). */
struct lv_note {
    int event;  /* virDomainEventType, or LV_NOTE_CLOSED */
    int detail; /* the event's detail, or the close reason */
    char name[LV_NAME_MAX + 1];
};
#define LV_NOTE_CLOSED (-1)

struct lv_domain {
    const char *name; /* borrowed from the configuration */
    enum vm_state state;
    char cause[160];
    uint32_t boots;
    pid_t pid;             /* its QEMU, from libvirt's pid file; 0 unknown */
    bool destroy_ordered;  /* our own virDomainDestroy: its STOPPED is `stopped` */
    bool shutdown_ordered; /* our own virDomainShutdown: likewise */
    json_t *pending_id;    /* a vm_stop or vm_start waiting for its state */
    char pending_action[16];
    struct event *stop_timer; /* vm_stop: destroy after the grace */
    struct cpu_meter meter;
    struct lv_role *r;
};

struct lv_role {
    struct agent *agent;
    virConnectPtr conn; /* NULL while libvirtd is unreachable */
    int callback_id;
    int pipe_rd, pipe_wr;
    struct event *pipe_ev;
    struct event *reconnect;
    pthread_t thread;
    bool thread_started;
    volatile bool thread_stop;
    struct lv_domain *doms;
    size_t n_doms;
    bool local_pids; /* the URI is a local qemu:///system daemon */
    struct host_fence *fence;
};

static struct lv_role *role_of(struct agent *a)
{
    return a->role_data;
}

/* The last libvirt error's text (libvirt keeps it per thread). */
static const char *lv_error(void)
{
    const char *msg = virGetLastErrorMessage();
    return msg ? msg : "unknown libvirt error";
}

/* ---- libvirt's event thread: writes notes, nothing else ---------------- */

static void lv_note_send(struct lv_role *r, int event, int detail, const char *name)
{
    struct lv_note n = {.event = event, .detail = detail};
    snprintf(n.name, sizeof(n.name), "%s", name ? name : "");
    ssize_t w;
    do
        w = write(r->pipe_wr, &n, sizeof(n));
    while (w < 0 && errno == EINTR);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
    (void)conn;
    lv_note_send(opaque, event, detail, virDomainGetName(dom));
    return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
    (void)conn;
    lv_note_send(opaque, LV_NOTE_CLOSED, reason, NULL);
}

static void on_wakeup(int timer, void *opaque)
{
    (void)timer;
    (void)opaque;
}

/* libvirt prints every error on stderr unless told otherwise: the agent logs
 * the ones it acts on itself (lv_error). */
static void on_libvirt_error(void *opaque, virErrorPtr error)
{
    (void)opaque;
    (void)error;
}

static void *event_thread(void *arg)
{
    struct lv_role *r = arg;
    while (!r->thread_stop)
        if (virEventRunDefaultImpl() < 0)
            log_warn("libvirt event loop: %s", lv_error());
    return NULL;
}

/* ---- states ------------------------------------------------------------- */

/* The wire state of a lifecycle event (virDomainEventType, detail). */
static enum vm_state state_of_event(const struct lv_domain *d, int event, int detail, char *cause,
                                    size_t len)
{
    switch (event) {
    case VIR_DOMAIN_EVENT_STARTED:
    case VIR_DOMAIN_EVENT_RESUMED: /* a boot sends both: one vm_event */
        snprintf(cause, len, "libvirt: running");
        return VM_STATE_RUNNING;
    case VIR_DOMAIN_EVENT_SUSPENDED:
        snprintf(cause, len, "libvirt: paused");
        return VM_STATE_PAUSED;
    case VIR_DOMAIN_EVENT_PMSUSPENDED:
        snprintf(cause, len, "libvirt: guest suspended itself (S3/S4)");
        return VM_STATE_PAUSED;
    case VIR_DOMAIN_EVENT_CRASHED:
        snprintf(cause, len, "libvirt: guest panicked");
        return VM_STATE_PANICKED;
    case VIR_DOMAIN_EVENT_UNDEFINED:
        snprintf(cause, len, "libvirt: domain undefined");
        return VM_STATE_UNKNOWN;
    case VIR_DOMAIN_EVENT_STOPPED:
        switch (detail) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN:
            if (d->shutdown_ordered) {
                snprintf(cause, len, "libvirt: shut down on order");
                return VM_STATE_STOPPED;
            }
            snprintf(cause, len, "libvirt: guest shut down");
            return VM_STATE_SHUTDOWN;
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED:
            if (d->destroy_ordered) {
                snprintf(cause, len, "libvirt: destroyed on order");
                return VM_STATE_STOPPED;
            }
            /* Not by us: the VM is gone for its service, whoever did it. */
            snprintf(cause, len, "libvirt: destroyed outside vcr-agent");
            return VM_STATE_CRASHED;
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED:
            snprintf(cause, len, "libvirt: guest crashed");
            return VM_STATE_CRASHED;
        case VIR_DOMAIN_EVENT_STOPPED_FAILED:
            snprintf(cause, len, "libvirt: QEMU died (host-side failure)");
            return VM_STATE_CRASHED;
        default: /* migrated, saved, restored from a snapshot: moved on purpose */
            snprintf(cause, len, "libvirt: stopped (detail %d)", detail);
            return VM_STATE_STOPPED;
        }
    default: /* defined, shutdown begun: no change of running */
        return d->state;
    }
}

/* The wire state of virDomainGetState's (state, reason), for hello and after a
 * reconnect, when the event that led there was not seen. */
static enum vm_state state_of_domain(int state, int reason, char *cause, size_t len)
{
    switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        snprintf(cause, len, "libvirt: running");
        return VM_STATE_RUNNING;
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
        snprintf(cause, len, "libvirt: paused (reason %d)", reason);
        return VM_STATE_PAUSED;
    case VIR_DOMAIN_CRASHED:
        snprintf(cause, len, "libvirt: crashed");
        return VM_STATE_CRASHED;
    case VIR_DOMAIN_SHUTOFF:
        if (reason == VIR_DOMAIN_SHUTOFF_CRASHED || reason == VIR_DOMAIN_SHUTOFF_FAILED) {
            snprintf(cause, len, "libvirt: shut off (%s)",
                     reason == VIR_DOMAIN_SHUTOFF_CRASHED ? "crashed" : "QEMU failed");
            return VM_STATE_CRASHED;
        }
        snprintf(cause, len, "libvirt: shut off (reason %d)", reason);
        return VM_STATE_STOPPED;
    case VIR_DOMAIN_SHUTDOWN:
        snprintf(cause, len, "libvirt: shutting down");
        return VM_STATE_RUNNING;
    default:
        snprintf(cause, len, "libvirt: no state");
        return VM_STATE_UNKNOWN;
    }
}

static pid_t read_qemu_pid(const struct lv_role *r, const char *name)
{
    if (!r->local_pids)
        return 0;
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.pid", LV_QEMU_PID_DIR, name);
    cleanup_file FILE *f = fopen(path, "re");
    long pid = 0;
    if (f == NULL || fscanf(f, "%ld", &pid) != 1 || pid <= 1)
        return 0;
    return (pid_t)pid;
}

static void sync_fence(struct lv_role *r)
{
    const char *names[VCR_VMS_MAX];
    pid_t pids[VCR_VMS_MAX];
    for (size_t i = 0; i < r->n_doms; i++) {
        names[i] = r->doms[i].name;
        /* Unknown keeps its QEMU listed: libvirtd gone does not mean QEMU is. */
        enum vm_state s = r->doms[i].state;
        pids[i] = vm_state_is_live(s) || s == VM_STATE_UNKNOWN ? r->doms[i].pid : 0;
    }
    host_fence_sync_pids(r->fence, names, pids, r->n_doms);
}

static json_t *event_body(const struct lv_domain *d)
{
    json_t *body = json_pack("{s:s, s:s, s:s, s:I, s:I}", "vm", d->name, "state",
                             vm_state_name(d->state), "cause", d->cause, "ts_ms",
                             (json_int_t)vcr_wall_ms(), "boots", (json_int_t)d->boots);
    if (body && d->pid > 0 && vm_state_is_live(d->state))
        json_object_set_new(body, "pid", json_integer(d->pid));
    return body;
}

static void finish_pending(struct lv_domain *d, bool ok, const char *error)
{
    if (d->pending_id == NULL)
        return;
    agent_reply(d->r->agent, d->pending_id, ok, error);
    json_decref(d->pending_id);
    d->pending_id = NULL;
    evtimer_del(d->stop_timer);
}

static void check_pending(struct lv_domain *d)
{
    if (d->pending_id == NULL)
        return;
    bool live = vm_state_is_live(d->state);
    if (strcmp(d->pending_action, "vm_start") == 0) {
        if (d->state == VM_STATE_RUNNING || d->state == VM_STATE_PAUSED)
            finish_pending(d, true, NULL);
    } else if (!live && d->state != VM_STATE_UNKNOWN) {
        finish_pending(d, true, NULL);
    }
}

/* Records a new state; a vm_event when it differs from the one known. */
static void set_state(struct lv_domain *d, enum vm_state state, const char *cause)
{
    struct lv_role *r = d->r;
    bool was_live = vm_state_is_live(d->state);
    if (state == d->state && strcmp(cause, d->cause) == 0)
        return;
    if (state == VM_STATE_RUNNING && !was_live) {
        /* Seen again after libvirtd came back, same QEMU: not a new boot. */
        pid_t pid = read_qemu_pid(r, d->name);
        if (d->state != VM_STATE_UNKNOWN || pid <= 0 || pid != d->pid)
            d->boots++;
        d->pid = pid;
        d->meter = (struct cpu_meter){0};
    }
    if (!vm_state_is_live(state)) {
        d->destroy_ordered = false;
        d->shutdown_ordered = false;
    }
    log_info("domain %s: %s -> %s (%s)", d->name, vm_state_name(d->state), vm_state_name(state),
             cause);
    d->state = state;
    snprintf(d->cause, sizeof(d->cause), "%s", cause);
    json_t *body = event_body(d);
    host_fence_patch(r->fence, d->name, d->state, d->cause, d->pid, body);
    sync_fence(r);
    if (body)
        agent_report_event(r->agent, body);
    check_pending(d);
}

static struct lv_domain *find_domain(struct lv_role *r, const char *name)
{
    for (size_t i = 0; i < r->n_doms; i++)
        if (strcmp(r->doms[i].name, name) == 0)
            return &r->doms[i];
    return NULL;
}

/* Re-reads one domain's state from libvirtd (hello, reconnect). */
static void refresh_domain(struct lv_domain *d)
{
    struct lv_role *r = d->r;
    char cause[160];
    if (r->conn == NULL) {
        set_state(d, VM_STATE_UNKNOWN, "libvirt: libvirtd unreachable");
        return;
    }
    virDomainPtr dom = virDomainLookupByName(r->conn, d->name);
    if (dom == NULL) {
        snprintf(cause, sizeof(cause), "libvirt: %s", lv_error());
        set_state(d, VM_STATE_UNKNOWN, cause);
        return;
    }
    int state = 0, reason = 0;
    enum vm_state s = VM_STATE_UNKNOWN;
    if (virDomainGetState(dom, &state, &reason, 0) < 0)
        snprintf(cause, sizeof(cause), "libvirt: %s", lv_error());
    else
        s = state_of_domain(state, reason, cause, sizeof(cause));
    virDomainFree(dom);
    /* A domain that ran before and is found shut off after an outage of
     * libvirtd or of this agent ended unseen: keep the failure it had, or
     * call it what libvirt says. */
    set_state(d, s, cause);
}

/* ---- the connection ------------------------------------------------------ */

static void schedule_reconnect(struct lv_role *r)
{
    struct timeval tv = {LV_RECONNECT_MS / 1000, (LV_RECONNECT_MS % 1000) * 1000};
    evtimer_add(r->reconnect, &tv);
}

static void drop_connection(struct lv_role *r, const char *why)
{
    if (r->conn == NULL)
        return;
    log_warn("libvirt: connection to %s lost (%s); reconnecting every %d ms",
             r->agent->cfg->libvirt_uri, why, LV_RECONNECT_MS);
    if (r->callback_id >= 0)
        virConnectDomainEventDeregisterAny(r->conn, r->callback_id);
    virConnectUnregisterCloseCallback(r->conn, on_close);
    virConnectClose(r->conn);
    r->conn = NULL;
    r->callback_id = -1;
    for (size_t i = 0; i < r->n_doms; i++) {
        struct lv_domain *d = &r->doms[i];
        if (d->pending_id) {
            agent_reply(r->agent, d->pending_id, false, "libvirtd unreachable");
            json_decref(d->pending_id);
            d->pending_id = NULL;
            evtimer_del(d->stop_timer);
        }
        set_state(d, VM_STATE_UNKNOWN, "libvirt: libvirtd unreachable");
    }
    schedule_reconnect(r);
}

static int lv_connect(struct lv_role *r)
{
    const char *uri = r->agent->cfg->libvirt_uri;
    virConnectPtr c = virConnectOpen(uri);
    if (c == NULL)
        return -1;
    if (virConnectSetKeepAlive(c, LV_KEEPALIVE_INTERVAL_S, LV_KEEPALIVE_COUNT) < 0)
        log_warn("libvirt: keepalive not set: %s", lv_error());
    if (virConnectRegisterCloseCallback(c, on_close, r, NULL) < 0)
        log_warn("libvirt: close callback not set: %s", lv_error());
    int id = virConnectDomainEventRegisterAny(c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                              VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), r, NULL);
    if (id < 0) {
        log_error("libvirt: cannot watch lifecycle events of %s: %s", uri, lv_error());
        virConnectUnregisterCloseCallback(c, on_close);
        virConnectClose(c);
        return -1;
    }
    r->conn = c;
    r->callback_id = id;
    log_info("libvirt: connected to %s, watching %zu domain(s)", uri, r->n_doms);
    for (size_t i = 0; i < r->n_doms; i++)
        refresh_domain(&r->doms[i]);
    return 0;
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lv_role *r = arg;
    if (r->conn == NULL && lv_connect(r) < 0) {
        log_debug("libvirt: %s: %s", r->agent->cfg->libvirt_uri, lv_error());
        schedule_reconnect(r);
    }
}

static void on_note(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct lv_role *r = arg;
    struct lv_note n;
    ssize_t got;
    while ((got = read(fd, &n, sizeof(n))) == (ssize_t)sizeof(n)) {
        if (n.event == LV_NOTE_CLOSED) {
            char why[48];
            snprintf(why, sizeof(why), "close reason %d", n.detail);
            drop_connection(r, why);
            continue;
        }
        struct lv_domain *d = find_domain(r, n.name);
        if (d == NULL)
            continue; /* a domain we do not watch */
        if (n.event == VIR_DOMAIN_EVENT_DEFINED) {
            refresh_domain(d); /* defined anew: its state may be news */
            continue;
        }
        char cause[160] = "";
        enum vm_state s = state_of_event(d, n.event, n.detail, cause, sizeof(cause));
        if (cause[0])
            set_state(d, s, cause);
    }
}

/* ---- role ops ------------------------------------------------------------ */

static void on_fence_changed(void *opaque)
{
    struct lv_role *r = opaque;
    if (r->fence)
        agent_report(r->agent, "self_fence", host_fence_report(r->fence));
}

static json_t *lv_hello_extra(struct agent *a)
{
    return json_pack("{s:o, s:s}", "self_fence", host_fence_report(role_of(a)->fence), "backend",
                     "libvirt");
}

static void lv_fini(struct agent *a);
static void on_stop_grace(evutil_socket_t fd, short what, void *arg);

static int lv_init(struct agent *a, vcr_error_t *err)
{
    const struct vcr_agent_config *cfg = a->cfg;
    if (cfg->libvirt_uri == NULL)
        return vcr_error_make(err, EINVAL,
                              "role libvirt: `%s` has no `libvirt: {uri: URI, domains: [NAME...]}`",
                              cfg->path ? cfg->path : "the configuration");
    struct lv_role *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->doms = calloc(cfg->n_libvirt_domains, sizeof(*r->doms))) == NULL) {
        free(r);
        return vcr_error_make(err, ENOMEM, "libvirt role: out of memory");
    }
    a->role_data = r;
    r->agent = a;
    r->callback_id = -1;
    r->pipe_rd = r->pipe_wr = -1;
    r->n_doms = cfg->n_libvirt_domains;
    r->local_pids = strncmp(cfg->libvirt_uri, "qemu:///system", 14) == 0;
    for (size_t i = 0; i < r->n_doms; i++) {
        struct lv_domain *d = &r->doms[i];
        d->name = cfg->libvirt_domains[i];
        d->state = VM_STATE_UNKNOWN;
        snprintf(d->cause, sizeof(d->cause), "libvirt: not read yet");
        d->r = r;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        vcr_error_errno(err, "libvirt role: pipe");
        goto fail;
    }
    r->pipe_rd = fds[0];
    r->pipe_wr = fds[1];
    /* The writer blocks rather than drop a note when the agent is slow. */
    fcntl(r->pipe_wr, F_SETFL, 0);
    r->pipe_ev = event_new(a->base, r->pipe_rd, EV_READ | EV_PERSIST, on_note, r);
    r->reconnect = evtimer_new(a->base, on_reconnect, r);
    if (r->pipe_ev == NULL || r->reconnect == NULL || event_add(r->pipe_ev, NULL) < 0) {
        vcr_error_make(err, ENOMEM, "libvirt role: out of memory");
        goto fail;
    }
    virSetErrorFunc(NULL, on_libvirt_error);
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
        vcr_error_make(err, EIO, "libvirt: cannot initialise: %s", lv_error());
        goto fail;
    }
    if (pthread_create(&r->thread, NULL, event_thread, r) != 0) {
        vcr_error_make(err, EAGAIN, "libvirt role: cannot start its event thread");
        goto fail;
    }
    r->thread_started = true;
    r->fence = host_fence_new(a->base, cfg->state_dir, cfg->fence_timeout_ms, NULL,
                              on_fence_changed, r, err);
    if (r->fence == NULL)
        goto fail;
    if (!r->local_pids && cfg->fence_timeout_ms > 0)
        log_warn("libvirt: %s is not a local qemu:///system daemon: the QEMU pids are not known, "
                 "so the fence watchdog has nothing to kill (self-fencing does not protect these "
                 "domains)",
                 cfg->libvirt_uri);
    for (size_t i = 0; i < r->n_doms; i++) {
        r->doms[i].stop_timer = evtimer_new(a->base, on_stop_grace, &r->doms[i]);
        if (r->doms[i].stop_timer == NULL) {
            vcr_error_make(err, ENOMEM, "libvirt role: out of memory");
            goto fail;
        }
    }
    if (lv_connect(r) < 0) {
        log_warn("libvirt: %s: %s; its domains are `unknown` until it answers (retry every "
                 "%d ms)",
                 cfg->libvirt_uri, lv_error(), LV_RECONNECT_MS);
        for (size_t i = 0; i < r->n_doms; i++)
            snprintf(r->doms[i].cause, sizeof(r->doms[i].cause), "libvirt: libvirtd unreachable");
        schedule_reconnect(r);
    }
    sync_fence(r);
    agent_role_ready(a, "none");
    return 0;
fail:
    lv_fini(a);
    return -1;
}

static json_t *lv_vm_list(struct agent *a)
{
    struct lv_role *r = role_of(a);
    json_t *list = json_array();
    for (size_t i = 0; list && i < r->n_doms; i++) {
        const struct lv_domain *d = &r->doms[i];
        json_t *vm =
            json_pack("{s:s, s:s, s:s, s:I, s:i, s:s}", "name", d->name, "state",
                      vm_state_name(d->state), "cause", d->cause, "boots", (json_int_t)d->boots,
                      "pid", vm_state_is_live(d->state) ? (int)d->pid : 0, "accel", "none");
        host_fence_patch(r->fence, d->name, d->state, d->cause, d->pid, vm);
        if (vm)
            json_array_append_new(list, vm);
    }
    return list;
}

static json_t *lv_sample(struct agent *a)
{
    struct lv_role *r = role_of(a);
    json_t *list = json_array();
    for (size_t i = 0; list && r->conn && i < r->n_doms; i++) {
        struct lv_domain *d = &r->doms[i];
        if (!vm_state_is_live(d->state))
            continue;
        virDomainPtr dom = virDomainLookupByName(r->conn, d->name);
        virDomainInfo info;
        if (dom == NULL || virDomainGetInfo(dom, &info) < 0) {
            if (dom)
                virDomainFree(dom);
            continue;
        }
        /* cpuTime is in ns: a meter at 1e9 ticks per second. */
        double pct = cpu_meter_update(&d->meter, info.cpuTime, vcr_mono_ms(), 1000000000L);
        uint64_t rss_kb = 0;
        virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
        int n = virDomainMemoryStats(dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);
        for (int k = 0; k < n; k++)
            if (st[k].tag == VIR_DOMAIN_MEMORY_STAT_RSS)
                rss_kb = st[k].val;
        virDomainFree(dom);
        json_array_append_new(list, json_pack("{s:s, s:f, s:I}", "vm", d->name, "cpu_pct",
                                              pct < 0 ? 0.0 : pct, "rss_kb", (json_int_t)rss_kb));
    }
    return list;
}

/* vm_stop's grace is over: destroy. */
static void on_stop_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lv_domain *d = arg;
    struct lv_role *r = d->r;
    virDomainPtr dom = r->conn ? virDomainLookupByName(r->conn, d->name) : NULL;
    log_warn("domain %s: not down %d ms after the shutdown request: destroying it", d->name,
             HOST_VM_STOP_GRACE_MS);
    d->destroy_ordered = true;
    if (dom == NULL || virDomainDestroy(dom) < 0)
        finish_pending(d, false, lv_error());
    if (dom)
        virDomainFree(dom);
}

/* One order (docs/protocol.md): vm_kill is the fence, virDomainDestroy. */
static void lv_order(struct agent *a, json_t *id, const char *action, const char *name, json_t *msg)
{
    (void)msg;
    struct lv_role *r = role_of(a);
    char text[256];
    if (action == NULL || name == NULL) {
        agent_refuse(a, id, EINVAL, "an order needs `action` and `vm`");
        return;
    }
    bool start = strcmp(action, "vm_start") == 0, stop = strcmp(action, "vm_stop") == 0,
         kill = strcmp(action, "vm_kill") == 0;
    if (!start && !stop && !kill) {
        snprintf(text, sizeof(text),
                 "`%.40s` is not supported by the libvirt role (allowed: vm_start, vm_stop, "
                 "vm_kill); warm restart, volumes and reboots need the host role's own QEMU",
                 action);
        agent_refuse(a, id,
                     strncmp(action, "vm_", 3) == 0 || strncmp(action, "volume_", 7) == 0 ? ENOTSUP
                                                                                          : EINVAL,
                     text);
        return;
    }
    struct lv_domain *d = find_domain(r, name);
    if (d == NULL) {
        snprintf(text, sizeof(text), "no domain `%s` on host %s", name, a->cfg->host);
        agent_refuse(a, id, ENOENT, text);
        return;
    }
    if (d->pending_id) {
        snprintf(text, sizeof(text), "domain `%s` is busy with an earlier %s order", name,
                 d->pending_action);
        agent_refuse(a, id, EBUSY, text);
        return;
    }
    if (r->conn == NULL) {
        agent_refuse(a, id, EAGAIN, "libvirtd unreachable");
        return;
    }
    virDomainPtr dom = virDomainLookupByName(r->conn, name);
    if (dom == NULL) {
        snprintf(text, sizeof(text), "libvirt: %s", lv_error());
        agent_refuse(a, id, ENOENT, text);
        return;
    }
    int active = virDomainIsActive(dom);
    int rc = 0;
    if (kill || stop) {
        if (active == 0) {
            agent_reply(a, id, true, NULL); /* already down: what the order asks holds */
        } else if (kill) {
            /* Synchronous: when it returns, QEMU is gone (its STOPPED event follows). */
            d->destroy_ordered = true;
            if ((rc = virDomainDestroy(dom)) == 0)
                agent_reply(a, id, true, NULL);
        } else {
            d->shutdown_ordered = true;
            if ((rc = virDomainShutdown(dom)) == 0) {
                d->pending_id = json_incref(id);
                snprintf(d->pending_action, sizeof(d->pending_action), "%s", action);
                struct timeval tv = {HOST_VM_STOP_GRACE_MS / 1000,
                                     (HOST_VM_STOP_GRACE_MS % 1000) * 1000};
                evtimer_add(d->stop_timer, &tv);
            }
        }
    } else if (active == 1) {
        agent_reply(a, id, true, NULL);
    } else if ((rc = virDomainCreate(dom)) == 0) {
        d->pending_id = json_incref(id);
        snprintf(d->pending_action, sizeof(d->pending_action), "%s", action);
        check_pending(d);
    }
    if (rc < 0) {
        d->destroy_ordered = d->shutdown_ordered = false;
        snprintf(text, sizeof(text), "libvirt: %s", lv_error());
        agent_refuse(a, id, EIO, text);
    }
    virDomainFree(dom);
}

/* The domains are libvirt's: the agent leaves them as they are, even with
 * --stop-vms-on-exit (docs/agent.md). */
static void lv_leave(struct agent *a, bool stop)
{
    if (stop)
        log_info("libvirt: --stop-vms-on-exit does not apply: the domains stay with libvirtd");
    agent_role_left(a);
}

static void lv_server_heard(struct agent *a, int64_t evidence_ms)
{
    struct lv_role *r = role_of(a);
    if (r)
        host_fence_feed(r->fence, evidence_ms);
}

static void lv_server_fence_limit(struct agent *a, uint32_t fence_after_ms)
{
    struct lv_role *r = role_of(a);
    if (r)
        host_fence_limit(r->fence, fence_after_ms);
}

static void lv_fini(struct agent *a)
{
    struct lv_role *r = role_of(a);
    if (r == NULL)
        return;
    if (r->conn) {
        if (r->callback_id >= 0)
            virConnectDomainEventDeregisterAny(r->conn, r->callback_id);
        virConnectUnregisterCloseCallback(r->conn, on_close);
        virConnectClose(r->conn);
    }
    if (r->thread_started) {
        /* A timer that fires at once wakes the loop so that it sees the flag. */
        r->thread_stop = true;
        virEventAddTimeout(0, on_wakeup, NULL, NULL);
        pthread_join(r->thread, NULL);
    }
    host_fence_free(r->fence);
    for (size_t i = 0; i < r->n_doms; i++) {
        json_decref(r->doms[i].pending_id);
        if (r->doms[i].stop_timer)
            event_free(r->doms[i].stop_timer);
    }
    if (r->pipe_ev)
        event_free(r->pipe_ev);
    if (r->reconnect)
        event_free(r->reconnect);
    if (r->pipe_rd >= 0)
        close(r->pipe_rd);
    if (r->pipe_wr >= 0)
        close(r->pipe_wr);
    free(r->doms);
    free(r);
    a->role_data = NULL;
}

const struct agent_role_ops libvirt_role_ops = {
    .name = "libvirt",
    .hello_role = "host",
    .init = lv_init,
    .vm_list = lv_vm_list,
    .sample = lv_sample,
    .order = lv_order,
    .leave = lv_leave,
    .fini = lv_fini,
    .server_heard = lv_server_heard,
    .server_fence_limit = lv_server_fence_limit,
    .hello_extra = lv_hello_extra,
};
