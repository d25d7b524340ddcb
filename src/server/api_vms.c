/* The API's VM resources (docs/server.md): POST /v1/vms/NAME/{stop,kill,start},
 * warm restarts of a VM or a host, and the volume orders (flush, reboot). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/api_priv.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate.h"
#include "server/recovery.h"

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
    if (strcmp(r->verb, "stop") == 0)
        recovery_vm_stop_done(r->api->recovery, r->host, r->vm, outcome == ORDER_DONE);
    switch (outcome) {
    case ORDER_DONE: {
        cleanup_json json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "vm", r->vm, "host", r->host,
                                              "action", r->verb, "result", "done");
        api_reply_json(r->req, 200, body);
        break;
    }
    case ORDER_REFUSED:
        api_reply_error(r->req, api_status_of_order(outcome), "host `%s` could not %s VM `%s`: %s",
                        r->host, r->verb, r->vm, message);
        break;
    case ORDER_TIMEOUT:
    case ORDER_UNREACHABLE:
        api_reply_error(r->req, api_status_of_order(outcome), "%s", message);
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
        api_reply_error(req, 404, "no VM `%s` in the inventory", vm);
        return NULL;
    }
    if (host->state != INV_HOST_CONNECTED) {
        api_reply_error(req, 503, "host `%s` of VM `%s` is lost", host->name, vm);
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
        api_reply_error(req, 500, "out of memory");
        return;
    }
    r->api = api;
    r->req = req;
    r->verb = verb;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order(api->agents, host->name, action, vm, api->opts.order_timeout_ms,
                          on_order_done, r, &err) < 0) {
        api_reply_error(req, 503, "%s", vcr_error_msg(err));
        vm_request_free(r);
        return;
    }
    if (strcmp(verb, "stop") == 0)
        recovery_vm_stop_ordered(api->recovery, host->name, vm);
}

void api_handle_vm_stop(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_vm_order(api, req, vm, "stop", "vm_stop");
}

void api_handle_vm_kill(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_vm_order(api, req, vm, "kill", "vm_kill");
}

void api_handle_vm_start(struct api *api, struct evhttp_request *req, const char *vm)
{
    struct inv_host *host = NULL;
    cleanup_error vcr_error_t err = NULL;
    if (inventory_find_vm(api->inv, vm, &host) && host &&
        recovery_check_vm_start(api->recovery, host->name, vm, &err) < 0) {
        api_reply_error(req, 409, "%s", vcr_error_msg(err));
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
        api_reply_json(wr->req, 200, body);
    else
        api_reply_error(wr->req, 500, "out of memory");
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
    json_t *entry = json_pack(
        "{s:s, s:b, s:b, s:s?, s:o, s:o, s:o, s:o, s:o, s:o, s:s?}", "vm", vm, "ok", ok, "fallback",
        json_is_true(json_object_get(reply, "fallback")), "error", error, "launch_ms",
        num_or_null(reply, "launch_ms"), "pause_ms", num_or_null(reply, "pause_ms"), "suspend_ms",
        num_or_null(reply, "suspend_ms"), "resume_ms", num_or_null(reply, "resume_ms"),
        "downtime_ms", num_or_null(reply, "downtime_ms"), "state_bytes",
        num_or_null(reply, "state_bytes"), "qemu", qemu);
    /* The agent's step times (numbers only): how the restarts of a host overlapped. */
    json_t *at = json_object_get(reply, "at_ms");
    if (entry && json_is_object(at)) {
        json_t *copy = json_object();
        const char *key;
        json_t *v;
        json_object_foreach(at, key, v)
        {
            if (copy && json_is_number(v) && strlen(key) < 32)
                json_object_set(copy, key, v);
        }
        if (copy)
            json_object_set_new(entry, "at_ms", copy);
    }
    return entry;
}

static void on_warm_reply(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct warm_item *it = opaque;
    struct warm_request *wr = it->wr;
    json_t *entry = api_warm_entry(it->vm, outcome, message, reply);
    /* Journaled, so that GET /metrics counts warm restarts across restarts of the server. */
    journal_note(wr->api->journal, 0, wr->host, it->vm, JOURNAL_WARM_RESTART, entry);
    json_array_append_new(wr->vms, entry);
    free(it->vm);
    free(it);
    if (--wr->pending == 0)
        warm_request_done(wr);
}

/* `qemu` is checked (and kept) by api_warm_members itself. */
static int warm_member(const char *key, json_t *v, void *ctx, char *why, size_t size)
{
    (void)ctx;
    /* Test-only fault injection, refused by agents not run with --test-faults. */
    if (strcmp(key, "agent_exit_for_test") == 0 && json_is_string(v) &&
        inventory_valid_name(json_string_value(v)))
        return 1;
    if (strcmp(key, "qemu") != 0) {
        snprintf(why, size, "unknown member `%.40s`; allowed: qemu", key);
        return -1;
    }
    return 0;
}

/* The members of a vm_warm_restart order from its optional body {"qemu": PATH}
 * (and the test-only faults), rebuilt from checked values; 0, or -1 with why.
 * Fuzzed (tests/fuzz/fuzz_api.c). */
