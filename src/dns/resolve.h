/* One A or AAAA query to a given DNS server (IPv4 or IPv6) over UDP,
 * non-blocking on the server's loop: how the recovery engine confirms a switch
 * "as a client would" (docs/recovery.md), in each family the service has.
 * The query is built and parsed with ldns; one datagram, one answer or the
 * timeout (the caller retries). */
#ifndef VCR_SERVER_RESOLVE_H
#define VCR_SERVER_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct resolve;

/* address is the first A record of the answer (AAAA for a query of family
 * AF_INET6; NULL on failure, then why says what happened); both borrowed.
 * The resolve is freed before done runs. */
typedef void (*resolve_done_fn)(const char *address, const char *why, void *arg);

/* family: AF_INET asks for A records, AF_INET6 for AAAA.  server is an IPv4
 * or an IPv6 address.  Never calls done from inside this call. */
struct resolve *resolve_start(struct event_base *base, const char *server, uint16_t port,
                              const char *name, int family, uint32_t timeout_ms,
                              resolve_done_fn done, void *arg, vcr_error_t *err);
void resolve_cancel(struct resolve *r);

/* One TXT query (the DNS fence of redundant servers, dns_update.h).  answered:
 * the server said (NOERROR or NXDOMAIN); then txt is the first string of the
 * first TXT record, NULL when there is none.  Otherwise why says what happened.
 * All borrowed; the resolve is freed before done runs. */
typedef void (*resolve_txt_fn)(bool answered, const char *txt, const char *why, void *arg);
struct resolve *resolve_txt_start(struct event_base *base, const char *server, uint16_t port,
                                  const char *name, uint32_t timeout_ms, resolve_txt_fn done,
                                  void *arg, vcr_error_t *err);

/* One datagram buf[len] as the answer to query id (exposed for
 * tests/fuzz/fuzz_dns_reply.c): 0 when it is not (unparsable, another id, not
 * a response: ignored), else 1 with *address the first A record (AAAA with
 * family AF_INET6; malloc'ed) or NULL and why saying what the server answered. */
int resolve_parse_answer(const uint8_t *buf, size_t len, uint16_t id, int family,
                         const char *server, const char *name, char **address, char *why,
                         size_t why_size);

#endif
