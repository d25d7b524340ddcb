/* Warm restart of one VM's QEMU (docs/warm-restart.md; LAB-NOTES "Warm-VM
 * restart").  The guest's RAM lives in a shared file that outlives QEMU, so
 * only the device state moves, through a file in state_dir:
 *
 *   stop -> migrate-set-capabilities x-ignore-shared -> migrate exec:cat >
 *   NAME.state.tmp -> query-migrate until completed -> SHA-256 into
 *   NAME.state.sha256, rename to NAME.state -> quit -> (pidfd) -> spawn the new
 *   QEMU with -incoming defer -> QMP ready -> verify the checksum ->
 *   x-ignore-shared -> migrate-incoming exec:cat NAME.state -> query-migrate
 *   until completed -> cont -> running.
 *
 * Before `quit`, a failure resumes the old QEMU (nothing lost).  After it, a
 * failure (checksum mismatch, the new QEMU refuses the state or dies, the
 * deadline) kills the new QEMU if any and boots the VM cold from its image:
 * the RAM file is recreated, the state files are removed.
 *
 * A journal (NAME.warm) is written before `stop` and removed at the end, so
 * an agent killed mid-way can take the restart over when it starts again
 * (host_vm_warm_recover): `cont` the old QEMU if it still holds the guest,
 * keep a new one that already runs it, or load the sealed state into a new
 * QEMU; past HOST_VM_WARM_RECOVER_WINDOW_MS it leaves things to the server. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host_vm.h"
#include "agent/host_vm_priv.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

enum warm_step {
    W_STOP,     /* `stop` sent */
    W_CAPS_OUT, /* x-ignore-shared on the old QEMU */
    W_MIGRATE,  /* `migrate` sent */
    W_SAVING,   /* polling query-migrate on the old QEMU */
    W_QUIT,     /* state sealed, `quit` sent: waiting for the pidfd */
    W_SPAWNED,  /* new QEMU started, waiting for QMP */
    W_CAPS_IN,  /* x-ignore-shared on the new QEMU */
    W_INCOMING, /* `migrate-incoming` sent */
    W_LOADING,  /* polling query-migrate on the new QEMU */
    W_CONT,     /* `cont` sent */
    W_RESUMING, /* failure before quit: `cont` on the old QEMU */
    W_FALLBACK, /* the new QEMU is being killed; a cold boot follows its exit */
    /* Taking over a restart an earlier agent left (host_vm_warm_recover): */
    W_ADOPT_OLD, /* the old QEMU adopted, waiting for QMP */
    W_ROLLBACK,  /* `cont` sent to it */
    W_ADOPT_NEW, /* the new QEMU adopted, waiting for QMP */
    W_CHECK,     /* query-status sent to it */
};

struct host_vm_warm {
    struct host_vm *vm;
    enum warm_step step;
    bool corrupt;
    char exit_at[16]; /* test fault: where the agent kills itself ("" never) */
    host_vm_warm_cb cb;
    void *opaque;
    struct event *poll;
    struct event *deadline;
    double t_stop, t_saved, t_spawn;
    struct host_vm_warm_result result;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void remove_state_files(struct host_vm *vm)
{
    const char *files[] = {vm->paths.state, vm->paths.state_tmp, vm->paths.state_sum,
                           vm->paths.journal};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (unlink(files[i]) < 0 && errno != ENOENT)
            log_warn("VM %s: cannot remove `%s`: %s", vm->spec->name, files[i], strerror(errno));
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", files[i]);
        unlink(tmp);
    }
}

static bool state_sealed(const struct host_vm *vm)
{
    return access(vm->paths.state, F_OK) == 0 && access(vm->paths.state_sum, F_OK) == 0;
}

bool host_vm_warm_exit_point_valid(const char *point)
{
    static const char *const points[] = {"stopped", "sealed", "quit", "spawned"};
    for (size_t i = 0; point && i < sizeof(points) / sizeof(points[0]); i++)
        if (strcmp(point, points[i]) == 0)
            return true;
    return false;
}

/* Test fault (agent --test-faults): the agent dies here, as if killed. */
static void test_exit_point(const struct host_vm *vm, const char *point)
{
    if (strcmp(vm->warm->exit_at, point) != 0)
        return;
    log_warn("VM %s: test fault: the agent kills itself (SIGKILL) at `%s`", vm->spec->name, point);
    raise(SIGKILL);
}

