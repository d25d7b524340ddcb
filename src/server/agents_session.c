/* One agent's connection on the server side (docs/protocol.md): accepted,
 * challenged, its hello checked (certificate name, auth, cut-off) and
 * welcomed, then each message it sends handled through one table.  Orders,
 * liveness and the listeners are agents.c's. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/ha.h"
#include "proto/proto.h"
#include "server/agents_priv.h"
#include "server/inventory.h"
#include "server/journal.h"

void agents_session_destroy(struct session *s)
{
    struct agents *a = s->agents;
    char message[160];
    snprintf(message, sizeof(message), "the connection to host `%s` closed before it replied",
             agents_session_name(s));
    struct order *o = LIST_FIRST(&a->orders);
    while (o) {
        struct order *next = LIST_NEXT(o, link);
        if (o->session == s)
            agents_order_finish(o, ORDER_UNREACHABLE, message);
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

void agents_session_reject(struct session *s, const char *fmt, ...)
{
    if (s->closing)
        return;
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (s->host)
        log_warn("agent %s (%s): closing: %s", agents_session_name(s), proto_conn_peer(s->conn),
                 message);
    else
        vcr_log_limited(&s->agents->refusals_log, VCR_LOG_WARN, "agent %s (%s): closing: %s",
                        agents_session_name(s), proto_conn_peer(s->conn), message);
    cleanup_json json_t *msg = proto_msg_new("error", json_pack("{s:s}", "message", message));
    cleanup_error vcr_error_t err = NULL;
    if (msg == NULL || proto_conn_send(s->conn, msg, &err) < 0)
        log_debug("agent %s: error message not sent: %s", agents_session_name(s),
                  vcr_error_msg(err));
    s->closing = true;
    proto_conn_close(s->conn, message);
}

void agents_session_redirect(struct session *s, const char *why)
{
    struct agents *a = s->agents;
    if (s->closing)
        return;
    const struct ha_leader *l = ha_leader(a->ha);
    char message[256];
    snprintf(message, sizeof(message), "%s; the leader is %s", why,
             l->agents_addr ? l->agents_addr : "not known yet");
    log_info("agent %s (%s): %s", agents_session_name(s), proto_conn_peer(s->conn), message);
    cleanup_json json_t *msg = proto_msg_new(
        "error", json_pack("{s:s, s:s, s:s?, s:I}", "message", message, "code", "not_leader",
                           "leader", l->agents_addr, "term", (json_int_t)l->term));
    cleanup_error vcr_error_t err = NULL;
    if (msg == NULL || proto_conn_send(s->conn, msg, &err) < 0)
        log_debug("agent %s: error message not sent: %s", agents_session_name(s),
                  vcr_error_msg(err));
    s->closing = true;
    proto_conn_close(s->conn, message);
}

static void on_hello(struct session *s, json_t *msg)
{
    struct agents *a = s->agents;
    if (!agents_leads(a)) {
        agents_session_redirect(s, "this server is not the leader");
        return;
    }
    if (s->host) {
        agents_session_reject(s, "a second hello on one connection");
        return;
    }
    /* Who may say this name: the certificate must name the host (docs/security.md);
     * checked before anything in the inventory moves. */
    const char *claimed = json_string_value(json_object_get(msg, "host"));
    if (proto_conn_is_tls(s->conn) &&
        (claimed == NULL || !proto_conn_peer_names(s->conn, claimed))) {
        agents_session_reject(
            s, "authentication failed: the client certificate does not name host `%s`",
            claimed ? claimed : "(none)");
        return;
    }
    if (s->standby_only) {
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (role == NULL || strcmp(role, "standby") != 0) {
            agents_session_reject(s,
                                  "standby_insecure_listen accepts role `standby` only, not `%s`: "
                                  "other agents use the TLS agent port",
                                  role ? role : "(none)");
            return;
        }
        /* The plain port must not take over a name that TLS vouched for. */
        const struct session *held = claimed ? agents_find_session(a, claimed) : NULL;
        const struct inv_host *known = inventory_find_host(a->inv, claimed);
        if ((held && proto_conn_is_tls(held->conn)) ||
            (known && known->role && strcmp(known->role, "standby") != 0)) {
            agents_session_reject(s, "host `%s` is %s: standby_insecure_listen cannot take it over",
                                  claimed, held ? "connected over TLS" : "not a standby host");
            return;
        }
    }
    if (a->opts.key) {
        const char *auth = json_string_value(json_object_get(msg, "auth"));
        if (!proto_auth_verify(a->opts.key, a->opts.key_len, s->nonce, auth)) {
            agents_session_reject(s, "authentication failed: %s",
                                  auth ? "wrong auth for the challenge" : "hello has no auth");
            return;
        }
    }
    const struct inv_host *cut =
        inventory_find_host(a->inv, json_string_value(json_object_get(msg, "host")));
    int64_t now = vcr_mono_ms();
    if (cut && cut->cut_off_until_ms > now) {
        /* A welcome would feed its fence watchdog, which the server now counts on. */
        agents_session_reject(s,
                              "host `%s` is cut off for %lld ms more: the server counts on its "
                              "self-fence (docs/fencing.md)",
                              cut->name, (long long)(cut->cut_off_until_ms - now));
        return;
    }
    bool came_up = false;
    cleanup_error vcr_error_t err = NULL;
    struct inv_host *h = inventory_apply_hello(a->inv, msg, now, &came_up, &err);
    if (h == NULL) {
        agents_session_reject(s, "bad hello: %s", vcr_error_msg(err));
        return;
    }
    struct session *old = agents_find_session(a, h->name);
    if (old)
        agents_session_reject(old, "replaced by a new connection from %s",
                              proto_conn_peer(s->conn));
    s->host = strdup(h->name);
    if (s->host == NULL) {
        agents_session_reject(s, "out of memory");
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
    journal_note(a->journal, 0, h->name, NULL, JOURNAL_HELLO, detail);
    if (came_up) {
        cleanup_json json_t *up = json_pack("{s:s}", "peer", peer);
        journal_note(a->journal, 0, h->name, NULL, JOURNAL_HOST_UP, up);
    }
    log_info("host %s: hello from %s (role %s, accel %s, agent %s, %zu VMs)%s", h->name, peer,
             h->role, h->accel, h->agent_version, h->n_vms, came_up ? ": host up" : "");
    json_t *welcome_body = json_pack(
        "{s:I, s:I, s:s}", "heartbeat_ms", (json_int_t)a->opts.heartbeat_ms, "fence_after_ms",
        (json_int_t)agents_fence_after_ms(a->opts.host_timeout_ms, a->opts.fence_timeout_ms),
        "server_version", VCR_VERSION);
    agents_add_term(a, welcome_body);
    cleanup_json json_t *welcome = proto_msg_new("welcome", welcome_body);
    if (welcome == NULL || proto_conn_send(s->conn, welcome, &err) < 0) {
        agents_session_reject(s, "cannot send welcome: %s", vcr_error_msg(err));
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
    inventory_host_heartbeat(s->agents->inv, s->host, vcr_mono_ms());
    /* Only a leader's echo is contact: a deposed one must not feed watchdogs. */
    if (!agents_leads(s->agents)) {
        agents_session_redirect(s, "this server is no longer the leader");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    json_t *echo_body = json_pack("{s:O, s:I}", "seq", seq, "ts_ms", (json_int_t)vcr_wall_ms());
    agents_add_term(s->agents, echo_body);
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
    journal_note(a->journal, json_integer_value(json_object_get(msg, "ts_ms")), s->host, vm,
                 JOURNAL_VM_EVENT, detail);
    log_info("host %s: VM %s is %s (%s)", s->host, vm, state, cause);
    if (change == INV_RESTART_BEGAN)
        log_info("host %s: VM %s: warm restart (maintenance, not a failure, for up to %d ms)",
                 s->host, vm, INV_RESTART_DEADLINE_MS);
    if (change == INV_RESTART_FAILED) {
        cleanup_json json_t *why =
            json_pack("{s:s, s:s, s:s}", "reason", "ended badly", "state", state, "cause", cause);
        journal_note(a->journal, json_integer_value(json_object_get(msg, "ts_ms")), s->host, vm,
                     JOURNAL_WARM_RESTART_FAILED, why);
        log_warn("host %s: VM %s: warm restart failed: now %s (%s)", s->host, vm, state, cause);
    }
    if (a->watch && a->watch->vm_event)
        a->watch->vm_event(a->watch_opaque, s->host, vm, state, cause);
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
    journal_note(a->journal, 0, s->host, NULL, JOURNAL_SELF_FENCE, detail);
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
        agents_order_finish_reply(o, ORDER_DONE, "done", msg);
        return;
    }
    if (error == NULL)
        error = "the agent gave no reason";
    log_info("host %s: order %lld refused: %s", s->host, (long long)o->id, error);
    agents_order_finish_reply(o, ORDER_REFUSED, error, msg);
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
        agents_session_reject(s, "expected hello first, got `%s`", type);
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
    agents_session_destroy(s);
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
            agents_session_destroy(old);
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
        agents_session_reject(s, "cannot send a challenge: %s", vcr_error_msg(err));
}
