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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
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
/* Deadlines of the worker's jobs: a query (open, states, samples) and an
 * order (destroy, shutdown, create: libvirt's destroy waits for QEMU to exit).
 * An order's is below the server's own order timeout (API_ORDER_TIMEOUT_MS,
 * 10 s), so that the server hears `timeout` from the agent, not silence. */
#define LV_QUERY_DEADLINE_MS 3000
#define LV_ORDER_DEADLINE_MS 8000
/* At exit, how long to wait for a worker stuck in a call to libvirtd. */
#define LV_EXIT_JOIN_MS 2000
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

enum lv_job_kind {
    LV_JOB_CONNECT, /* open, watch, read every domain's state */
    LV_JOB_CLOSE,   /* the connection was closed under us: let it go */
    LV_JOB_STATES,  /* read every domain's state */
    LV_JOB_SAMPLE,  /* cpuTime and RSS of the domains marked `want` */
    LV_JOB_KILL,    /* vm_kill: virDomainDestroy */
    LV_JOB_STOP,    /* vm_stop: virDomainShutdown */
    LV_JOB_DESTROY, /* vm_stop's grace is over: virDomainDestroy */
    LV_JOB_START,   /* vm_start: virDomainCreate */
};

static const char *const job_names[] = {
    [LV_JOB_CONNECT] = "connect", [LV_JOB_CLOSE] = "close",    [LV_JOB_STATES] = "states",
    [LV_JOB_SAMPLE] = "sample",   [LV_JOB_KILL] = "vm_kill",   [LV_JOB_STOP] = "vm_stop",
    [LV_JOB_DESTROY] = "destroy", [LV_JOB_START] = "vm_start",
};

/* What the worker found of one domain. */
struct lv_dom_result {
    bool want; /* set by the loop: this domain is asked about (samples) */
    bool ok;   /* the call worked */
    int state; /* virDomainState, for LV_JOB_CONNECT/STATES */
    int reason;
    unsigned long long cpu_ns;
    uint64_t rss_kb;
    char error[160];
};

/* A job: made and freed by the loop; between submit and done the worker
 * reads its request and writes its result (the queue's lock hands it over). */
struct lv_job {
    struct lv_job *next;
    enum lv_job_kind kind;
    size_t dom;   /* the domain of an order */
    bool dropped; /* under the lock: past its deadline before it ran */
    /* loop only */
    struct lv_role *role;
    struct event *deadline;
    bool late;  /* its deadline passed: reported already */
    json_t *id; /* an order's id */
    int64_t submitted_ms;
    /* result */
    int rc;         /* 0 done, -1 failed (error, status) */
    int status;     /* errno-style */
    int was_active; /* orders: virDomainIsActive before acting */
    int64_t done_ms;
    char error[256];
    size_t n;
    struct lv_dom_result res[];
};

struct lv_domain {
    const char *name; /* borrowed from the configuration */
    enum vm_state state;
    char cause[160];
    uint32_t boots;
    pid_t pid;             /* its QEMU, from libvirt's pid file; 0 unknown */
    bool destroy_ordered;  /* our own virDomainDestroy: its STOPPED is `stopped` */
    bool shutdown_ordered; /* our own virDomainShutdown: likewise */
    bool busy;             /* an order's job is queued or running */
    json_t *pending_id;    /* a vm_stop or vm_start waiting for its state */
    char pending_action[16];
    struct event *stop_timer; /* vm_stop: destroy after the grace */
    struct cpu_meter meter;
    struct lv_role *r;
};

