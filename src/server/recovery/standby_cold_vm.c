/* Standby mode `cold-vm` (standby_mode.h): a VM of a host agent
 * (`standby.vm` of `standby.host`, `autostart: false` in that agent's
 * configuration) is booted on failure by the host agent's vm_start order and
 * serves the service at standby.address; the port step waits for its boot
 * (port_timeout_ms).  A failed recovery that is cleared, and failback, stop it
 * again with vm_stop. */
#include <stdio.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_code.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"

static void ready_done(struct svc *s, const char *note)
{
    recovery_phase_done(s, PH_CONTAINER_READY,
                        json_pack("{s:s, s:s, s:I, s:s}", "vm", s->cfg->standby.vm, "host",
                                  s->cfg->standby.host, "order_ms",
                                  (json_int_t)(vcr_mono_ms() - s->step_started), "note", note));
}

static void on_vm_started(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct svc *s = opaque;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_CONTAINER)
        return;
    /* Its agent refuses a start of a VM that runs (a repeated phase). */
    enum proto_code code = outcome == ORDER_REFUSED
                               ? proto_code_parse(json_string_value(json_object_get(reply, "code")))
                               : PROTO_CODE_NONE;
    if (code == PROTO_CODE_BUSY) {
        struct inv_vm *vm = recovery_standby_vm(s);
        if (vm && vm->state == INV_VM_RUNNING) {
            ready_done(s, "cold: runs already");
            return;
        }
    }
    if (outcome != ORDER_DONE) {
        recovery_fail(s, "vm_start of standby VM %s on host %s: %s", s->cfg->standby.vm,
                      s->cfg->standby.host, message ? message : "failed");
        return;
    }
    ready_done(s, "cold: started");
}

static void cold_vm_ready(struct svc *s)
{
    const struct service_config *c = s->cfg;
    s->step = STEP_CONTAINER;
    s->step_started = vcr_mono_ms();
    struct inv_vm *vm = recovery_standby_vm(s);
    if (vm && vm->state == INV_VM_RUNNING) {
        ready_done(s, "cold: runs already");
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, c->standby.host, "vm_start", c->standby.vm, NULL,
                               RECOVERY_VM_START_ORDER_MS, on_vm_started, s, &err) < 0) {
        recovery_fail(s, "vm_start of standby VM %s: host %s: %s", c->standby.vm, c->standby.host,
                      vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

static void on_released(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (outcome != ORDER_DONE)
        log_warn("service %s: stopping standby VM %s: %s", s->cfg->name, s->cfg->standby.vm,
                 message ? message : "failed");
}

static void cold_vm_release(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, s->cfg->standby.host, "vm_stop", s->cfg->standby.vm,
                               NULL, RECOVERY_VM_START_ORDER_MS, on_released, s, &err) < 0)
        log_warn("service %s: stopping standby VM %s: %s", s->cfg->name, s->cfg->standby.vm,
                 vcr_error_msg(err));
}

static void on_failback_stopped(enum order_outcome outcome, const char *message, json_t *reply,
                                void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (failback_order_reply(s, outcome, message, "stop standby VM", "vm_stop_failed"))
        failback_finish(s, "vm_stopped", NULL);
}

static void cold_vm_failback(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, s->cfg->standby.host, "vm_stop", s->cfg->standby.vm,
                               NULL, RECOVERY_VM_START_ORDER_MS, on_failback_stopped, s,
                               &err) < 0) {
        failback_finish(s, "vm_stop_failed", vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

const struct standby_mode_ops standby_cold_vm_ops = {
    .name = "cold-vm",
    .kind = "vm",
    .ready = cold_vm_ready,
    .release = cold_vm_release,
    .failback = cold_vm_failback,
};
