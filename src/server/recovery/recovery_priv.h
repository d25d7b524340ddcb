/* Inside the recovery engine: shared by recovery.c (the state machine and its
 * table), probe.c (scheduled health probes) and fence.c (fencing). */
#ifndef VCR_SERVER_RECOVERY_PRIV_H
#define VCR_SERVER_RECOVERY_PRIV_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/agents.h"
#include "server/check.h"
#include "server/provision.h"
#include "server/recovery.h"
#include "server/recovery/standby_mode.h"
#include "server/service_data.h"
#include "server/services.h"

/* Journal kind of a recovery's phases (docs/server.md; GET /metrics folds them). */
#define JOURNAL_RECOVERY "recovery"
/* Journal kind of a failback's phases (failback.c). */
#define JOURNAL_FAILBACK "failback"

enum svc_state {
    SVC_OK,
    SVC_DEGRADED,   /* probe failures, fewer than check.failures */
    SVC_RECOVERING, /* a recovery is running */
    SVC_RECOVERED,  /* served by the standby container */
    SVC_FAILED,  /* a recovery failed; `vcr failover` retries it, `vcr service reset` clears it */
    SVC_STOPPED, /* the primary VM was stopped on purpose: maintenance, no failover */
};

/* In order: a recovery has completed every phase up to `phase`. */
enum rec_phase {
    PH_NONE,
    PH_DETECTED,
    PH_FENCED,
    PH_CONTAINER_READY,
    PH_DATA_COPIED,   /* services with data only (docs/data.md) */
    PH_DATA_ATTACHED, /* services with data only */
    PH_PORT_OPEN,
    PH_ADDRESS_TAKEN, /* takeover: address or both (switch.h) */
    PH_DNS_UPDATED,   /* takeover: dns or both */
    PH_HOOK_RUN,      /* services with a `hook` (switch_hook.c) */
    PH_CLIENT_CONFIRMED,
};

/* What is in flight for a service; one step at a time. */
enum svc_step {
    STEP_IDLE,
    STEP_RESUME_WAIT, /* reloaded from the table: agents get time to say hello */
    STEP_FENCE_ORDER, /* vm_kill sent, waiting for the reply */
    STEP_FENCE_WAIT,  /* host unreachable: waiting for its self-fence */
    STEP_CONTAINER,   /* container_create / start sent */
    STEP_DATA,        /* the service's data: a copy, or data_attach (service_data.c) */
    STEP_PORT,        /* probing the container's port until the deadline */
    STEP_ADDRESS,     /* container_address sent: the primary's address onto the container */
    STEP_DNS,         /* UPDATE in flight */
    STEP_SWITCH,      /* another way of the switch in flight (s->switch_way, switch.h) */
    STEP_CONFIRM,     /* resolving and asking the service, until the deadline */
    STEP_FAILBACK,    /* failback: start the primary, probe it, DNS, container stop */
    STEP_CLEAR,       /* a failed recovery is cleared: DNS back to the primary first */
};

struct probe {
    struct check *check;
    int64_t next_ms; /* monotonic */
    uint32_t failures;
    /* Passed once since the primary (re)started: until then a failed probe
     * means a booting guest, not a failed service, and is not counted. */
    bool answered;
    int64_t unanswered_since;       /* monotonic: first failed probe while not answered; 0 none */
    uint64_t inconclusive;          /* probes that failed for a local reason (check.h) */
    int64_t inconclusive_logged_ms; /* monotonic: the last log line about them; 0 none */
    char last_error[200];
    int64_t started_us; /* monotonic: the probe in flight started */
    int64_t latency_us; /* the last probe that was answered (healthy or not) took; 0: none yet */
};

/* Why a recovery's fencing cannot count on the primary host's self-fence
 * (fence.c): NONE when it can, or while nothing was refused. */
enum fence_refusal {
    FENCE_REFUSAL_NONE,
    FENCE_REFUSAL_NO_HELLO,   /* the host never said hello to this server */
    FENCE_REFUSAL_OFF,        /* its fence_timeout_ms is 0 */
    FENCE_REFUSAL_PAUSED,     /* its watchdog is paused */
    FENCE_REFUSAL_DOWN,       /* no watchdog running */
    FENCE_REFUSAL_UNREPORTED, /* its agent does not report self-fencing */
};