struct lv_role {
    struct agent *agent;
    int pipe_rd, pipe_wr;
    struct event *pipe_ev;
    struct event *reconnect;
    pthread_t thread;
    bool thread_started;
    volatile bool thread_stop;
    /* the worker */
    pthread_t worker;
    bool worker_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct lv_job *queue, **queue_tail; /* under lock */
    struct lv_job *done;                /* under lock, newest first */
    bool worker_stop;                   /* under lock */
    int wake_fd;                        /* eventfd: the worker finished a job */
    struct event *wake_ev;
    virConnectPtr conn; /* the worker's only; NULL while not connected */
    int callback_id;    /* the worker's */
    /* the loop's view */
    bool connected;  /* the last connect worked and no close since */
    bool connecting; /* a connect job is queued or running */
    bool sampling;   /* a sample job is queued or running */
    bool stalled;    /* a job missed its deadline; re-read when one ends */
    size_t jobs_in_flight;
    json_t *last_sample; /* the newest sample's `vms`, not yet sent */
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

/* ---- the worker thread: every RPC to libvirtd --------------------------- */

static void job_fail(struct lv_job *j, int status, const char *what)
{
    j->rc = -1;
    j->status = status;
    snprintf(j->error, sizeof(j->error), "libvirt: %s%s%s", what ? what : "", what ? ": " : "",
             lv_error());
}

static void work_close(struct lv_role *r)
{
    if (r->conn == NULL)
        return;
    if (r->callback_id >= 0)
        virConnectDomainEventDeregisterAny(r->conn, r->callback_id);
    virConnectUnregisterCloseCallback(r->conn, on_close);
    virConnectClose(r->conn);
    r->conn = NULL;
    r->callback_id = -1;
}

static void work_states(struct lv_role *r, struct lv_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        struct lv_dom_result *res = &j->res[i];
        virDomainPtr dom = virDomainLookupByName(r->conn, r->doms[i].name);
        res->ok = dom != NULL && virDomainGetState(dom, &res->state, &res->reason, 0) == 0;
        if (!res->ok)
            snprintf(res->error, sizeof(res->error), "libvirt: %s", lv_error());
        if (dom)
            virDomainFree(dom);
    }
}

static void work_connect(struct lv_role *r, struct lv_job *j, const char *uri)
{
    if (r->conn == NULL) {
        virConnectPtr c = virConnectOpen(uri);
        if (c == NULL) {
            job_fail(j, EAGAIN, NULL);
            return;
        }
        if (virConnectSetKeepAlive(c, LV_KEEPALIVE_INTERVAL_S, LV_KEEPALIVE_COUNT) < 0)
            log_warn("libvirt: keepalive not set: %s", lv_error());
        if (virConnectRegisterCloseCallback(c, on_close, r, NULL) < 0)
            log_warn("libvirt: close callback not set: %s", lv_error());
        int id = virConnectDomainEventRegisterAny(c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), r, NULL);
        if (id < 0) {
            job_fail(j, EIO, "cannot watch lifecycle events");
            virConnectUnregisterCloseCallback(c, on_close);
            virConnectClose(c);
            return;
        }
        r->conn = c;
        r->callback_id = id;
    }
    work_states(r, j);
}

static void work_sample(struct lv_role *r, struct lv_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        struct lv_dom_result *res = &j->res[i];
        if (!res->want)
            continue;
        virDomainPtr dom = virDomainLookupByName(r->conn, r->doms[i].name);
        virDomainInfo info;
        if (dom == NULL || virDomainGetInfo(dom, &info) < 0) {
            if (dom)
                virDomainFree(dom);
            continue;
        }
        res->ok = true;
        res->cpu_ns = info.cpuTime;
        virDomainMemoryStatStruct st[VIR_DOMAIN_MEMORY_STAT_NR];
        int n = virDomainMemoryStats(dom, st, VIR_DOMAIN_MEMORY_STAT_NR, 0);
        for (int k = 0; k < n; k++)
            if (st[k].tag == VIR_DOMAIN_MEMORY_STAT_RSS)
                res->rss_kb = st[k].val;
        virDomainFree(dom);
    }
}

static void work_order(struct lv_role *r, struct lv_job *j)
{
    virDomainPtr dom = virDomainLookupByName(r->conn, r->doms[j->dom].name);
    if (dom == NULL) {
        job_fail(j, ENOENT, NULL);
        return;
    }
    j->was_active = virDomainIsActive(dom);
    int rc = 0;
    switch (j->kind) {
    case LV_JOB_KILL:
    case LV_JOB_DESTROY:
        /* Synchronous: when it returns, QEMU is gone (its STOPPED event follows). */
        if (j->was_active != 0)
            rc = virDomainDestroy(dom);
        break;
    case LV_JOB_STOP:
        if (j->was_active != 0 && (rc = virDomainShutdown(dom)) < 0 &&
            virDomainIsActive(dom) == 1) {
            /* The request cannot reach the guest (no ACPI, no guest agent): the
             * grace would be for nothing, so the stop is forced at once. */
            log_warn("domain %s: shutdown refused (%s): destroying it", r->doms[j->dom].name,
                     lv_error());
            rc = virDomainDestroy(dom);
        }
        break;
    case LV_JOB_START:
        if (j->was_active != 1)
            rc = virDomainCreate(dom);
        break;
    default:
        break;
    }
    /* Destroyed or shut down meanwhile by someone else (a `virsh destroy` that
     * libvirtd was still finishing when we asked): what the order asks holds. */
    if (rc < 0 && j->kind != LV_JOB_START && virDomainIsActive(dom) == 0) {
        j->was_active = 0;
        rc = 0;
    }
    if (rc < 0)
        job_fail(j, EIO, NULL);
    virDomainFree(dom);
}

