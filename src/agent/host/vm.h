/* What a host agent knows about one VM without touching a process: the QEMU
 * command line for a spec, the files it uses, and the state machine that
 * turns QMP events and the process exit into the states of docs/protocol.md.
 * Pure functions, so the unit tests drive them with made-up inputs. */
#ifndef VCR_AGENT_VM_H
#define VCR_AGENT_VM_H

#include <jansson.h>
#include <stdbool.h>

#include "common/err.h"
#include "proto/proto_state.h"
#include "config/vm_spec.h"

/* The wire's states (proto/proto_state.h), by the agent's names. */
enum vm_state {
    VM_STATE_STARTING = PROTO_VM_STARTING,
    VM_STATE_RUNNING = PROTO_VM_RUNNING,
    VM_STATE_PAUSED = PROTO_VM_PAUSED,
    VM_STATE_SHUTDOWN = PROTO_VM_SHUTDOWN, /* the guest powered itself off */
    VM_STATE_STOPPED = PROTO_VM_STOPPED,   /* stopped or killed on order, or never started */
    VM_STATE_CRASHED = PROTO_VM_CRASHED,   /* QEMU died without a guest shutdown */
    VM_STATE_PANICKED = PROTO_VM_PANICKED, /* QMP GUEST_PANICKED */
    VM_STATE_FAILED = PROTO_VM_FAILED,     /* could not be started */
    /* Warm restart under way (docs/warm-restart.md): the old QEMU's exit is
     * expected and is not a crash; ends in `running`, or in a cold boot. */
    VM_STATE_RESTARTING = PROTO_VM_RESTARTING,
    /* Not seen (the libvirt role while libvirtd is unreachable): not a failure. */
    VM_STATE_UNKNOWN = PROTO_VM_UNKNOWN,
};

const char *vm_state_name(enum vm_state s);
/* Whether a QEMU process may exist in this state. */
bool vm_state_is_live(enum vm_state s);

/* Files of one VM.  The RAM lives in the agent's ram_dir (tmpfs or hugetlbfs,
 * ram_dir.h) so that a later warm restart can hand it to a new QEMU;
 * everything else is in the agent's state_dir (warm-cache volumes are their
 * images, host_volume.h). */
struct vm_paths {
    char *ram;      /* RAM_DIR/vcr-HOST-NAME-HASH.ram (HASH: of the state directory) */
    char *shm_base; /* /dev/shm/vcr-HOST-NAME-HASH: where earlier agents kept volumes */
    char *qmp;      /* STATE_DIR/NAME.qmp */
    char *serial;   /* STATE_DIR/NAME.serial */
    char *log;      /* STATE_DIR/NAME.log: QEMU's stdout and stderr */
    char *pid;      /* STATE_DIR/NAME.pid: QEMU's -pidfile */
    char *qemu_dir; /* VM_QEMU_RUN_ROOT/HOST-HASH: the agent's directory for QEMU's user */
    char *mig;      /* QEMU_DIR/NAME.mig: the socket the new QEMU of a warm restart
                     * listens on for the old one's device state (bound after
                     * -runas, so in a directory of QEMU's user) */
    /* The device state as a file: only left by agents of earlier versions,
     * whose warm restart went through it (taken over at start). */
    char *state;     /* STATE_DIR/NAME.state */
    char *state_tmp; /* STATE_DIR/NAME.state.tmp */
    char *state_sum; /* STATE_DIR/NAME.state.sha256: its checksum */
    char *journal;   /* STATE_DIR/NAME.warm: the warm restart under way (warm_state.h) */
    /* During a warm restart the new QEMU takes NAME.qmp and NAME.pid (the
     * paths on every QEMU's command line); the old one's are moved here. */
    char *old_qmp; /* STATE_DIR/NAME.old.qmp */
    char *old_pid; /* STATE_DIR/NAME.old.pid */
    /* Disk-image VMs (host_disk.h): the VM's own qcow2 overlay over the base,
     * kept when the VM ends (its disk, and evidence after a failure), and the
     * cloud-init NoCloud seed. */
    char *disk; /* STATE_DIR/NAME.qcow2 */
    char *seed; /* STATE_DIR/NAME.seed.iso */
};

/* tmpfs, where the RAM files live unless ram_dir says otherwise (and where
 * agents before the image-backed volumes kept their memory files): they
 * outlive QEMU but not the host. */
#define VM_SHM_DIR "/dev/shm"

/* Where QEMU writes once it runs as `qemu_user`: the warm restart's
 * migration sockets, in VM_QEMU_RUN_ROOT/HOST-HASH (HASH: of the state
 * directory), 0700 and that user's; the root 0755, root's.  Not under
 * state_dir: QEMU's user could not reach it through the agent's directories
 * (state_dir is 0750, a test's temporary directory 0700). */
