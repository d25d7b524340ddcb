/* The recovery engine (docs/recovery.md): per protected service, detect a
 * failure (VM event, host lost, probe failures), fence the primary, ready the
 * standby container, confirm its port, switch DNS, confirm as a client would.
 * Every phase is journaled (kind `recovery`) and the state of each recovery
 * lives in the `recoveries` table of the journal's SQLite file, so that a
 * restarted server finishes what a killed one started. */
#ifndef VCR_SERVER_RECOVERY_H
#define VCR_SERVER_RECOVERY_H

#include <jansson.h>
#include <stdbool.h>

#include "common/err.h"

struct event_base;
struct server_config;
struct inventory;
struct journal;
struct agents;
struct recovery;

/* How long a container order may take; the port and confirmation deadlines
 * are the server's port_timeout_ms and confirm_timeout_ms. */
#define RECOVERY_CONTAINER_ORDER_MS 120000
#define RECOVERY_KILL_ORDER_MS      5000
#define RECOVERY_VM_START_ORDER_MS  60000
/* One cron tick drives probes, waits and retries (after redis's serverCron). */
#define RECOVERY_TICK_MS 50

/* Opens the `recoveries` table in cfg->journal and reloads unfinished
 * recoveries; they resume once agents had host_timeout_ms to say hello again.
 * Everything is borrowed and must outlive the engine. */
struct recovery *recovery_new(struct event_base *base, const struct server_config *cfg,
                              struct inventory *inv, struct journal *journal, struct agents *agents,
                              vcr_error_t *err);
/* Redundant servers (docs/ha.md): the engine acts only while ha (borrowed,
 * outlives the engine) says this server leads. */
struct ha;
void recovery_set_ha(struct recovery *rc, struct ha *ha);
/* This server no longer leads: everything in flight is dropped; the shared
 * state is loaded again from etcd when it leads again. */
void recovery_ha_deposed(struct recovery *rc);
/* Before agents_free: pending order callbacks are then ignored. */
void recovery_stop(struct recovery *rc);
void recovery_free(struct recovery *rc);

/* Hooks from agents.c. */
void recovery_on_vm_event(struct recovery *rc, const char *host, const char *vm, const char *state,
                          const char *cause);
void recovery_on_host_lost(struct recovery *rc, const char *host);
/* An agent's hello was accepted: warm containers on that host are looked at
 * again at once (provision.c), whatever backoff an earlier failure set. */
void recovery_on_hello(struct recovery *rc, const char *host);

/* GET /v1/services: {"services": [...]} (docs/server.md). */
json_t *recovery_services_json(struct recovery *rc);
/* POST /v1/services/NAME/failover and /failback.  Fail with ENOENT (no such
 * service), EBUSY (a recovery or failback is running; not possible now). */
json_t *recovery_failover(struct recovery *rc, const char *name, vcr_error_t *err);
json_t *recovery_failback(struct recovery *rc, const char *name, vcr_error_t *err);
/* POST /v1/services/NAME/reset: a failed recovery that never switched DNS is
 * cleared (the service is `ok` again, its warm container provisioned again).
 * EBUSY when it is not failed, busy, or DNS points at the standby. */
json_t *recovery_reset(struct recovery *rc, const char *name, vcr_error_t *err);
/* May VM vm of host be started by an operator now?  No (EBUSY, the message
 * says why) while a service it is the primary of is served elsewhere:
 * failback starts it. */
int recovery_check_vm_start(struct recovery *rc, const char *host, const char *vm,
                            vcr_error_t *err);
/* An operator's stop of VM vm of host was sent (`vcr vm stop`): a service it is
 * the primary of, healthy and idle, is maintenance (`stopped`) from now on, not
 * once the VM reports `stopped` (the guest's service may stop answering first:
 * its failed probes are no failure).  done: the order was answered; ok: it
 * worked (else the service is watched again at once). */
void recovery_vm_stop_ordered(struct recovery *rc, const char *host, const char *vm);
void recovery_vm_stop_done(struct recovery *rc, const char *host, const char *vm, bool ok);

#endif
