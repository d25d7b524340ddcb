/* Child-process jobs of the standby role (see standby_job.h). */
#include "agent/standby_job.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/proc.h"
#include "common/log.h"

struct standby_job {
    pid_t pid;
    int fd; /* read end of the result pipe */
    struct proc_watch *watch;
    standby_job_done_cb done;
    void *opaque;
    const char *result; /* during done: the child's result members, or "" */
    int error_status;   /* during done, on failure: the child's error status */
};

/* Only ever set in a child, between fork and _exit: one job per process. */
static char child_result[STANDBY_JOB_ERROR_MAX];

void standby_job_set_result(const char *json_text)
{
    if (strlen(json_text) >= sizeof(child_result)) {
        log_warn("job result of %zu bytes dropped (at most %zu)", strlen(json_text),
                 sizeof(child_result) - 1);
        child_result[0] = '\0';
        return;
    }
    snprintf(child_result, sizeof(child_result), "%s", json_text);
}

int standby_job_error_status(const struct standby_job *job)
{
    return job->error_status;
}

const char *standby_job_result(const struct standby_job *job)
{
    return job->result ? job->result : "";
}

/* The child's message: one byte, '0' (ok) or '1' (failed), then the result
 * members (ok), or the error's errno-style status, ':' and its text (failed). */
static void child(int fd, standby_job_fn fn, void *arg)
{
    vcr_error_t err = NULL;
    char msg[1 + STANDBY_JOB_ERROR_MAX];
    child_result[0] = '\0';
    int rc = fn(arg, &err);
    int n = rc == 0 ? snprintf(msg, sizeof(msg), "0%s", child_result)
                    : snprintf(msg, sizeof(msg), "1%d:%s", err ? vcr_error_status(err) : 0,
                               err ? vcr_error_msg(err) : "failed (no reason given)");
    if (n > (int)sizeof(msg) - 1)
        n = (int)sizeof(msg) - 1;
    /* At most PIPE_BUF bytes: one atomic write, read whole by the parent. */
    ssize_t w = write(fd, msg, (size_t)n);
    _exit(w == n ? 0 : 1);
}

static void job_exited(struct proc_watch *w, int64_t seen_ms, void *opaque)
{
    (void)w;
    (void)seen_ms;
    struct standby_job *job = opaque;
    char msg[1 + STANDBY_JOB_ERROR_MAX + 1];
    ssize_t n;
    do
        n = read(job->fd, msg, sizeof(msg) - 1);
    while (n < 0 && errno == EINTR);
    char why[STANDBY_JOB_ERROR_MAX + 64];
    const char *error = NULL;
    if (n > 0) {
        msg[n] = '\0';
        if (msg[0] != '0') {
            char *end = NULL;
            long status = strtol(msg + 1, &end, 10);
            if (end && *end == ':') {
                job->error_status = (int)status;
                error = end + 1;
            } else {
                error = msg + 1;
            }
        } else {
            job->result = msg + 1;
        }
    } else {
        int status = 0;
        bool have = proc_watch_status(job->watch, &status);
        if (have && WIFSIGNALED(status))
            snprintf(why, sizeof(why), "the worker process was killed by signal %d",
                     WTERMSIG(status));
        else
            snprintf(why, sizeof(why), "the worker process ended without a result");
        error = why;
    }
    job->done(job, error, job->opaque);
    standby_job_free(job);
}

struct standby_job *standby_job_run(struct event_base *base, standby_job_fn fn, void *arg,
                                    standby_job_done_cb done, void *opaque, vcr_error_t *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return vcr_error_errno(err, "pipe"), NULL;
    struct standby_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        close(fds[0]);
        close(fds[1]);
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    }
    fflush(NULL); /* nothing buffered may be written twice */
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        free(job);
        return vcr_error_make(err, e, "fork: %s", strerror(e)), NULL;
    }
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], fn, arg);
    }
    close(fds[1]);
    job->pid = pid;
    job->fd = fds[0];
    job->done = done;
    job->opaque = opaque;
    /* The child may have exited already: a pidfd of an unreaped child still fires. */
    job->watch = proc_watch_new(base, pid, job_exited, job, err);
    if (job->watch == NULL) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(job->fd);
        free(job);
        return NULL;
    }
    return job;
}

pid_t standby_job_pid(const struct standby_job *job)
{
    return job->pid;
}

void standby_job_signal(struct standby_job *job, int sig)
{
    proc_watch_signal(job->watch, sig, NULL);
}

void standby_job_free(struct standby_job *job)
{
    if (job == NULL)
        return;
    proc_watch_free(job->watch);
    close(job->fd);
    free(job);
}
