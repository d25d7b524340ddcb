/* The fence watchdog process and its decision logic (see fence_watchdog.h,
 * docs/fencing.md). */
#include "agent/fence_watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/durable.h"
#include "common/log.h"

#define WD_MAX_CLIENTS 8
#define WD_LINE_MAX    8192

int64_t fence_wd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fence_wd_init(struct fence_wd *w, int64_t timeout_ms, int64_t now_ms)
{
    memset(w, 0, sizeof(*w));
    w->timeout_ms = timeout_ms;
    w->last_feed_ms = now_ms;
}

void fence_wd_feed(struct fence_wd *w, int64_t evidence_ms, int64_t now_ms)
{
    if (evidence_ms > now_ms)
        evidence_ms = now_ms;
    if (evidence_ms <= w->last_feed_ms)
        return;
    w->last_feed_ms = evidence_ms;
    if (w->fired && now_ms < fence_wd_deadline(w)) {
        log_info("server contact is back: self-fencing re-armed (%" PRId64 " ms)", w->timeout_ms);
        w->fired = false;
    }
}

int64_t fence_wd_deadline(const struct fence_wd *w)
{
    int64_t d = w->last_feed_ms + w->timeout_ms;
    return d > w->pause_until_ms ? d : w->pause_until_ms;
}

int fence_wd_check(struct fence_wd *w, int64_t now_ms, fence_wd_kill_fn kill, void *opaque)
{
    if (now_ms < fence_wd_deadline(w))
        return -1;
    w->fired = true;
    int n = (int)w->n_vms;
    for (size_t i = 0; i < w->n_vms; i++)
        kill(&w->vms[i], opaque);
    fence_wd_clear(w);
    return n;
}

void fence_wd_clear(struct fence_wd *w)
{
    for (size_t i = 0; i < w->n_vms; i++)
        if (w->vms[i].pidfd >= 0)
            close(w->vms[i].pidfd);
    w->n_vms = 0;
}

static bool valid_name(const char *s, size_t len)
{
    if (len == 0 || len > FENCE_WD_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

int fence_wd_set_vms(struct fence_wd *w, const char *args, bool open_pidfds, vcr_error_t *err)
{
    struct fence_wd_vm *next = calloc(FENCE_WD_MAX_VMS, sizeof(*next));
    size_t n = 0;
    if (next == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    const char *p = args;
    int rc = 0;
    while (rc == 0) {
        p += strspn(p, " ");
        if (*p == '\0')
            break;
        size_t len = strcspn(p, " ");
        const char *eq = memchr(p, '=', len);
        char *end = NULL;
        long pid = eq ? strtol(eq + 1, &end, 10) : 0;
        if (eq == NULL || !valid_name(p, (size_t)(eq - p)) || end != p + len || pid <= 1 ||
            pid > INT32_MAX) {
            rc = vcr_error_make(err, EINVAL, "vms: `%.*s` is not NAME=PID", (int)len, p);
            break;
        }
        if (n == FENCE_WD_MAX_VMS) {
            rc = vcr_error_make(err, EINVAL, "vms: more than %d entries", FENCE_WD_MAX_VMS);
            break;
        }
        struct fence_wd_vm *v = &next[n++];
        snprintf(v->name, sizeof(v->name), "%.*s", (int)(eq - p), p);
        v->pid = (pid_t)pid;
        v->pidfd = -1;
        for (size_t i = 0; i < w->n_vms; i++)
            if (w->vms[i].pid == v->pid && strcmp(w->vms[i].name, v->name) == 0) {
                v->pidfd = w->vms[i].pidfd; /* keep the pidfd opened first */
                w->vms[i].pidfd = -1;
                break;
            }
        if (v->pidfd < 0 && open_pidfds) {
            v->pidfd = (int)syscall(SYS_pidfd_open, v->pid, 0);
            if (v->pidfd < 0 && errno != ESRCH)
                rc = vcr_error_errno(err, "vms: pidfd_open %ld (%s)", pid, v->name);
            else if (v->pidfd < 0)
                n--; /* already gone: nothing to fence */
        }
        p += len;
    }
    if (rc < 0) {
        /* Give the kept pidfds back: the old list stays as it was. */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < w->n_vms && next[i].pidfd >= 0; j++)
                if (w->vms[j].pid == next[i].pid && w->vms[j].pidfd < 0 &&
                    strcmp(w->vms[j].name, next[i].name) == 0) {
                    w->vms[j].pidfd = next[i].pidfd;
                    next[i].pidfd = -1;
                }
        for (size_t i = 0; i < n; i++)
            if (next[i].pidfd >= 0)
                close(next[i].pidfd);
        free(next);
        return -1;
    }
    fence_wd_clear(w); /* closes what was not kept */
    memcpy(w->vms, next, n * sizeof(*next));
    w->n_vms = n;
    free(next);
    return 0;
}

static int parse_ms(const char *text, int64_t min, int64_t max, int64_t *out, const char *what,
                    vcr_error_t *err)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < min || v > max)
        return vcr_error_make(err, EINVAL, "%s: `%s`; allowed: an integer %" PRId64 "..%" PRId64,
                              what, text, min, max);
    *out = v;
    return 0;
}

