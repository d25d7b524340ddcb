/* Internals of host_vm shared by host_vm.c and host_warm_restart.c. */
#ifndef VCR_AGENT_HOST_VM_PRIV_H
#define VCR_AGENT_HOST_VM_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/host/host_sampler.h"
#include "agent/host/host_vm.h"
#include "agent/proc.h"
#include "qmp/qmp.h"

struct host_vm_warm;
struct standby_job;

struct host_vm {
    struct host_vm_env env;
    const struct vcr_vm_spec *spec;
    struct vm_paths paths;
    struct vm_sm sm;
    host_vm_changed_cb cb;
    void *opaque;

    pid_t pid;
    struct proc_watch *proc;
    struct qmp_client *qmp;
    bool qmp_ready;
    struct event *qmp_reconnect;
    int64_t started_ms;      /* monotonic: the QMP deadline counts from here */
    char start_failure[256]; /* why a start is being abandoned, for the cause */

    bool exit_pending; /* pidfd readable, waiting for QMP to drain */
    int64_t exit_seen_ms;
    struct event *exit_drain;

    int stop_step; /* 0: none, 1: powerdown sent, 2: quit or SIGTERM sent */
    struct event *stop_timer;

    struct cpu_meter meter;

    char *qemu_path;           /* binary of the running QEMU (NULL: none known) */
    struct host_vm_warm *warm; /* a warm restart under way, or NULL */
    /* Data volumes (host_volume.c), or NULL. */
    struct host_volumes *volumes;
    /* Copies of its volumes for a service's data (host_data.c), or NULL. */
    struct host_data *data;
    /* Its disks being prepared before QEMU starts (host_vm_prep.c), or NULL. */
    struct standby_job *prep;
    char prep_why[256];
    int64_t prep_started_ms;
    pid_t prep_parent; /* the agent, for the child to check it is still there */
};

/* host_vm.c */
void host_vm_changed(struct host_vm *vm, int64_t ts_ms);
/* Spawns QEMU (qemu: its binary; incoming: with -incoming defer), watches it
 * and connects QMP, without a state change: the warm restart drives those. */
int host_vm_spawn(struct host_vm *vm, const char *qemu, bool incoming, vcr_error_t *err);
void host_vm_set_qemu_path(struct host_vm *vm, const char *path);
/* The new QEMU of a warm restart, started and watched by host_warm_handover.c
 * beside the old one, becomes the VM's QEMU (the old one is gone): its watch
 * and QMP client (ready) report to host_vm.c from now on. */
void host_vm_take_qemu(struct host_vm *vm, struct proc_watch *w, struct qmp_client *q,
                       const char *qemu);
/* Appends "--- vcr-agent: starting VM ..." and argv to NAME.log. */
void host_vm_log_header(const struct host_vm *vm, char **argv);
/* The pid in a pid file, or 0. */
int host_vm_read_pid(const char *path);
/* Whether pid is a live QEMU of this VM (its command line has our QMP option). */
bool host_vm_pid_is_ours(const struct host_vm *vm, pid_t pid);
/* The pid of a live QEMU of this VM left by an earlier agent (its pid file,
 * checked by its command line), or 0; *incoming (may be NULL): it was started
 * with -incoming, i.e. it is the new QEMU of a warm restart. */
pid_t host_vm_find_qemu(const struct host_vm *vm, bool *incoming);
/* Watches and supervises that QEMU; reports `starting`, or `restarting` with why. */
bool host_vm_adopt_pid(struct host_vm *vm, pid_t pid, const char *why, bool restarting);
/* The last line QEMU wrote to its log ("" if it was our own header). */
void host_vm_log_last_line(const char *path, char *out, size_t size);

/* The second half of host_vm_start, once the disks are ready: the RAM file,
 * then QEMU spawned and supervised (`starting`).  -1 with the VM `failed`. */
int host_vm_launch(struct host_vm *vm, const char *why, vcr_error_t *err);

/* host_vm_prep.c: a disk image or volumes to make before QEMU starts. */
bool host_vm_needs_prep(const struct host_vm *vm);
/* Makes them in a child (the VM reports `starting`, "preparing its disks"),
 * then host_vm_launch; a failure makes the VM `failed` with its cause. */
int host_vm_prep_start(struct host_vm *vm, const char *why, vcr_error_t *err);
/* A stop or kill on order, or the agent leaving, while they are made: the
 * child is killed, QEMU never starts, the VM is `stopped` with cause. */
void host_vm_prep_cancel(struct host_vm *vm, const char *cause);
/* Kills the child (the agent exits); the next start makes the disks again. */
void host_vm_prep_free(struct host_vm *vm);

/* host_warm_restart.c, host_warm_handover.c: called by host_vm.c while vm->warm is set. */
void host_vm_warm_qmp_ready(struct host_vm *vm);
void host_vm_warm_exited(struct host_vm *vm, bool have_status, int wstatus);
/* A QMP event of the VM's QEMU (the old one while the restart goes on). */
void host_vm_warm_qmp_event(struct host_vm *vm, const char *name, json_t *data);
/* kill on order during a warm restart: abandon it (no reply callback is lost). */
void host_vm_warm_abort(struct host_vm *vm, const char *why);
void host_vm_warm_free(struct host_vm_warm *w);

#endif
