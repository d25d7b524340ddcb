/* Agent side of the agent-server protocol (see agent_conn.h). */
#include "agent/agent_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto.h"
#include "proto/proto_code.h"

enum conn_state {
    CONN_IDLE,            /* waiting for the retry timer */
    CONN_CONNECTING,      /* TCP connect under way */
    CONN_AWAIT_CHALLENGE, /* connected, we have a key, no hello yet */
    CONN_HELLO_SENT,      /* events and replies may flow */
    CONN_UP,              /* welcomed: heartbeats and samples too */
};

struct agent_conn {
    struct event_base *base;
    struct agent_conn_params params;
    struct agent_conn_ops ops;
    void *opaque;
    struct proto_conn *pc;
    enum conn_state state;
    int backoff_ms;
    bool outage_logged;
    struct event *retry_timer;
    struct event *challenge_timer;
    struct event *welcome_timer; /* several servers: a connection's deadline for welcome */
    struct event *heartbeat_timer;
    int heartbeat_ms;
    json_int_t heartbeat_seq;
    json_t *queue[AGENT_CONN_QUEUE_MAX]; /* vm_event messages, oldest at head */
    size_t q_head, q_len;
    unsigned long long dropped;
    void (*finished)(void *arg); /* set by agent_conn_finish */
    void *finished_arg;
    /* When the hello and the last heartbeats were sent (CLOCK_BOOTTIME ms): the
     * server's answers are contact evidence as of then (ops.heard). */
    int64_t hello_sent_ms;
    int64_t heartbeat_sent_ms[AGENT_CONN_HEARTBEAT_RING];
    /* Redundant servers (docs/ha.md): params.server split at commas; the one
     * connected or tried now; how many were tried since the last welcome. */
    char *servers[AGENT_CONN_SERVERS_MAX];
    size_t n_servers, cur, tried;
    bool redirected; /* the next attempt goes at once to the leader named */
    /* The newest leader term seen (welcome, echo, order, a follower's error):
     * anything older is a deposed leader's and is refused. */
    int64_t term;
    int64_t rx_ms; /* monotonic: the last frame from the server */
};

static const char *cur_server(const struct agent_conn *c)
{
    return c->servers[c->cur];
}

/* A frame's `term`: 0 when absent (a single server carries none). */
static int64_t term_of(json_t *msg)
{
    json_t *t = json_object_get(msg, "term");
    return json_is_integer(t) ? json_integer_value(t) : 0;
}

/* Whether term is older than the newest seen; a newer one becomes the newest. */
static bool term_is_stale(struct agent_conn *c, int64_t term)
{
    if (term < c->term)
        return true;
    if (term > c->term) {
        if (c->term)
            log_info("server %s: leader term %lld (was %lld)", cur_server(c), (long long)term,
                     (long long)c->term);
        c->term = term;
    }
    return false;
}

static void ms_to_tv(int ms, struct timeval *tv)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

static bool send_msg(struct agent_conn *c, json_t *msg)
{
    cleanup_error vcr_error_t err = NULL;
    if (c->pc == NULL || msg == NULL)
        return false;
    if (proto_conn_send(c->pc, msg, &err) < 0) {
        log_warn("server %s: send %s: %s", cur_server(c), proto_msg_type(msg), vcr_error_msg(err));
        return false;
    }
    return true;
}

static void enqueue(struct agent_conn *c, json_t *msg)
{
    if (c->q_len == AGENT_CONN_QUEUE_MAX) {
        json_decref(c->queue[c->q_head]);
        c->q_head = (c->q_head + 1) % AGENT_CONN_QUEUE_MAX;
        c->q_len--;
        c->dropped++;
    }
    c->queue[(c->q_head + c->q_len) % AGENT_CONN_QUEUE_MAX] = msg;
    c->q_len++;
}

static void flush_queue(struct agent_conn *c)
{
    if (c->dropped) {
        log_warn("server %s: %llu vm_event(s) dropped while disconnected (queue holds %d); the "
                 "hello carried the current state",
                 cur_server(c), c->dropped, AGENT_CONN_QUEUE_MAX);
        c->dropped = 0;
    }
    while (c->q_len > 0 && send_msg(c, c->queue[c->q_head])) {
        json_decref(c->queue[c->q_head]);
        c->q_head = (c->q_head + 1) % AGENT_CONN_QUEUE_MAX;
        c->q_len--;
    }
}

