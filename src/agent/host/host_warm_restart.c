/* Warm restart of one VM's QEMU (docs/warm-restart.md; LAB-NOTES "Warm-VM
 * restart").  The guest's RAM lives in a shared file that outlives QEMU, so
 * only the device state moves, straight from the old QEMU into the new one
 * over a UNIX socket.  The new QEMU is started first, beside the old one that
 * still runs the guest; the guest is paused only once the new QEMU has proved
 * it starts and listens for the state:
 *
 *   take the old QEMU's tap descriptor (pidfd_getfd) -> move its NAME.pid and
 *   NAME.qmp aside to NAME.old.pid / NAME.old.qmp -> spawn the new QEMU
 *   (-incoming defer, the same RAM file, `-netdev tap,fd=N`, the freed
 *   NAME.pid / NAME.qmp) -> its QMP greeting -> put the tap's vnet header size
 *   back (tap_fd.h) -> new: x-ignore-shared, events, late-block-activate;
 *   migrate-incoming unix:NAME.mig -> old: x-ignore-shared, events -> old:
 *   stop + migrate unix:NAME.mig (sent together: the pause begins) -> the new
 *   QEMU's MIGRATION event `completed` -> SIGKILL the old one (pidfd) -> `cont`
 *   on the new one (the pause ends) -> once the old one's exit is seen too, the
 *   new QEMU becomes the VM's -> running.
 *
 * This is what QEMU's CPR (cpr-reboot, cpr-transfer) does inside QEMU, built
 * from the parts QEMU 7.2 has.  The old QEMU is killed rather than told to
 * `quit`: QEMU removes its pid file and QMP socket by path when it exits, and
 * those paths are the new QEMU's by then.  It is killed before the new one
 * runs, so that whichever agent looks later finds the old QEMU alive only
 * while the new one has never run the guest (the takeover relies on it).
 * Nothing is lost by it: the migration has flushed and inactivated its disks,
 * the guest's memory is in the shared files, and a stopped QEMU writes none
 * of it.
 *
 * Until the old QEMU is killed it holds the guest: any failure (the new QEMU
 * cannot be spawned, exits, does not greet within HOST_VM_WARM_LAUNCH_MS,
 * refuses the state; the deadline) kills the new one, waits for its end, puts
 * the old one's files back and `cont`s the old one if it was stopped.  After
 * that (the new QEMU dies or refuses `cont`), every QEMU left is killed and the
 * VM is booted cold from its image.
 *
 * A journal (NAME.warm) is written before the new QEMU is spawned (and again
 * with its pid) and removed at the end, so that an agent killed mid-way can
 * take the restart over when it starts again (host_vm_warm_recover): while the
 * old QEMU lives it holds the guest, so the new one is killed and the old one
 * `cont`ed; a new one alone is kept if it runs the guest or has the whole
 * state (paused), and booted cold otherwise; past
 * HOST_VM_WARM_RECOVER_WINDOW_MS it leaves things to the server. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host/host_vm.h"
#include "agent/host/host_vm_priv.h"
#include "agent/host/tap_fd.h"
#include "agent/host/host_warm_priv.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* After the old QEMU's migration failed: how long the new one's own failure
 * may take to arrive, to be reported instead. */
#define HOST_VM_WARM_CAUSE_WAIT_MS 200

/* Only once the new QEMU is gone (it removes its files by path when it exits):
 * the old QEMU's pid file and QMP socket go back to their names. */
static void put_back(struct host_vm *vm)
{
    if (!vm->warm->aside)
        return;
    warm_names_back(vm);
    vm->warm->aside = false;
}

/* The old QEMU gets back the vnet header size it reads and writes frames with,
 * which a new QEMU resets as soon as it sets the tap up (tap_fd.h), whether it
 * gets to its QMP greeting or fails after that. */
static void restore_tap(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    cleanup_error vcr_error_t err = NULL;
    if (w->tap_fd >= 0 && w->tap_hdr > 0 && tap_vnet_hdr_set(w->tap_fd, w->tap_hdr, &err) < 0)
        log_warn("VM %s: tap `%s`: %s", vm->spec->name, vm->spec->tap, vcr_error_msg(err));
}

static void close_tap(struct host_vm_warm *w)
{
    if (w->tap_fd >= 0)
        close(w->tap_fd);
    w->tap_fd = -1;
}

/* Forgets the new QEMU that is not the VM's (yet): no signal, no wait. */
static void next_free(struct host_vm_warm *w)
{
    qmp_client_free(w->next_qmp);
    w->next_qmp = NULL;
    proc_watch_free(w->next);
    w->next = NULL;
}

/* --- the pause gate ---
 * The warm restarts of a host's VMs (`vcr host warm-restart` sends one order
 * per VM) start their new QEMUs all at once, while every guest runs; a QEMU
 * starting up takes a core for tens of ms.  A guest is paused only once no new
 * QEMU of the host is still starting, and one guest at a time, so that a pause
 * never shares the cores with start-ups or with other pauses.  One agent
 * serves one host: the gate is the process's. */
static int gate_launching; /* restarts whose new QEMU is starting */
static int gate_pausing;   /* guests paused for a restart now */
static struct host_vm_warm *gate_head, **gate_tail = &gate_head; /* W_HOLD, in order */

static void start_pause(struct host_vm *vm);

static void gate_unwait(struct host_vm_warm *w)
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
        gate_unwait(w);
        start_pause(w->vm);
    }
}

