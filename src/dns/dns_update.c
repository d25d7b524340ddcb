#include "dns_update.h"
#include "dns_update_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/hostport.h"
#include "common/log.h"

/* The fudge RFC 8945 recommends and BIND and nsupdate use: clocks may differ by 5 min. */
#define TSIG_FUDGE_S 300
/* Replies to an UPDATE carry the zone section and a TSIG RR: far below this. */
#define REPLY_BUFSIZE 4096

static const struct dns_retry_policy default_retry = {
    .attempts = 4,
    .first_timeout_ms = 200,
    .multiplier = 2,
    .max_timeout_ms = 1600,
};

struct dns_update {
    struct event *readable;
    struct event *timer;
    int fd;
    uint8_t *wire;
    size_t wire_len;
    uint16_t id;
    ldns_rdf *request_mac; /* the reply's MAC covers it, binding reply to request (RFC 8945) */
    char *key_name;
    char *key_secret;
    const char *algorithm; /* static: its name on the wire, "hmac-sha256." */
    char *server;          /* "A.B.C.D:PORT", for messages */
    char *change;          /* "NAME A ADDR ttl N", for messages */
    char *zone;
    int64_t fence_term, fence_claim;
    struct dns_retry_policy retry;
    unsigned attempts;
    unsigned timeout_ms;
    double started;         /* vcr_mono_ms_f */
    char last_problem[256]; /* why no attempt has been answered yet */
    dns_update_done_fn done;
    void *done_arg;
};

static void ldns_pkt_freep(ldns_pkt **p)
{
    ldns_pkt_free(*p);
}

static void ldns_rdf_freep(ldns_rdf **p)
{
    ldns_rdf_deep_free(*p);
}

static void ldns_rr_list_freep(ldns_rr_list **p)
{
    ldns_rr_list_deep_free(*p);
}

#define cleanup_pkt     __attribute__((cleanup(ldns_pkt_freep)))
#define cleanup_rdf     __attribute__((cleanup(ldns_rdf_freep)))
#define cleanup_rr_list __attribute__((cleanup(ldns_rr_list_freep)))

static bool is_ipv4(const char *s)
{
    struct in_addr tmp;
    return s && inet_pton(AF_INET, s, &tmp) == 1;
}

static bool is_ipv6(const char *s)
{
    struct in6_addr tmp;
    return s && inet_pton(AF_INET6, s, &tmp) == 1;
}

static ldns_rdf *dname_from(const char *s)
{
    ldns_rdf *d = NULL;
    if (s == NULL || *s == '\0' || ldns_str2rdf_dname(&d, s) != LDNS_STATUS_OK)
        return NULL;
    return d;
}

static int retry_policy_resolve(const struct dns_retry_policy *in, struct dns_retry_policy *out,
                                vcr_error_t *err)
{
    *out = *in;
    if (out->attempts == 0)
        out->attempts = default_retry.attempts;
    if (out->first_timeout_ms == 0)
        out->first_timeout_ms = default_retry.first_timeout_ms;
    if (out->multiplier == 0)
        out->multiplier = default_retry.multiplier;
    if (out->max_timeout_ms == 0)
        out->max_timeout_ms = out->first_timeout_ms > default_retry.max_timeout_ms
                                  ? out->first_timeout_ms
                                  : default_retry.max_timeout_ms;
    if (out->attempts > 10)
        return vcr_error_make(err, EINVAL, "retry.attempts: `%u` is out of range; use 1..10",
                              out->attempts);
    if (out->first_timeout_ms > 60000)
        return vcr_error_make(err, EINVAL,
                              "retry.first_timeout_ms: `%u` is out of range; use 1..60000",
                              out->first_timeout_ms);
    if (out->multiplier > 10)
        return vcr_error_make(err, EINVAL, "retry.multiplier: `%u` is out of range; use 1..10",
                              out->multiplier);
    if (out->max_timeout_ms < out->first_timeout_ms || out->max_timeout_ms > 60000)
        return vcr_error_make(err, EINVAL,
                              "retry.max_timeout_ms: `%u` is out of range; use %u..60000",
                              out->max_timeout_ms, out->first_timeout_ms);
    return 0;
}

