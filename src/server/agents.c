/* Agent sessions on the server side (docs/protocol.md).
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
#include "server/journal.h"
#include "server/listen_guard.h"

struct session {
    struct agents *agents;
    struct proto_conn *conn;
    char *host; /* set once a hello is accepted */
    char nonce[PROTO_NONCE_HEX_LEN + 1];
    int64_t accepted_ms; /* monotonic */
    bool closing;        /* an error was sent; nothing more is read */
    bool standby_only;   /* came in on standby_insecure_listen: plain TCP, role standby */
    LIST_ENTRY(session) link;
};

struct order {
    int64_t id;
    struct agents *agents;
    struct session *session;
    struct event *timer;
    agents_order_cb cb;
    agents_order_reply_cb reply_cb;
    void *opaque;
    LIST_ENTRY(order) link;
};

struct agents {
    struct event_base *base;
    struct inventory *inv;
    struct journal *journal;
    struct agents_options opts;
    struct evconnlistener *listener;
    struct listen_guard *guard;
    struct evconnlistener *standby_listener; /* standby_insecure_listen, or NULL */
    struct listen_guard *standby_guard;
    uint16_t port;
    size_t n_sessions;
    size_t n_pending;          /* sessions without a hello yet */
    uint64_t refused;          /* connections closed at accept: over the cap */
    int64_t refused_logged_ms; /* monotonic */
    /* Connections closed before a hello (bad frames, failed handshakes): what
     * anyone can send, so logged through a limit. */
    struct vcr_log_limit before_hello_log;
    /* Refusals before a hello (a forged or wrong hello): a limit of their own, so
     * that the chatter above (connected, closed) never hides one. */
    struct vcr_log_limit refusals_log;
    struct event *tick;
    int64_t last_tick_ms; /* monotonic: the last liveness tick, or the start */
    LIST_HEAD(, session) sessions;
    LIST_HEAD(, order) orders;
    int64_t next_order_id;
    const struct agents_watch *watch;
    void *watch_opaque;
    /* Redundant servers (docs/ha.md): NULL for the embedded single server. */
    struct ha *ha;
    bool leading;                 /* as of the last agents_set_leading */
    int64_t not_leading_since_ms; /* monotonic */
};

/* Whether this server may take agents and give orders: always without ha. */
static bool leads(struct agents *a)
{
    return a->ha == NULL || ha_is_leader(a->ha);
}

/* The term every order and welcome carries (docs/ha.md); members stolen into msg. */
static void add_term(struct agents *a, json_t *body)
{
    if (a->ha && body)
        json_object_set_new(body, "term", json_integer(ha_term(a->ha)));
}

static struct session *find_session(struct agents *a, const char *host)
{
    struct session *s;
    LIST_FOREACH(s, &a->sessions, link)
    {
        if (!s->closing && s->host && strcmp(s->host, host) == 0)
            return s;
    }
    return NULL;
}

static const char *session_name(const struct session *s)
{
    return s->host ? s->host : proto_conn_peer(s->conn);
}

static void journal_write(struct agents *a, int64_t ts_ms, const char *host, const char *vm,
                          const char *kind, json_t *detail)
{
    journal_note(a->journal, ts_ms, host, vm, kind, detail);
}

/* --- orders --- */

