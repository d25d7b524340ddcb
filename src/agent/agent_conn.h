/* The agent's connection to the server (docs/protocol.md): connects, answers
 * the challenge, sends `hello` with the full VM list, heartbeats at the
 * server's pace, pushes events, samples and replies, hands orders to the role,
 * and reconnects with backoff (250 ms doubling to 5 s) whenever the
 * connection fails or ends.  Events raised while disconnected are queued
 * (bounded; the oldest are dropped and counted) and sent right after the next
 * hello; samples are only sent while connected. */
#ifndef VCR_AGENT_AGENT_CONN_H
#define VCR_AGENT_AGENT_CONN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define AGENT_CONN_BACKOFF_FIRST_MS 250
#define AGENT_CONN_BACKOFF_MAX_MS   5000
#define AGENT_CONN_QUEUE_MAX        256
/* With a key: how long to wait for the server's challenge before sending
 * hello without auth (a server without a key sends no challenge). */
#define AGENT_CONN_CHALLENGE_WAIT_MS 1000
#define AGENT_CONN_HEARTBEAT_DEF_MS  1000
/* Redundant servers (docs/ha.md): at most this many addresses in `server`, and
 * how soon the agent goes to the leader a follower named. */
#define AGENT_CONN_SERVERS_MAX 16
#define AGENT_CONN_REDIRECT_MS 20
/* Heartbeats whose send time is kept to date the server's echoes. */
#define AGENT_CONN_HEARTBEAT_RING 64

struct event_base;
struct agent_conn;
struct proto_tls;

/* Borrowed for the life of the connection. */
struct agent_conn_params {
    /* HOST:PORT, or several joined by commas (redundant servers, docs/ha.md):
     * the agent tries them in turn, goes to the leader a follower names, and
     * leaves one that is silent for 3 heartbeats + 500 ms.  Frames carry the
     * leader's `term`: a welcome, echo or order of an older term than the
     * newest seen is a deposed leader's: not contact, refused (stale_term). */
    const char *server;
    const char *host;
    const char *role;
    const char *accel;
    const char *key; /* shared key (proto_auth_load_key) or NULL */
    size_t key_len;
    /* Mutual TLS (proto_tls.h); NULL: plain TCP (insecure). */
    const struct proto_tls *tls;
    const char *server_name; /* the server certificate's name; NULL: server's HOST */
};

struct agent_conn_ops {
    /* The `vms` array of hello (new reference). */
    json_t *(*vm_list)(void *opaque);
    /* An order; answer it with agent_conn_reply(id) (id borrowed: incref to keep). */
    /* msg: the whole order (borrowed), for members beyond action and vm. */
    void (*order)(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque);
    /* Optional: more hello members (an object, new reference), e.g. `containers`. */
    json_t *(*hello_extra)(void *opaque);
    /* Optional: the server was in contact at evidence_ms (CLOCK_BOOTTIME ms): a
     * `welcome` answers the hello sent then, a `heartbeat` echo the heartbeat
     * of its seq.  Frames read late (the agent was stopped) give no newer
     * evidence than when their question was sent (docs/fencing.md). */
    void (*heard)(int64_t evidence_ms, void *opaque);
    /* Optional: welcome's fence_after_ms, the latest the server can wait for a
     * self-fence after the last contact. */
    void (*fence_limit)(uint32_t fence_after_ms, void *opaque);
};

struct agent_conn *agent_conn_new(struct event_base *base, const struct agent_conn_params *p,
                                  const struct agent_conn_ops *ops, void *opaque, vcr_error_t *err);
/* First connection attempt; later ones follow on their own. */
void agent_conn_start(struct agent_conn *c);
/* vm_event body {vm, state, cause, ts_ms, pid} (stolen). */
void agent_conn_send_event(struct agent_conn *c, json_t *body);
/* sample body {ts_ms, vms} (stolen); dropped when not connected. */
void agent_conn_send_sample(struct agent_conn *c, json_t *body);
/* A report of what holds now, type `type`, body stolen: sent once hello is, dropped
 * before (the hello of the next connection carries the state it reports). */
void agent_conn_send_report(struct agent_conn *c, const char *type, json_t *body);
void agent_conn_reply(struct agent_conn *c, json_t *id, bool ok, const char *error);
/* The same with more members (an object, stolen; may be NULL) merged into the reply. */
void agent_conn_reply_with(struct agent_conn *c, json_t *id, bool ok, const char *error,
                           json_t *members);
/* Leaving: send what is queued, close, and call done (from the loop, or at
 * once when not connected).  No reconnect follows. */
void agent_conn_finish(struct agent_conn *c, void (*done)(void *arg), void *arg);
/* The server welcomed us on the current connection. */
bool agent_conn_is_up(const struct agent_conn *c);
void agent_conn_free(struct agent_conn *c);

#endif
