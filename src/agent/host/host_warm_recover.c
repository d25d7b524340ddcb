/* Taking over a warm restart an earlier agent left (host_vm_warm_recover,
 * docs/warm-restart.md "Takeover"): the journal says how far it got, the
 * QEMUs found say who holds the guest; warm_recovery_decide chooses. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host/host_vm.h"
#include "agent/host/host_warm_priv.h"
#include "agent/host/host_vm_priv.h"
#include "agent/host/tap_fd.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

static void on_rollback_cont(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_ROLLBACK, "cont", error))
        return;
    evtimer_del(vm->warm->deadline);
    char cause[256];
    snprintf(cause, sizeof(cause),
             "warm restart interrupted by the agent's exit: rolled back, the guest runs on in "
             "qemu pid %d",
             (int)vm->pid);
    snprintf(vm->warm->result.error, sizeof(vm->warm->result.error),
             "interrupted by the agent's exit; rolled back");
    vm_sm_restarted(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    warm_finish(vm);
}

static void on_check_status(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    if (!warm_step_ok(vm, W_CHECK, "query-status", error))
        return;
    struct host_vm_warm *w = vm->warm;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (status && strcmp(status, "running") == 0) {
        /* The earlier agent got as far as `cont`: the state file is stale now. */
        evtimer_del(w->deadline);
        w->result.ok = true;
        char cause[256];
        snprintf(cause, sizeof(cause),
                 "warm restart finished before the agent's exit: the guest runs in qemu pid %d",
                 (int)vm->pid);
        vm_sm_restarted(&vm->sm, cause);
        host_vm_changed(vm, vcr_wall_ms());
        warm_finish(vm);
        return;
    }
    if (status && strcmp(status, "paused") == 0) {
        /* An -incoming QEMU is paused only once it has loaded the whole
         * state (inmigrate before), and no other QEMU runs the guest: it
         * takes it up. */
        log_info("VM %s: new qemu pid %d has the whole device state: resuming it", vm->spec->name,
                 (int)vm->pid);
        warm_cont(vm);
        return;
    }
    if (!warm_state_sealed(vm)) {
        warm_fail(vm,
                  "new qemu pid %d is `%s`: its device state never arrived, and the old qemu "
                  "is gone",
                  (int)vm->pid, status ? status : "?");
        return;
    }
    /* Where it got to is unknown (the state may be half loaded): start over
     * from the sealed state in a fresh QEMU; the exit spawns it. */
    log_info("VM %s: new qemu pid %d is `%s`: replacing it to load the state again", vm->spec->name,
             (int)vm->pid, status ? status : "?");
    w->step = W_QUIT;
    proc_watch_signal(vm->proc, SIGKILL, NULL);
}

void warm_takeover_old_ready(struct host_vm *vm)
{
    /* The migration may still be set up: drop it; the guest's RAM and
     * devices are as they were at `stop` (or it never stopped). */
    qmp_client_command(vm->qmp, "migrate_cancel", NULL, NULL, NULL, NULL);
    warm_send_step(vm, W_ROLLBACK, "cont", NULL, on_rollback_cont);
}

void warm_takeover_new_ready(struct host_vm *vm)
{
    warm_send_step(vm, W_CHECK, "query-status", NULL, on_check_status);
}

/* A new QEMU of this VM other than old_pid, alive: the one in NAME.pid (the
 * new QEMU takes it), NAME.old.pid, or the journal's. */
static pid_t find_new_qemu(const struct host_vm *vm, const struct warm_journal *j)
{
    pid_t candidates[] = {host_vm_read_pid(vm->paths.pid), host_vm_read_pid(vm->paths.old_pid),
                          j->new_pid};
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
        if (candidates[i] > 0 && candidates[i] != j->old_pid &&
            host_vm_pid_is_ours(vm, candidates[i]))
            return candidates[i];
    return 0;
}

