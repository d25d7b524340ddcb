/* The API's container resources on standby hosts (docs/server.md):
 * POST /v1/hosts/NAME/containers, including live migration. */
#include <arpa/inet.h>
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
    const char *copy = json_string_value(json_object_get(body, "copy"));
    if (json_object_get(body, "copy") &&
        (copy == NULL || (strcmp(copy, "stream") != 0 && strcmp(copy, "server") != 0))) {
        api_reply_error(req, 400, "body: `copy`: expected `stream` (default) or `server`");
        return;
    }
    struct migrate_options o = {.precopy = !json_is_false(precopy),
                                .copy_server = copy && strcmp(copy, "server") == 0};
    if (migrator_start_with(api->migrator, host, json_string_value(json_object_get(body, "name")),
                            json_string_value(to), "order", &o, on_migrated, req, &err) < 0) {
        int e = vcr_error_status(err);
        /* EBUSY (being migrated) and EEXIST are conflicts; the rest as the map says. */
        api_reply_error(req, e == EEXIST ? 409 : api_status_of(e), "%s", vcr_error_msg(err));
    }
}

static bool ipv4_literal(const char *s)
{
    struct in_addr a;
    return s && inet_pton(AF_INET, s, &a) == 1;
}

/* "A.B.C.D" or "A.B.C.D/NN" (NN 1..32). */
static bool ipv4_with_prefix(const char *s)
{
    char buf[32];
    size_t n = s ? strcspn(s, "/") : 0;
    if (s == NULL || n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!ipv4_literal(buf))
        return false;
    if (s[n] == '\0')
        return true;
    const char *p = s + n + 1;
    size_t d = strspn(p, "0123456789");
    return d >= 1 && d <= 2 && p[d] == '\0' && atoi(p) >= 1 && atoi(p) <= 32;
}

static const char *const ct_actions[] = {"create", "start", "stop", "destroy", "migrate"};
#define CT_ACTIONS (sizeof(ct_actions) / sizeof(ct_actions[0]))

/* The action a body names (its index in ct_actions, and as given). */
struct ct_body_action {
    size_t k;
    const char *act;
};

/* One member of a container body; `action` is left out (it picks the order). */
static int container_member(const char *key, json_t *v, void *ctx, char *why, size_t size)
{
    const struct ct_body_action *c = ctx;
    bool ok;
    const char *allowed = "a name: 1..64 of letters, digits, '.', '_', '-'";
    bool create = c->k == 0, migrate = c->k == 4;
    if (strcmp(key, "action") == 0)
        return 0;
    if (strcmp(key, "name") == 0 || (create && strcmp(key, "service") == 0) ||
        (create && strcmp(key, "template") == 0) || (migrate && strcmp(key, "to") == 0)) {
        ok = json_is_string(v) && inventory_valid_name(json_string_value(v));
    } else if (create && strcmp(key, "image") == 0) {
        ok = json_is_string(v) && inventory_valid_name(json_string_value(v));
        allowed = "the name of an image of the server's `images:` (1..64 of letters, digits, "
                  "'.', '_', '-')";
    } else if (create && strcmp(key, "address") == 0) {
        ok = json_is_string(v) && ipv4_with_prefix(json_string_value(v));
        allowed = "A.B.C.D or A.B.C.D/NN";
    } else if (create && strcmp(key, "gateway") == 0) {
        ok = json_is_string(v) && ipv4_literal(json_string_value(v));
        allowed = "A.B.C.D";
    } else if (create && strcmp(key, "prefix") == 0) {
        ok = json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= 32;
        allowed = "an integer 1..32";
    } else if ((create && strcmp(key, "start") == 0) ||
               (create && strcmp(key, "privileged") == 0) ||
               (migrate && strcmp(key, "precopy") == 0)) {
        ok = json_is_boolean(v);
        allowed = "true or false";
    } else if (migrate && strcmp(key, "copy") == 0) {
        ok = json_is_string(v) && (strcmp(json_string_value(v), "stream") == 0 ||
                                   strcmp(json_string_value(v), "server") == 0);
        allowed = "stream or server";
    } else if (create && strcmp(key, "hold_for_test_ms") == 0) {
        /* Test-only fault injection, refused by agents not run with --test-faults. */
        ok = json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 60000;
        allowed = "an integer 0..60000";
    } else if (strcmp(key, "image") == 0) {
        snprintf(why, size, "`image` is only for create");
        return -1;
    } else {
        snprintf(why, size,
                 "unknown member `%.40s` for %s; allowed: name, action, and for create: "
                 "service, address, prefix, gateway, template, image, start, privileged; for "
                 "migrate: "
                 "to, precopy, copy",
                 key, c->act);
        return -1;
    }
    if (!ok) {
        /* The value as sent: a string's text, anything else as JSON. */
        cleanup_free char *got =
            json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(why, size, "`%.40s`: `%.60s` is not valid; allowed: %s", key,
                 json_is_string(v) ? json_string_value(v)
                 : got             ? got
                                   : "?",
                 allowed);
        return -1;
    }
    return 1;
}

