#include "proto/proto_state.h"

#include <stddef.h>
#include <string.h>

static const char *const names[PROTO_VM_N_STATES] = {
    [PROTO_VM_STARTING] = "starting",     [PROTO_VM_RUNNING] = "running",
    [PROTO_VM_PAUSED] = "paused",         [PROTO_VM_SHUTDOWN] = "shutdown",
    [PROTO_VM_STOPPED] = "stopped",       [PROTO_VM_CRASHED] = "crashed",
    [PROTO_VM_PANICKED] = "panicked",     [PROTO_VM_FAILED] = "failed",
    [PROTO_VM_RESTARTING] = "restarting", [PROTO_VM_UNKNOWN] = "unknown",
};

const char *proto_vm_state_name(int state)
{
    return state >= 0 && state < PROTO_VM_N_STATES ? names[state] : NULL;
}

bool proto_vm_state_is_failure(int state)
{
    return state == PROTO_VM_SHUTDOWN || state == PROTO_VM_CRASHED || state == PROTO_VM_PANICKED;
}

bool proto_vm_state_is_down(int state)
{
    return proto_vm_state_is_failure(state) || state == PROTO_VM_STOPPED ||
           state == PROTO_VM_FAILED;
}

int proto_vm_state_parse(const char *name)
{
    for (int i = 0; name && i < PROTO_VM_N_STATES; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

static const char *const ct_names[PROTO_CT_N_STATES] = {
    [PROTO_CT_UNKNOWN] = "unknown",   [PROTO_CT_RUNNING] = "running",
    [PROTO_CT_STOPPED] = "stopped",   [PROTO_CT_STARTING] = "starting",
    [PROTO_CT_STOPPING] = "stopping", [PROTO_CT_FROZEN] = "frozen",
};

const char *proto_ct_state_name(enum proto_ct_state state)
{
    return (unsigned)state < PROTO_CT_N_STATES ? ct_names[state] : ct_names[PROTO_CT_UNKNOWN];
}

enum proto_ct_state proto_ct_state_parse(const char *name)
{
    for (int i = 1; name && i < PROTO_CT_N_STATES; i++)
        if (strcmp(ct_names[i], name) == 0)
            return (enum proto_ct_state)i;
    return PROTO_CT_UNKNOWN;
}