void host_vm_warm_free(struct host_vm_warm *w)
{
    if (w == NULL)
        return;
    if (w->poll)
        event_free(w->poll);
    if (w->deadline)
        event_free(w->deadline);
    free(w);
}

/* Detaches the warm restart from the VM, reports it, frees it. */
static void finish(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    vm->warm = NULL;
    remove_state_files(vm);
    log_info("VM %s: warm restart %s%s%s (suspend %.1f ms, resume %.1f ms, downtime %.1f ms, "
             "state %llu bytes)",
             vm->spec->name,
             w->result.ok         ? "done"
             : w->result.fallback ? "fell back"
                                  : "failed",
             w->result.error[0] ? ": " : "", w->result.error, w->result.suspend_ms,
             w->result.resume_ms, w->result.downtime_ms, (unsigned long long)w->result.state_bytes);
    if (w->cb)
        w->cb(vm, &w->result, w->opaque);
    host_vm_warm_free(w);
}

/* The old QEMU is gone and the new one (if any) too: boot from the image. */
static void cold_boot(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    w->result.ok = false;
    w->result.fallback = true;
    /* host_vm_start reports through host_vm_changed: not while vm->warm is set. */
    vm->warm = NULL;
    remove_state_files(vm);
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
    finish(vm);
}

/* Something went wrong: undo what can be undone. */
__attribute__((format(printf, 2, 3))) static void fail(struct host_vm *vm, const char *fmt, ...)
{
    struct host_vm_warm *w = vm->warm;
    if (w->result.error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->result.error, sizeof(w->result.error), fmt, ap);
        va_end(ap);
    }
    evtimer_del(w->poll);
    log_warn("VM %s: warm restart: %s", vm->spec->name, w->result.error);
    if (w->step < W_QUIT) {
        /* The old QEMU still holds the guest: let it run on. */
        w->step = W_RESUMING;
        cleanup_error vcr_error_t err = NULL;
        qmp_client_command(vm->qmp, "migrate_cancel", NULL, NULL, NULL, NULL);
        if (vm->qmp_ready && qmp_client_command(vm->qmp, "cont", NULL, NULL, NULL, &err) == 0) {
            vm_sm_restarted(&vm->sm, "warm restart abandoned; the guest runs on in the old qemu");
            host_vm_changed(vm, vcr_wall_ms());
            finish(vm);
            return;
        }
        /* No QMP: the old QEMU cannot be resumed; replace it. */
    }
    if (vm->proc) {
        w->step = W_FALLBACK;
        proc_watch_signal(vm->proc, SIGKILL, NULL);
        return; /* host_vm_warm_exited boots cold */
    }
    cold_boot(vm);
}

static bool closed_error(const char *error)
{
    return error && strncmp(error, "connection closed", 17) == 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm_warm *w = arg;
    if (w->step == W_FALLBACK)
        return;
    fail(w->vm, "not done within %d ms", HOST_VM_WARM_DEADLINE_MS);
}

static void send_step(struct host_vm *vm, enum warm_step step, const char *cmd, json_t *args,
                      qmp_reply_cb cb)
{
    vm->warm->step = step;
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(vm->qmp, cmd, args, cb, vm, &err) < 0)
        fail(vm, "QMP %s: %s", cmd, vcr_error_msg(err));
}

static json_t *ignore_shared_args(void)
{
    return json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability", "x-ignore-shared", "state",
                     1);
}

/* Common checks of a step's reply: false when the step must not go on. */
static bool step_ok(struct host_vm *vm, enum warm_step step, const char *cmd, const char *error)
{
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || w->step != step)
        return false;
    if (closed_error(error))
        return false; /* the process exit decides */
    if (error) {
        fail(vm, "QMP %s: %s", cmd, error);
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
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(vm->qmp, "query-migrate", NULL, on_query_migrate, vm, &err) < 0)
        fail(vm, "QMP query-migrate: %s", vcr_error_msg(err));
}

static void schedule_poll(struct host_vm *vm)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = HOST_VM_WARM_POLL_MS * 1000};
    evtimer_add(vm->warm->poll, &tv);
}

static void on_quit(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (vm->warm && vm->warm->step == W_QUIT && error && !closed_error(error))
        log_warn("VM %s: QMP quit: %s (waiting for the exit anyway)", vm->spec->name, error);
}

