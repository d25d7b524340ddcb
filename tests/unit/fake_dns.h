/* What the unit tests' fake DNS servers share (test_recovery.c's, which
 * applies UPDATEs and answers A queries, and test_ha.c's, which also keeps the
 * zone's fence): the test TSIG key and its key file, a UDP socket on loopback
 * watched by the caller's loop, and a signed or plain reply to a request.
 * What each server does with a request stays in its test. */
#ifndef VCR_TESTS_FAKE_DNS_H
#define VCR_TESTS_FAKE_DNS_H

#include <arpa/inet.h>
#include <event2/event.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEY_NAME   "vcr-update"
#define KEY_SECRET "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

/* The key as tsig-keygen writes it, at DIR/tsig.key (path: its name). */
static inline void fake_dns_write_key(const char *dir, char *path, size_t size)
{
    snprintf(path, size, "%s/tsig.key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("key \"" KEY_NAME "\" {\n\talgorithm hmac-sha256;\n\tsecret \"" KEY_SECRET "\";\n};\n",
          f);
    fclose(f);
}

/* A UDP socket on 127.0.0.1, or with ipv6 on ::1 (a free port), cb(fd,
 * EV_READ, arg) on each datagram. */
struct fake_dns_socket {
    int fd;
    uint16_t port;
    struct event *ev;
};

static inline void fake_dns_listen_on(struct fake_dns_socket *u, struct event_base *base, bool ipv6,
                                      event_callback_fn cb, void *arg)
{
    u->fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr *sa = ipv6 ? (struct sockaddr *)&sin6 : (struct sockaddr *)&sin;
    socklen_t slen = ipv6 ? sizeof(sin6) : sizeof(sin);
    assert_int_equal(bind(u->fd, sa, slen), 0);
    assert_int_equal(getsockname(u->fd, sa, &slen), 0);
    u->port = ntohs(ipv6 ? sin6.sin6_port : sin.sin_port);
    u->ev = event_new(base, u->fd, EV_READ | EV_PERSIST, cb, arg);
    event_add(u->ev, NULL);
}

static inline void fake_dns_listen(struct fake_dns_socket *u, struct event_base *base,
                                   event_callback_fn cb, void *arg)
{
    fake_dns_listen_on(u, base, false, cb, arg);
}

static inline void fake_dns_close(struct fake_dns_socket *u)
{
    event_free(u->ev);
    close(u->fd);
}

/* The reply to req: its id and opcode, NOERROR (the caller adds the rest). */
static inline ldns_pkt *fake_dns_reply_to(const ldns_pkt *req)
{
    ldns_pkt *reply = ldns_pkt_new();
    ldns_pkt_set_id(reply, ldns_pkt_id(req));
    ldns_pkt_set_qr(reply, true);
    ldns_pkt_set_opcode(reply, ldns_pkt_get_opcode(req));
    ldns_pkt_set_rcode(reply, LDNS_RCODE_NOERROR);
    return reply;
}

/* Signs an UPDATE's reply with the test key, as the server checks it. */
static inline void fake_dns_sign(ldns_pkt *reply, const ldns_pkt *req)
{
    assert_int_equal(ldns_pkt_tsig_sign(reply, KEY_NAME, KEY_SECRET, 300, "hmac-sha256.",
                                        ldns_rr_rdf(ldns_pkt_tsig(req), 3)),
                     LDNS_STATUS_OK);
}

/* Sends reply (freed) to `to` (to_len bytes: either family). */
static inline void fake_dns_send(struct fake_dns_socket *u, ldns_pkt *reply, const void *to,
                                 socklen_t to_len)
{
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(ldns_pkt2wire(&wire, reply, &len), LDNS_STATUS_OK);
    sendto(u->fd, wire, len, 0, (const struct sockaddr *)to, to_len);
    free(wire);
    ldns_pkt_free(reply);
}

#endif