/* The TSIG algorithm's wire name the update signs with: the configured one,
 * hmac-sha256 when none is (validate() refused an unknown one). */
static const char *wire_algorithm(const struct dns_update_config *cfg)
{
    return dns_tsig_algorithm_wire(cfg->algorithm ? cfg->algorithm : "hmac-sha256");
}

/* Checks everything a caller can get wrong before any packet exists, so that each
 * message names the field at fault rather than an ldns status. */
static int validate(const struct dns_update_config *cfg, const char *name, long ttl,
                    const char *addr, const char *addr6, vcr_error_t *err)
{
    if (!is_ipv4(cfg->server) && !is_ipv6(cfg->server))
        return vcr_error_make(err, EINVAL, "server: `%s` is not an IPv4 (A.B.C.D) or IPv6 address",
                              cfg->server ? cfg->server : "");
    if (cfg->algorithm && dns_tsig_algorithm_wire(cfg->algorithm) == NULL)
        return vcr_error_make(err, EINVAL,
                              "algorithm: `%s` is not supported; use one of " DNS_TSIG_ALGORITHMS,
                              cfg->algorithm);
    cleanup_rdf ldns_rdf *key_name = dname_from(cfg->key_name);
    if (key_name == NULL)
        return vcr_error_make(err, EINVAL, "key_name: `%s` is not a valid domain name",
                              cfg->key_name ? cfg->key_name : "");
    cleanup_rdf ldns_rdf *secret = NULL;
    if (cfg->key_secret == NULL || *cfg->key_secret == '\0' ||
        ldns_str2rdf_b64(&secret, cfg->key_secret) != LDNS_STATUS_OK)
        return vcr_error_make(err, EINVAL, "key_secret: not valid base64 (value not shown)");
    cleanup_rdf ldns_rdf *zone = dname_from(cfg->zone);
    if (zone == NULL)
        return vcr_error_make(err, EINVAL, "zone: `%s` is not a valid domain name",
                              cfg->zone ? cfg->zone : "");
    if (cfg->fence_term < 0 || cfg->fence_claim < 0)
        return vcr_error_make(err, EINVAL, "fence: a negative term");
    if (name == NULL && addr == NULL && addr6 == NULL && cfg->fence_claim > 0)
        return 0; /* a fence claim alone */
    cleanup_rdf ldns_rdf *owner = dname_from(name);
    if (owner == NULL)
        return vcr_error_make(err, EINVAL, "name: `%s` is not a valid domain name",
                              name ? name : "");
    if (ldns_dname_compare(owner, zone) != 0 && !ldns_dname_is_subdomain(owner, zone))
        return vcr_error_make(err, EINVAL, "name: `%s` is not inside zone `%s`", name, cfg->zone);
    if (ttl < 0 || ttl > DNS_UPDATE_MAX_TTL)
        return vcr_error_make(err, EINVAL, "ttl: `%ld` is out of range; use 0..%d", ttl,
                              DNS_UPDATE_MAX_TTL);
    if (addr == NULL && addr6 == NULL)
        return vcr_error_make(err, EINVAL,
                              "address: none given; give an IPv4 address, an IPv6 address or both");
    if (addr && !is_ipv4(addr))
        return vcr_error_make(err, EINVAL, "address: `%s` is not an IPv4 address (A.B.C.D)", addr);
    if (addr6 && !is_ipv6(addr6))
        return vcr_error_make(err, EINVAL, "address6: `%s` is not an IPv6 address", addr6);
    return 0;
}

