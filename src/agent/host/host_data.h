/* A service's data on the primary's host: volume copies and restores
 * (host_data.c, docs/data.md). */
#ifndef VCR_AGENT_HOST_DATA_H
#define VCR_AGENT_HOST_DATA_H

#include <jansson.h>

struct agent;
struct host_vm;

/* volume_snapshot, volume_snapshot_read, volume_restore_write, volume_restore:
 * answers id itself (at once, or when the work ends). */
void host_data_order(struct agent *a, struct host_vm *vm, json_t *id, const char *action,
                     json_t *order);
/* Every QMP event of the VM: a drive-backup's end. */
void host_data_qmp_event(struct host_vm *vm, const char *name, json_t *data);
/* Every state change of the VM: a drive-backup whose QEMU is gone ends now
 * (refused), not at its deadline: the server's recovery waits for it. */
void host_data_vm_changed(struct host_vm *vm);
/* Forgets what is under way without answering (agent exit). */
void host_data_free(struct host_vm *vm);

#endif