/* Leaves the gate's counts and queue; release: let the next one go (not when
 * the agent is going away). */
static void gate_leave(struct host_vm_warm *w, bool release)
{
    if (w->launching)
        gate_launching--;
    if (w->pausing)
        gate_pausing--;
    w->launching = w->pausing = false;
    gate_unwait(w);
    if (release)
        gate_release();
}

static void gate_hold(struct host_vm *vm)
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

bool host_vm_warm_exit_point_valid(const char *point)
{
    static const char *const points[] = {"launched", "stopped", "migrated", "handed"};
    for (size_t i = 0; point && i < sizeof(points) / sizeof(points[0]); i++)
        if (strcmp(point, points[i]) == 0)
            return true;
    return false;
}

/* Test fault (agent --test-faults): the agent dies here, as if killed. */
static void test_exit_point(const struct host_vm *vm, const char *point)
{
#if VCR_TEST_FAULTS
    if (strcmp(vm->warm->exit_at, point) != 0)
        return;
    log_warn("VM %s: test fault: the agent kills itself (SIGKILL) at `%s`", vm->spec->name, point);
    raise(SIGKILL);
#else
    (void)vm;
    (void)point;
#endif
}

void host_vm_warm_free(struct host_vm_warm *w)
{
    if (w == NULL)
        return;
    /* The agent is going: a new QEMU still beside the old one is left to the
     * next agent, which finds it through the journal. */
    gate_leave(w, false);
    next_free(w);
    close_tap(w);
    if (w->poll)
        event_free(w->poll);
    if (w->deadline)
        event_free(w->deadline);
    if (w->launch_timer)
        event_free(w->launch_timer);
    free(w);
}

/* Detaches the warm restart from the VM, reports it, frees it. */
void warm_finish(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    gate_leave(w, true);
    vm->warm = NULL;
    close_tap(w);
    warm_remove_state_files(vm);
    log_info("VM %s: warm restart %s%s%s (launch %.1f ms, pause %.1f ms: suspend %.1f ms, "
             "resume %.1f ms; state %llu bytes)",
             vm->spec->name,
             w->result.ok         ? "done"
             : w->result.fallback ? "fell back"
                                  : "failed",
             w->result.error[0] ? ": " : "", w->result.error, w->result.launch_ms,
             w->result.pause_ms, w->result.suspend_ms, w->result.resume_ms,
             (unsigned long long)w->result.state_bytes);
    if (w->cb)
        w->cb(vm, &w->result, w->opaque);
    host_vm_warm_free(w);
}

/* No QEMU of the VM is left: boot from the image. */
void warm_cold_boot(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    w->result.ok = false;
    w->result.fallback = true;
    close_tap(w);
    w->aside = false; /* host_vm_start removes NAME.old.* with the other runtime files */
    /* host_vm_start reports through host_vm_changed: not while vm->warm is set. */
    vm->warm = NULL;
    warm_remove_state_files(vm);
    char why[700];
    snprintf(why, sizeof(why), "cold boot after a failed warm restart: %s", w->result.error);
    log_warn("VM %s: %s", vm->spec->name, why);
    cleanup_error vcr_error_t err = NULL;
    if (host_vm_start(vm, why, &err) < 0) {
        size_t n = strlen(w->result.error);
        snprintf(w->result.error + n, sizeof(w->result.error) - n, "; the cold boot failed: %s",
                 vcr_error_msg(err));
    }
    vm->warm = w;
    warm_finish(vm);
}

static void maybe_cold_boot(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (vm->proc == NULL && w->next == NULL)
        warm_cold_boot(vm);
}

/* The guest cannot go on in any QEMU: kill what is left, boot cold after. */
static void fallback(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    w->step = W_FALLBACK;
    evtimer_del(w->poll);
    evtimer_del(w->launch_timer);
    if (vm->proc)
        proc_watch_signal(vm->proc, SIGKILL, NULL);
    if (w->next)
        proc_watch_signal(w->next, SIGKILL, NULL);
    maybe_cold_boot(vm); /* otherwise the last exit does */
}

static bool closed_error(const char *error)
{
    return error && strncmp(error, "connection closed", 17) == 0;
}

static void report_rolled_back(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (strstr(w->result.error, "the old qemu runs on") == NULL) {
        size_t n = strlen(w->result.error);
        snprintf(w->result.error + n, sizeof(w->result.error) - n, "; the old qemu runs on");
    }
    evtimer_del(w->deadline);
    evtimer_del(w->poll);
    char cause[VM_CAUSE_MAX];
    snprintf(cause, sizeof(cause),
             "warm restart abandoned (%.300s); the guest runs on in qemu pid %d%s", w->result.error,
             (int)vm->pid, w->stopped ? "" : ", never paused");
    vm_sm_restarted(&vm->sm, cause);
    if (w->was_paused && !w->stopped)
        vm->sm.state = VM_STATE_PAUSED; /* untouched: as it was */
    host_vm_changed(vm, vcr_wall_ms());
    warm_finish(vm);
}

static void resume_old(struct host_vm *vm);

/* `cont` of the old QEMU: refused for a moment while a migration that lost
 * its destination winds down ("Migration is not finalized yet"): tried again. */