static ldns_rr *rr_of(const ldns_rdf *owner, ldns_rr_type type, ldns_rr_class class, uint32_t ttl)
{
    ldns_rr *rr = ldns_rr_new();
    if (rr == NULL)
        return NULL;
    ldns_rr_set_owner(rr, ldns_rdf_clone(owner));
    ldns_rr_set_type(rr, type);
    ldns_rr_set_class(rr, class);
    ldns_rr_set_ttl(rr, ttl);
    return rr;
}

/* FENCE TXT "term" (class IN, with ttl), or NULL. */
static ldns_rr *fence_rr(const ldns_rdf *fence, int64_t term, uint32_t ttl)
{
    char text[24];
    snprintf(text, sizeof(text), "%lld", (long long)term);
    ldns_rr *rr = rr_of(fence, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, ttl);
    ldns_rdf *txt = ldns_rdf_new_frm_str(LDNS_RDF_TYPE_STR, text);
    if (rr == NULL || txt == NULL) {
        ldns_rr_free(rr);
        ldns_rdf_deep_free(txt);
        return NULL;
    }
    ldns_rr_push_rdf(rr, txt);
    return rr;
}

/* The fence's prerequisite and, for a claim, its change (dns_update.h). */
static int fence_sections(const struct dns_update_config *cfg, ldns_rr_list *prereqs,
                          ldns_rr_list *updates)
{
    if (cfg->fence_term == 0 && cfg->fence_claim == 0)
        return 0;
    char name[300];
    snprintf(name, sizeof(name), "%s.%s", DNS_FENCE_LABEL, cfg->zone);
    cleanup_rdf ldns_rdf *fence = dname_from(name);
    if (fence == NULL)
        return -1;
    /* RFC 2136 2.4.2: class IN, TTL 0, the value; 2.4.3: class NONE, TTL 0, no rdata. */
    ldns_rr *pre = cfg->fence_term > 0 ? fence_rr(fence, cfg->fence_term, 0)
                                       : rr_of(fence, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_NONE, 0);
    if (pre == NULL)
        return -1;
    ldns_rr_list_push_rr(prereqs, pre);
    if (cfg->fence_claim > 0) {
        /* 2.5.2: delete the RRset (class ANY, TTL 0, no rdata), then 2.5.1: add one. */
        ldns_rr *del = rr_of(fence, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_ANY, 0);
        ldns_rr *add = fence_rr(fence, cfg->fence_claim, 0);
        if (del == NULL || add == NULL) {
            ldns_rr_free(del);
            ldns_rr_free(add);
            return -1;
        }
        ldns_rr_list_push_rr(updates, del);
        ldns_rr_list_push_rr(updates, add);
    }
    return 0;
}

/* RFC 2136 section 2.5.2 then 2.5.1: delete the whole RRset of the type, then add the
 * one record, pushed onto updates. */
static int push_replacement(ldns_rr_list *updates, const ldns_rdf *owner, ldns_rr_type type,
                            ldns_rdf_type rdf_type, long ttl, const char *addr)
{
    ldns_rr *delete_all = rr_of(owner, type, LDNS_RR_CLASS_ANY, 0);
    ldns_rr *add = rr_of(owner, type, LDNS_RR_CLASS_IN, (uint32_t)ttl);
    ldns_rdf *rdata = ldns_rdf_new_frm_str(rdf_type, addr);
    if (delete_all == NULL || add == NULL || rdata == NULL) {
        ldns_rr_free(delete_all);
        ldns_rr_free(add);
        ldns_rdf_deep_free(rdata);
        return -1;
    }
    ldns_rr_push_rdf(add, rdata);
    ldns_rr_list_push_rr(updates, delete_all);
    ldns_rr_list_push_rr(updates, add);
    return 0;
}

/* The A and/or AAAA replacements in one message, which the server applies atomically,
 * so that the name never resolves to both the old and new addresses, or to nothing. */