static void order_finish_reply(struct order *o, enum order_outcome outcome, const char *message,
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

static void order_finish(struct order *o, enum order_outcome outcome, const char *message)
{
    order_finish_reply(o, outcome, message, NULL);
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
    order_finish(o, ORDER_TIMEOUT, message);
}

static int64_t send_order(struct agents *a, const char *host, const char *action, const char *vm,
                          json_t *members, int64_t timeout_ms, agents_order_cb cb,
                          agents_order_reply_cb reply_cb, void *opaque, vcr_error_t *err)
{
    if (!leads(a))
        return vcr_error_make(
            err, ENOTCONN, "order for host `%s`: this server is not the leader (docs/ha.md)", host);
    struct session *s = find_session(a, host);
    if (s == NULL)
        return vcr_error_make(err, ENOTCONN, "host `%s` has no agent connection", host);
    int64_t id = a->next_order_id + 1;
    json_t *body = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "action", action, "vm", vm);
    if (body && json_is_object(members))
        json_object_update_missing(body, members);
    add_term(a, body);
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

/* --- sessions --- */

static void session_destroy(struct session *s)
{
    struct agents *a = s->agents;
    char message[160];
    snprintf(message, sizeof(message), "the connection to host `%s` closed before it replied",
             session_name(s));
    struct order *o = LIST_FIRST(&a->orders);
    while (o) {
        struct order *next = LIST_NEXT(o, link);
        if (o->session == s)
            order_finish(o, ORDER_UNREACHABLE, message);
        o = next;
    }
    LIST_REMOVE(s, link);
    a->n_sessions--;
    if (s->host == NULL)
        a->n_pending--;
    proto_conn_free(s->conn);
    free(s->host);
    free(s);
}

/* Tell the agent why, then close once that is written. */
static void session_reject(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void session_reject(struct session *s, const char *fmt, ...)
{
    if (s->closing)
        return;
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (s->host)
        log_warn("agent %s (%s): closing: %s", session_name(s), proto_conn_peer(s->conn), message);
    else
        vcr_log_limited(&s->agents->refusals_log, VCR_LOG_WARN, "agent %s (%s): closing: %s",
                        session_name(s), proto_conn_peer(s->conn), message);
    cleanup_json json_t *msg = proto_msg_new("error", json_pack("{s:s}", "message", message));
    cleanup_error vcr_error_t err = NULL;
    if (msg == NULL || proto_conn_send(s->conn, msg, &err) < 0)
        log_debug("agent %s: error message not sent: %s", session_name(s), vcr_error_msg(err));
    s->closing = true;
    proto_conn_close(s->conn, message);
}

/* A follower's answer to a hello, and a deposed leader's to its sessions:
 * `error` with `code` not_leader and `leader`, the leader's agent address when
 * known, so that the agent goes there (docs/protocol.md). */
static void session_redirect(struct session *s, const char *why)
{
    struct agents *a = s->agents;
    if (s->closing)
        return;
    const struct ha_leader *l = ha_leader(a->ha);
    char message[256];
    snprintf(message, sizeof(message), "%s; the leader is %s", why,
             l->agents_addr ? l->agents_addr : "not known yet");
    log_info("agent %s (%s): %s", session_name(s), proto_conn_peer(s->conn), message);
    cleanup_json json_t *msg = proto_msg_new(
        "error", json_pack("{s:s, s:s, s:s?, s:I}", "message", message, "code", "not_leader",
                           "leader", l->agents_addr, "term", (json_int_t)l->term));
    cleanup_error vcr_error_t err = NULL;
    if (msg == NULL || proto_conn_send(s->conn, msg, &err) < 0)
        log_debug("agent %s: error message not sent: %s", session_name(s), vcr_error_msg(err));
    s->closing = true;
    proto_conn_close(s->conn, message);
}

static void on_hello(struct session *s, json_t *msg)
{
    struct agents *a = s->agents;
    if (!leads(a)) {
        session_redirect(s, "this server is not the leader");
        return;
    }
    if (s->host) {
        session_reject(s, "a second hello on one connection");
        return;
    }
    /* Who may say this name: the certificate must name the host (docs/security.md);
     * checked before anything in the inventory moves. */
    const char *claimed = json_string_value(json_object_get(msg, "host"));
    if (proto_conn_is_tls(s->conn) &&
        (claimed == NULL || !proto_conn_peer_names(s->conn, claimed))) {
        session_reject(s, "authentication failed: the client certificate does not name host `%s`",
                       claimed ? claimed : "(none)");
        return;
    }
    if (s->standby_only) {
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (role == NULL || strcmp(role, "standby") != 0) {
            session_reject(s,
                           "standby_insecure_listen accepts role `standby` only, not `%s`: "
                           "other agents use the TLS agent port",
                           role ? role : "(none)");
            return;
        }
        /* The plain port must not take over a name that TLS vouched for. */
        const struct session *held = claimed ? find_session(a, claimed) : NULL;
        const struct inv_host *known = inventory_find_host(a->inv, claimed);
        if ((held && proto_conn_is_tls(held->conn)) ||
            (known && known->role && strcmp(known->role, "standby") != 0)) {
            session_reject(s, "host `%s` is %s: standby_insecure_listen cannot take it over",
                           claimed, held ? "connected over TLS" : "not a standby host");
            return;
        }
    }
    if (a->opts.key) {
        const char *auth = json_string_value(json_object_get(msg, "auth"));
        if (!proto_auth_verify(a->opts.key, a->opts.key_len, s->nonce, auth)) {
            session_reject(s, "authentication failed: %s",
                           auth ? "wrong auth for the challenge" : "hello has no auth");
            return;
        }
    }
    const struct inv_host *cut =
        inventory_find_host(a->inv, json_string_value(json_object_get(msg, "host")));
    int64_t now = vcr_mono_ms();
    if (cut && cut->cut_off_until_ms > now) {
        /* A welcome would feed its fence watchdog, which the server now counts on. */
        session_reject(s,
                       "host `%s` is cut off for %lld ms more: the server counts on its "
                       "self-fence (docs/fencing.md)",
                       cut->name, (long long)(cut->cut_off_until_ms - now));
        return;
    }
    bool came_up = false;
    cleanup_error vcr_error_t err = NULL;
    struct inv_host *h = inventory_apply_hello(a->inv, msg, now, &came_up, &err);
    if (h == NULL) {
        session_reject(s, "bad hello: %s", vcr_error_msg(err));
        return;
    }
    struct session *old = find_session(a, h->name);
    if (old)
        session_reject(old, "replaced by a new connection from %s", proto_conn_peer(s->conn));
    s->host = strdup(h->name);
    if (s->host == NULL) {
        session_reject(s, "out of memory");
        return;
    }
    a->n_pending--;
    const char *peer = proto_conn_peer(s->conn);
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "role", h->role, "accel", h->accel,
                  "agent_version", h->agent_version, "pid", (json_int_t)h->agent_pid, "vms",
                  (json_int_t)h->n_vms, "peer", peer);
    json_t *self_fence = json_object_get(msg, "self_fence");
    if (detail && self_fence)
        json_object_set(detail, "self_fence", self_fence);
    journal_write(a, 0, h->name, NULL, JOURNAL_HELLO, detail);
    if (came_up) {
        cleanup_json json_t *up = json_pack("{s:s}", "peer", peer);
        journal_write(a, 0, h->name, NULL, JOURNAL_HOST_UP, up);
    }
    log_info("host %s: hello from %s (role %s, accel %s, agent %s, %zu VMs)%s", h->name, peer,
             h->role, h->accel, h->agent_version, h->n_vms, came_up ? ": host up" : "");
    json_t *welcome_body = json_pack(
        "{s:I, s:I, s:s}", "heartbeat_ms", (json_int_t)a->opts.heartbeat_ms, "fence_after_ms",
        (json_int_t)agents_fence_after_ms(a->opts.host_timeout_ms, a->opts.fence_timeout_ms),
        "server_version", VCR_VERSION);
    add_term(a, welcome_body);
    cleanup_json json_t *welcome = proto_msg_new("welcome", welcome_body);
    if (welcome == NULL || proto_conn_send(s->conn, welcome, &err) < 0) {
        session_reject(s, "cannot send welcome: %s", vcr_error_msg(err));
        return;
    }
    if (a->watch && a->watch->hello)
        a->watch->hello(a->watch_opaque, h->name);
}

uint32_t agents_fence_after_ms(uint32_t host_timeout_ms, uint32_t fence_timeout_ms)
{
    /* The server switches host_timeout + fence_timeout after the agent's last
     * frame; the agent must have killed its VMs before that, with room for the
     * kill itself and for timer slack on both sides. */
    uint32_t total = host_timeout_ms + fence_timeout_ms;
    uint32_t margin = total / 4 < 1000 ? total / 4 : 1000;
    return total - margin;
}

static void on_heartbeat(struct session *s, json_t *msg)
{
    /* Being a frame is all it has to be: session_message marked the host seen.
     * The echo is the agent's proof of contact for its fence watchdog
     * (docs/fencing.md): without it a connected agent would fence itself. */
    json_t *seq = json_object_get(msg, "seq");
    if (!json_is_integer(seq))
        return;
    /* Only a leader's echo is contact: a deposed one must not feed watchdogs. */
    if (!leads(s->agents)) {
        session_redirect(s, "this server is no longer the leader");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    json_t *echo_body = json_pack("{s:O, s:I}", "seq", seq, "ts_ms", (json_int_t)vcr_wall_ms());
    add_term(s->agents, echo_body);
    cleanup_json json_t *echo = proto_msg_new("heartbeat", echo_body);
    if (echo == NULL || proto_conn_send(s->conn, echo, &err) < 0)
        log_debug("host %s: heartbeat echo not sent: %s", s->host ? s->host : "?",
                  err ? vcr_error_msg(err) : "out of memory");
}

static void on_vm_event(struct session *s, json_t *msg)
{
    struct agents *a = s->agents;
    cleanup_error vcr_error_t err = NULL;
    enum inv_restart_change change;
    if (inventory_apply_vm_event_at(a->inv, s->host, msg, vcr_mono_ms(), &change, &err) < 0) {
        log_warn("host %s: ignoring a vm_event: %s", s->host, vcr_error_msg(err));
        return;
    }
    const char *vm = json_string_value(json_object_get(msg, "vm"));
    const char *state = json_string_value(json_object_get(msg, "state"));
    const char *cause = json_string_value(json_object_get(msg, "cause"));
    cleanup_json json_t *detail = json_pack("{s:s, s:s}", "state", state, "cause", cause);
    json_t *pid = json_object_get(msg, "pid");
    if (detail && json_is_integer(pid))
        json_object_set(detail, "pid", pid);
    journal_write(a, json_integer_value(json_object_get(msg, "ts_ms")), s->host, vm,
                  JOURNAL_VM_EVENT, detail);
    log_info("host %s: VM %s is %s (%s)", s->host, vm, state, cause);
    if (change == INV_RESTART_BEGAN)
        log_info("host %s: VM %s: warm restart (maintenance, not a failure, for up to %d ms)",
                 s->host, vm, INV_RESTART_DEADLINE_MS);
    if (change == INV_RESTART_FAILED) {
        cleanup_json json_t *why =
            json_pack("{s:s, s:s, s:s}", "reason", "ended badly", "state", state, "cause", cause);
        journal_write(a, json_integer_value(json_object_get(msg, "ts_ms")), s->host, vm,
                      JOURNAL_WARM_RESTART_FAILED, why);
        log_warn("host %s: VM %s: warm restart failed: now %s (%s)", s->host, vm, state, cause);
    }
    if (a->watch && a->watch->vm_event)
        a->watch->vm_event(a->watch_opaque, s->host, vm, state, cause);
}

static void on_restart_overrun(struct inv_host *h, struct inv_vm *vm, void *opaque)
{
    struct agents *a = opaque;
    cleanup_json json_t *why =
        json_pack("{s:s, s:s, s:s, s:I}", "reason", "deadline", "state", "failed", "cause",
                  vm->cause, "deadline_ms", (json_int_t)INV_RESTART_DEADLINE_MS);
    journal_write(a, 0, h->name, vm->name, JOURNAL_WARM_RESTART_FAILED, why);
    log_warn("host %s: VM %s: %s: failed", h->name, vm->name, vm->cause);
}

static void on_self_fence(struct session *s, json_t *msg)
{
    struct agents *a = s->agents;
    cleanup_error vcr_error_t err = NULL;
    if (inventory_apply_self_fence(a->inv, s->host, msg, vcr_mono_ms(), &err) < 0) {
        log_warn("host %s: ignoring a self_fence: %s", s->host, vcr_error_msg(err));
        return;
    }
    const struct inv_host *h = inventory_find_host(a->inv, s->host);
    cleanup_json json_t *detail = inventory_self_fence_json(h, vcr_mono_ms(), vcr_wall_ms());
    journal_write(a, 0, s->host, NULL, JOURNAL_SELF_FENCE, detail);
    if (h->self_fence.watchdog == INV_WATCHDOG_ARMED)
        log_info("host %s: self-fencing armed (%lld ms)", s->host,
                 (long long)h->self_fence.timeout_ms);
    else
        log_warn("host %s: self-fencing %s: its services are not switched unless its agent "
                 "confirms their VMs dead",
                 s->host, inv_watchdog_name(h->self_fence.watchdog));
}

static void on_sample(struct session *s, json_t *msg)
{
    cleanup_error vcr_error_t err = NULL;
    struct agents *a = s->agents;
    if (inventory_apply_sample(a->inv, s->host, msg, &err) < 0) {
        log_warn("host %s: ignoring a sample: %s", s->host, vcr_error_msg(err));
        return;
    }
    if (a->watch && a->watch->sample)
        a->watch->sample(a->watch_opaque, s->host);
}

static void on_reply(struct session *s, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    json_t *ok = json_object_get(msg, "ok");
    if (!json_is_integer(id) || !json_is_boolean(ok)) {
        log_warn("host %s: ignoring a reply without an integer id and a boolean ok", s->host);
        return;
    }
    struct order *o;
    LIST_FOREACH(o, &s->agents->orders, link)
    {
        if (o->id == json_integer_value(id) && o->session == s)
            break;
    }
    if (o == NULL) {
        log_warn("host %s: reply to order %lld, which is not pending (past its deadline?)", s->host,
                 (long long)json_integer_value(id));
        return;
    }
    const char *error = json_string_value(json_object_get(msg, "error"));
    if (json_is_true(ok)) {
        log_info("host %s: order %lld done", s->host, (long long)o->id);
        order_finish_reply(o, ORDER_DONE, "done", msg);
        return;
    }
    if (error == NULL)
        error = "the agent gave no reason";
    log_info("host %s: order %lld refused: %s", s->host, (long long)o->id, error);
    order_finish_reply(o, ORDER_REFUSED, error, msg);
}

/* What the server does with each agent -> server message type. */
static const struct {
    const char *type;
    void (*handle)(struct session *s, json_t *msg);
} handlers[] = {
    {"hello", on_hello},   {"heartbeat", on_heartbeat}, {"vm_event", on_vm_event},
    {"sample", on_sample}, {"reply", on_reply},         {"self_fence", on_self_fence},
};

static void session_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct session *s = opaque;
    (void)c;
    if (s->closing)
        return;
    const char *type = proto_msg_type(msg);
    if (s->host == NULL && strcmp(type, "hello") != 0) {
        session_reject(s, "expected hello first, got `%s`", type);
        return;
    }
    if (s->host)
        inventory_host_seen(s->agents->inv, s->host, vcr_mono_ms());
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if (strcmp(handlers[i].type, type) == 0) {
            handlers[i].handle(s, msg);
            return;
        }
    log_warn("host %s: ignoring a message of unknown type `%s`", s->host, type);
}

static void session_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct session *s = opaque;
    (void)c;
    if (s->host)
        log_info("host %s: connection closed: %s", s->host, reason);
    else
        vcr_log_limited(&s->agents->before_hello_log, VCR_LOG_DEBUG,
                        "agent %s: connection closed before a hello: %s", proto_conn_peer(s->conn),
                        reason);
    session_destroy(s);
}

