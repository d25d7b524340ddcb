/* The container step of a recovery (docs/recovery.md, "Provisioning" and
 * "Phases"): where the service's container comes from and the orders that
 * make it run.  A warm container counts as ready only when a connected standby
 * reports it running; otherwise it is started or created, on standby.host or
 * standby.fallback_host.  Refusals are decided on their code (proto_code.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_state.h"
#include "proto/proto_code.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "config/server_config.h"

#define BUSY_RETRY_MS 1000
/* How often an order to a standby between sessions is tried again. */
#define CONTAINER_SESSION_RETRY_MS 200

static void container_order(struct svc *s, const char *action);

static void on_container_reply(enum order_outcome outcome, const char *message, json_t *reply,
                               void *opaque)
{
    struct svc *s = opaque;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_CONTAINER)
        return;
    const char *action = s->stage ? "container_start" : "container_create";
    enum proto_code code = outcome == ORDER_REFUSED
                               ? proto_code_parse(json_string_value(json_object_get(reply, "code")))
                               : PROTO_CODE_NONE;
    /* Repeating a phase after a restart, or a provisioned container: it may exist. */
    if (code == PROTO_CODE_EXISTS && s->stage == 0) {
        s->stage = 1;
        container_order(s, "container_start");
        return;
    }
    /* Another order for it (provisioning's) is still running: ask again shortly. */
    if (code == PROTO_CODE_BUSY && vcr_mono_ms() - s->step_started < RECOVERY_CONTAINER_ORDER_MS) {
        s->retry_at = vcr_mono_ms() + BUSY_RETRY_MS;
        return;
    }
    if (outcome != ORDER_DONE) {
        recovery_fail(s, "%s %s on %s: %s", action, s->cfg->standby.container, s->target_host,
                      message ? message : "failed");
        return;
    }
    s->stage = 0;
    s->retry_at = 0;
    /* image: the agent's account of a container image (fetched or cached, timings). */
    recovery_phase_done(s, PH_CONTAINER_READY,
                        json_pack("{s:s, s:s, s:I, s:O*}", "container", s->cfg->standby.container,
                                  "host", s->target_host, "order_ms",
                                  (json_int_t)(vcr_mono_ms() - s->step_started), "image",
                                  json_object_get(reply, "image")));
}

json_t *recovery_container_members(const struct svc *s)
{
    const struct service_config *c = s->cfg;
    json_t *members =
        json_pack("{s:s, s:s, s:s, s:i, s:b}", "name", c->standby.container, "service", c->name,
                  "address", c->standby.address, "prefix", (int)c->standby.prefix, "start", 1);
    if (members && c->standby.address6)
        json_object_set_new(members, "address6", json_string(c->standby.address6));
    if (members && c->standby.gateway)
        json_object_set_new(members, "gateway", json_string(c->standby.gateway));
    if (members && c->standby.template)
        json_object_set_new(members, "template", json_string(c->standby.template));
    /* Always explicit, whatever the agent's default. */
    if (members)
        json_object_set_new(members, "privileged", json_boolean(c->standby.privileged));
    const struct image_config *img = server_config_service_image(s->rc->cfg, c);
    if (members && img)
        json_object_set_new(members, "image", server_config_image_json(s->rc->cfg, img));
    return members;
}

struct check_target recovery_primary_check(const struct svc *s, const char *address)
{
    return (struct check_target){
        .type = s->cfg->check.type,
        .address = address              ? address
                   : s->cfg->check.ipv6 ? s->cfg->primary.address6
                                        : s->cfg->primary.address,
        .port = s->cfg->primary.port,
        .path = s->cfg->check.path,
        .timeout_ms = s->cfg->check.timeout_ms,
    };
}

