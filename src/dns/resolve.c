/* A query on a connected UDP socket: the kernel drops datagrams from other
 * addresses, the id must match, and only then is the answer believed. */
#include "dns/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "dns/dns_update_priv.h"

struct resolve {
    int fd;
    uint16_t id;
    char *name;
    struct event *read_ev;
    struct event *timer;
    resolve_done_fn done;
    resolve_txt_fn txt_done; /* a TXT query */
    void *arg;
    int family; /* of the records asked for (A: AF_INET, AAAA: AF_INET6) */
    char server[64];
};

void resolve_cancel(struct resolve *r)
{
    if (r == NULL)
        return;
    if (r->read_ev)
        event_free(r->read_ev);
    if (r->timer)
        event_free(r->timer);
    if (r->fd >= 0)
        close(r->fd);
    free(r->name);
    free(r);
}

static void finish(struct resolve *r, const char *address, const char *why)
{
    resolve_done_fn done = r->done;
    resolve_txt_fn txt_done = r->txt_done;
    void *arg = r->arg;
    resolve_cancel(r);
    if (txt_done)
        txt_done(false, NULL, why, arg);
    else
        done(address, why, arg);
}

/* A TXT answer: NOERROR or NXDOMAIN is an answer, with the first string of
 * the first TXT record if there is one. */
static int txt_answer(struct resolve *r, const uint8_t *buf, size_t len)
{
    int tsigs = dns_wire_tsig_count(buf, len);
    if (tsigs < 0 || tsigs > 1)
        return 0;
    ldns_pkt *pkt = NULL;
    if (ldns_wire2pkt(&pkt, buf, len) != LDNS_STATUS_OK || ldns_pkt_id(pkt) != r->id ||
        !ldns_pkt_qr(pkt)) {
        ldns_pkt_free(pkt);
        return 0;
    }
    int rcode = ldns_pkt_get_rcode(pkt);
    char *txt = NULL;
    ldns_rr_list *answer = ldns_pkt_answer(pkt);
    for (size_t i = 0;
         rcode == LDNS_RCODE_NOERROR && answer && txt == NULL && i < ldns_rr_list_rr_count(answer);
         i++) {
        ldns_rr *rr = ldns_rr_list_rr(answer, i);
        const ldns_rdf *d = ldns_rr_rd_count(rr) ? ldns_rr_rdf(rr, 0) : NULL;
        /* A character-string: its length octet, then the bytes. */
        if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_TXT && d && ldns_rdf_size(d) >= 1 &&
            (size_t)ldns_rdf_data(d)[0] + 1 <= ldns_rdf_size(d))
            txt = strndup((const char *)ldns_rdf_data(d) + 1, ldns_rdf_data(d)[0]);
    }
    ldns_pkt_free(pkt);
    resolve_txt_fn done = r->txt_done;
    void *arg = r->arg;
    char why[200] = "";
    if (rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) {
        ldns_lookup_table *rc = ldns_lookup_by_id(ldns_rcodes, rcode);
        snprintf(why, sizeof(why), "`%s` answered %s for `%s` TXT", r->server, rc ? rc->name : "?",
                 r->name);
    }
    resolve_cancel(r);
    done(why[0] == '\0', txt, why[0] ? why : NULL, arg);
    free(txt);
    return 1;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct resolve *r = arg;
    (void)fd;
    (void)what;
    char why[160];
    snprintf(why, sizeof(why), "no answer from `%s` for `%s` in time", r->server, r->name);
    finish(r, NULL, why);
}

/* The first record of type in the answer section, as text (malloc'ed), or NULL. */
static char *first_address(ldns_pkt *pkt, ldns_rr_type type)
{
    ldns_rr_list *answer = ldns_pkt_answer(pkt);
    for (size_t i = 0; answer && i < ldns_rr_list_rr_count(answer); i++) {
        ldns_rr *rr = ldns_rr_list_rr(answer, i);
        if (ldns_rr_get_type(rr) == type && ldns_rr_rd_count(rr) == 1)
            return ldns_rdf2str(ldns_rr_rdf(rr, 0));
    }
    return NULL;
}

