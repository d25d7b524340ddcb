/* The host role's link to its fence watchdog (see host_fence.h). */
#include "agent/host/host_fence.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/host/fence_watchdog.h"
#include "agent/host/host_vm.h"
#include "common/cleanup.h"
#include "common/log.h"

/* After the watchdog connection broke: when to re-attach (or respawn). */
#define HOST_FENCE_RETRY_MS 500

struct host_fence {
    struct event_base *base;
    char *state_dir;
    char exe[PATH_MAX];
    uint32_t timeout_ms; /* 0: off */
    int fd;
    struct event *rd;
    struct event *retry;
    int64_t last_feed; /* the latest evidence, re-sent after a reconnect */
    char *vms_line;    /* "vms NAME=PID ...\n" last sent */
    char lines[1024];  /* what the watchdog sent, up to its last full line */
    size_t lines_len;
    /* Its pause as last heard (status, `paused MS`), in fence_wd_now_ms() time; 0 none. */
    int64_t pause_until;
    struct event *pause_end; /* the pause ran out: report it */
    host_fence_changed_fn changed;
    void *changed_opaque;
    /* What the server was last told (host_fence_report), to tell it only changes. */
    uint32_t told_timeout_ms;
    const char *told_state;
    int64_t told_pause_until;
};

static const char *fence_state(const struct host_fence *f)
{
    if (f->timeout_ms == 0)
        return "off";
    if (f->fd < 0)
        return "down";
    return f->pause_until > fence_wd_now_ms() ? "paused" : "armed";
}

/* Calls the changed hook when the report differs from the last one told. */
static void fence_report_changes(struct host_fence *f)
{
    const char *state = fence_state(f);
    if (f->told_state && strcmp(state, f->told_state) == 0 && f->told_timeout_ms == f->timeout_ms &&
        f->told_pause_until == f->pause_until)
        return;
    f->told_state = state;
    f->told_timeout_ms = f->timeout_ms;
    f->told_pause_until = f->pause_until;
    if (f->changed)
        f->changed(f->changed_opaque);
}

/* The watchdog's pause, MS left (0: none). */
static void fence_set_pause(struct host_fence *f, int64_t left_ms)
{
    evtimer_del(f->pause_end);
    f->pause_until = left_ms > 0 ? fence_wd_now_ms() + left_ms : 0;
    if (left_ms > 0) {
        log_warn("fence watchdog: paused for %lld ms: this host's VMs are not self-fenced "
                 "meanwhile, and the server will not count on it",
                 (long long)left_ms);
        struct timeval tv = {.tv_sec = left_ms / 1000, .tv_usec = (left_ms % 1000) * 1000};
        evtimer_add(f->pause_end, &tv);
    }
    fence_report_changes(f);
}

static void on_pause_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_fence *f = arg;
    log_info("fence watchdog: its pause is over");
    fence_set_pause(f, 0);
}

static void fence_send(struct host_fence *f, const char *line);
static void fence_attach(struct host_fence *f);

static void fence_detach(struct host_fence *f, const char *why)
{
    if (f->fd < 0)
        return;
    log_warn("fence watchdog: %s; re-attaching in %d ms", why, HOST_FENCE_RETRY_MS);
    event_free(f->rd);
    f->rd = NULL;
    close(f->fd);
    f->fd = -1;
    f->lines_len = 0;
    struct timeval tv = {0, HOST_FENCE_RETRY_MS * 1000};
    evtimer_add(f->retry, &tv);
    fence_report_changes(f);
}

