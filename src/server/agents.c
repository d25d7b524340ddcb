/* Agent sessions on the server side (docs/protocol.md): orders, liveness,
 * the listeners; one session's messages are agents_session.c's.
 *
 * A session is one TCP connection.  It belongs to a host once its hello is
 * accepted; a newer session for the same host replaces it (the old one is
 * likely a dead TCP connection the kernel has not noticed yet).  Liveness is
 * one periodic tick, after redis's serverCron, not a timer per host. */
#include "server/agents.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/ha.h"
#include "proto/proto.h"
#include "server/inventory.h"
#include "server/agents_priv.h"
#include "server/journal.h"
#include "server/listen_guard.h"

bool agents_leads(struct agents *a)
{
    return a->ha == NULL || ha_is_leader(a->ha);
}

void agents_add_term(struct agents *a, json_t *body)
{
    if (a->ha && body)
        json_object_set_new(body, "term", json_integer(ha_term(a->ha)));
}

struct session *agents_find_session(struct agents *a, const char *host)
{
    struct session *s;
    LIST_FOREACH(s, &a->sessions, link)
    {
        if (!s->closing && s->host && strcmp(s->host, host) == 0)
            return s;
    }
    return NULL;
}

bool agents_host_has_session(struct agents *a, const char *host)
{
    return agents_find_session(a, host) != NULL;
}

int agents_host_address(struct agents *a, const char *host, char *out, size_t size)
{
    struct session *s = agents_find_session(a, host);
    if (s == NULL)
        return -1;
    const char *peer = proto_conn_peer(s->conn); /* ADDR:PORT or [ADDR6]:PORT */
    const char *end = peer[0] == '[' ? strchr(peer, ']') : strrchr(peer, ':');
    if (end == NULL)
        return -1;
    const char *start = peer[0] == '[' ? peer + 1 : peer;
    snprintf(out, size, "%.*s", (int)(end - start), start);
    return 0;
}

const char *agents_session_name(const struct session *s)
{
    return s->host ? s->host : proto_conn_peer(s->conn);
}

/* --- orders --- */

void agents_order_finish_reply(struct order *o, enum order_outcome outcome, const char *message,
                               json_t *reply)
{
    agents_order_cb cb = o->cb;
    agents_order_reply_cb reply_cb = o->reply_cb;
    void *opaque = o->opaque;
    LIST_REMOVE(o, link);
    event_free(o->timer);
    free(o);
    if (reply_cb)
        reply_cb(outcome, message, reply, opaque);
    else
        cb(outcome, message, opaque);
}

void agents_order_finish(struct order *o, enum order_outcome outcome, const char *message)
{
    agents_order_finish_reply(o, outcome, message, NULL);
}

static void on_order_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct order *o = arg;
    (void)fd;
    (void)what;
    char message[160];
    snprintf(message, sizeof(message), "no reply from host `%s` to order %lld in time",
             o->session->host, (long long)o->id);
    log_warn("%s", message);
    agents_order_finish(o, ORDER_TIMEOUT, message);
}

static int64_t send_order(struct agents *a, const char *host, const char *action, const char *vm,
                          json_t *members, int64_t timeout_ms, agents_order_cb cb,
                          agents_order_reply_cb reply_cb, void *opaque, vcr_error_t *err)
{
    if (!agents_leads(a))
        return vcr_error_make(
            err, ENOTCONN, "order for host `%s`: this server is not the leader (docs/ha.md)", host);
    struct session *s = agents_find_session(a, host);
    if (s == NULL)
        return vcr_error_make(err, ENOTCONN, "host `%s` has no agent connection", host);
    int64_t id = a->next_order_id + 1;
    json_t *body = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "action", action, "vm", vm);
    if (body && json_is_object(members))
        json_object_update_missing(body, members);
    agents_add_term(a, body);
    cleanup_json json_t *msg = proto_msg_new("order", body);
    if (msg == NULL)
        return vcr_error_make(err, ENOMEM, "order for host `%s`: out of memory", host);
    struct order *o = calloc(1, sizeof(*o));
    if (o == NULL || (o->timer = evtimer_new(a->base, on_order_timeout, o)) == NULL) {
        free(o);
        return vcr_error_make(err, ENOMEM, "order for host `%s`: out of memory", host);
    }
    if (proto_conn_send(s->conn, msg, err) < 0) {
        event_free(o->timer);
        free(o);
        return -1;
    }
    a->next_order_id = id;
    o->id = id;
    o->agents = a;
    o->session = s;
    o->cb = cb;
    o->reply_cb = reply_cb;
    o->opaque = opaque;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(o->timer, &tv);
    LIST_INSERT_HEAD(&a->orders, o, link);
    log_info("host %s: order %lld: %s %s", host, (long long)id, action, vm);
    return id;
}

