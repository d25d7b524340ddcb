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

/* A UDP socket on 127.0.0.1 (a free port), cb(fd, EV_READ, arg) on each datagram. */
struct fake_dns_socket {
    int fd;
    uint16_t port;
    struct event *ev;
};

static inline void fake_dns_listen(struct fake_dns_socket *u, struct event_base *base,
                                   event_callback_fn cb, void *arg)
{
    u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(u->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t slen = sizeof(sin);
    assert_int_equal(getsockname(u->fd, (struct sockaddr *)&sin, &slen), 0);
    u->port = ntohs(sin.sin_port);
    u->ev = event_new(base, u->fd, EV_READ | EV_PERSIST, cb, arg);
    event_add(u->ev, NULL);
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

/* Sends reply (freed) to `to`. */
static inline void fake_dns_send(struct fake_dns_socket *u, ldns_pkt *reply,
                                 const struct sockaddr_in *to)
{
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(ldns_pkt2wire(&wire, reply, &len), LDNS_STATUS_OK);
    sendto(u->fd, wire, len, 0, (const struct sockaddr *)to, sizeof(*to));
    free(wire);
    ldns_pkt_free(reply);
}

#endif
