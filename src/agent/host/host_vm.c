/* VM supervision on a host (see host_vm.h). */
#include "agent/host/host_vm.h"
#include "agent/host/host_vm_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host/host_data.h"
#include "agent/host/host_sampler.h"
#include "agent/host/host_volume.h"
#include "agent/host/pause_boost.h"
#include "agent/proc.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "qmp/qmp.h"

/* QMP closed after a live connection: usually QEMU is exiting and its pidfd
 * fires a moment later, so wait this long before trying to get QMP back... */
#define QMP_RECONNECT_DELAY_MS 250
/* ...and then try for this long. */
#define QMP_RECONNECT_MS 5000
/* The pidfd said the process is gone but its QMP socket has not reached EOF
 * yet: how long to wait for the last events before concluding without them. */
#define EXIT_DRAIN_MS 1000
/* Starts the line the agent writes to NAME.log before each start. */
#define LOG_HEADER "--- vcr-agent: "

void host_vm_changed(struct host_vm *vm, int64_t ts_ms)
{
    log_info("VM %s: %s (%s), qemu pid %d", vm->spec->name, vm_state_name(vm->sm.state),
             vm->sm.cause, (int)vm->pid);
    host_data_vm_changed(vm);
    vm->cb(vm, ts_ms, vm->opaque);
}

static void remove_runtime_files(struct host_vm *vm)
{
    const char *files[] = {vm->paths.ram, vm->paths.qmp, vm->paths.pid, vm->paths.old_qmp,
                           vm->paths.old_pid};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (unlink(files[i]) < 0 && errno != ENOENT)
            log_warn("VM %s: cannot remove `%s`: %s", vm->spec->name, files[i], strerror(errno));
}

/* The last non-empty line QEMU wrote to its log: why it refused to start. */
void host_vm_log_last_line(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[2048];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    if (n <= 0)
        return;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    /* Our own header (write_log_header) means QEMU said nothing. */
    if (strncmp(line, LOG_HEADER, strlen(LOG_HEADER)) != 0)
        snprintf(out, size, "%.*s", (int)size - 1, line);
}

static void conclude_exit(struct host_vm *vm)
{
    if (!vm->exit_pending)
        return;
    vm->exit_pending = false;
    evtimer_del(vm->exit_drain);
    evtimer_del(vm->stop_timer);
    evtimer_del(vm->qmp_reconnect);
    vm->stop_step = 0;
    qmp_client_free(vm->qmp);
    vm->qmp = NULL;
    vm->qmp_ready = false;

    int wstatus = 0;
    bool have_status = proc_watch_status(vm->proc, &wstatus);
    if (vm->warm) {
        /* Expected (the old QEMU once its state is sealed) or not, the warm
         * restart decides, and removes the files of the QEMU that went (the
         * new one may have NAME.qmp and NAME.pid by now); the RAM file stays:
         * it is the guest's memory. */
        proc_watch_free(vm->proc);
        vm->proc = NULL;
        host_vm_warm_exited(vm, have_status, wstatus);
        return;
    }
    char detail[1024] = "";
    if (vm->sm.state == VM_STATE_STARTING) {
        char last[384];
        host_vm_log_last_line(vm->paths.log, last, sizeof(last));
        snprintf(detail, sizeof(detail), "%s%s%s", vm->start_failure,
                 vm->start_failure[0] && last[0] ? "; " : "", last);
    }
    bool report = vm_sm_exited(&vm->sm, have_status, wstatus, detail[0] ? detail : NULL);
    remove_runtime_files(vm);
    proc_watch_free(vm->proc);
    vm->proc = NULL;
    if (report)
        host_vm_changed(vm, vm->exit_seen_ms);
}

static void on_exit_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm *vm = arg;
    log_warn("VM %s: QMP did not reach EOF %d ms after qemu exited", vm->spec->name, EXIT_DRAIN_MS);
    conclude_exit(vm);
}