static void send_hello(struct agent_conn *c, const char *auth)
{
    json_t *vms = c->ops.vm_list(c->opaque);
    cleanup_json json_t *msg = proto_msg_new(
        "hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:o}", "host", c->params.host, "role",
                           c->params.role, "agent_version", VCR_VERSION, "pid", (int)getpid(),
                           "accel", c->params.accel, "vms", vms ? vms : json_array()));
    if (msg && auth)
        json_object_set_new(msg, "auth", json_string(auth));
    if (msg && c->ops.hello_extra) {
        cleanup_json json_t *extra = c->ops.hello_extra(c->opaque);
        if (json_is_object(extra))
            json_object_update_missing(msg, extra);
    }
    int64_t sent_ms = vcr_boot_ms();
    if (!send_msg(c, msg))
        return;
    c->hello_sent_ms = sent_ms;
    c->state = CONN_HELLO_SENT;
    log_debug("server %s: hello sent (%zu VMs)", cur_server(c),
              json_array_size(json_object_get(msg, "vms")));
    flush_queue(c);
}

static void on_challenge_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct agent_conn *c = arg;
    if (c->state != CONN_AWAIT_CHALLENGE)
        return;
    log_warn("server %s sent no challenge within %d ms although we have an agent key: it does "
             "not check keys; sending hello without auth",
             cur_server(c), AGENT_CONN_CHALLENGE_WAIT_MS);
    send_hello(c, NULL);
}

/* The welcome deadline with several servers: the same as for a silent server. */
static int welcome_wait_ms(const struct agent_conn *c)
{
    return 3 * c->heartbeat_ms + 1000;
}

/* With other servers to go to, one that has not welcomed us in time is left
 * like a silent one: a stopped server's kernel still completes the TCP
 * connection, and the TLS handshake or the hello then waits for it alone. */
static void on_welcome_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct agent_conn *c = arg;
    if (c->pc == NULL || c->state == CONN_UP || c->state == CONN_IDLE)
        return;
    log_warn("server %s: no welcome within %d ms; trying the next server", cur_server(c),
             welcome_wait_ms(c));
    proto_conn_close(c->pc, "no welcome in time");
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct agent_conn *c = arg;
    /* With other servers to go to, a silent one (stopped, cut off) is left:
     * the leader may be elsewhere now.  A single server is waited for. */
    int64_t silent = vcr_mono_ms() - c->rx_ms;
    if (c->n_servers > 1 && silent > 3 * (int64_t)c->heartbeat_ms + 500) {
        log_warn("server %s: silent for %lld ms; trying the next server", cur_server(c),
                 (long long)silent);
        proto_conn_close(c->pc, "server silent");
        return;
    }
    cleanup_json json_t *msg =
        proto_msg_new("heartbeat", json_pack("{s:I, s:I}", "seq", ++c->heartbeat_seq, "ts_ms",
                                             (json_int_t)vcr_wall_ms()));
    c->heartbeat_sent_ms[c->heartbeat_seq % AGENT_CONN_HEARTBEAT_RING] = vcr_boot_ms();
    send_msg(c, msg);
}

/* The server's echo of our heartbeat seq (docs/protocol.md). */
static void handle_heartbeat(struct agent_conn *c, json_t *msg)
{
    json_int_t seq = json_integer_value(json_object_get(msg, "seq"));
    if (term_is_stale(c, term_of(msg)))
        return; /* a deposed leader's echo is no contact with a legitimate one */
    if (c->ops.heard && seq > 0 && seq <= c->heartbeat_seq &&
        seq > c->heartbeat_seq - AGENT_CONN_HEARTBEAT_RING)
        c->ops.heard(c->heartbeat_sent_ms[seq % AGENT_CONN_HEARTBEAT_RING], c->opaque);
}

static void handle_challenge(struct agent_conn *c, json_t *msg)
{
    const char *nonce = json_string_value(json_object_get(msg, "nonce"));
    if (c->params.key == NULL) {
        log_error("server %s requires an agent key: set agent_key_file in the agent config",
                  cur_server(c));
        return;
    }
    if (c->state != CONN_AWAIT_CHALLENGE || nonce == NULL) {
        log_warn("server %s: unexpected challenge ignored", cur_server(c));
        return;
    }
    char auth[PROTO_AUTH_HEX_LEN + 1];
    if (proto_auth_compute(c->params.key, c->params.key_len, nonce, auth) < 0) {
        log_error("server %s: cannot compute the challenge answer", cur_server(c));
        return;
    }
    evtimer_del(c->challenge_timer);
    send_hello(c, auth);
}

