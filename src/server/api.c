/* HTTP API on evhttp.  One route table; every answer is JSON, errors are
 * {"error": "..."} with a status code that says whose fault it is. */
#include "server/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/ha.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/listen_guard.h"
#include "proto/proto_tls.h"
#include "server/migrate.h"
#include "server/recovery.h"
#include "server/api_priv.h"

void api_reply_json(struct evhttp_request *req, int code, json_t *body)
{
    struct evbuffer *buf = evbuffer_new();
    cleanup_free char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (buf == NULL || text == NULL) {
        if (buf)
            evbuffer_free(buf);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(buf, text, strlen(text));
    evbuffer_add(buf, "\n", 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

void api_reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    cleanup_json json_t *body = json_pack("{s:s}", "error", message);
    api_reply_json(req, code, body);
}

int api_read_body(struct evhttp_request *req, bool empty_is_object, json_t **body, char **text)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    *body = NULL;
    *text = malloc(len + 1);
    if (*text == NULL) {
        api_reply_error(req, 500, "out of memory");
        return -1;
    }
    evbuffer_copyout(in, *text, len);
    (*text)[len] = '\0';
    json_error_t jerr;
    *body = len ? json_loadb(*text, len, 0, &jerr) : empty_is_object ? json_object() : NULL;
    return 0;
}

json_t *api_checked_members(json_t *body, api_member_check_fn check, void *ctx, char *why,
                            size_t size)
{
    cleanup_json json_t *out = json_object();
    if (out == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int keep = check(key, v, ctx, why, size);
        if (keep < 0)
            return NULL;
        if (keep > 0)
            json_object_set(out, key, v);
    }
    return steal_pointer(&out);
}

int api_status_of(int error_status)
{
    switch (error_status) {
    case ENOENT:
        return 404;
    case EINVAL:
        return 400;
    case EBUSY:
        return 409;
    case EAGAIN:
        return 503;
    default:
        return 500;
    }
}

int api_status_of_order(enum order_outcome outcome)
{
    switch (outcome) {
    case ORDER_DONE:
        return 200;
    case ORDER_REFUSED:
        return 502;
    case ORDER_TIMEOUT:
        return 504;
    case ORDER_UNREACHABLE:
    default:
        return 503;
    }
}

/* --- GET /v1/status --- */

static void handle_status(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    int64_t wall = vcr_wall_ms();
    cleanup_json json_t *status = inventory_status_json(api->inv, vcr_mono_ms(), wall);
    if (status == NULL || json_object_set_new(status, "now_ms", json_integer(wall)) < 0 ||
        json_object_set_new(status, "server_version", json_string(VCR_VERSION)) < 0 ||
        (api->ha && json_object_set_new(status, "ha", ha_status_json(api->ha)) < 0)) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    /* Migrations in flight: this leader's, and a predecessor's it ends (migrate_ha.c). */
    json_t *migrations = api->migrator ? migrator_status_json(api->migrator) : json_array();
    if (json_object_set_new(status, "migrations", migrations ? migrations : json_array()) < 0) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    /* A follower watches no host: what it knew as a leader is stale (docs/ha.md). */
    if (api->ha && !ha_is_leader(api->ha)) {
        json_object_set_new(status, "hosts", json_array());
        json_object_set_new(status, "migrations", json_array());
    }
    api_reply_json(req, 200, status);
}

/* --- GET /v1/events --- */

static void answer_events(struct api *api, struct evhttp_request *req, int64_t since, int limit)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *events = journal_read(api->journal, since, limit, &err);
    if (events == NULL) {
        log_error("GET /v1/events: %s", vcr_error_msg(err));
        api_reply_error(req, 500, "%s", vcr_error_msg(err));
        return;
    }
    size_t n = json_array_size(events);
    json_int_t last = n ? json_integer_value(json_object_get(json_array_get(events, n - 1), "id"))
                        : (since > 0 ? since : 0);
    cleanup_json json_t *body = json_pack("{s:O, s:I}", "events", events, "last_id", last);
    api_reply_json(req, 200, body);
}

static void wait_finish(struct events_wait *w)
{
    LIST_REMOVE(w, link);
    event_free(w->timer);
    answer_events(w->api, w->req, w->since, w->limit);
    free(w);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wait_finish(arg);
}

