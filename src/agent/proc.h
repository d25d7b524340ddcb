/* Processes the agent starts or finds: spawn in a session of their own, watch
 * for their end through a pidfd (works for any process, not only children),
 * collect the exit status of our own children, signal them race-free.
 *
 * Reaping: the agent handles SIGCHLD (a libevent signal event) by calling
 * proc_reap_children(), which waits for every exited child and hands the
 * status to its watch, if any.  The pidfd callback is what reports the end:
 * whichever of the two runs first, the status is kept. */
#ifndef VCR_AGENT_PROC_H
#define VCR_AGENT_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

struct event_base;
struct proc_watch;

/* The process ended; seen_ms is the wall-clock time at which the pidfd
 * became readable (as close to the death as the agent can tell). */
typedef void (*proc_exit_cb)(struct proc_watch *w, int64_t seen_ms, void *opaque);

/* Fork and exec argv in a new session (setsid: a signal to the agent's group
 * or the agent's death does not reach it), stdin from /dev/null, stdout and
 * stderr appended to log_path, no_new_privs set (PR_SET_NO_NEW_PRIVS: an exec
 * gains no privileges).  An exec failure is reported here, not later. */
pid_t proc_spawn(char *const argv[], const char *log_path, vcr_error_t *err);
/* The same, and the child inherits keep_fd (same number; -1: none), which
 * every other descriptor of the agent's is not. */
pid_t proc_spawn_keep(char *const argv[], const char *log_path, int keep_fd, vcr_error_t *err);
/* proc_spawn for a tool that works for the calling process and must not outlive
 * it (PR_SET_PDEATHSIG SIGKILL): a disk preparation's qemu-img, genisoimage and
 * mkfs.ext4.  A preparation is killed when its VM's start is cancelled, and by
 * its own death signal when the agent dies; its tool goes with it rather than
 * writing on beside the next preparation.  log_path NULL: the tool's stdout and
 * stderr are the caller's. */
pid_t proc_spawn_tool(char *const argv[], const char *log_path, vcr_error_t *err);

/* Watch pid through a pidfd.  cb runs once, from the loop. */
struct proc_watch *proc_watch_new(struct event_base *base, pid_t pid, proc_exit_cb cb, void *opaque,
                                  vcr_error_t *err);
pid_t proc_watch_pid(const struct proc_watch *w);
/* After the exit: the wait status, if it was our child.  Returns false otherwise. */
bool proc_watch_status(struct proc_watch *w, int *wstatus);
/* Whether the process has ended (the pidfd is readable), without waiting. */
bool proc_watch_has_exited(const struct proc_watch *w);
/* pidfd_send_signal: never hits a recycled pid. */
int proc_watch_signal(struct proc_watch *w, int sig, vcr_error_t *err);
void proc_watch_free(struct proc_watch *w);
/* Who is told of the exit from now on (a process handed from one owner to another). */
void proc_watch_set_callback(struct proc_watch *w, proc_exit_cb cb, void *opaque);

/* pidfd_getfd(2): a copy (O_CLOEXEC) of descriptor fd of process pid. */
int proc_getfd(pid_t pid, int fd, vcr_error_t *err);
/* SIGKILL to pid (through a pidfd) and wait up to timeout_ms for its end; for
 * processes that are not watched (left by an earlier agent).  0 once gone. */
int proc_kill_wait(pid_t pid, int timeout_ms, vcr_error_t *err);

/* SIGCHLD: reap every exited child, keeping statuses for their watches. */
void proc_reap_children(void);

#endif
