/* Standby modes (docs/recovery.md, "Standby modes"): what stands by for a
 * service and how a recovery makes it ready, one ops struct per mode, found
 * by the name `standby.mode` gives (crun's handler tables, keepalived's
 * check_api.h; our check.h).  The engine (recovery.c, failback.c,
 * recovery_api.c, provision.c, service_data.c) never names a mode: it asks
 * the service's ops.
 *
 *   warm     a container that runs in a standby VM before any failure
 *            (standby_warm.c; provision.c keeps it running)
 *   cold     a container created and started on failure (standby_cold.c)
 *   warm-vm  a VM of a host agent that runs the service already
 *            (standby_warm_vm.c)
 *   cold-vm  a VM of a host agent booted on failure (standby_cold_vm.c)
 *
 * A new mode is a standby_NAME.c defining standby_NAME_ops and one row of
 * modes[] in standby_modes.c (docs/conventions.md). */
#ifndef VCR_SERVER_RECOVERY_STANDBY_MODE_H
#define VCR_SERVER_RECOVERY_STANDBY_MODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct svc;

struct standby_mode_ops {
    const char *name; /* the value of `standby.mode` */
    /* What stands by, as the services' JSON says it (standby.kind) and the
     * messages name it: "container" or "vm". */
    const char *kind;
    /* The standby is a container in a standby VM: standby.container, its
     * template or image, fallback_host, data, address takeover, migration. */
    bool container;
    /* It runs before any failure: provision.c keeps the container running
     * and the service's data is copied to it periodically (data.interval_s). */
    bool provisioned;
    /* A reloaded recovery goes on without waiting for the standby host's
     * hello (the standby was ready before the failure). */
    bool resume_without_standby_host;
    /* The step after fencing: makes the standby ready to serve.  It ends,
     * from the loop, by recovery_phase_done(s, PH_CONTAINER_READY, ...) or
     * recovery_fail(s, ...).  Safe to repeat (a restarted server does). */
    void (*ready)(struct svc *s);
    /* Each cron tick while the ready step (STEP_CONTAINER) waits; NULL: none. */
    void (*tick)(struct svc *s, int64_t now);
    /* A failed recovery is cleared after its standby was readied: undo what
     * ready started, fire and forget.  NULL: nothing to undo. */
    void (*release)(struct svc *s);
    /* Failback, once the name points at the primary again: stop what ready
     * started; it ends by failback_finish(s, phase, error), from the loop.
     * NULL: nothing to stop (failback is done at once). */
    void (*failback)(struct svc *s);
};

extern const struct standby_mode_ops standby_warm_ops;
extern const struct standby_mode_ops standby_cold_ops;
extern const struct standby_mode_ops standby_warm_vm_ops;
extern const struct standby_mode_ops standby_cold_vm_ops;

/* standby_modes.c: the mode called name, or NULL. */
const struct standby_mode_ops *standby_mode_find(const char *name);
/* "warm, cold, ..." into buf, for the configuration's messages: the modes
 * of one kind of standby, or all. */
enum standby_modes_which { STANDBY_MODES_ALL, STANDBY_MODES_CONTAINER, STANDBY_MODES_VM };
const char *standby_modes_allowed(char *buf, size_t size, enum standby_modes_which which);

#endif
