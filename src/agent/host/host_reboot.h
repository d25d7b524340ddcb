/* vm_flush and vm_reboot orders of the host role (host_reboot.c). */
#ifndef VCR_AGENT_HOST_REBOOT_H
#define VCR_AGENT_HOST_REBOOT_H

#include <jansson.h>

struct agent;
struct host_vm;

/* The guest's console line that ends a reboot (lab/guest/init prints it). */
#define HOST_REBOOT_READY_MARKER "VCR-GUEST-READY"
/* A disk-image VM runs an OS with no code of ours: it is up again when its
 * console shows a login prompt (a getty on the serial console; the agent puts
 * console=ttyS0 on the command line of one booted by its kernel). */
#define HOST_REBOOT_DISK_READY_MARKER "login:"
/* How long a reboot may take until the guest is ready again: a systemd guest
 * under TCG on a busy host takes 50-90 s (lab/README.md, "Debian images"). */
#define HOST_REBOOT_DEADLINE_MS 240000

struct vcr_vm_spec;
/* The console text that ends a reboot of spec's guest. */
const char *host_reboot_ready_marker(const struct vcr_vm_spec *spec);

/* action "vm_flush" or "vm_reboot"; answers id with agent_reply*(). */
void host_volume_order(struct agent *a, struct host_vm *vm, json_t *id, const char *action,
                       json_t *order);

#endif