/* One line from the watchdog (fence_watchdog.h). */
static void fence_line(struct host_fence *f, const char *line)
{
    if (strcmp(line, "fenced") == 0) {
        log_warn("fence watchdog: it killed this host's VMs (no server contact for %u ms)",
                 f->timeout_ms);
    } else if (strncmp(line, "paused ", 7) == 0) {
        fence_set_pause(f, strtoll(line + 7, NULL, 10));
    } else if (line[0] == '{') {
        /* The answer to our `status`, asked on every attach. */
        cleanup_json json_t *st = json_loads(line, 0, NULL);
        fence_set_pause(f, json_integer_value(json_object_get(st, "pause_ms")));
    } else if (strncmp(line, "error", 5) == 0) {
        log_warn("fence watchdog: %s", line);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct host_fence *f = arg;
    ssize_t n =
        recv(fd, f->lines + f->lines_len, sizeof(f->lines) - 1 - f->lines_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fence_detach(f, n < 0 ? strerror(errno) : "connection closed");
        return;
    }
    f->lines_len += (size_t)n;
    f->lines[f->lines_len] = '\0';
    char *start = f->lines, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = '\0';
        fence_line(f, start);
        start = nl + 1;
    }
    f->lines_len -= (size_t)(start - f->lines);
    memmove(f->lines, start, f->lines_len);
    if (f->lines_len == sizeof(f->lines) - 1)
        f->lines_len = 0; /* no line is that long: drop the garbage */
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fence_attach(arg);
}

static int connect_socket(const char *state_dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", state_dir, FENCE_WD_SOCKET) >=
        sizeof(sa.sun_path))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Double fork: the watchdog is in a session of its own and not our child, so
 * it outlives the agent and is never reaped by it.  The listening socket is
 * made here and inherited as fd 3: connecting right after cannot race. */
static int spawn_watchdog(struct host_fence *f, vcr_error_t *err)
{
    cleanup_close int lfd = fence_wd_listen(f->state_dir, err);
    if (lfd < 0)
        return -1;
    char timeout[16], log_path[PATH_MAX];
    snprintf(timeout, sizeof(timeout), "%u", f->timeout_ms);
    snprintf(log_path, sizeof(log_path), "%s/fence-watchdog.log", f->state_dir);
    const char *level = vcr_log_max_level() >= VCR_LOG_DEBUG ? "debug" : "info";
    char *const argv[] = {f->exe,        "--fence-watchdog",
                          f->state_dir,  "--timeout-ms",
                          timeout,       "--listen-fd",
                          "3",           "--log-level",
                          (char *)level, NULL};
    pid_t pid = fork();
    if (pid < 0)
        return vcr_error_errno(err, "fence watchdog: fork");
    if (pid == 0) {
        if (setsid() < 0 || fork() != 0)
            _exit(0);
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 ||
            dup2(lfd, 3) < 0)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        close_range(4, ~0u, CLOSE_RANGE_CLOEXEC);
        execv(f->exe, argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    log_info("fence watchdog started: VMs are killed after %u ms without server contact (log "
             "`%s`)",
             f->timeout_ms, log_path);
    return 0;
}

static void fence_attach(struct host_fence *f)
{
    cleanup_error vcr_error_t err = NULL;
    int fd = connect_socket(f->state_dir);
    if (fd >= 0) {
        log_info("fence watchdog: attached to the running one");
    } else if (spawn_watchdog(f, &err) < 0 || (fd = connect_socket(f->state_dir)) < 0) {
        log_error("fence watchdog: cannot start it: %s; retrying",
                  err ? vcr_error_msg(err) : strerror(errno));
        struct timeval tv = {0, HOST_FENCE_RETRY_MS * 1000};
        evtimer_add(f->retry, &tv);
        return;
    }
    f->fd = fd;
    f->rd = event_new(f->base, fd, EV_READ | EV_PERSIST, on_readable, f);
    if (f->rd)
        event_add(f->rd, NULL);
    char line[64];
    snprintf(line, sizeof(line), "timeout %u\n", f->timeout_ms);
    fence_send(f, line);
    if (f->last_feed > 0) {
        snprintf(line, sizeof(line), "feed %" PRId64 "\n", f->last_feed);
        fence_send(f, line);
    }
    if (f->vms_line)
        fence_send(f, f->vms_line);
    fence_send(f, "status\n"); /* a pause set while we were away */
    fence_report_changes(f);
}

static void fence_send(struct host_fence *f, const char *line)
{
    if (f->fd < 0)
        return;
    size_t len = strlen(line);
    ssize_t n = send(f->fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n == (ssize_t)len)
        return;
    if (n < 0 && errno == EAGAIN)
        log_warn("fence watchdog: not reading (socket full): message dropped");
    else
        fence_detach(f, n < 0 ? strerror(errno) : "short write");
}

struct host_fence *host_fence_new(struct event_base *base, const char *state_dir,
                                  uint32_t timeout_ms, const char *exe,
                                  host_fence_changed_fn changed, void *opaque, vcr_error_t *err)
{
    struct host_fence *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->state_dir = strdup(state_dir)) == NULL) {
        free(f);
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    }
    f->base = base;
    f->fd = -1;
    f->timeout_ms = timeout_ms;
    f->changed = changed;
    f->changed_opaque = opaque;
    if (timeout_ms == 0) {
        /* Off: a watchdog an earlier agent left exits once told there is nothing to fence. */
        int fd = connect_socket(state_dir);
        if (fd >= 0) {
            log_info("fence_timeout_ms 0: telling the running fence watchdog to stand down");
            (void)send(fd, "vms\n", 4, MSG_NOSIGNAL);
            close(fd);
        }
        log_warn("self-fencing is off (fence_timeout_ms 0): the server must not rely on it");
        return f;
    }
    if (exe) {
        snprintf(f->exe, sizeof(f->exe), "%s", exe);
    } else {
        ssize_t n = readlink("/proc/self/exe", f->exe, sizeof(f->exe) - 1);
        if (n <= 0) {
            host_fence_free(f);
            return vcr_error_errno(err, "fence watchdog: readlink /proc/self/exe"), NULL;
        }
        f->exe[n] = '\0';
    }
    f->retry = evtimer_new(base, on_retry, f);
    f->pause_end = evtimer_new(base, on_pause_end, f);
    if (f->retry == NULL || f->pause_end == NULL) {
        host_fence_free(f);
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    }
    fence_attach(f);
    return f;
}

