/* Internals of the libvirt role shared by libvirt_role.c (the domains' states
 * and the role's ops) and libvirt_worker.c (libvirt's event thread, the
 * worker thread and its jobs): libvirt_role.c's first comment says how they
 * work together. */
#ifndef VCR_AGENT_HOST_LIBVIRT_PRIV_H
#define VCR_AGENT_HOST_LIBVIRT_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/agent_role.h"
#include "agent/host/host_fence.h"
#include "agent/host/host_sampler.h"
#include "agent/host/host_vm.h"

enum lv_job_kind {
    LV_JOB_CONNECT, /* open, watch, read every domain's state */
    LV_JOB_CLOSE,   /* the connection was closed under us: let it go */
    LV_JOB_STATES,  /* read every domain's state */
    LV_JOB_SAMPLE,  /* cpuTime and RSS of the domains marked `want` */
    LV_JOB_KILL,    /* vm_kill: virDomainDestroy */
    LV_JOB_STOP,    /* vm_stop: virDomainShutdown */
    LV_JOB_DESTROY, /* vm_stop's grace is over: virDomainDestroy */
    LV_JOB_START,   /* vm_start: virDomainCreate */
};

/* What the worker found of one domain. */
struct lv_dom_result {
    bool want; /* set by the loop: this domain is asked about (samples) */
    bool ok;   /* the call worked */
    int state; /* virDomainState, for LV_JOB_CONNECT/STATES */
    int reason;
    unsigned long long cpu_ns;
    uint64_t rss_kb;
    char error[160];
};

/* A job: made and freed by the loop; between submit and done the worker
 * reads its request and writes its result (the queue's lock hands it over). */
struct lv_job {
    struct lv_job *next;
    enum lv_job_kind kind;
    size_t dom;   /* the domain of an order */
    bool dropped; /* under the lock: past its deadline before it ran */
    /* loop only */
    struct lv_role *role;
    struct event *deadline;
    bool late;  /* its deadline passed: reported already */
    json_t *id; /* an order's id */
    int64_t submitted_ms;
    /* result */
    int rc;         /* 0 done, -1 failed (error, status) */
    int status;     /* errno-style */
    int was_active; /* orders: virDomainIsActive before acting */
    int64_t done_ms;
    char error[256];
    size_t n;
    struct lv_dom_result res[];
};

struct lv_domain {
    const char *name; /* borrowed from the configuration */
    enum vm_state state;
    char cause[160];
    uint32_t boots;
    pid_t pid;             /* its QEMU, from libvirt's pid file; 0 unknown */
    bool destroy_ordered;  /* our own virDomainDestroy: its STOPPED is `stopped` */
    bool shutdown_ordered; /* our own virDomainShutdown: likewise */
    bool busy;             /* an order's job is queued or running */
    json_t *pending_id;    /* a vm_stop or vm_start waiting for its state */
    char pending_action[16];
    struct event *stop_timer; /* vm_stop: destroy after the grace */
    struct cpu_meter meter;
    struct lv_role *r;
    enum lv_job_kind busy_kind; /* while busy: that order's (a vm_kill overtakes a vm_stop) */
};

struct lv_role {
    struct agent *agent;
    int pipe_rd, pipe_wr;
    struct event *pipe_ev;
    struct event *reconnect;
    pthread_t thread;
    bool thread_started;
    volatile bool thread_stop;
    /* the worker */
    pthread_t worker;
    bool worker_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct lv_job *queue, **queue_tail; /* under lock */
    struct lv_job *done;                /* under lock, newest first */
    bool worker_stop;                   /* under lock */
    int wake_fd;                        /* eventfd: the worker finished a job */
    struct event *wake_ev;
    virConnectPtr conn; /* the worker's only; NULL while not connected */
    int callback_id;    /* the worker's */
    /* the loop's view */
    bool connected;  /* the last connect worked and no close since */
    bool connecting; /* a connect job is queued or running */
    bool sampling;   /* a sample job is queued or running */
    bool stalled;    /* a job missed its deadline; re-read when one ends */
    size_t jobs_in_flight;
    json_t *last_sample; /* the newest sample's `vms`, not yet sent */
    struct lv_domain *doms;
    size_t n_doms;
    bool local_pids; /* the URI is a local qemu:///system daemon */
    struct host_fence *fence;
};

/* libvirt_worker.c */
const char *lv_error(void);
void *event_thread(void *arg);
void on_libvirt_error(void *opaque, virErrorPtr error);
void on_wakeup(int timer, void *opaque);
void *worker_thread(void *arg);
struct lv_job *job_new(struct lv_role *r, enum lv_job_kind kind, size_t dom);
void job_free(struct lv_job *j);
void job_submit(struct lv_role *r, struct lv_job *j);
void submit_connect(struct lv_role *r);
void on_reconnect(evutil_socket_t fd, short what, void *arg);
void on_worker_done(evutil_socket_t fd, short what, void *arg);
void on_note(evutil_socket_t fd, short what, void *arg);
bool stop_worker(struct lv_role *r);

/* libvirt_role.c */
enum vm_state state_of_event(const struct lv_domain *d, int event, int detail, char *cause,
                             size_t len);
enum vm_state state_of_domain(int state, int reason, char *cause, size_t len);
void finish_pending(struct lv_domain *d, bool ok, int status, const char *error);
void check_pending(struct lv_domain *d);
void set_state(struct lv_domain *d, enum vm_state state, const char *cause);
void set_all_unknown(struct lv_role *r, const char *cause);
struct lv_domain *find_domain(struct lv_role *r, const char *name);

#endif
