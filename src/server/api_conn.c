/* The HTTP API's connections (docs/server.md, "Limits"): at most
 * connections_max at once, and each must deliver a whole request within
 * API_REQUEST_DEADLINE_MS of its accept or of its previous answer (the header
 * and idle timeout: a slowloris client that sends a byte now and then is
 * closed, whatever evhttp's per-read timeout says).  When the cap is reached,
 * the connection that has waited longest without a request in progress is
 * closed to make room (a flood of idle connections cannot lock clients out);
 * only if every connection is busy answering is the new one closed.
 *
 * evhttp 2.1 has no hook at accept but the callback that makes a connection's
 * bufferevent (api_conn_new), which does not see the connection itself.  Right
 * after it, evhttp sets the bufferevent's callbacks with the connection as
 * their argument; the connection is adopted from there in the same turn of the
 * loop (an activated event runs before the loop next polls, so before anything
 * can be read from the connection or close it), and its close callback then
 * tells when evhttp frees it.  A connection is closed the way evhttp closes a
 * timed-out one: a timeout event on its bufferevent. */
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
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until adopted */
    int64_t since_ms;                /* accepted, or its last answer sent */
    bool busy;                       /* a request of it is being answered */
    bool closing;                    /* picked to make room, closed at the next turn */
    struct event *deadline;
    struct event *adopt;
    void (*on_close)(struct evhttp_connection *, void *); /* api_conn_set_closecb */
    void *on_close_arg;
    TAILQ_ENTRY(api_conn) link;
};

static void conn_free(struct api_conn *c)
{
    if (c->api) {
        TAILQ_REMOVE(&c->api->conns, c, link);
        c->api->n_conns--;
        if (c->closing)
            c->api->n_closing--;
    }
    event_free(c->deadline);
    event_free(c->adopt);
    free(c);
}

/* evhttp frees the connection. */
static void on_evcon_close(struct evhttp_connection *evcon, void *arg)
{
    struct api_conn *c = arg;
    if (c->on_close)
        c->on_close(evcon, c->on_close_arg);
    conn_free(c);
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_conn *c = arg;
    void *cbarg = NULL;
    bufferevent_event_cb ecb = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &ecb, &cbarg);
    if (ecb == NULL || cbarg == NULL) {
        /* evhttp could not set it up (and freed it): nothing to watch. */
        conn_free(c);
        return;
    }
    c->evcon = cbarg;
    evhttp_connection_set_closecb(c->evcon, on_evcon_close, c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_conn *c = arg;
    if (c->busy || c->evcon == NULL)
        return;
    /* evhttp_error_cb: a timeout while reading drops the connection unanswered. */
    bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
}

static void close_soon(struct api_conn *c)
{
    struct timeval now = {0, 0};
    if (!c->closing) {
        c->closing = true;
        c->api->n_closing++;
    }
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
    struct bufferevent *bev = NULL;
    if (api->opts.tls) {
        SSL *ssl = SSL_new(proto_tls_ctx(api->opts.tls));
        bev = ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev == NULL && ssl)
            SSL_free(ssl);
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    struct api_conn *c = bev ? calloc(1, sizeof(*c)) : NULL;
    if (c) {
        c->deadline = evtimer_new(base, on_deadline, c);
        c->adopt = event_new(base, -1, 0, on_adopt, c);
    }
    if (c == NULL || c->deadline == NULL || c->adopt == NULL) {
        /* evhttp then makes a plain socket bufferevent of its own: a TLS API
         * refuses what comes on it (api_conn_is_tls). */
        if (c && c->deadline)
            event_free(c->deadline);
        if (c && c->adopt)
            event_free(c->adopt);
        free(c);
        if (bev)
            bufferevent_free(bev);
        log_error("HTTP API: a connection without its guard: out of memory");
        return NULL;
    }
    c->api = api;
    c->bev = bev;
    TAILQ_INSERT_TAIL(&api->conns, c, link);
    api->n_conns++;
    event_active(c->adopt, EV_TIMEOUT, 0);
    arm(c);
    size_t cap = api->opts.connections_max ? api->opts.connections_max : 256;
    if (api->n_conns - api->n_closing > cap) {
        struct api_conn *victim = NULL, *it;
        TAILQ_FOREACH(it, &api->conns, link)
        {
            if (it != c && !it->busy && !it->closing && it->evcon &&
                (victim == NULL || it->since_ms < victim->since_ms))
                victim = it;
        }
        api->conns_turned_away++;
        vcr_log_limited(&api->conns_log, VCR_LOG_WARN,
                        "HTTP API: %zu connections, the cap is %zu (api_connections_max): %s "
                        "(%llu so far)",
                        api->n_conns - api->n_closing, cap,
                        victim ? "the one idle longest is closed"
                               : "every one is busy: the new one is closed",
                        (unsigned long long)api->conns_turned_away);
        close_soon(victim ? victim : c);
    }
    return bev;
}

static struct api_conn *conn_of(struct api *api, struct evhttp_connection *evcon)
{
    struct api_conn *c;
    TAILQ_FOREACH(c, &api->conns, link)
    {
        if (evcon && c->evcon == evcon)
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
    struct api_conn *c = conn_of(api, evhttp_request_get_connection(req));
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

int api_conn_set_closecb(struct api *api, struct evhttp_connection *evcon,
                         void (*cb)(struct evhttp_connection *, void *), void *arg)
{
    struct api_conn *c = conn_of(api, evcon);
    if (c == NULL) {
        evhttp_connection_set_closecb(evcon, cb, arg);
        return 0;
    }
    c->on_close = cb;
    c->on_close_arg = arg;
    return 0;
}

void api_conn_release_all(struct api *api)
{
    struct api_conn *c;
    while ((c = TAILQ_FIRST(&api->conns)) != NULL) {
        if (c->evcon)
            evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        c->api = NULL;
        TAILQ_REMOVE(&api->conns, c, link);
        conn_free(c);
    }
    api->n_conns = 0;
    api->n_closing = 0;
}

bool api_conn_is_tls(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev && bufferevent_openssl_get_ssl(bev) != NULL;
}