struct svc {
    struct recovery *rc;
    const struct service_config *cfg;
    enum svc_state state;
    enum rec_phase phase;
    enum svc_step step;
    bool order_pending; /* an agents order whose callback has not come yet */
    bool on_standby;    /* served by the container: DNS points at it, or it holds the address */
    char cause[200];
    char error[400];
    /* The refusal last said by this recovery's fencing (and the pause it
     * named): a retry in vain that finds the same is not journaled again. */
    enum fence_refusal fence_refused;
    int64_t fence_refused_pause_ms;
    int64_t started_ms;   /* wall clock at detection */
    int64_t started_mono; /* monotonic at detection (or reload) */
    int64_t updated_ms;   /* wall clock */
    int64_t wait_until;   /* monotonic deadline of the current step */
    int64_t retry_at;     /* monotonic: next attempt within a step */
    int64_t step_started; /* monotonic */
    json_t *timeline;     /* [{phase, ts_ms, elapsed_ms, ...}] of the last recovery */
    struct probe probe;   /* of the primary */
    struct check *check;  /* the container's port, or the client confirmation */
    struct dns_update *dns;
    struct resolve *resolve;
    /* The port and confirmation steps of a dual-stack service: IPv4 passed,
     * IPv6 under way (docs/recovery.md: both families are confirmed). */
    bool ipv6_leg;
    char confirm_answer[65];    /* the IPv4 leg's answer (client_confirmed) */
    struct provision provision; /* of a warm service's container (provision.c) */
    struct svc_data data;       /* its data's copies (service_data.c) */
    /* The primary as last seen (recovery.c watch_primary): a change of any of
     * these while it runs is a (re)start, which opens its boot grace. */
    bool primary_was_running;
    int64_t primary_pid;
    int64_t primary_boots;
    /* A primary reported live while the service is served elsewhere is killed
     * again (docs/fencing.md): one order at a time, at most every REFENCE_MS. */
    bool refence_pending;
    int64_t refence_at; /* monotonic */
    /* An operator's vm_stop of the primary: maintenance until its VM reports
     * stopped, or this (monotonic; 0: none). */
    int64_t stop_ordered_until;
    /* The standby host the container orders of this recovery go to:
     * standby.host, or standby.fallback_host when that cannot take it. */
    char target_host[65];
    char clear_why[120]; /* why a failed recovery is being cleared (STEP_CLEAR) */
    /* failback: called once the container has released the primary's address. */
    void (*address_released)(struct svc *s, const char *error);
    /* The way of the switch in flight (switch.h), its own state (NULL: none);
     * failback: the next way to give back, and who is told when all are. */
    const struct switch_ops *switch_way;
    void *switch_io;
    size_t switch_back_next;
    void (*switch_back_done)(struct svc *s, const char *error);
    /* Failback: the primary is being started (vm_start sent). */
    bool failback_starting;
    /* The recovery state could not be saved (journal full, I/O error): the
     * recovery holds at its step and the save is retried (docs/recovery.md). */
    bool unsaved;
    int64_t save_retry_at; /* monotonic */
    /* Within a step: container create (0) / start (1); failback: the standby
     * mode's way back (2, 3: standby_mode.h failback). */
    int stage;
    /* failback: auto (failback.c): since when (monotonic) the service is
     * recovered with its primary's host connected, 0 when it is not; the last
     * automatic failback (monotonic, 0 none); set when the service failed again
     * within min_interval_s of it: no automatic failback until the operator's. */
    int64_t auto_ready_since;
    int64_t auto_last_ms;
    bool auto_suspended;
    int64_t auto_retry_logged_ms;
    /* Redundant servers: a healthy period loaded from etcd (recovery_ha.c) is
     * kept until this (monotonic) while the primary's host has not said hello
     * to this leader yet (it is reconnecting after the takeover); 0: none. */
    int64_t auto_carried_until;
    /* Redundant servers (recovery_ha.c): the recovery's id in etcd (its
     * detection's wall clock); the phase record waiting for its commit (its
     * journal detail) and whether the next step waits for it; the state write
     * in flight, and one more wanted after it. */
    char rec_id[24];
    json_t *ha_record;
    char ha_record_phase[24];
    bool ha_advance, ha_inflight, ha_record_sent, ha_dirty, ha_seen;
    /* Redundant servers: a failback in flight (failback.c), its id in etcd
     * (its start's wall clock; "" none) and its last phase etcd has; the
     * pending record is a failback's (under failbacks/, journaled as
     * `failback`, its id ha_record_id), and what runs once it is committed. */
    char fb_id[24];
    char fb_phase[24];
    bool ha_record_fb;
    char ha_record_id[24];
    void (*ha_fb_then)(struct svc *s);
    /* A DNS switch waiting for the zone's fence to hold this leader's term
     * (recovery_dns_switch; its addresses follow from the step). */
    bool dns_waiting;
    uint64_t ha_epoch;
    int64_t ha_retry_at; /* monotonic */
};

