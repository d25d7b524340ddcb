/* The API's container resources on standby hosts (docs/server.md):
 * POST /v1/hosts/NAME/containers, including live migration. */
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
#include "server/migrate.h"
#include "server/recovery.h"

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
        api_reply_json(r->req, 200, body);
    } else {
        api_reply_error(r->req, api_status_of_order(outcome), "host `%s`: %s of container `%s`: %s",
                        r->host, r->action, r->name, message);
    }
    free(r);
}

static void on_migrated(json_t *result, void *opaque)
{
    api_reply_json(opaque, 200, result);
}

/* {"action": "migrate", "name": C, "to": HOST}: answered when it has ended. */
static void migrate_container(struct api *api, struct evhttp_request *req, const char *host,
                              json_t *body)
{
    json_t *to = json_object_get(body, "to");
    if (!json_is_string(to) || !inventory_valid_name(json_string_value(to))) {
        api_reply_error(req, 400, "body: `to`: expected the name of the standby host to move to");
        return;
    }
    if (api->migrator == NULL) {
        api_reply_error(req, 503, "no migrations on this server");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    json_t *precopy = json_object_get(body, "precopy");
    if (precopy && !json_is_boolean(precopy)) {
        api_reply_error(req, 400, "body: `precopy`: expected true (default) or false");
        return;
    }
    if (migrator_start(api->migrator, host, json_string_value(json_object_get(body, "name")),
                       json_string_value(to), "order", !json_is_false(precopy), on_migrated, req,
                       &err) < 0) {
        int e = vcr_error_status(err);
        /* EBUSY (being migrated) and EEXIST are conflicts; the rest as the map says. */
        api_reply_error(req, e == EEXIST ? 409 : api_status_of(e), "%s", vcr_error_msg(err));
    }
}

void api_handle_host_containers(struct api *api, struct evhttp_request *req, const char *host)
{
    cleanup_free char *text = NULL;
    cleanup_json json_t *body = NULL;
    if (api_read_body(req, false, &body, &text) < 0)
        return;
    json_t *name = json_object_get(body, "name");
    json_t *action = json_object_get(body, "action");
    const char *act = json_is_string(action) ? json_string_value(action) : "create";
    static const char *const acts[] = {"create", "start", "stop", "destroy", "migrate"};
    size_t k = 0;
    while (k < 5 && strcmp(act, acts[k]) != 0)
        k++;
    if (!json_is_object(body) || !json_is_string(name) ||
        !inventory_valid_name(json_string_value(name)) || k == 5) {
        api_reply_error(req, 400,
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
        api_reply_error(req, 404, "no standby host `%s` in the inventory", host);
        return;
    }
    if (h->state != INV_HOST_CONNECTED) {
        api_reply_error(req, 503, "host `%s` is lost", host);
        return;
    }
    struct ct_request *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        api_reply_error(req, 500, "out of memory");
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
        api_reply_error(req, 503, "%s", vcr_error_msg(err));
        free(r);
    }
}
