/* GET /v1/events/stream: the journal as server-sent events (docs/server.md), what
 * the dashboard (docs/dashboard.md) shows live.
 *
 * Bounded: at most SSE_CLIENTS_MAX streams; the journal is the buffer, each stream
 * only remembers the last id it sent and reads on from there (a page at a time,
 * the next one when the previous has left the socket), so catching up from an old
 * id costs no memory.  A client that reads too slowly is dropped, never waited for:
 * more than SSE_BUFFER_MAX bytes queued to it, or none of them written for
 * SSE_WRITE_TIMEOUT_S.  Its browser reconnects with Last-Event-ID and reads the
 * rest from the journal. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "server/api_priv.h"
#include "server/journal.h"
#include "server/sse.h"

struct sse_client {
    struct api_sse *hub;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    int64_t last_id; /* the last event sent */
    bool more;       /* the last page was full: more may wait in the journal */
    LIST_ENTRY(sse_client) link;
};

struct api_sse {
    struct api *api;
    struct event *keepalive;
    LIST_HEAD(, sse_client) clients;
    size_t count;
};

static void client_free(struct sse_client *c)
{
    LIST_REMOVE(c, link);
    c->hub->count--;
    free(c);
}

/* Closes the connection at once, whatever is still queued. */
static void client_drop(struct sse_client *c, const char *why)
{
    struct evhttp_connection *evcon = c->evcon;
    log_info("event stream %" PRId64 ": dropped: %s", c->last_id, why);
    api_conn_set_closecb(c->hub->api, evcon, NULL, NULL);
    client_free(c);
    evhttp_connection_free(evcon); /* frees the request too */
}

static size_t client_queued(const struct sse_client *c)
{
    return evbuffer_get_length(bufferevent_get_output(evhttp_connection_get_bufferevent(c->evcon)));
}

static void client_pump(struct sse_client *c);

static void on_written(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct sse_client *c = arg;
    if (c->more)
        client_pump(c);
}

/* Every chunk names on_written: a chunk written without it would cancel the
 * continuation of a page. */
static void client_send(struct sse_client *c, struct evbuffer *buf)
{
    evhttp_send_reply_chunk_with_cb(c->req, buf, on_written, c);
}

/* Sends the next page of events after c->last_id, if any. */
static void client_pump(struct sse_client *c)
{
    if (client_queued(c) > SSE_BUFFER_MAX) {
        client_drop(c, "too slow (its buffer is full)");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *events = journal_read(c->hub->api->journal, c->last_id, SSE_PAGE, &err);
    if (events == NULL) {
        log_warn("event stream: %s", vcr_error_msg(err)); /* the next append retries */
        return;
    }
    size_t n = json_array_size(events);
    c->more = n == SSE_PAGE;
    if (n == 0)
        return;
    struct evbuffer *buf = evbuffer_new();
    bool ok = buf != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *ev = json_array_get(events, i);
        cleanup_free char *text = json_dumps(ev, JSON_COMPACT);
        int64_t id = json_integer_value(json_object_get(ev, "id"));
        ok = text && sse_format_event(buf, id, text) == 0;
        c->last_id = id;
    }
    if (ok)
        client_send(c, buf);
    if (buf)
        evbuffer_free(buf);
    if (!ok)
        client_drop(c, "out of memory");
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct sse_client *c = arg;
    struct evhttp_request *req = c->req;
    log_debug("event stream %" PRId64 ": closed by the client", c->last_id);
    client_free(c);
    /* libevent has detached the request from its failing connection: ending it
     * frees it. */
    evhttp_send_reply_end(req);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_sse *hub = arg;
    struct sse_client *c = LIST_FIRST(&hub->clients);
    while (c) {
        struct sse_client *next = LIST_NEXT(c, link);
        struct evbuffer *buf = evbuffer_new();
        if (client_queued(c) > SSE_BUFFER_MAX)
            client_drop(c, "too slow (its buffer is full)");
        else if (buf && evbuffer_add(buf, ":\n\n", 3) == 0)
            client_send(c, buf);
        if (buf)
            evbuffer_free(buf);
        c = next;
    }
}

void api_sse_journal_appended(struct api_sse *hub)
{
    struct sse_client *c = LIST_FIRST(&hub->clients);
    while (c) {
        struct sse_client *next = LIST_NEXT(c, link);
        client_pump(c);
        c = next;
    }
}

