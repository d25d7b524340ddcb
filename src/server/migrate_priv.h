/* Inside the migrator: shared by migrate.c (the mechanism: one migration's
 * phases), migrate_data.c (the service's data carried along) and
 * migrate_policy.c (when to move which container where). */
#ifndef VCR_SERVER_MIGRATE_PRIV_H
#define VCR_SERVER_MIGRATE_PRIV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/agents.h"
#include "server/chunk_copy.h"
#include "server/migrate.h"

#define MIG_MAX 64

struct mig;

/* The policy's memory of one standby host. */
struct busy_host {
    char name[65];
    uint32_t over;         /* samples in a row at or above the threshold */
    int64_t vm_started_ms; /* as a target: when its VM was last started (monotonic) */
};

#define BUSY_MAX 64
/* A target VM started by the policy gets this long to say hello before it is
 * started again. */
#define MIGRATE_TARGET_BOOT_MS 300000

/* A container whose migration ended: still marked moving in the inventory
 * until both hosts have reported their containers since (their last reports
 * predate the end: the source may still list it stopped), or a while passed. */
struct settling {
    char name[65], src[65], dst[65];
    uint64_t src_seq, dst_seq;
    int64_t until_ms; /* monotonic */
};

#define MIGRATE_SETTLE_MS 30000

struct mig_log;
struct mig_takeover;

struct migrator {
    /* Redundant servers (migrate_ha.c): NULL without `ha:`.  The migrations'
     * steps written to etcd (one log per migration, outliving it until
     * written), the ones a predecessor left loaded, and being ended. */
    struct ha *ha;
    struct event *ha_tick;
    bool ha_loaded, ha_loading;
    int64_t ha_term;
    uint64_t ha_epoch;
    struct mig_log *logs;
    struct mig_takeover *takeovers;
    struct settling settling[MIG_MAX];
    size_t n_settling;
    struct busy_host busy[BUSY_MAX];
    size_t n_busy;
    struct event_base *base;
    const struct server_config *cfg;
    struct inventory *inv;
    struct journal *journal;
    struct agents *agents;
    bool stopping;
    struct mig *migs[MIG_MAX];
    size_t n_migs;
};

/* Unmarks the containers whose hosts have both reported since their migration
 * ended (or whose wait is over). */
void migrate_settle(struct migrator *m);
/* Reply callback of orders whose outcome only needs a log line. */
void migrate_on_ignored(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque);
/* The source or target host of a migration under way. */
bool migrate_host_busy(const struct migrator *m, const char *host);

/* --- one migration (migrate.c: the phases; migrate_data.c: the service's data) --- */

enum mig_phase {
    MP_SPACE,        /* a service's data: data_space on both (is it attached, is there room) */
    MP_PREDUMP,      /* container_checkpoint pre on the source */
    MP_COPY_PRE,     /* pre.tar, chunk by chunk */
    MP_UNPACK_PRE,   /* container_image_unpack pre on the target: the container still runs */
    MP_DUMP,         /* container_checkpoint final: the source container stops */
    MP_COPY,         /* final.tar */
    MP_DATA_EXPORT,  /* the data: data_export on the source (unmounted, packed) */
    MP_DATA_COPY,    /* its packed copy, chunk by chunk */
    MP_DATA_INSTALL, /* data_install on the target */
    MP_RESTORE,      /* container_restore on the target */
    MP_PORT,         /* waiting for the container's port at its address */
    MP_DESTROY,      /* container_destroy on the source */
    MP_CLEANUP,      /* container_migrate_cleanup on both */
    MP_ROLLBACK,     /* after a failure past the dump: container_start on the source */
    MP_DONE,
};

