/* Accelerator choice and the KVM probe (see accel.h). */
#include "agent/host/accel.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "agent/proc.h"
#include "agent/host/vm.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define MARKER_LEN (sizeof(ACCEL_PROBE_MARKER) - 1)

struct accel_probe {
    struct event_base *base;
    const struct vcr_agent_config *cfg;
    accel_done_cb cb;
    void *opaque;
    struct accel_choice choice;
    struct event *deliver; /* runs cb from the loop */
    /* the probe guest */
    int64_t started_ms;
    struct proc_watch *proc;
    int serial_fd;
    int inotify_fd;
    struct event *inotify_ev;
    struct event *deadline;
    char tail[MARKER_LEN]; /* the last bytes read, for a marker split across reads */
    size_t tail_len;
    char *cache_path;
    char *serial_path;
    char *log_path;
};

__attribute__((format(printf, 3, 4))) static void choose(struct accel_probe *p, const char *accel,
                                                         const char *fmt, ...)
{
    snprintf(p->choice.accel, sizeof(p->choice.accel), "%s", accel);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->choice.reason, sizeof(p->choice.reason), fmt, ap);
    va_end(ap);
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct accel_probe *p = arg;
    p->cb(&p->choice, p->opaque);
}

static void deliver(struct accel_probe *p)
{
    event_active(p->deliver, EV_TIMEOUT, 0);
}

/* --- cache ------------------------------------------------------------- */