static ldns_pkt *signed_update_new(const struct dns_update_config *cfg, const char *name, long ttl,
                                   const char *addr, const char *addr6, vcr_error_t *err)
{
    if (validate(cfg, name, ttl, addr, addr6, err) < 0)
        return NULL;
    cleanup_rdf ldns_rdf *zone = dname_from(cfg->zone);
    cleanup_rr_list ldns_rr_list *updates = ldns_rr_list_new();
    cleanup_rr_list ldns_rr_list *prereqs = ldns_rr_list_new();
    if (updates == NULL || prereqs == NULL || fence_sections(cfg, prereqs, updates) < 0)
        return vcr_error_make(err, ENOMEM, "build the DNS UPDATE: out of memory"), NULL;
    if (name) {
        cleanup_rdf ldns_rdf *owner = dname_from(name);
        if (owner == NULL ||
            (addr &&
             push_replacement(updates, owner, LDNS_RR_TYPE_A, LDNS_RDF_TYPE_A, ttl, addr) < 0) ||
            (addr6 && push_replacement(updates, owner, LDNS_RR_TYPE_AAAA, LDNS_RDF_TYPE_AAAA, ttl,
                                       addr6) < 0))
            return vcr_error_make(err, ENOMEM, "build the DNS UPDATE: out of memory"), NULL;
    }

    cleanup_pkt ldns_pkt *pkt =
        ldns_update_pkt_new(steal_pointer(&zone), LDNS_RR_CLASS_IN,
                            ldns_rr_list_rr_count(prereqs) ? prereqs : NULL, updates, NULL);
    if (pkt == NULL)
        return vcr_error_make(err, ENOMEM, "build the DNS UPDATE: out of memory"), NULL;
    /* ldns builds the zone section as a query and so sets RD; in an UPDATE header that
     * bit belongs to Z, which RFC 2136 section 2.2 wants zero. */
    ldns_pkt_set_rd(pkt, false);
    ldns_pkt_set_random_id(pkt);
    ldns_status st = ldns_pkt_tsig_sign(pkt, cfg->key_name, cfg->key_secret, TSIG_FUDGE_S,
                                        wire_algorithm(cfg), NULL);
    if (st != LDNS_STATUS_OK)
        return vcr_error_make(err, 0, "sign the DNS UPDATE with key `%s`: %s", cfg->key_name,
                              ldns_get_errorstr_by_id(st)),
               NULL;
    return steal_pointer(&pkt);
}

int dns_update_message(const struct dns_update_config *cfg, const char *name, long ttl,
                       const char *addr, const char *addr6, uint8_t **wire, size_t *wire_len,
                       vcr_error_t *err)
{
    cleanup_pkt ldns_pkt *pkt = signed_update_new(cfg, name, ttl, addr, addr6, err);
    if (pkt == NULL)
        return -1;
    if (ldns_pkt2wire(wire, pkt, wire_len) != LDNS_STATUS_OK)
        return vcr_error_make(err, ENOMEM, "encode the DNS UPDATE: out of memory");
    return 0;
}

static double ms_since(double t0_ms)
{
    return vcr_mono_ms_f() - t0_ms;
}

static void update_free(struct dns_update *u)
{
    if (u->readable)
        event_free(u->readable);
    if (u->timer)
        event_free(u->timer);
    if (u->fd >= 0)
        close(u->fd);
    free(u->wire);
    ldns_rdf_deep_free(u->request_mac);
    free(u->key_name);
    if (u->key_secret)
        explicit_bzero(u->key_secret, strlen(u->key_secret));
    free(u->key_secret);
    free(u->server);
    free(u->change);
    free(u->zone);
    free(u);
}

void dns_update_cancel(struct dns_update *update)
{
    if (update) {
        log_debug("dns: %s via %s: cancelled after %u attempt(s)", update->change, update->server,
                  update->attempts);
        update_free(update);
    }
}

static void note_problem(struct dns_update *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_problem(struct dns_update *u, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->last_problem, sizeof(u->last_problem), fmt, ap);
    va_end(ap);
    log_debug("dns: %s via %s: %s", u->change, u->server, u->last_problem);
}

