/* HTTP API on evhttp.  One route table; every answer is JSON, errors are
 * {"error": "..."} with a status code that says whose fault it is. */
#include "server/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/listen_guard.h"
#include "server/migrate.h"
#include "server/recovery.h"

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
    struct recovery *recovery; /* NULL: no recovery engine (GET /v1/services is empty) */
    struct migrator *migrator; /* NULL: no migrations */
};

static void reply_json(struct evhttp_request *req, int code, json_t *body)
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

static void reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_error(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    cleanup_json json_t *body = json_pack("{s:s}", "error", message);
    reply_json(req, code, body);
}

/* --- GET /v1/status --- */

static void handle_status(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    int64_t wall = vcr_wall_ms();
    cleanup_json json_t *status = inventory_status_json(api->inv, vcr_mono_ms(), wall);
    if (status == NULL || json_object_set_new(status, "now_ms", json_integer(wall)) < 0 ||
        json_object_set_new(status, "server_version", json_string(VCR_VERSION)) < 0) {
        reply_error(req, 500, "out of memory");
        return;
    }
    reply_json(req, 200, status);
}

/* --- GET /v1/events --- */

static void answer_events(struct api *api, struct evhttp_request *req, int64_t since, int limit)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *events = journal_read(api->journal, since, limit, &err);
    if (events == NULL) {
        log_error("GET /v1/events: %s", vcr_error_msg(err));
        reply_error(req, 500, "%s", vcr_error_msg(err));
        return;
    }
    size_t n = json_array_size(events);
    json_int_t last = n ? json_integer_value(json_object_get(json_array_get(events, n - 1), "id"))
                        : (since > 0 ? since : 0);
    cleanup_json json_t *body = json_pack("{s:O, s:I}", "events", events, "last_id", last);
    reply_json(req, 200, body);
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
}

/* Parses a decimal query value in min..max; false (and a 400 sent) otherwise. */
static bool query_int(struct evhttp_request *req, const char *name, const char *value, int64_t min,
                      int64_t max, int64_t *out)
{
    size_t n = strspn(value, "0123456789");
    if (n == 0 || value[n] != '\0' || n > 15 || strtoll(value, NULL, 10) < min ||
        strtoll(value, NULL, 10) > max) {
        reply_error(req, 400, "query parameter `%s`: `%s` is not allowed; allowed: %lld..%lld",
                    name, value, (long long)min, (long long)max);
        return false;
    }
    *out = strtoll(value, NULL, 10);
    return true;
}

static void handle_events(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params;
    TAILQ_INIT(&params);
    if (query && evhttp_parse_query_str(query, &params) < 0) {
        reply_error(req, 400, "cannot parse the query string");
        return;
    }
    int64_t since = -1, limit = API_EVENTS_DEFAULT_LIMIT, wait_ms = 0;
    bool ok = true;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &params, next)
    {
        if (!ok)
            break;
        if (strcmp(kv->key, "since") == 0)
            ok = query_int(req, kv->key, kv->value, 0, INT64_MAX / 2, &since);
        else if (strcmp(kv->key, "limit") == 0)
            ok = query_int(req, kv->key, kv->value, 1, JOURNAL_READ_MAX, &limit);
        else if (strcmp(kv->key, "wait_ms") == 0)
            ok = query_int(req, kv->key, kv->value, 0, API_EVENTS_WAIT_MAX_MS, &wait_ms);
        else {
            reply_error(req, 400, "unknown query parameter `%s`; allowed: since, limit, wait_ms",
                        kv->key);
            ok = false;
        }
    }
    evhttp_clear_headers(&params);
    if (!ok)
        return;
    if (wait_ms > 0 && since < 0) {
        reply_error(req, 400, "`wait_ms` needs `since`: wait for events after which one?");
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

/* --- POST /v1/vms/NAME/{stop,kill,start} --- */

static void vm_request_free(struct vm_request *r)
{
    free(r->vm);
    free(r->host);
    free(r);
}

static void on_order_done(enum order_outcome outcome, const char *message, void *opaque)
{
    struct vm_request *r = opaque;
    switch (outcome) {
    case ORDER_DONE: {
        cleanup_json json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "vm", r->vm, "host", r->host,
                                              "action", r->verb, "result", "done");
        reply_json(r->req, 200, body);
        break;
    }
    case ORDER_REFUSED:
        reply_error(r->req, 502, "host `%s` could not %s VM `%s`: %s", r->host, r->verb, r->vm,
                    message);
        break;
    case ORDER_TIMEOUT:
        reply_error(r->req, 504, "%s", message);
        break;
    case ORDER_UNREACHABLE:
        reply_error(r->req, 503, "%s", message);
        break;
    }
    vm_request_free(r);
}