static void on_process_exit(struct proc_watch *w, int64_t seen_ms, void *opaque)
{
    (void)w;
    struct host_vm *vm = opaque;
    vm->exit_pending = true;
    vm->exit_seen_ms = seen_ms;
    if (!vm->qmp_ready) {
        conclude_exit(vm);
        return;
    }
    /* QEMU's sockets closed before its pidfd fired: EOF is on its way,
     * after any event QEMU wrote last. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = EXIT_DRAIN_MS * 1000};
    evtimer_add(vm->exit_drain, &tv);
}

static void on_query_status(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (result == NULL && error && strncmp(error, "connection closed", 17) == 0)
        return; /* the exit or the reconnect reports what follows */
    if (status == NULL) {
        /* QEMU runs the guest unless told otherwise (no -S): assume it does. */
        log_warn("VM %s: query-status failed: %s", vm->spec->name, error ? error : "no status");
        status = "running";
    }
    if (vm_sm_qmp_status(&vm->sm, status))
        host_vm_changed(vm, vcr_wall_ms());
}

static void on_qmp_ready(struct qmp_client *c, void *opaque)
{
    struct host_vm *vm = opaque;
    vm->qmp_ready = true;
    if (vm->warm) {
        host_vm_warm_qmp_ready(vm);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(c, "query-status", NULL, on_query_status, vm, &err) < 0)
        log_warn("VM %s: query-status: %s", vm->spec->name, vcr_error_msg(err));
}

static void on_qmp_event(struct qmp_client *c, const char *name, json_t *data, int64_t ts_us,
                         void *opaque)
{
    (void)c;
    (void)ts_us;
    struct host_vm *vm = opaque;
    int64_t seen = vcr_wall_ms();
    log_debug("VM %s: qmp event %s", vm->spec->name, name);
    if (vm->warm)
        host_vm_warm_qmp_event(vm, name, data);
    host_data_qmp_event(vm, name, data);
    if (vm_sm_qmp_event(&vm->sm, name, data))
        host_vm_changed(vm, seen);
}

/* QEMU never got its QMP going: kill it; the exit reports `failed` with why. */
static void abandon_start(struct host_vm *vm, const char *why)
{
    snprintf(vm->start_failure, sizeof(vm->start_failure), "%s", why);
    log_warn("VM %s: %s: killing qemu pid %d", vm->spec->name, why, (int)vm->pid);
    proc_watch_signal(vm->proc, SIGKILL, NULL);
}

static void on_qmp_closed(struct qmp_client *c, const char *reason, void *opaque)
{
    (void)c;
    struct host_vm *vm = opaque;
    bool was_ready = vm->qmp_ready;
    vm->qmp_ready = false;
    if (vm->exit_pending) {
        conclude_exit(vm);
        return;
    }
    if (vm->warm)
        return; /* the exit, or the warm restart's deadline, decides */
    if (vm->proc == NULL || proc_watch_has_exited(vm->proc))
        return; /* the pidfd callback concludes */
    bool starting = vm->sm.state == VM_STATE_STARTING;
    if (!was_ready && starting && vcr_mono_ms() - vm->started_ms >= HOST_VM_QMP_CONNECT_MS) {
        char why[256];
        snprintf(why, sizeof(why), "QMP not ready within %d ms (%s)", HOST_VM_QMP_CONNECT_MS,
                 reason ? reason : "closed");
        abandon_start(vm, why);
        return;
    }
    if (!was_ready && !starting) {
        log_warn("VM %s: QMP reconnect gave up (%s): supervising by pidfd only", vm->spec->name,
                 reason ? reason : "closed");
        return;
    }
    /* Usually QEMU is exiting and its pidfd fires in a moment: try again only later. */
    log_debug("VM %s: QMP connection ended (%s)", vm->spec->name, reason ? reason : "EOF");
    struct timeval tv = {.tv_sec = 0, .tv_usec = QMP_RECONNECT_DELAY_MS * 1000};
    evtimer_add(vm->qmp_reconnect, &tv);
}