static const struct proto_conn_ops session_ops = {
    .message = session_message,
    .closed = session_closed,
};

/* One line per 10 s at most about connections the agent port turned away. */
static void agents_note_refused(struct agents *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void agents_note_refused(struct agents *a, const char *fmt, ...)
{
    a->refused++;
    int64_t now = vcr_mono_ms();
    if (a->refused_logged_ms && now - a->refused_logged_ms < 10000)
        return;
    char line[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_warn("%s (%llu turned away so far)", line, (unsigned long long)a->refused);
    a->refused_logged_ms = now;
}

void agents_accept_fd(struct agents *a, int fd, bool standby_only)
{
    cleanup_error vcr_error_t err = NULL;
    size_t cap = agents_connection_cap(a);
    if (a->n_sessions >= cap) {
        close(fd);
        a->refused++;
        int64_t now = vcr_mono_ms();
        if (a->refused_logged_ms == 0 || now - a->refused_logged_ms >= 10000) {
            log_warn("agent connection refused: %zu connections held, the cap is %zu "
                     "(agent_connections_max, RLIMIT_NOFILE less %d); %llu refused so far",
                     a->n_sessions, cap, AGENTS_FD_RESERVE, (unsigned long long)a->refused);
            a->refused_logged_ms = now;
        }
        return;
    }
    if (a->n_pending >= AGENTS_PENDING_MAX) {
        /* The oldest silent one makes room: the list is newest first. */
        struct session *old = NULL, *it;
        LIST_FOREACH(it, &a->sessions, link)
        {
            if (it->host == NULL && !it->closing)
                old = it;
        }
        if (old) {
            session_destroy(old);
            agents_note_refused(a,
                                "agent connection dropped: more than %d connections without a "
                                "hello; the oldest one is closed",
                                AGENTS_PENDING_MAX);
        }
    }
    struct session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        log_error("agent connection refused: out of memory");
        close(fd);
        return;
    }
    s->agents = a;
    s->accepted_ms = vcr_mono_ms();
    s->standby_only = standby_only;
    s->conn =
        proto_conn_from_fd(a->base, fd, standby_only ? NULL : a->opts.tls, &session_ops, s, &err);
    if (s->conn == NULL) {
        log_warn("agent connection refused: %s", vcr_error_msg(err));
        free(s);
        return;
    }
    LIST_INSERT_HEAD(&a->sessions, s, link);
    a->n_sessions++;
    a->n_pending++;
    vcr_log_limited(&a->before_hello_log, VCR_LOG_DEBUG, "agent %s: connected",
                    proto_conn_peer(s->conn));
    if (a->opts.key == NULL)
        return;
    cleanup_json json_t *challenge = NULL;
    if (proto_auth_new_nonce(s->nonce, &err) < 0 ||
        (challenge = proto_msg_new("challenge", json_pack("{s:s}", "nonce", s->nonce))) == NULL ||
        proto_conn_send(s->conn, challenge, &err) < 0)
        session_reject(s, "cannot send a challenge: %s", vcr_error_msg(err));
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
    journal_write(a, 0, h->name, NULL, JOURNAL_HOST_LOST, detail);
    if (why)
        log_warn("host %s: lost: cut off: %s", h->name, why);
    else
        log_warn("host %s: lost: no frame for %lld ms (host_timeout_ms %u)", h->name,
                 (long long)silent_ms, a->opts.host_timeout_ms);
    struct session *s = find_session(a, h->name);
    if (s && why)
        session_reject(s, "cut off: %s", why);
    else if (s)
        session_reject(s, "no frame for %lld ms; host declared lost", (long long)silent_ms);
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
    if (!leads(a))
        return; /* a follower watches no host (agents_set_leading) */
    inventory_expire_hosts(a->inv, now, a->opts.host_timeout_ms, on_host_lost, a);
    inventory_expire_restarts(a->inv, now, on_restart_overrun, a);
    /* A connection that never says hello would hold a descriptor forever. */
    struct session *s;
    LIST_FOREACH(s, &a->sessions, link)
    {
        if (s->host == NULL && !s->closing && now - s->accepted_ms > a->opts.host_timeout_ms)
            session_reject(s, "no hello within %u ms", a->opts.host_timeout_ms);
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
        session_redirect(s, why);
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
        order_finish(LIST_FIRST(&a->orders), ORDER_UNREACHABLE, "the server is shutting down");
    while (!LIST_EMPTY(&a->sessions))
        session_destroy(LIST_FIRST(&a->sessions));
    free(a);
}