static void work(struct lv_role *r, struct lv_job *j)
{
    if (j->kind == LV_JOB_CONNECT) {
        work_connect(r, j, r->agent->cfg->libvirt_uri);
        return;
    }
    if (j->kind == LV_JOB_CLOSE) {
        work_close(r);
        return;
    }
    if (r->conn == NULL) {
        j->rc = -1;
        j->status = EAGAIN;
        snprintf(j->error, sizeof(j->error), "libvirtd unreachable");
        return;
    }
    if (j->kind == LV_JOB_STATES)
        work_states(r, j);
    else if (j->kind == LV_JOB_SAMPLE)
        work_sample(r, j);
    else
        work_order(r, j);
}

static void *worker_thread(void *arg)
{
    struct lv_role *r = arg;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (r->queue == NULL && !r->worker_stop)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->worker_stop)
            break;
        struct lv_job *j = r->queue;
        r->queue = j->next;
        if (r->queue == NULL)
            r->queue_tail = &r->queue;
        /* A close always runs: the next connect must not find the dead connection. */
        bool run = !j->dropped || j->kind == LV_JOB_CLOSE;
        pthread_mutex_unlock(&r->lock);
        if (!run) {
            /* Its deadline passed while it waited: reported already, never run. */
            j->rc = -1;
            j->status = ETIMEDOUT;
            snprintf(j->error, sizeof(j->error), "libvirt: not run: past its deadline");
        } else {
            log_debug("libvirt: %s%s%s", job_names[j->kind], j->kind >= LV_JOB_KILL ? " " : "",
                      j->kind >= LV_JOB_KILL ? r->doms[j->dom].name : "");
            work(r, j);
        }
        j->done_ms = vcr_mono_ms();
        pthread_mutex_lock(&r->lock);
        j->next = r->done;
        r->done = j;
        uint64_t one = 1;
        if (write(r->wake_fd, &one, sizeof(one)) < 0)
            log_warn("libvirt worker: eventfd: %s", strerror(errno));
    }
    pthread_mutex_unlock(&r->lock);
    work_close(r);
    return NULL;
}

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

static void finish_pending(struct lv_domain *d, bool ok, int status, const char *error)
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

static void check_pending(struct lv_domain *d)
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

static void set_all_unknown(struct lv_role *r, const char *cause)
{
    for (size_t i = 0; i < r->n_doms; i++)
        set_state(&r->doms[i], VM_STATE_UNKNOWN, cause);
}

static struct lv_domain *find_domain(struct lv_role *r, const char *name)
{
    for (size_t i = 0; i < r->n_doms; i++)
        if (strcmp(r->doms[i].name, name) == 0)
            return &r->doms[i];
    return NULL;
}

/* ---- jobs, seen from the loop -------------------------------------------- */

static void on_job_deadline(evutil_socket_t fd, short what, void *arg);

static struct lv_job *job_new(struct lv_role *r, enum lv_job_kind kind, size_t dom)
{
    struct lv_job *j = calloc(1, sizeof(*j) + r->n_doms * sizeof(j->res[0]));
    if (j == NULL)
        return NULL;
    j->role = r;
    j->kind = kind;
    j->dom = dom;
    j->n = r->n_doms;
    j->deadline = evtimer_new(r->agent->base, on_job_deadline, j);
    if (j->deadline == NULL) {
        free(j);
        return NULL;
    }
    return j;
}

static void job_free(struct lv_job *j)
{
    if (j == NULL)
        return;
    if (j->deadline)
        event_free(j->deadline);
    json_decref(j->id);
    free(j);
}

