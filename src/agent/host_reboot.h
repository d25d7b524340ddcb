/* vm_flush and vm_reboot orders of the host role (host_reboot.c). */
#ifndef VCR_AGENT_HOST_REBOOT_H
#define VCR_AGENT_HOST_REBOOT_H

#include <jansson.h>

struct agent;
struct host_vm;

/* The guest's console line that ends a reboot (lab/guest/init prints it). */
#define HOST_REBOOT_READY_MARKER "VCR-GUEST-READY"
/* How long a reboot may take until the guest is ready again. */
#define HOST_REBOOT_DEADLINE_MS 120000

/* action "vm_flush" or "vm_reboot"; answers id with agent_reply*(). */
void host_volume_order(struct agent *a, struct host_vm *vm, json_t *id, const char *action,
                       json_t *order);

#endif