static void saved(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    cleanup_error vcr_error_t err = NULL;
    if (warm_state_seal(vm->paths.state_tmp, vm->paths.state, vm->paths.state_sum,
                        &w->result.state_bytes, &err) < 0) {
        fail(vm, "seal the state file: %s", vcr_error_msg(err));
        return;
    }
    test_exit_point(vm, "sealed");
    send_step(vm, W_QUIT, "quit", NULL, on_quit);
}

static void on_cont(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!step_ok(vm, W_CONT, "cont", error))
        return;
    struct host_vm_warm *w = vm->warm;
    double t = now_ms();
    w->result.resume_ms = t - w->t_spawn;
    w->result.downtime_ms = t - w->t_stop;
    w->result.ok = true;
    evtimer_del(w->deadline);
    char cause[256];
    snprintf(cause, sizeof(cause), "warm restart done (downtime %.1f ms)", w->result.downtime_ms);
    vm_sm_restarted(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    finish(vm);
}

static void on_query_migrate(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    struct host_vm_warm *w = vm->warm;
    if (w == NULL || (w->step != W_SAVING && w->step != W_LOADING))
        return;
    if (!step_ok(vm, w->step, "query-migrate", error))
        return;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (status && strcmp(status, "completed") == 0) {
        if (w->step == W_SAVING)
            saved(vm);
        else
            send_step(vm, W_CONT, "cont", NULL, on_cont);
        return;
    }
    if (status && (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0)) {
        const char *desc = json_string_value(json_object_get(result, "error-desc"));
        fail(vm, "%s qemu: migration %s%s%s", w->step == W_SAVING ? "old" : "new", status,
             desc ? ": " : "", desc ? desc : "");
        return;
    }
    schedule_poll(vm);
}

static void on_migrate(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    enum warm_step step = vm->warm ? vm->warm->step : W_STOP;
    if (step != W_MIGRATE && step != W_INCOMING)
        return;
    if (!step_ok(vm, step, step == W_MIGRATE ? "migrate" : "migrate-incoming", error))
        return;
    vm->warm->step = step == W_MIGRATE ? W_SAVING : W_LOADING;
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

static void on_caps(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    enum warm_step step = vm->warm ? vm->warm->step : W_STOP;
    if (step != W_CAPS_OUT && step != W_CAPS_IN)
        return;
    if (!step_ok(vm, step, "migrate-set-capabilities", error))
        return;
    if (step == W_CAPS_OUT)
        send_step(vm, W_MIGRATE, "migrate", exec_uri("exec:cat > '%s'", vm->paths.state_tmp),
                  on_migrate);
    else
        send_step(vm, W_INCOMING, "migrate-incoming", exec_uri("exec:cat '%s'", vm->paths.state),
                  on_migrate);
}

static void on_stop(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!step_ok(vm, W_STOP, "stop", error))
        return;
    test_exit_point(vm, "stopped");
    send_step(vm, W_CAPS_OUT, "migrate-set-capabilities", ignore_shared_args(), on_caps);
}

static void on_rollback_cont(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (!step_ok(vm, W_ROLLBACK, "cont", error))
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
    finish(vm);
}

static void on_check_status(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    if (!step_ok(vm, W_CHECK, "query-status", error))
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
        finish(vm);
        return;
    }
    if (!state_sealed(vm)) {
        fail(vm, "new qemu pid %d is `%s` and no sealed state file is left", (int)vm->pid,
             status ? status : "?");
        return;
    }
    /* Where it got to is unknown (the state may be half loaded): start over
     * from the sealed state in a fresh QEMU; the exit spawns it. */
    log_info("VM %s: new qemu pid %d is `%s`: replacing it to load the state again", vm->spec->name,
             (int)vm->pid, status ? status : "?");
    w->step = W_QUIT;
    proc_watch_signal(vm->proc, SIGKILL, NULL);
}

