/* Inside the migrator: shared by migrate.c (the mechanism: one migration's
 * phases) and migrate_policy.c (when to move which container where). */
#ifndef VCR_SERVER_MIGRATE_PRIV_H
#define VCR_SERVER_MIGRATE_PRIV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/agents.h"
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

struct migrator {
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

#endif