/* The connected host that runs VM vm, or NULL after answering 404 (no such VM)
 * or 503 (its host is lost). */
static struct inv_host *host_of_reachable_vm(struct api *api, struct evhttp_request *req,
                                             const char *vm)
{
    struct inv_host *host = NULL;
    if (inventory_find_vm(api->inv, vm, &host) == NULL) {
        reply_error(req, 404, "no VM `%s` in the inventory", vm);
        return NULL;
    }
    if (host->state != INV_HOST_CONNECTED) {
        reply_error(req, 503, "host `%s` of VM `%s` is lost", host->name, vm);
        return NULL;
    }
    return host;
}

static void handle_vm_order(struct api *api, struct evhttp_request *req, const char *vm,
                            const char *verb, const char *action)
{
    struct inv_host *host = host_of_reachable_vm(api, req, vm);
    if (host == NULL)
        return;
    struct vm_request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->vm = strdup(vm)) == NULL || (r->host = strdup(host->name)) == NULL) {
        if (r)
            vm_request_free(r);
        reply_error(req, 500, "out of memory");
        return;
    }
    r->api = api;
    r->req = req;
    r->verb = verb;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order(api->agents, host->name, action, vm, api->opts.order_timeout_ms,
                          on_order_done, r, &err) < 0) {
        reply_error(req, 503, "%s", vcr_error_msg(err));
        vm_request_free(r);
    }
}

static void handle_vm_stop(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_vm_order(api, req, vm, "stop", "vm_stop");
}

static void handle_vm_kill(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_vm_order(api, req, vm, "kill", "vm_kill");
}

static void handle_vm_start(struct api *api, struct evhttp_request *req, const char *vm)
{
    struct inv_host *host = NULL;
    cleanup_error vcr_error_t err = NULL;
    if (inventory_find_vm(api->inv, vm, &host) && host &&
        recovery_check_vm_start(api->recovery, host->name, vm, &err) < 0) {
        reply_error(req, 409, "%s", vcr_error_msg(err));
        return;
    }
    handle_vm_order(api, req, vm, "start", "vm_start");
}

/* --- POST /v1/vms/NAME/warm-restart, POST /v1/hosts/NAME/warm-restart --- */

/* One HTTP request: one order per VM, answered once every order has ended. */
struct warm_request {
    struct api *api;
    struct evhttp_request *req;
    char *host;
    json_t *vms; /* result entries, in the order they finished */
    size_t pending;
};

struct warm_item {
    struct warm_request *wr;
    char *vm;
};

static void warm_request_done(struct warm_request *wr)
{
    cleanup_json json_t *body = json_pack("{s:s, s:O}", "host", wr->host, "vms", wr->vms);
    if (body)
        reply_json(wr->req, 200, body);
    else
        reply_error(wr->req, 500, "out of memory");
    json_decref(wr->vms);
    free(wr->host);
    free(wr);
}

static json_t *num_or_null(json_t *reply, const char *key)
{
    json_t *v = json_object_get(reply, key);
    return json_is_number(v) ? json_incref(v) : json_null();
}

/* docs/server.md: the entry of one VM, from the agent's reply or the failure to get one. */
json_t *api_warm_entry(const char *vm, enum order_outcome outcome, const char *message,
                       json_t *reply)
{
    bool ok = outcome == ORDER_DONE && json_is_true(json_object_get(reply, "ok"));
    const char *error = ok ? NULL : json_string_value(json_object_get(reply, "error"));
    if (!ok && error == NULL)
        error = message ? message : "failed";
    const char *qemu = json_string_value(json_object_get(reply, "qemu"));
    return json_pack("{s:s, s:b, s:b, s:s?, s:o, s:o, s:o, s:o, s:o, s:o, s:s?}", "vm", vm, "ok",
                     ok, "fallback", json_is_true(json_object_get(reply, "fallback")), "error",
                     error, "launch_ms", num_or_null(reply, "launch_ms"), "pause_ms",
                     num_or_null(reply, "pause_ms"), "suspend_ms", num_or_null(reply, "suspend_ms"),
                     "resume_ms", num_or_null(reply, "resume_ms"), "downtime_ms",
                     num_or_null(reply, "downtime_ms"), "state_bytes",
                     num_or_null(reply, "state_bytes"), "qemu", qemu);
}

