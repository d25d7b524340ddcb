/* Standby mode `cold` (standby_mode.h): the service's container is created
 * (or started, if it exists) in a standby VM on failure
 * (recovery_container.c).  A failed recovery that is cleared stops it;
 * failback stops and destroys it. */
#include "common/cleanup.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"

static void cold_ready(struct svc *s)
{
    recovery_container_ready(s, false);
}

/* Fire and forget: a cold container left by a failed recovery is stopped; a
 * later recovery starts it again (container_create answers that it exists). */
static void on_cold_container_stopped(enum order_outcome outcome, const char *message,
                                      json_t *reply, void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (outcome != ORDER_DONE)
        log_warn("service %s: stopping container %s: %s", s->cfg->name, s->cfg->standby.container,
                 message ? message : "failed");
}

static void cold_release(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *name = json_pack("{s:s}", "name", s->cfg->standby.container);
    if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "container_stop",
                               s->cfg->standby.container, name, RECOVERY_CONTAINER_ORDER_MS,
                               on_cold_container_stopped, s, &err) < 0)
        log_warn("service %s: stopping container %s: %s", s->cfg->name, s->cfg->standby.container,
                 vcr_error_msg(err));
}

/* Failback: container_stop (stage 2), then container_destroy (stage 3). */
static void on_failback_stop(enum order_outcome outcome, const char *message, json_t *reply,
                             void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (!failback_order_reply(s, outcome, message, "remove container", "container_stop_failed"))
        return;
    if (s->stage == 2) {
        s->stage = 3;
        cleanup_error vcr_error_t err = NULL;
        cleanup_json json_t *name = json_pack("{s:s}", "name", s->cfg->standby.container);
        if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "container_destroy",
                                   s->cfg->standby.container, name, RECOVERY_CONTAINER_ORDER_MS,
                                   on_failback_stop, s, &err) >= 0) {
            s->order_pending = true;
            return;
        }
    }
    failback_finish(s, "container_stopped", NULL);
}

static void cold_failback(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *name = json_pack("{s:s}", "name", s->cfg->standby.container);
    if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "container_stop",
                               s->cfg->standby.container, name, RECOVERY_CONTAINER_ORDER_MS,
                               on_failback_stop, s, &err) < 0) {
        failback_finish(s, "container_stop_failed", vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

const struct standby_mode_ops standby_cold_ops = {
    .name = "cold",
    .kind = "container",
    .container = true,
    .ready = cold_ready,
    .tick = recovery_container_tick,
    .release = cold_release,
    .failback = cold_failback,
};