static void on_journal_append(int64_t id, void *opaque)
{
    struct api *api = opaque;
    struct events_wait *w = LIST_FIRST(&api->waits);
    while (w) {
        struct events_wait *next = LIST_NEXT(w, link);
        if (id > w->since)
            wait_finish(w);
        w = next;
    }
    api_sse_journal_appended(api->sse);
}

/* Parses a decimal query value in min..max; false (and why) otherwise. */
static bool query_int(const char *name, const char *value, int64_t min, int64_t max, int64_t *out,
                      char *why, size_t size)
{
    size_t n = strspn(value, "0123456789");
    if (n == 0 || value[n] != '\0' || n > 15 || strtoll(value, NULL, 10) < min ||
        strtoll(value, NULL, 10) > max) {
        snprintf(why, size, "query parameter `%s`: `%.32s` is not allowed; allowed: %lld..%lld",
                 name, value, (long long)min, (long long)max);
        return false;
    }
    *out = strtoll(value, NULL, 10);
    return true;
}

int api_events_query(const char *query, int64_t *since, int64_t *limit, int64_t *wait_ms, char *why,
                     size_t size)
{
    *since = -1;
    *limit = API_EVENTS_DEFAULT_LIMIT;
    *wait_ms = 0;
    struct evkeyvalq params;
    TAILQ_INIT(&params);
    if (query && evhttp_parse_query_str(query, &params) < 0) {
        snprintf(why, size, "cannot parse the query string");
        return -1;
    }
    bool ok = true;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &params, next)
    {
        if (!ok)
            break;
        if (strcmp(kv->key, "since") == 0)
            ok = query_int(kv->key, kv->value, 0, INT64_MAX / 2, since, why, size);
        else if (strcmp(kv->key, "limit") == 0)
            ok = query_int(kv->key, kv->value, 1, JOURNAL_READ_MAX, limit, why, size);
        else if (strcmp(kv->key, "wait_ms") == 0)
            ok = query_int(kv->key, kv->value, 0, API_EVENTS_WAIT_MAX_MS, wait_ms, why, size);
        else {
            snprintf(why, size, "unknown query parameter `%.40s`; allowed: since, limit, wait_ms",
                     kv->key);
            ok = false;
        }
    }
    evhttp_clear_headers(&params);
    return ok ? 0 : -1;
}

static void handle_events(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    int64_t since, limit, wait_ms;
    char why[200];
    if (api_events_query(query, &since, &limit, &wait_ms, why, sizeof(why)) < 0) {
        api_reply_error(req, 400, "%s", why);
        return;
    }
    if (wait_ms > 0 && since < 0) {
        api_reply_error(req, 400, "`wait_ms` needs `since`: wait for events after which one?");
        return;
    }
    if (wait_ms > 0) {
        cleanup_json json_t *peek = journal_read(api->journal, since, 1, NULL);
        if (peek && json_array_size(peek) == 0) {
            struct events_wait *w = calloc(1, sizeof(*w));
            if (w && (w->timer = evtimer_new(api->base, on_wait_timeout, w)) != NULL) {
                w->api = api;
                w->req = req;
                w->since = since;
                w->limit = (int)limit;
                struct timeval tv = {.tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000};
                evtimer_add(w->timer, &tv);
                LIST_INSERT_HEAD(&api->waits, w, link);
                return;
            }
            free(w);
        }
    }
    answer_events(api, req, since, (int)limit);
}

/* --- routing --- */

/* Who may call each route (docs/security.md): GET is read, POST operator;
 * the dashboard's files and its sign-in are open (the files hold no data). */