static void on_resume_old(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || w->step != W_RESUME_OLD)
        return;
    if (error && !closed_error(error) && ++w->resume_tries < 100) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 10 * 1000};
        evtimer_add(w->poll, &tv);
        return;
    }
    if (error) {
        size_t n = strlen(w->result.error);
        snprintf(w->result.error + n, sizeof(w->result.error) - n,
                 "; the old qemu could not be resumed: %s", error);
        fallback(vm);
        return;
    }
    report_rolled_back(vm);
}

static void resume_old(struct host_vm *vm)
{
    cleanup_error vcr_error_t err = NULL;
    if (!vm->qmp_ready || qmp_client_command(vm->qmp, "cont", NULL, on_resume_old, vm, &err) < 0) {
        size_t n = strlen(vm->warm->result.error);
        snprintf(vm->warm->result.error + n, sizeof(vm->warm->result.error) - n,
                 "; the old qemu cannot be resumed: no QMP");
        fallback(vm);
    }
}

/* The new QEMU is gone and the old one still holds the guest: it takes the
 * guest up again if it was stopped (only now: never two QEMUs running it). */
static void rolled_back(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    restore_tap(vm);
    close_tap(w);
    if (vm->proc == NULL) {
        fallback(vm); /* the old QEMU ended meanwhile */
        return;
    }
    put_back(vm);
    if (!w->stopped) {
        report_rolled_back(vm);
        return;
    }
    w->step = W_RESUME_OLD;
    qmp_client_command(vm->qmp, "migrate_cancel", NULL, NULL, NULL, NULL);
    resume_old(vm);
}

static bool old_holds_guest(enum warm_step s)
{
    return s == W_LAUNCH || s == W_CAPS_NEXT || s == W_LISTEN || s == W_HOLD || s == W_CAPS_OUT ||
           s == W_MIGRATE || s == W_TALLY;
}

/* Something went wrong: undo what can be undone. */
void warm_fail(struct host_vm *vm, const char *fmt, ...)
{
    struct host_vm_warm *w = vm->warm;
    if (w->result.error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->result.error, sizeof(w->result.error), fmt, ap);
        va_end(ap);
    }
    evtimer_del(w->poll);
    evtimer_del(w->launch_timer);
    gate_leave(w, true);
    if (w->step == W_UNLAUNCH || w->step == W_FALLBACK || w->step == W_RESUME_OLD)
        return; /* already undoing */
    log_warn("VM %s: warm restart: %s", vm->spec->name, w->result.error);
    if (!old_holds_guest(w->step)) {
        fallback(vm);
        return;
    }
    /* The old QEMU holds the guest: the new one goes first, then the old one
     * goes on (rolled_back, from the new one's exit). */
    w->step = W_UNLAUNCH;
    if (w->next) {
        proc_watch_signal(w->next, SIGKILL, NULL);
        return; /* on_next_exit goes on */
    }
    rolled_back(vm);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm_warm *w = arg;
    warm_fail(w->vm, "not done within %d ms", HOST_VM_WARM_DEADLINE_MS);
}

void warm_send_step(struct host_vm *vm, enum warm_step step, const char *cmd, json_t *args,
                    qmp_reply_cb cb)
{
    vm->warm->step = step;
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(vm->qmp, cmd, args, cb, vm, &err) < 0)
        warm_fail(vm, "QMP %s: %s", cmd, vcr_error_msg(err));
}

static json_t *ignore_shared_args(void)
{
    return json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared", "state",
                     1);
}

/* Common checks of a step's reply: false when the step must not go on. */
bool warm_step_ok(struct host_vm *vm, enum warm_step step, const char *cmd, const char *error)
{
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || w->step != step)
        return false;
    if (closed_error(error))
        return false; /* the process exit decides */
    if (error) {
        warm_fail(vm, "QMP %s: %s", cmd, error);
        return false;
    }
    return true;
}

static void on_query_migrate(struct qmp_client *c, json_t *result, const char *error, void *opaque);

static void poll_migration(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm *vm = arg;
    if (vm->warm == NULL)
        return;
    if (vm->warm->step == W_RESUME_OLD) {
        resume_old(vm);
        return;
    }
    if (vm->warm->step == W_MIGRATE) {
        warm_fail(vm, "%s", vm->warm->pending_error);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(vm->qmp, "query-migrate", NULL, on_query_migrate, vm, &err) < 0)
        warm_fail(vm, "QMP query-migrate: %s", vcr_error_msg(err));
}

static void schedule_poll(struct host_vm *vm)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = HOST_VM_WARM_POLL_MS * 1000};
    evtimer_add(vm->warm->poll, &tv);
}

/* `cont` answered: the guest runs again; its pause and resume end now. */
static void warm_resumed_now(struct host_vm_warm *w)
{
    double t = vcr_mono_ms_f();
    w->result.resume_ms = t - w->t_saved;
    w->result.pause_ms = t - w->t_stop;
    w->result.downtime_ms = w->result.pause_ms;
}

/* The guest runs in the VM's (new) QEMU: the restart succeeded. */
static void warm_done(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    w->result.ok = true;
    evtimer_del(w->deadline);
    char cause[256];
    snprintf(cause, sizeof(cause), "warm restart done (pause %.1f ms)", w->result.pause_ms);
    vm_sm_restarted(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    warm_finish(vm);
}

static void on_cont(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_CONT, "cont", error))
        return;
    struct host_vm_warm *w = vm->warm;
    warm_resumed_now(w);
    warm_done(vm);
}

