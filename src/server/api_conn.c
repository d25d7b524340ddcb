/* The HTTP API's connections (docs/server.md, "Limits"): at most
 * connections_max at once, and each must deliver a whole request within
 * API_REQUEST_DEADLINE_MS of its accept or of its previous answer (the header
 * and idle timeout: a slowloris client that sends a byte now and then is
 * closed, whatever evhttp's per-read timeout says).  When the cap is reached,
 * the connection that has waited longest without a request in progress is
 * closed to make room (a flood of idle connections cannot lock clients out);
 * only if every connection is busy answering is the new one closed.
 *
 * evhttp 2.1 has no hook at accept but the bufferevent callback, and no close
 * notice but the bufferevent's end: each connection's bufferevent is a filter
 * (no filtering, libevent's bufferevent_filter) over the socket or TLS one,
 * whose free_context callback says when evhttp has freed it.  A connection is
 * closed the way evhttp closes a timed-out one: a timeout event on its
 * bufferevent. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>
#include <sys/queue.h>

#include <openssl/ssl.h>

#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_tls.h"
#include "server/api_priv.h"

struct api_conn {
    struct api *api;
    struct bufferevent *bev; /* the filter, evhttp's */
    int64_t since_ms;        /* accepted, or its last answer sent */
    bool busy;               /* a request of it is being answered */
    bool closing;            /* picked to make room: closed at the next turn of the loop */
    struct event *deadline;
    struct event *flush;
    TAILQ_ENTRY(api_conn) link;
};

static bool released(struct api_conn *c)
{
    bufferevent_event_cb cb = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &cb, NULL);
    return cb == NULL;
}

/* evhttp has freed the filter (and the connection). */
static void conn_freed(void *arg)
{
    struct api_conn *c = arg;
    /* libevent may finalize a bufferevent late, as late as event_base_free:
     * after api_free, which let go of the connection (api NULL). */
    if (c->api) {
        TAILQ_REMOVE(&c->api->conns, c, link);
        c->api->n_conns--;
        if (c->closing)
            c->api->n_closing--;
    }
    if (c->deadline)
        event_free(c->deadline);
    if (c->flush)
        event_free(c->flush);
    free(c);
}

/* libevent 2.1's filter moves what is added to its output on to the
 * underlying bufferevent only while its writing is enabled, and enabling it
 * later moves nothing; evhttp adds a reply before it enables writing (from the
 * second request of a kept-alive connection on).  So each addition is moved on
 * right after, once evhttp has enabled writing. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_conn *c = arg;
    if (!released(c))
        bufferevent_flush(c->bev, EV_WRITE, BEV_NORMAL);
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct api_conn *c = arg;
    if (info->n_added && c->flush)
        event_active(c->flush, EV_TIMEOUT, 0);
}

void api_conn_release_all(struct api *api)
{
    struct api_conn *c;
    while ((c = TAILQ_FIRST(&api->conns)) != NULL) {
        TAILQ_REMOVE(&api->conns, c, link);
        event_free(c->deadline);
        c->deadline = NULL;
        event_free(c->flush);
        c->flush = NULL;
        c->api = NULL;
    }
    api->n_conns = 0;
    api->n_closing = 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_conn *c = arg;
    if (c->busy || released(c))
        return;
    /* evhttp_error_cb: a timeout while reading drops the connection unanswered. */
    bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
}

static void close_soon(struct api_conn *c)
{
    struct timeval now = {0, 0};
    c->closing = true;
    c->api->n_closing++;
    evtimer_add(c->deadline, &now);
}

static void arm(struct api_conn *c)
{
    struct timeval tv = {API_REQUEST_DEADLINE_MS / 1000, (API_REQUEST_DEADLINE_MS % 1000) * 1000};
    c->since_ms = vcr_mono_ms();
    evtimer_add(c->deadline, &tv);
}