#define R API_ROLE_READ
#define O API_ROLE_OPERATOR
#define N API_ROLE_NONE
static const struct route {
    enum evhttp_cmd_type method;
    const char *pattern; /* a `*` segment matches one name, passed to handle */
    void (*handle)(struct api *api, struct evhttp_request *req, const char *arg);
    const char *noun; /* what the `*` names, for a 400 */
    enum api_role need;
} routes[] = {
    {EVHTTP_REQ_GET, "/v1/status", handle_status, NULL, R},
    {EVHTTP_REQ_GET, "/v1/events", handle_events, NULL, R},
    {EVHTTP_REQ_GET, "/v1/events/stream", api_handle_events_stream, NULL, R},
    {EVHTTP_REQ_POST, "/v1/vms/*/stop", api_handle_vm_stop, "VM", O},
    {EVHTTP_REQ_POST, "/v1/vms/*/kill", api_handle_vm_kill, "VM", O},
    {EVHTTP_REQ_POST, "/v1/vms/*/start", api_handle_vm_start, "VM", O},
    {EVHTTP_REQ_POST, "/v1/vms/*/warm-restart", api_handle_vm_warm, "VM", O},
    {EVHTTP_REQ_POST, "/v1/vms/*/flush", api_handle_vm_flush, "VM", O},
    {EVHTTP_REQ_POST, "/v1/vms/*/reboot", api_handle_vm_reboot, "VM", O},
    {EVHTTP_REQ_POST, "/v1/hosts/*/warm-restart", api_handle_host_warm, "host", O},
    {EVHTTP_REQ_POST, "/v1/hosts/*/containers", api_handle_host_containers, "host", O},
    {EVHTTP_REQ_POST, "/v1/hosts/*/images/prune", api_handle_host_images_prune, "host", O},
    {EVHTTP_REQ_GET, "/v1/services", api_handle_services, NULL, R},
    {EVHTTP_REQ_POST, "/v1/services/*/failover", api_handle_service_failover, "service", O},
    {EVHTTP_REQ_POST, "/v1/services/*/failback", api_handle_service_failback, "service", O},
    {EVHTTP_REQ_POST, "/v1/services/*/reset", api_handle_service_reset, "service", O},
    {EVHTTP_REQ_POST, "/v1/login", api_handle_login, NULL, N},
    {EVHTTP_REQ_POST, "/v1/logout", api_handle_logout, NULL, N},
    {EVHTTP_REQ_GET, "/v1/whoami", api_handle_whoami, NULL, N},
    {EVHTTP_REQ_GET, "/metrics", api_handle_metrics, NULL, R},
    {EVHTTP_REQ_GET, "/ui", api_handle_ui_redirect, NULL, N},
    {EVHTTP_REQ_GET, "/ui/", api_handle_ui_index, NULL, N},
    {EVHTTP_REQ_GET, "/ui/*", api_handle_ui_file, "dashboard file", N},
};
#undef R
#undef O
#undef N

/* Matches path against pattern segment by segment; the raw (still
 * percent-encoded) `*` segment is copied to arg. */
static bool route_match(const char *pattern, const char *path, char *arg, size_t arg_size)
{
    while (*pattern && *path) {
        if (*pattern == '*') {
            size_t n = strcspn(path, "/");
            if (n == 0 || n >= arg_size)
                return false;
            memcpy(arg, path, n);
            arg[n] = '\0';
            path += n;
            pattern++;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

static const char *method_name(enum evhttp_cmd_type m)
{
    return m == EVHTTP_REQ_GET ? "GET" : m == EVHTTP_REQ_POST ? "POST" : "other";
}

static void on_request(struct evhttp_request *req, void *opaque)
{
    struct api *api = opaque;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    char raw[256];
    api_conn_request(api, req);
    const char *allowed = NULL;
    const struct api_token *who = NULL;
    /* Nothing about the server, not even which paths exist, before the checks:
     * an unknown path needs a reader's credentials to be told it is unknown. */
    enum api_role need = API_ROLE_READ;
    for (size_t i = 0; path && i < sizeof(routes) / sizeof(routes[0]); i++)
        if (routes[i].method == method && route_match(routes[i].pattern, path, raw, sizeof(raw)))
            need = routes[i].need;
    if (!api_access_check(api, req, method, need, &who))
        return;
    for (size_t i = 0; path && i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!route_match(routes[i].pattern, path, raw, sizeof(raw)))
            continue;
        if (routes[i].method != method) {
            allowed = method_name(routes[i].method);
            continue;
        }
        cleanup_free char *arg = NULL;
        if (strchr(routes[i].pattern, '*')) {
            size_t len = 0;
            arg = evhttp_uridecode(raw, 0, &len);
            if (arg == NULL || strlen(arg) != len || !inventory_valid_name(arg)) {
                api_reply_error(req, 400,
                                "`%s` is not a %s name; allowed: 1..64 of letters, digits, '.', "
                                "'_', '-'",
                                arg && strlen(arg) == len ? arg : raw, routes[i].noun);
                return;
            }
        }
        log_debug("API %s %s%s%s", method_name(method), path, who ? " by " : "",
                  who ? who->name : "");
        api->who = who;
        if (method != EVHTTP_REQ_GET && api->ha && !ha_is_leader(api->ha) &&
            strcmp(path, "/v1/login") != 0 && strcmp(path, "/v1/logout") != 0) {
            /* A follower answers reads; actions are the leader's (docs/ha.md). */
            const struct ha_leader *l = ha_leader(api->ha);
            cleanup_json json_t *body = json_pack(
                "{s:s, s:s, s:s?, s:s?, s:I}", "error",
                "this server is not the leader: send actions to the leader", "code", "not_leader",
                "leader", l->api_addr, "leader_name", l->name, "term", (json_int_t)l->term);
            api_reply_json(req, 503, body);
            return;
        }
        routes[i].handle(api, req, arg);
        api->who = NULL;
        return;
    }
    if (allowed) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allowed);
        api_reply_error(req, 405, "`%s` takes %s only", path, allowed);
        return;
    }
    api_reply_error(req, 404, "no endpoint `%s`; see docs/server.md", path ? path : "");
}

