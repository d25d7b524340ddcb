/* Switching a name's A and/or AAAA records by RFC 2136 UPDATE signed with TSIG (RFC 8945).
 *
 * The server calls dns_update_start() from its libevent loop: the update never blocks
 * (non-blocking UDP socket, timers on the loop) and reports once through a callback.
 * Programs and tests without a loop use dns_update_sync().  What goes on the wire, the
 * retry policy and the errors are described in docs/dns.md. */
#ifndef VCR_DNS_DNS_UPDATE_H
#define VCR_DNS_DNS_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/err.h"

#define DNS_UPDATE_MAX_TTL 86400

/* Retransmission on timeout.  A zero field takes the default in brackets. */
struct dns_retry_policy {
    unsigned attempts;         /* datagrams sent in all, 1..10 [4] */
    unsigned first_timeout_ms; /* wait after the first one, 1..60000 [200] */
    unsigned multiplier;       /* each wait is the previous one times this, 1..10 [2] */
    unsigned max_timeout_ms;   /* cap of a single wait, >= first_timeout_ms [1600] */
};

/* All strings are borrowed: dns_update_start() copies what it keeps. */
struct dns_update_config {
    const char *server; /* IPv4 "A.B.C.D" or IPv6 address of the primary server */
    uint16_t port;      /* 0 means 53 */
    const char *zone;
    const char *key_name;
    const char *key_secret; /* base64, as in the BIND key file */
    const char *algorithm;  /* NULL (hmac-sha256), "hmac-sha256" or "hmac-sha512" */
    struct dns_retry_policy retry;
    /* Fencing by term (redundant servers, docs/ha.md): the zone's fence is the TXT
     * record DNS_FENCE_LABEL.ZONE holding the term of the leader that last claimed it.
     * fence_term > 0: the update carries the prerequisite (RFC 2136 section 2.4.2,
     * "RRset exists (value dependent)") that the fence is exactly "fence_term", so
     * that it fails with NXRRSET once a newer leader has claimed the zone.
     * fence_claim > 0: the update also moves the fence to "fence_claim" (delete its
     * TXT RRset, add the one record); with fence_term 0 the prerequisite is then that
     * it does not exist (section 2.4.3, failing with YXRRSET).  A claim may change no
     * A record (name and addr NULL).  Both 0 (the single server): no prerequisite. */
    int64_t fence_term;
    int64_t fence_claim;
};

#define DNS_FENCE_LABEL "_vcr-term"
/* The rcodes of a failed prerequisite (RFC 2136 section 2.2). */
#define DNS_RCODE_YXRRSET 7
#define DNS_RCODE_NXRRSET 8

/* A TSIG key read from a BIND key file; dns_tsig_key_clear() frees it. */
struct dns_tsig_key {
    char *name;
    char *secret;
    const char *algorithm; /* static: "hmac-sha256" or "hmac-sha512" */
};

#define DNS_TSIG_ALGORITHMS "hmac-sha256, hmac-sha512"

/* The TSIG algorithm's name on the wire ("hmac-sha512."), for a name as BIND's key
 * files and tsig-keygen spell it, with or without the final dot, any case;
 * NULL for an algorithm this project does not sign with. */
const char *dns_tsig_algorithm_wire(const char *name);

/* Reads `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };` as tsig-keygen writes
 * it (hmac-sha256 or hmac-sha512).  The file must hold exactly one key. */
int dns_tsig_key_load(const char *path, struct dns_tsig_key *key, vcr_error_t *err);
/* The same from text in memory (len bytes, need not be NUL-terminated); path only
 * names the source in messages.  Exposed for the fuzz harness. */
int dns_tsig_key_parse(const char *text, size_t len, const char *path, struct dns_tsig_key *key,
                       vcr_error_t *err);
void dns_tsig_key_clear(struct dns_tsig_key *key);

struct dns_update_outcome {
    unsigned attempts; /* datagrams sent */
    double elapsed_ms; /* from the start to the callback */
    int rcode;         /* of the reply that ended the update, -1 when none did */
};

/* error is NULL on success, else a message naming the cause; both it and outcome are
 * borrowed for the duration of the call.  The update is already freed when this runs. */
typedef void (*dns_update_done_fn)(const struct dns_update_outcome *outcome, const char *error,
                                   void *arg);

struct dns_update;

/* Starts replacing every A record of `name` (inside cfg->zone) by one record `addr`
 * (IPv4) and every AAAA record by one record `addr6` (IPv6), both with `ttl`
 * (0..DNS_UPDATE_MAX_TTL), in one message.  A NULL address leaves the RRset of its
 * type untouched; at least one must be given.  name and both addresses NULL: none (a
 * fence claim only).  Invalid input fails here, naming the field; everything later is
 * reported through done, never from inside this call.  The returned handle is valid
 * until done runs or dns_update_cancel(). */
struct dns_update *dns_update_start(struct event_base *base, const struct dns_update_config *cfg,
                                    const char *name, long ttl, const char *addr, const char *addr6,
                                    dns_update_done_fn done, void *arg, vcr_error_t *err);

/* Abandons an update in flight without calling its callback (for shutdown). */
void dns_update_cancel(struct dns_update *update);

/* Runs one update on a private loop until it ends.  outcome may be NULL. */
int dns_update_sync(const struct dns_update_config *cfg, const char *name, long ttl,
                    const char *addr, const char *addr6, struct dns_update_outcome *outcome,
                    vcr_error_t *err);

/* The signed UPDATE message exactly as dns_update_start() sends it, in a malloc'ed
 * buffer; exposed so that tests can parse it back. */
int dns_update_message(const struct dns_update_config *cfg, const char *name, long ttl,
                       const char *addr, const char *addr6, uint8_t **wire, size_t *wire_len,
                       vcr_error_t *err);

#endif