static void on_warm_reply(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct warm_item *it = opaque;
    struct warm_request *wr = it->wr;
    json_array_append_new(wr->vms, api_warm_entry(it->vm, outcome, message, reply));
    free(it->vm);
    free(it);
    if (--wr->pending == 0)
        warm_request_done(wr);
}

/* The optional body {"qemu": PATH}; false (and a 400 sent) when it is bad. */
static bool warm_body(struct evhttp_request *req, json_t **members)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    *members = json_object();
    if (len == 0)
        return true;
    cleanup_free char *text = malloc(len + 1);
    if (text == NULL) {
        reply_error(req, 500, "out of memory");
        return false;
    }
    evbuffer_copyout(in, text, len);
    text[len] = '\0';
    json_error_t jerr;
    cleanup_json json_t *body = json_loadb(text, len, 0, &jerr);
    json_t *qemu = json_object_get(body, "qemu");
    if (!json_is_object(body) || (qemu && !json_is_string(qemu) && !json_is_null(qemu))) {
        reply_error(req, 400, "body: expected {\"qemu\": PATH} (optional), got `%.100s`", text);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        /* Test-only fault injection, refused by agents not run with --test-faults. */
        if ((strcmp(key, "corrupt_state_for_test") == 0 && json_is_boolean(v)) ||
            (strcmp(key, "agent_exit_for_test") == 0 && json_is_string(v))) {
            json_object_set(*members, key, v);
            continue;
        }
        if (strcmp(key, "qemu") != 0) {
            reply_error(req, 400, "body: unknown member `%s`; allowed: qemu", key);
            return false;
        }
    }
    if (json_is_string(qemu) && json_string_value(qemu)[0] != '/') {
        reply_error(req, 400, "body: qemu `%s` must be an absolute path", json_string_value(qemu));
        return false;
    }
    if (json_is_string(qemu))
        json_object_set(*members, "qemu", qemu);
    return true;
}

static void start_warm(struct api *api, struct evhttp_request *req, struct inv_host *host,
                       const char *only_vm)
{
    cleanup_json json_t *members = NULL;
    if (!warm_body(req, &members))
        return;
    if (host->state != INV_HOST_CONNECTED) {
        reply_error(req, 503, "host `%s` is lost", host->name);
        return;
    }
    struct warm_request *wr = calloc(1, sizeof(*wr));
    if (wr == NULL || (wr->host = strdup(host->name)) == NULL || (wr->vms = json_array()) == NULL) {
        if (wr)
            free(wr->host);
        free(wr);
        reply_error(req, 500, "out of memory");
        return;
    }
    wr->api = api;
    wr->req = req;
    wr->pending = 1; /* held until every order is sent */
    for (size_t i = 0; i < host->n_vms; i++) {
        const char *vm = host->vms[i]->name;
        if (only_vm && strcmp(vm, only_vm) != 0)
            continue;
        struct warm_item *it = calloc(1, sizeof(*it));
        if (it == NULL || (it->vm = strdup(vm)) == NULL) {
            free(it);
            json_array_append_new(wr->vms,
                                  api_warm_entry(vm, ORDER_REFUSED, "out of memory", NULL));
            continue;
        }
        it->wr = wr;
        wr->pending++;
        cleanup_error vcr_error_t err = NULL;
        if (agents_send_order_with(api->agents, host->name, "vm_warm_restart", vm, members,
                                   API_WARM_ORDER_TIMEOUT_MS, on_warm_reply, it, &err) < 0)
            on_warm_reply(ORDER_UNREACHABLE, vcr_error_msg(err), NULL, it);
    }
    if (--wr->pending == 0)
        warm_request_done(wr);
}