static void on_query_migrate(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || w->step != W_LOADING)
        return;
    if (!warm_step_ok(vm, w->step, "query-migrate", error))
        return;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (status && strcmp(status, "completed") == 0) {
        warm_send_step(vm, W_CONT, "cont", NULL, on_cont);
        return;
    }
    if (status && (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)) {
        const char *desc = json_string_value(json_object_get(result, "error-desc"));
        warm_fail(vm, "new qemu: migration %s%s%s", status, desc ? ": " : "", desc ? desc : "");
        return;
    }
    schedule_poll(vm);
}

/* Takeover: `migrate-incoming` of a sealed state file is under way. */
static void on_incoming(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_INCOMING, "migrate-incoming", error))
        return;
    vm->warm->step = W_LOADING;
    poll_migration(-1, 0, vm);
}

/* exec: URIs run through /bin/sh -c. */
static json_t *exec_uri(const char *fmt, const char *path)
{
    char *s = NULL;
    if (asprintf(&s, fmt, path) < 0)
        return NULL;
    json_t *args = json_pack("{s:s}", "uri", s);
    free(s);
    return args;
}

static void on_caps_in(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_CAPS_IN, "migrate-set-capabilities", error))
        return;
    warm_send_step(vm, W_INCOMING, "migrate-incoming", exec_uri("exec:cat '%s'", vm->paths.state),
                   on_incoming);
}

/* Takeover: the VM's QEMU (vm->qmp) waits with -incoming and no other is
 * left: load the state file an earlier agent sealed into it. */
static void load_state(struct host_vm *vm)
{
    cleanup_error vcr_error_t err = NULL;
    /* The checksum first: a corrupt state must never reach QEMU. */
    if (warm_state_verify(vm->paths.state, vm->paths.state_sum, &err) < 0) {
        warm_fail(vm, "%s", vcr_error_msg(err));
        return;
    }
    warm_send_step(vm, W_CAPS_IN, "migrate-set-capabilities", ignore_shared_args(), on_caps_in);
}

void warm_cont(struct host_vm *vm)
{
    vm->warm->t_saved = vcr_mono_ms_f();
    warm_send_step(vm, W_CONT, "cont", NULL, on_cont);
}

/* --- the new QEMU while the old one is still the VM's --- */

static void send_next(struct host_vm *vm, enum warm_step step, const char *cmd, json_t *args,
                      qmp_reply_cb cb)
{
    struct host_vm_warm *w = vm->warm;
    w->step = step;
    cleanup_error vcr_error_t err = NULL;
    if (w->next_qmp == NULL || qmp_client_command(w->next_qmp, cmd, args, cb, vm, &err) < 0)
        warm_fail(vm, "new qemu pid %d: QMP %s: %s", (int)w->next_pid, cmd,
                  err ? vcr_error_msg(err) : "no connection");
}

/* The replies of the new QEMU: a closed connection is its exit's to report. */
static bool next_step_ok(struct host_vm *vm, enum warm_step step, const char *cmd,
                         const char *error)
{
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || w->step != step || closed_error(error))
        return false;
    if (error) {
        warm_fail(vm, "new qemu pid %d: QMP %s: %s", (int)w->next_pid, cmd, error);
        return false;
    }
    return true;
}

/* x-ignore-shared on both sides: the RAM is in the shared file, only the
 * devices move.  MIGRATION events say when the state is in (no polling); the
 * new QEMU activates the disks only at `cont` (late-block-activate), so that
 * until then the old one can take them back. */
static json_t *caps_args(bool incoming)
{
    json_t *caps = json_pack("[{s:s, s:b}, {s:s, s:b}]", "capability", "x-ignore-shared", "state",
                             1, "capability", "events", "state", 1);
    if (caps && incoming)
        json_array_append_new(
            caps, json_pack("{s:s, s:b}", "capability", "late-block-activate", "state", 1));
    return caps ? json_pack("{s:o}", "capabilities", caps) : NULL;
}

static json_t *mig_uri(const struct host_vm *vm)
{
    char uri[4200];
    snprintf(uri, sizeof(uri), "unix:%s", vm->paths.mig);
    return json_pack("{s:s}", "uri", uri);
}

static void on_stop(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_MIGRATE, "stop", error))
        return;
    test_exit_point(vm, "stopped");
}

static void on_migrate(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    warm_step_ok(vm, W_MIGRATE, "migrate", error);
}

static void on_caps_out(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_CAPS_OUT, "migrate-set-capabilities", error))
        return;
    test_exit_point(vm, "launched");
    /* The pause begins.  `migrate` goes with `stop`, not after its reply: QEMU
     * runs a monitor's commands in order, and a round trip less is spent with
     * the guest paused. */
    struct host_vm_warm *w = vm->warm;
    w->t_stop = vcr_mono_ms_f();
    w->stopped = true;
    warm_send_step(vm, W_MIGRATE, "stop", NULL, on_stop);
    if (w->step == W_MIGRATE)
        warm_send_step(vm, W_MIGRATE, "migrate", mig_uri(vm), on_migrate);
}

static void on_listen(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!next_step_ok(vm, W_LISTEN, "migrate-incoming", error))
        return;
    log_info("VM %s: warm restart: new qemu pid %d listens on `%s`", vm->spec->name,
             (int)vm->warm->next_pid, vm->paths.mig);
    gate_hold(vm);
}

