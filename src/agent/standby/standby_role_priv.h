/* Internals of the standby role shared by standby_role.c (the orders, on the
 * loop) and standby_work.c (their work, in a child process). */
#ifndef VCR_AGENT_STANDBY_ROLE_PRIV_H
#define VCR_AGENT_STANDBY_ROLE_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "agent/agent_role.h"
#include "agent/standby/standby.h"
#include "agent/standby/standby_ct.h"
#include "agent/standby_job.h"
#include "common/err.h"

#define STANDBY_CT_MAX         256
#define STANDBY_STOP_TIMEOUT_S 2

/* An order whose work runs in a child process. */
struct standby_pending {
    struct standby_role *r;
    struct standby_job *job;
    json_t *id; /* NULL: answered already (stream_receive) */
    char action[32];
    char name[65];
    int64_t t0;
    bool start;                  /* container_create: start it too */
    struct standby_ct_spec spec; /* container_create, container_restore */
    enum standby_phase phase;    /* container_checkpoint */
    struct standby_ct *ct;       /* start, stop, destroy: the container (the child's copy acts) */
    int hold_ms;                 /* test fault: the child sleeps this long first */
    json_t *order;               /* data_* orders: their members (docs/data.md) */
    json_t *restore_data;        /* container_restore: its `data` {service, path}, or NULL */
    int stream_listen_fd;        /* stream_receive: the listener and the directory, */
    int stream_dir_fd;           /* the child's (closed in the parent once it runs) */
};

struct standby_role {
    struct agent *agent;
    const char *lxcpath;
    const char *lib_dir; /* templates/ and images/ (standby.h) */
    char images_dir[200];
    const char *migrate_dir;
    const char *data_dir;
    struct standby_ct *cts[STANDBY_CT_MAX];
    size_t n_cts;
    struct standby_pending *pending[STANDBY_CT_MAX];
    size_t n_pending;
    bool have_cpu;
    struct standby_cpu_times cpu;
    struct standby_job *criu_probe; /* the `criu check` of standby_init, while it runs */
};

/* standby_work.c: in the child, the work of pending order arg (a struct
 * standby_pending); standby_job_run's work function. */
int job_work(void *arg, vcr_error_t *err);

#endif