/* Ends the update: frees it first, so that the callback may start another update or
 * free the loop; error (stolen) is NULL on success. */
static void finish(struct dns_update *u, int rcode, char *error)
{
    cleanup_free char *msg = error;
    struct dns_update_outcome outcome = {
        .attempts = u->attempts,
        .elapsed_ms = ms_since(u->started),
        .rcode = rcode,
    };
    if (msg)
        log_warn("dns: %s via %s failed after %u attempt(s), %.1f ms: %s", u->change, u->server,
                 outcome.attempts, outcome.elapsed_ms, msg);
    else
        log_info("dns: %s via %s: done, %u attempt(s), %.2f ms", u->change, u->server,
                 outcome.attempts, outcome.elapsed_ms);
    dns_update_done_fn done = u->done;
    void *arg = u->done_arg;
    update_free(u);
    done(&outcome, msg, arg);
}

static void send_attempt(struct dns_update *u)
{
    u->attempts++;
    /* A failed send still counts and waits: routes and servers come back, and the
     * policy, not the first error, decides when to give up. */
    if (send(u->fd, u->wire, u->wire_len, 0) < 0)
        note_problem(u, "send: %s", strerror(errno));
    else
        log_debug("dns: %s via %s: attempt %u, waiting %u ms", u->change, u->server, u->attempts,
                  u->timeout_ms);
    struct timeval tv = {.tv_sec = u->timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(u->timeout_ms % 1000) * 1000};
    evtimer_add(u->timer, &tv);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns_update *u = arg;
    if (u->attempts < u->retry.attempts) {
        unsigned next = u->timeout_ms * u->retry.multiplier;
        u->timeout_ms = next < u->retry.max_timeout_ms ? next : u->retry.max_timeout_ms;
        send_attempt(u);
        return;
    }
    char *msg = NULL;
    if (asprintf(&msg, "no answer from `%s`%s%s", u->server,
                 u->last_problem[0] ? "; last problem: " : "", u->last_problem) < 0)
        msg = strdup("no answer from the DNS server");
    finish(u, -1, msg);
}

static const char *rcode_name(int rcode)
{
    const ldns_lookup_table *e = ldns_lookup_by_id(ldns_rcodes, rcode);
    return e ? e->name : "unknown rcode";
}

static const char *tsig_error_name(unsigned error)
{
    static const char *const names[] = {"BADSIG",  "BADKEY", "BADTIME", "BADMODE",
                                        "BADNAME", "BADALG", "BADTRUNC"};
    return error >= 16 && error <= 22 ? names[error - 16] : "unknown TSIG error";
}

/* What went wrong, in words an operator can act on. */
static char *rejection_message(const struct dns_update *u, int rcode, unsigned tsig_error)
{
    char *msg = NULL;
    int n;
    if (tsig_error == 18) /* BADTIME */
        n = asprintf(&msg,
                     "`%s` answered %s, TSIG error BADTIME: the clocks differ by more than "
                     "%d s",
                     u->server, rcode_name(rcode), TSIG_FUDGE_S);
    else if (tsig_error != 0)
        n = asprintf(&msg, "`%s` answered %s, TSIG error %s: bad key or signature (key `%s`)",
                     u->server, rcode_name(rcode), tsig_error_name(tsig_error), u->key_name);
    else if (rcode == LDNS_RCODE_NOTAUTH)
        n = asprintf(&msg,
                     "`%s` answered NOTAUTH: not authoritative for the zone, or bad key or "
                     "signature (key `%s`)",
                     u->server, u->key_name);
    else if (u->fence_term > 0 && rcode == DNS_RCODE_NXRRSET)
        n = asprintf(&msg,
                     "`%s` answered NXRRSET: the fence %s.%s is no longer term %lld: a newer "
                     "leader has claimed the zone (stale term, not retried)",
                     u->server, DNS_FENCE_LABEL, u->zone, (long long)u->fence_term);
    else if (u->fence_claim > 0 && rcode == DNS_RCODE_YXRRSET)
        n = asprintf(&msg, "`%s` answered YXRRSET: the fence %s.%s exists already", u->server,
                     DNS_FENCE_LABEL, u->zone);
    else if (rcode == LDNS_RCODE_REFUSED)
        n = asprintf(&msg,
                     "`%s` answered REFUSED: its policy (update-policy or allow-update) "
                     "does not let key `%s` update this name",
                     u->server, u->key_name);
    else
        n = asprintf(&msg, "`%s` answered %s (rcode %d)", u->server, rcode_name(rcode), rcode);
    return n < 0 ? strdup("the DNS server rejected the update") : msg;
}