static void handle_vm_warm(struct api *api, struct evhttp_request *req, const char *vm)
{
    struct inv_host *host = NULL;
    if (inventory_find_vm(api->inv, vm, &host) == NULL) {
        reply_error(req, 404, "no VM `%s` in the inventory", vm);
        return;
    }
    start_warm(api, req, host, vm);
}

static void handle_host_warm(struct api *api, struct evhttp_request *req, const char *name)
{
    struct inv_host *host = inventory_find_host(api->inv, name);
    if (host == NULL) {
        reply_error(req, 404, "no host `%s` in the inventory", name);
        return;
    }
    start_warm(api, req, host, NULL);
}

/* --- POST /v1/hosts/NAME/containers (standby hosts; docs/server.md) --- */

struct ct_request {
    struct evhttp_request *req;
    char host[72];
    char name[72];
    char action[24];
};

static void on_ct_reply(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    struct ct_request *r = opaque;
    if (outcome == ORDER_DONE) {
        cleanup_json json_t *body =
            json_pack("{s:s, s:s, s:s, s:s, s:O?, s:O?}", "host", r->host, "name", r->name,
                      "action", r->action, "result", "done", "ms", json_object_get(reply, "ms"),
                      "container", json_object_get(reply, "container"));
        reply_json(r->req, 200, body);
    } else {
        int code = outcome == ORDER_REFUSED ? 502 : 503;
        if (outcome == ORDER_TIMEOUT)
            code = 504;
        reply_error(r->req, code, "host `%s`: %s of container `%s`: %s", r->host, r->action,
                    r->name, message);
    }
    free(r);
}

static void on_migrated(json_t *result, void *opaque)
{
    reply_json(opaque, 200, result);
}

/* {"action": "migrate", "name": C, "to": HOST}: answered when it has ended. */
static void migrate_container(struct api *api, struct evhttp_request *req, const char *host,
                              json_t *body)
{
    json_t *to = json_object_get(body, "to");
    if (!json_is_string(to) || !inventory_valid_name(json_string_value(to))) {
        reply_error(req, 400, "body: `to`: expected the name of the standby host to move to");
        return;
    }
    if (api->migrator == NULL) {
        reply_error(req, 503, "no migrations on this server");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    json_t *precopy = json_object_get(body, "precopy");
    if (precopy && !json_is_boolean(precopy)) {
        reply_error(req, 400, "body: `precopy`: expected true (default) or false");
        return;
    }
    if (migrator_start(api->migrator, host, json_string_value(json_object_get(body, "name")),
                       json_string_value(to), "order", !json_is_false(precopy), on_migrated, req,
                       &err) < 0) {
        int e = vcr_error_status(err);
        reply_error(req,
                    e == ENOENT   ? 404
                    : e == EINVAL ? 400
                    : e == EAGAIN ? 503
                                  : 409,
                    "%s", vcr_error_msg(err));
    }
}

static void handle_host_containers(struct api *api, struct evhttp_request *req, const char *host)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    cleanup_free char *text = malloc(len + 1);
    if (text == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_copyout(in, text, len);
    text[len] = '\0';
    json_error_t jerr;
    cleanup_json json_t *body = json_loadb(text, len, 0, &jerr);
    json_t *name = json_object_get(body, "name");
    json_t *action = json_object_get(body, "action");
    const char *act = json_is_string(action) ? json_string_value(action) : "create";
    static const char *const acts[] = {"create", "start", "stop", "destroy", "migrate"};
    size_t k = 0;
    while (k < 5 && strcmp(act, acts[k]) != 0)
        k++;
    if (!json_is_object(body) || !json_is_string(name) ||
        !inventory_valid_name(json_string_value(name)) || k == 5) {
        reply_error(req, 400,
                    "body: expected {\"name\": NAME, \"action\": create|start|stop|destroy|"
                    "migrate, \"service\", \"address\", \"gateway\", \"template\", \"to\"}, "
                    "got `%.100s`",
                    text);
        return;
    }
    if (k == 4) {
        migrate_container(api, req, host, body);
        return;
    }
    struct inv_host *h = inventory_find_host(api->inv, host);
    if (h == NULL || h->role == NULL || strcmp(h->role, "standby") != 0) {
        reply_error(req, 404, "no standby host `%s` in the inventory", host);
        return;
    }
    if (h->state != INV_HOST_CONNECTED) {
        reply_error(req, 503, "host `%s` is lost", host);
        return;
    }
    struct ct_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    r->req = req;
    snprintf(r->host, sizeof(r->host), "%s", host);
    snprintf(r->name, sizeof(r->name), "%s", json_string_value(name));
    snprintf(r->action, sizeof(r->action), "%s", act);
    char order[32];
    snprintf(order, sizeof(order), "container_%s", act);
    /* create means create and start unless the body says "start": false. */
    cleanup_json json_t *members = json_deep_copy(body);
    json_object_del(members, "action");
    if (k == 0 && json_object_get(members, "start") == NULL)
        json_object_set_new(members, "start", json_true());
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(api->agents, host, order, r->name, members,
                               api->opts.order_timeout_ms, on_ct_reply, r, &err) < 0) {
        reply_error(req, 503, "%s", vcr_error_msg(err));
        free(r);
    }
}