static void on_qmp_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm *vm = arg;
    if (vm->proc == NULL || vm->exit_pending || vm->qmp == NULL)
        return;
    bool starting = vm->sm.state == VM_STATE_STARTING;
    int64_t left = HOST_VM_QMP_CONNECT_MS - (vcr_mono_ms() - vm->started_ms);
    int timeout = starting ? (int)(left > QMP_RECONNECT_DELAY_MS ? left : QMP_RECONNECT_DELAY_MS)
                           : QMP_RECONNECT_MS;
    if (!starting)
        log_warn("VM %s: QMP connection lost while qemu pid %d runs; reconnecting", vm->spec->name,
                 (int)vm->pid);
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_connect_retry(vm->qmp, vm->paths.qmp, timeout, &err) == 0)
        return;
    if (starting)
        abandon_start(vm, vcr_error_msg(err));
    else
        log_warn("VM %s: QMP reconnect: %s: supervising by pidfd only", vm->spec->name,
                 vcr_error_msg(err));
}

static const struct qmp_client_ops qmp_ops = {
    .ready = on_qmp_ready,
    .event = on_qmp_event,
    .closed = on_qmp_closed,
};

static void on_stop_timer(evutil_socket_t fd, short what, void *arg);

/* Takes the watch of the VM's QEMU, connects QMP and reports `starting` (or
 * `restarting`: an interrupted warm restart is being taken over). */
static void supervise(struct host_vm *vm, struct proc_watch *w, const char *why, bool restarting)
{
    pid_t pid = proc_watch_pid(w);
    vm->proc = w;
    vm->pid = pid;
    vm->started_ms = vcr_mono_ms();
    vm->start_failure[0] = '\0';
    uint64_t ticks, rss;
    memset(&vm->meter, 0, sizeof(vm->meter));
    if (sampler_read_proc(pid, &ticks, &rss))
        cpu_meter_update(&vm->meter, ticks, vcr_mono_ms(), sysconf(_SC_CLK_TCK));
    if (restarting)
        vm_sm_restarting(&vm->sm, why);
    else
        vm_sm_starting(&vm->sm, why);
    host_vm_changed(vm, vcr_wall_ms());
    vm->qmp = qmp_client_new(vm->env.base, &qmp_ops, vm);
    cleanup_error vcr_error_t qerr = NULL;
    if (vm->qmp == NULL ||
        qmp_client_connect_retry(vm->qmp, vm->paths.qmp, HOST_VM_QMP_CONNECT_MS, &qerr) < 0)
        abandon_start(vm, qerr ? vcr_error_msg(qerr) : "QMP client: out of memory");
}

struct host_vm *host_vm_new(const struct host_vm_env *env, const struct vcr_vm_spec *spec,
                            host_vm_changed_cb cb, void *opaque, vcr_error_t *err)
{
    struct host_vm *vm = calloc(1, sizeof(*vm));
    if (vm == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", spec->name), NULL;
    vm->env = *env;
    vm->spec = spec;
    vm->cb = cb;
    vm->opaque = opaque;
    vm_sm_init(&vm->sm, "not started");
    vm->exit_drain = evtimer_new(env->base, on_exit_drain_timeout, vm);
    vm->stop_timer = evtimer_new(env->base, on_stop_timer, vm);
    vm->qmp_reconnect = evtimer_new(env->base, on_qmp_reconnect, vm);
    if (vm->exit_drain == NULL || vm->stop_timer == NULL || vm->qmp_reconnect == NULL ||
        vm_paths_init(&vm->paths, env->ram->path, env->state_dir, env->host, spec->name, err) < 0) {
        host_vm_free(vm);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", spec->name), NULL;
    }
    return vm;
}

/* Whether /proc/PID/cmdline holds our QMP option for this VM: a recycled pid
 * or another VM's QEMU does not.  *incoming: it also holds -incoming. */
static bool cmdline_is_ours(const struct host_vm *vm, pid_t pid, bool *incoming)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    static char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    cleanup_free char *want = vm_qmp_option(&vm->paths);
    if (want == NULL)
        return false;
    bool ours = false, in = false;
    for (char *arg = buf; arg < buf + n; arg += strlen(arg) + 1) {
        ours = ours || strcmp(arg, want) == 0;
        in = in || strcmp(arg, "-incoming") == 0;
    }
    if (incoming)
        *incoming = in;
    return ours;
}