#define VM_QEMU_RUN_ROOT "/run/vcr-qemu"

/* The HASH in a RAM file's name: FNV-1a of the agent's state directory. */
uint32_t vm_state_dir_hash(const char *state_dir);

/* Removes the RAM files in ram_dir of this agent (host, state_dir) whose VM is not
 * among configured, unless a live QEMU of that VM still has it (its pid file in
 * state_dir).  Returns how many were removed. */
int vm_remove_orphan_ram(const char *ram_dir, const char *state_dir, const char *host,
                         const char *const *configured, size_t n_configured);

/* ram_dir: where the RAM file goes (the agent's `ram_dir`, VM_SHM_DIR by default). */
int vm_paths_init(struct vm_paths *p, const char *ram_dir, const char *state_dir, const char *host,
                  const char *name, vcr_error_t *err);
void vm_paths_clear(struct vm_paths *p);

/* accel: "kvm" or "tcg". */
struct vm_launch {
    const char *qemu;
    const char *accel;
    const struct vcr_vm_spec *spec;
    const struct vm_paths *paths;
    bool incoming; /* append `-incoming defer` (warm restart) */
    /* NULL: QEMU stays root; else `-runas` this user (qemu_user). */
    const char *runas;
    /* > 2: the tap is this descriptor, inherited (`-netdev tap,fd=N`): the
     * old QEMU's, while it still holds the tap (warm restart); otherwise
     * QEMU opens the spec's tap by name. */
    int tap_fd;
};

/* The -qmp argument, "unix:PATH,server=on,wait=off": also how an earlier
 * agent's QEMU of this VM is recognised in /proc/PID/cmdline. */
char *vm_qmp_option(const struct vm_paths *p);
/* NULL-terminated argv (argv[0] = qemu); free with vm_argv_free. */
char **vm_qemu_argv(const struct vm_launch *l, vcr_error_t *err);
void vm_argv_free(char **argv);

/* The per-process state machine.  Every input returns true when a vm_event
 * must be reported (the state changed, or a notable event such as RESET). */
#define VM_CAUSE_MAX 512

struct vm_sm {
    enum vm_state state;
    char cause[VM_CAUSE_MAX];
    bool guest_shutdown;      /* QMP SHUTDOWN with guest:true seen for this process */
    char shutdown_reason[64]; /* QMP SHUTDOWN "reason" */
    bool stop_ordered;        /* vm_stop / vm_kill / agent exit asked for it */
    /* Guest boots seen by this agent: a QEMU started or adopted, or a RESET
     * (reboot) inside it.  Reported as `boots` so that the server opens the
     * primary's boot grace at every (re)start, by anyone (docs/protocol.md). */
    uint32_t boots;
};

void vm_sm_init(struct vm_sm *sm, const char *cause);
/* Its disks are being made before a QEMU is spawned: `starting`, no boot yet. */
bool vm_sm_preparing(struct vm_sm *sm, const char *cause);
/* A start given up on order before any QEMU was spawned: `stopped`. */
bool vm_sm_unstarted(struct vm_sm *sm, const char *cause);
/* A new QEMU process was spawned (or found running and adopted). */
bool vm_sm_starting(struct vm_sm *sm, const char *cause);
/* QMP is ready; status is query-status's "status" ("running", "paused", ...). */
bool vm_sm_qmp_status(struct vm_sm *sm, const char *status);
/* A QMP event; data may be NULL. */
bool vm_sm_qmp_event(struct vm_sm *sm, const char *name, json_t *data);
void vm_sm_stop_ordered(struct vm_sm *sm);
/* The process ended.  have_status: wstatus is valid (it was our child);
 * detail (may be NULL) is appended to the cause of a failed start. */
bool vm_sm_exited(struct vm_sm *sm, bool have_status, int wstatus, const char *detail);
/* An earlier QEMU of this VM ended while no agent watched it: crashed. */
bool vm_sm_ended_unobserved(struct vm_sm *sm, const char *cause);
/* Start failed before or without a process exit (spawn error, no QMP). */
bool vm_sm_failed(struct vm_sm *sm, const char *cause);
/* A warm restart begins: from now on QMP events (STOP, SHUTDOWN, RESUME) and
 * the exit of the old QEMU are expected and change nothing. */
bool vm_sm_restarting(struct vm_sm *sm, const char *cause);
/* The warm restart ended with the guest running in the new QEMU. */
bool vm_sm_restarted(struct vm_sm *sm, const char *cause);

/* "qemu killed by signal 9", "qemu exited with status 1", or, for a process
 * that was not our child, "qemu exited (status unknown: not our child)". */
void vm_exit_cause(bool have_status, int wstatus, char *out, size_t size);

#endif