void api_set_ha(struct api *api, struct ha *ha)
{
    api->ha = ha;
}

struct api *api_new(struct event_base *base, struct inventory *inv, struct journal *journal,
                    struct agents *agents, const struct api_options *opts, vcr_error_t *err)
{
    struct api *api = calloc(1, sizeof(*api));
    if (api == NULL || (api->http = evhttp_new(base)) == NULL) {
        free(api);
        vcr_error_make(err, ENOMEM, "HTTP API: out of memory");
        return NULL;
    }
    api->base = base;
    api->inv = inv;
    api->journal = journal;
    api->agents = agents;
    api->opts = *opts;
    LIST_INIT(&api->waits);
    /* Let every method reach the router, so that a wrong one gets a JSON 405. */
    evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(api->http, 64 * 1024);
    evhttp_set_max_headers_size(api->http, 16 * 1024);
    evhttp_set_timeout(api->http, (API_EVENTS_WAIT_MAX_MS + API_ORDER_TIMEOUT_MS) / 1000 + 30);
    evhttp_set_gencb(api->http, on_request, api);
    TAILQ_INIT(&api->conns);
    evhttp_set_bevcb(api->http, api_conn_new, api);
    api->sessions = api_sessions_new();
    api->rate = api_rate_new(opts->rate_per_s ? opts->rate_per_s : 50,
                             opts->rate_burst ? opts->rate_burst : 100);
    if (api->sessions == NULL || api->rate == NULL || (api->sse = api_sse_new(api)) == NULL) {
        api_sessions_free(api->sessions);
        api_rate_free(api->rate);
        evhttp_free(api->http);
        free(api);
        vcr_error_make(err, ENOMEM, "HTTP API: out of memory");
        return NULL;
    }
    journal_set_listener(journal, on_journal_append, api);
    return api;
}

int api_listen(struct api *api, const char *addr, uint16_t port, vcr_error_t *err)
{
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(api->http, addr, port);
    if (bound == NULL)
        return vcr_error_errno(err, "HTTP API: listen on %s:%u", addr, port);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &len) < 0)
        return vcr_error_errno(err, "HTTP API: listen on %s:%u", addr, port);
    api->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    api->guard =
        listen_guard_new(api->base, evhttp_bound_socket_get_listener(bound), "HTTP API", err);
    return api->guard ? 0 : -1;
}

uint16_t api_port(const struct api *api)
{
    return api->port;
}

void api_free(struct api *api)
{
    if (api)
        listen_guard_free(api->guard);
    if (api == NULL)
        return;
    journal_set_listener(api->journal, NULL, NULL);
    while (!LIST_EMPTY(&api->waits))
        wait_finish(LIST_FIRST(&api->waits));
    api_sse_free(api->sse);
    evhttp_free(api->http);
    api_conn_release_all(api);
    api_metrics_free(api->metrics);
    api_sessions_free(api->sessions);
    api_rate_free(api->rate);
    free(api);
}
