/* Fencing: the primary must be known dead before traffic moves, so that no
 * service is ever reachable at two places after a switch.
 *
 * - Its host's agent is connected: order vm_kill and wait for the reply.  A
 *   refusal counts only when the agent's own report says the VM is down
 *   (killing a dead VM is refused as "not running").
 * - The agent is lost, does not answer in time, or its connection closed: the
 *   host's self-fence (docs/fencing.md) kills the VM once its watchdog has not
 *   been fed for its timeout, if the agent reported it armed (hello and
 *   `self_fence` messages).  The server then cuts the host off
 *   (agents_cut_off: session closed, hellos refused), so that nothing feeds
 *   that watchdog any more, and counts the VM dead once the watchdog must have
 *   fired: the host's last frame (no contact the agent has can be later) plus
 *   fence_after_ms (or the agent's longer timeout) plus the margin
 *   fence_after_ms leaves for the kill itself.  For a host lost by silence
 *   that is host_timeout_ms + fence_timeout_ms after its last frame.
 * - Self-fencing off, paused, down or not reported: nothing guarantees the VM
 *   dies, so the recovery stays at fencing and says why (the service's error,
 *   a `fence_wait` event); vm_kill is ordered again while the agent is
 *   connected, and a confirmed kill or a VM the agent reports down ends it.
 *
 * In STEP_FENCE_WAIT, svc.wait_until is when the self-fence is counted, or 0
 * while there is none to count on (then svc.retry_at is the next vm_kill). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "config/server_config.h"

#define JOURNAL_FENCE_WAIT "fence_wait"
/* How often a recovery with no self-fence to count on orders vm_kill again. */
#define FENCE_RETRY_MS RECOVERY_KILL_ORDER_MS

/* Whether host h's self-fence can be counted on (FENCE_REFUSAL_NONE); if not,
 * which refusal and why (into why). */
static enum fence_refusal self_fence_armed(const struct svc *s, const struct inv_host *h, char *why,
                                           size_t len)
{
    const char *host = s->cfg->primary.host;
    if (h == NULL) {
        snprintf(why, len, "host %s has not said hello to this server: its self-fencing is unknown",
                 host);
        return FENCE_REFUSAL_NO_HELLO;
    }
    const struct inv_self_fence *f = &h->self_fence;
    switch (f->watchdog) {
    case INV_WATCHDOG_ARMED:
        if (f->timeout_ms > 0)
            return FENCE_REFUSAL_NONE;
        __attribute__((fallthrough)); /* armed with no timeout is off */
    case INV_WATCHDOG_OFF:
        snprintf(why, len, "self-fencing is off on host %s (its agent's fence_timeout_ms is 0)",
                 host);
        return FENCE_REFUSAL_OFF;
    case INV_WATCHDOG_PAUSED:
        snprintf(why, len,
                 "host %s's fence watchdog is paused (for %" PRId64 " ms more when its agent "
                 "said so)",
                 host, f->pause_ms);
        return FENCE_REFUSAL_PAUSED;
    case INV_WATCHDOG_DOWN:
        snprintf(why, len, "host %s's agent had no fence watchdog running when it last reported",
                 host);
        return FENCE_REFUSAL_DOWN;
    case INV_WATCHDOG_UNKNOWN:
        break;
    }
    snprintf(why, len, "host %s's agent does not report its self-fencing (no self_fence in hello)",
             host);
    return FENCE_REFUSAL_UNREPORTED;
}

static void journal_wait(struct svc *s, const char *cause, bool counted, const char *reason,
                         int64_t wait_ms)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:b, s:s?}", "service", s->cfg->name, "vm", s->cfg->primary.vm,
                  "cause", cause, "counted", counted, "reason", reason);
    if (detail && counted)
        json_object_set_new(detail, "wait_ms", json_integer(wait_ms));
    recovery_journal(s, JOURNAL_FENCE_WAIT, detail);
}

