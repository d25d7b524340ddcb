/* Fencing: the primary must be known dead before traffic moves, so that no
 * service is ever reachable at two places after a switch.
 *
 * - Its host's agent is connected: order vm_kill and wait for the reply.  A
 *   refusal counts only when the agent's own report says the VM is down
 *   (killing a dead VM is refused as "not running").
 * - The agent is lost, or does not answer: it self-fences (kills its VMs) once
 *   it has lost the server for fence_timeout_ms; the server closed its
 *   connection when it declared the host lost, or gives up on it now, so
 *   waiting fence_timeout_ms from now is enough. */
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/recovery_priv.h"
#include "server/server_config.h"

static void wait_self_fence(struct svc *s, const char *why)
{
    uint32_t t = s->rc->cfg->fence_timeout_ms;
    log_warn("service %s: %s; waiting fence_timeout_ms (%u ms) for host %s to fence itself",
             s->cfg->name, why, t, s->cfg->primary.host);
    snprintf(s->error, sizeof(s->error), "%s", why);
    s->step = STEP_FENCE_WAIT;
    s->step_started = vcr_mono_ms();
    s->wait_until = s->step_started + t;
}

static void on_kill_reply(enum order_outcome outcome, const char *message, void *opaque)
{
    struct svc *s = opaque;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_FENCE_ORDER)
        return;
    int64_t waited = vcr_mono_ms() - s->step_started;
    char how[300];
    switch (outcome) {
    case ORDER_DONE:
        recovery_fenced(s, "vm_kill", waited);
        return;
    case ORDER_REFUSED:
        if (recovery_vm_down(s)) {
            snprintf(how, sizeof(how), "vm_kill refused, VM already down (%s)", message);
            recovery_fenced(s, how, waited);
        } else {
            recovery_fail(s, "fence: host %s refused to kill VM %s: %s", s->cfg->primary.host,
                          s->cfg->primary.vm, message);
        }
        return;
    case ORDER_TIMEOUT:
    case ORDER_UNREACHABLE:
        snprintf(how, sizeof(how), "vm_kill not confirmed: %s", message);
        wait_self_fence(s, how);
        return;
    }
}

void fence_start(struct svc *s)
{
    struct inv_host *h = inventory_find_host(s->rc->inv, s->cfg->primary.host);
    if (h == NULL || h->state != INV_HOST_CONNECTED) {
        wait_self_fence(s, h ? "host is lost" : "host has not said hello");
        return;
    }
    s->step = STEP_FENCE_ORDER;
    s->step_started = vcr_mono_ms();
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order(s->rc->agents, s->cfg->primary.host, "vm_kill", s->cfg->primary.vm,
                          RECOVERY_KILL_ORDER_MS, on_kill_reply, s, &err) < 0) {
        wait_self_fence(s, vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

void fence_tick(struct svc *s, int64_t now)
{
    if (s->step != STEP_FENCE_WAIT || now < s->wait_until)
        return;
    char how[300];
    snprintf(how, sizeof(how), "self-fence: waited fence_timeout_ms (%.200s)", s->error);
    s->error[0] = '\0';
    recovery_fenced(s, how, now - s->step_started);
}