int64_t agents_send_order(struct agents *a, const char *host, const char *action, const char *vm,
                          int64_t timeout_ms, agents_order_cb cb, void *opaque, vcr_error_t *err)
{
    return send_order(a, host, action, vm, NULL, timeout_ms, cb, NULL, opaque, err);
}

int64_t agents_send_order_with(struct agents *a, const char *host, const char *action,
                               const char *vm, json_t *members, int64_t timeout_ms,
                               agents_order_reply_cb cb, void *opaque, vcr_error_t *err)
{
    return send_order(a, host, action, vm, members, timeout_ms, NULL, cb, opaque, err);
}

static void on_restart_overrun(struct inv_host *h, struct inv_vm *vm, void *opaque)
{
    struct agents *a = opaque;
    cleanup_json json_t *why =
        json_pack("{s:s, s:s, s:s, s:I}", "reason", "deadline", "state", "failed", "cause",
                  vm->cause, "deadline_ms", (json_int_t)INV_RESTART_DEADLINE_MS);
    journal_note(a->journal, 0, h->name, vm->name, JOURNAL_WARM_RESTART_FAILED, why);
    log_warn("host %s: VM %s: %s: failed", h->name, vm->name, vm->cause);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    agents_accept_fd(arg, fd, false);
}

size_t agents_connection_cap(const struct agents *a)
{
    size_t cap = a->opts.connections_max ? a->opts.connections_max : 1024;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        size_t fit = rl.rlim_cur > AGENTS_FD_RESERVE + 16 ? rl.rlim_cur - AGENTS_FD_RESERVE : 16;
        if (fit < cap)
            cap = fit;
    }
    return cap;
}

/* --- liveness --- */

/* h is lost (already marked): journal it, close its session, tell the watch.
 * why: NULL for the host timeout, else the reason the server cut it off. */
static void host_lost(struct agents *a, struct inv_host *h, int64_t silent_ms, const char *why)
{
    cleanup_json json_t *detail =
        json_pack("{s:I, s:I, s:s?}", "silent_ms", (json_int_t)silent_ms, "host_timeout_ms",
                  (json_int_t)a->opts.host_timeout_ms, "reason", why);
    journal_note(a->journal, 0, h->name, NULL, JOURNAL_HOST_LOST, detail);
    if (why)
        log_warn("host %s: lost: cut off: %s", h->name, why);
    else
        log_warn("host %s: lost: no frame for %lld ms (host_timeout_ms %u)", h->name,
                 (long long)silent_ms, a->opts.host_timeout_ms);
    struct session *s = agents_find_session(a, h->name);
    if (s && why)
        agents_session_reject(s, "cut off: %s", why);
    else if (s)
        agents_session_reject(s, "no frame for %lld ms; host declared lost", (long long)silent_ms);
    if (a->watch && a->watch->host_lost)
        a->watch->host_lost(a->watch_opaque, h->name);
}

static void on_host_lost(struct inv_host *h, int64_t silent_ms, void *opaque)
{
    host_lost(opaque, h, silent_ms, NULL);
}

void agents_cut_off(struct agents *a, const char *host, int64_t until_ms, const char *why)
{
    struct inv_host *h = inventory_find_host(a->inv, host);
    if (h == NULL)
        return;
    if (until_ms > h->cut_off_until_ms)
        h->cut_off_until_ms = until_ms;
    if (h->state == INV_HOST_CONNECTED) {
        h->state = INV_HOST_LOST;
        host_lost(a, h, vcr_mono_ms() - h->last_seen_ms, why);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct agents *a = arg;
    (void)fd;
    (void)what;
    int64_t now = vcr_mono_ms();
    /* A tick this late means the server itself did not run (stopped, starved):
     * the frames its hosts sent meanwhile wait unread in its sockets, and this
     * tick would come before they are read.  Their silence is ours, not theirs:
     * it is not counted (a host that stays silent is lost host_timeout_ms later). */
    int64_t gap = now - a->last_tick_ms;
    a->last_tick_ms = now;
    if (gap > AGENTS_STALL_MS) {
        size_t n = inventory_forgive_silence(a->inv, gap - AGENTS_TICK_MS);
        log_warn("the server did not run for %lld ms (stopped or starved): that silence of its "
                 "%zu connected hosts is not counted against them",
                 (long long)gap, n);
    }
    if (journal_held(a->journal))
        journal_write_held(a->journal);
    if (!agents_leads(a))
        return; /* a follower watches no host (agents_set_leading) */
    inventory_expire_hosts(a->inv, now, a->opts.host_timeout_ms, on_host_lost, a);
    inventory_expire_restarts(a->inv, now, on_restart_overrun, a);
    /* A connection that never says hello would hold a descriptor forever. */
    struct session *s;
    LIST_FOREACH(s, &a->sessions, link)
    {
        if (s->host == NULL && !s->closing && now - s->accepted_ms > a->opts.host_timeout_ms)
            agents_session_reject(s, "no hello within %u ms", a->opts.host_timeout_ms);
    }
}

struct agents *agents_new(struct event_base *base, struct inventory *inv, struct journal *journal,
                          const struct agents_options *opts, vcr_error_t *err)
{
    struct agents *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        vcr_error_errno(err, "agents");
        return NULL;
    }
    a->base = base;
    a->inv = inv;
    a->journal = journal;
    a->opts = *opts;
    LIST_INIT(&a->sessions);
    LIST_INIT(&a->orders);
    a->last_tick_ms = vcr_mono_ms();
    a->tick = event_new(base, -1, EV_PERSIST, on_tick, a);
    struct timeval tv = {.tv_sec = 0, .tv_usec = AGENTS_TICK_MS * 1000};
    if (a->tick == NULL || event_add(a->tick, &tv) < 0) {
        agents_free(a);
        vcr_error_make(err, ENOMEM, "agents: cannot create the liveness timer");
        return NULL;
    }
    return a;
}

