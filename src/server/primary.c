/* The primary VM as the recovery engine sees it, once per tick
 * (docs/recovery.md, "The primary's life"):
 *
 * - Every start of the primary, by anyone (`vcr vm start`, an autostart after
 *   a host reboot, the cold boot after a failed warm restart, a reboot inside
 *   the guest), opens its boot grace: a failed probe counts only after it
 *   has answered once, or after check.boot_grace_ms.  A start is the VM
 *   becoming `running`, or a new QEMU pid, or a new guest boot (`boots`).
 * - A primary stopped on purpose (`stopped`) is maintenance: the service reads
 *   `stopped`, no probe runs, nothing fails over.  One that stops by itself
 *   (`shutdown`, `crashed`) is a failure (recovery.c).
 * - A primary reported live while its service is served elsewhere (DNS on
 *   the container, or a recovery past fencing) is killed again, so that the
 *   service never answers from two places: a host that rebooted autostarts
 *   its VMs and forgets the fence.  Only failback brings it back. */
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"

#define JOURNAL_REFENCED "refenced"
#define REFENCE_MS       2000

struct inv_vm *recovery_primary_vm(const struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    if (vm == NULL || h == NULL || h->state != INV_HOST_CONNECTED ||
        strcmp(h->name, s->cfg->primary.host) != 0)
        return NULL;
    return vm;
}

static void boot_grace_open(struct svc *s, const struct inv_vm *vm)
{
    struct probe *p = &s->probe;
    p->answered = false;
    p->unanswered_since = 0;
    p->failures = 0;
    p->last_error[0] = '\0';
    p->next_ms = 0;
    if (s->state == SVC_DEGRADED)
        s->state = SVC_OK;
    log_info("service %s: primary VM %s (re)started (pid %lld, boot %lld): failed probes count "
             "once it has answered, or after boot_grace_ms %u",
             s->cfg->name, s->cfg->primary.vm, (long long)vm->pid, (long long)vm->boots,
             s->cfg->check.boot_grace_ms);
}

static bool served_elsewhere(const struct svc *s)
{
    return s->on_standby || (s->state == SVC_RECOVERING && s->phase >= PH_FENCED);
}

static void on_refence_reply(enum order_outcome outcome, const char *message, void *opaque)
{
    struct svc *s = opaque;
    s->refence_pending = false;
    if (s->rc->stopping)
        return;
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:b, s:s?}", "service", s->cfg->name, "vm", s->cfg->primary.vm, "ok",
                  outcome == ORDER_DONE, "error", outcome == ORDER_DONE ? NULL : message);
    recovery_journal(s, JOURNAL_REFENCED, detail);
    if (outcome == ORDER_DONE)
        log_warn("service %s: primary VM %s was running while the service is served by its "
                 "standby: killed again",
                 s->cfg->name, s->cfg->primary.vm);
    else
        log_error("service %s: primary VM %s runs while the service is served by its standby, "
                  "and killing it failed: %s",
                  s->cfg->name, s->cfg->primary.vm, message ? message : "?");
}

static void refence(struct svc *s, int64_t now)
{
    s->refence_at = now + REFENCE_MS;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order(s->rc->agents, s->cfg->primary.host, "vm_kill", s->cfg->primary.vm,
                          RECOVERY_KILL_ORDER_MS, on_refence_reply, s, &err) < 0) {
        log_error("service %s: primary VM %s runs while served elsewhere; vm_kill: %s",
                  s->cfg->name, s->cfg->primary.vm, vcr_error_msg(err));
        return;
    }
    s->refence_pending = true;
}

void recovery_watch_primary(struct svc *s, int64_t now)
{
    struct inv_vm *vm = recovery_primary_vm(s);
    bool running = vm && vm->state == INV_VM_RUNNING;
    if (running && (!s->primary_was_running || (vm->pid > 0 && vm->pid != s->primary_pid) ||
                    (vm->boots >= 0 && s->primary_boots >= 0 && vm->boots != s->primary_boots)))
        boot_grace_open(s, vm);
    s->primary_was_running = running;
    s->primary_pid = vm && running ? vm->pid : 0;
    s->primary_boots = vm ? vm->boots : -1;

    if (s->step == STEP_IDLE && (s->state == SVC_OK || s->state == SVC_DEGRADED) && vm &&
        vm->state == INV_VM_STOPPED) {
        probe_stop(&s->probe);
        s->state = SVC_STOPPED;
        log_info("service %s: primary VM %s stopped on purpose (%s): maintenance, no failover",
                 s->cfg->name, s->cfg->primary.vm, vm->cause ? vm->cause : "no cause");
    } else if (s->state == SVC_STOPPED && vm && vm->state == INV_VM_STOPPED) {
        s->stop_ordered_until = 0; /* the ordered stop is done */
    } else if (s->state == SVC_STOPPED && vm && vm->state != INV_VM_STOPPED &&
               now >= s->stop_ordered_until) {
        s->stop_ordered_until = 0;
        s->state = SVC_OK;
    }

    bool live = vm && (vm->state == INV_VM_RUNNING || vm->state == INV_VM_STARTING);
    /* A failback in flight (or taken over, fb_id) starts the primary. */
    if (live && served_elsewhere(s) && s->step != STEP_FAILBACK && s->fb_id[0] == '\0' &&
        !s->refence_pending && now >= s->refence_at)
        refence(s, now);
}