/* --- POST /v1/vms/NAME/flush, POST /v1/vms/NAME/reboot (docs/warm-cache.md) --- */

#define API_REBOOT_ORDER_TIMEOUT_MS 150000

struct volume_request {
    struct evhttp_request *req;
    char *vm;
    char *host;
    const char *verb;
};

static void on_volume_reply(enum order_outcome outcome, const char *message, json_t *reply,
                            void *opaque)
{
    struct volume_request *r = opaque;
    if (outcome == ORDER_DONE) {
        cleanup_json json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "vm", r->vm, "host", r->host,
                                              "action", r->verb, "result", "done");
        static const char *const keys[] = {"cold", "reset_ms", "ready_ms", "elapsed_ms", "bytes"};
        for (size_t i = 0; body && i < sizeof(keys) / sizeof(keys[0]); i++)
            if (json_object_get(reply, keys[i]))
                json_object_set(body, keys[i], json_object_get(reply, keys[i]));
        reply_json(r->req, 200, body);
    } else {
        int code = outcome == ORDER_REFUSED ? 502 : 503;
        reply_error(r->req, outcome == ORDER_TIMEOUT ? 504 : code,
                    "host `%s` could not %s VM `%s`: %s", r->host, r->verb, r->vm, message);
    }
    free(r->vm);
    free(r->host);
    free(r);
}

/* body: {"volume": NAME} (flush) or {"cold": BOOL} (reboot), both optional. */
static void handle_volume_order(struct api *api, struct evhttp_request *req, const char *vm,
                                const char *verb, const char *action, const char *key)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    cleanup_free char *text = malloc(len + 1);
    if (text == NULL) {
        reply_error(req, 500, "out of memory");
        return;
    }
    evbuffer_copyout(in, text, len);
    text[len] = '\0';
    json_error_t jerr;
    cleanup_json json_t *body = len ? json_loadb(text, len, 0, &jerr) : json_object();
    json_t *v = json_object_get(body, key);
    bool want_bool = strcmp(key, "cold") == 0;
    if (!json_is_object(body) || json_object_size(body) > (v ? 1u : 0u) ||
        (v && (want_bool ? !json_is_boolean(v) : !json_is_string(v)))) {
        reply_error(req, 400, "body: expected {\"%s\": %s} (optional), got `%.100s`", key,
                    want_bool ? "true|false" : "VOLUME", text);
        return;
    }
    struct inv_host *host = host_of_reachable_vm(api, req, vm);
    if (host == NULL)
        return;
    struct volume_request *r = calloc(1, sizeof(*r));
    if (r == NULL || (r->vm = strdup(vm)) == NULL || (r->host = strdup(host->name)) == NULL) {
        if (r)
            free(r->vm);
        free(r);
        reply_error(req, 500, "out of memory");
        return;
    }
    r->req = req;
    r->verb = verb;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(api->agents, host->name, action, vm, body,
                               want_bool ? API_REBOOT_ORDER_TIMEOUT_MS : api->opts.order_timeout_ms,
                               on_volume_reply, r, &err) < 0)
        on_volume_reply(ORDER_UNREACHABLE, vcr_error_msg(err), NULL, r);
}