struct bufferevent *api_conn_new(struct event_base *base, void *arg)
{
    struct api *api = arg;
    struct bufferevent *raw = NULL;
    if (api->opts.tls) {
        SSL *ssl = SSL_new(proto_tls_ctx(api->opts.tls));
        raw = ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (raw == NULL && ssl)
            SSL_free(ssl);
        if (raw)
            bufferevent_openssl_set_allow_dirty_shutdown(raw, 1);
    } else {
        raw = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    struct api_conn *c = raw ? calloc(1, sizeof(*c)) : NULL;
    if (c) {
        c->deadline = evtimer_new(base, on_deadline, c);
        c->flush = event_new(base, -1, 0, on_flush, c);
    }
    if (c && c->deadline && c->flush)
        c->bev = bufferevent_filter_new(raw, NULL, NULL, BEV_OPT_CLOSE_ON_FREE, conn_freed, c);
    if (c && c->bev &&
        evbuffer_add_cb(bufferevent_get_output(c->bev), on_output_added, c) == NULL) {
        bufferevent_free(c->bev); /* frees c (conn_freed) and raw */
        log_error("HTTP API: a connection without its guard: out of memory");
        return NULL;
    }
    if (c == NULL || c->bev == NULL) {
        /* evhttp then makes a plain socket bufferevent of its own: a TLS API
         * refuses what comes on it (api_conn_is_tls). */
        if (c && c->deadline)
            event_free(c->deadline);
        if (c && c->flush)
            event_free(c->flush);
        free(c);
        if (raw)
            bufferevent_free(raw);
        log_error("HTTP API: a connection without its guard: out of memory");
        return NULL;
    }
    c->api = api;
    TAILQ_INSERT_TAIL(&api->conns, c, link);
    api->n_conns++;
    arm(c);
    size_t cap = api->opts.connections_max ? api->opts.connections_max : 256;
    if (api->n_conns - api->n_closing > cap) {
        struct api_conn *victim = NULL, *it;
        TAILQ_FOREACH(it, &api->conns, link)
        {
            if (it != c && !it->busy && !it->closing && !released(it) &&
                (victim == NULL || it->since_ms < victim->since_ms))
                victim = it;
        }
        api->conns_turned_away++;
        vcr_log_limited(&api->conns_log, VCR_LOG_WARN,
                        "HTTP API: %zu connections, the cap is %zu (api_connections_max): %s "
                        "(%llu so far)",
                        api->n_conns, cap,
                        victim ? "the one idle longest is closed"
                               : "every one is busy: the new "
                                 "one is closed",
                        (unsigned long long)api->conns_turned_away);
        close_soon(victim ? victim : c);
    }
    return c->bev;
}

static struct api_conn *conn_of(struct api *api, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct api_conn *c;
    TAILQ_FOREACH(c, &api->conns, link)
    {
        if (c->bev == bev)
            return c;
    }
    return NULL;
}

static void on_answered(struct evhttp_request *req, void *arg)
{
    (void)req;
    struct api_conn *c = arg;
    c->busy = false;
    arm(c); /* now the idle timeout, until its next request is in */
}

void api_conn_request(struct api *api, struct evhttp_request *req)
{
    struct api_conn *c = conn_of(api, req);
    if (c == NULL)
        return;
    c->busy = true;
    evtimer_del(c->deadline);
    if (c->closing) { /* its request came in first: it is served */
        c->closing = false;
        api->n_closing--;
    }
    evhttp_request_set_on_complete_cb(req, on_answered, c);
}

bool api_conn_is_tls(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (bev == NULL)
        return false;
    struct bufferevent *under = bufferevent_get_underlying(bev);
    return bufferevent_openssl_get_ssl(under ? under : bev) != NULL;
}

size_t api_conn_queued(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    size_t n = evbuffer_get_length(bufferevent_get_output(bev));
    struct bufferevent *under = bufferevent_get_underlying(bev);
    if (under)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

void api_conn_set_write_timeout(struct evhttp_connection *evcon, const struct timeval *tv)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct bufferevent *under = bufferevent_get_underlying(bev);
    /* The bytes wait in the socket's (or TLS) bufferevent: its writes are the
     * ones that stall. */
    bufferevent_set_timeouts(under ? under : bev, NULL, tv);
}