int resolve_parse_answer(const uint8_t *buf, size_t len, uint16_t id, int family,
                         const char *server, const char *name, char **address, char *why,
                         size_t why_size)
{
    ldns_rr_type type = family == AF_INET6 ? LDNS_RR_TYPE_AAAA : LDNS_RR_TYPE_A;
    *address = NULL;
    int tsigs = dns_wire_tsig_count(buf, len);
    if (tsigs < 0 || tsigs > 1)
        return 0; /* unparsable, or TSIGs nobody asked for: ldns would leak (dns_update_priv.h) */
    ldns_pkt *pkt = NULL;
    if (ldns_wire2pkt(&pkt, buf, len) != LDNS_STATUS_OK || ldns_pkt_id(pkt) != id ||
        !ldns_pkt_qr(pkt)) {
        ldns_pkt_free(pkt);
        return 0; /* not the answer to this query */
    }
    if (ldns_pkt_get_rcode(pkt) != LDNS_RCODE_NOERROR) {
        ldns_lookup_table *rc = ldns_lookup_by_id(ldns_rcodes, ldns_pkt_get_rcode(pkt));
        snprintf(why, why_size, "`%s` answered %s for `%s`", server, rc ? rc->name : "?", name);
    } else if ((*address = first_address(pkt, type)) == NULL) {
        snprintf(why, why_size, "`%s` has no %s record for `%s`", server,
                 type == LDNS_RR_TYPE_AAAA ? "AAAA" : "A", name);
    }
    ldns_pkt_free(pkt);
    return 1;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct resolve *r = arg;
    (void)what;
    uint8_t buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNREFUSED)
            return; /* port unreachable: the timeout decides */
        char why[160];
        snprintf(why, sizeof(why), "query to `%s`: %s", r->server, strerror(errno));
        finish(r, NULL, why);
        return;
    }
    if (r->txt_done) {
        txt_answer(r, buf, (size_t)n);
        return;
    }
    char why[200] = "";
    char *address = NULL;
    if (!resolve_parse_answer(buf, (size_t)n, r->id, r->family, r->server, r->name, &address, why,
                              sizeof(why)))
        return;
    finish(r, address, address ? NULL : why);
    free(address);
}

static struct resolve *query_start(struct event_base *base, const char *server, uint16_t port,
                                   const char *name, ldns_rr_type type, uint32_t timeout_ms,
                                   resolve_done_fn done, resolve_txt_fn txt_done, void *arg,
                                   vcr_error_t *err)
{
    /* The zone's server, reached over IPv4 or IPv6 as the DNS switch reaches it. */
    struct sockaddr_storage to = {0};
    socklen_t to_len;
    struct sockaddr_in *sin = (struct sockaddr_in *)&to;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&to;
    if (inet_pton(AF_INET, server, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port ? port : 53);
        to_len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, server, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port ? port : 53);
        to_len = sizeof(*sin6);
    } else {
        vcr_error_make(err, EINVAL, "resolve: `%.60s` is not an IPv4 or IPv6 address", server);
        return NULL;
    }
    struct resolve *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        vcr_error_errno(err, "resolve `%s`", name);
        return NULL;
    }
    r->fd = -1;
    r->done = done;
    r->txt_done = txt_done;
    r->arg = arg;
    r->family = type == LDNS_RR_TYPE_AAAA ? AF_INET6 : AF_INET;
    snprintf(r->server, sizeof(r->server), to.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", server,
             (unsigned)(port ? port : 53));
    ldns_rdf *dname = ldns_dname_new_frm_str(name);
    ldns_pkt *q = dname ? ldns_pkt_query_new(dname, type, LDNS_RR_CLASS_IN, LDNS_RD) : NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    if (q == NULL || (r->name = strdup(name)) == NULL) {
        if (q == NULL && dname)
            ldns_rdf_deep_free(dname);
        ldns_pkt_free(q);
        resolve_cancel(r);
        vcr_error_make(err, EINVAL, "resolve: `%s` is not a DNS name", name);
        return NULL;
    }
    r->id = ldns_get_random();
    ldns_pkt_set_id(q, r->id);
    ldns_status st = ldns_pkt2wire(&wire, q, &len);
    ldns_pkt_free(q);
    if (st != LDNS_STATUS_OK) {
        resolve_cancel(r);
        vcr_error_make(err, EINVAL, "resolve `%s`: %s", name, ldns_get_errorstr_by_id(st));
        return NULL;
    }
    r->fd = socket(to.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r->fd < 0 || connect(r->fd, (struct sockaddr *)&to, to_len) < 0 ||
        (r->read_ev = event_new(base, r->fd, EV_READ | EV_PERSIST, on_read, r)) == NULL ||
        (r->timer = evtimer_new(base, on_timeout, r)) == NULL) {
        vcr_error_errno(err, "resolve `%s` at `%s`", name, r->server);
        free(wire);
        resolve_cancel(r);
        return NULL;
    }
    /* A failed send (no route yet) is left to the timeout, like a lost datagram. */
    if (send(r->fd, wire, len, 0) < 0)
        log_debug("resolve `%s` at `%s`: send: %s", name, r->server, strerror(errno));
    free(wire);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    event_add(r->read_ev, NULL);
    evtimer_add(r->timer, &tv);
    return r;
}

struct resolve *resolve_start(struct event_base *base, const char *server, uint16_t port,
                              const char *name, int family, uint32_t timeout_ms,
                              resolve_done_fn done, void *arg, vcr_error_t *err)
{
    return query_start(base, server, port, name,
                       family == AF_INET6 ? LDNS_RR_TYPE_AAAA : LDNS_RR_TYPE_A, timeout_ms, done,
                       NULL, arg, err);
}

struct resolve *resolve_txt_start(struct event_base *base, const char *server, uint16_t port,
                                  const char *name, uint32_t timeout_ms, resolve_txt_fn done,
                                  void *arg, vcr_error_t *err)
{
    return query_start(base, server, port, name, LDNS_RR_TYPE_TXT, timeout_ms, NULL, done, arg,
                       err);
}