static void handle_vm_flush(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_volume_order(api, req, vm, "flush", "vm_flush", "volume");
}

static void handle_vm_reboot(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_volume_order(api, req, vm, "reboot", "vm_reboot", "cold");
}

/* --- GET /v1/services, POST /v1/services/NAME/{failover,failback} (recovery.c) --- */

static void handle_services(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    cleanup_json json_t *body = recovery_services_json(api->recovery);
    if (body == NULL || json_object_set_new(body, "now_ms", json_integer(vcr_wall_ms())) < 0) {
        reply_error(req, 500, "out of memory");
        return;
    }
    reply_json(req, 200, body);
}

static void answer_service_order(struct evhttp_request *req, json_t *body, vcr_error_t *err)
{
    if (body == NULL) {
        int status = vcr_error_status(*err);
        int code = status == ENOENT ? 404 : 500;
        if (status == EBUSY)
            code = 409;
        reply_error(req, code, "%s", vcr_error_msg(*err));
        return;
    }
    reply_json(req, 202, body);
}

static void handle_service_failover(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_failover(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

static void handle_service_failback(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_failback(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

static void handle_service_reset(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_reset(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

void api_set_recovery(struct api *api, struct recovery *rc)
{
    api->recovery = rc;
}

void api_set_migrator(struct api *api, struct migrator *m)
{
    api->migrator = m;
}

/* --- routing --- */

static const struct route {
    enum evhttp_cmd_type method;
    const char *pattern; /* a `*` segment matches one name, passed to handle */
    void (*handle)(struct api *api, struct evhttp_request *req, const char *arg);
} routes[] = {
    {EVHTTP_REQ_GET, "/v1/status", handle_status},
    {EVHTTP_REQ_GET, "/v1/events", handle_events},
    {EVHTTP_REQ_POST, "/v1/vms/*/stop", handle_vm_stop},
    {EVHTTP_REQ_POST, "/v1/vms/*/kill", handle_vm_kill},
    {EVHTTP_REQ_POST, "/v1/vms/*/start", handle_vm_start},
    {EVHTTP_REQ_POST, "/v1/vms/*/warm-restart", handle_vm_warm},
    {EVHTTP_REQ_POST, "/v1/vms/*/flush", handle_vm_flush},
    {EVHTTP_REQ_POST, "/v1/vms/*/reboot", handle_vm_reboot},
    {EVHTTP_REQ_POST, "/v1/hosts/*/warm-restart", handle_host_warm},
    {EVHTTP_REQ_POST, "/v1/hosts/*/containers", handle_host_containers},
    {EVHTTP_REQ_GET, "/v1/services", handle_services},
    {EVHTTP_REQ_POST, "/v1/services/*/failover", handle_service_failover},
    {EVHTTP_REQ_POST, "/v1/services/*/failback", handle_service_failback},
    {EVHTTP_REQ_POST, "/v1/services/*/reset", handle_service_reset},
};

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
    const char *allowed = NULL;
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
                reply_error(req, 400,
                            "`%s` is not a %s name; allowed: 1..64 of letters, digits, '.', "
                            "'_', '-'",
                            arg && strlen(arg) == len ? arg : raw,
                            strncmp(routes[i].pattern, "/v1/hosts/", 10) == 0      ? "host"
                            : strncmp(routes[i].pattern, "/v1/services/", 13) == 0 ? "service"
                                                                                   : "VM");
                return;
            }
        }
        log_debug("API %s %s", method_name(method), path);
        routes[i].handle(api, req, arg);
        return;
    }
    if (allowed) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allowed);
        reply_error(req, 405, "`%s` takes %s only", path, allowed);
        return;
    }
    reply_error(req, 404, "no endpoint `%s`; see docs/server.md", path ? path : "");
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
    journal_set_listener(journal, on_journal_append, api);
    return api;
}

int api_listen(struct api *api, const char *addr, uint16_t port, vcr_error_t *err)
{
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(api->http, addr, port);
    if (bound == NULL)
        return vcr_error_errno(err, "HTTP API: listen on %s:%u", addr, port);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len) < 0)
        return vcr_error_errno(err, "HTTP API: listen on %s:%u", addr, port);
    api->port = ntohs(sin.sin_port);
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
    evhttp_free(api->http);
    free(api);
}