static void count_on_self_fence(struct svc *s, struct inv_host *h, const char *cause)
{
    s->fence_refused = FENCE_REFUSAL_NONE;
    const struct server_config *cfg = s->rc->cfg;
    int64_t total = (int64_t)cfg->host_timeout_ms + cfg->fence_timeout_ms;
    int64_t after = agents_fence_after_ms(cfg->host_timeout_ms, cfg->fence_timeout_ms);
    int64_t longest = h->self_fence.timeout_ms > after ? h->self_fence.timeout_ms : after;
    /* Cut off, the host sends no frame that counts: last_seen_ms stays.  And
     * never less than fence_timeout_ms from now, the wait the configuration
     * promises after a host is lost. */
    int64_t now = vcr_mono_ms();
    int64_t until = h->last_seen_ms + longest + (total - after);
    if (until < now + cfg->fence_timeout_ms)
        until = now + cfg->fence_timeout_ms;
    char why[300];
    snprintf(why, sizeof(why), "service %s counts on its self-fence (%s)", s->cfg->name, cause);
    agents_cut_off(s->rc->agents, h->name, until, why);
    s->step = STEP_FENCE_WAIT;
    s->step_started = now;
    s->wait_until = until;
    snprintf(s->error, sizeof(s->error),
             "%s; counting on host %s's self-fence: cut off until its watchdog has fired "
             "(%" PRId64 " ms)",
             cause, h->name, s->wait_until - now);
    log_warn("service %s: %s", s->cfg->name, s->error);
    journal_wait(s, cause, true, NULL, s->wait_until - now);
}

static void refuse_self_fence(struct svc *s, const char *cause, enum fence_refusal refusal,
                              int64_t pause_ms, const char *why)
{
    char head[300];
    snprintf(head, sizeof(head), "not switched: %s", why);
    /* Said already (a vm_kill retried in vain): not journaled again. */
    bool repeated = s->fence_refused == refusal && s->fence_refused_pause_ms == pause_ms;
    s->fence_refused = refusal;
    s->fence_refused_pause_ms = pause_ms;
    int64_t now = vcr_mono_ms();
    if (!repeated)
        s->step_started = now;
    s->step = STEP_FENCE_WAIT;
    s->wait_until = 0;
    s->retry_at = now + FENCE_RETRY_MS;
    snprintf(s->error, sizeof(s->error),
             "%s; %s; waiting for its agent to confirm the VM dead (vm_kill again every %d ms "
             "while it is connected)",
             head, cause, FENCE_RETRY_MS);
    if (repeated)
        return;
    log_error("service %s: %s", s->cfg->name, s->error);
    journal_wait(s, cause, false, why, 0);
}

static void wait_self_fence(struct svc *s, const char *cause)
{
    struct inv_host *h = inventory_find_host(s->rc->inv, s->cfg->primary.host);
    char why[200];
    enum fence_refusal refusal = self_fence_armed(s, h, why, sizeof(why));
    if (refusal == FENCE_REFUSAL_NONE)
        count_on_self_fence(s, h, cause);
    else
        refuse_self_fence(s, cause, refusal,
                          refusal == FENCE_REFUSAL_PAUSED ? h->self_fence.pause_ms : 0, why);
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
        s->error[0] = '\0';
        recovery_fenced(s, "vm_kill", waited);
        return;
    case ORDER_REFUSED:
        if (recovery_vm_down(s)) {
            snprintf(how, sizeof(how), "vm_kill refused, VM already down (%s)", message);
            s->error[0] = '\0';
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
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order(s->rc->agents, s->cfg->primary.host, "vm_kill", s->cfg->primary.vm,
                          RECOVERY_KILL_ORDER_MS, on_kill_reply, s, &err) < 0) {
        wait_self_fence(s, vcr_error_msg(err));
        return;
    }
    /* A retry keeps its step_started: waited_ms spans the whole fencing. */
    if (s->step != STEP_FENCE_WAIT)
        s->step_started = vcr_mono_ms();
    s->step = STEP_FENCE_ORDER;
    s->order_pending = true;
}

void fence_tick(struct svc *s, int64_t now)
{
    if (s->step != STEP_FENCE_WAIT)
        return;
    char how[300];
    if (s->wait_until == 0) {
        struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, NULL);
        if (recovery_vm_down(s)) {
            snprintf(how, sizeof(how), "VM %s reported %s by its agent (%.200s)",
                     s->cfg->primary.vm, inv_vm_state_name(vm->state),
                     vm->cause ? vm->cause : "no cause");
            s->error[0] = '\0';
            recovery_fenced(s, how, now - s->step_started);
        } else if (now >= s->retry_at) {
            fence_start(s);
        }
        return;
    }
    if (now < s->wait_until)
        return;
    snprintf(how, sizeof(how), "self-fence: host cut off until its watchdog fired (%.200s)",
             s->error);
    s->error[0] = '\0';
    recovery_fenced(s, how, now - s->step_started);
}
