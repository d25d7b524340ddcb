/* Warm standby containers from the services configuration (docs/recovery.md,
 * "Provisioning").
 *
 * The standby agent's reports (its hello's and samples' `containers`) are the
 * truth: a warm service's container that they do not list is created and
 * started, one listed `stopped` is started.  Only while the primary serves
 * the service (`ok` or `degraded`): during a recovery, or once the container
 * serves it, the container belongs to the recovery and failback.  A failed
 * order is retried after 5 s, doubling to 60 s, like keepalived's respawn
 * backoff; a hello from the standby host cuts the wait short, since the agent
 * (or its VM) restarted and an earlier reason may be gone. */
#include "server/provision.h"

#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_code.h"
#include "proto/proto_state.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"
#include "config/server_config.h"

static bool provisioned(const struct svc *s)
{
    return s->rc->cfg->provision_warm && s->cfg->standby.mode->provisioned;
}

/* The standby host's report of the service's container: *listed is false when
 * the host is lost, not a standby, or has sent no list (NULL returned then too).
 * A container a migration moved to another standby host is reported there
 * (docs/migration.md). */
static json_t *reported_container(struct svc *s, struct inv_host **host, bool *listed)
{
    struct inv_host *h =
        inventory_find_container_host(s->rc->inv, s->cfg->standby.container, s->cfg->standby.host);
    if (h == NULL)
        h = inventory_find_host(s->rc->inv, s->cfg->standby.host);
    *host = h;
    *listed = h && h->state == INV_HOST_CONNECTED && h->role && strcmp(h->role, "standby") == 0 &&
              json_is_array(h->containers);
    return *listed ? inventory_host_container(h, s->cfg->standby.container) : NULL;
}

/* image, create_start_ms (borrowed, may be NULL): the agent's account of the
 * container's image (cached or fetched, sizes and timings) and of its LXC
 * create and start; code: a refusal's code (proto_code.h), e.g.
 * image_checksum; all kept with the event. */
static void journal_order(struct svc *s, const char *action, bool ok, const char *error, int64_t ms,
                          json_t *image, json_t *create_start_ms, const char *code)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:s, s:b, s:s?, s:s*, s:I}", "service", s->cfg->name,
                  "container", s->cfg->standby.container, "host", s->provision.host, "action",
                  action, "ok", ok, "error", error, "code", code, "ms", (json_int_t)ms);
    if (detail && json_is_object(image))
        json_object_set(detail, "image", image);
    if (detail && create_start_ms)
        json_object_set(detail, "create_start_ms", create_start_ms);
    journal_note(s->rc->journal, 0, s->provision.host, NULL, JOURNAL_PROVISION, detail);
}

static void order_failed(struct svc *s, const char *action, const char *error, int64_t now)
{
    struct provision *p = &s->provision;
    if (p->backoff_ms == 0)
        p->backoff_ms = PROVISION_RETRY_FIRST_MS;
    p->retry_at = now + p->backoff_ms;
    snprintf(p->last_error, sizeof(p->last_error), "%s: %s", action, error);
    log_warn("service %s: provisioning warm container %s on %s: %s failed: %s; retry in %u ms",
             s->cfg->name, s->cfg->standby.container, s->cfg->standby.host, action, error,
             p->backoff_ms);
    p->backoff_ms =
        p->backoff_ms >= PROVISION_RETRY_MAX_MS / 2 ? PROVISION_RETRY_MAX_MS : 2 * p->backoff_ms;
}

