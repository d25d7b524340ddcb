/* Inside the HTTP API: the core (api.c: routing, status, events) and one
 * file per resource (api_vms.c, api_containers.c, api_services.c). */
#ifndef VCR_SERVER_API_PRIV_H
#define VCR_SERVER_API_PRIV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "server/agents.h"
#include "server/api.h"

struct evhttp;
struct evhttp_request;

/* A GET /v1/events?wait_ms= that found nothing new and waits for an append. */
struct events_wait {
    struct api *api;
    struct evhttp_request *req;
    int64_t since;
    int limit;
    struct event *timer;
    LIST_ENTRY(events_wait) link;
};

/* A POST waiting for the agent's reply to its order. */
struct vm_request {
    struct api *api;
    struct evhttp_request *req;
    char *vm;
    char *host;
    const char *verb;
};

struct api {
    struct event_base *base;
    struct inventory *inv;
    struct journal *journal;
    struct agents *agents;
    struct api_options opts;
    struct evhttp *http;
    uint16_t port;
    struct listen_guard *guard;
    LIST_HEAD(, events_wait) waits;
    struct recovery *recovery;       /* NULL: no recovery engine (GET /v1/services is empty) */
    struct migrator *migrator;       /* NULL: no migrations */
    const struct server_config *cfg; /* NULL: no `images:` store */
    /* GET /metrics: what it folded from the journal so far (api_metrics.c) */
    struct api_metrics *metrics;
    /* GET /v1/events/stream: its open streams (api_sse.c) */
    struct api_sse *sse;
    struct ha *ha; /* NULL: the embedded single server */
};

/* Every answer is JSON; errors are {"error": "..."}. */
void api_reply_json(struct evhttp_request *req, int code, json_t *body);
void api_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The one body reader: *text is the body as sent (for messages; freed by the
 * caller), *body its JSON (NULL when it is not JSON; an empty body is {} with
 * empty_is_object, else NULL).  -1 after answering 500. */
int api_read_body(struct evhttp_request *req, bool empty_is_object, json_t **body, char **text);
/* The one map from an errno-style status to an HTTP status: ENOENT 404,
 * EINVAL 400, EBUSY 409, EAGAIN 503 (try again), anything else 500. */
int api_status_of(int error_status);
/* ... and from an agent order's outcome: done 200, refused 502, timeout 504,
 * unreachable 503. */
int api_status_of_order(enum order_outcome outcome);

/* Route handlers (api.c's table). */
void api_handle_vm_stop(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_vm_kill(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_vm_start(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_vm_warm(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_host_warm(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_vm_flush(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_vm_reboot(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_host_containers(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_host_images_prune(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_services(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_service_failover(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_service_failback(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_service_reset(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_metrics(struct api *api, struct evhttp_request *req, const char *arg);
void api_metrics_free(struct api_metrics *am);

/* GET /v1/events/stream (api_sse.c): the journal as server-sent events. */
#define SSE_CLIENTS_MAX     16
#define SSE_BUFFER_MAX      (256 * 1024) /* bytes queued to one stream before it is dropped */
#define SSE_WRITE_TIMEOUT_S 30           /* a stream whose bytes do not move is dropped */
#define SSE_KEEPALIVE_MS    15000        /* a comment line, so idle proxies keep it open */
#define SSE_RETRY_MS        2000         /* the browser's delay before it reconnects */
#define SSE_PAGE            100          /* events read from the journal at once */
struct api_sse;
struct api_sse *api_sse_new(struct api *api);
void api_sse_free(struct api_sse *hub);
void api_sse_journal_appended(struct api_sse *hub);
void api_handle_events_stream(struct api *api, struct evhttp_request *req, const char *arg);

/* GET /ui, /ui/, /ui/NAME (api_ui.c): the dashboard's files. */
void api_handle_ui_redirect(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_ui_index(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_ui_file(struct api *api, struct evhttp_request *req, const char *name);

#endif
