/* Health checks of a service endpoint, after keepalived's check_api.h: one
 * small ops struct per protocol (check_tcp.c, check_http.c) behind one
 * non-blocking runner on the server's libevent loop (check.c).
 *
 * A check is one attempt: connect to address:port within timeout_ms, then
 * whatever the protocol adds (HTTP: GET path, a 2xx or 3xx status).  Probing
 * on a schedule and counting failures is probe.c's job. */
#ifndef VCR_SERVER_CHECK_H
#define VCR_SERVER_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/services.h"

struct event_base;
struct evbuffer;
struct check;

struct check_target {
    const struct check_ops *type; /* NULL: tcp */
    const char *address;          /* dotted quad */
    uint16_t port;
    const char *path; /* http: the request path; NULL means "/" */
    uint32_t timeout_ms;
};

/* What one attempt found.  CHECK_INCONCLUSIVE: the attempt failed for a
 * reason of this machine's (no file descriptor, no memory, no local port:
 * EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL), so it says nothing about
 * the service and must never count as a failure of it. */
enum check_outcome {
    CHECK_HEALTHY,
    CHECK_UNHEALTHY,
    CHECK_INCONCLUSIVE,
};

/* Called once per started check, never from inside check_start.  why is NULL
 * when healthy; body is what the service answered (HTTP body, may be ""), both
 * borrowed for the call.  The check is freed before done runs. */
typedef void (*check_done_fn)(enum check_outcome outcome, const char *why, const char *body,
                              void *arg);

/* True for the errno values that make an attempt inconclusive (above). */
bool check_local_error(int error);

/* All strings of t are copied. */
struct check *check_start(struct event_base *base, const struct check_target *t, check_done_fn done,
                          void *arg, vcr_error_t *err);
/* Abandons a check without calling done. */
void check_cancel(struct check *c);

/* What each protocol does once TCP is connected. */
struct check_ops {
    const char *name; /* as `check.type` names it in the configuration */
    bool takes_path;  /* `check.path` means something to it (http) */
    /* TCP is up: queue a request on out.  Returns 1 when being connected is the
     * whole check (healthy now), 0 to wait for an answer. */
    int (*connected)(const struct check_target *t, struct evbuffer *out);
    /* Bytes arrived (eof: the peer closed).  Returns 1 healthy, -1 unhealthy
     * (why filled), 0 to wait for more.  *body_start is set to the offset of the
     * answer's payload in `in` when known. */
    int (*received)(const struct check_target *t, struct evbuffer *in, bool eof, char *why,
                    size_t why_size, size_t *body_start);
};

/* The defaults the core names: tcp (a service's check and the container's
 * port) and http.  Other protocols are only in check_protocols.c's table. */
extern const struct check_ops check_tcp_ops;
extern const struct check_ops check_http_ops;

/* Every protocol, for the configuration (check_protocols.c: adding one is a
 * file of its own and one entry there, docs/conventions.md). */
const struct check_ops *check_protocol(const char *name);
/* The i-th protocol of the table, NULL past its end (the fuzz harness walks it). */
const struct check_ops *check_protocol_at(size_t i);
/* "tcp, http, ..." into buf. */
const char *check_protocols_allowed(char *buf, size_t size);

#endif
