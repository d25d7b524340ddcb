/* A framed protocol connection over a libevent bufferevent.
 *
 * Bufferevents are created with BEV_OPT_DEFER_CALLBACKS so that no callback
 * ever runs inside a proto_conn_* call: owners can send or close from their
 * own callbacks without re-entering themselves.  Owners may free the conn from
 * a callback; the free is then deferred to the end of that callback (`depth`,
 * `free_pending`), because the decoder loop is still on the stack. */
#include "proto/proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "proto/proto_tls.h"

struct proto_conn {
    struct bufferevent *bev;
    struct evdns_base *dns; /* only for an outgoing connect to a name */
    struct event *close_ev; /* reports a close that has nothing left to flush */
    struct proto_decoder *decoder;
    SSL *ssl; /* borrowed from bev; NULL on a plain TCP conn */
    const struct proto_conn_ops *ops;
    void *opaque;
    char *peer;
    char *close_reason;
    int depth; /* how many of our callbacks into the owner are running */
    bool free_pending;
    bool closed;
    bool closing;
};

static void conn_destroy(struct proto_conn *c)
{
    if (c->close_ev)
        event_free(c->close_ev);
    if (c->bev)
        bufferevent_free(c->bev);
    /* After the bufferevent: it may still hold a pending DNS request. */
    if (c->dns)
        evdns_base_free(c->dns, 0);
    proto_decoder_free(c->decoder);
    free(c->peer);
    free(c->close_reason);
    free(c);
}

static void enter(struct proto_conn *c)
{
    c->depth++;
}

/* Returns true if c is gone. */
static bool leave(struct proto_conn *c)
{
    if (--c->depth == 0 && c->free_pending) {
        conn_destroy(c);
        return true;
    }
    return false;
}

static bool gone(const struct proto_conn *c)
{
    return c->closed || c->free_pending;
}

/* Must run between enter() and leave(). */
static void report_closed(struct proto_conn *c, const char *reason)
{
    if (gone(c))
        return;
    c->closed = true;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    if (c->ops->closed)
        c->ops->closed(c, reason, c->opaque);
}

static int deliver(json_t *msg, void *opaque)
{
    struct proto_conn *c = opaque;
    if (c->ops->message)
        c->ops->message(c, msg, c->opaque);
    /* Stop at once if the owner closed or freed us from its callback. */
    return gone(c) || c->closing;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct proto_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    enter(c);
    while (!gone(c) && !c->closing && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec chunk;
        if (evbuffer_peek(in, -1, NULL, &chunk, 1) < 1)
            break;
        cleanup_error vcr_error_t err = NULL;
        int r = proto_decoder_feed(c->decoder, chunk.iov_base, chunk.iov_len, deliver, c, &err);
        evbuffer_drain(in, chunk.iov_len);
        if (r < 0) {
            cleanup_free char *reason = NULL;
            if (asprintf(&reason, "protocol error from %s: %s", c->peer, vcr_error_msg(err)) < 0)
                reason = NULL;
            report_closed(c, reason ? reason : "protocol error");
        }
    }
    leave(c);
}

static void set_nodelay(struct proto_conn *c)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    /* Frames are small and latency-bound (heartbeats, orders): never wait for Nagle. */
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static const char *tls_reason(unsigned long e)
{
    const char *r = ERR_reason_error_string(e);
    return r ? r : "handshake failed";
}

