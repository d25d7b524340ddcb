/* One slow piece of work of the standby role (a liblxc create, start, stop or
 * destroy: seconds under TCG) run in a child process, so that the agent's
 * event loop goes on meanwhile: heartbeats, samples, other orders.
 *
 * The child runs fn, writes its result (ok, or the error's text) to a pipe in
 * one write and _exits; the parent watches the child through a pidfd and, at
 * its exit, reads the result and calls done from the loop.  What the child
 * changed in memory is lost with it: the work's effects must be on disk or in
 * the kernel (a container's files, mounts, processes), and the parent reads
 * them back afterwards. */
#ifndef VCR_AGENT_STANDBY_JOB_H
#define VCR_AGENT_STANDBY_JOB_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/err.h"

struct event_base;
struct standby_job;

#define STANDBY_JOB_ERROR_MAX 1024

/* Runs in the child: 0, or -1 with *err set. */
typedef int (*standby_job_fn)(void *arg, vcr_error_t *err);
/* Runs on the loop once the child has ended; error is NULL on success.  The
 * job is freed after it returns. */
typedef void (*standby_job_done_cb)(struct standby_job *job, const char *error, void *opaque);

/* In the child, from fn: a JSON object (text) of members the order's reply
 * adds on success, e.g. a checkpoint's size and timings.  It travels with the
 * result, so it must fit: at most STANDBY_JOB_ERROR_MAX - 1 bytes (a longer
 * one is dropped with a log line).  Calling it again replaces the text. */
void standby_job_set_result(const char *json_text);
/* In done, on success: the child's standby_job_set_result text, or "". */
const char *standby_job_result(const struct standby_job *job);
/* In done, on failure: the errno-style status of the child's error (0 unknown). */
int standby_job_error_status(const struct standby_job *job);

/* Forks the child.  NULL (and *err) if it could not be started. */
struct standby_job *standby_job_run(struct event_base *base, standby_job_fn fn, void *arg,
                                    standby_job_done_cb done, void *opaque, vcr_error_t *err);
pid_t standby_job_pid(const struct standby_job *job);
/* Sends sig to the child through its pidfd (never to a recycled pid). */
void standby_job_signal(struct standby_job *job, int sig);
/* Forgets the job without calling done (agent exit); the child runs on. */
void standby_job_free(struct standby_job *job);

#endif
