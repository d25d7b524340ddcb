/* What agents.c (orders, liveness, listeners) and agents_session.c (one
 * agent's connection: hello and the messages after it) share. */
#ifndef VCR_SERVER_AGENTS_PRIV_H
#define VCR_SERVER_AGENTS_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "common/log.h"
#include "proto/proto.h"
#include "server/agents.h"

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
bool agents_leads(struct agents *a);
/* The term every order and welcome carries (docs/ha.md); members stolen into msg. */
void agents_add_term(struct agents *a, json_t *body);
/* The open session of `host`, or NULL. */
struct session *agents_find_session(struct agents *a, const char *host);
const char *agents_session_name(const struct session *s);

/* An order's end: its callback runs, with the agent's reply when there is one. */
void agents_order_finish_reply(struct order *o, enum order_outcome outcome, const char *message,
                               json_t *reply);
void agents_order_finish(struct order *o, enum order_outcome outcome, const char *message);

/* Its pending orders end unreachable, then the session is freed. */
void agents_session_destroy(struct session *s);
/* Tell the agent why, then close once that is written. */
void agents_session_reject(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A follower's answer to a hello, and a deposed leader's to its sessions:
 * `error` with `code` not_leader and `leader`, the leader's agent address when
 * known, so that the agent goes there (docs/protocol.md). */
void agents_session_redirect(struct session *s, const char *why);

#endif
