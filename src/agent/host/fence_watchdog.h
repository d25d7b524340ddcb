/* The fence watchdog (docs/fencing.md): a small process, `vcr-agent
 * --fence-watchdog STATE_DIR --timeout-ms N`, in a session of its own, that
 * kills this host's VMs when the agent has not heard from the server for
 * timeout_ms.  It counts by itself, so a frozen (SIGSTOP) or dead agent still
 * gets its VMs fenced.  The agent talks to it over STATE_DIR/fence.sock (UNIX
 * stream), one text line per message:
 *
 *   feed T            contact with the server at T (CLOCK_BOOTTIME ms)
 *   vms [NAME=PID]... the QEMU processes to kill (replaces the list)
 *   timeout MS        the agent's fence_timeout_ms (1000..600000): a
 *                     shorter one at once, a longer one only at the next
 *                     feed (see fence_wd_timeout)
 *   pause MS          no kill before now + MS (at most FENCE_WD_PAUSE_MAX_MS; 0 ends it)
 *   status            answered by one JSON line
 *
 * and tells the connected agents `fenced` when it killed, `paused MS` when a
 * pause began (MS left) or ended (0).
 *
 * Past the deadline nothing read from an agent can take the kill back: the
 * server may already count these VMs dead.  So on every wake-up the deadline
 * is checked before pending lines are read, and a feed read while a kill is
 * overdue is applied only once the kill ran.  The deadline is a CLOCK_BOOTTIME
 * timer (a suspend counts), and the countdown's origin (last contact, pause)
 * is kept in STATE_DIR/FENCE_WD_CONTACT_FILE, so that a respawned watchdog
 * goes on from there instead of from zero.
 *
 * The decision logic (struct fence_wd) takes the clock as an argument so that
 * it is tested without sleeping; fence_watchdog_main() is the process. */
#ifndef VCR_AGENT_FENCE_WATCHDOG_H
#define VCR_AGENT_FENCE_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define FENCE_WD_MAX_VMS      256
#define FENCE_WD_NAME_MAX     64
#define FENCE_WD_TIMEOUT_MIN  100 /* the configuration allows 1000.. */
#define FENCE_WD_TIMEOUT_MAX  600000
#define FENCE_WD_PAUSE_MAX_MS 600000
#define FENCE_WD_SOCKET       "fence.sock"
#define FENCE_WD_FENCED_FILE  "fenced.json"
/* {boot_id, contact_ms, pause_until_ms, timeout_ms}: the countdown, for the
 * next watchdog. */
#define FENCE_WD_CONTACT_FILE "fence-contact.json"

struct fence_wd_vm {
    char name[FENCE_WD_NAME_MAX + 1];
    pid_t pid;
    int pidfd; /* -1 when not opened (tests of the logic) */
};

struct fence_wd {
    int64_t timeout_ms;
    int64_t last_feed_ms; /* latest contact with the server (or the start) */
    int64_t late_feed_ms; /* contact read while a kill was overdue: applied after it; 0 none */
    int64_t pause_until_ms;
    int64_t raise_to_ms; /* a longer timeout asked for, applied at the next feed; 0 none */
    bool fired;          /* the deadline passed and the listed VMs were killed */
    size_t n_vms;
    struct fence_wd_vm vms[FENCE_WD_MAX_VMS];
};

/* Armed from now: a fresh watchdog gives the agent one full timeout. */
void fence_wd_init(struct fence_wd *w, int64_t timeout_ms, int64_t now_ms);
/* A respawned watchdog goes on with the countdown of the one before it: its
 * last contact (taken as now_ms when later), its pause, and its timeout when
 * shorter than this one's (timeout_ms 0: not known), which then waits for a
 * feed as a longer `timeout` does. */
void fence_wd_resume(struct fence_wd *w, int64_t contact_ms, int64_t pause_until_ms,
                     int64_t timeout_ms, int64_t now_ms);
/* The agent's timeout.  A shorter one applies at once.  A longer one applies
 * only with the next feed: an agent restarted sends its configured timeout
 * before the server's welcome lowers it again (fence_after_ms), and the
 * server counts on the lower one it was told; cut off from the server, the
 * host would otherwise be fenced after the longer one, later than the server
 * switches its services. */
void fence_wd_timeout(struct fence_wd *w, int64_t timeout_ms);
/* Contact at evidence_ms (clamped to now_ms; older than the last one: ignored).
 * While a kill is due (fence_wd_due) it is kept aside and applied by
 * fence_wd_check after the kill: it never cancels it. */
void fence_wd_feed(struct fence_wd *w, int64_t evidence_ms, int64_t now_ms);
/* When the listed VMs are due to be killed. */
int64_t fence_wd_deadline(const struct fence_wd *w);
/* Whether fence_wd_check would kill now: past the deadline and either not
 * fired yet or VMs listed since it fired. */
bool fence_wd_due(const struct fence_wd *w, int64_t now_ms);
/* Called for each VM to kill; vm is borrowed. */
typedef void (*fence_wd_kill_fn)(const struct fence_wd_vm *vm, void *opaque);
/* Past the deadline: kill every listed VM (then the list is empty), apply a
 * feed kept aside meanwhile, and return how many; before it: return -1.  VMs
 * listed after the deadline passed are killed at the next check: the host
 * stays fenced until contact returns. */
int fence_wd_check(struct fence_wd *w, int64_t now_ms, fence_wd_kill_fn kill, void *opaque);
/* args: "NAME=PID ..." (may be empty).  Replaces the list; with open_pidfds a
 * pidfd is opened for each new entry (kept for unchanged ones), so a recycled
 * pid is never killed.  On error the list is unchanged. */
int fence_wd_set_vms(struct fence_wd *w, const char *args, bool open_pidfds, vcr_error_t *err);
/* Closes the pidfds and empties the list. */
void fence_wd_clear(struct fence_wd *w);
/* One message line (without its newline).  reply gets a line to send back
 * (empty when none).  Returns -1 with err for a bad line. */
int fence_wd_handle_line(struct fence_wd *w, const char *line, int64_t now_ms, bool open_pidfds,
                         char *reply, size_t reply_len, vcr_error_t *err);

/* CLOCK_BOOTTIME in ms: both the agent and the watchdog count with it (it
 * keeps counting through a suspend, as the server's timeouts do). */
int64_t fence_wd_now_ms(void);

/* Creates STATE_DIR/fence.sock (a stale one is replaced) and listens. */
int fence_wd_listen(const char *state_dir, vcr_error_t *err);
/* The process: listens on listen_fd (or creates the socket when it is -1),
 * goes on with the countdown FENCE_WD_CONTACT_FILE holds (written since this
 * boot), and runs until no agent is connected and no VM is listed (then the
 * file is removed: nothing is left to fence).  Returns the exit status. */
int fence_watchdog_main(const char *state_dir, int timeout_ms, int listen_fd);
/* `--fence-watchdog DIR --pause MS`: asks the running watchdog to pause
 * (0 ends a pause); prints its answer.  Returns the exit status. */
int fence_watchdog_pause(const char *state_dir, int pause_ms);

#endif