int fence_wd_handle_line(struct fence_wd *w, const char *line, int64_t now_ms, bool open_pidfds,
                         char *reply, size_t reply_len, vcr_error_t *err)
{
    reply[0] = '\0';
    size_t cmd_len = strcspn(line, " ");
    const char *arg = line + cmd_len + (line[cmd_len] == ' ');
    int64_t v;
#define IS(word) (cmd_len == strlen(word) && strncmp(line, word, cmd_len) == 0)
    if (IS("feed")) {
        if (parse_ms(arg, 0, INT64_MAX, &v, "feed", err) < 0)
            return -1;
        fence_wd_feed(w, v, now_ms);
    } else if (IS("vms")) {
        return fence_wd_set_vms(w, arg, open_pidfds, err);
    } else if (IS("timeout")) {
        if (parse_ms(arg, FENCE_WD_TIMEOUT_MIN, FENCE_WD_TIMEOUT_MAX, &v, "timeout", err) < 0)
            return -1;
        if (v != w->timeout_ms)
            log_info("fence timeout %" PRId64 " ms (was %" PRId64 " ms)", v, w->timeout_ms);
        w->timeout_ms = v;
    } else if (IS("pause")) {
        if (parse_ms(arg, 0, FENCE_WD_PAUSE_MAX_MS, &v, "pause", err) < 0)
            return -1;
        w->pause_until_ms = v ? now_ms + v : 0;
        if (v)
            log_warn("self-fencing paused for %" PRId64 " ms", v);
        else
            log_warn("self-fencing pause ended");
        snprintf(reply, reply_len, "ok\n");
    } else if (IS("status")) {
        snprintf(reply, reply_len,
                 "{\"timeout_ms\": %" PRId64 ", \"remaining_ms\": %" PRId64
                 ", \"fired\": %s, \"vms\": %zu}\n",
                 w->timeout_ms, fence_wd_deadline(w) - now_ms, w->fired ? "true" : "false",
                 w->n_vms);
    } else {
        return vcr_error_make(err, EINVAL,
                              "unknown message `%.*s`; allowed: feed, vms, timeout, pause, status",
                              (int)cmd_len, line);
    }
#undef IS
    return 0;
}

/* --- the process --- */

static int socket_path(const char *state_dir, struct sockaddr_un *sa, vcr_error_t *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    int n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s", state_dir, FENCE_WD_SOCKET);
    if (n < 0 || (size_t)n >= sizeof(sa->sun_path))
        return vcr_error_make(err, ENAMETOOLONG, "state_dir `%s`: too long for a UNIX socket path",
                              state_dir);
    return 0;
}

int fence_wd_listen(const char *state_dir, vcr_error_t *err)
{
    struct sockaddr_un sa;
    if (socket_path(state_dir, &sa, err) < 0)
        return -1;
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vcr_error_errno(err, "fence watchdog: socket");
    unlink(sa.sun_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0)
        return vcr_error_errno(err, "fence watchdog: listen on `%s`", sa.sun_path);
    return steal_fd(&fd);
}

struct wd_client {
    int fd;
    size_t len;
    char buf[WD_LINE_MAX];
};

struct wd_proc {
    const char *state_dir;
    struct fence_wd wd;
    struct wd_client clients[WD_MAX_CLIENTS];
    json_t *killed; /* [{"name", "pid"}] of the firing under way */
};

static void kill_vm(const struct fence_wd_vm *vm, void *opaque)
{
    (void)opaque;
    int rc = vm->pidfd >= 0 ? (int)syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0) : -1;
    if (rc < 0 && errno != ESRCH)
        log_error("VM %s: SIGKILL of qemu pid %d: %s", vm->name, (int)vm->pid, strerror(errno));
    else
        log_warn("VM %s: qemu pid %d killed (self-fence)%s", vm->name, (int)vm->pid,
                 rc < 0 ? ": it had already ended" : "");
}

