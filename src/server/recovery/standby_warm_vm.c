/* Standby mode `warm-vm` (standby_mode.h): a second VM (`standby.vm`, a VM
 * of host agent `standby.host`) runs the service already, at
 * standby.address.  A recovery checks that its host agent reports it running
 * (the inventory), then the usual port confirmation and switch follow.
 * Nothing is started or stopped: failback leaves it running. */
#include <stdio.h>

#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"

static void warm_vm_ready(struct svc *s)
{
    const struct service_config *c = s->cfg;
    struct inv_vm *vm = recovery_standby_vm(s);
    if (vm == NULL || vm->state != INV_VM_RUNNING) {
        recovery_fail(s, "standby VM %s on host %s is %s; a warm-vm standby must run already",
                      c->standby.vm, c->standby.host,
                      vm ? inv_vm_state_name(vm->state) : "not reported (host not connected)");
        return;
    }
    recovery_phase_done(s, PH_CONTAINER_READY,
                        json_pack("{s:s, s:s, s:s}", "vm", c->standby.vm, "host", c->standby.host,
                                  "note", "warm: runs already"));
}

const struct standby_mode_ops standby_warm_vm_ops = {
    .name = "warm-vm",
    .kind = "vm",
    .ready = warm_vm_ready,
};
