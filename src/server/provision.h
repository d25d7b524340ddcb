/* Warm standby containers provisioned from the services configuration
 * (docs/recovery.md, "Provisioning"): while the primary serves a warm
 * service, its container is created (and started) on the standby host if
 * that host's reports do not list it, or started if they list it stopped.
 * Part of the recovery engine: driven from its cron tick, one order in flight
 * per container, failures retried with a doubling backoff. */
#ifndef VCR_SERVER_PROVISION_H
#define VCR_SERVER_PROVISION_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define PROVISION_RETRY_FIRST_MS 5000
#define PROVISION_RETRY_MAX_MS   60000

struct svc;
struct recovery;

/* Per service; zeroed means nothing done yet. */
struct provision {
    const char *action;  /* the order in flight, NULL if none */
    char host[65];       /* its standby host (a migration may have moved the container) */
    int64_t sent_mono;   /* when it was sent */
    int64_t retry_at;    /* monotonic: no new order before */
    uint32_t backoff_ms; /* the wait after the next failure; 0: the first one */
    /* An order succeeded: act again only on a report newer than its reply
     * (the inventory's containers_seq then), not on the stale list. */
    bool awaiting_report;
    uint64_t report_seq;
    char last_error[300]; /* of the last failed order, "" after a success */
};

/* From the engine's tick, for every service. */
void provision_tick(struct svc *s, int64_t now);
/* A hello from host: its warm containers are looked at again without waiting
 * for a backoff. */
void provision_on_hello(struct recovery *rc, const char *host);
/* The `standby.container_state` of GET /v1/services: the reported state
 * (`running`, `stopped`, ...), `absent`, `provisioning` (an order is in flight,
 * or it succeeded and the host has not reported since), or `unknown` (the
 * standby host is lost or has not reported containers). */
const char *provision_container_state(struct svc *s);
/* provision_container_state would say `running` (decided on the typed state). */
bool provision_container_running(struct svc *s);
/* The last failed provisioning order's error, NULL if none. */
const char *provision_last_error(struct svc *s);

#endif
