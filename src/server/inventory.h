/* What the server knows of hosts and their VMs, fed by agent messages.
 *
 * Liveness takes the caller's clock (`now_ms`, monotonic in the server) so that
 * timeouts are tested by passing times, not by sleeping.  Hosts are never
 * removed: a lost host keeps its last known VMs, which recovery will need. */
#ifndef VCR_SERVER_INVENTORY_H
#define VCR_SERVER_INVENTORY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "proto/proto_state.h"
#include "server/metrics.h"

enum inv_host_state {
    INV_HOST_CONNECTED,
    INV_HOST_LOST,
};

/* docs/protocol.md, "VM state values". */
enum inv_vm_state {
    INV_VM_STARTING = PROTO_VM_STARTING,
    INV_VM_RUNNING = PROTO_VM_RUNNING,
    INV_VM_PAUSED = PROTO_VM_PAUSED,
    INV_VM_SHUTDOWN = PROTO_VM_SHUTDOWN,
    INV_VM_STOPPED = PROTO_VM_STOPPED,
    INV_VM_CRASHED = PROTO_VM_CRASHED,
    INV_VM_PANICKED = PROTO_VM_PANICKED,
    INV_VM_FAILED = PROTO_VM_FAILED,
    /* warm restart: maintenance, not failure, until its deadline */
    INV_VM_RESTARTING = PROTO_VM_RESTARTING,
    /* the agent cannot see it (a libvirt host whose libvirtd is unreachable) */
    INV_VM_UNKNOWN = PROTO_VM_UNKNOWN,
};

/* A VM `restarting` longer than this has failed its warm restart (the agent's
 * own deadline is 30 s; this leaves room for the cold-boot fallback). */
#define INV_RESTART_DEADLINE_MS 60000

const char *inv_vm_state_name(enum inv_vm_state s);
/* -1 for a name that is not a VM state. */
int inv_vm_state_parse(const char *s);
const char *inv_host_state_name(enum inv_host_state s);

struct inv_vm {
    char *name;
    enum inv_vm_state state;
    char *cause;                 /* NULL until a hello or vm_event says why */
    int64_t pid;                 /* 0: not known */
    int64_t boots;               /* guest boots the agent saw (vm_sm.boots); -1: not known */
    char *address;               /* NULL: not known */
    int64_t memory_mb;           /* 0: not known */
    int64_t vcpus;               /* 0: not known */
    char *accel;                 /* NULL: not known */
    char *qemu;                  /* binary of the running QEMU; NULL: not known */
    char *ram;                   /* its RAM file (hello); NULL: not known */
    char *disk;                  /* a disk-image VM's overlay (hello); NULL: no disk */
    char *disk_base;             /* the read-only base under it */
    char *ram_backing;           /* "tmpfs" or "hugetlbfs" (hello); NULL: not known */
    int64_t restart_deadline_ms; /* caller's clock; 0 unless `restarting` */
    int64_t state_ts_ms;         /* agent's wall clock at the last vm_event; 0 if none */
    bool has_sample;
    double cpu_pct;
    int64_t rss_kb;
    int64_t sample_ts_ms;
};

/* A host agent's fence watchdog as its agent last reported it (docs/fencing.md,
 * "Reporting"): what the server may count on when it cannot kill a VM itself. */
enum inv_watchdog {
    INV_WATCHDOG_UNKNOWN, /* not reported: no hello yet, or an agent that does not say */
    INV_WATCHDOG_ARMED,
    INV_WATCHDOG_PAUSED,
    INV_WATCHDOG_DOWN, /* the agent has no watchdog attached (it died; being respawned) */
    INV_WATCHDOG_OFF,  /* fence_timeout_ms 0 */
};

const char *inv_watchdog_name(enum inv_watchdog w);

struct inv_self_fence {
    enum inv_watchdog watchdog;
    int64_t timeout_ms;  /* in effect (after welcome's fence_after_ms); 0: off */
    int64_t pause_ms;    /* paused: what was left when reported */
    int64_t reported_ms; /* caller's clock */
};

struct inv_host {
    char *name;
    char *role; /* "host" | "standby" */
    char *accel;
    char *agent_version;
    int64_t agent_pid;
    enum inv_host_state state;
    int64_t last_seen_ms; /* caller's clock, at the last frame from the agent */
    struct inv_vm **vms;
    size_t n_vms;
    /* standby role: the agent's last `containers` list and `vm_load` object
     * (docs/protocol.md), shown as reported; NULL until one arrives. */
    json_t *containers;
    json_t *vm_load;
    /* Counts the `containers` lists taken: tells a report sent after an
     * order's reply from the one the order was decided on. */
    uint64_t containers_seq;
    struct inv_self_fence self_fence; /* hello's `self_fence`, then `self_fence` messages */
    /* Caller's clock: the host's sessions are refused until then, while the
     * server counts on its self-fence (agents_cut_off); 0: never cut off. */
    int64_t cut_off_until_ms;
    /* Inter-arrival gaps of the agent's heartbeats (GET /metrics): what the
     * host timeout must exceed (docs/server.md, "Choosing the timeouts").
     * last_heartbeat_ms is 0 until the first heartbeat of a connection, so a
     * silence between connections is never counted as a gap. */
    int64_t last_heartbeat_ms;
    struct metrics_histogram heartbeat_gap;
    int64_t heartbeat_gap_max_ms;
};

