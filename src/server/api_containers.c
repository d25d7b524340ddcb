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
#include "config/server_config.h"

void api_set_config(struct api *api, const struct server_config *cfg)
{
    api->cfg = cfg;
}

/* "image": NAME of a create, replaced by the order's {name, sha256, url, cmd?}
 * from the `images:` store; 0, or -1 after answering. */
static int resolve_image(struct api *api, struct evhttp_request *req, json_t *members)
{
    json_t *image = json_object_get(members, "image");
    if (image == NULL)
        return 0;
    if (!json_is_string(image)) {
        api_reply_error(req, 400,
                        "body: `image`: expected the name of an image of the "
                        "server's `images:`");
        return -1;
    }
    if (json_object_get(members, "template")) {
        api_reply_error(req, 400, "body: `template` and `image` given; allowed: one of them");
        return -1;
    }
    const char *name = json_string_value(image);
    const struct image_config *img =
        api->cfg ? images_find(api->cfg->images, api->cfg->n_images, name) : NULL;
    if (img == NULL) {
        char known[512] = "";
        size_t used = 0;
        for (size_t i = 0; api->cfg && i < api->cfg->n_images && used < sizeof(known); i++)
            used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
                                     api->cfg->images[i].name);
        api_reply_error(req, 404, "no image `%.80s` in the server's `images:`; known: %s", name,
                        known[0] ? known : "none");
        return -1;
    }
    json_t *order_image = server_config_image_json(api->cfg, img);
    if (order_image == NULL) {
        api_reply_error(req, 500, "image `%s`: no URL for it (out of memory)", name);
        return -1;
    }
    json_object_set_new(members, "image", order_image);
    return 0;
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
                        "migrate, \"service\", \"address\", \"gateway\", \"template\", "
                        "\"image\", \"to\"}, "
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
    if (k != 0 && json_object_get(members, "image")) {
        api_reply_error(req, 400, "body: `image` is only for create");
        free(r);
        return;
    }
    bool with_image = json_object_get(members, "image") != NULL;
    if (resolve_image(api, req, members) < 0) {
        free(r);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    /* An image may be downloaded, checked and unpacked first: as long as a
     * provisioning order may take. */
    if (agents_send_order_with(api->agents, host, order, r->name, members,
                               with_image ? RECOVERY_CONTAINER_ORDER_MS
                                          : api->opts.order_timeout_ms,
                               on_ct_reply, r, &err) < 0) {
        api_reply_error(req, 503, "%s", vcr_error_msg(err));
        free(r);
    }
}

/* --- POST /v1/hosts/NAME/images/prune (docs/server.md, "Container images") --- */

struct prune_request {
    struct evhttp_request *req;
    char host[72];
};

static void on_prune_reply(enum order_outcome outcome, const char *message, json_t *reply,
                           void *opaque)
{
    struct prune_request *r = opaque;
    if (outcome == ORDER_DONE) {
        cleanup_json json_t *body =
            json_pack("{s:s, s:O?, s:O?, s:O?, s:O?}", "host", r->host, "removed",
                      json_object_get(reply, "removed"), "kept", json_object_get(reply, "kept"),
                      "freed_bytes", json_object_get(reply, "freed_bytes"), "ms",
                      json_object_get(reply, "ms"));
        api_reply_json(r->req, 200, body);
    } else {
        api_reply_error(r->req, api_status_of_order(outcome), "host `%s`: image prune: %s", r->host,
                        message);
    }
    free(r);
}

void api_handle_host_images_prune(struct api *api, struct evhttp_request *req, const char *host)
{
    struct inv_host *h = inventory_find_host(api->inv, host);
    if (h == NULL || h->role == NULL || strcmp(h->role, "standby") != 0) {
        api_reply_error(req, 404, "no standby host `%s` in the inventory", host);
        return;
    }
    if (h->state != INV_HOST_CONNECTED) {
        api_reply_error(req, 503, "host `%s` is lost", host);
        return;
    }
    /* Kept whatever the standby holds: every image a configured service names
     * (its container may be made there at any time, on a fallback standby
     * too); the agent adds the images of its own containers. */
    cleanup_json json_t *keep = json_array();
    for (size_t i = 0; api->cfg && keep && i < api->cfg->n_services; i++) {
        const struct image_config *img =
            server_config_service_image(api->cfg, &api->cfg->services[i]);
        if (img)
            json_array_append_new(keep,
                                  json_pack("{s:s, s:s, s:s}", "sha256", img->sha256, "name",
                                            img->name, "service", api->cfg->services[i].name));
    }
    cleanup_json json_t *members = keep ? json_pack("{s:O}", "keep", keep) : NULL;
    struct prune_request *r = members ? calloc(1, sizeof(*r)) : NULL;
    if (r == NULL) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    r->req = req;
    snprintf(r->host, sizeof(r->host), "%s", host);
    cleanup_error vcr_error_t err = NULL;
    /* Removing an unpacked rootfs is thousands of unlinks in a TCG guest.
     * Every order names a `vm`; this one names the cache. */
    if (agents_send_order_with(api->agents, host, "image_prune", "image-cache", members,
                               RECOVERY_CONTAINER_ORDER_MS, on_prune_reply, r, &err) < 0) {
        api_reply_error(req, 503, "%s", vcr_error_msg(err));
        free(r);
    }
}