/* fenced.json, written before the kills so that whoever sees a VM die can
 * tell it was fenced: {ts_ms, timeout_ms, silent_ms, reason, pids, vms}. */
static void write_fenced(struct wd_proc *p, int64_t now_ms)
{
    int64_t silent = now_ms - p->wd.last_feed_ms;
    cleanup_json json_t *doc = json_object();
    json_t *pids = json_array(), *vms = json_array();
    for (size_t i = 0; i < p->wd.n_vms; i++) {
        json_array_append_new(pids, json_integer(p->wd.vms[i].pid));
        json_array_append_new(
            vms, json_pack("{s:s, s:i}", "name", p->wd.vms[i].name, "pid", (int)p->wd.vms[i].pid));
    }
    char reason[128];
    snprintf(reason, sizeof(reason), "no server contact for %" PRId64 " ms", silent);
    json_object_set_new(doc, "ts_ms", json_integer(vcr_wall_ms()));
    json_object_set_new(doc, "timeout_ms", json_integer(p->wd.timeout_ms));
    json_object_set_new(doc, "silent_ms", json_integer(silent));
    json_object_set_new(doc, "reason", json_string(reason));
    json_object_set_new(doc, "pids", pids);
    json_object_set_new(doc, "vms", vms);
    char path[4096], tmp[4096 + 8];
    snprintf(path, sizeof(path), "%s/%s", p->state_dir, FENCE_WD_FENCED_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (json_dump_file(doc, tmp, JSON_INDENT(1)) < 0 || vcr_rename_durable(tmp, path, NULL) < 0)
        log_error("cannot write `%s`: %s", path, strerror(errno));
}

/* A VM listed again with a process is running again: it is no longer one
 * that was fenced (the agent no longer keeps it from autostarting). */
static void forget_running(struct wd_proc *p)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", p->state_dir, FENCE_WD_FENCED_FILE);
    cleanup_json json_t *doc = json_load_file(path, 0, NULL);
    json_t *vms = json_object_get(doc, "vms");
    if (!json_is_array(vms))
        return;
    bool changed = false;
    for (size_t i = json_array_size(vms); i-- > 0;) {
        const char *name = json_string_value(json_object_get(json_array_get(vms, i), "name"));
        for (size_t j = 0; name && j < p->wd.n_vms; j++)
            if (strcmp(p->wd.vms[j].name, name) == 0) {
                json_array_remove(vms, i);
                changed = true;
                break;
            }
    }
    char tmp[4096 + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (changed &&
        (json_dump_file(doc, tmp, JSON_INDENT(1)) < 0 || vcr_rename_durable(tmp, path, NULL) < 0))
        log_error("cannot rewrite `%s`: %s", path, strerror(errno));
}

static void fire(struct wd_proc *p, int64_t now_ms)
{
    bool was_fired = p->wd.fired;
    if (p->wd.n_vms == 0) {
        if (!was_fired)
            log_warn("no server contact for %" PRId64 " ms: no VM to fence",
                     now_ms - p->wd.last_feed_ms);
        p->wd.fired = true;
        return;
    }
    log_warn("no server contact for %" PRId64 " ms (fence timeout %" PRId64
             " ms): killing %zu VM(s)",
             now_ms - p->wd.last_feed_ms, p->wd.timeout_ms, p->wd.n_vms);
    write_fenced(p, now_ms);
    fence_wd_check(&p->wd, now_ms, kill_vm, p);
    for (int i = 0; i < WD_MAX_CLIENTS; i++)
        if (p->clients[i].fd >= 0)
            (void)send(p->clients[i].fd, "fenced\n", 7, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void drop_client(struct wd_client *c)
{
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

/* Reads what the client sent; false when it is gone. */
static bool read_client(struct wd_proc *p, struct wd_client *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char *start = c->buf, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = '\0';
        char reply[256];
        cleanup_error vcr_error_t err = NULL;
        bool is_vms = strncmp(start, "vms", 3) == 0;
        if (fence_wd_handle_line(&p->wd, start, fence_wd_now_ms(), true, reply, sizeof(reply),
                                 &err) < 0) {
            log_warn("agent message ignored: %s", vcr_error_msg(err));
            snprintf(reply, sizeof(reply), "error %s\n", vcr_error_msg(err));
        } else if (is_vms) {
            log_debug("VMs to fence: %zu", p->wd.n_vms);
            forget_running(p);
        }
        if (reply[0])
            (void)send(c->fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
        start = nl + 1;
    }
    c->len -= (size_t)(start - c->buf);
    memmove(c->buf, start, c->len);
    if (c->len == sizeof(c->buf) - 1) {
        log_warn("agent message longer than %d bytes: connection dropped", WD_LINE_MAX);
        return false;
    }
    return true;
}

int fence_watchdog_main(const char *state_dir, int timeout_ms, int listen_fd)
{
    cleanup_error vcr_error_t err = NULL;
    if (timeout_ms < FENCE_WD_TIMEOUT_MIN || timeout_ms > FENCE_WD_TIMEOUT_MAX) {
        log_error("--timeout-ms %d; allowed: %d..%d", timeout_ms, FENCE_WD_TIMEOUT_MIN,
                  FENCE_WD_TIMEOUT_MAX);
        return 2;
    }
    if (listen_fd < 0 && (listen_fd = fence_wd_listen(state_dir, &err)) < 0) {
        log_error("%s", vcr_error_msg(err));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct wd_proc *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        close(listen_fd);
        return 1;
    }
    p->state_dir = state_dir;
    fence_wd_init(&p->wd, timeout_ms, fence_wd_now_ms());
    for (int i = 0; i < WD_MAX_CLIENTS; i++)
        p->clients[i].fd = -1;
    log_info("fence watchdog for %s: VMs are killed after %d ms without server contact", state_dir,
             timeout_ms);
    bool had_client = false;
    for (;;) {
        int64_t now = fence_wd_now_ms();
        if (now >= fence_wd_deadline(&p->wd) && (!p->wd.fired || p->wd.n_vms > 0))
            fire(p, now);
        int n_clients = 0;
        struct pollfd pfd[1 + WD_MAX_CLIENTS];
        pfd[0] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
        for (int i = 0; i < WD_MAX_CLIENTS; i++) {
            pfd[1 + i] = (struct pollfd){.fd = p->clients[i].fd, .events = POLLIN};
            n_clients += p->clients[i].fd >= 0;
        }
        if (had_client && n_clients == 0 && p->wd.n_vms == 0) {
            log_info("no agent connected and no VM to fence: exiting");
            break;
        }
        int64_t wait = p->wd.fired ? -1 : fence_wd_deadline(&p->wd) - now;
        if (wait > INT32_MAX)
            wait = INT32_MAX;
        if (poll(pfd, 1 + WD_MAX_CLIENTS, (int)wait) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
            int i = 0;
            while (fd >= 0 && i < WD_MAX_CLIENTS && p->clients[i].fd >= 0)
                i++;
            if (fd >= 0 && i == WD_MAX_CLIENTS) {
                log_warn("more than %d connections: one refused", WD_MAX_CLIENTS);
                close(fd);
            } else if (fd >= 0) {
                p->clients[i].fd = fd;
                had_client = true;
                log_debug("agent connected");
            }
        }
        for (int i = 0; i < WD_MAX_CLIENTS; i++)
            if (p->clients[i].fd >= 0 && (pfd[1 + i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                !read_client(p, &p->clients[i])) {
                drop_client(&p->clients[i]);
                log_info("agent disconnected: still counting (%" PRId64 " ms left, %zu VM(s))",
                         fence_wd_deadline(&p->wd) - fence_wd_now_ms(), p->wd.n_vms);
            }
    }
    for (int i = 0; i < WD_MAX_CLIENTS; i++)
        if (p->clients[i].fd >= 0)
            close(p->clients[i].fd);
    fence_wd_clear(&p->wd);
    close(listen_fd);
    free(p);
    return 0;
}

int fence_watchdog_pause(const char *state_dir, int pause_ms)
{
    cleanup_error vcr_error_t err = NULL;
    struct sockaddr_un sa;
    if (socket_path(state_dir, &sa, &err) < 0) {
        log_error("%s", vcr_error_msg(err));
        return 1;
    }
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        log_error("no fence watchdog at `%s`: %s", sa.sun_path, strerror(errno));
        return 1;
    }
    char line[64], reply[512];
    int n = snprintf(line, sizeof(line), "pause %d\n", pause_ms);
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
        log_error("fence watchdog `%s`: %s", sa.sun_path, strerror(errno));
        return 1;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    ssize_t got = poll(&pfd, 1, 5000) == 1 ? recv(fd, reply, sizeof(reply) - 1, 0) : -1;
    if (got <= 0) {
        log_error("fence watchdog `%s`: no answer", sa.sun_path);
        return 1;
    }
    reply[got] = '\0';
    fputs(reply, stdout);
    return strncmp(reply, "ok", 2) == 0 ? 0 : 1;
}
