/* The libvirt role's threads and the jobs between them and the agent's loop
 * (libvirt_role.c's first comment says why they exist): libvirt's event
 * thread, whose notes the loop reads (on_note), and the worker thread, which
 * makes every RPC to libvirtd, one job at a time from the queue the loop
 * submits to; the loop applies each finished job or its missed deadline. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/host/libvirt_priv.h"
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

#define LV_NAME_MAX 64

/* One record of the pipe from libvirt's event thread (< PIPE_BUF: atomic). */
struct lv_note {
    int event;  /* virDomainEventType, or LV_NOTE_CLOSED */
    int detail; /* the event's detail, or the close reason */
    char name[LV_NAME_MAX + 1];
};
#define LV_NOTE_CLOSED (-1)

static const char *const job_names[] = {
    [LV_JOB_CONNECT] = "connect", [LV_JOB_CLOSE] = "close",    [LV_JOB_STATES] = "states",
    [LV_JOB_SAMPLE] = "sample",   [LV_JOB_KILL] = "vm_kill",   [LV_JOB_STOP] = "vm_stop",
    [LV_JOB_DESTROY] = "destroy", [LV_JOB_START] = "vm_start",
};

/* The last libvirt error's text (libvirt keeps it per thread). */
const char *lv_error(void)
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

void on_wakeup(int timer, void *opaque)
{
    (void)timer;
    (void)opaque;
}

/* libvirt prints every error on stderr unless told otherwise: the agent logs
 * the ones it acts on itself (lv_error). */
void on_libvirt_error(void *opaque, virErrorPtr error)
{
    (void)opaque;
    (void)error;
}

void *event_thread(void *arg)
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

void *worker_thread(void *arg)
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

/* ---- jobs, seen from the loop -------------------------------------------- */

static void on_job_deadline(evutil_socket_t fd, short what, void *arg);

struct lv_job *job_new(struct lv_role *r, enum lv_job_kind kind, size_t dom)
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

void job_free(struct lv_job *j)
{
    if (j == NULL)
        return;
    if (j->deadline)
        event_free(j->deadline);
    json_decref(j->id);
    free(j);
}

/* Hands j to the worker; its deadline starts now. */
void job_submit(struct lv_role *r, struct lv_job *j)
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

void submit_connect(struct lv_role *r)
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

void on_reconnect(evutil_socket_t fd, short what, void *arg)
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
    if (d->busy_kind == j->kind) /* not a stop's when a kill overtook it */
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
        /* A stop it overtook may have destroyed the domain, its event still to come. */
        if (j->was_active == 0 && d->pending_id == NULL)
            d->destroy_ordered = false;
        evtimer_del(d->stop_timer); /* down: the grace of a stop it overtook is moot */
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

void on_worker_done(evutil_socket_t fd, short what, void *arg)
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

void on_note(evutil_socket_t fd, short what, void *arg)
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

/* Stops the worker, which closes the connection; false if it is stuck in a
 * call to libvirtd past LV_EXIT_JOIN_MS (the process is exiting: it is left). */
bool stop_worker(struct lv_role *r)
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