static void on_reply(enum order_outcome outcome, const char *message, json_t *reply, void *opaque)
{
    struct svc *s = opaque;
    struct provision *p = &s->provision;
    const char *action = p->action;
    p->action = NULL;
    if (s->rc->stopping || action == NULL)
        return;
    int64_t now = vcr_mono_ms();
    int64_t ms = now - p->sent_mono;
    bool ok = outcome == ORDER_DONE;
    const char *error = ok ? NULL : message ? message : "failed";
    journal_order(s, action, ok, error, ms, ok ? json_object_get(reply, "image") : NULL,
                  ok ? json_object_get(reply, "create_start_ms") : NULL,
                  ok ? NULL : json_string_value(json_object_get(reply, "code")));
    if (!ok) {
        /* The same wrong bytes come back until someone replaces the file or
         * the configuration: no point in asking again within seconds. */
        if (proto_code_parse(json_string_value(json_object_get(reply, "code"))) ==
            PROTO_CODE_IMAGE_CHECKSUM)
            p->backoff_ms = PROVISION_RETRY_MAX_MS;
        order_failed(s, action, error, now);
        return;
    }
    struct inv_host *h = inventory_find_host(s->rc->inv, p->host);
    p->awaiting_report = true;
    p->report_seq = h ? h->containers_seq : 0;
    p->backoff_ms = 0;
    p->retry_at = 0;
    p->last_error[0] = '\0';
    log_info("service %s: warm container %s on %s: %s done in %lld ms", s->cfg->name,
             s->cfg->standby.container, p->host, action, (long long)ms);
}

static void send_order(struct svc *s, const char *host, const char *action, int64_t now)
{
    const struct service_config *c = s->cfg;
    struct provision *p = &s->provision;
    cleanup_json json_t *members = recovery_container_members(s);
    log_info("service %s: warm container %s is %s on %s: %s", c->name, c->standby.container,
             strcmp(action, "container_create") == 0 ? "absent" : "stopped", host, action);
    cleanup_error vcr_error_t err = NULL;
    p->sent_mono = now;
    snprintf(p->host, sizeof(p->host), "%s", host);
    if (agents_send_order_with(s->rc->agents, host, action, c->standby.container, members,
                               RECOVERY_CONTAINER_ORDER_MS, on_reply, s, &err) < 0) {
        journal_order(s, action, false, vcr_error_msg(err), 0, NULL, NULL, NULL);
        order_failed(s, action, vcr_error_msg(err), now);
        return;
    }
    p->action = action;
}

void provision_tick(struct svc *s, int64_t now)
{
    struct provision *p = &s->provision;
    if (!provisioned(s) || p->action || now < p->retry_at || s->step != STEP_IDLE ||
        (s->state != SVC_OK && s->state != SVC_DEGRADED) ||
        inventory_is_moving(s->rc->inv, s->cfg->standby.container))
        return;
    struct inv_host *h;
    bool listed;
    json_t *c = reported_container(s, &h, &listed);
    if (!listed)
        return;
    if (p->awaiting_report) {
        if (h->containers_seq == p->report_seq)
            return;
        p->awaiting_report = false;
    }
    if (c == NULL) {
        send_order(s, s->cfg->standby.host, "container_create", now);
        return;
    }
    const char *state = json_string_value(json_object_get(c, "state"));
    /* starting, stopping: under way; frozen: someone froze it on purpose. */
    if (proto_ct_state_parse(state) == PROTO_CT_STOPPED)
        send_order(s, h->name, "container_start", now);
}

void provision_on_hello(struct recovery *rc, const char *host)
{
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (provisioned(s) && strcmp(s->cfg->standby.host, host) == 0) {
            s->provision.retry_at = 0;
            s->provision.backoff_ms = 0;
        }
    }
}

const char *provision_container_state(struct svc *s)
{
    struct inv_host *h;
    bool listed;
    json_t *c = reported_container(s, &h, &listed);
    if (!listed)
        return "unknown";
    if (s->provision.action ||
        (s->provision.awaiting_report && h->containers_seq == s->provision.report_seq))
        return "provisioning";
    if (c == NULL)
        return "absent";
    const char *state = json_string_value(json_object_get(c, "state"));
    return state ? state : "unknown";
}

bool provision_container_running(struct svc *s)
{
    struct inv_host *h;
    bool listed;
    json_t *c = reported_container(s, &h, &listed);
    return c && !s->provision.action &&
           !(s->provision.awaiting_report && h->containers_seq == s->provision.report_seq) &&
           proto_ct_state_parse(json_string_value(json_object_get(c, "state"))) == PROTO_CT_RUNNING;
}

const char *provision_last_error(struct svc *s)
{
    return s->provision.last_error[0] ? s->provision.last_error : NULL;
}