static void container_order(struct svc *s, const char *action)
{
    const struct service_config *c = s->cfg;
    cleanup_json json_t *members = recovery_container_members(s);
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, s->target_host, action, c->standby.container, members,
                               RECOVERY_CONTAINER_ORDER_MS, on_container_reply, s, &err) < 0) {
        /* The standby's agent between sessions: its connection closed but the
         * host not declared lost yet (host_timeout_ms), or after a takeover
         * before its hello to this leader.  It has host_timeout_ms from the
         * step's start to come back, as a resumed recovery gives it. */
        int64_t now = vcr_mono_ms();
        if (vcr_error_status(err) == ENOTCONN &&
            now - s->step_started < (int64_t)s->rc->cfg->host_timeout_ms) {
            if (now - s->step_started < CONTAINER_SESSION_RETRY_MS)
                log_warn("service %s: %s %s: standby %s: %s; waiting for its agent", c->name,
                         action, c->standby.container, s->target_host, vcr_error_msg(err));
            s->retry_at = now + CONTAINER_SESSION_RETRY_MS;
            return;
        }
        recovery_fail(s, "%s %s: standby %s: %s", action, c->standby.container, s->target_host,
                      vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

/* A standby host that is connected and has reported its containers. */
static bool standby_reporting(const struct inv_host *h)
{
    return h && h->state == INV_HOST_CONNECTED && h->role && strcmp(h->role, "standby") == 0 &&
           json_is_array(h->containers);
}

/* Where the container comes from: a warm one runs already only if a connected
 * standby host says so now; otherwise it is started or created where it can be
 * (standby.host, then standby.fallback_host), at once rather than after the
 * port deadline.  *action is NULL when the warm container runs (running_counts). */
static const char *container_plan(struct svc *s, bool running_counts, const char **action,
                                  char *why, size_t why_size)
{
    const struct service_config *c = s->cfg;
    struct inv_host *h =
        inventory_find_container_host(s->rc->inv, c->standby.container, c->standby.host);
    if (h == NULL)
        h = inventory_find_host(s->rc->inv, c->standby.host);
    json_t *ct = standby_reporting(h) ? inventory_host_container(h, c->standby.container) : NULL;
    const char *state = json_string_value(json_object_get(ct, "state"));
    *action = "container_create";
    if (standby_reporting(h)) {
        if (running_counts && proto_ct_state_parse(state) == PROTO_CT_RUNNING) {
            *action = NULL;
            return h->name;
        }
        if (ct)
            *action = "container_start";
        return h->name;
    }
    snprintf(why, why_size, "standby host %s is %s", c->standby.host,
             h ? inv_host_state_name(h->state) : "not connected");
    struct inv_host *f =
        c->standby.fallback_host ? inventory_find_host(s->rc->inv, c->standby.fallback_host) : NULL;
    if (standby_reporting(f)) {
        ct = inventory_host_container(f, c->standby.container);
        state = json_string_value(json_object_get(ct, "state"));
        if (proto_ct_state_parse(state) == PROTO_CT_RUNNING)
            *action = NULL;
        else if (ct)
            *action = "container_start";
        return f->name;
    }
    return NULL;
}

void recovery_container_ready(struct svc *s, bool running_counts)
{
    const char *action;
    char why[200] = "";
    const char *host = container_plan(s, running_counts, &action, why, sizeof(why));
    if (host == NULL) {
        recovery_fail(s, "no standby can take container %s: %s%s%s", s->cfg->standby.container, why,
                      s->cfg->standby.fallback_host ? ", and fallback host "
                                                    : "; no standby.fallback_host is configured",
                      s->cfg->standby.fallback_host ? s->cfg->standby.fallback_host : "");
        return;
    }
    snprintf(s->target_host, sizeof(s->target_host), "%s", host);
    if (action == NULL) {
        recovery_phase_done(s, PH_CONTAINER_READY,
                            json_pack("{s:s, s:s, s:s}", "container", s->cfg->standby.container,
                                      "host", host, "note", "warm: runs already"));
        return;
    }
    if (why[0] || running_counts)
        log_warn("service %s: container %s: %s on %s (%s)", s->cfg->name, s->cfg->standby.container,
                 action, host, why[0] ? why : "the warm container is not running");
    s->step = STEP_CONTAINER;
    s->step_started = vcr_mono_ms();
    s->retry_at = 0;
    s->stage = strcmp(action, "container_start") == 0 ? 1 : 0;
    container_order(s, action);
}

void recovery_container_tick(struct svc *s, int64_t now)
{
    if (!s->order_pending && s->retry_at && now >= s->retry_at) {
        s->retry_at = 0;
        container_order(s, s->stage ? "container_start" : "container_create");
    }
}
