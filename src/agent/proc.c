/* Process spawning and pidfd watching (see proc.h). */
#include "agent/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct proc_watch {
    pid_t pid;
    int pidfd;
    bool is_child;
    bool have_status;
    int wstatus;
    struct event *ev;
    proc_exit_cb cb;
    void *opaque;
    struct proc_watch *next; /* in the list proc_reap_children searches */
};

/* The agent is single-threaded: one list of live watches is enough. */
static struct proc_watch *watches;

static int pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static pid_t spawn(char *const argv[], const char *log_path, int keep_fd, bool tool,
                   vcr_error_t *err);

pid_t proc_spawn(char *const argv[], const char *log_path, vcr_error_t *err)
{
    return spawn(argv, log_path, -1, false, err);
}

pid_t proc_spawn_keep(char *const argv[], const char *log_path, int keep_fd, vcr_error_t *err)
{
    return spawn(argv, log_path, keep_fd, false, err);
}

pid_t proc_spawn_tool(char *const argv[], const char *log_path, vcr_error_t *err)
{
    return spawn(argv, log_path, -1, true, err);
}

static pid_t spawn(char *const argv[], const char *log_path, int keep_fd, bool tool,
                   vcr_error_t *err)
{
    /* The child reports an exec failure's errno through this pipe; a
     * successful exec closes it (O_CLOEXEC) and the read sees EOF. */
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0)
        return vcr_error_errno(err, "spawn `%s`: pipe", argv[0]);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(report[0]);
        close(report[1]);
        return vcr_error_errno(err, "spawn `%s`: fork", argv[0]);
    }
    if (pid == 0) {
        close(report[0]);
        int e = 0;
        int in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0)
            e = errno;
        /* No log path: stdout and stderr stay the caller's, each. */
        int out = e == 0 && log_path ? open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0640) : -1;
        if (e == 0 && log_path && (out < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0))
            e = errno;
        if (e == 0 && setsid() < 0)
            e = errno;
        /* The death signal is not sent for a parent that died before the
         * prctl: checked after it. */
        if (e == 0 && tool && prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
            e = errno;
        if (e == 0 && tool && getppid() != parent)
            e = ESRCH;
        if (e == 0) {
            /* Dispositions the agent changed (SIGPIPE ignored) survive exec. */
            signal(SIGPIPE, SIG_DFL);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
            /* Nothing the agent starts needs to gain privileges by exec
             * (setuid binaries, file capabilities): QEMU, once it dropped to
             * its user, keeps none it could get back through `spawn`. */
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                e = errno;
            if (keep_fd > 2 && fcntl(keep_fd, F_SETFD, 0) < 0)
                e = errno;
        }
        if (e == 0) {
            execv(argv[0], argv);
            e = errno;
        }
        ssize_t w = write(report[1], &e, sizeof(e));
        (void)w;
        _exit(127);
    }
    close(report[1]);
    int child_errno = 0;
    ssize_t n;
    do
        n = read(report[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof(child_errno)) {
        waitpid(pid, NULL, 0);
        errno = child_errno;
        return vcr_error_errno(err, "spawn `%s` (log `%s`)", argv[0], log_path ? log_path : "-");
    }
    return pid;
}

static void collect(struct proc_watch *w)
{
    if (!w->is_child || w->have_status)
        return;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
        return;
    w->have_status = true;
    /* Back to the waitpid() encoding that WIFSIGNALED() and friends read. */
    if (si.si_code == CLD_EXITED)
        w->wstatus = W_EXITCODE(si.si_status, 0);
    else if (si.si_code == CLD_DUMPED)
        w->wstatus = si.si_status | WCOREFLAG;
    else
        w->wstatus = si.si_status;
}

static void on_pidfd(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    int64_t seen = vcr_wall_ms();
    struct proc_watch *w = arg;
    collect(w);
    event_del(w->ev);
    w->cb(w, seen, w->opaque);
}

struct proc_watch *proc_watch_new(struct event_base *base, pid_t pid, proc_exit_cb cb, void *opaque,
                                  vcr_error_t *err)
{
    cleanup_free struct proc_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return vcr_error_make(err, ENOMEM, "watch pid %d: out of memory", (int)pid), NULL;
    w->pid = pid;
    w->cb = cb;
    w->opaque = opaque;
    w->pidfd = pidfd_open(pid);
    if (w->pidfd < 0)
        return vcr_error_errno(err, "pidfd_open(%d)", (int)pid), NULL;
    /* WNOWAIT leaves a dead child for collect(); ECHILD means not ours. */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    w->is_child = waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
    w->ev = event_new(base, w->pidfd, EV_READ, on_pidfd, w);
    if (w->ev == NULL || event_add(w->ev, NULL) < 0) {
        if (w->ev)
            event_free(w->ev);
        close(w->pidfd);
        return vcr_error_make(err, ENOMEM, "watch pid %d: cannot add event", (int)pid), NULL;
    }
    w->next = watches;
    watches = w;
    return steal_pointer(&w);
}

pid_t proc_watch_pid(const struct proc_watch *w)
{
    return w->pid;
}

bool proc_watch_status(struct proc_watch *w, int *wstatus)
{
    collect(w);
    if (w->have_status)
        *wstatus = w->wstatus;
    return w->have_status;
}

bool proc_watch_has_exited(const struct proc_watch *w)
{
    struct pollfd p = {.fd = w->pidfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

int proc_watch_signal(struct proc_watch *w, int sig, vcr_error_t *err)
{
    if (syscall(SYS_pidfd_send_signal, w->pidfd, sig, NULL, 0) < 0)
        return vcr_error_errno(err, "signal %d to pid %d", sig, (int)w->pid);
    return 0;
}

void proc_watch_free(struct proc_watch *w)
{
    if (w == NULL)
        return;
    for (struct proc_watch **p = &watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    event_free(w->ev);
    close(w->pidfd);
    free(w);
}

void proc_watch_set_callback(struct proc_watch *w, proc_exit_cb cb, void *opaque)
{
    w->cb = cb;
    w->opaque = opaque;
}

int proc_getfd(pid_t pid, int fd, vcr_error_t *err)
{
    cleanup_close int pidfd = pidfd_open(pid);
    if (pidfd < 0)
        return vcr_error_errno(err, "pidfd_open(%d)", (int)pid);
    int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    if (copy < 0)
        return vcr_error_errno(err, "pidfd_getfd(pid %d, fd %d)", (int)pid, fd);
    return copy;
}

int proc_kill_wait(pid_t pid, int timeout_ms, vcr_error_t *err)
{
    cleanup_close int pidfd = pidfd_open(pid);
    if (pidfd < 0)
        return errno == ESRCH ? 0 : vcr_error_errno(err, "pidfd_open(%d)", (int)pid);
    if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
        return vcr_error_errno(err, "SIGKILL to pid %d", (int)pid);
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int64_t deadline = vcr_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - vcr_mono_ms();
        int n = poll(&p, 1, left > 0 ? (int)left : 0);
        if (n == 1)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return vcr_error_make(err, ETIMEDOUT, "pid %d still there %d ms after SIGKILL",
                                  (int)pid, timeout_ms);
    }
    /* Reaped here if it was our child; no watch waits for it. */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG);
    return 0;
}

void proc_reap_children(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct proc_watch *w = watches;
        while (w && !(w->is_child && w->pid == pid && !w->have_status))
            w = w->next;
        if (w) {
            w->have_status = true;
            w->wstatus = status;
        } else {
            log_debug("reaped pid %d (no watcher)", (int)pid);
        }
    }
}