enum verdict { REPLY_IGNORED, REPLY_FINAL };

/* The TSIG RR is signed with `algorithm` (RFC 8945 section 5.3: a reply uses
 * the request's).  Checked before ldns_pkt_tsig_verify, which leaks what it
 * allocated when the algorithm is one it does not know (ldns 1.8.3; found by
 * tests/fuzz/fuzz_dns_reply.c). */
static bool tsig_algorithm_is(const ldns_rr *tsig, const char *algorithm)
{
    if (ldns_rr_rd_count(tsig) < 1 || ldns_rr_rdf(tsig, 0) == NULL)
        return false;
    cleanup_rdf ldns_rdf *want = ldns_dname_new_frm_str(algorithm);
    return want && ldns_rdf_get_type(ldns_rr_rdf(tsig, 0)) == LDNS_RDF_TYPE_DNAME &&
           ldns_dname_compare(ldns_rr_rdf(tsig, 0), want) == 0;
}

void dns_update_judge_reply(uint16_t id, const char *key_name, const char *key_secret,
                            const char *algorithm, const ldns_rdf *request_mac, const uint8_t *buf,
                            size_t len, struct dns_reply_judgement *j)
{
    *j = (struct dns_reply_judgement){.kind = DNS_REPLY_IGNORED, .rcode = -1};
    if (len < LDNS_HEADER_SIZE || ldns_read_uint16(buf) != id)
        return; /* stray or late datagram of someone else: not ours */
    int tsigs = dns_wire_tsig_count(buf, len);
    if (tsigs < 0 || tsigs > 1) {
        snprintf(j->problem, sizeof(j->problem),
                 tsigs < 0 ? "unparsable reply (%zu bytes) ignored"
                           : "reply with more than one TSIG record (%zu bytes) ignored",
                 len);
        return;
    }
    cleanup_pkt ldns_pkt *reply = NULL;
    if (ldns_wire2pkt(&reply, buf, len) != LDNS_STATUS_OK) {
        snprintf(j->problem, sizeof(j->problem), "unparsable reply (%zu bytes) ignored", len);
        return;
    }
    if (!ldns_pkt_qr(reply) || ldns_pkt_get_opcode(reply) != LDNS_PACKET_UPDATE) {
        snprintf(j->problem, sizeof(j->problem), "reply that is not an UPDATE response ignored");
        return;
    }
    int rcode = ldns_pkt_get_rcode(reply);
    ldns_rr *tsig = ldns_pkt_tsig(reply);
    if (rcode == LDNS_RCODE_NOERROR) {
        /* ldns_pkt_tsig_verify takes the MAC as non-const; it only reads it. */
        bool verified = tsig && tsig_algorithm_is(tsig, algorithm) &&
                        ldns_pkt_tsig_verify(reply, buf, len, key_name, key_secret,
                                             (ldns_rdf *)(uintptr_t)request_mac);
        if (verified) {
            j->kind = DNS_REPLY_DONE;
            j->rcode = rcode;
            return;
        }
        /* RFC 8945 (client processing of answers): a reply that does not verify is
         * discarded, since anyone who can guess the id and port could have sent it. */
        snprintf(j->problem, sizeof(j->problem), "NOERROR reply %s, discarded",
                 tsig ? "whose TSIG does not verify" : "without TSIG");
        return;
    }
    /* A server that could not verify our request answers with an unsigned error
     * (RFC 8945 section 5.3.2), so an error is believed without a signature: forging
     * one only ends this update in failure, which dropping our packets could too. */
    j->kind = DNS_REPLY_REJECTED;
    j->rcode = rcode;
    j->tsig_error = tsig && ldns_rr_rd_count(tsig) > 5 && ldns_rr_rdf(tsig, 5)
                        ? ldns_rdf2native_int16(ldns_rr_rdf(tsig, 5))
                        : 0;
}