/* Out of the gate (or held too long): the pause begins with the old QEMU's
 * capabilities. */
static void start_pause(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    evtimer_del(w->launch_timer);
    w->pausing = true;
    gate_pausing++;
    warm_send_step(vm, W_CAPS_OUT, "migrate-set-capabilities", caps_args(false), on_caps_out);
}

static void on_caps_next(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!next_step_ok(vm, W_CAPS_NEXT, "migrate-set-capabilities", error))
        return;
    unlink(vm->paths.mig); /* a stale socket file of an earlier attempt */
    send_next(vm, W_LISTEN, "migrate-incoming", mig_uri(vm), on_listen);
}

/* Both the new QEMU's `cont` and the old one's exit are in: the new QEMU is the VM's. */
static void handed_over(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (!w->old_gone || !w->resumed)
        return;
    host_vm_take_qemu(vm, w->next, w->next_qmp, w->result.qemu);
    w->next = NULL;
    w->next_qmp = NULL;
    warm_done(vm);
}

static void on_handover_cont(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!next_step_ok(vm, W_HANDOVER, "cont", error))
        return;
    struct host_vm_warm *w = vm->warm;
    warm_resumed_now(w);
    w->resumed = true;
    gate_leave(w, true);
    log_info("VM %s: warm restart: the guest runs in qemu pid %d (pause %.1f ms: state moved in "
             "%.1f ms, cont %.1f ms)",
             vm->spec->name, (int)w->next_pid, w->result.pause_ms, w->result.suspend_ms,
             w->result.resume_ms);
    handed_over(vm);
}

/* The old QEMU goes (it must never run the guest again), then the new one runs it. */
static void hand_over(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    test_exit_point(vm, "migrated");
    w->step = W_HANDOVER;
    cleanup_error vcr_error_t err = NULL;
    if (proc_watch_signal(vm->proc, SIGKILL, &err) < 0) {
        warm_fail(vm, "old qemu: %s", vcr_error_msg(err));
        return;
    }
    test_exit_point(vm, "handed");
    send_next(vm, W_HANDOVER, "cont", NULL, on_handover_cont);
}

static void on_old_query_migrate(struct qmp_client *c, json_t *result, const char *error,
                                 void *opaque)
{
    (void)c;
    (void)error;
    struct host_vm *vm = opaque;
    json_t *ram = json_object_get(result, "ram");
    json_int_t bytes = json_integer_value(json_object_get(ram, "transferred"));
    if (vm->warm && bytes > 0)
        vm->warm->result.state_bytes = (uint64_t)bytes;
    if (vm->warm && vm->warm->step == W_TALLY)
        hand_over(vm);
}

/* The new QEMU has the whole device state.  What the old one sent is asked
 * first (once it is killed nobody can tell): usually the answer to the
 * question asked at its own `completed` is in already; otherwise one round
 * trip of the pause goes to it. */
static void migrated(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    w->t_saved = vcr_mono_ms_f();
    w->result.suspend_ms = w->t_saved - w->t_stop;
    if (w->result.state_bytes == 0 && vm->qmp_ready &&
        qmp_client_command(vm->qmp, "query-migrate", NULL, on_old_query_migrate, vm, NULL) == 0) {
        w->step = W_TALLY;
        return;
    }
    hand_over(vm);
}

/* The MIGRATION events of either side; data {"status": ...}. */
static void migration_event(struct host_vm *vm, bool incoming, json_t *data)
{
    struct host_vm_warm *w = vm->warm;
    const char *status = json_string_value(json_object_get(data, "status"));
    if (w == NULL || w->step != W_MIGRATE || status == NULL)
        return;
    if (strcmp(status, "completed") == 0) {
        if (incoming)
            migrated(vm);
        else /* what was sent, asked while the new QEMU may still be loading it */
            qmp_client_command(vm->qmp, "query-migrate", NULL, on_old_query_migrate, vm, NULL);
        return;
    }
    if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
        char last[300];
        host_vm_log_last_line(vm->paths.log, last, sizeof(last));
        snprintf(w->pending_error, sizeof(w->pending_error), "%s qemu pid %d: migration %s%s%s",
                 incoming ? "new" : "old", (int)(incoming ? w->next_pid : vm->pid), status,
                 last[0] ? ": " : "", last);
        /* Both sides fail when the new QEMU refuses the state: the old one sees
         * it hang up, the new one (QEMU 7.2) exits after its event.  Its exit,
         * if it comes soon, says more (and its status). */
        struct timeval tv = {.tv_sec = 0, .tv_usec = HOST_VM_WARM_CAUSE_WAIT_MS * 1000};
        evtimer_add(w->poll, &tv);
    }
}

void host_vm_warm_qmp_event(struct host_vm *vm, const char *name, json_t *data)
{
    if (strcmp(name, "MIGRATION") == 0)
        migration_event(vm, false, data);
}

static void on_next_event(struct qmp_client *c, const char *name, json_t *data, int64_t ts_us,
                          void *opaque)
{
    (void)c;
    (void)ts_us;
    struct host_vm_warm *w = opaque;
    if (strcmp(name, "MIGRATION") == 0)
        migration_event(w->vm, true, data);
}

