/* Choosing the accelerator for a host's VMs.  `accel: auto` cannot trust
 * /dev/kvm: on some machines it opens but guests hang in early boot
 * (DESIGN.md, LAB-NOTES.md).  So auto boots a probe guest under KVM and waits,
 * event-driven and with a deadline, for it to print VCR-PROBE-OK on its serial
 * port; TCG otherwise.  The verdict is cached in STATE_DIR/accel.json, keyed by
 * the QEMU binary, the probe kernel and initrd (paths and mtimes) and the host
 * kernel release, so later starts decide at once. */
#ifndef VCR_AGENT_ACCEL_H
#define VCR_AGENT_ACCEL_H

#include "common/err.h"
#include "config/agent_config.h"

#define ACCEL_PROBE_MARKER "VCR-PROBE-OK"

struct event_base;
struct accel_probe;

struct accel_choice {
    char accel[8];    /* "kvm" or "tcg" */
    char reason[512]; /* why, for the log */
};

typedef void (*accel_done_cb)(const struct accel_choice *choice, void *opaque);

/* Decides for cfg and calls cb once, always from the loop (also when no probe
 * is needed).  The returned handle cancels a pending decision when freed. */
struct accel_probe *accel_resolve(struct event_base *base, const struct vcr_agent_config *cfg,
                                  accel_done_cb cb, void *opaque, vcr_error_t *err);
void accel_probe_free(struct accel_probe *p);

#endif