static enum verdict judge_reply(struct dns_update *u, const uint8_t *buf, size_t len)
{
    struct dns_reply_judgement j;
    dns_update_judge_reply(u->id, u->key_name, u->key_secret, u->algorithm, u->request_mac, buf,
                           len, &j);
    switch (j.kind) {
    case DNS_REPLY_IGNORED:
        if (j.problem[0])
            note_problem(u, "%s", j.problem);
        return REPLY_IGNORED;
    case DNS_REPLY_DONE:
        finish(u, j.rcode, NULL);
        return REPLY_FINAL;
    case DNS_REPLY_REJECTED:
        break;
    }
    finish(u, j.rcode, rejection_message(u, j.rcode, j.tsig_error));
    return REPLY_FINAL;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct dns_update *u = arg;
    uint8_t buf[REPLY_BUFSIZE];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* On a connected UDP socket this is the ICMP error of an earlier send
             * (port unreachable: nothing listens); recv consumed it, so read on. */
            if (errno == ECONNREFUSED) {
                note_problem(u, "port unreachable: nothing listens there");
                continue;
            }
            note_problem(u, "receive: %s", strerror(errno));
            return;
        }
        if ((size_t)n > sizeof(buf)) {
            note_problem(u, "oversized reply (%zd bytes) ignored", n);
            continue;
        }
        if (judge_reply(u, buf, (size_t)n) == REPLY_FINAL)
            return; /* u is freed */
    }
}

static int open_socket(const struct dns_update_config *cfg, uint16_t port, vcr_error_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    vcr_sockaddr_of(cfg->server, port, &ss, &sslen); /* validate() saw a literal */
    cleanup_close int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vcr_error_errno(err, "UDP socket for DNS UPDATE");
    /* Connected, so that the kernel drops datagrams from other peers and reports ICMP
     * errors for ours; connect() on UDP only sets the peer, it does not block. */
    if (connect(fd, (struct sockaddr *)&ss, sslen) < 0)
        return vcr_error_errno(err, "connect UDP socket to `%s:%u`", cfg->server, (unsigned)port);
    return steal_fd(&fd);
}