static void handle_welcome(struct agent_conn *c, json_t *msg)
{
    if (term_is_stale(c, term_of(msg))) {
        /* A deposed leader that has not noticed: no contact, move on. */
        log_warn("server %s: welcome with term %lld, older than %lld: a deposed leader; moving on",
                 cur_server(c), (long long)term_of(msg), (long long)c->term);
        proto_conn_close(c->pc, "stale leader term");
        return;
    }
    c->tried = 0;
    json_int_t hb = json_integer_value(json_object_get(msg, "heartbeat_ms"));
    /* Bounded so that a bad value can neither flood the server nor starve it. */
    c->heartbeat_ms = hb >= 50 && hb <= 60000 ? (int)hb : AGENT_CONN_HEARTBEAT_DEF_MS;
    c->state = CONN_UP;
    evtimer_del(c->welcome_timer);
    c->rx_ms = vcr_mono_ms();
    c->backoff_ms = AGENT_CONN_BACKOFF_FIRST_MS;
    c->outage_logged = false;
    struct timeval tv;
    ms_to_tv(c->heartbeat_ms, &tv);
    evtimer_del(c->heartbeat_timer);
    event_add(c->heartbeat_timer, &tv);
    json_int_t fence_after = json_integer_value(json_object_get(msg, "fence_after_ms"));
    if (c->ops.fence_limit && fence_after > 0 && fence_after <= UINT32_MAX)
        c->ops.fence_limit((uint32_t)fence_after, c->opaque);
    if (c->ops.heard)
        c->ops.heard(c->hello_sent_ms, c->opaque);
    const char *version = json_string_value(json_object_get(msg, "server_version"));
    log_info("server %s: welcome (server %s, heartbeat every %d ms)", cur_server(c),
             version ? version : "?", c->heartbeat_ms);
}

static void handle_order(struct agent_conn *c, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    const char *action = json_string_value(json_object_get(msg, "action"));
    const char *vm = json_string_value(json_object_get(msg, "vm"));
    if (id == NULL) {
        log_warn("server %s: order without id ignored", cur_server(c));
        return;
    }
    if (action == NULL || vm == NULL) {
        agent_conn_reply(c, id, false, "order needs string members `action` and `vm`");
        return;
    }
    int64_t term = term_of(msg);
    if (term_is_stale(c, term)) {
        char why[160];
        snprintf(why, sizeof(why),
                 "order from leader term %lld refused: a newer leader (term %lld) exists",
                 (long long)term, (long long)c->term);
        log_warn("server %s: %s %s: %s", cur_server(c), action, vm, why);
        agent_conn_reply_with(c, id, false, why,
                              json_pack("{s:s, s:I}", "code",
                                        proto_code_name(PROTO_CODE_STALE_TERM), "term",
                                        (json_int_t)c->term));
        return;
    }
    log_info("server %s: order %s %s", cur_server(c), action, vm);
    c->ops.order(id, action, vm, msg, c->opaque);
}

/* The server is closing; a follower says who leads (docs/ha.md). */
static void handle_error(struct agent_conn *c, json_t *msg)
{
    const char *message = json_string_value(json_object_get(msg, "message"));
    if (proto_code_parse(json_string_value(json_object_get(msg, "code"))) !=
        PROTO_CODE_NOT_LEADER) {
        log_error("server %s: %s", cur_server(c), message ? message : "error without message");
        return;
    }
    term_is_stale(c, term_of(msg));
    const char *leader = json_string_value(json_object_get(msg, "leader"));
    for (size_t i = 0; leader && i < c->n_servers; i++) {
        if (strcmp(c->servers[i], leader) == 0 && i != c->cur) {
            log_info("server %s: not the leader; going to %s", cur_server(c), leader);
            /* A leader is named: a takeover is under way or done, not an outage; the
             * round back here (if the one named is dead) starts from the first backoff. */
            c->backoff_ms = AGENT_CONN_BACKOFF_FIRST_MS;
            c->tried = 0;
            /* on_closed moves one on from cur: land on the leader. */
            c->cur = (i + c->n_servers - 1) % c->n_servers;
            c->redirected = true;
            return;
        }
    }
    log_info("server %s: %s", cur_server(c), message ? message : "not the leader");
}