static void on_next_ready(struct qmp_client *c, void *opaque)
{
    (void)c;
    struct host_vm_warm *w = opaque;
    struct host_vm *vm = w->vm;
    if (w->step != W_LAUNCH)
        return;
    evtimer_del(w->launch_timer);
    w->result.launch_ms = vcr_mono_ms_f() - w->t_spawn;
    /* The new QEMU has set the tap up for itself: the old one still runs the guest. */
    restore_tap(vm);
    close_tap(w);
    log_info("VM %s: warm restart: new qemu pid %d (%s) ready in %.1f ms beside the old one "
             "(pid %d)",
             vm->spec->name, (int)w->next_pid, w->result.qemu, w->result.launch_ms, (int)vm->pid);
    send_next(vm, W_CAPS_NEXT, "migrate-set-capabilities", caps_args(true), on_caps_next);
}

static void on_next_closed(struct qmp_client *c, const char *reason, void *opaque)
{
    struct host_vm_warm *w = opaque;
    if (w->step != W_LAUNCH || w->next == NULL || proc_watch_has_exited(w->next))
        return; /* its exit, the launch timer or the promotion decides */
    /* Closed before the greeting, or not listening yet: try again while the
     * launch may still succeed; the timer ends it otherwise. */
    int left = (int)(w->t_spawn + HOST_VM_WARM_LAUNCH_MS - vcr_mono_ms_f());
    cleanup_error vcr_error_t err = NULL;
    if (left > 0 && qmp_client_connect_retry(c, w->vm->paths.qmp, left, &err) == 0)
        return;
    log_debug("VM %s: new qemu QMP: %s", w->vm->spec->name,
              err      ? vcr_error_msg(err)
              : reason ? reason
                       : "closed");
}

static void on_launch_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm_warm *w = arg;
    if (w->step == W_HOLD) {
        log_warn("VM %s: warm restart: held %d ms for the host's other restarts: pausing now",
                 w->vm->spec->name, HOST_VM_WARM_HOLD_MS);
        gate_unwait(w);
        start_pause(w->vm);
        return;
    }
    if (w->step == W_LAUNCH)
        warm_fail(w->vm, "new qemu pid %d (%s): no QMP greeting within %d ms; the old qemu runs on",
                  (int)w->next_pid, w->result.qemu, HOST_VM_WARM_LAUNCH_MS);
}

static void on_next_exit(struct proc_watch *pw, int64_t seen_ms, void *opaque)
{
    (void)seen_ms;
    struct host_vm_warm *w = opaque;
    struct host_vm *vm = w->vm;
    int wstatus = 0;
    bool have_status = proc_watch_status(pw, &wstatus);
    next_free(w);
    char how[128], last[300], why[700];
    vm_exit_cause(have_status, wstatus, how, sizeof(how));
    host_vm_log_last_line(vm->paths.log, last, sizeof(last));
    switch (w->step) {
    case W_UNLAUNCH:
        rolled_back(vm);
        return;
    case W_FALLBACK:
        maybe_cold_boot(vm);
        return;
    case W_LAUNCH:
        snprintf(why, sizeof(why),
                 "new qemu (%.200s): %s before its QMP greeting%s%s; the old qemu runs on",
                 w->result.qemu, how, last[0] ? ": " : "", last);
        break;
    case W_HANDOVER:
        snprintf(why, sizeof(why), "new qemu pid %d: %s before it resumed the guest%s%s",
                 (int)w->next_pid, how, last[0] ? ": " : "", last);
        break;
    default:
        snprintf(why, sizeof(why),
                 "new qemu pid %d: %s before it had the device state%s%s; the old qemu runs on",
                 (int)w->next_pid, how, last[0] ? ": " : "", last);
        break;
    }
    warm_fail(vm, "%s", why);
}

static const struct qmp_client_ops next_qmp_ops = {
    .ready = on_next_ready,
    .event = on_next_event,
    .closed = on_next_closed,
};

/* Spawns the new QEMU beside the old one: -incoming defer, the tap inherited. */
static int launch_next(struct host_vm *vm, vcr_error_t *err)
{
    struct host_vm_warm *w = vm->warm;
    struct vm_launch launch = {.qemu = w->result.qemu,
                               .accel = vm->env.accel,
                               .spec = vm->spec,
                               .paths = &vm->paths,
                               .incoming = true,
                               .tap_fd = w->tap_fd,
                               .runas = host_vm_runas(vm)};
    char **argv = vm_qemu_argv(&launch, err);
    if (argv == NULL)
        return -1;
    host_vm_log_header(vm, argv);
    w->t_spawn = vcr_mono_ms_f();
    pid_t pid = proc_spawn_keep(argv, vm->paths.log, w->tap_fd, err);
    vm_argv_free(argv);
    if (pid < 0)
        return vcr_error_wrap(err, "new qemu");
    w->next = proc_watch_new(vm->env.base, pid, on_next_exit, w, err);
    if (w->next == NULL) {
        kill(pid, SIGKILL);
        return vcr_error_wrap(err, "new qemu pid %d", (int)pid);
    }
    w->next_pid = pid;
    w->launching = true;
    gate_launching++;
    w->journal.new_pid = (int)pid;
    cleanup_error vcr_error_t jerr = NULL;
    if (warm_journal_write(vm->paths.journal, &w->journal, &jerr) < 0)
        log_warn("VM %s: %s", vm->spec->name, vcr_error_msg(jerr));
    w->next_qmp = qmp_client_new(vm->env.base, &next_qmp_ops, w);
    if (w->next_qmp == NULL ||
        qmp_client_connect_retry(w->next_qmp, vm->paths.qmp, HOST_VM_WARM_LAUNCH_MS, err) < 0) {
        proc_watch_signal(w->next, SIGKILL, NULL);
        return w->next_qmp ? vcr_error_wrap(err, "new qemu pid %d: QMP", (int)pid)
                           : vcr_error_make(err, ENOMEM, "new qemu: out of memory");
    }
    struct timeval tv = {.tv_sec = HOST_VM_WARM_LAUNCH_MS / 1000,
                         .tv_usec = (HOST_VM_WARM_LAUNCH_MS % 1000) * 1000};
    evtimer_add(w->launch_timer, &tv);
    log_info("VM %s: warm restart: new qemu pid %d (%s) started with -incoming beside qemu pid "
             "%d, which runs the guest",
             vm->spec->name, (int)pid, w->result.qemu, (int)vm->pid);
    return 0;
}

