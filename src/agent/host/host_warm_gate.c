/* The pause gate: the host-wide side of warm restarts (docs/warm-restart.md,
 * "Several VMs of a host").  `POST /v1/hosts/H/warm-restart` (`vcr host
 * warm-restart`) sends one order per VM, all at once: their new QEMUs start
 * together while every guest runs; a QEMU starting up takes a core for tens of
 * ms.  A guest is paused only once no new QEMU of the host is still starting,
 * and one guest at a time, each from `stop` to `cont` and the old QEMU's end
 * before the next, so that a pause never shares the cores with start-ups or
 * with other pauses.  An order that arrives while a guest is paused starts its
 * QEMU at once (not held back).  One agent serves one host: the gate is the
 * process's. */
#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "agent/host/host_vm.h"
#include "agent/host/host_warm_priv.h"

static int gate_launching; /* restarts whose new QEMU is starting */
static int gate_pausing;   /* guests paused for a restart now */
static struct host_vm_warm *gate_head, **gate_tail = &gate_head; /* W_HOLD, in order */

void warm_gate_launching(struct host_vm_warm *w)
{
    w->launching = true;
    gate_launching++;
}

/* The guest's pause runs ahead of the host's other guests (pause_boost.h):
 * the old QEMU, the new one and the agent's thread, until the gate is left. */
void warm_gate_pausing(struct host_vm_warm *w)
{
    w->pausing = true;
    gate_pausing++;
    pause_boost_begin(&w->boost, proc_watch_pid(w->vm->proc), w->next_pid);
}

void warm_gate_unwait(struct host_vm_warm *w)
{
    for (struct host_vm_warm **p = &gate_head; *p; p = &(*p)->wait_next)
        if (*p == w) {
            *p = w->wait_next;
            if (gate_tail == &w->wait_next)
                gate_tail = p;
            w->wait_next = NULL;
            return;
        }
}

static void gate_release(void)
{
    while (gate_launching == 0 && gate_pausing == 0 && gate_head) {
        struct host_vm_warm *w = gate_head;
        warm_gate_unwait(w);
        warm_start_pause(w->vm);
    }
}

/* Leaves the gate's counts and queue; release: let the next one go (not when
 * the agent is going away). */
void warm_gate_leave(struct host_vm_warm *w, bool release)
{
    if (w->launching)
        gate_launching--;
    if (w->pausing) {
        gate_pausing--;
        pause_boost_end(&w->boost);
    }
    w->launching = w->pausing = false;
    warm_gate_unwait(w);
    if (release)
        gate_release();
}

void warm_gate_hold(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (w->launching)
        gate_launching--;
    w->launching = false;
    w->step = W_HOLD;
    w->wait_next = NULL;
    *gate_tail = w;
    gate_tail = &w->wait_next;
    struct timeval tv = {.tv_sec = HOST_VM_WARM_HOLD_MS / 1000,
                         .tv_usec = (HOST_VM_WARM_HOLD_MS % 1000) * 1000};
    evtimer_add(w->launch_timer, &tv);
    gate_release();
}