static void on_message(struct proto_conn *pc, json_t *msg, void *opaque)
{
    (void)pc;
    struct agent_conn *c = opaque;
    c->rx_ms = vcr_mono_ms();
    const char *type = proto_msg_type(msg);
    if (strcmp(type, "challenge") == 0)
        handle_challenge(c, msg);
    else if (strcmp(type, "welcome") == 0)
        handle_welcome(c, msg);
    else if (strcmp(type, "order") == 0)
        handle_order(c, msg);
    else if (strcmp(type, "heartbeat") == 0)
        handle_heartbeat(c, msg);
    else if (strcmp(type, "error") == 0)
        handle_error(c, msg);
    else
        log_debug("server %s: message of unknown type `%s` ignored", cur_server(c), type);
}

static void on_connected(struct proto_conn *pc, void *opaque)
{
    (void)pc;
    struct agent_conn *c = opaque;
    log_info("server %s: connected", cur_server(c));
    if (c->params.key) {
        c->state = CONN_AWAIT_CHALLENGE;
        struct timeval tv;
        ms_to_tv(AGENT_CONN_CHALLENGE_WAIT_MS, &tv);
        evtimer_add(c->challenge_timer, &tv);
    } else {
        send_hello(c, NULL);
    }
}

static void schedule_retry(struct agent_conn *c)
{
    struct timeval tv;
    if (c->redirected) {
        /* Straight to the leader a follower named. */
        c->redirected = false;
        ms_to_tv(AGENT_CONN_REDIRECT_MS, &tv);
        evtimer_add(c->retry_timer, &tv);
        return;
    }
    ms_to_tv(c->backoff_ms, &tv);
    evtimer_add(c->retry_timer, &tv);
    /* With several servers, the backoff grows once per round of them. */
    if (++c->tried < c->n_servers)
        return;
    c->tried = 0;
    c->backoff_ms = c->backoff_ms * 2 < AGENT_CONN_BACKOFF_MAX_MS ? c->backoff_ms * 2
                                                                  : AGENT_CONN_BACKOFF_MAX_MS;
}

static void on_closed(struct proto_conn *pc, const char *reason, void *opaque)
{
    struct agent_conn *c = opaque;
    bool was_up = c->state == CONN_UP;
    if (c->finished) {
        proto_conn_free(pc);
        c->pc = NULL;
        c->state = CONN_IDLE;
        c->finished(c->finished_arg);
        return;
    }
    /* One line per outage at warn; the retries that follow at debug. */
    if (was_up || !c->outage_logged)
        log_warn("server %s: %s (%s); retrying from %d ms, backing off to %d ms", cur_server(c),
                 was_up ? "connection lost" : "cannot connect", reason ? reason : "closed",
                 c->backoff_ms, AGENT_CONN_BACKOFF_MAX_MS);
    else
        log_debug("server %s: %s; retry in %d ms", cur_server(c), reason ? reason : "closed",
                  c->backoff_ms);
    c->outage_logged = true;
    proto_conn_free(pc);
    c->pc = NULL;
    c->state = CONN_IDLE;
    evtimer_del(c->heartbeat_timer);
    evtimer_del(c->challenge_timer);
    evtimer_del(c->welcome_timer);
    c->cur = (c->cur + 1) % c->n_servers;
    schedule_retry(c);
}

static const struct proto_conn_ops conn_ops = {
    .message = on_message,
    .connected = on_connected,
    .closed = on_closed,
};