bool host_vm_warm_recover(struct host_vm *vm, bool fenced)
{
    const char *name = vm->spec->name;
    struct warm_journal j;
    cleanup_error vcr_error_t err = NULL;
    if (warm_journal_read(vm->paths.journal, &j, &err) < 0) {
        if (vcr_error_status(err) != ENOENT) {
            log_warn("VM %s: %s: ignored, adopting as usual", name, vcr_error_msg(err));
            warm_remove_state_files(vm);
        }
        return false;
    }
    char real[PATH_MAX];
    if (warm_qemu_allowed(vm, j.qemu, real, sizeof(real), &err) < 0) {
        /* Finishing would run it: the configured binary does instead. */
        log_warn("VM %s: the warm restart journal's %s; the configured qemu `%s` is used", name,
                 vcr_error_msg(err), vm->env.qemu);
        vcr_error_release(&err);
        snprintf(j.qemu, sizeof(j.qemu), "%s", vm->env.qemu);
    } else {
        snprintf(j.qemu, sizeof(j.qemu), "%s", real);
    }
    pid_t old = j.old_pid > 0 && host_vm_pid_is_ours(vm, j.old_pid) ? j.old_pid : 0;
    pid_t nw = find_new_qemu(vm, &j);
    int64_t age = vcr_wall_ms() - j.started_ms;
    bool sealed = warm_state_sealed(vm);
    bool ram_kept = access(vm->paths.ram, F_OK) == 0;
    if (sealed && !ram_kept)
        log_warn("VM %s: the sealed state of a warm restart is here but the RAM file `%s` is "
                 "not (the host restarted?): the state is useless without it",
                 name, vm->paths.ram);
    enum warm_recovery what = warm_recovery_decide(
        true, fenced, age, HOST_VM_WARM_RECOVER_WINDOW_MS, old > 0, nw > 0, sealed, ram_kept);
    char old_s[32] = "gone", new_s[32] = "none";
    if (old > 0)
        snprintf(old_s, sizeof(old_s), "pid %d", (int)old);
    if (nw > 0)
        snprintf(new_s, sizeof(new_s), "pid %d", (int)nw);
    log_warn("VM %s: a warm restart begun %lld ms ago by an earlier agent was not finished (old "
             "qemu: %s; new qemu: %s; state file: %s): %s",
             name, (long long)age, old_s, new_s, sealed ? "sealed" : "not sealed",
             warm_recovery_name(what));
    if (warm_recovery_kills_new(what, old > 0, nw > 0)) {
        /* The old QEMU holds the guest (or the VM was fenced): the new one
         * goes, before anything else, so that nothing of it is left. */
        if (proc_kill_wait(nw, 2000, &err) < 0)
            log_warn("VM %s: new qemu pid %d: %s", name, (int)nw, vcr_error_msg(err));
        else
            log_info("VM %s: new qemu pid %d killed", name, (int)nw);
        vcr_error_release(&err);
        nw = 0;
    }
    if (old > 0) {
        warm_names_back(vm);
    } else {
        warm_unlink_quiet(vm, vm->paths.old_pid); /* the old QEMU's, gone */
        warm_unlink_quiet(vm, vm->paths.old_qmp);
    }
    if (what == WARM_RECOVER_ADOPT || what == WARM_RECOVER_ENDED || what == WARM_RECOVER_FENCED) {
        warm_remove_state_files(vm); /* the caller adopts, or reports it ended */
        return false;
    }
    struct host_vm_warm *w = warm_new(vm, j.qemu, NULL, NULL, &err);
    if (w == NULL) {
        log_error("%s", vcr_error_msg(err));
        return false;
    }
    w->journal = j;
    vm->warm = w;
    /* Times count from the start the earlier agent made. */
    w->t_stop -= (double)age;
    struct stat st;
    if (stat(vm->paths.state, &st) == 0)
        w->result.state_bytes = (uint64_t)st.st_size;
    char why[300];
    snprintf(why, sizeof(why), "taking over a warm restart interrupted by the agent's exit (%s)",
             warm_recovery_name(what));
    pid_t pid = what == WARM_RECOVER_ROLLBACK ? old : nw;
    switch (what) {
    case WARM_RECOVER_ROLLBACK:
    case WARM_RECOVER_CHECK:
        w->step = what == WARM_RECOVER_ROLLBACK ? W_ADOPT_OLD : W_ADOPT_NEW;
        if (host_vm_adopt_pid(vm, pid, why, true))
            return true;
        /* Gone between the look and the watch: nothing runs the guest now. */
        if (!warm_state_sealed(vm)) {
            snprintf(w->result.error, sizeof(w->result.error),
                     "qemu pid %d ended before it could be adopted", (int)pid);
            vm_sm_restarting(&vm->sm, why);
            warm_cold_boot(vm);
            return true;
        }
        /* fall through */
    case WARM_RECOVER_REDO:
        vm_sm_restarting(&vm->sm, why);
        host_vm_changed(vm, vcr_wall_ms());
        w->step = W_QUIT;
        host_vm_warm_exited(vm, false, 0);
        return true;
    default:
        snprintf(w->result.error, sizeof(w->result.error),
                 "interrupted by the agent's exit before the state was sealed, and qemu is gone");
        vm_sm_restarting(&vm->sm, why);
        host_vm_changed(vm, vcr_wall_ms());
        warm_cold_boot(vm);
        return true;
    }
}

/* --- loading a state file an earlier agent sealed (W_CAPS_IN .. W_CONT) --- */

static json_t *ignore_shared_args(void)
{
    return json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared", "state",
                     1);
}

static void schedule_poll(struct host_vm *vm)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = HOST_VM_WARM_POLL_MS * 1000};
    evtimer_add(vm->warm->poll, &tv);
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

/* query-migrate of the QEMU loading the state (W_LOADING; the poll timer's). */
void warm_poll_loading(struct host_vm *vm)
{
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(vm->qmp, "query-migrate", NULL, on_query_migrate, vm, &err) < 0)
        warm_fail(vm, "QMP query-migrate: %s", vcr_error_msg(err));
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
    warm_poll_loading(vm);
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
void warm_load_state(struct host_vm *vm)
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
