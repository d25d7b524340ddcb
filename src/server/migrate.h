/* Live migration of a container between standby VMs (docs/migration.md):
 * CRIU through liblxc on the agents, images carried through the server.
 *
 *   pre-dump on the source (it keeps running) -> copy pre.tar to the target
 *   -> final dump (the source container stops: downtime begins) -> copy
 *   final.tar -> restore on the target -> its port answers (downtime ends)
 *   -> destroy the source -> clean up both.
 *
 * The container keeps its name, address and MAC (standby VMs bridge their
 * containers onto the same LAN; the target announces it by gratuitous ARP),
 * so a service's DNS name needs no change.  A failure after the final dump
 * starts the container again (cold) on the source.  One migration at a time
 * per container; every phase is journaled (kind `migration`). */
#ifndef VCR_SERVER_MIGRATE_H
#define VCR_SERVER_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct server_config;
struct inventory;
struct journal;
struct agents;
struct migrator;

/* Orders' deadlines. */
#define MIGRATE_DUMP_ORDER_MS  120000
#define MIGRATE_CHUNK_ORDER_MS 30000
#define MIGRATE_PORT_MS        60000
/* Bytes of an image per order: base64 of it fits a frame (PROTO_MAX_FRAME). */
#define MIGRATE_CHUNK_BYTES 131072
/* A service's data carried along: room left over what its copy needs on each
 * side (the filesystem's own metadata, the target's taken.json). */
#define MIGRATE_DATA_MARGIN_BYTES (16LL << 20)

/* The result (borrowed for the call): {"ok", "container", "from", "to", "error"?,
 * "total_ms", "downtime_ms", "predump": bool, "pre_bytes", "final_bytes",
 * "phases": [{"phase", "ms"}], "rolled_back"?, "data": null | {"path", "bytes",
 * "raw_bytes", "alloc_bytes"} (the service's data volume, when it moved too)}. */
typedef void (*migrate_done_cb)(json_t *result, void *opaque);

struct migrator *migrator_new(struct event_base *base, const struct server_config *cfg,
                              struct inventory *inv, struct journal *journal, struct agents *agents,
                              vcr_error_t *err);
/* Redundant servers (docs/ha.md "Migrations"): steps recorded in etcd, a
 * predecessor's migrations ended on taking the lead.  ha: NULL, or the
 * server's election (borrowed). */
struct ha;
void migrator_set_ha(struct migrator *m, struct ha *ha);
/* Before agents_free: callbacks of orders still pending are then ignored. */
void migrator_stop(struct migrator *m);
void migrator_free(struct migrator *m);

/* Starts moving container name from standby host src to standby host dst.
 * Fails at once (nothing done) with EINVAL (a bad argument: which, why),
 * ENOENT (no such standby host or container), EAGAIN (a host is not connected,
 * the container does not run) or EBUSY (it is being migrated).  done runs once
 * later, from the loop; why says who asked ("order", "policy: ...").  precopy
 * false: no pre-dump, one full dump while the container is stopped (the
 * baseline bench/migration.py compares with). */
int migrator_start(struct migrator *m, const char *src, const char *name, const char *dst,
                   const char *why, bool precopy, migrate_done_cb done, void *opaque,
                   vcr_error_t *err);
/* The same with every option. */
struct migrate_options {
    bool precopy;
    /* The files through the server in chunks even when both agents have the
     * stream (docs/migration.md "The stream"): the benchmark's baseline. */
    bool copy_server;
};
int migrator_start_with(struct migrator *m, const char *src, const char *name, const char *dst,
                        const char *why, const struct migrate_options *o, migrate_done_cb done,
                        void *opaque, vcr_error_t *err);

/* The policy (server config `migration`): after each sample of a standby
 * host, one at or above migration.cpu_pct for migration.samples samples in a
 * row has its busiest running container moved to the least busy connected
 * target; a target VM that is down is started (vm_start to its host agent)
 * and used once its standby agent says hello. */
void migrator_on_sample(struct migrator *m, const char *host);

/* Migrations under way: [{"container", "from", "to", "phase", "elapsed_ms"}]. */
json_t *migrator_status_json(struct migrator *m);

#endif