uint32_t host_fence_effective_timeout(uint32_t configured_ms, uint32_t fence_after_ms)
{
    if (configured_ms == 0 || fence_after_ms == 0 || fence_after_ms >= configured_ms)
        return configured_ms;
    return fence_after_ms < FENCE_WD_TIMEOUT_MIN ? FENCE_WD_TIMEOUT_MIN : fence_after_ms;
}

void host_fence_limit(struct host_fence *f, uint32_t fence_after_ms)
{
    if (f == NULL)
        return;
    uint32_t t = host_fence_effective_timeout(f->timeout_ms, fence_after_ms);
    if (t == f->timeout_ms)
        return;
    log_warn("fence_timeout_ms %u is longer than the server waits (%u ms after the last "
             "contact): self-fencing after %u ms",
             f->timeout_ms, fence_after_ms, t);
    f->timeout_ms = t;
    char line[64];
    snprintf(line, sizeof(line), "timeout %u\n", t);
    fence_send(f, line);
    fence_report_changes(f);
}

json_t *host_fence_report(const struct host_fence *f)
{
    if (f == NULL)
        return json_pack("{s:i, s:s}", "timeout_ms", 0, "watchdog", "down");
    json_t *o = json_pack("{s:I, s:s}", "timeout_ms", (json_int_t)f->timeout_ms, "watchdog",
                          fence_state(f));
    int64_t left = f->pause_until - fence_wd_now_ms();
    if (o && left > 0 && f->timeout_ms > 0 && f->fd >= 0)
        json_object_set_new(o, "pause_ms", json_integer(left));
    return o;
}

