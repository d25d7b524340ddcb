/* The fence watchdog process and its decision logic (see fence_watchdog.h,
 * docs/fencing.md). */
#include "agent/host/fence_watchdog.h"

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
#include <sys/timerfd.h>
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
    return vcr_boot_ms();
}

void fence_wd_init(struct fence_wd *w, int64_t timeout_ms, int64_t now_ms)
{
    memset(w, 0, sizeof(*w));
    w->timeout_ms = timeout_ms;
    w->last_feed_ms = now_ms;
}

void fence_wd_resume(struct fence_wd *w, int64_t contact_ms, int64_t pause_until_ms,
                     int64_t timeout_ms, int64_t now_ms)
{
    w->last_feed_ms = contact_ms < now_ms ? contact_ms : now_ms;
    w->pause_until_ms = pause_until_ms;
    if (timeout_ms >= FENCE_WD_TIMEOUT_MIN && timeout_ms < w->timeout_ms) {
        w->raise_to_ms = w->timeout_ms;
        w->timeout_ms = timeout_ms;
    }
}

void fence_wd_timeout(struct fence_wd *w, int64_t timeout_ms)
{
    if (timeout_ms <= w->timeout_ms) {
        if (timeout_ms != w->timeout_ms)
            log_info("fence timeout %" PRId64 " ms (was %" PRId64 " ms)", timeout_ms,
                     w->timeout_ms);
        w->timeout_ms = timeout_ms;
        w->raise_to_ms = 0;
        return;
    }
    if (timeout_ms != w->raise_to_ms)
        log_info("fence timeout %" PRId64 " ms from the next server contact (%" PRId64
                 " ms until then)",
                 timeout_ms, w->timeout_ms);
    w->raise_to_ms = timeout_ms;
}