static bool verify_failed(const struct proto_conn *c)
{
    long v = SSL_get_verify_result(c->ssl);
    return v != X509_V_OK;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct proto_conn *c = arg;
    enter(c);
    if (what & BEV_EVENT_CONNECTED) {
        set_nodelay(c);
        if (c->ops->connected && !gone(c))
            c->ops->connected(c, c->opaque);
    } else if (what & BEV_EVENT_EOF) {
        report_closed(c, "connection closed by the peer");
    } else if (what & BEV_EVENT_ERROR) {
        int dns_err = bufferevent_socket_get_dns_error(bev);
        int sock_err = EVUTIL_SOCKET_ERROR();
        unsigned long ssl_err = c->ssl ? bufferevent_get_openssl_error(bev) : 0;
        cleanup_free char *reason = NULL;
        int n;
        if (dns_err)
            n = asprintf(&reason, "cannot resolve `%s`: %s", c->peer, evutil_gai_strerror(dns_err));
        else if (ssl_err)
            n = asprintf(&reason, "TLS with %s: %s%s%s", c->peer, tls_reason(ssl_err),
                         verify_failed(c) ? ": " : "",
                         verify_failed(c)
                             ? X509_verify_cert_error_string(SSL_get_verify_result(c->ssl))
                             : "");
        else
            n = asprintf(&reason, "connection to %s: %s", c->peer,
                         evutil_socket_error_to_string(sock_err));
        /* The rest of OpenSSL's queue belongs to this failure only. */
        while (c->ssl && bufferevent_get_openssl_error(bev))
            ;
        report_closed(c, n >= 0 ? reason : "connection error");
    }
    leave(c);
}

static void on_flushed(struct bufferevent *bev, void *arg)
{
    struct proto_conn *c = arg;
    (void)bev;
    enter(c);
    report_closed(c, c->close_reason ? c->close_reason : "closed");
    leave(c);
}

static void on_close_event(evutil_socket_t fd, short what, void *arg)
{
    struct proto_conn *c = arg;
    (void)fd;
    (void)what;
    enter(c);
    report_closed(c, c->close_reason ? c->close_reason : "closed");
    leave(c);
}

/* ssl: stolen (freed with the bufferevent), may be NULL for plain TCP. */
static struct proto_conn *conn_new(struct event_base *base, int fd, SSL *ssl, bool accepting,
                                   const struct proto_conn_ops *ops, void *opaque, vcr_error_t *err)
{
    struct proto_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        vcr_error_errno(err, "new connection");
        SSL_free(ssl);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    c->ops = ops;
    c->opaque = opaque;
    c->decoder = proto_decoder_new();
    c->close_ev = event_new(base, -1, 0, on_close_event, c);
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (ssl)
        c->bev = bufferevent_openssl_socket_new(
            base, fd, ssl, accepting ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
            opts);
    else
        c->bev = bufferevent_socket_new(base, fd, opts);
    if (c->bev && ssl) {
        c->ssl = ssl;
        /* A peer that closes without close_notify is an EOF, as over plain TCP. */
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    }
    if (c->decoder == NULL || c->close_ev == NULL || c->bev == NULL) {
        if (c->bev == NULL) {
            SSL_free(ssl);
            if (fd >= 0)
                close(fd);
        }
        conn_destroy(c);
        vcr_error_make(err, ENOMEM, "new connection: out of memory");
        return NULL;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    return c;
}

static char *format_peer(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[INET6_ADDRSTRLEN];
    char *out = NULL;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return strdup("(unknown peer)");
    int n = -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr)))
            n = asprintf(&out, "%s:%u", addr, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr)))
            n = asprintf(&out, "[%s]:%u", addr, ntohs(sin6->sin6_port));
    }
    return n >= 0 ? out : strdup("(unknown peer)");
}

static SSL *ssl_new(const struct proto_tls *tls, vcr_error_t *err)
{
    SSL *ssl = SSL_new(proto_tls_ctx(tls));
    if (ssl == NULL) {
        ERR_clear_error();
        vcr_error_make(err, ENOMEM, "TLS: out of memory");
    }
    return ssl;
}

struct proto_conn *proto_conn_from_fd(struct event_base *base, int fd, const struct proto_tls *tls,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err)
{
    if (evutil_make_socket_nonblocking(fd) < 0 || evutil_make_socket_closeonexec(fd) < 0) {
        vcr_error_errno(err, "accepted connection");
        close(fd);
        return NULL;
    }
    SSL *ssl = NULL;
    if (tls && (ssl = ssl_new(tls, err)) == NULL) {
        close(fd);
        return NULL;
    }
    char *peer = format_peer(fd);
    struct proto_conn *c = conn_new(base, fd, ssl, true, ops, opaque, err);
    if (c == NULL) {
        free(peer);
        return NULL;
    }
    c->peer = peer;
    if (c->peer == NULL) {
        proto_conn_free(c);
        vcr_error_make(err, ENOMEM, "accepted connection: out of memory");
        return NULL;
    }
    set_nodelay(c);
    return c;
}

