/* One container of the standby role, driven through liblxc's C API
 * (standby_containers.c; built only with liblxc). */
#ifndef VCR_AGENT_STANDBY_CT_H
#define VCR_AGENT_STANDBY_CT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/standby.h"
#include "common/err.h"

struct standby_ct;

/* Mounts the overlay (template read-only below, a private upper and work dir:
 * nothing is copied) at DIR/rootfs and writes DIR/config.  Refuses a name
 * that is already defined. */
struct standby_ct *standby_ct_create(const char *lxcpath, const char *templates_dir,
                                     const struct standby_ct_spec *spec, vcr_error_t *err);
/* A container found defined in lxcpath at agent start (it outlived an
 * agent); its spec is read back from its configuration. */
struct standby_ct *standby_ct_adopt(const char *lxcpath, const char *name, vcr_error_t *err);
/* lxc-start semantics (lxc.init.cmd, daemonized): returns once it runs. */
int standby_ct_start(struct standby_ct *ct, vcr_error_t *err);
/* shutdown (SIGPWR, up to timeout_s), then stop (SIGKILL) if still running.
 * Stopping a stopped container succeeds. */
int standby_ct_stop(struct standby_ct *ct, int timeout_s, vcr_error_t *err);
/* Stops it if needed, unmounts the overlay and destroys the container (its
 * directory, with the overlay's upper dir, is removed). */
int standby_ct_destroy(struct standby_ct *ct, vcr_error_t *err);

const char *standby_ct_name(const struct standby_ct *ct);
/* "running", "stopped", "starting", "stopping", ... (liblxc's state, lower case). */
const char *standby_ct_state(struct standby_ct *ct);
/* {name, service, state, address, cpu_pct, mem_kb}; cpu_pct and mem_kb are
 * null while the container is not running or before a second reading.
 * now_ns: CLOCK_MONOTONIC, for the CPU delta. */
json_t *standby_ct_json(struct standby_ct *ct, bool with_load, uint64_t now_ns);
void standby_ct_free(struct standby_ct *ct);

#endif
