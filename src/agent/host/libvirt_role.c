/* The `libvirt` role: a host agent whose VMs are the configured domains of a
 * libvirt daemon (docs/agent.md, "The libvirt role").  To the server it is a
 * host like any other: hello lists the domains with wire states
 * (proto_state.h), lifecycle events become vm_events, samples come from
 * virDomainGetInfo/virDomainMemoryStats, and vm_kill (the server's fence)
 * is virDomainDestroy.
 *
 * Threads.  The agent's libevent loop never calls libvirt: a libvirtd that
 * hangs (stopped, swapping, deadlocked) would stop the heartbeats with it,
 * and the server would declare the host lost while the agent's own fence
 * watchdog killed healthy domains.  Two threads of their own do:
 * - the event thread runs libvirt's default event loop
 *   (virEventRegisterDefaultImpl + virEventRunDefaultImpl, continuously, as
 *   libvirt requires) for the connection's socket and keepalive; its two
 *   callbacks (lifecycle, connection closed) write one fixed-size record to a
 *   pipe the agent's loop reads.  We did not register libvirt's event hooks
 *   on libevent (virEventRegisterImpl): libvirt calls them from its own
 *   threads with handle/timeout semantics (deferred removal with free
 *   callbacks) that libevent does not share.
 * - the worker thread owns the virConnectPtr and makes every call that is an
 *   RPC to libvirtd (open, close, state, samples, orders), one job at a time
 *   from a queue; a finished job goes on a done list and an eventfd wakes the
 *   loop, which applies its result.  Each job has a deadline on the loop: a
 *   query that misses it makes the domains `unknown` ("libvirtd did not
 *   answer"), an order that misses it is answered with code `timeout`, and a
 *   job still queued at its deadline is never run (a fence the server gave up
 *   on must not happen later).  A job that finishes after its deadline still
 *   brings its news (states), and the first job to finish after a stall has
 *   every state read again.
 * libvirt's connection object is thread-safe: the worker's RPCs and the
 * event thread's I/O share it (libvirt hands the socket between them).
 *
 * What cannot be seen (libvirtd unreachable or silent, a domain not defined)
 * is reported `unknown`, never `crashed`: the server does not recover a
 * service on it.  The connection is re-opened every LV_RECONNECT_MS until it
 * works, and the domains' states are re-read then.
 *
 * Self-fencing reuses the host role's watchdog (host_fence.h): it is given
 * the domains' QEMU pids from libvirt's pid files (a local qemu:///system
 * daemon: LV_QEMU_PID_DIR), and SIGKILLs them when the server is lost. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/host/libvirt_priv.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* Where a local qemu:///system daemon keeps its QEMU pid files. */
#define LV_QEMU_PID_DIR "/run/libvirt/qemu"

static struct lv_role *role_of(struct agent *a)
{
    return a->role_data;
}