void host_fence_feed(struct host_fence *f, int64_t evidence_ms)
{
    if (f == NULL || f->timeout_ms == 0 || evidence_ms <= f->last_feed)
        return;
    f->last_feed = evidence_ms;
    char line[64];
    snprintf(line, sizeof(line), "feed %" PRId64 "\n", evidence_ms);
    fence_send(f, line);
}

void host_fence_sync(struct host_fence *f, struct host_vm *const *vms, size_t n)
{
    const char *names[FENCE_WD_MAX_VMS];
    pid_t pids[FENCE_WD_MAX_VMS];
    size_t k = 0;
    for (size_t i = 0; i < n && k < FENCE_WD_MAX_VMS; i++) {
        names[k] = host_vm_name(vms[i]);
        pids[k++] = host_vm_has_process(vms[i]) ? host_vm_pid(vms[i]) : 0;
    }
    host_fence_sync_pids(f, names, pids, k);
}

void host_fence_sync_pids(struct host_fence *f, const char *const *names, const pid_t *pids,
                          size_t n)
{
    if (f == NULL || f->timeout_ms == 0)
        return;
    size_t cap = 8 + n * (FENCE_WD_NAME_MAX + 16);
    cleanup_free char *line = malloc(cap);
    if (line == NULL)
        return;
    size_t len = (size_t)snprintf(line, cap, "vms");
    for (size_t i = 0; i < n; i++)
        if (pids[i] > 1)
            len += (size_t)snprintf(line + len, cap - len, " %s=%d", names[i], (int)pids[i]);
    snprintf(line + len, cap - len, "\n");
    if (f->vms_line && strcmp(f->vms_line, line) == 0)
        return;
    free(f->vms_line);
    f->vms_line = steal_pointer(&line);
    fence_send(f, f->vms_line);
}

/* The entry of fenced.json for VM name (new reference), and the reason. */
static json_t *fenced_entry(struct host_fence *f, const char *name, json_t **doc_out)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", f->state_dir, FENCE_WD_FENCED_FILE);
    json_t *doc = json_load_file(path, 0, NULL);
    json_t *vms = json_object_get(doc, "vms");
    for (size_t i = 0; i < json_array_size(vms); i++) {
        json_t *e = json_array_get(vms, i);
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, name) == 0) {
            *doc_out = doc;
            return e;
        }
    }
    json_decref(doc);
    return NULL;
}

void host_fence_patch(struct host_fence *f, const char *name, enum vm_state state,
                      const char *cause, pid_t pid, json_t *obj)
{
    /* The new cause is made from the VM's own (never from obj's): patching the
     * same object again writes the same text, with no need to look at it. */
    if (f == NULL || !json_is_object(obj) || state != VM_STATE_CRASHED)
        return;
    cleanup_json json_t *doc = NULL;
    json_t *e = fenced_entry(f, name, &doc);
    if (e == NULL)
        return;
    if (pid > 0 && pid != json_integer_value(json_object_get(e, "pid")))
        return;
    const char *reason = json_string_value(json_object_get(doc, "reason"));
    char text[1024];
    snprintf(text, sizeof(text), "self-fenced: %s (%s)", reason ? reason : "no server contact",
             cause ? cause : "qemu killed");
    json_object_set_new(obj, "cause", json_string(text));
}

bool host_fence_blocks_autostart(struct host_fence *f, const char *name)
{
    if (f == NULL)
        return false;
    cleanup_json json_t *doc = NULL;
    return fenced_entry(f, name, &doc) != NULL;
}

void host_fence_free(struct host_fence *f)
{
    if (f == NULL)
        return;
    if (f->rd)
        event_free(f->rd);
    if (f->retry)
        event_free(f->retry);
    if (f->pause_end)
        event_free(f->pause_end);
    if (f->fd >= 0)
        close(f->fd);
    free(f->vms_line);
    free(f->state_dir);
    free(f);
}