/* Where a new stream starts: after Last-Event-ID (a browser reconnecting), else
 * after ?since=, else with the last SSE_PAGE events.  False after a 400. */
static bool stream_start_id(struct api *api, struct evhttp_request *req, int64_t *since)
{
    *since = -1;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    TAILQ_INIT(&params);
    if (query && evhttp_parse_query_str(query, &params) < 0) {
        api_reply_error(req, 400, "cannot parse the query string");
        return false;
    }
    bool ok = true;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &params, next)
    {
        if (strcmp(kv->key, "since") != 0) {
            api_reply_error(req, 400, "unknown query parameter `%s`; allowed: since", kv->key);
            ok = false;
            break;
        }
        if (sse_parse_event_id(kv->value, strlen(kv->value), since) < 0) {
            api_reply_error(req, 400,
                            "query parameter `since`: `%.32s` is not an event id; "
                            "allowed: 0..%lld",
                            kv->value, SSE_EVENT_ID_MAX);
            ok = false;
            break;
        }
    }
    evhttp_clear_headers(&params);
    if (!ok)
        return false;
    const char *last = evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
    if (last && sse_parse_event_id(last, strlen(last), since) < 0) {
        api_reply_error(req, 400,
                        "header `Last-Event-ID`: `%.32s` is not an event id; "
                        "allowed: 0..%lld",
                        last, SSE_EVENT_ID_MAX);
        return false;
    }
    if (*since < 0) {
        cleanup_json json_t *tail = journal_read(api->journal, -1, SSE_PAGE, NULL);
        json_t *first = json_array_get(tail, 0);
        *since = first ? json_integer_value(json_object_get(first, "id")) - 1 : 0;
    }
    return true;
}

void api_handle_events_stream(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    struct api_sse *hub = api->sse;
    int64_t since;
    if (!stream_start_id(api, req, &since))
        return;
    if (hub->count >= SSE_CLIENTS_MAX) {
        api_reply_error(req, 503, "%d event streams are open, the most allowed; try again later",
                        SSE_CLIENTS_MAX);
        return;
    }
    struct sse_client *c = calloc(1, sizeof(*c));
    struct evbuffer *hello = evbuffer_new();
    if (c == NULL || hello == NULL ||
        evbuffer_add_printf(hello, "retry: %d\n\n", SSE_RETRY_MS) < 0) {
        free(c);
        if (hello)
            evbuffer_free(hello);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    c->hub = hub;
    c->req = req;
    c->evcon = evhttp_request_get_connection(req);
    c->last_id = since;
    LIST_INSERT_HEAD(&hub->clients, c, link);
    hub->count++;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_send_reply_start(req, 200, "OK");
    api_conn_set_closecb(hub->api, c->evcon, on_close, c);
    /* The client never sends anything more: no read timeout.  A write that does not
     * progress for SSE_WRITE_TIMEOUT_S ends the connection (on_close). */
    struct timeval write_tv = {.tv_sec = SSE_WRITE_TIMEOUT_S, .tv_usec = 0};
    bufferevent_set_timeouts(evhttp_connection_get_bufferevent(c->evcon), NULL, &write_tv);
    log_debug("event stream %" PRId64 ": opened (%zu open)", since, hub->count);
    client_send(c, hello);
    evbuffer_free(hello);
    client_pump(c);
}

struct api_sse *api_sse_new(struct api *api)
{
    struct api_sse *hub = calloc(1, sizeof(*hub));
    if (hub == NULL)
        return NULL;
    hub->api = api;
    LIST_INIT(&hub->clients);
    hub->keepalive = event_new(api->base, -1, EV_PERSIST, on_keepalive, hub);
    struct timeval tv = {.tv_sec = SSE_KEEPALIVE_MS / 1000, .tv_usec = 0};
    if (hub->keepalive == NULL || event_add(hub->keepalive, &tv) < 0) {
        if (hub->keepalive)
            event_free(hub->keepalive);
        free(hub);
        return NULL;
    }
    return hub;
}

/* Ends every stream properly (the last chunk), before evhttp_free closes them. */
void api_sse_free(struct api_sse *hub)
{
    if (hub == NULL)
        return;
    while (!LIST_EMPTY(&hub->clients)) {
        struct sse_client *c = LIST_FIRST(&hub->clients);
        struct evhttp_request *req = c->req;
        api_conn_set_closecb(hub->api, c->evcon, NULL, NULL);
        client_free(c);
        evhttp_send_reply_end(req);
    }
    event_free(hub->keepalive);
    free(hub);
}