/* Hands j to the worker; its deadline starts now. */
static void job_submit(struct lv_role *r, struct lv_job *j)
{
    int ms = j->kind >= LV_JOB_KILL ? LV_ORDER_DEADLINE_MS : LV_QUERY_DEADLINE_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    j->submitted_ms = vcr_mono_ms();
    evtimer_add(j->deadline, &tv);
    r->jobs_in_flight++;
    pthread_mutex_lock(&r->lock);
    j->next = NULL;
    *r->queue_tail = j;
    r->queue_tail = &j->next;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void submit_connect(struct lv_role *r)
{
    if (r->connecting || r->connected)
        return;
    struct lv_job *j = job_new(r, LV_JOB_CONNECT, 0);
    if (j == NULL) {
        log_error("libvirt: out of memory");
        return;
    }
    r->connecting = true;
    job_submit(r, j);
}

static void submit_states(struct lv_role *r)
{
    struct lv_job *j = r->connected ? job_new(r, LV_JOB_STATES, 0) : NULL;
    if (j)
        job_submit(r, j);
}

static void schedule_reconnect(struct lv_role *r)
{
    struct timeval tv = {LV_RECONNECT_MS / 1000, (LV_RECONNECT_MS % 1000) * 1000};
    evtimer_add(r->reconnect, &tv);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    submit_connect(arg);
}

/* The connection is gone (closed by libvirt, or its keepalive expired). */
static void drop_connection(struct lv_role *r, const char *why)
{
    if (!r->connected)
        return;
    log_warn("libvirt: connection to %s lost (%s); reconnecting every %d ms",
             r->agent->cfg->libvirt_uri, why, LV_RECONNECT_MS);
    r->connected = false;
    for (size_t i = 0; i < r->n_doms; i++)
        finish_pending(&r->doms[i], false, EAGAIN, "libvirtd unreachable");
    set_all_unknown(r, "libvirt: libvirtd unreachable");
    struct lv_job *j = job_new(r, LV_JOB_CLOSE, 0);
    if (j)
        job_submit(r, j);
    /* The worker runs jobs in order: the connect comes after the close. */
    schedule_reconnect(r);
}

/* Applies the states a connect or states job read. */
static void apply_states(struct lv_role *r, const struct lv_job *j)
{
    for (size_t i = 0; i < r->n_doms; i++) {
        const struct lv_dom_result *res = &j->res[i];
        char cause[160];
        enum vm_state s = VM_STATE_UNKNOWN;
        if (res->ok)
            s = state_of_domain(res->state, res->reason, cause, sizeof(cause));
        else
            snprintf(cause, sizeof(cause), "%s", res->error);
        /* A domain that ran before and is found shut off after an outage of
         * libvirtd or of this agent ended unseen: call it what libvirt says. */
        set_state(&r->doms[i], s, cause);
    }
}

static void apply_sample(struct lv_role *r, const struct lv_job *j)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < r->n_doms; i++) {
        const struct lv_dom_result *res = &j->res[i];
        struct lv_domain *d = &r->doms[i];
        if (!res->want || !res->ok || !vm_state_is_live(d->state))
            continue;
        /* cpuTime is in ns: a meter at 1e9 ticks per second. */
        double pct = cpu_meter_update(&d->meter, res->cpu_ns, j->done_ms, 1000000000L);
        json_array_append_new(list,
                              json_pack("{s:s, s:f, s:I}", "vm", d->name, "cpu_pct",
                                        pct < 0 ? 0.0 : pct, "rss_kb", (json_int_t)res->rss_kb));
    }
    json_decref(r->last_sample);
    r->last_sample = list;
}

static void apply_order(struct lv_role *r, struct lv_job *j)
{
    struct lv_domain *d = &r->doms[j->dom];
    const char *action = job_names[j->kind];
    d->busy = false;
    if (j->late) {
        /* Answered `timeout` already; the lifecycle events tell what happened. */
        log_warn("domain %s: %s ended %lld ms after it was ordered (%s)", d->name, action,
                 (long long)(j->done_ms - j->submitted_ms), j->rc < 0 ? j->error : "done");
        if (j->rc < 0)
            d->destroy_ordered = d->shutdown_ordered = false;
        return;
    }
    if (j->rc < 0) {
        d->destroy_ordered = d->shutdown_ordered = false;
        if (j->kind == LV_JOB_DESTROY)
            finish_pending(d, false, j->status, j->error);
        else
            agent_refuse(r->agent, j->id, j->status, j->error);
        return;
    }
    switch (j->kind) {
    case LV_JOB_KILL:
        if (j->was_active == 0)
            d->destroy_ordered = false;
        agent_reply(r->agent, j->id, true, NULL); /* down already, or destroyed now */
        break;
    case LV_JOB_STOP:
        if (j->was_active == 0) {
            d->shutdown_ordered = false;
            agent_reply(r->agent, j->id, true, NULL);
            break;
        }
        d->pending_id = json_incref(j->id);
        snprintf(d->pending_action, sizeof(d->pending_action), "%s", action);
        struct timeval tv = {HOST_VM_STOP_GRACE_MS / 1000, (HOST_VM_STOP_GRACE_MS % 1000) * 1000};
        evtimer_add(d->stop_timer, &tv);
        check_pending(d);
        break;
    case LV_JOB_START:
        if (j->was_active == 1) {
            agent_reply(r->agent, j->id, true, NULL);
            break;
        }
        d->pending_id = json_incref(j->id);
        snprintf(d->pending_action, sizeof(d->pending_action), "%s", action);
        check_pending(d);
        break;
    default: /* LV_JOB_DESTROY: the STOPPED event answers the pending vm_stop */
        break;
    }
}

