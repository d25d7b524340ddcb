/* Inside the warm restart: shared by host_warm_restart.c (the order, its end,
 * its failure paths), host_warm_handover.c (one VM's new QEMU and pause),
 * host_warm_gate.c (the host's restarts together), host_warm_recover.c
 * (taking over one an earlier agent left) and host_warm_files.c. */
#ifndef VCR_AGENT_HOST_WARM_PRIV_H
#define VCR_AGENT_HOST_WARM_PRIV_H

#include <stdbool.h>
#include <sys/types.h>

#include "agent/host/host_vm.h"
#include "agent/host/host_vm_priv.h"
#include "agent/host/pause_boost.h"
#include "agent/warm_state.h"
#include "qmp/qmp.h"

#include <event2/util.h>

enum warm_step {
    W_LAUNCH,     /* new QEMU spawned beside the old one: waiting for its QMP */
    W_CAPS_NEXT,  /* x-ignore-shared, events, late-block-activate on the new QEMU */
    W_LISTEN,     /* `migrate-incoming unix:NAME.mig` sent to the new QEMU */
    W_HOLD,       /* the new QEMU listens; waiting for the host's other restarts
                   * (the pause gate, host_warm_gate.c) before pausing the guest */
    W_CAPS_OUT,   /* x-ignore-shared, events on the old QEMU */
    W_MIGRATE,    /* `stop` and `migrate unix:NAME.mig` sent to the old QEMU: waiting
                   * for the new one's MIGRATION `completed` */
    W_UNLAUNCH,   /* abandoned while the old QEMU holds the guest: the new one is
                   * being killed; the old one's files go back (and it is `cont`ed)
                   * once it is gone */
    W_RESUME_OLD, /* `cont` sent to the old QEMU after an abandoned restart */
    W_TALLY,      /* the new QEMU has the state; `query-migrate` sent to the old one
                   * for what it sent, before it is killed */
    W_HANDOVER,   /* the new QEMU has the state, the old one is killed: `cont` sent to
                   * the new one; done once both its reply and the old one's exit came */
    W_QUIT,       /* takeover: a QEMU killed, waiting for its pidfd */
    W_SPAWNED,    /* takeover: a new QEMU spawned after the old was gone, waiting for QMP */
    W_CAPS_IN,    /* takeover: x-ignore-shared on that QEMU */
    W_INCOMING,   /* takeover: `migrate-incoming` of a state file an earlier agent sealed */
    W_LOADING,    /* takeover: polling query-migrate on that QEMU */
    W_CONT,       /* takeover: `cont` sent */
    W_FALLBACK,   /* every QEMU left is being killed; a cold boot follows their exits */
    /* Taking over a restart an earlier agent left (host_vm_warm_recover): */
    W_ADOPT_OLD, /* the old QEMU adopted, waiting for QMP */
    W_ROLLBACK,  /* `cont` sent to it */
    W_ADOPT_NEW, /* the new QEMU adopted, waiting for QMP */
    W_CHECK,     /* query-status sent to it */
};

struct host_vm_warm {
    struct host_vm *vm;
    enum warm_step step;
    char exit_at[16]; /* test fault: where the agent kills itself ("" never) */
    host_vm_warm_cb cb;
    void *opaque;
    struct event *poll;
    struct event *deadline;
    struct event *launch_timer;
    double t_spawn, t_stop, t_saved;
    int resume_tries;        /* `cont` of the old QEMU refused while its migration ends */
    char pending_error[400]; /* the old QEMU's migration failed: reported unless the
                              * new QEMU's own failure comes first */
    /* The new QEMU while the old one is still the VM's (vm->proc, vm->qmp). */
    struct proc_watch *next;
    struct qmp_client *next_qmp;
    pid_t next_pid;
    int tap_fd;     /* the old QEMU's tap, handed to the new one; -1 once closed */
    int tap_hdr;    /* its vnet header size before the new QEMU started (-1: unknown) */
    bool aside;     /* the old QEMU's NAME.pid / NAME.qmp are at NAME.old.* */
    bool stopped;   /* `stop` was sent to the old QEMU */
    bool launching; /* counted by the pause gate as launching */
    bool pausing;   /* counted by the pause gate as pausing its guest */
    struct host_vm_warm *wait_next; /* W_HOLD: the next in the gate's queue */
    struct pause_boost boost;       /* pausing: its QEMUs' and the agent's priority */
    bool old_gone;                  /* W_HANDOVER: the old QEMU's exit was seen */
    bool resumed;                   /* W_HANDOVER: the new QEMU answered `cont` */
    bool was_paused;                /* the VM was paused when the order came */
    struct warm_journal journal;
    struct host_vm_warm_result result;
};