/* The server must prove `name`: a DNS name, or an IPv4 address in its
 * certificate's IP entries. */
static int ssl_expect_server(SSL *ssl, const char *name, vcr_error_t *err)
{
    int ok;
    if (vcr_ip_family(name) != 0) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_WILDCARDS);
        ok = SSL_set1_host(ssl, name) == 1 && SSL_set_tlsext_host_name(ssl, name) == 1;
    }
    if (ok != 1) {
        ERR_clear_error();
        return vcr_error_make(err, EINVAL, "TLS: `%s` cannot be a server name", name);
    }
    return 0;
}

struct proto_conn *proto_conn_connect(struct event_base *base, const char *host_port,
                                      const struct proto_tls *tls, const char *server_name,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err)
{
    cleanup_free char *host = NULL;
    uint16_t port;
    if (vcr_parse_host_port(host_port, &host, &port, err) < 0)
        return NULL;
    SSL *ssl = NULL;
    if (tls) {
        if ((ssl = ssl_new(tls, err)) == NULL)
            return NULL;
        if (ssl_expect_server(ssl, server_name ? server_name : host, err) < 0) {
            SSL_free(ssl);
            return NULL;
        }
    }
    struct proto_conn *c = conn_new(base, -1, ssl, false, ops, opaque, err);
    if (c == NULL)
        return NULL;
    c->peer = strdup(host_port);
    if (c->peer == NULL) {
        conn_destroy(c);
        vcr_error_make(err, ENOMEM, "connect to %s: out of memory", host_port);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    int r;
    if (vcr_sockaddr_of(host, port, &ss, &sslen) == 0) {
        r = bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sslen);
    } else {
        /* A resolver per connection: agents connect once and then hold the
         * connection, and the resolver must not keep the loop alive after. */
        c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                          EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (c->dns == NULL) {
            conn_destroy(c);
            vcr_error_make(err, EIO, "connect to %s: cannot set up the DNS resolver", host_port);
            return NULL;
        }
        r = bufferevent_socket_connect_hostname(c->bev, c->dns, AF_UNSPEC, host, port);
    }
    if (r < 0) {
        vcr_error_errno(err, "connect to %s", host_port);
        conn_destroy(c);
        return NULL;
    }
    return c;
}

int proto_conn_send(struct proto_conn *c, json_t *msg, vcr_error_t *err)
{
    if (gone(c) || c->closing)
        return vcr_error_make(err, EPIPE, "send to %s: the connection is closed", c->peer);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) >= PROTO_CONN_MAX_QUEUED)
        return vcr_error_make(err, ENOBUFS, "send to %s: %zu bytes already wait for the peer",
                              c->peer, evbuffer_get_length(out));
    cleanup_free char *frame = NULL;
    size_t len;
    if (proto_encode(msg, &frame, &len, err) < 0)
        return vcr_error_wrap(err, "send to %s", c->peer);
    if (bufferevent_write(c->bev, frame, len) < 0)
        return vcr_error_make(err, ENOMEM, "send to %s: out of memory", c->peer);
    return 0;
}

void proto_conn_close(struct proto_conn *c, const char *reason)
{
    if (gone(c) || c->closing)
        return;
    c->closing = true;
    c->close_reason = strdup(reason ? reason : "closed");
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        event_active(c->close_ev, 0, 0);
    } else {
        /* The write callback fires once the output has drained to the low-water
         * mark, 0 by default. */
        bufferevent_setcb(c->bev, NULL, on_flushed, on_event, c);
    }
}

const char *proto_conn_peer(const struct proto_conn *c)
{
    return c->peer;
}

bool proto_conn_is_tls(const struct proto_conn *c)
{
    return c->ssl != NULL;
}

bool proto_conn_peer_names(const struct proto_conn *c, const char *name)
{
    if (c->ssl == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
    return proto_tls_cert_names(SSL_get0_peer_certificate(c->ssl), name);
}

void proto_conn_free(struct proto_conn *c)
{
    if (c == NULL)
        return;
    if (c->depth > 0) {
        c->free_pending = true;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        return;
    }
    conn_destroy(c);
}
