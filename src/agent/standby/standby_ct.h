/* One container of the standby role, driven through liblxc's C API
 * (standby_containers.c; built only with liblxc). */
#ifndef VCR_AGENT_STANDBY_CT_H
#define VCR_AGENT_STANDBY_CT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/standby/standby.h"
#include "agent/standby_migrate.h"
#include "common/err.h"

struct lxc_container;
struct standby_ct;
struct standby_archive_policy;

/* Mounts the overlay (template read-only below, a private upper and work dir:
 * nothing is copied) at DIR/rootfs and writes DIR/config.  Refuses a name
 * that is already defined. */
struct standby_ct *standby_ct_create(const char *lxcpath, const char *lib_dir,
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
/* Borrowed, for the migration code (standby_criu.c). */
struct lxc_container *standby_ct_lxc(struct standby_ct *ct);
const struct standby_ct_paths *standby_ct_paths_of(const struct standby_ct *ct);
const struct standby_ct_spec *standby_ct_spec_of(const struct standby_ct *ct);
/* "running", "stopped", "starting", "stopping", ... (liblxc's state, lower case). */
const char *standby_ct_state(struct standby_ct *ct);
/* {name, service, state, address, cpu_pct, mem_kb, privileged, isolation?}
 * (isolation: standby_parse_isolation of its init, while it runs); cpu_pct and mem_kb are
 * null while the container is not running or before a second reading.
 * now_ns: CLOCK_MONOTONIC, for the CPU delta. */
json_t *standby_ct_json(struct standby_ct *ct, bool with_load, uint64_t now_ns);
void standby_ct_free(struct standby_ct *ct);

/* A service's data (docs/data.md): lxc.mount.entry binding src (a directory
 * of the standby VM) at path inside the container, added to its saved
 * configuration unless there; then the container is (re)started at once
 * (SIGKILL, no shutdown: it serves no client yet) so that the bind is made:
 * *restarted says whether it was running. */
int standby_ct_bind_dir(struct standby_ct *ct, const char *src, const char *path, bool *restarted,
                        vcr_error_t *err);
/* Only the configuration half of standby_ct_bind_dir: the entry saved, the
 * container left as it is (a migration's restore, before CRIU runs: liblxc
 * hands CRIU the bind as an external mount, docs/migration.md). */
int standby_ct_add_bind(struct standby_ct *ct, const char *src, const char *path, vcr_error_t *err);

/* --- migration (standby_criu.c; docs/agent.md "Migration (CRIU)") --- */

struct standby_checkpoint_result {
    uint64_t bytes;   /* PHASE.tar */
    char sha256[65];  /* its SHA-256, hex */
    int64_t dump_ms;  /* c->migrate(PRE_DUMP or DUMP) */
    int64_t pack_ms;  /* tar */
    bool incremental; /* final: on top of the pre-dump (--prev-images-dir ../pre) */
};
/* pre: pre-dump into BASE/NAME/pre (it keeps running); final: dump into
 * BASE/NAME/final and stop it (on top of pre/ when that holds a pre-dump).
 * Then BASE/NAME/PHASE.tar of the images (final: and of the overlay's upper
 * dir as delta/ and the config).  A CRIU failure names CRIU's reason. */
int standby_ct_checkpoint(struct standby_ct *ct, const char *base, enum standby_phase phase,
                          struct standby_checkpoint_result *res, vcr_error_t *err);

/* --- unpacking the migration's archives (standby_unpack.c) --- */

/* tar is unpacked only once its every member is checked (standby_archive.h),
 * and only into dir, a directory this agent has just made. */
int standby_migrate_unpack(const char *dir, const char *tar,
                           const struct standby_archive_policy *policy, vcr_error_t *err);
/* BASE/NAME/pre.unpacked: where container_image_unpack leaves pre.tar's tree
 * (pre/) for the restore; p: any phase's paths of NAME. */
void standby_pre_ahead_dir(const struct standby_migrate_paths *p, char *out, size_t size);
/* container_image_unpack: BASE/NAME/pre.tar checked and unpacked into
 * standby_pre_ahead_dir, then removed (the pages need not stay twice in the
 * VM's memory); a later restore takes that tree instead of unpacking pre.tar
 * in the downtime.  *unpack_ms: what it took. */
int standby_ct_unpack_pre(const char *base, const char *name, int64_t *unpack_ms, vcr_error_t *err);

struct standby_restore_result {
    int64_t unpack_ms;   /* tar -x of final.tar (and of pre.tar if still there) */
    int64_t restore_ms;  /* c->migrate(RESTORE) */
    char arp_error[256]; /* "" when the gratuitous ARP went out */
};
/* Unpacks BASE/NAME/{pre,final}.tar, creates the container as
 * standby_ct_create does but with the archive's delta as the overlay's upper
 * dir, restores it from BASE/NAME/final and announces its address with a
 * gratuitous ARP from inside its network namespace.  bind_src (or NULL): a
 * directory of this VM (a service's data, mounted) bound at bind_path in the
 * container before the restore, as it was where the container was dumped.  A
 * failed restore leaves no container behind. */
struct standby_ct *standby_ct_restore(const char *lxcpath, const char *lib_dir, const char *base,
                                      const struct standby_ct_spec *spec, const char *bind_src,
                                      const char *bind_path, struct standby_restore_result *res,
                                      vcr_error_t *err);
/* Sends one gratuitous ARP for address on ifname inside the network namespace
 * of process pid (/proc/PID/ns/net; the caller's own namespace is restored). */
int standby_send_garp(int pid, const char *ifname, const char *address, vcr_error_t *err);

#endif
