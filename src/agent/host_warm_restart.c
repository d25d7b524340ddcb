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
 * the RAM file is recreated, the state files are removed. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};

struct host_vm_warm {
    struct host_vm *vm;
    enum warm_step step;
    bool corrupt;
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
    const char *files[] = {vm->paths.state, vm->paths.state_tmp, vm->paths.state_sum};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (unlink(files[i]) < 0 && errno != ENOENT)
            log_warn("VM %s: cannot remove `%s`: %s", vm->spec->name, files[i], strerror(errno));
    char sum_tmp[4200];
    snprintf(sum_tmp, sizeof(sum_tmp), "%s.tmp", vm->paths.state_sum);
    unlink(sum_tmp);
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
    send_step(vm, W_CAPS_OUT, "migrate-set-capabilities", ignore_shared_args(), on_caps);
}

void host_vm_warm_qmp_ready(struct host_vm *vm)
{
    struct host_vm_warm *w = vm->warm;
    if (w->step != W_SPAWNED)
        return;
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
    if (w->step == W_QUIT) {
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
                 w->step < W_QUIT || w->step == W_RESUMING ? "old" : "new", how,
                 last[0] ? ": " : "", last);
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
    const char *qemu = opts && opts->qemu ? opts->qemu : vm->qemu_path;
    if (qemu == NULL)
        qemu = vm->env.qemu;
    if (access(qemu, X_OK) < 0)
        return vcr_error_errno(err, "warm restart of VM `%s`: qemu `%s`", name, qemu);
    struct host_vm_warm *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", name);
    w->vm = vm;
    w->corrupt = opts && opts->corrupt_state;
    w->cb = cb;
    w->opaque = opaque;
    snprintf(w->result.qemu, sizeof(w->result.qemu), "%s", qemu);
    w->poll = evtimer_new(vm->env.base, poll_migration, vm);
    w->deadline = evtimer_new(vm->env.base, on_deadline, w);
    if (w->poll == NULL || w->deadline == NULL) {
        host_vm_warm_free(w);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", name);
    }
    remove_state_files(vm); /* leftovers of an agent that died mid-way */
    vm->warm = w;
    struct timeval tv = {.tv_sec = HOST_VM_WARM_DEADLINE_MS / 1000,
                         .tv_usec = (HOST_VM_WARM_DEADLINE_MS % 1000) * 1000};
    evtimer_add(w->deadline, &tv);
    char cause[1100];
    snprintf(cause, sizeof(cause), "warm restart (to %s)", qemu);
    vm_sm_restarting(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    w->t_stop = now_ms();
    send_step(vm, W_STOP, "stop", NULL, on_stop);
    return 0;
}
