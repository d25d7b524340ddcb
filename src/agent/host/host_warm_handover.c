/* The warm restart of one VM, while its new QEMU runs beside the old one
 * (docs/warm-restart.md "How it works", steps 3-7): the new QEMU spawned with
 * -incoming, greeted, listening; then, once the pause gate
 * (host_warm_gate.c) lets it through, the pause: the old QEMU's `stop` and
 * `migrate`, the new one's MIGRATION `completed`, the old one killed, `cont`
 * on the new one.  Failures go to warm_fail (host_warm_restart.c), which
 * undoes what can be undone. */
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
    if (w == NULL || w->step != step || warm_closed_error(error))
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
    warm_test_exit_point(vm, "stopped");
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
    warm_test_exit_point(vm, "launched");
    /* The pause begins.  `migrate` goes with `stop`, not after its reply: QEMU
     * runs a monitor's commands in order, and a round trip less is spent with
     * the guest paused. */
    struct host_vm_warm *w = vm->warm;
    w->t_stop = vcr_mono_ms_f();
    w->result.at.stop = w->t_stop;
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
    vm->warm->result.at.listening = vcr_mono_ms_f();
    log_info("VM %s: warm restart: new qemu pid %d listens on `%s`", vm->spec->name,
             (int)vm->warm->next_pid, vm->paths.mig);
    warm_gate_hold(vm);
}

/* Out of the gate (or held too long): the pause begins with the old QEMU's
 * capabilities. */
void warm_start_pause(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    evtimer_del(w->launch_timer);
    w->result.at.gate = vcr_mono_ms_f();
    warm_gate_pausing(w);
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
void warm_handed_over(struct host_vm *vm)
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
    /* The guest runs: its QEMU competes with the others again. */
    pause_boost_end_pid(&w->boost, w->next_pid);
    /* The gate lets the next guest be paused only once this restart is done
     * (warm_finish), the old QEMU's exit seen too: the kernel has torn its
     * mappings down by then, and the agent has reported this VM. */
    log_info("VM %s: warm restart: the guest runs in qemu pid %d (pause %.1f ms: state moved in "
             "%.1f ms, cont %.1f ms)",
             vm->spec->name, (int)w->next_pid, w->result.pause_ms, w->result.suspend_ms,
             w->result.resume_ms);
    warm_handed_over(vm);
}

/* The old QEMU goes (it must never run the guest again), then the new one runs it. */
static void hand_over(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    warm_test_exit_point(vm, "migrated");
    w->step = W_HANDOVER;
    cleanup_error vcr_error_t err = NULL;
    if (proc_watch_signal(vm->proc, SIGKILL, &err) < 0) {
        warm_fail(vm, "old qemu: %s", vcr_error_msg(err));
        return;
    }
    warm_test_exit_point(vm, "handed");
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
    w->result.at.migrated = w->t_saved;
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
    w->result.at.ready = vcr_mono_ms_f();
    w->result.launch_ms = w->result.at.ready - w->t_spawn;
    /* The new QEMU has set the tap up for itself: the old one still runs the guest. */
    warm_restore_tap(vm);
    warm_close_tap(w);
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

void warm_on_launch_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm_warm *w = arg;
    if (w->step == W_HOLD) {
        log_warn("VM %s: warm restart: held %d ms for the host's other restarts: pausing now",
                 w->vm->spec->name, HOST_VM_WARM_HOLD_MS);
        warm_gate_unwait(w);
        warm_start_pause(w->vm);
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
    warm_next_free(w);
    char how[128], last[300], why[700];
    vm_exit_cause(have_status, wstatus, how, sizeof(how));
    host_vm_log_last_line(vm->paths.log, last, sizeof(last));
    switch (w->step) {
    case W_UNLAUNCH:
        warm_rolled_back(vm);
        return;
    case W_FALLBACK:
        warm_maybe_cold_boot(vm);
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
int warm_launch_next(struct host_vm *vm, vcr_error_t *err)
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
    w->result.at.spawned = w->t_spawn;
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
    warm_gate_launching(w);
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