int api_warm_members(json_t *body, json_t **members, char *why, size_t size)
{
    *members = NULL;
    json_t *qemu = json_object_get(body, "qemu");
    if (!json_is_object(body) || (qemu && !json_is_string(qemu) && !json_is_null(qemu))) {
        snprintf(why, size, "expected {\"qemu\": PATH} (optional)");
        return -1;
    }
    cleanup_json json_t *out = api_checked_members(body, warm_member, NULL, why, size);
    if (out == NULL)
        return -1;
    if (json_is_string(qemu) &&
        (json_string_value(qemu)[0] != '/' || strlen(json_string_value(qemu)) > 4096 ||
         strlen(json_string_value(qemu)) != json_string_length(qemu))) {
        snprintf(why, size, "qemu `%.100s` must be an absolute path", json_string_value(qemu));
        return -1;
    }
    if (json_is_string(qemu))
        json_object_set(out, "qemu", qemu);
    *members = steal_pointer(&out);
    return 0;
}

/* The optional body; false (and a 400 sent) when it is bad. */
static bool warm_body(struct evhttp_request *req, json_t **members)
{
    cleanup_free char *text = NULL;
    cleanup_json json_t *body = NULL;
    if (api_read_body(req, true, &body, &text) < 0)
        return false;
    char why[200];
    if (api_warm_members(body, members, why, sizeof(why)) < 0) {
        api_reply_error(req, 400, "body: %s, got `%.100s`", why, text);
        return false;
    }
    return true;
}

static void start_warm(struct api *api, struct evhttp_request *req, struct inv_host *host,
                       const char *only_vm)
{
    cleanup_json json_t *members = NULL;
    if (!warm_body(req, &members))
        return;
    if (host->state != INV_HOST_CONNECTED) {
        api_reply_error(req, 503, "host `%s` is lost", host->name);
        return;
    }
    struct warm_request *wr = calloc(1, sizeof(*wr));
    if (wr == NULL || (wr->host = strdup(host->name)) == NULL || (wr->vms = json_array()) == NULL) {
        if (wr)
            free(wr->host);
        free(wr);
        api_reply_error(req, 500, "out of memory");
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

void api_handle_vm_warm(struct api *api, struct evhttp_request *req, const char *vm)
{
    struct inv_host *host = NULL;
    if (inventory_find_vm(api->inv, vm, &host) == NULL) {
        api_reply_error(req, 404, "no VM `%s` in the inventory", vm);
        return;
    }
    start_warm(api, req, host, vm);
}

void api_handle_host_warm(struct api *api, struct evhttp_request *req, const char *name)
{
    struct inv_host *host = inventory_find_host(api->inv, name);
    if (host == NULL) {
        api_reply_error(req, 404, "no host `%s` in the inventory", name);
        return;
    }
    start_warm(api, req, host, NULL);
}

/* --- POST /v1/vms/NAME/flush, POST /v1/vms/NAME/reboot (docs/warm-cache.md) --- */

#define API_REBOOT_ORDER_TIMEOUT_MS 270000

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
        api_reply_json(r->req, 200, body);
    } else {
        api_reply_error(r->req, api_status_of_order(outcome), "host `%s` could not %s VM `%s`: %s",
                        r->host, r->verb, r->vm, message);
    }
    free(r->vm);
    free(r->host);
    free(r);
}

/* body: {"volume": NAME} (flush) or {"cold": BOOL} (reboot), both optional. */
static void handle_volume_order(struct api *api, struct evhttp_request *req, const char *vm,
                                const char *verb, const char *action, const char *key)
{
    cleanup_free char *text = NULL;
    cleanup_json json_t *body = NULL;
    if (api_read_body(req, true, &body, &text) < 0)
        return;
    json_t *v = json_object_get(body, key);
    bool want_bool = strcmp(key, "cold") == 0;
    if (!json_is_object(body) || json_object_size(body) > (v ? 1u : 0u) ||
        (v && (want_bool ? !json_is_boolean(v) : !json_is_string(v)))) {
        api_reply_error(req, 400, "body: expected {\"%s\": %s} (optional), got `%.100s`", key,
                        want_bool ? "true|false" : "VOLUME", text);
        return;
    }
    /* The order is rebuilt from the checked member, not the body passed on. */
    if (v && !want_bool && !inventory_valid_name(json_string_value(v))) {
        api_reply_error(req, 400, "body: `volume`: `%.64s` is not a volume name",
                        json_string_value(v));
        return;
    }
    cleanup_json json_t *members = v ? json_pack("{s:O}", key, v) : json_object();
    struct inv_host *host = host_of_reachable_vm(api, req, vm);
    if (host == NULL)
        return;
    struct volume_request *r = members ? calloc(1, sizeof(*r)) : NULL;
    if (r == NULL || (r->vm = strdup(vm)) == NULL || (r->host = strdup(host->name)) == NULL) {
        if (r)
            free(r->vm);
        free(r);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    r->req = req;
    r->verb = verb;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(api->agents, host->name, action, vm, members,
                               want_bool ? API_REBOOT_ORDER_TIMEOUT_MS : api->opts.order_timeout_ms,
                               on_volume_reply, r, &err) < 0)
        on_volume_reply(ORDER_UNREACHABLE, vcr_error_msg(err), NULL, r);
}

void api_handle_vm_flush(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_volume_order(api, req, vm, "flush", "vm_flush", "volume");
}

void api_handle_vm_reboot(struct api *api, struct evhttp_request *req, const char *vm)
{
    handle_volume_order(api, req, vm, "reboot", "vm_reboot", "cold");
}