int host_vm_read_pid(const char *path)
{
    cleanup_file FILE *f = fopen(path, "re");
    int pid = 0;
    if (f == NULL || fscanf(f, "%d", &pid) != 1 || pid <= 0)
        return 0;
    return pid;
}

bool host_vm_pid_is_ours(const struct host_vm *vm, pid_t pid)
{
    return pid > 0 && cmdline_is_ours(vm, pid, NULL);
}

pid_t host_vm_find_qemu(const struct host_vm *vm, bool *incoming)
{
    if (vm->proc)
        return 0;
    cleanup_file FILE *f = fopen(vm->paths.pid, "re");
    int pid = 0;
    if (f == NULL || fscanf(f, "%d", &pid) != 1 || pid <= 0 || !cmdline_is_ours(vm, pid, incoming))
        return 0;
    return pid;
}

bool host_vm_adopt_pid(struct host_vm *vm, pid_t pid, const char *why, bool restarting)
{
    cleanup_error vcr_error_t err = NULL;
    struct proc_watch *w = proc_watch_new(vm->env.base, pid, on_process_exit, vm, &err);
    if (w == NULL) {
        log_warn("VM %s: cannot adopt pid %d: %s", vm->spec->name, (int)pid, vcr_error_msg(err));
        return false;
    }
    /* The pidfd pins the process: checked again, the pid cannot have been recycled since. */
    if (!cmdline_is_ours(vm, pid, NULL)) {
        proc_watch_free(w);
        return false;
    }
    int boosted = pause_boost_undo_left(pid);
    if (boosted > 0)
        log_warn("VM %s: qemu pid %d: %d thread(s) still under the pause boost of an earlier "
                 "agent's warm restart (SCHED_FIFO %d): back to SCHED_OTHER",
                 vm->spec->name, (int)pid, boosted, PAUSE_BOOST_PRIORITY);
    char exe[64], target[4096];
    snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(exe, target, sizeof(target) - 1);
    if (n > 0) {
        target[n] = '\0';
        host_vm_set_qemu_path(vm, target);
    }
    supervise(vm, w, why, restarting);
    return true;
}

bool host_vm_adopt(struct host_vm *vm)
{
    pid_t pid = host_vm_find_qemu(vm, NULL);
    if (pid <= 0)
        return false;
    char why[128];
    snprintf(why, sizeof(why), "adopted qemu pid %d left running by an earlier agent", (int)pid);
    return host_vm_adopt_pid(vm, pid, why, false);
}

bool host_vm_found_ended(struct host_vm *vm)
{
    if (vm->proc)
        return false;
    bool ram = access(vm->paths.ram, F_OK) == 0;
    cleanup_file FILE *f = fopen(vm->paths.pid, "re");
    int pid = 0;
    if (f && fscanf(f, "%d", &pid) != 1)
        pid = 0;
    if (!ram && f == NULL)
        return false;
    char which[32] = "";
    if (pid > 0)
        snprintf(which, sizeof(which), " pid %d", pid);
    char cause[256];
    snprintf(cause, sizeof(cause),
             "found ended at agent start: qemu%s ran under an earlier agent and is gone (not "
             "restarted: the server decides)",
             which);
    vm->pid = pid > 0 ? pid : 0;
    vm_sm_ended_unobserved(&vm->sm, cause);
    remove_runtime_files(vm);
    host_vm_changed(vm, vcr_wall_ms());
    return true;
}

void host_vm_log_header(const struct host_vm *vm, char **argv)
{
    cleanup_file FILE *f = fopen(vm->paths.log, "ae");
    if (f == NULL)
        return;
    fprintf(f, LOG_HEADER "starting VM %s at %lld ms:", vm->spec->name, (long long)vcr_wall_ms());
    for (char **a = argv; *a; a++)
        fprintf(f, " %s", *a);
    fputc('\n', f);
}

/* Starts QEMU on `argv` (stolen), its command line first in the VM's log, and
 * watches it. NULL on failure, with no process left behind. */