static void on_accept_standby(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                              int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    agents_accept_fd(arg, fd, true);
}

int agents_listen_standby_insecure(struct agents *a, const char *addr, uint16_t port,
                                   vcr_error_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (vcr_sockaddr_of(addr, port, &ss, &sslen) < 0)
        return vcr_error_make(err, EINVAL,
                              "standby_insecure_listen: `%s` is not an IPv4 or IPv6 address", addr);
    a->standby_listener =
        evconnlistener_new_bind(a->base, on_accept_standby, a,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                64, (struct sockaddr *)&ss, (int)sslen);
    if (a->standby_listener == NULL)
        return vcr_error_errno(err, "standby_insecure_listen on %s:%u", addr, port);
    if ((a->standby_guard =
             listen_guard_new(a->base, a->standby_listener, "standby insecure port", err)) == NULL)
        return -1;
    return 0;
}

int agents_listen(struct agents *a, const char *addr, uint16_t port, vcr_error_t *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (vcr_sockaddr_of(addr, port, &ss, &len) < 0)
        return vcr_error_make(err, EINVAL, "listen for agents: `%s` is not an IPv4 or IPv6 address",
                              addr);
    a->listener = evconnlistener_new_bind(
        a->base, on_accept, a, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        64, (struct sockaddr *)&ss, (int)len);
    if (a->listener == NULL)
        return vcr_error_errno(err, "listen for agents on %s:%u", addr, port);
    if ((a->guard = listen_guard_new(a->base, a->listener, "agent port", err)) == NULL)
        return -1;
    len = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(a->listener), (struct sockaddr *)&ss, &len) < 0)
        return vcr_error_errno(err, "listen for agents on %s:%u", addr, port);
    a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

void agents_set_ha(struct agents *a, struct ha *ha)
{
    a->ha = ha;
    a->leading = false;
    a->not_leading_since_ms = vcr_mono_ms();
}

void agents_set_leading(struct agents *a, bool leading, const char *why)
{
    int64_t now = vcr_mono_ms();
    if (leading && !a->leading) {
        /* Hosts it knew from an earlier term were not its to watch meanwhile:
         * they get a full host_timeout_ms to say hello again. */
        inventory_forgive_silence(a->inv, now - a->not_leading_since_ms);
    } else if (!leading && a->leading) {
        a->not_leading_since_ms = now;
        struct session *s;
        LIST_FOREACH(s, &a->sessions, link)
        agents_session_redirect(s, why);
    }
    a->leading = leading;
}

void agents_set_watch(struct agents *a, const struct agents_watch *w, void *opaque)
{
    a->watch = w;
    a->watch_opaque = opaque;
}

uint16_t agents_port(const struct agents *a)
{
    return a->port;
}

void agents_free(struct agents *a)
{
    if (a == NULL)
        return;
    listen_guard_free(a->guard);
    if (a->listener)
        evconnlistener_free(a->listener);
    listen_guard_free(a->standby_guard);
    if (a->standby_listener)
        evconnlistener_free(a->standby_listener);
    if (a->tick)
        event_free(a->tick);
    while (!LIST_EMPTY(&a->orders))
        agents_order_finish(LIST_FIRST(&a->orders), ORDER_UNREACHABLE,
                            "the server is shutting down");
    while (!LIST_EMPTY(&a->sessions))
        agents_session_destroy(LIST_FIRST(&a->sessions));
    free(a);
}
