/* Supervision of one primary VM on a host: starts QEMU (vm.c builds the
 * command line), follows it over QMP (events, status) and through a pidfd
 * (death, also for a QEMU an earlier agent started), stops and kills it on
 * order, and reports every state change through a callback.
 *
 * Death is reported when the pidfd becomes readable, with that moment as
 * ts_ms; the QMP socket is drained first (QEMU has closed it by then) so that
 * a SHUTDOWN sent just before the exit is never lost.  When a VM ends, its RAM
 * file (in ram_dir: a hugetlbfs file would hold its pages for ever), QMP socket
 * and pid file are removed; its serial and QEMU logs stay in the state directory. */
#ifndef VCR_AGENT_HOST_VM_H
#define VCR_AGENT_HOST_VM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/host/ram_dir.h"
#include "agent/host/host_disk.h"
#include "agent/host/qemu_allow.h"
#include "agent/host/vm.h"
#include "common/err.h"
#include "config/vm_spec.h"

/* How long QEMU may take to create its QMP socket after the spawn. */
#define HOST_VM_QMP_CONNECT_MS 10000
/* After system_powerdown: how long the guest has to power off before `quit`. */
#define HOST_VM_STOP_GRACE_MS 5000
/* After `quit` (or SIGTERM without QMP): how long before SIGKILL. */
#define HOST_VM_STOP_KILL_MS 3000

struct event_base;
struct host_vm;

/* Borrowed for the life of the VMs. */
struct host_vm_env {
    struct event_base *base;
    const char *qemu;
    /* The binaries a warm restart may name (qemu_allow.h); NULL: only qemu. */
    const struct qemu_allow *qemu_allow;
    const char *host;
    const char *state_dir;
    const char *qemu_user; /* QEMU's `-runas` user; NULL: QEMU stays root */
    uid_t qemu_uid;        /* its ids (0: root) */
    gid_t qemu_gid;
    const char *accel;         /* "kvm" or "tcg" */
    const struct ram_dir *ram; /* where RAM files go: tmpfs or hugetlbfs */
    struct host_disk_env disk; /* disk-image VMs' tools (host_disk.h) */
    bool test_faults;          /* --test-faults: the hooks of host_vm_prep.c */
};

/* The VM changed state (or saw a notable event such as RESET); ts_ms is the
 * wall-clock time the agent saw it. */
typedef void (*host_vm_changed_cb)(struct host_vm *vm, int64_t ts_ms, void *opaque);

struct host_vm *host_vm_new(const struct host_vm_env *env, const struct vcr_vm_spec *spec,
                            host_vm_changed_cb cb, void *opaque, vcr_error_t *err);
/* Takes over a QEMU of this VM left running by an earlier agent, found by its
 * pid file and checked by its command line.  Returns true if one was adopted. */
bool host_vm_adopt(struct host_vm *vm);
/* After a failed adopt: whether a QEMU of this VM ran under an earlier agent and
 * ended unobserved (its pid file or RAM file is still there).  If so the VM is
 * reported `crashed`, the leftovers are removed and true is returned: it is not
 * to be autostarted, since the server may have recovered its service elsewhere. */
bool host_vm_found_ended(struct host_vm *vm);
int host_vm_start(struct host_vm *vm, const char *why, vcr_error_t *err);
/* Graceful: system_powerdown, `quit` after grace_ms, SIGKILL HOST_VM_STOP_KILL_MS
 * later.  grace_ms 0 skips the powerdown. */
int host_vm_stop(struct host_vm *vm, int grace_ms, vcr_error_t *err);
/* SIGKILL through the pidfd (fencing). */
int host_vm_kill(struct host_vm *vm, vcr_error_t *err);

const char *host_vm_name(const struct host_vm *vm);
enum vm_state host_vm_state(const struct host_vm *vm);
const char *host_vm_cause(const struct host_vm *vm);
/* The QEMU process of the last state change (0 if there never was one). */
pid_t host_vm_pid(const struct host_vm *vm);
/* Whether a QEMU process of this VM exists now. */
bool host_vm_has_process(const struct host_vm *vm);
/* Whether its disks are being made before its QEMU starts (host_vm_prep.c):
 * no process yet, but one is coming; host_vm_stop or host_vm_kill cancels it. */
bool host_vm_preparing(const struct host_vm *vm);
/* The `vm` object of hello: name, state, cause, pid, address, memory_mb, vcpus, accel,
 * qemu, ram (the RAM file), ram_backing ("tmpfs" or "hugetlbfs"). */
json_t *host_vm_json(const struct host_vm *vm);
/* {"vm", "cpu_pct", "rss_kb"} for a `sample`, or NULL when there is no process. */
json_t *host_vm_sample(struct host_vm *vm);
/* The binary of the running QEMU (NULL when unknown). */
/* Guest boots this agent has seen (vm_sm.boots). */
uint32_t host_vm_boots(const struct host_vm *vm);
const char *host_vm_qemu(const struct host_vm *vm);
/* The user this VM's QEMU runs as (-runas), or NULL: root (qemu_user: root).
 * Every VM alike: volume_snapshot's drive-backup writes into a descriptor the
 * agent passes (host_data.c), never a file QEMU opens by name. */
