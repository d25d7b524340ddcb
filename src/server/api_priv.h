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

#endif