static void job_done(struct lv_role *r, struct lv_job *j)
{
    evtimer_del(j->deadline);
    r->jobs_in_flight--;
    if (j->late)
        log_warn("libvirt: %s answered after %lld ms", job_names[j->kind],
                 (long long)(j->done_ms - j->submitted_ms));
    switch (j->kind) {
    case LV_JOB_CONNECT:
        r->connecting = false;
        if (j->rc < 0) {
            log_debug("libvirt: %s: %s", r->agent->cfg->libvirt_uri, j->error);
            set_all_unknown(r, "libvirt: libvirtd unreachable");
            schedule_reconnect(r);
            break;
        }
        if (!r->connected)
            log_info("libvirt: connected to %s, watching %zu domain(s)", r->agent->cfg->libvirt_uri,
                     r->n_doms);
        r->connected = true;
        apply_states(r, j);
        break;
    case LV_JOB_CLOSE:
        break;
    case LV_JOB_STATES:
        if (j->rc == 0)
            apply_states(r, j);
        break;
    case LV_JOB_SAMPLE:
        r->sampling = false;
        if (j->rc == 0)
            apply_sample(r, j);
        break;
    default:
        apply_order(r, j);
        break;
    }
    /* The worker is back after a stall: what was `unknown` meanwhile is read again. */
    if (r->stalled && j->kind != LV_JOB_CONNECT && j->kind != LV_JOB_STATES) {
        r->stalled = false;
        submit_states(r);
    } else if (j->kind == LV_JOB_CONNECT || j->kind == LV_JOB_STATES) {
        r->stalled = false;
    }
    job_free(j);
}

static void on_worker_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct lv_role *r = arg;
    uint64_t n;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warn("libvirt: eventfd: %s", strerror(errno));
    pthread_mutex_lock(&r->lock);
    struct lv_job *done = r->done;
    r->done = NULL;
    pthread_mutex_unlock(&r->lock);
    /* Oldest first: the list is newest first. */
    struct lv_job *in_order = NULL;
    while (done) {
        struct lv_job *next = done->next;
        done->next = in_order;
        in_order = done;
        done = next;
    }
    while (in_order) {
        struct lv_job *next = in_order->next;
        job_done(r, in_order);
        in_order = next;
    }
}

/* A job missed its deadline: libvirtd (or the worker, stuck in a call before
 * it) did not answer.  Reported now; the job runs later only if it began. */
static void on_job_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lv_job *j = arg;
    struct lv_role *r = j->role;
    j->late = true;
    pthread_mutex_lock(&r->lock);
    j->dropped = true; /* not started yet: never run it */
    pthread_mutex_unlock(&r->lock);
    int ms = j->kind >= LV_JOB_KILL ? LV_ORDER_DEADLINE_MS : LV_QUERY_DEADLINE_MS;
    char cause[160];
    snprintf(cause, sizeof(cause), "libvirt: libvirtd did not answer within %d ms (%s)", ms,
             job_names[j->kind]);
    log_warn("%s", cause);
    r->stalled = true;
    if (j->kind >= LV_JOB_KILL) {
        struct lv_domain *d = &r->doms[j->dom];
        if (j->kind == LV_JOB_DESTROY)
            finish_pending(d, false, ETIMEDOUT, cause);
        else
            agent_refuse(r->agent, j->id, ETIMEDOUT, cause);
    }
    set_all_unknown(r, cause);
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
        log_debug("libvirt: event %d/%d for %s", n.event, n.detail, n.name);
        if (n.event == VIR_DOMAIN_EVENT_DEFINED) {
            submit_states(r); /* defined anew: its state may be news */
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
    d->busy = kind != LV_JOB_DESTROY;
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
    if (d->pending_id || d->busy) {
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

/* Stops the worker, which closes the connection; false if it is stuck in a
 * call to libvirtd past LV_EXIT_JOIN_MS (the process is exiting: it is left). */
static bool stop_worker(struct lv_role *r)
{
    if (!r->worker_started)
        return true;
    pthread_mutex_lock(&r->lock);
    r->worker_stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += LV_EXIT_JOIN_MS / 1000;
    until.tv_nsec += (LV_EXIT_JOIN_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(r->worker, NULL, &until) != 0) {
        log_warn("libvirt: a call to libvirtd is still running after %d ms; exiting without it",
                 LV_EXIT_JOIN_MS);
        return false;
    }
    return true;
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