/* The body of POST .../containers, checked member by member (docs/server.md).
 * Returns the action's index in ct_actions and *members: the order's members
 * rebuilt from the checked values only (never the body passed on); -1 with
 * why otherwise.  `image` stays the name here (resolve_image). */
int api_container_members(json_t *body, json_t **members, char *why, size_t size)
{
    *members = NULL;
    if (!json_is_object(body)) {
        snprintf(why, size, "expected a JSON object");
        return -1;
    }
    json_t *action = json_object_get(body, "action");
    const char *act = json_is_string(action) ? json_string_value(action) : "create";
    size_t k = 0;
    while (k < CT_ACTIONS && strcmp(act, ct_actions[k]) != 0)
        k++;
    if ((action && !json_is_string(action)) || k == CT_ACTIONS) {
        cleanup_free char *got = json_dumps(action, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(why, size,
                 "`action`: `%.40s` is not valid; allowed: create, start, stop, "
                 "destroy, migrate",
                 got ? got : "?");
        return -1;
    }
    struct ct_body_action c = {k, act};
    cleanup_json json_t *out = api_checked_members(body, container_member, &c, why, size);
    if (out == NULL)
        return -1;
    if (!json_is_string(json_object_get(out, "name"))) {
        snprintf(why, size, "`name`: missing; allowed: the container's name");
        return -1;
    }
    if (k == 0 && json_object_get(out, "template") && json_object_get(out, "image")) {
        snprintf(why, size, "`template` and `image` given; allowed: one of them");
        return -1;
    }
    /* create means create and start unless the body says "start": false. */
    if (k == 0 && json_object_get(out, "start") == NULL)
        json_object_set_new(out, "start", json_true());
    /* Unprivileged unless the body says "privileged": true (docs/security.md). */
    if (k == 0 && json_object_get(out, "privileged") == NULL)
        json_object_set_new(out, "privileged", json_false());
    *members = steal_pointer(&out);
    return (int)k;
}

void api_handle_host_containers(struct api *api, struct evhttp_request *req, const char *host)
{
    cleanup_free char *text = NULL;
    cleanup_json json_t *body = NULL;
    if (api_read_body(req, false, &body, &text) < 0)
        return;
    cleanup_json json_t *members = NULL;
    char why[300];
    int k = api_container_members(body, &members, why, sizeof(why));
    if (k < 0) {
        /* why names the member and its value: the whole body would bury them. */
        api_reply_error(req, 400, "body: %s", why);
        return;
    }
    const char *name = json_string_value(json_object_get(members, "name"));
    if (k == 4) {
        migrate_container(api, req, host, members);
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
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->action, sizeof(r->action), "%s", ct_actions[k]);
    char order[32];
    snprintf(order, sizeof(order), "container_%s", ct_actions[k]);
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