void fence_wd_feed(struct fence_wd *w, int64_t evidence_ms, int64_t now_ms)
{
    if (evidence_ms > now_ms)
        evidence_ms = now_ms;
    if (evidence_ms <= w->last_feed_ms)
        return;
    if (fence_wd_due(w, now_ms)) {
        /* Read too late (the watchdog was stopped, starved or suspended, or
         * contact came back after the deadline): the kill runs first. */
        if (evidence_ms > w->late_feed_ms)
            w->late_feed_ms = evidence_ms;
        return;
    }
    w->last_feed_ms = evidence_ms;
    if (w->raise_to_ms) {
        log_info("fence timeout %" PRId64 " ms (was %" PRId64 " ms): the server is heard from",
                 w->raise_to_ms, w->timeout_ms);
        w->timeout_ms = w->raise_to_ms;
        w->raise_to_ms = 0;
    }
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

bool fence_wd_due(const struct fence_wd *w, int64_t now_ms)
{
    return now_ms >= fence_wd_deadline(w) && (!w->fired || w->n_vms > 0);
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
    int64_t late = w->late_feed_ms;
    w->late_feed_ms = 0;
    if (late)
        fence_wd_feed(w, late, now_ms);
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
        fence_wd_timeout(w, v);
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
        int64_t paused = w->pause_until_ms > now_ms ? w->pause_until_ms - now_ms : 0;
        snprintf(reply, reply_len,
                 "{\"timeout_ms\": %" PRId64 ", \"remaining_ms\": %" PRId64
                 ", \"pause_ms\": %" PRId64 ", \"fired\": %s, \"vms\": %zu}\n",
                 w->timeout_ms, fence_wd_deadline(w) - now_ms, paused, w->fired ? "true" : "false",
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
    char boot_id[64];         /* "" when unknown: nothing is persisted then */
    int64_t saved_contact_ms; /* what FENCE_WD_CONTACT_FILE holds */
    int64_t saved_pause_until_ms;
    int64_t saved_timeout_ms;
    bool save_failed; /* logged once until a write succeeds again */
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
    size_t n = p->wd.n_vms;
    if (n == 0 && !p->wd.fired)
        log_warn("no server contact for %" PRId64 " ms: no VM to fence",
                 now_ms - p->wd.last_feed_ms);
    if (n > 0) {
        log_warn("no server contact for %" PRId64 " ms (fence timeout %" PRId64
                 " ms): killing %zu VM(s)",
                 now_ms - p->wd.last_feed_ms, p->wd.timeout_ms, n);
        write_fenced(p, now_ms);
    }
    fence_wd_check(&p->wd, now_ms, kill_vm, p);
    for (int i = 0; n > 0 && i < WD_MAX_CLIENTS; i++)
        if (p->clients[i].fd >= 0)
            (void)send(p->clients[i].fd, "fenced\n", 7, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* --- the countdown kept for the next watchdog (FENCE_WD_CONTACT_FILE) --- */

/* CLOCK_BOOTTIME starts again at a boot: a countdown from another boot means nothing. */
static void read_boot_id(char *out, size_t len)
{
    out[0] = '\0';
    cleanup_file FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f && fgets(out, (int)len, f))
        out[strcspn(out, "\n")] = '\0';
}

static void contact_path(const struct wd_proc *p, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", p->state_dir, FENCE_WD_CONTACT_FILE);
}

/* Written (durably) whenever the contact or the pause moved, so that a
 * watchdog killed at any moment leaves its successor the countdown as it was. */
static void save_countdown(struct wd_proc *p)
{
    if (p->boot_id[0] == '\0' || (p->wd.last_feed_ms == p->saved_contact_ms &&
                                  p->wd.pause_until_ms == p->saved_pause_until_ms &&
                                  p->wd.timeout_ms == p->saved_timeout_ms))
        return;
    char path[4096];
    contact_path(p, path, sizeof(path));
    cleanup_json json_t *doc =
        json_pack("{s:s, s:I, s:I, s:I}", "boot_id", p->boot_id, "contact_ms",
                  (json_int_t)p->wd.last_feed_ms, "pause_until_ms",
                  (json_int_t)p->wd.pause_until_ms, "timeout_ms", (json_int_t)p->wd.timeout_ms);
    cleanup_free char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    cleanup_error vcr_error_t err = NULL;
    if (text == NULL || vcr_file_replace(path, text, strlen(text), &err) < 0) {
        if (!p->save_failed)
            log_error("cannot keep the countdown in `%s` (a respawned watchdog would count from "
                      "its start): %s",
                      path, err ? vcr_error_msg(err) : "out of memory");
        p->save_failed = true;
        return;
    }
    if (p->save_failed)
        log_info("countdown kept in `%s` again", path);
    p->save_failed = false;
    p->saved_contact_ms = p->wd.last_feed_ms;
    p->saved_pause_until_ms = p->wd.pause_until_ms;
    p->saved_timeout_ms = p->wd.timeout_ms;
}

/* A watchdog that died (kill -9, OOM) left its countdown: go on from it. */
static void resume_countdown(struct wd_proc *p, int64_t now_ms)
{
    char path[4096];
    contact_path(p, path, sizeof(path));
    cleanup_json json_t *doc = json_load_file(path, 0, NULL);
    if (doc == NULL)
        return;
    const char *boot = json_string_value(json_object_get(doc, "boot_id"));
    json_t *contact = json_object_get(doc, "contact_ms");
    json_t *pause = json_object_get(doc, "pause_until_ms");
    if (boot == NULL || p->boot_id[0] == '\0' || strcmp(boot, p->boot_id) != 0 ||
        !json_is_integer(contact) || !json_is_integer(pause)) {
        log_info("`%s` is from another boot or unreadable: counting from now", path);
        return;
    }
    /* Older files have no timeout_ms: 0, not known. */
    fence_wd_resume(&p->wd, json_integer_value(contact), json_integer_value(pause),
                    json_integer_value(json_object_get(doc, "timeout_ms")), now_ms);
    log_warn("going on with the countdown of the watchdog before this one: last server contact "
             "%" PRId64 " ms ago, %" PRId64 " ms left",
             now_ms - p->wd.last_feed_ms, fence_wd_deadline(&p->wd) - now_ms);
}

/* Arms the CLOCK_BOOTTIME timer at the deadline (disarmed when it has passed:
 * then only what an agent sends changes anything) and returns the same wait
 * for poll(), whose CLOCK_MONOTONIC timeout stops during a suspend: the timer
 * wakes the watchdog at once after a resume, poll's timeout backs it up. */
static int arm_deadline(int tfd, const struct fence_wd *w, int64_t now_ms)
{
    int64_t at = fence_wd_deadline(w);
    struct itimerspec its = {0};
    if (at > now_ms)
        its.it_value = (struct timespec){.tv_sec = at / 1000, .tv_nsec = (at % 1000) * 1000000};
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        log_error("timerfd_settime: %s", strerror(errno));
    if (at <= now_ms)
        return -1;
    return at - now_ms > INT32_MAX ? INT32_MAX : (int)(at - now_ms);
}

/* Tells every agent but `except` that a pause began (MS left) or ended (0). */
static void announce_pause(struct wd_proc *p, const struct wd_client *except, int64_t now_ms)
{
    char line[48];
    int64_t left = p->wd.pause_until_ms > now_ms ? p->wd.pause_until_ms - now_ms : 0;
    int n = snprintf(line, sizeof(line), "paused %" PRId64 "\n", left);
    for (int i = 0; i < WD_MAX_CLIENTS; i++)
        if (p->clients[i].fd >= 0 && &p->clients[i] != except)
            (void)send(p->clients[i].fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
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
        int64_t now = fence_wd_now_ms(), pause_before = p->wd.pause_until_ms;
        if (fence_wd_handle_line(&p->wd, start, now, true, reply, sizeof(reply), &err) < 0) {
            log_warn("agent message ignored: %s", vcr_error_msg(err));
            snprintf(reply, sizeof(reply), "error %s\n", vcr_error_msg(err));
        } else if (is_vms) {
            log_debug("VMs to fence: %zu", p->wd.n_vms);
            forget_running(p);
        }
        if (reply[0])
            (void)send(c->fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (p->wd.pause_until_ms != pause_before)
            announce_pause(p, c, now);
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
    int tfd = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    struct wd_proc *p = calloc(1, sizeof(*p));
    if (p == NULL || tfd < 0) {
        log_error("fence watchdog: %s", p ? strerror(errno) : "out of memory");
        free(p);
        if (tfd >= 0)
            close(tfd);
        close(listen_fd);
        return 1;
    }
    p->state_dir = state_dir;
    int64_t start = fence_wd_now_ms();
    fence_wd_init(&p->wd, timeout_ms, start);
    read_boot_id(p->boot_id, sizeof(p->boot_id));
    resume_countdown(p, start);
    for (int i = 0; i < WD_MAX_CLIENTS; i++)
        p->clients[i].fd = -1;
    log_info("fence watchdog for %s: VMs are killed after %d ms without server contact", state_dir,
             timeout_ms);
    bool had_client = false;
    for (;;) {
        int64_t now = fence_wd_now_ms();
        if (fence_wd_due(&p->wd, now))
            fire(p, now);
        save_countdown(p);
        int n_clients = 0;
        struct pollfd pfd[2 + WD_MAX_CLIENTS];
        pfd[0] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = tfd, .events = POLLIN};
        for (int i = 0; i < WD_MAX_CLIENTS; i++) {
            pfd[2 + i] = (struct pollfd){.fd = p->clients[i].fd, .events = POLLIN};
            n_clients += p->clients[i].fd >= 0;
        }
        if (had_client && n_clients == 0 && p->wd.n_vms == 0) {
            /* Nothing left to fence: the next watchdog starts a countdown of its own. */
            char path[4096];
            contact_path(p, path, sizeof(path));
            unlink(path);
            log_info("no agent connected and no VM to fence: exiting");
            break;
        }
        if (poll(pfd, 2 + WD_MAX_CLIENTS, arm_deadline(tfd, &p->wd, now)) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            break;
        }
        /* The deadline first: lines that waited while this process could not
         * run (SIGSTOP, CPU starvation, a suspend) cannot defer a kill that is
         * due, whatever they say (a feed, a pause, a longer timeout). */
        now = fence_wd_now_ms();
        if (fence_wd_due(&p->wd, now))
            fire(p, now);
        uint64_t expirations;
        if (pfd[1].revents & POLLIN)
            (void)!read(tfd, &expirations, sizeof(expirations));
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
            if (p->clients[i].fd >= 0 && (pfd[2 + i].revents & (POLLIN | POLLHUP | POLLERR)) &&
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
    close(tfd);
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
    char line[64], reply[512] = "";
    int n = snprintf(line, sizeof(line), "pause %d\n", pause_ms);
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
        log_error("fence watchdog `%s`: %s", sa.sun_path, strerror(errno));
        return 1;
    }
    /* Other lines (a `paused` another client caused) may come first: read up
     * to the answer, `ok` or `error ...`. */
    size_t len = 0;
    int64_t deadline = fence_wd_now_ms() + 5000;
    for (;;) {
        char *end = memchr(reply, '\n', len);
        while (end && strncmp(reply, "ok", 2) != 0 && strncmp(reply, "error", 5) != 0) {
            len -= (size_t)(end + 1 - reply);
            memmove(reply, end + 1, len);
            end = memchr(reply, '\n', len);
        }
        if (end) {
            end[1] = '\0';
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - fence_wd_now_ms());
        ssize_t got = left > 0 && poll(&pfd, 1, left) == 1
                          ? recv(fd, reply + len, sizeof(reply) - 1 - len, 0)
                          : -1;
        if (got <= 0 || len + (size_t)got >= sizeof(reply) - 1) {
            log_error("fence watchdog `%s`: no answer", sa.sun_path);
            return 1;
        }
        len += (size_t)got;
    }
    fputs(reply, stdout);
    return strncmp(reply, "ok", 2) == 0 ? 0 : 1;
}