struct inv_index;
struct inventory {
    struct inv_host **hosts;
    size_t n_hosts;
    json_t *moving; /* {container name: true} while a migration moves it */
    /* Hash indexes of hosts and VMs by name (inventory_index.c), rebuilt at the next
     * lookup after hosts or VM lists change: the recovery engine looks each
     * service's VM up on every tick, which a linear search made cost
     * hosts x VMs per service (bench/results/scale.md). */
    struct inv_index *index;
};

/* Upper bounds (seconds) of the heartbeat gap histogram. */
extern const double inv_heartbeat_gap_bounds[];
extern const size_t inv_heartbeat_gap_n_bounds;

struct inventory *inventory_new(void);
void inventory_free(struct inventory *inv);

struct inv_host *inventory_find_host(const struct inventory *inv, const char *name);
/* The connected standby host whose last report lists container name, preferring
 * `preferred`; NULL when none does (a migration may move a container). */
/* Host h's last report of container name, or NULL. */
json_t *inventory_host_container(const struct inv_host *h, const char *name);
struct inv_host *inventory_find_container_host(const struct inventory *inv, const char *name,
                                               const char *preferred);
/* A migration (migrate.c) marks the container it moves, so that other engines
 * (provisioning) leave it alone while it is stopped on the way. */
void inventory_set_moving(struct inventory *inv, const char *name, bool moving);
bool inventory_is_moving(const struct inventory *inv, const char *name);
/* VM names are meant to be unique across hosts; if two hosts list one name, the
 * host that said hello first wins.  *host (may be NULL) gets the owner. */
struct inv_vm *inventory_find_vm(const struct inventory *inv, const char *name,
                                 struct inv_host **host);

/* Apply a hello (borrowed), validated first: on error nothing changes and *err
 * names the member.  The host becomes connected, seen at now_ms, and its VM list
 * is replaced by the hello's.  *came_up: the host was unknown or lost before. */
struct inv_host *inventory_apply_hello(struct inventory *inv, json_t *hello, int64_t now_ms,
                                       bool *came_up, vcr_error_t *err);
/* A vm_event of host (which must have said hello); an unknown VM is added. */
int inventory_apply_vm_event(struct inventory *inv, const char *host, json_t *msg,
                             vcr_error_t *err);

/* What a vm_event did to a warm restart. */
enum inv_restart_change {
    INV_RESTART_NONE,
    INV_RESTART_BEGAN,  /* now `restarting`: deadline now_ms + INV_RESTART_DEADLINE_MS */
    INV_RESTART_DONE,   /* `restarting` -> `running` */
    INV_RESTART_FAILED, /* `restarting` -> anything else (a cold-boot fallback starts) */
};

/* The same, at now_ms (caller's clock), saying what became of a warm restart
 * (change may be NULL). */
int inventory_apply_vm_event_at(struct inventory *inv, const char *host, json_t *msg,
                                int64_t now_ms, enum inv_restart_change *change, vcr_error_t *err);

/* Every VM `restarting` past its deadline at now_ms becomes `failed` (cause:
 * the overrun) and overrun is called for it.  Returns how many. */
typedef void (*inv_overrun_cb)(struct inv_host *h, struct inv_vm *vm, void *opaque);
size_t inventory_expire_restarts(struct inventory *inv, int64_t now_ms, inv_overrun_cb overrun,
                                 void *opaque);
/* A `self_fence` message of host (docs/protocol.md), validated first. */
int inventory_apply_self_fence(struct inventory *inv, const char *host, json_t *msg, int64_t now_ms,
                               vcr_error_t *err);
/* A sample of host; entries for VMs the inventory does not know are skipped. */
int inventory_apply_sample(struct inventory *inv, const char *host, json_t *msg, vcr_error_t *err);
/* A heartbeat from host at now_ms: counts the gap since its previous one on
 * the same connection. */
void inventory_host_heartbeat(struct inventory *inv, const char *host, int64_t now_ms);
/* Any frame from host's agent. */
void inventory_host_seen(struct inventory *inv, const char *host, int64_t now_ms);

/* The server itself did not run for ms (a late liveness tick): every connected
 * host's last frame counts as ms later, so that silence is not held against it.
 * Returns how many hosts. */
size_t inventory_forgive_silence(struct inventory *inv, int64_t ms);

/* Marks lost every connected host silent for more than timeout_ms at now_ms and
 * calls lost for each (silent_ms = now_ms - last_seen_ms).  Returns how many. */
typedef void (*inv_lost_cb)(struct inv_host *h, int64_t silent_ms, void *opaque);
size_t inventory_expire_hosts(struct inventory *inv, int64_t now_ms, int64_t timeout_ms,
                              inv_lost_cb lost, void *opaque);

/* Host h's self_fence as GET /v1/status shows it: {timeout_ms, watchdog,
 * pause_ms?, reported_ms (wall clock)}, or null until its agent reported one. */
json_t *inventory_self_fence_json(const struct inv_host *h, int64_t now_ms, int64_t now_wall_ms);
/* {"hosts": [...]} as GET /v1/status shows it (docs/server.md).  last_seen_ms is
 * turned into wall-clock time: now_wall_ms - (now_ms - last_seen_ms). */
json_t *inventory_status_json(const struct inventory *inv, int64_t now_ms, int64_t now_wall_ms);

/* Host and VM names: 1..64 of letters, digits, '.', '_', '-' (they appear in
 * URLs, log lines and the journal). */
bool inventory_valid_name(const char *s);

#endif
