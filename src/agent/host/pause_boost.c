/* The scheduling boost of a guest's pause: see pause_boost.h. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/host/pause_boost.h"
#include "common/cleanup.h"
#include "common/log.h"

/* The threads of process pid: /proc/PID/task opened (NULL, errno set, when it
 * cannot be), then each thread id in turn until 0. */
static DIR *threads_open(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    return opendir(path);
}

static pid_t threads_next(DIR *dir)
{
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        char *end;
        long tid = strtol(d->d_name, &end, 10);
        if (*end == '\0' && tid > 0)
            return (pid_t)tid;
    }
    return 0;
}

int proc_set_policy(pid_t pid, int policy, int priority, vcr_error_t *err)
{
    DIR *dir = threads_open(pid);
    if (dir == NULL)
        return vcr_error_errno(err, "/proc/%d/task", (int)pid);
    struct sched_param param = {.sched_priority = priority};
    int n = 0;
    for (pid_t tid; (tid = threads_next(dir)) > 0;) {
        if (sched_setscheduler(tid, policy, &param) < 0) {
            if (errno == ESRCH) /* the thread ended meanwhile */
                continue;
            int e = errno;
            closedir(dir);
            errno = e;
            return vcr_error_errno(err, "sched_setscheduler(%d, %d, %d)", (int)tid, policy,
                                   priority);
        }
        n++;
    }
    closedir(dir);
    return n;
}

int proc_get_policy(pid_t pid, int *policy, int *priority, vcr_error_t *err)
{
    struct sched_param param;
    int p = sched_getscheduler(pid);
    if (p < 0 || sched_getparam(pid, &param) < 0)
        return vcr_error_errno(err, "sched_getscheduler(%d)", (int)pid);
    *policy = p & ~SCHED_RESET_ON_FORK;
    *priority = param.sched_priority;
    return 0;
}

/* The threads of pid still at the boost's SCHED_FIFO priority go to policy
 * at priority; how many.  Only those: a pid recycled since the boost (the old
 * QEMU, killed and reaped) is left alone unless it runs so itself. */
static int unboost_threads(pid_t pid, int policy, int priority)
{
    DIR *dir = threads_open(pid);
    if (dir == NULL)
        return 0;
    struct sched_param to = {.sched_priority = priority};
    int n = 0;
    for (pid_t tid; (tid = threads_next(dir)) > 0;) {
        struct sched_param param;
        if ((sched_getscheduler(tid) & ~SCHED_RESET_ON_FORK) != SCHED_FIFO ||
            sched_getparam(tid, &param) < 0 || param.sched_priority != PAUSE_BOOST_PRIORITY)
            continue;
        if (sched_setscheduler(tid, policy, &to) == 0)
            n++;
        else if (errno != ESRCH)
            log_warn("pid %d thread %d: back from the pause boost: %s", (int)pid, (int)tid,
                     strerror(errno));
    }
    closedir(dir);
    return n;
}

int pause_boost_undo_left(pid_t pid)
{
    return unboost_threads(pid, SCHED_OTHER, 0);
}

static void boost_one(struct pause_boost *b, int slot, pid_t pid)
{
    b->pid[slot] = 0;
    if (pid <= 0)
        return;
    cleanup_error vcr_error_t err = NULL;
    int policy, priority;
    if (proc_get_policy(pid, &policy, &priority, &err) < 0)
        goto fail;
    if (proc_set_policy(pid, SCHED_FIFO, PAUSE_BOOST_PRIORITY, &err) < 0) {
        /* Some threads may be boosted already: none is left so. */
        unboost_threads(pid, policy, priority);
        goto fail;
    }
    b->pid[slot] = pid;
    b->policy[slot] = policy;
    b->priority[slot] = priority;
    return;
fail:
    log_warn("pause boost of pid %d: %s", (int)pid, vcr_error_msg(err));
}

void pause_boost_begin(struct pause_boost *b, pid_t a, pid_t c)
{
    boost_one(b, 0, a);
    boost_one(b, 1, c);
    b->self = false;
    cleanup_error vcr_error_t err = NULL;
    if (proc_get_policy(0, &b->self_policy, &b->self_priority, &err) < 0) {
        log_warn("pause boost of the agent: %s", vcr_error_msg(err));
        return;
    }
    if (b->self_policy != SCHED_OTHER)
        return; /* already real-time (another pause's, or the operator's): left so */
    /* SCHED_RESET_ON_FORK: what the loop spawns meanwhile (a cold boot's QEMU
     * after a failed restart, another VM's start, a standby job) is not
     * real-time, and nothing would ever put it back. */
    struct sched_param param = {.sched_priority = PAUSE_BOOST_PRIORITY};
    if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &param) < 0) {
        log_warn("pause boost of the agent: sched_setscheduler: %s", strerror(errno));
        return;
    }
    b->self = true;
}

void pause_boost_end_pid(struct pause_boost *b, pid_t pid)
{
    for (int i = 0; i < 2; i++) {
        if (pid <= 0 || b->pid[i] != pid)
            continue;
        unboost_threads(pid, b->policy[i], b->priority[i]);
        b->pid[i] = 0;
    }
}

void pause_boost_end(struct pause_boost *b)
{
    pause_boost_end_pid(b, b->pid[0]);
    pause_boost_end_pid(b, b->pid[1]);
    struct sched_param param = {.sched_priority = b->self_priority};
    if (b->self && sched_setscheduler(0, b->self_policy, &param) < 0)
        log_warn("pause boost of the agent, undoing: sched_setscheduler: %s", strerror(errno));
    b->self = false;
}