struct dns_update_config;
struct switch_ops;

struct recovery {
    struct event_base *base;
    const struct server_config *cfg;
    struct inventory *inv;
    struct journal *journal;
    struct agents *agents;
    sqlite3 *db;
    struct event *tick;
    struct svc *svcs;
    size_t n_svcs;
    bool stopping;
    struct ha *ha; /* NULL: the embedded single server, always acting */
    /* Redundant servers: the shared state was loaded from etcd for ha_term;
     * ha_epoch grows at every step-down (answers of an older one are ignored). */
    bool ha_loaded, ha_loading, ha_load_stale;
    int64_t ha_term;
    uint64_t ha_epoch;
    /* The DNS zone's fence (dns_update.h): the term it was seen or made to
     * hold for this leader (0: not yet); the query or claim in flight. */
    int64_t dns_fence_term;
    struct resolve *fence_query;
    struct dns_update *fence_claim;
    int64_t fence_retry_at; /* monotonic */
    /* Warm-restart maintenance windows as etcd has them (recovery_ha_maint.c). */
    struct maint_window **maint;
    size_t n_maint;
};

/* recovery_detect.c: detection */
void recovery_probe_result(struct svc *s, bool ok, const char *why);
void recovery_detect(struct svc *s, const char *cause);
/* recovery.c: the state machine */
/* Journals one phase (extra: more members, stolen, may be NULL), adds it to the timeline. */
void recovery_record(struct svc *s, const char *phase, json_t *extra);
/* recovery_record in two halves: the timeline entry (returns the journal
 * detail, new reference), then the journal line. */
json_t *recovery_record_entry(struct svc *s, const char *phase, json_t *extra);
void recovery_record_commit(struct svc *s, const char *phase, json_t *detail);
/* Records and saves phase as done, then starts the next step (if saved). */
void recovery_phase_done(struct svc *s, enum rec_phase phase, json_t *extra);
void recovery_advance(struct svc *s);
/* Saves the service's state in the recoveries table; false (and s->unsaved)
 * when it could not be written. */
bool recovery_save(struct svc *s);
void recovery_cancel_io(struct svc *s);
/* The address clients reach the recovered service at: the container's own,
 * or the primary's when only the address is taken over (the name stays). */
const char *recovery_served_address(const struct svc *s);
/* Its IPv6 counterpart (the AAAA record's), NULL for a service without address6. */
const char *recovery_served_address6(const struct svc *s);
/* *dc = the UPDATE settings of the server's `dns` section (strings borrowed
 * from rc->cfg), no fencing: the callers that fence add its fields. */
void recovery_dns_config(const struct recovery *rc, struct dns_update_config *dc);
/* Where the DNS switch of the service's step points its name: the primary's
 * address (A) and address6 (AAAA, NULL: none) on the way back (STEP_FAILBACK,
 * STEP_CLEAR), else the standby's. */
void recovery_dns_target(const struct svc *s, const char **address, const char **address6);
/* Starts the DNS UPDATE of the service's name to recovery_dns_target's
 * addresses, in one message (on_dns_done); set s->step first.  With redundant
 * servers it may wait for the zone's fence (s->dns_waiting). */
int recovery_dns_switch(struct svc *s);
const char *recovery_container_host(const struct svc *s);
/* The VM modes' standby VM as its connected host agent (standby.host)
 * reports it; NULL when that host is not connected or does not list it. */