/* The wire state of a lifecycle event (virDomainEventType, detail). */
enum vm_state state_of_event(const struct lv_domain *d, int event, int detail, char *cause,
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
enum vm_state state_of_domain(int state, int reason, char *cause, size_t len)
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

void finish_pending(struct lv_domain *d, bool ok, int status, const char *error)
{
    if (d->pending_id == NULL)
        return;
    if (ok)
        agent_reply(d->r->agent, d->pending_id, true, NULL);
    else
        agent_refuse(d->r->agent, d->pending_id, status, error);
    json_decref(d->pending_id);
    d->pending_id = NULL;
    evtimer_del(d->stop_timer);
}

void check_pending(struct lv_domain *d)
{
    if (d->pending_id == NULL)
        return;
    bool live = vm_state_is_live(d->state);
    if (strcmp(d->pending_action, "vm_start") == 0) {
        if (d->state == VM_STATE_RUNNING || d->state == VM_STATE_PAUSED)
            finish_pending(d, true, 0, NULL);
    } else if (!live && d->state != VM_STATE_UNKNOWN) {
        finish_pending(d, true, 0, NULL);
    }
}

/* Records a new state; a vm_event when it differs from the one known. */
void set_state(struct lv_domain *d, enum vm_state state, const char *cause)
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

void set_all_unknown(struct lv_role *r, const char *cause)
{
    for (size_t i = 0; i < r->n_doms; i++)
        set_state(&r->doms[i], VM_STATE_UNKNOWN, cause);
}

struct lv_domain *find_domain(struct lv_role *r, const char *name)
{
    for (size_t i = 0; i < r->n_doms; i++)
        if (strcmp(r->doms[i].name, name) == 0)
            return &r->doms[i];
    return NULL;
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
    r->pipe_rd = r->pipe_wr = r->wake_fd = -1;
    r->queue_tail = &r->queue;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
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
    if ((r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        vcr_error_errno(err, "libvirt role: eventfd");
        goto fail;
    }
    r->pipe_ev = event_new(a->base, r->pipe_rd, EV_READ | EV_PERSIST, on_note, r);
    r->wake_ev = event_new(a->base, r->wake_fd, EV_READ | EV_PERSIST, on_worker_done, r);
    r->reconnect = evtimer_new(a->base, on_reconnect, r);
    if (r->pipe_ev == NULL || r->wake_ev == NULL || r->reconnect == NULL ||
        event_add(r->pipe_ev, NULL) < 0 || event_add(r->wake_ev, NULL) < 0) {
        vcr_error_make(err, ENOMEM, "libvirt role: out of memory");
        goto fail;
    }
    virSetErrorFunc(NULL, on_libvirt_error);
    /* The event loop before any connection: libvirt wires a connection's
     * socket and keepalive into the implementation registered when it opens. */
    if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
        vcr_error_make(err, EIO, "libvirt: cannot initialise: %s", lv_error());
        goto fail;
    }
    if (pthread_create(&r->thread, NULL, event_thread, r) != 0) {
        vcr_error_make(err, EAGAIN, "libvirt role: cannot start its event thread");
        goto fail;
    }
    r->thread_started = true;
    if (pthread_create(&r->worker, NULL, worker_thread, r) != 0) {
        vcr_error_make(err, EAGAIN, "libvirt role: cannot start its worker thread");
        goto fail;
    }
    r->worker_started = true;
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
    /* The domains are `unknown` until the worker has read them (a connect job);
     * hello goes out at once: the server hears from this host meanwhile. */
    submit_connect(r);
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

/* The sample the worker took since the last tick (an empty list if none),
 * and the next one asked for: samples are one period old. */
static json_t *lv_sample(struct agent *a)
{
    struct lv_role *r = role_of(a);
    json_t *list = r->last_sample ? r->last_sample : json_array();
    r->last_sample = NULL;
    if (!r->connected || r->sampling)
        return list;
    struct lv_job *j = NULL;
    for (size_t i = 0; i < r->n_doms; i++) {
        if (!vm_state_is_live(r->doms[i].state))
            continue;
        if (j == NULL && (j = job_new(r, LV_JOB_SAMPLE, 0)) == NULL)
            return list;
        j->res[i].want = true;
    }
    if (j) {
        r->sampling = true;
        job_submit(r, j);
    }
    return list;
}

static void submit_order(struct lv_role *r, struct lv_domain *d, enum lv_job_kind kind, json_t *id)
{
    struct lv_job *j = job_new(r, kind, (size_t)(d - r->doms));
    if (j == NULL) {
        if (id)
            agent_refuse(r->agent, id, ENOMEM, "libvirt role: out of memory");
        return;
    }
    j->id = json_incref(id);
    /* Set before the call: its STOPPED event may come before its result. A stop
     * may end in a destroy (refused shutdown, or after the grace). */
    if (kind != LV_JOB_START)
        d->destroy_ordered = true;
    if (kind == LV_JOB_STOP)
        d->shutdown_ordered = true;
    if (kind != LV_JOB_DESTROY) {
        d->busy = true;
        d->busy_kind = kind;
    }
    job_submit(r, j);
}

/* vm_stop's grace is over: destroy. */
static void on_stop_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lv_domain *d = arg;
    log_warn("domain %s: not down %d ms after the shutdown request: destroying it", d->name,
             HOST_VM_STOP_GRACE_MS);
    submit_order(d->r, d, LV_JOB_DESTROY, NULL);
}

/* The orders of the role, each one job of the worker. */
struct lv_order_row {
    const char *action;
    enum lv_job_kind kind;
};
static const struct lv_order_row order_rows[] = {
    {"vm_start", LV_JOB_START},
    {"vm_stop", LV_JOB_STOP},
    {"vm_kill", LV_JOB_KILL},
};

/* Whether a vm_kill may overtake what keeps d busy: a vm_stop, queued, running or
 * in its grace.  The kill is the server's fence: it must neither wait out a
 * shutdown's grace nor fail because an operator stopped the VM a moment before.
 * Its job runs after the stop's (one worker, in order); the stop is answered
 * when the domain is down. */
static bool kill_overtakes(const struct lv_domain *d)
{
    return (!d->busy || d->busy_kind == LV_JOB_STOP) &&
           (d->pending_id == NULL || strcmp(d->pending_action, "vm_stop") == 0);
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
    const struct lv_order_row *row = NULL;
    for (size_t i = 0; i < sizeof(order_rows) / sizeof(order_rows[0]); i++)
        if (strcmp(order_rows[i].action, action) == 0)
            row = &order_rows[i];
    if (row == NULL) {
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
    if ((d->pending_id || d->busy) && !(row->kind == LV_JOB_KILL && kill_overtakes(d))) {
        snprintf(text, sizeof(text), "domain `%s` is busy with an earlier %s order", name,
                 d->pending_id ? d->pending_action : "");
        agent_refuse(a, id, EBUSY, text);
        return;
    }
    if (!r->connected) {
        agent_refuse(a, id, EAGAIN, "libvirtd unreachable");
        return;
    }
    submit_order(r, d, row->kind, id);
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
    bool worker_gone = stop_worker(r);
    if (r->thread_started && worker_gone) {
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
    if (r->wake_ev)
        event_free(r->wake_ev);
    if (r->reconnect)
        event_free(r->reconnect);
    json_decref(r->last_sample);
    a->role_data = NULL;
    if (!worker_gone)
        return; /* its jobs, the role and the descriptors stay theirs until exit */
    for (struct lv_job *j = r->queue, *next; j; j = next) {
        next = j->next;
        job_free(j);
    }
    for (struct lv_job *j = r->done, *next; j; j = next) {
        next = j->next;
        job_free(j);
    }
    if (r->pipe_rd >= 0)
        close(r->pipe_rd);
    if (r->pipe_wr >= 0)
        close(r->pipe_wr);
    if (r->wake_fd >= 0)
        close(r->wake_fd);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r->doms);
    free(r);
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