void host_vm_warm_qmp_ready(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (w->step == W_ADOPT_OLD) {
        warm_takeover_old_ready(vm);
        return;
    }
    if (w->step == W_ADOPT_NEW) {
        warm_takeover_new_ready(vm);
        return;
    }
    if (w->step != W_SPAWNED)
        return;
    load_state(vm);
}

void host_vm_warm_exited(struct host_vm *vm, bool have_status, int wstatus)
{
    struct host_vm_warm *w = vm->warm;
    if (w->step == W_HANDOVER) {
        /* The old QEMU, killed once the new one had the state: expected.
         * Killed, it removed none of its files. */
        warm_unlink_quiet(vm, vm->paths.old_pid);
        warm_unlink_quiet(vm, vm->paths.old_qmp);
        w->aside = false;
        w->old_gone = true;
        handed_over(vm);
        return;
    }
    /* An adopted old QEMU that ends (it had its `quit`) after the state was
     * sealed: go on as if the exit had been awaited. */
    if ((w->step == W_ADOPT_OLD || w->step == W_ROLLBACK) && warm_state_sealed(vm))
        w->step = W_QUIT;
    if (w->step == W_QUIT) {
        /* The QEMU that went leaves its files (killed, it removed none). */
        if (w->aside) {
            warm_unlink_quiet(vm, vm->paths.old_pid);
            warm_unlink_quiet(vm, vm->paths.old_qmp);
            w->aside = false;
        } else {
            warm_unlink_quiet(vm, vm->paths.pid);
            warm_unlink_quiet(vm, vm->paths.qmp);
        }
        w->t_saved = vcr_mono_ms_f();
        w->result.suspend_ms = w->t_saved - w->t_stop;
        /* Taking over with no QEMU left: a new one is spawned now. */
        w->t_spawn = vcr_mono_ms_f();
        cleanup_error vcr_error_t err = NULL;
        w->step = W_SPAWNED;
        if (host_vm_spawn(vm, w->result.qemu, true, &err) < 0) {
            warm_fail(vm, "%s", vcr_error_msg(err));
            return;
        }
        log_info("VM %s: warm restart: new qemu pid %d (%s) to load the sealed state",
                 vm->spec->name, (int)vm->pid, w->result.qemu);
        return;
    }
    if (w->step != W_FALLBACK && w->step != W_UNLAUNCH) {
        char how[128];
        vm_exit_cause(have_status, wstatus, how, sizeof(how));
        char last[300];
        host_vm_log_last_line(vm->paths.log, last, sizeof(last));
        bool old = old_holds_guest(w->step) || w->step == W_RESUME_OLD || w->step == W_ADOPT_OLD ||
                   w->step == W_ROLLBACK;
        snprintf(w->result.error, sizeof(w->result.error),
                 "%s qemu: %s during the warm restart%s%s", old ? "old" : "new", how,
                 last[0] ? ": " : "", last);
        log_warn("VM %s: %s", vm->spec->name, w->result.error);
    }
    evtimer_del(w->deadline);
    fallback(vm);
}

void host_vm_warm_abort(struct host_vm *vm, const char *why)
{
    struct host_vm_warm *w = vm->warm;
    if (w->next) {
        proc_watch_signal(w->next, SIGKILL, NULL);
        next_free(w);
    }
    put_back(vm);
    snprintf(w->result.error, sizeof(w->result.error), "warm restart abandoned: %s", why);
    vm_sm_restarted(&vm->sm, w->result.error); /* a live state, so that the exit is reported */
    warm_finish(vm);
}

int warm_qemu_allowed(const struct host_vm *vm, const char *qemu, char *real, size_t size,
                      vcr_error_t *err)
{
    struct qemu_allow only_configured = {0};
    char *one[] = {(char *)vm->env.qemu};
    const struct qemu_allow *allow = vm->env.qemu_allow;
    if (allow == NULL) {
        if (qemu_allow_init(&only_configured, one, 1, NULL, err) < 0)
            return -1;
        allow = &only_configured;
    }
    int rc = qemu_allow_check(allow, qemu, real, size, err);
    qemu_allow_clear(&only_configured);
    return rc;
}