struct inv_vm *recovery_standby_vm(const struct svc *s);
/* What stands by, for messages: its container, or its VM (standby_mode.h). */
const char *recovery_standby_name(const struct svc *s);
bool recovery_primary_running(const struct svc *s);
void recovery_fenced(struct svc *s, const char *how, int64_t waited_ms);
void recovery_fail(struct svc *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void recovery_journal(struct svc *s, const char *kind, json_t *detail);
bool recovery_vm_down(struct svc *s);

/* probe.c: starts the primary's probe when it is due; results go to
 * recovery_probe_result. */
void probe_due(struct svc *s, int64_t now);
void probe_stop(struct probe *p);

/* recovery_store.c: names, the `recoveries` table */
const char *recovery_state_name(enum svc_state state);
const char *recovery_phase_name(enum rec_phase phase);
int recovery_store_open(struct recovery *rc, vcr_error_t *err);
void recovery_store_load(struct svc *s);

/* recovery_container.c: the ready step of the container modes (standby_warm.c,
 * standby_cold.c) */
/* The container's spec as container_create/start orders carry it (new reference). */
json_t *recovery_container_members(const struct svc *s);
/* The service's check aimed at its primary (address NULL: primary.address, or
 * primary.address6 with `check.family: ipv6`) or at address. */
struct check_target recovery_primary_check(const struct svc *s, const char *address);
/* A container that runs already counts as ready on standby.host only if
 * running_counts (warm); on standby.fallback_host it always does. */
void recovery_container_ready(struct svc *s, bool running_counts);
void recovery_container_tick(struct svc *s, int64_t now);

/* recovery_api.c */
void recovery_clear_failed(struct svc *s, const char *why);
void recovery_clear_dns_done(struct svc *s, const char *error);

/* primary.c: boot grace at every start, `stopped`, fencing a returning primary. */
struct inv_vm *recovery_primary_vm(const struct svc *s);
void recovery_watch_primary(struct svc *s, int64_t now);

/* failback.c */
int failback_start(struct svc *s, vcr_error_t *err);
void failback_tick(struct svc *s, int64_t now);
/* Redundant servers: a failback a predecessor left in flight at phase
 * s->fb_phase (recovery_ha.c loaded it) goes on after that phase. */
void failback_resume(struct svc *s);
void failback_dns_done(struct svc *s, const char *error);
/* The standby mode's failback hook is over: journals phase (error may be
 * NULL) and the service is ok again, served by its primary. */
void failback_finish(struct svc *s, const char *phase, const char *error);
/* The reply to a standby mode's failback order (standby_mode.h failback):
 * true when it succeeded and the mode goes on.  false when there is nothing
 * more to do: the reply came too late (the server stops, the service left
 * failback), or the order failed, which is logged ("could not WHAT NAME")
 * and ends the failback by failback_finish(s, failed_phase, message). */
bool failback_order_reply(struct svc *s, enum order_outcome outcome, const char *message,
                          const char *what, const char *failed_phase);
/* failback: auto: starts a failback when the policy says so (STEP_IDLE, recovered). */
void failback_auto_tick(struct svc *s, int64_t now);
/* A new failure of s: after an automatic failback within min_interval_s, that
 * is flapping: automatic failback is suspended. */
void failback_auto_on_failure(struct svc *s);
/* The operator failed back (or reset): automatic failback may run again. */
void failback_auto_resume(struct svc *s);

/* recovery_ha.c: the shared state in etcd of redundant servers (docs/ha.md) */
/* Whether this server leads and has loaded the shared state (starts loading it). */
bool recovery_ha_ready(struct recovery *rc);
/* The phase's record and the service's state in one guarded txn; journals the
 * phase and starts the next step once etcd has them. */
void recovery_ha_phase_done(struct svc *s, enum rec_phase phase, json_t *extra);
/* Writes the service's state (guarded by the term); one write at a time. */
void recovery_ha_save(struct svc *s);
/* A failback's phase (detail: its journal entry, stolen): recorded in etcd
 * with the service's state in one txn under this leader's term, journaled
 * once committed, and then then(s) (NULL: nothing) runs; the service's
 * steps hold until then. */
void recovery_ha_failback_phase(struct svc *s, const char *phase, json_t *detail,
                                void (*then)(struct svc *s));
/* Retries a write; true while the service waits for a phase's commit. */
bool recovery_ha_tick(struct svc *s, int64_t now);
/* Whether the DNS zone's fence holds this leader's term (claimed on taking the lead). */
bool recovery_ha_dns_fenced(struct recovery *rc);
/* A DNS switch refused by the fence (NXRRSET): the fence is read again; the
 * switch waits until it holds this term again, which it never does for a deposed leader. */
void recovery_ha_dns_stale(struct svc *s);
/* A service as if nothing had happened (before the shared state is loaded). */
void recovery_ha_reset(struct svc *s);
/* The automatic failback's timers changed (failback.c): written to etcd with
 * the service's state, so that a successor continues them. */
void recovery_ha_auto_changed(struct svc *s);

/* recovery_ha_maint.c: warm-restart maintenance windows in etcd (docs/ha.md) */
/* Loads the windows (after the services' state); sets ha_loaded when done. */
int recovery_ha_maint_load(struct recovery *rc, vcr_error_t *err);
/* Records the inventory's warm restarts, applies loaded deadlines, closes ended windows. */
void recovery_ha_maint_tick(struct recovery *rc, int64_t now);
/* Forgets the windows (step-down); an answer in flight frees its own. */
void recovery_ha_maint_drop(struct recovery *rc);
/* Frees them all, in flight or not: the etcd client goes next, unanswered. */
void recovery_ha_maint_free(struct recovery *rc);

/* fence.c */
void fence_start(struct svc *s);
void fence_tick(struct svc *s, int64_t now);

#endif
