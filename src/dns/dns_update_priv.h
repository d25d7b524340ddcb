/* Inside src/dns: what an UPDATE's reply means, apart from the socket and the
 * loop, so that tests/fuzz/fuzz_dns_reply.c feeds it any datagram. */
#ifndef VCR_DNS_DNS_UPDATE_PRIV_H
#define VCR_DNS_DNS_UPDATE_PRIV_H

#include <ldns/ldns.h>
#include <stddef.h>
#include <stdint.h>

enum dns_reply_kind {
    DNS_REPLY_IGNORED,  /* not ours, unparsable, not an UPDATE answer, or unsigned success */
    DNS_REPLY_DONE,     /* NOERROR whose TSIG verifies against our request's MAC */
    DNS_REPLY_REJECTED, /* an error rcode (believed unsigned: RFC 8945 section 5.3.2) */
};

struct dns_reply_judgement {
    enum dns_reply_kind kind;
    int rcode;           /* -1 when ignored */
    unsigned tsig_error; /* REJECTED: the TSIG RR's error field, 0 none */
    char problem[128];   /* IGNORED: why, "" for a datagram of another id */
};

/* The datagram buf[len] as the reply to the update with this id, signed with
 * key_name/key_secret and algorithm (its wire name, "hmac-sha256."), whose
 * request carried request_mac. */
void dns_update_judge_reply(uint16_t id, const char *key_name, const char *key_secret,
                            const char *algorithm, const ldns_rdf *request_mac, const uint8_t *buf,
                            size_t len, struct dns_reply_judgement *j);

/* How many TSIG RRs the message buf[len] carries, or -1 when its sections do
 * not parse (fewer records than the header counts, a bad name).  Either is
 * dropped before ldns_wire2pkt, which leaks the TSIG records it parsed but
 * one, also when it then fails on the rest (ldns 1.8.3; found by
 * tests/fuzz/fuzz_dns_reply.c): RFC 8945 allows one, the last record. */
int dns_wire_tsig_count(const uint8_t *buf, size_t len);

#endif