const char *host_vm_runas(const struct host_vm *vm);

/* --- warm restart (docs/warm-restart.md, host_warm_restart.c) --- */

/* Everything the warm restart waits for must happen within this long. */
#define HOST_VM_WARM_DEADLINE_MS 30000
/* The new QEMU, started while the old one still runs the guest, must reach
 * its QMP greeting within this long, or the restart is abandoned before the
 * guest is ever paused. */
#define HOST_VM_WARM_LAUNCH_MS 10000
/* query-migrate polling while a state file left by an earlier agent is read
 * (takeover only: a warm restart itself moves the device state over a socket). */
#define HOST_VM_WARM_POLL_MS 2

/* The guests of one host are paused one at a time, once no new QEMU of the
 * host is starting (host_warm_gate.c, "the pause gate"); a restart whose
 * new QEMU is ready waits at most this long for that. */
#define HOST_VM_WARM_HOLD_MS 5000

/* An agent that finds an unfinished warm restart at start finishes or rolls
 * it back only if it began less than this long ago; later, the server has
 * stopped counting it as maintenance (INV_RESTART_DEADLINE_MS, 60 s, leaves
 * room for the restart's own deadline after this window). */
#define HOST_VM_WARM_RECOVER_WINDOW_MS 30000

struct host_vm_warm_options {
    const char *qemu; /* binary of the new QEMU; NULL: the one running now */
    /* Test fault: the agent kills itself (SIGKILL) at this point of the
     * restart: "launched" (the new QEMU listens for the state, the old one
     * not paused yet), "stopped" (`stop` and `migrate` sent to the old one),
     * "migrated" (the new QEMU has the whole state, the old one is not killed
     * yet) or "handed" (the old QEMU killed, `cont` not sent to the new one);
     * NULL: never. */
    const char *agent_exit_at;
};

/* The points allowed in agent_exit_at, comma-separated, for messages. */
#define HOST_VM_WARM_EXIT_POINTS "launched, stopped, migrated, handed"
bool host_vm_warm_exit_point_valid(const char *point);

struct host_vm_warm_result {
    bool ok;       /* the guest runs on in the new QEMU */
    bool fallback; /* it was booted cold instead; error says why */
    char error[512];
    double launch_ms;     /* new QEMU spawned -> its QMP ready (the guest still runs) */
    double pause_ms;      /* `stop` sent to the old QEMU -> `cont` done by the new one: the
                           * guest's pause */
    double suspend_ms;    /* `stop` sent -> the new QEMU has loaded the whole device state */
    double resume_ms;     /* state loaded -> `cont` done (the old QEMU killed in between) */
    double downtime_ms;   /* the same as pause_ms (kept for older clients) */
    uint64_t state_bytes; /* what the old QEMU sent (its query-migrate); 0: not known */
    char qemu[1024];      /* binary of the new QEMU */
    /* When each step happened, in ms of the agent's CLOCK_MONOTONIC (0: not
     * reached): comparable between the VMs of one host, to see how their
     * restarts overlap.  The order accepted, the new QEMU spawned, greeted,
     * listening, let through the pause gate, `stop` sent, the state in, `cont`
     * answered. */
    struct {
        double order, spawned, ready, listening, gate, stop, migrated, cont;
    } at;
};

/* Called once per accepted warm restart; result and vm are borrowed. */
typedef void (*host_vm_warm_cb)(struct host_vm *vm, const struct host_vm_warm_result *result,
                                void *opaque);

/* Start the new QEMU with -incoming defer beside the old one (same RAM file,
 * the tap handed over), wait for its QMP greeting and make it listen for the
 * state; only then pause the old one and migrate its device state straight
 * into the new one over a UNIX socket (x-ignore-shared: the RAM stays in its
 * file), kill the old one, continue the new one.  A new QEMU that cannot start
 * or cannot take the state leaves the old one running the guest.  The VM is
 * `restarting` meanwhile.  Returns -1 (nothing done) if the VM is not running
 * or paused with QMP ready, or is already restarting. */
int host_vm_warm_restart(struct host_vm *vm, const struct host_vm_warm_options *opts,
                         host_vm_warm_cb cb, void *opaque, vcr_error_t *err);
bool host_vm_restarting(const struct host_vm *vm);
/* At agent start, before host_vm_adopt: if an earlier agent left a warm
 * restart of this VM unfinished (its journal), finish it or roll it back
 * (docs/warm-restart.md "Agent restart") and return true; false when there is
 * nothing to take over and the VM is to be adopted or started as usual.
 * fenced: the VM was self-fenced; no QEMU is started for it then (a new one
 * left beside the old is killed). */
bool host_vm_warm_recover(struct host_vm *vm, bool fenced);

/* Leaves the QEMU process running (it outlives the agent by design). */
void host_vm_free(struct host_vm *vm);

#endif
