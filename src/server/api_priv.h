/* Inside the HTTP API: the core (api.c: routing, status, events) and one
 * file per resource (api_vms.c, api_containers.c, api_services.c). */
#ifndef VCR_SERVER_API_PRIV_H
#define VCR_SERVER_API_PRIV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "common/log.h"
#include "server/agents.h"
#include "server/api.h"
#include "server/api_auth.h"

struct evhttp;
struct evhttp_request;
#include <event2/http.h>

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
    /* Access (api_access.c): signed-in browsers, rate buckets, the token of the
     * request being dispatched (NULL: none, or an unauthenticated API). */
    struct api_sessions *sessions;
    struct api_rate *rate;
    struct vcr_log_limit refusals_log;
    const struct api_token *who;
    /* Its connections (api_conn.c). */
    TAILQ_HEAD(, api_conn) conns;
    size_t n_conns;
    size_t n_closing; /* of them, picked to make room and about to close */
    unsigned long long conns_turned_away;
    struct vcr_log_limit conns_log;
    struct ha *ha; /* NULL: the embedded single server */
};

/* The connections (api_conn.c, docs/server.md "Limits"): the bufferevent
 * callback of evhttp; api_conn_request when a request is dispatched (its
 * deadline stops until it is answered).  A request must be in within
 * API_REQUEST_DEADLINE_MS of the accept or of the previous answer. */
#define API_REQUEST_DEADLINE_MS 10000
struct api_conn;
struct bufferevent *api_conn_new(struct event_base *base, void *arg);
void api_conn_request(struct api *api, struct evhttp_request *req);
void api_conn_release_all(struct api *api);
bool api_conn_is_tls(struct evhttp_request *req);
/* The connection's close callback is the guard's: others register theirs here. */
int api_conn_set_closecb(struct api *api, struct evhttp_connection *evcon,
                         void (*cb)(struct evhttp_connection *, void *), void *arg);

/* Every answer is JSON; errors are {"error": "..."}. */
void api_reply_json(struct evhttp_request *req, int code, json_t *body);
void api_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The one body reader: *text is the body as sent (for messages; freed by the
 * caller), *body its JSON (NULL when it is not JSON; an empty body is {} with
 * empty_is_object, else NULL).  -1 after answering 500. */
int api_read_body(struct evhttp_request *req, bool empty_is_object, json_t **body, char **text);
/* One member of a body, checked: 1 keep it, 0 leave it out (the caller takes
 * it up itself), -1 refuse the body (why filled). */
typedef int (*api_member_check_fn)(const char *key, json_t *value, void *ctx, char *why,
                                   size_t size);
/* A new object of the members of `body` (an object) that `check` keeps, so
 * that an order is rebuilt from checked values only; NULL with why when
 * `check` refuses one. */
json_t *api_checked_members(json_t *body, api_member_check_fn check, void *ctx, char *why,
                            size_t size);
/* The one map from an errno-style status to an HTTP status: ENOENT 404,
 * EINVAL 400, EBUSY 409, EAGAIN 503 (try again), anything else 500. */
int api_status_of(int error_status);
/* ... and from an agent order's outcome: done 200, refused 502, timeout 504,
 * unreachable 503. */
int api_status_of_order(enum order_outcome outcome);

/* The checks before a handler (api_access.c): true when the request may go
 * on (*who: its token, NULL on an unauthenticated API), false after
 * answering 421 (Host), 429 (rate), 401, 403 (role, Origin) or 415. */
bool api_access_check(struct api *api, struct evhttp_request *req, enum evhttp_cmd_type method,
                      enum api_role need, const struct api_token **who);
void api_handle_login(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_logout(struct api *api, struct evhttp_request *req, const char *arg);
void api_handle_whoami(struct api *api, struct evhttp_request *req, const char *arg);

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

/* The members of a container order from a POST .../containers body, rebuilt
 * from checked values (api_containers.c): the action's index (0 create, 1
 * start, 2 stop, 3 destroy, 4 migrate), or -1 with why.  Fuzzed
 * (tests/fuzz/fuzz_api.c). */
int api_container_members(json_t *body, json_t **members, char *why, size_t size);
/* The same for a warm restart's body {"qemu"} (api_vms.c): 0, or -1 with why. */
int api_warm_members(json_t *body, json_t **members, char *why, size_t size);
/* GET /v1/events's query (api.c): since (-1 when absent), limit, wait_ms;
 * 0, or -1 with why (unknown parameter, a value out of range). */
int api_events_query(const char *query, int64_t *since, int64_t *limit, int64_t *wait_ms, char *why,
                     size_t size);

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