struct mig {
    struct migrator *m;
    enum mig_phase phase;
    char name[65], src[65], dst[65], why[200];
    char service[65], address[16], gateway[16], template[65];
    const struct image_config *ct_image; /* the container's image (in cfg), or NULL */
    int prefix;
    uint16_t port;
    /* The image being copied: its phase name, size and checksum. */
    const char *image;
    int64_t image_bytes, offset;
    char sha256[65];
    int64_t pre_bytes, final_bytes;
    bool predump, precopy;
    /* The copies (docs/migration.md "The stream"): through the server only
     * (copy: "server", the benchmark's baseline), how the last one went, and
     * the bytes and time of them all (the result's copy_mb_s). */
    bool copy_server;
    struct chunk_copy_stats copy_stats;
    int64_t copied_bytes, copied_ms;
    char copy_method[8]; /* "stream", "server", "mixed", or "" before any copy */
    bool unprivileged;   /* the source reports it `privileged: false`: restored so */
    /* The service's data volume (docs/migration.md "Data"): declared (data_path
     * set), and carried when its copy is attached to the container on the
     * source; what data_space and data_export said of it. */
    char data_path[130];
    bool carry;
    int64_t data_alloc, data_raw, data_bytes, data_taken_ms;
    char data_sha256[65];
    int cleanups; /* cleanup replies still awaited */
    int64_t t0, t_phase, t_down;
    struct check *check;
    struct event *retry;
    int64_t port_deadline;
    json_t *phases;
    char error[600];
    bool rolled_back;
    struct mig_log *log;            /* redundant servers: its steps on the way to etcd */
    void (*ha_then)(struct mig *g); /* what waits for them (mig_ha_then) */
    migrate_done_cb done;
    void *opaque;
};

/* The phase ended well: record its time, journal it, enter the next one. */
void mig_phase_done(struct mig *g, enum mig_phase next, json_t *extra);
/* The migration failed (the first reason is kept): rolled back past the
 * final dump, else finished. */
void mig_fail(struct mig *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An order of the migration, its reply to cb (NULL: only logged). */
void mig_order(struct mig *g, const char *host, const char *action, json_t *members,
               int64_t timeout_ms, agents_order_reply_cb cb);
/* A copy phase (copy_pre, copy, data_copy) ended well: mig_phase_done with
 * its bytes, method and MB/s (journal and the result's phases), counted into
 * the result's copy_mb_s and copy_method. */
void mig_copy_phase_done(struct mig *g, enum mig_phase next, int64_t bytes, int64_t ms);
/* Common handling of a reply: false when the migration must not go on. */
bool mig_reply_ok(struct mig *g, enum mig_phase phase, const char *what, enum order_outcome outcome,
                  const char *message);
/* Into the dumps: a pre-dump first when pre-copy is on. */
void mig_start_copy(struct mig *g);
void mig_restore(struct mig *g);
/* The service's data (migrate_data.c): data_space's reply on the source
 * decides whether it is carried; data_export after the final image. */
void mig_on_source_space(enum order_outcome outcome, const char *message, json_t *reply,
                         void *opaque);
void mig_data_export(struct mig *g);

/* --- redundant servers (migrate_ha.c, docs/ha.md "Migrations") --- */

/* Records step `phase` of g in etcd (one record written once, and the
 * migration's state, in one txn valid only under this leader's term), after
 * the steps before it; without `ha:` nothing. */
void mig_ha_step(struct mig *g, const char *phase);
/* Runs then(g) once every step recorded so far is in etcd (at once without
 * `ha:`): nothing that cannot be undone is ordered before etcd says how far
 * the migration got. */
void mig_ha_then(struct mig *g, void (*then)(struct mig *g));
/* g ends (finish): its last step goes on without it. */
void mig_ha_detach(struct mig *g);
/* Whether this server may migrate: true without `ha:`; with it, only a leader
 * that has loaded its predecessor's migrations (why says otherwise). */
bool migrate_ha_ready(struct migrator *m, const char *name, char *why, size_t size);
/* A server that no longer leads: its migrations are its successor's. */
bool migrate_ha_deposed(const struct migrator *m);
void migrate_ha_free(struct migrator *m);
json_t *migrate_ha_status(struct migrator *m, json_t *list);

#endif