static void connect_now(struct agent_conn *c)
{
    cleanup_error vcr_error_t err = NULL;
    c->pc = proto_conn_connect(c->base, cur_server(c), c->params.tls, c->params.server_name,
                               &conn_ops, c, &err);
    if (c->pc == NULL) {
        log_error("server %s: %s", cur_server(c), vcr_error_msg(err));
        schedule_retry(c);
        return;
    }
    c->state = CONN_CONNECTING;
    if (c->n_servers > 1) {
        struct timeval tv;
        ms_to_tv(welcome_wait_ms(c), &tv);
        evtimer_add(c->welcome_timer, &tv);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

struct agent_conn *agent_conn_new(struct event_base *base, const struct agent_conn_params *p,
                                  const struct agent_conn_ops *ops, void *opaque, vcr_error_t *err)
{
    struct agent_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return vcr_error_make(err, ENOMEM, "server connection: out of memory"), NULL;
    c->base = base;
    c->params = *p;
    c->ops = *ops;
    for (const char *s = p->server; s && *s && c->n_servers < AGENT_CONN_SERVERS_MAX;) {
        size_t n = strcspn(s, ",");
        size_t skip = strspn(s, " ");
        if (n > skip && (c->servers[c->n_servers] = strndup(s + skip, n - skip)) != NULL)
            c->n_servers++;
        s += n + (s[n] == ',');
    }
    if (c->n_servers == 0) {
        agent_conn_free(c);
        return vcr_error_make(err, EINVAL, "server connection: no server address"), NULL;
    }
    c->opaque = opaque;
    c->backoff_ms = AGENT_CONN_BACKOFF_FIRST_MS;
    c->heartbeat_ms = AGENT_CONN_HEARTBEAT_DEF_MS;
    c->retry_timer = evtimer_new(base, on_retry, c);
    c->challenge_timer = evtimer_new(base, on_challenge_timeout, c);
    c->welcome_timer = evtimer_new(base, on_welcome_timeout, c);
    c->heartbeat_timer = event_new(base, -1, EV_PERSIST, on_heartbeat, c);
    if (c->retry_timer == NULL || c->challenge_timer == NULL || c->welcome_timer == NULL ||
        c->heartbeat_timer == NULL) {
        agent_conn_free(c);
        return vcr_error_make(err, ENOMEM, "server connection: out of memory"), NULL;
    }
    return c;
}

void agent_conn_start(struct agent_conn *c)
{
    if (c->state == CONN_IDLE && c->pc == NULL)
        connect_now(c);
}

void agent_conn_send_event(struct agent_conn *c, json_t *body)
{
    json_t *msg = proto_msg_new("vm_event", body);
    if (msg == NULL)
        return;
    enqueue(c, msg);
    if (c->state >= CONN_HELLO_SENT)
        flush_queue(c);
}

void agent_conn_send_sample(struct agent_conn *c, json_t *body)
{
    cleanup_json json_t *msg = proto_msg_new("sample", body);
    if (c->state == CONN_UP)
        send_msg(c, msg);
}

void agent_conn_send_report(struct agent_conn *c, const char *type, json_t *body)
{
    cleanup_json json_t *msg = proto_msg_new(type, body);
    if (c->state >= CONN_HELLO_SENT)
        send_msg(c, msg);
}

void agent_conn_reply(struct agent_conn *c, json_t *id, bool ok, const char *error)
{
    agent_conn_reply_with(c, id, ok, error, NULL);
}

void agent_conn_reply_with(struct agent_conn *c, json_t *id, bool ok, const char *error,
                           json_t *members)
{
    json_t *body = json_pack("{s:O, s:b}", "id", id, "ok", ok);
    if (body && json_is_object(members))
        json_object_update_missing(body, members);
    json_decref(members);
    cleanup_json json_t *msg = proto_msg_new("reply", body);
    if (msg && error)
        json_object_set_new(msg, "error", json_string(error));
    /* A reply cannot outlive its connection: after a reconnect the hello re-syncs. */
    if (c->state < CONN_HELLO_SENT || !send_msg(c, msg))
        log_warn("server %s: reply to an order dropped: not connected", cur_server(c));
}

void agent_conn_finish(struct agent_conn *c, void (*done)(void *arg), void *arg)
{
    evtimer_del(c->retry_timer);
    evtimer_del(c->heartbeat_timer);
    evtimer_del(c->challenge_timer);
    evtimer_del(c->welcome_timer);
    if (c->pc == NULL || c->state < CONN_HELLO_SENT) {
        done(arg);
        return;
    }
    c->finished = done;
    c->finished_arg = arg;
    proto_conn_close(c->pc, "agent exiting");
}

bool agent_conn_is_up(const struct agent_conn *c)
{
    return c->state == CONN_UP;
}

void agent_conn_free(struct agent_conn *c)
{
    if (c == NULL)
        return;
    if (c->pc)
        proto_conn_free(c->pc);
    if (c->retry_timer)
        event_free(c->retry_timer);
    if (c->challenge_timer)
        event_free(c->challenge_timer);
    if (c->welcome_timer)
        event_free(c->welcome_timer);
    if (c->heartbeat_timer)
        event_free(c->heartbeat_timer);
    while (c->q_len > 0) {
        json_decref(c->queue[c->q_head]);
        c->q_head = (c->q_head + 1) % AGENT_CONN_QUEUE_MAX;
        c->q_len--;
    }
    for (size_t i = 0; i < c->n_servers; i++)
        free(c->servers[i]);
    free(c);
}