static json_t *file_key(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return NULL;
    return json_pack("{s:s, s:I}", "path", path, "mtime_ns",
                     (json_int_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
}

static json_t *cache_key(const struct vcr_agent_config *cfg)
{
    struct utsname u;
    if (uname(&u) < 0)
        return NULL;
    json_t *qemu = file_key(cfg->qemu), *kernel = file_key(cfg->probe_kernel),
           *initrd = file_key(cfg->probe_initrd);
    if (qemu == NULL || kernel == NULL || initrd == NULL) {
        json_decref(qemu);
        json_decref(kernel);
        json_decref(initrd);
        return NULL;
    }
    return json_pack("{s:o, s:o, s:o, s:s}", "qemu", qemu, "kernel", kernel, "initrd", initrd,
                     "host_kernel", u.release);
}

static bool cache_lookup(struct accel_probe *p)
{
    cleanup_json json_t *key = cache_key(p->cfg);
    json_error_t jerr;
    cleanup_json json_t *cached = json_load_file(p->cache_path, 0, &jerr);
    if (key == NULL || cached == NULL || !json_equal(json_object_get(cached, "key"), key))
        return false;
    const char *accel = json_string_value(json_object_get(cached, "accel"));
    const char *reason = json_string_value(json_object_get(cached, "reason"));
    if (accel == NULL || reason == NULL || (strcmp(accel, "kvm") != 0 && strcmp(accel, "tcg") != 0))
        return false;
    choose(p, accel, "cached in %s: %s", p->cache_path, reason);
    return true;
}

static void cache_store(struct accel_probe *p)
{
    cleanup_json json_t *key = cache_key(p->cfg);
    if (key == NULL)
        return;
    cleanup_json json_t *doc =
        json_pack("{s:O, s:s, s:s, s:I}", "key", key, "accel", p->choice.accel, "reason",
                  p->choice.reason, "probed_at_ms", (json_int_t)vcr_wall_ms());
    cleanup_free char *tmp = NULL;
    if (doc == NULL || asprintf(&tmp, "%s.tmp", p->cache_path) < 0)
        return;
    /* Written aside and renamed: an agent killed mid-write leaves no half file. */
    if (json_dump_file(doc, tmp, JSON_INDENT(2)) < 0 || rename(tmp, p->cache_path) < 0) {
        log_warn("accel: cannot write cache `%s`: %s", p->cache_path, strerror(errno));
        unlink(tmp);
    }
}

/* --- probe ------------------------------------------------------------- */

static void probe_stop(struct accel_probe *p)
{
    if (p->proc) {
        if (!proc_watch_has_exited(p->proc))
            proc_watch_signal(p->proc, SIGKILL, NULL);
        /* The zombie is reaped by proc_reap_children (SIGCHLD). */
        proc_watch_free(p->proc);
        p->proc = NULL;
    }
    if (p->inotify_ev) {
        event_free(p->inotify_ev);
        p->inotify_ev = NULL;
    }
    if (p->deadline) {
        event_free(p->deadline);
        p->deadline = NULL;
    }
    if (p->inotify_fd >= 0)
        close(p->inotify_fd);
    if (p->serial_fd >= 0)
        close(p->serial_fd);
    p->inotify_fd = p->serial_fd = -1;
}

static void probe_conclude(struct accel_probe *p)
{
    probe_stop(p);
    cache_store(p);
    deliver(p);
}

/* Reads what the guest wrote since last time; true once the marker is seen. */
static bool scan_serial(struct accel_probe *p)
{
    char buf[4096 + MARKER_LEN];
    for (;;) {
        memcpy(buf, p->tail, p->tail_len);
        ssize_t n = read(p->serial_fd, buf + p->tail_len, sizeof(buf) - p->tail_len);
        if (n <= 0)
            return false;
        size_t len = p->tail_len + (size_t)n;
        if (memmem(buf, len, ACCEL_PROBE_MARKER, MARKER_LEN) != NULL)
            return true;
        p->tail_len = len < MARKER_LEN - 1 ? len : MARKER_LEN - 1;
        memcpy(p->tail, buf + len - p->tail_len, p->tail_len);
    }
}

static void marker_seen(struct accel_probe *p)
{
    choose(p, "kvm", "probe guest printed " ACCEL_PROBE_MARKER " %lld ms after start under KVM",
           (long long)(vcr_mono_ms() - p->started_ms));
    probe_conclude(p);
}

static void on_serial_modified(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct accel_probe *p = arg;
    char events[4096];
    while (read(fd, events, sizeof(events)) > 0)
        continue;
    if (scan_serial(p))
        marker_seen(p);
}

static void on_probe_exit(struct proc_watch *w, int64_t seen_ms, void *opaque)
{
    (void)seen_ms;
    struct accel_probe *p = opaque;
    /* The marker may sit in the file although its inotify event is still queued. */
    if (scan_serial(p)) {
        marker_seen(p);
        return;
    }
    int status;
    char how[128] = "status unknown";
    if (proc_watch_status(w, &status))
        vm_exit_cause(true, status, how, sizeof(how));
    choose(p, "tcg",
           "the probe under KVM ended (%s) after %lld ms without printing " ACCEL_PROBE_MARKER
           " (see %s, %s)",
           how, (long long)(vcr_mono_ms() - p->started_ms), p->log_path, p->serial_path);
    probe_conclude(p);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct accel_probe *p = arg;
    if (scan_serial(p)) {
        marker_seen(p);
        return;
    }
    choose(p, "tcg",
           "no " ACCEL_PROBE_MARKER " within %u ms under KVM: the guest hangs (probe killed, "
           "serial output in %s)",
           p->cfg->probe_deadline_ms, p->serial_path);
    probe_conclude(p);
}

static int probe_start(struct accel_probe *p, vcr_error_t *err)
{
    const struct vcr_agent_config *cfg = p->cfg;
    cleanup_close int created =
        open(p->serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (created < 0)
        return vcr_error_errno(err, "create `%s`", p->serial_path);
    p->serial_fd = open(p->serial_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    p->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (p->serial_fd < 0 || p->inotify_fd < 0 ||
        inotify_add_watch(p->inotify_fd, p->serial_path, IN_MODIFY) < 0)
        return vcr_error_errno(err, "watch `%s`", p->serial_path);
    p->inotify_ev = event_new(p->base, p->inotify_fd, EV_READ | EV_PERSIST, on_serial_modified, p);
    p->deadline = evtimer_new(p->base, on_deadline, p);
    if (p->inotify_ev == NULL || p->deadline == NULL || event_add(p->inotify_ev, NULL) < 0)
        return vcr_error_make(err, ENOMEM, "accel probe: cannot create events");

    cleanup_free char *serial_opt = NULL;
    if (asprintf(&serial_opt, "file:%s", p->serial_path) < 0)
        return vcr_error_make(err, ENOMEM, "accel probe: out of memory");
    char *const argv[] = {
        cfg->qemu,
        "-accel",
        "kvm",
        "-machine",
        "pc",
        "-m",
        "256M",
        "-nodefaults",
        "-no-user-config",
        "-vga",
        "none",
        "-display",
        "none",
        "-kernel",
        cfg->probe_kernel,
        "-initrd",
        cfg->probe_initrd,
        "-append",
        "console=ttyS0 vcr.probe=1",
        "-serial",
        serial_opt,
        "-no-reboot",
        NULL,
    };
    p->started_ms = vcr_mono_ms();
    pid_t pid = proc_spawn(argv, p->log_path, err);
    if (pid < 0)
        return -1;
    p->proc = proc_watch_new(p->base, pid, on_probe_exit, p, err);
    if (p->proc == NULL) {
        kill(pid, SIGKILL);
        return -1;
    }
    struct timeval tv = {.tv_sec = cfg->probe_deadline_ms / 1000,
                         .tv_usec = (cfg->probe_deadline_ms % 1000) * 1000};
    evtimer_add(p->deadline, &tv);
    log_info(
        "accel: probing KVM: booting %s under KVM, waiting up to %u ms for " ACCEL_PROBE_MARKER,
        cfg->probe_kernel, cfg->probe_deadline_ms);
    return 0;
}

struct accel_probe *accel_resolve(struct event_base *base, const struct vcr_agent_config *cfg,
                                  accel_done_cb cb, void *opaque, vcr_error_t *err)
{
    struct accel_probe *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return vcr_error_make(err, ENOMEM, "accel: out of memory"), NULL;
    p->base = base;
    p->cfg = cfg;
    p->cb = cb;
    p->opaque = opaque;
    p->serial_fd = p->inotify_fd = -1;
    p->deliver = event_new(base, -1, 0, on_deliver, p);
    if (p->deliver == NULL || asprintf(&p->cache_path, "%s/accel.json", cfg->state_dir) < 0 ||
        asprintf(&p->serial_path, "%s/accel-probe.serial", cfg->state_dir) < 0 ||
        asprintf(&p->log_path, "%s/accel-probe.log", cfg->state_dir) < 0) {
        accel_probe_free(p);
        return vcr_error_make(err, ENOMEM, "accel: out of memory"), NULL;
    }

    if (cfg->accel == VCR_ACCEL_TCG) {
        choose(p, "tcg", "configured (accel: tcg)");
    } else if (cfg->accel == VCR_ACCEL_KVM) {
        if (access("/dev/kvm", R_OK | W_OK) < 0)
            log_warn("accel: kvm configured but /dev/kvm is not usable (%s): VMs will fail",
                     strerror(errno));
        choose(p, "kvm", "configured (accel: kvm)");
    } else if (access("/dev/kvm", R_OK | W_OK) < 0) {
        choose(p, "tcg", "/dev/kvm is not usable (%s): no probe needed", strerror(errno));
    } else if (!cache_lookup(p)) {
        cleanup_error vcr_error_t perr = NULL;
        if (probe_start(p, &perr) == 0)
            return p;
        probe_stop(p);
        choose(p, "tcg", "the KVM probe could not run: %s", vcr_error_msg(perr));
    }
    deliver(p);
    return p;
}

void accel_probe_free(struct accel_probe *p)
{
    if (p == NULL)
        return;
    probe_stop(p);
    if (p->deliver)
        event_free(p->deliver);
    free(p->cache_path);
    free(p->serial_path);
    free(p->log_path);
    free(p);
}
