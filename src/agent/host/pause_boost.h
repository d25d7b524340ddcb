/* The scheduling boost of a guest's pause (docs/warm-restart.md, "Several VMs
 * of a host").  While a warm restart has its guest paused, the two QEMUs (the
 * old one sending the device state, the new one loading it and answering
 * `cont`) and the agent's own thread (which relays `stop`, MIGRATION
 * `completed`, `cont`) run under SCHED_FIFO at the lowest real-time priority,
 * ahead of every ordinary task: on a host whose guests keep its cores busy
 * (a TCG guest takes a core), each wake-up of the pause's chain otherwise
 * waits for a busy guest's time slice, and a pause of ~5 ms stretched to
 * 40-80 ms with six guests on two cores (a nice value of -10 did not help:
 * the fair scheduler lets the running task finish its slice).  keepalived
 * runs its VRRP process so, for the same reason (vrrp_rt_priority).  The
 * pause is bounded (the restart's deadline), and the kernel's real-time
 * throttling (sched_rt_runtime_us) keeps 5% of every second for the others.
 *
 * Linux keeps the policy per thread (sched_setscheduler(tid)): every thread in
 * /proc/PID/task is set; a thread created later by a boosted thread (QEMU's
 * migration thread) inherits the boost. */
#ifndef VCR_AGENT_HOST_PAUSE_BOOST_H
#define VCR_AGENT_HOST_PAUSE_BOOST_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"

/* The policy of a pause's threads: SCHED_FIFO at this priority. */
#define PAUSE_BOOST_PRIORITY 1

/* Sets every thread of process pid to policy at priority (0 for
 * SCHED_OTHER, which keeps each thread's nice value).  Returns the number of
 * threads set, or -1 with err (the process's task list unreadable, or a thread
 * that could not be set other than one that ended meanwhile). */
int proc_set_policy(pid_t pid, int policy, int priority, vcr_error_t *err);

/* The policy and priority of process pid's main thread: 0, or -1 with err. */
int proc_get_policy(pid_t pid, int *policy, int *priority, vcr_error_t *err);

/* The threads of process pid still under a pause's boost (SCHED_FIFO at
 * PAUSE_BOOST_PRIORITY) go back to SCHED_OTHER; returns how many (0 when none,
 * or the process is gone).  For a QEMU adopted from an agent that died in a
 * pause: nothing else would ever put it back, and a guest spinning at a
 * real-time priority starves the host's ordinary tasks (its agent included). */
int pause_boost_undo_left(pid_t pid);

/* One pause's boost: up to two QEMUs and the agent's thread, each with the
 * policy it had before. */
struct pause_boost {
    pid_t pid[2];
    int policy[2], priority[2];
    bool self; /* the calling thread was boosted */
    int self_policy, self_priority;
};

/* Boosts the processes a and c (0: none) and the calling thread; what could
 * not be boosted (no CAP_SYS_NICE, a process gone) is logged and left as it
 * was: the pause only lasts longer. */
void pause_boost_begin(struct pause_boost *b, pid_t a, pid_t c);
/* Puts back the policy of process pid's threads still at the boost's, if b
 * boosted it (a process gone meanwhile is not an error), and forgets it. */
void pause_boost_end_pid(struct pause_boost *b, pid_t pid);
/* Puts everything b boosted back (the calling thread must be the one that
 * began it). */
void pause_boost_end(struct pause_boost *b);

#endif