static struct proc_watch *spawn_watched(struct host_vm *vm, char **argv, vcr_error_t *err)
{
    host_vm_log_header(vm, argv);
    pid_t pid = proc_spawn(argv, vm->paths.log, err);
    vm_argv_free(argv);
    struct proc_watch *w =
        pid > 0 ? proc_watch_new(vm->env.base, pid, on_process_exit, vm, err) : NULL;
    if (w == NULL && pid > 0)
        kill(pid, SIGKILL);
    return w;
}

int host_vm_start(struct host_vm *vm, const char *why, vcr_error_t *err)
{
    if (vm->proc)
        return vcr_error_make(err, EBUSY, "VM `%s` is already running (qemu pid %d)",
                              vm->spec->name, (int)vm->pid);
    if (vm->prep)
        return vcr_error_make(err, EBUSY, "VM `%s` is already starting (its disks are prepared)",
                              vm->spec->name);
    /* Leftovers of a QEMU that died with no agent to clean up after it: a
     * stale RAM file would hand its old contents to the new guest. */
    remove_runtime_files(vm);
    /* One boot per console log: QEMU only ever appends to it (vm.c). */
    if (truncate(vm->paths.serial, 0) < 0 && errno != ENOENT)
        log_warn("VM %s: truncate `%s`: %s", vm->spec->name, vm->paths.serial, strerror(errno));
    /* docs/warm-cache.md: never start with a volume that failed its checks
     * (host_vm_prep.c makes and checks them off the loop). */
    if (host_vm_needs_prep(vm))
        return host_vm_prep_start(vm, why, err);
    return host_vm_launch(vm, why, err);
}

int host_vm_launch(struct host_vm *vm, const char *why, vcr_error_t *err)
{
    /* The RAM: on hugetlbfs its pages are counted and reserved now, so that a
     * shortage is a clear cause instead of QEMU dying (ram_dir.h). */
    uint64_t reserved = 0;
    if (ram_dir_reserve(vm->env.ram, vm->spec->name, vm->paths.ram, vm->spec->memory_mb, &reserved,
                        err) < 0 ||
        ram_dir_own_file(vm->spec->name, vm->paths.ram,
                         vm->env.ram->backing != RAM_BACKING_HUGETLBFS, err) < 0) {
        vm_sm_failed(&vm->sm, vcr_error_msg(err ? *err : NULL));
        host_vm_changed(vm, vcr_wall_ms());
        return vcr_error_wrap(err, "start VM `%s`", vm->spec->name);
    }
    if (reserved)
        log_info("VM %s: RAM `%s` on hugetlbfs: %llu pages of %llu kB reserved", vm->spec->name,
                 vm->paths.ram, (unsigned long long)reserved,
                 (unsigned long long)(vm->env.ram->page_size >> 10));
    else
        log_info("VM %s: RAM `%s` on %s", vm->spec->name, vm->paths.ram,
                 ram_backing_name(vm->env.ram->backing));
    struct vm_launch launch = {.qemu = vm->env.qemu,
                               .accel = vm->env.accel,
                               .spec = vm->spec,
                               .paths = &vm->paths,
                               .runas = host_vm_runas(vm)};
    char **argv = vm_qemu_argv(&launch, err);
    struct proc_watch *w = argv ? spawn_watched(vm, argv, err) : NULL;
    if (w == NULL) {
        remove_runtime_files(vm); /* the reserved RAM file */
        vm_sm_failed(&vm->sm, vcr_error_msg(err ? *err : NULL));
        host_vm_changed(vm, vcr_wall_ms());
        return vcr_error_wrap(err, "start VM `%s`", vm->spec->name);
    }
    host_vm_set_qemu_path(vm, vm->env.qemu);
    supervise(vm, w, why, false);
    return 0;
}

static void escalate_stop(struct host_vm *vm)
{
    cleanup_error vcr_error_t err = NULL;
    struct timeval tv = {.tv_sec = HOST_VM_STOP_KILL_MS / 1000,
                         .tv_usec = (HOST_VM_STOP_KILL_MS % 1000) * 1000};
    if (vm->stop_step < 2) {
        vm->stop_step = 2;
        if (vm->qmp_ready && qmp_client_command(vm->qmp, "quit", NULL, NULL, NULL, &err) == 0)
            log_info("VM %s: sent QMP quit", vm->spec->name);
        else
            proc_watch_signal(vm->proc, SIGTERM, NULL);
        evtimer_add(vm->stop_timer, &tv);
        return;
    }
    log_warn("VM %s: still running %d ms after quit: SIGKILL", vm->spec->name,
             HOST_VM_STOP_KILL_MS);
    proc_watch_signal(vm->proc, SIGKILL, NULL);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_vm *vm = arg;
    if (vm->proc)
        escalate_stop(vm);
}

