/* The VM states of the wire (docs/protocol.md, "VM state values"): one enum
 * and one table of names, used by the host agent (agent/host/vm.h) and the server
 * (server/inventory.h), whose own enums are these values. */
#ifndef VCR_PROTO_STATE_H
#define VCR_PROTO_STATE_H

#include <stdbool.h>

enum proto_vm_state {
    PROTO_VM_STARTING,
    PROTO_VM_RUNNING,
    PROTO_VM_PAUSED,
    PROTO_VM_SHUTDOWN,   /* the guest powered itself off */
    PROTO_VM_STOPPED,    /* stopped or killed on order, or never started */
    PROTO_VM_CRASHED,    /* QEMU died without a guest shutdown */
    PROTO_VM_PANICKED,   /* QMP GUEST_PANICKED */
    PROTO_VM_FAILED,     /* could not be started */
    PROTO_VM_RESTARTING, /* warm restart under way: maintenance, not failure */
    PROTO_VM_UNKNOWN,    /* the agent cannot see it (libvirt role: libvirtd unreachable) */
    PROTO_VM_N_STATES,
};

/* NULL for a value out of range. */
const char *proto_vm_state_name(int state);
/* -1 for a name that is not a VM state. */
int proto_vm_state_parse(const char *name);
/* The VM ended by itself (shutdown, crashed, panicked): a failure of its
 * service.  Stopped on order or never started is not. */
bool proto_vm_state_is_failure(int state);
/* No guest runs (any ended state, stopped or failed to start included). */
bool proto_vm_state_is_down(int state);

/* A standby agent's container states (its `containers` reports, liblxc's
 * states in lower case). */
enum proto_ct_state {
    PROTO_CT_UNKNOWN, /* liblxc said something else, or nothing */
    PROTO_CT_RUNNING,
    PROTO_CT_STOPPED,
    PROTO_CT_STARTING,
    PROTO_CT_STOPPING,
    PROTO_CT_FROZEN,
    PROTO_CT_N_STATES,
};

const char *proto_ct_state_name(enum proto_ct_state state);
/* PROTO_CT_UNKNOWN for NULL or a name that is not a container state. */
enum proto_ct_state proto_ct_state_parse(const char *name);

#endif
