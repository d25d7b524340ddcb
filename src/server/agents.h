/* Agent connections: accept, authenticate (challenge), hello/welcome, then feed
 * the inventory and the journal from what agents report, declare silent hosts
 * lost, and carry orders down and their replies back. */
#ifndef VCR_SERVER_AGENTS_H
#define VCR_SERVER_AGENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct inventory;
struct journal;
struct agents;
struct proto_tls;

struct agents_options {
    uint32_t heartbeat_ms;     /* announced in welcome */
    uint32_t host_timeout_ms;  /* silence after which a host is lost */
    uint32_t fence_timeout_ms; /* wait after host_lost before switching (docs/fencing.md) */
    const char *key;           /* borrowed for the life of agents; NULL: no challenge */
    /* Borrowed for the life of agents; NULL: plain TCP (`insecure: true`).  With
     * it, a hello is accepted only for the host the client certificate names. */
    const struct proto_tls *tls;
    size_t key_len;
    uint32_t connections_max; /* agent_connections_max; 0: the default */
};

/* Descriptors kept free for probes, DNS, the journal and the API: the agent
 * port takes at most RLIMIT_NOFILE minus this many connections. */
#define AGENTS_FD_RESERVE 128
/* Connections that have not said hello yet: past this many, the oldest is
 * closed to make room (a flood of silent connections cannot lock agents out). */
#define AGENTS_PENDING_MAX 64

/* The latest an agent may self-fence after its last contact so that its VMs
 * are dead before the server switches their services (welcome.fence_after_ms). */
uint32_t agents_fence_after_ms(uint32_t host_timeout_ms, uint32_t fence_timeout_ms);

/* How often silence is checked: a host is declared lost at most this late. */
#define AGENTS_TICK_MS 100
/* A liveness tick later than this after the previous one: the server did not
 * run meanwhile (docs/server.md, "Liveness"). */
#define AGENTS_STALL_MS 1000

/* inv and journal are borrowed and must outlive agents. */
struct agents *agents_new(struct event_base *base, struct inventory *inv, struct journal *journal,
                          const struct agents_options *opts, vcr_error_t *err);
/* Accept agents on addr:port (port 0: an ephemeral one, see agents_port). */
int agents_listen(struct agents *a, const char *addr, uint16_t port, vcr_error_t *err);
uint16_t agents_port(const struct agents *a);
/* A second, plain-TCP port for standby agents only (standby_insecure_listen):
 * a hello there must say role `standby`. */
int agents_listen_standby_insecure(struct agents *a, const char *addr, uint16_t port,
                                   vcr_error_t *err);
/* Agent-port connections allowed now: connections_max, or fewer when
 * RLIMIT_NOFILE leaves less than AGENTS_FD_RESERVE beside them. */
size_t agents_connection_cap(const struct agents *a);
/* Closes every connection; pending orders end with ORDER_UNREACHABLE first. */
void agents_free(struct agents *a);
/* Takes fd (stolen) as a connection the agent port accepted: a session that
 * must say hello first, plain TCP when standby_only (standby_insecure_listen),
 * else TLS when the options have it.  The listeners call it; so does the
 * fuzz harness of the handlers of agent messages (tests/fuzz). */
void agents_accept_fd(struct agents *a, int fd, bool standby_only);

enum order_outcome {
    ORDER_DONE,        /* the agent replied "ok": true */
    ORDER_REFUSED,     /* the agent replied "ok": false; message is its "error" */
    ORDER_TIMEOUT,     /* no reply before the deadline */
    ORDER_UNREACHABLE, /* the connection closed, or the server is shutting down */
};

/* Called exactly once per order that agents_send_order accepted; message is
 * borrowed for the call. */
typedef void (*agents_order_cb)(enum order_outcome outcome, const char *message, void *opaque);
/* The same with the agent's whole reply (borrowed; NULL unless DONE or REFUSED). */
typedef void (*agents_order_reply_cb)(enum order_outcome outcome, const char *message,
                                      json_t *reply, void *opaque);

/* Send {"type":"order","id","action","vm"} to host's agent.  Returns the order id,
 * or -1 with ENOTCONN when host has no live connection. */
int64_t agents_send_order(struct agents *a, const char *host, const char *action, const char *vm,
                          int64_t timeout_ms, agents_order_cb cb, void *opaque, vcr_error_t *err);
/* The same with more order members (an object, borrowed; may be NULL), and a
 * callback that sees the reply's members (a warm restart's result). */
int64_t agents_send_order_with(struct agents *a, const char *host, const char *action,
                               const char *vm, json_t *members, int64_t timeout_ms,
                               agents_order_reply_cb cb, void *opaque, vcr_error_t *err);

/* The server counts on host's self-fence until until_ms (monotonic): nothing may
 * feed its fence watchdog before then.  Its session is closed, a connected host
 * is declared lost (journal `host_lost` with `reason`: why, and the watch's
 * host_lost), and its hellos are refused until then (docs/fencing.md).  A later
 * call never shortens the cut; an unknown host is left alone. */
void agents_cut_off(struct agents *a, const char *host, int64_t until_ms, const char *why);

/* Whether host has a session that said hello and is not closing: an order to
 * it can be sent.  The inventory may still list a host `connected` without one
 * (its connection closed within host_timeout_ms, or a new leader's hosts from
 * an earlier term of its own, agents_set_leading). */
bool agents_host_has_session(struct agents *a, const char *host);
/* The address host's agent connected from, as this server sees it (IPv4
 * dotted quad or IPv6 text, no port): where another agent reaches it on the
 * same network (docs/migration.md, "The stream").  -1 when host has no session. */
int agents_host_address(struct agents *a, const char *host, char *out, size_t size);

/* Who else hears of VM events, accepted hellos and lost hosts: the recovery
 * engine.  Called after the inventory and the journal are updated; strings
 * are borrowed. */
struct agents_watch {
    void (*vm_event)(void *opaque, const char *host, const char *vm, const char *state,
                     const char *cause);
    void (*hello)(void *opaque, const char *host);
    void (*host_lost)(void *opaque, const char *host);
    /* A sample was applied to the inventory (the migration policy reads it). */
    void (*sample)(void *opaque, const char *host);
};
/* Redundant servers (docs/ha.md): ha (borrowed, outlives agents) decides
 * whether this server leads.  A follower answers every hello with `error`
 * code not_leader and the leader's address; a leader's welcome, heartbeat
 * echoes and orders carry its term.  Without it (the embedded single server)
 * nothing changes. */
struct ha;
void agents_set_ha(struct agents *a, struct ha *ha);
/* The ha watch's news: deposed closes every session with not_leader (why says
 * why); elected gives hosts known from an earlier term a fresh host timeout. */
void agents_set_leading(struct agents *a, bool leading, const char *why);

/* w is borrowed for the life of agents; NULL removes the watch. */
void agents_set_watch(struct agents *a, const struct agents_watch *w, void *opaque);

#endif