int host_vm_stop(struct host_vm *vm, int grace_ms, vcr_error_t *err)
{
    if (vm->prep) {
        host_vm_prep_cancel(vm, "stopped on order before its qemu started");
        return 0;
    }
    if (vm->proc == NULL || vm->exit_pending)
        return vcr_error_make(err, ESRCH, "VM `%s` is not running", vm->spec->name);
    if (vm->warm)
        return vcr_error_make(err, EBUSY, "VM `%s` is under a warm restart", vm->spec->name);
    vm_sm_stop_ordered(&vm->sm);
    cleanup_error vcr_error_t qerr = NULL;
    if (grace_ms > 0 && vm->stop_step == 0 && vm->qmp_ready &&
        qmp_client_command(vm->qmp, "system_powerdown", NULL, NULL, NULL, &qerr) == 0) {
        vm->stop_step = 1;
        log_info("VM %s: sent system_powerdown; quit in %d ms unless it powers off", vm->spec->name,
                 grace_ms);
        struct timeval tv = {.tv_sec = grace_ms / 1000, .tv_usec = (grace_ms % 1000) * 1000};
        evtimer_add(vm->stop_timer, &tv);
        return 0;
    }
    if (vm->stop_step < 2)
        escalate_stop(vm);
    return 0;
}

int host_vm_kill(struct host_vm *vm, vcr_error_t *err)
{
    if (vm->prep) {
        host_vm_prep_cancel(vm, "stopped on order before its qemu started");
        return 0;
    }
    if (vm->proc == NULL || vm->exit_pending)
        return vcr_error_make(err, ESRCH, "VM `%s` is not running", vm->spec->name);
    if (vm->warm)
        host_vm_warm_abort(vm, "killed on order");
    vm_sm_stop_ordered(&vm->sm);
    if (proc_watch_signal(vm->proc, SIGKILL, err) < 0)
        return vcr_error_wrap(err, "kill VM `%s`", vm->spec->name);
    log_info("VM %s: sent SIGKILL to qemu pid %d", vm->spec->name, (int)vm->pid);
    return 0;
}

const char *host_vm_name(const struct host_vm *vm)
{
    return vm->spec->name;
}

enum vm_state host_vm_state(const struct host_vm *vm)
{
    return vm->sm.state;
}

const char *host_vm_cause(const struct host_vm *vm)
{
    return vm->sm.cause;
}

pid_t host_vm_pid(const struct host_vm *vm)
{
    return vm->pid;
}

bool host_vm_has_process(const struct host_vm *vm)
{
    return vm->proc != NULL;
}

bool host_vm_preparing(const struct host_vm *vm)
{
    return vm->prep != NULL;
}

json_t *host_vm_json(const struct host_vm *vm)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:i, s:i, s:s, s:s?, s:s, s:s, s:s?, s:s?}",
                     "name", vm->spec->name, "state", vm_state_name(vm->sm.state), "cause",
                     vm->sm.cause, "boots", (json_int_t)vm->sm.boots, "pid",
                     vm->proc ? (int)vm->pid : 0, "address", vm->spec->ip, "memory_mb",
                     (int)vm->spec->memory_mb, "vcpus", (int)vm->spec->vcpus, "accel",
                     vm->env.accel, "qemu", vm->proc ? vm->qemu_path : NULL, "ram", vm->paths.ram,
                     "ram_backing", ram_backing_name(vm->env.ram->backing), "disk",
                     vm->spec->disk ? vm->paths.disk : NULL, "disk_base", vm->spec->disk);
}

uint32_t host_vm_boots(const struct host_vm *vm)
{
    return vm->sm.boots;
}