void host_vm_warm_qmp_ready(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (w->step == W_ADOPT_OLD) {
        /* The migration may still be set up: drop it; the guest's RAM and
         * devices are as they were at `stop`. */
        qmp_client_command(vm->qmp, "migrate_cancel", NULL, NULL, NULL, NULL);
        send_step(vm, W_ROLLBACK, "cont", NULL, on_rollback_cont);
        return;
    }
    if (w->step == W_ADOPT_NEW) {
        send_step(vm, W_CHECK, "query-status", NULL, on_check_status);
        return;
    }
    if (w->step != W_SPAWNED)
        return;
    test_exit_point(vm, "spawned");
    cleanup_error vcr_error_t err = NULL;
    if (w->corrupt) {
        if (warm_state_corrupt(vm->paths.state, &err) < 0)
            log_warn("VM %s: test fault: %s", vm->spec->name, vcr_error_msg(err));
        else
            log_warn("VM %s: test fault: state file corrupted", vm->spec->name);
        vcr_error_release(&err);
    }
    /* The checksum first: a corrupt state must never reach QEMU. */
    if (warm_state_verify(vm->paths.state, vm->paths.state_sum, &err) < 0) {
        fail(vm, "%s", vcr_error_msg(err));
        return;
    }
    send_step(vm, W_CAPS_IN, "migrate-set-capabilities", ignore_shared_args(), on_caps);
}

void host_vm_warm_exited(struct host_vm *vm, bool have_status, int wstatus)
{
    struct host_vm_warm *w = vm->warm;
    /* An adopted old QEMU that ends (it had its `quit`) after the state was
     * sealed: go on as if the exit had been awaited. */
    if ((w->step == W_ADOPT_OLD || w->step == W_ROLLBACK) && state_sealed(vm))
        w->step = W_QUIT;
    if (w->step == W_QUIT) {
        test_exit_point(vm, "quit");
        w->t_saved = now_ms();
        w->result.suspend_ms = w->t_saved - w->t_stop;
        w->t_spawn = now_ms();
        cleanup_error vcr_error_t err = NULL;
        w->step = W_SPAWNED;
        if (host_vm_spawn(vm, w->result.qemu, true, &err) < 0) {
            fail(vm, "%s", vcr_error_msg(err));
            return;
        }
        log_info("VM %s: warm restart: old qemu gone %.1f ms after stop; new qemu pid %d (%s)",
                 vm->spec->name, w->result.suspend_ms, (int)vm->pid, w->result.qemu);
        return;
    }
    if (w->step != W_FALLBACK) {
        char how[128];
        vm_exit_cause(have_status, wstatus, how, sizeof(how));
        char last[300];
        host_vm_log_last_line(vm->paths.log, last, sizeof(last));
        snprintf(w->result.error, sizeof(w->result.error),
                 "%s qemu: %s during the warm restart%s%s",
                 w->step < W_QUIT || w->step == W_RESUMING || w->step == W_ADOPT_OLD ||
                         w->step == W_ROLLBACK
                     ? "old"
                     : "new",
                 how, last[0] ? ": " : "", last);
        log_warn("VM %s: %s", vm->spec->name, w->result.error);
    }
    evtimer_del(w->poll);
    evtimer_del(w->deadline);
    cold_boot(vm);
}

void host_vm_warm_abort(struct host_vm *vm, const char *why)
{
    struct host_vm_warm *w = vm->warm;
    snprintf(w->result.error, sizeof(w->result.error), "warm restart abandoned: %s", why);
    vm_sm_restarted(&vm->sm, w->result.error); /* a live state, so that the exit is reported */
    finish(vm);
}