/* A warm restart object for vm, its deadline running; not attached yet. */
struct host_vm_warm *warm_new(struct host_vm *vm, const char *qemu, host_vm_warm_cb cb,
                              void *opaque, vcr_error_t *err)
{
    struct host_vm_warm *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", vm->spec->name), NULL;
    w->vm = vm;
    w->cb = cb;
    w->opaque = opaque;
    w->tap_fd = -1;
    w->tap_hdr = -1;
    snprintf(w->result.qemu, sizeof(w->result.qemu), "%s", qemu);
    w->poll = evtimer_new(vm->env.base, poll_migration, vm);
    w->deadline = evtimer_new(vm->env.base, on_deadline, w);
    w->launch_timer = evtimer_new(vm->env.base, on_launch_timeout, w);
    if (w->poll == NULL || w->deadline == NULL || w->launch_timer == NULL) {
        host_vm_warm_free(w);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", vm->spec->name), NULL;
    }
    struct timeval tv = {.tv_sec = HOST_VM_WARM_DEADLINE_MS / 1000,
                         .tv_usec = (HOST_VM_WARM_DEADLINE_MS % 1000) * 1000};
    evtimer_add(w->deadline, &tv);
    w->t_stop = vcr_mono_ms_f();
    w->t_spawn = w->t_stop;
    return w;
}

int host_vm_warm_restart(struct host_vm *vm, const struct host_vm_warm_options *opts,
                         host_vm_warm_cb cb, void *opaque, vcr_error_t *err)
{
    const char *name = vm->spec->name;
    if (vm->warm)
        return vcr_error_make(err, EBUSY, "VM `%s` is already under a warm restart", name);
    enum vm_state s = vm->sm.state;
    if (vm->proc == NULL || vm->exit_pending || !vm->qmp_ready ||
        (s != VM_STATE_RUNNING && s != VM_STATE_PAUSED))
        return vcr_error_make(err, EAGAIN,
                              "VM `%s` is %s: a warm restart needs it running (or paused) with "
                              "QMP ready",
                              name, vm_state_name(s));
    /* The new QEMU listens there: a UNIX socket's path has room for 107 bytes. */
    if (strlen(vm->paths.mig) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
        return vcr_error_make(err, ENAMETOOLONG,
                              "migration socket `%s`: longer than a UNIX socket path may be; use "
                              "a shorter state_dir",
                              vm->paths.mig);
    const char *exit_at = opts ? opts->agent_exit_at : NULL;
    if (exit_at && !host_vm_warm_exit_point_valid(exit_at))
        return vcr_error_make(err, EINVAL, "agent_exit_for_test `%s`: allowed: %s", exit_at,
                              HOST_VM_WARM_EXIT_POINTS);
    const char *qemu = opts && opts->qemu ? opts->qemu : vm->qemu_path;
    if (qemu == NULL)
        qemu = vm->env.qemu;
    /* Only a binary of the allowlist, run by its real path: an order cannot
     * make this agent run something else as root (docs/security.md). */
    char real[PATH_MAX];
    if (warm_qemu_allowed(vm, qemu, real, sizeof(real), err) < 0)
        return vcr_error_wrap(err, "warm restart of VM `%s` (nothing was started)", name);
    qemu = real;
    if (access(qemu, X_OK) < 0)
        return vcr_error_errno(err, "warm restart of VM `%s`: qemu `%s`", name, qemu);
    /* The new QEMU maps the RAM file as it finds it: it must still be ours. */
    if (ram_dir_own_file(name, vm->paths.ram, false, err) < 0)
        return vcr_error_wrap(err, "warm restart of VM `%s` (nothing was started)", name);
    if (strlen(qemu) >= sizeof(((struct warm_journal *)NULL)->qemu))
        return vcr_error_make(err, ENAMETOOLONG, "warm restart of VM `%s`: qemu path too long",
                              name);
    warm_remove_state_files(vm); /* leftovers of an agent that died mid-way */
    struct host_vm_warm *w = warm_new(vm, qemu, cb, opaque, err);
    if (w == NULL)
        return -1;
    w->was_paused = s == VM_STATE_PAUSED;
    snprintf(w->exit_at, sizeof(w->exit_at), "%s", exit_at ? exit_at : "");
    w->journal = (struct warm_journal){.started_ms = vcr_wall_ms(), .old_pid = (int)vm->pid};
    snprintf(w->journal.qemu, sizeof(w->journal.qemu), "%s", qemu);
    vm->warm = w;
    /* The tap goes from the old QEMU to the new one (tap_fd.h); nothing is
     * changed yet if it cannot be had. */
    w->tap_fd = tap_fd_take(vm->pid, vm->spec->tap, err);
    if (w->tap_fd < 0 || tap_vnet_hdr_get(w->tap_fd, &w->tap_hdr, NULL) < 0)
        w->tap_hdr = -1;
    if (w->tap_fd < 0 || warm_journal_write(vm->paths.journal, &w->journal, err) < 0 ||
        warm_move_aside(vm, err) < 0 || launch_next(vm, err) < 0) {
        /* Nothing reached the old QEMU: it runs on as it was. */
        if (w->next) {
            proc_watch_signal(w->next, SIGKILL, NULL);
            next_free(w);
        }
        put_back(vm);
        restore_tap(vm);
        vm->warm = NULL;
        warm_remove_state_files(vm);
        gate_leave(w, true);
        host_vm_warm_free(w);
        return vcr_error_wrap(err, "warm restart of VM `%s` (the old qemu runs on)", name);
    }
    char cause[1100];
    snprintf(cause, sizeof(cause), "warm restart (to %.1000s)", qemu);
    vm_sm_restarting(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    w->step = W_LAUNCH;
    return 0;
}