const char *host_vm_qemu(const struct host_vm *vm)
{
    return vm->qemu_path;
}

bool host_vm_restarting(const struct host_vm *vm)
{
    return vm->warm != NULL;
}

const char *host_vm_runas(const struct host_vm *vm)
{
    return vm->env.qemu_user;
}

void host_vm_set_qemu_path(struct host_vm *vm, const char *path)
{
    char *copy = path ? strdup(path) : NULL;
    free(vm->qemu_path);
    vm->qemu_path = copy;
}

int host_vm_spawn(struct host_vm *vm, const char *qemu, bool incoming, vcr_error_t *err)
{
    /* The new QEMU of a warm restart maps the volume images too: one that an
     * earlier agent kept in /dev/shm must be in its image first. */
    if (host_disk_check(vm->spec, &vm->paths, err) < 0 || host_volumes_prepare(vm, err) < 0)
        return vcr_error_wrap(err, "start qemu of VM `%s`", vm->spec->name);
    struct vm_launch launch = {.qemu = qemu,
                               .accel = vm->env.accel,
                               .spec = vm->spec,
                               .paths = &vm->paths,
                               .incoming = incoming,
                               .runas = host_vm_runas(vm)};
    char **argv = vm_qemu_argv(&launch, err);
    if (argv == NULL)
        return -1;
    struct proc_watch *w = spawn_watched(vm, argv, err);
    if (w == NULL)
        return vcr_error_wrap(err, "start qemu of VM `%s`", vm->spec->name);
    vm->proc = w;
    vm->pid = proc_watch_pid(w);
    vm->started_ms = vcr_mono_ms();
    vm->start_failure[0] = '\0';
    vm->exit_pending = false;
    host_vm_set_qemu_path(vm, qemu);
    memset(&vm->meter, 0, sizeof(vm->meter));
    qmp_client_free(vm->qmp);
    vm->qmp_ready = false;
    vm->qmp = qmp_client_new(vm->env.base, &qmp_ops, vm);
    if (vm->qmp == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: QMP client: out of memory", vm->spec->name);
    return qmp_client_connect_retry(vm->qmp, vm->paths.qmp, HOST_VM_QMP_CONNECT_MS, err);
}

void host_vm_take_qemu(struct host_vm *vm, struct proc_watch *w, struct qmp_client *q,
                       const char *qemu)
{
    proc_watch_set_callback(w, on_process_exit, vm);
    qmp_client_set_ops(q, &qmp_ops, vm);
    qmp_client_free(vm->qmp);
    vm->proc = w;
    vm->pid = proc_watch_pid(w);
    vm->qmp = q;
    vm->qmp_ready = qmp_client_is_ready(q);
    vm->started_ms = vcr_mono_ms();
    vm->start_failure[0] = '\0';
    vm->exit_pending = false;
    host_vm_set_qemu_path(vm, qemu);
    memset(&vm->meter, 0, sizeof(vm->meter));
}

json_t *host_vm_sample(struct host_vm *vm)
{
    uint64_t ticks, rss_kb;
    if (vm->proc == NULL || !sampler_read_proc(vm->pid, &ticks, &rss_kb))
        return NULL;
    double pct = cpu_meter_update(&vm->meter, ticks, vcr_mono_ms(), sysconf(_SC_CLK_TCK));
    return json_pack("{s:s, s:f, s:I}", "vm", vm->spec->name, "cpu_pct", pct < 0 ? 0.0 : pct,
                     "rss_kb", (json_int_t)rss_kb);
}

void host_vm_free(struct host_vm *vm)
{
    if (vm == NULL)
        return;
    host_vm_warm_free(vm->warm);
    host_vm_prep_free(vm);
    host_volumes_free(vm);
    host_data_free(vm);
    free(vm->qemu_path);
    qmp_client_free(vm->qmp);
    proc_watch_free(vm->proc);
    if (vm->exit_drain)
        event_free(vm->exit_drain);
    if (vm->stop_timer)
        event_free(vm->stop_timer);
    if (vm->qmp_reconnect)
        event_free(vm->qmp_reconnect);
    vm_paths_clear(&vm->paths);
    free(vm);
}
