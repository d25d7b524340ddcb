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
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "agent/host/host_vm.h"
#include "agent/host/host_warm_priv.h"
#include "common/log.h"

static int gate_launching; /* restarts whose new QEMU is starting */
static int gate_pausing;   /* guests paused for a restart now */
static struct host_vm_warm *gate_head, **gate_tail = &gate_head; /* W_HOLD, in order */

void warm_gate_launching(struct host_vm_warm *w)
{
    w->launching = true;
    gate_launching++;
}

void warm_gate_pausing(struct host_vm_warm *w)
{
    w->pausing = true;
    gate_pausing++;
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
    if (w->pausing)
        gate_pausing--;
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

/* --- the pause's share of the CPU ---
 * The gate keeps start-ups and other pauses away from a pause, not the other
 * guests, which run on: on two cores, five TCG guests serving requests leave
 * the two QEMUs that move one guest's state a fraction of the time they need,
 * and its pause grows several times over.  So, from the gate to `cont`, every
 * thread of both QEMUs runs at nice HOST_VM_WARM_PAUSE_NICE (CFS gives a
 * thread about 9x the time of one at 0), and goes back to the agent's own
 * nice after (at the end of every restart, whichever way it ends, and of a
 * takeover).  Linux keeps a nice value per thread: each one is set.  The
 * agent's event loop thread, which takes the pause's steps, is raised with
 * them. */
static int nice_threads(pid_t pid, int nice)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long tid = strtol(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || *end != '\0' || tid <= 0)
            continue;
        /* A thread that ended meanwhile is no failure. */
        if (setpriority(PRIO_PROCESS, (id_t)tid, nice) < 0 && errno != ESRCH)
            rc = -1;
    }
    closedir(d);
    return rc;
}

/* The agent's own nice, before it raised its event loop's for a pause. */
static int agent_nice;
static int agent_boosts; /* pauses under way with the loop raised */

void warm_pause_priority(struct host_vm *vm, bool boost)
{
    struct host_vm_warm *w = vm->warm;
    /* The agent's loop takes each step of the pause (the state is in: kill,
     * `cont`): it runs raised too while a pause is under way. */
    if (boost && !w->boosted) {
        if (agent_boosts++ == 0) {
            errno = 0;
            int own = getpriority(PRIO_PROCESS, 0);
            agent_nice = errno ? 0 : own;
            setpriority(PRIO_PROCESS, 0, HOST_VM_WARM_PAUSE_NICE);
        }
        w->boosted = true;
    } else if (!boost && w->boosted) {
        if (--agent_boosts == 0)
            setpriority(PRIO_PROCESS, 0, agent_nice);
        w->boosted = false;
    }
    /* Back to the agent's own (which QEMU inherits), also after a takeover:
     * the agent that boosted them may have died mid-way. */
    errno = 0;
    int own = agent_boosts ? agent_nice : getpriority(PRIO_PROCESS, 0);
    int nice = boost ? HOST_VM_WARM_PAUSE_NICE : errno ? 0 : own;
    pid_t pids[] = {vm->proc ? vm->pid : 0, w->next ? w->next_pid : 0};
    for (size_t i = 0; i < sizeof(pids) / sizeof(pids[0]); i++)
        if (pids[i] > 0 && nice_threads(pids[i], nice) < 0)
            log_warn("VM %s: qemu pid %d: nice %d: %s", vm->spec->name, (int)pids[i], nice,
                     strerror(errno));
}