struct host_vm_warm *warm_new(struct host_vm *vm, const char *qemu, host_vm_warm_cb cb,
                              void *opaque, vcr_error_t *err);
void warm_send_step(struct host_vm *vm, enum warm_step step, const char *cmd, json_t *args,
                    qmp_reply_cb cb);
bool warm_step_ok(struct host_vm *vm, enum warm_step step, const char *cmd, const char *error);
void warm_finish(struct host_vm *vm);
void warm_cold_boot(struct host_vm *vm);
bool warm_state_sealed(const struct host_vm *vm);
void warm_remove_state_files(struct host_vm *vm);
void warm_unlink_quiet(const struct host_vm *vm, const char *path);
/* host_warm_files.c: NAME.pid / NAME.qmp moved aside for the new QEMU, and back. */
int warm_move_aside(struct host_vm *vm, vcr_error_t *err);
void warm_names_back(struct host_vm *vm);
void warm_fail(struct host_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* host_warm_restart.c: the restart's end and its undoing. */
bool warm_closed_error(const char *error); /* a QMP reply lost to the connection's end */
void warm_test_exit_point(const struct host_vm *vm, const char *point);
void warm_restore_tap(struct host_vm *vm);
void warm_close_tap(struct host_vm_warm *w);
void warm_next_free(struct host_vm_warm *w);
void warm_maybe_cold_boot(struct host_vm *vm);
/* The new QEMU is gone, the old one holds the guest: it goes on (`cont` if stopped). */
void warm_rolled_back(struct host_vm *vm);
/* `cont` answered: the pause ends now; warm_done: the restart succeeded. */
void warm_resumed_now(struct host_vm_warm *w);
void warm_done(struct host_vm *vm);

/* host_warm_handover.c: the new QEMU beside the old one. */
int warm_launch_next(struct host_vm *vm, vcr_error_t *err);
/* Let through the gate (or held too long): the guest's pause begins. */
void warm_start_pause(struct host_vm *vm);
/* W_HANDOVER: the new QEMU becomes the VM's once its `cont` and the old one's exit are in. */
void warm_handed_over(struct host_vm *vm);
/* The launch timer: no greeting in time (W_LAUNCH), or held too long (W_HOLD). */
void warm_on_launch_timeout(evutil_socket_t fd, short what, void *arg);

/* host_warm_gate.c: the pause gate (one agent serves one host: it is the process's). */
void warm_gate_launching(struct host_vm_warm *w); /* its new QEMU is starting */
void warm_gate_hold(struct host_vm *vm);          /* listening: W_HOLD until let through */
void warm_gate_pausing(struct host_vm_warm *w);   /* its guest is paused */
void warm_gate_unwait(struct host_vm_warm *w);    /* out of the queue */
/* Out of the counts and the queue; release: let the next one through (not
 * when the agent is going away). */
void warm_gate_leave(struct host_vm_warm *w, bool release);

/* host_warm_recover.c: loading a state file an earlier agent sealed. */
void warm_load_state(struct host_vm *vm);
void warm_poll_loading(struct host_vm *vm);

/* Takeover: `cont` to the VM's QEMU (vm->qmp), which has the whole state;
 * the VM is `running` (warm restart done) once it answers. */
void warm_cont(struct host_vm *vm);
/* host_warm_recover.c: QMP of an adopted QEMU is ready (W_ADOPT_OLD, W_ADOPT_NEW). */
void warm_takeover_old_ready(struct host_vm *vm);
void warm_takeover_new_ready(struct host_vm *vm);

/* 0 with qemu's real path in real when a warm restart may run it (the
 * agent's allowlist, qemu_allow.h); -1 with EPERM otherwise. */
int warm_qemu_allowed(const struct host_vm *vm, const char *qemu, char *real, size_t size,
                      vcr_error_t *err);

#endif