/* A warm restart object for vm, its deadline running; not attached yet. */
static struct host_vm_warm *warm_new(struct host_vm *vm, const char *qemu, host_vm_warm_cb cb,
                                     void *opaque, vcr_error_t *err)
{
    struct host_vm_warm *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", vm->spec->name), NULL;
    w->vm = vm;
    w->cb = cb;
    w->opaque = opaque;
    snprintf(w->result.qemu, sizeof(w->result.qemu), "%s", qemu);
    w->poll = evtimer_new(vm->env.base, poll_migration, vm);
    w->deadline = evtimer_new(vm->env.base, on_deadline, w);
    if (w->poll == NULL || w->deadline == NULL) {
        host_vm_warm_free(w);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", vm->spec->name), NULL;
    }
    struct timeval tv = {.tv_sec = HOST_VM_WARM_DEADLINE_MS / 1000,
                         .tv_usec = (HOST_VM_WARM_DEADLINE_MS % 1000) * 1000};
    evtimer_add(w->deadline, &tv);
    w->t_stop = now_ms();
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
    if (strchr(vm->paths.state, '\'') != NULL)
        return vcr_error_make(err, EINVAL, "state file `%s`: a quote in the path is not allowed",
                              vm->paths.state);
    const char *exit_at = opts ? opts->agent_exit_at : NULL;
    if (exit_at && !host_vm_warm_exit_point_valid(exit_at))
        return vcr_error_make(err, EINVAL, "agent_exit_for_test `%s`: allowed: %s", exit_at,
                              HOST_VM_WARM_EXIT_POINTS);
    const char *qemu = opts && opts->qemu ? opts->qemu : vm->qemu_path;
    if (qemu == NULL)
        qemu = vm->env.qemu;
    if (access(qemu, X_OK) < 0)
        return vcr_error_errno(err, "warm restart of VM `%s`: qemu `%s`", name, qemu);
    remove_state_files(vm); /* leftovers of an agent that died mid-way */
    struct warm_journal j = {.started_ms = vcr_wall_ms(), .old_pid = (int)vm->pid};
    if (strlen(qemu) >= sizeof(j.qemu))
        return vcr_error_make(err, ENAMETOOLONG, "warm restart of VM `%s`: qemu path too long",
                              name);
    snprintf(j.qemu, sizeof(j.qemu), "%s", qemu);
    if (warm_journal_write(vm->paths.journal, &j, err) < 0)
        return vcr_error_wrap(err, "warm restart of VM `%s`", name);
    struct host_vm_warm *w = warm_new(vm, qemu, cb, opaque, err);
    if (w == NULL) {
        remove_state_files(vm);
        return -1;
    }
    w->corrupt = opts && opts->corrupt_state;
    snprintf(w->exit_at, sizeof(w->exit_at), "%s", exit_at ? exit_at : "");
    vm->warm = w;
    char cause[1100];
    snprintf(cause, sizeof(cause), "warm restart (to %s)", qemu);
    vm_sm_restarting(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    w->t_stop = now_ms();
    send_step(vm, W_STOP, "stop", NULL, on_stop);
    return 0;
}

bool host_vm_warm_recover(struct host_vm *vm)
{
    const char *name = vm->spec->name;
    struct warm_journal j;
    cleanup_error vcr_error_t err = NULL;
    if (warm_journal_read(vm->paths.journal, &j, &err) < 0) {
        if (vcr_error_status(err) != ENOENT) {
            log_warn("VM %s: %s: ignored, adopting as usual", name, vcr_error_msg(err));
            remove_state_files(vm);
        }
        return false;
    }
    bool incoming = false;
    pid_t pid = host_vm_find_qemu(vm, &incoming);
    int64_t age = vcr_wall_ms() - j.started_ms;
    bool sealed = state_sealed(vm);
    enum warm_recovery what =
        warm_recovery_decide(true, age, HOST_VM_WARM_RECOVER_WINDOW_MS, pid > 0, incoming, sealed);
    log_warn("VM %s: a warm restart begun %lld ms ago by an earlier agent was not finished "
             "(running qemu: %s; state file: %s): %s",
             name, (long long)age,
             pid > 0 ? (incoming ? "the new one (-incoming)" : "the old one") : "none",
             sealed ? "sealed" : "not sealed", warm_recovery_name(what));
    if (what == WARM_RECOVER_ADOPT || what == WARM_RECOVER_ENDED) {
        remove_state_files(vm); /* the caller adopts, or reports it ended */
        return false;
    }
    struct host_vm_warm *w = warm_new(vm, j.qemu, NULL, NULL, &err);
    if (w == NULL) {
        log_error("%s", vcr_error_msg(err));
        return false;
    }
    vm->warm = w;
    /* Times count from the pause the earlier agent made. */
    w->t_stop -= (double)age;
    struct stat st;
    if (stat(vm->paths.state, &st) == 0)
        w->result.state_bytes = (uint64_t)st.st_size;
    char why[300];
    snprintf(why, sizeof(why), "taking over a warm restart interrupted by the agent's exit (%s)",
             warm_recovery_name(what));
    switch (what) {
    case WARM_RECOVER_ROLLBACK:
    case WARM_RECOVER_CHECK:
        w->step = what == WARM_RECOVER_ROLLBACK ? W_ADOPT_OLD : W_ADOPT_NEW;
        if (host_vm_adopt_pid(vm, pid, why, true))
            return true;
        /* Gone between the look and the watch: nothing runs the guest now. */
        if (!state_sealed(vm)) {
            snprintf(w->result.error, sizeof(w->result.error),
                     "qemu pid %d ended before it could be adopted", (int)pid);
            vm_sm_restarting(&vm->sm, why);
            cold_boot(vm);
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
        cold_boot(vm);
        return true;
    }
}