struct dns_update *dns_update_start(struct event_base *base, const struct dns_update_config *cfg,
                                    const char *name, long ttl, const char *addr, const char *addr6,
                                    dns_update_done_fn done, void *arg, vcr_error_t *err)
{
    double started = vcr_mono_ms_f();
    struct dns_retry_policy retry;
    if (retry_policy_resolve(&cfg->retry, &retry, err) < 0)
        return NULL;
    cleanup_pkt ldns_pkt *pkt = signed_update_new(cfg, name, ttl, addr, addr6, err);
    if (pkt == NULL)
        return NULL;
    struct dns_update *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return vcr_error_errno(err, "allocate a DNS update"), NULL;
    u->started = started;
    u->fd = -1;
    u->retry = retry;
    u->timeout_ms = retry.first_timeout_ms;
    u->done = done;
    u->done_arg = arg;
    u->id = ldns_pkt_id(pkt);
    uint16_t port = cfg->port ? cfg->port : 53;
    u->request_mac = ldns_rdf_clone(ldns_rr_rdf(ldns_pkt_tsig(pkt), 3));
    u->key_name = strdup(cfg->key_name);
    u->key_secret = strdup(cfg->key_secret);
    u->algorithm = wire_algorithm(cfg);
    char where[INET6_ADDRSTRLEN + 8];
    u->server = strdup(vcr_host_port_format(cfg->server, port, where, sizeof(where)));
    u->fence_term = cfg->fence_term;
    u->fence_claim = cfg->fence_claim;
    u->zone = strdup(cfg->zone);
    char fence[64] = "";
    if (cfg->fence_claim)
        snprintf(fence, sizeof(fence), "%sfence %lld -> %lld", name ? ", " : "",
                 (long long)cfg->fence_term, (long long)cfg->fence_claim);
    else if (cfg->fence_term)
        snprintf(fence, sizeof(fence), " (fence: term %lld)", (long long)cfg->fence_term);
    if (name ? asprintf(&u->change, "%s%s%s%s%s ttl %ld%s", name, addr ? " A " : "",
                        addr ? addr : "", addr6 ? " AAAA " : "", addr6 ? addr6 : "", ttl, fence) < 0
             : asprintf(&u->change, "%s", fence) < 0)
        u->change = NULL;
    if (u->request_mac == NULL || u->zone == NULL || u->key_name == NULL || u->key_secret == NULL ||
        u->server == NULL || u->change == NULL) {
        update_free(u);
        return vcr_error_make(err, ENOMEM, "start DNS update: out of memory"), NULL;
    }
    if (ldns_pkt2wire(&u->wire, pkt, &u->wire_len) != LDNS_STATUS_OK) {
        update_free(u);
        return vcr_error_make(err, ENOMEM, "encode the DNS UPDATE: out of memory"), NULL;
    }
    u->fd = open_socket(cfg, port, err);
    if (u->fd < 0) {
        update_free(u);
        return NULL;
    }
    u->readable = event_new(base, u->fd, EV_READ | EV_PERSIST, on_readable, u);
    u->timer = evtimer_new(base, on_timeout, u);
    if (u->readable == NULL || u->timer == NULL || event_add(u->readable, NULL) < 0) {
        update_free(u);
        return vcr_error_make(err, ENOMEM, "register DNS update on the event loop"), NULL;
    }
    send_attempt(u);
    return u;
}

struct sync_result {
    bool finished;
    struct dns_update_outcome outcome;
    char *error;
};

static void sync_done(const struct dns_update_outcome *outcome, const char *error, void *arg)
{
    struct sync_result *r = arg;
    r->finished = true;
    r->outcome = *outcome;
    r->error = error ? strdup(error) : NULL;
    if (error && r->error == NULL)
        r->error = strdup("out of memory");
}

int dns_update_sync(const struct dns_update_config *cfg, const char *name, long ttl,
                    const char *addr, const char *addr6, struct dns_update_outcome *outcome,
                    vcr_error_t *err)
{
    struct event_base *base = event_base_new();
    if (base == NULL)
        return vcr_error_make(err, ENOMEM, "create an event loop for the DNS update");
    struct sync_result r = {.outcome = {.rcode = -1}};
    struct dns_update *u = dns_update_start(base, cfg, name, ttl, addr, addr6, sync_done, &r, err);
    if (u == NULL) {
        event_base_free(base);
        return -1;
    }
    /* The update's own events are the only ones, so the loop ends with it. */
    int rc = event_base_dispatch(base);
    if (!r.finished)
        dns_update_cancel(u);
    event_base_free(base);
    if (outcome)
        *outcome = r.outcome;
    cleanup_free char *error = r.error;
    if (rc < 0 || !r.finished)
        return vcr_error_make(err, EIO, "DNS update: the event loop failed");
    if (error)
        return vcr_error_make(err, r.outcome.rcode < 0 ? ETIMEDOUT : 0, "%s", error);
    return 0;
}
