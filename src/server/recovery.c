/* The recovery state machine (docs/recovery.md).
 *
 * Per service, a recovery walks detected -> fenced -> container_ready ->
 * port_open -> dns_updated -> client_confirmed; each phase is journaled (kind
 * `recovery`) and saved in the `recoveries` table before the next one starts,
 * so a restarted server resumes after the last phase it saved.  Every step is
 * safe to repeat (vm_kill of a dead VM, container_create of an existing one,
 * the same DNS UPDATE), which is what a server killed in the middle of one
 * does.  One cron tick drives probes, waits and retries (redis's serverCron). */
#include "server/recovery.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "dns/dns_update.h"
#include "proto/proto_code.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/recovery_priv.h"
#include "server/resolve.h"
#include "server/server_config.h"

#define JOURNAL_RECOVERY "recovery"
#define JOURNAL_FENCED   "fenced"
#define RETRY_MS         200
#define RESOLVE_MS       1000

static const char *const state_names[] = {
    [SVC_OK] = "ok",
    [SVC_DEGRADED] = "degraded",
    [SVC_RECOVERING] = "recovering",
    [SVC_RECOVERED] = "recovered",
    [SVC_FAILED] = "failed",
    [SVC_STOPPED] = "stopped",
};
#define N_STATES (sizeof(state_names) / sizeof(state_names[0]))

static const char *const phase_names[] = {
    [PH_NONE] = "none",
    [PH_DETECTED] = "detected",
    [PH_FENCED] = "fenced",
    [PH_CONTAINER_READY] = "container_ready",
    [PH_PORT_OPEN] = "port_open",
    [PH_DNS_UPDATED] = "dns_updated",
    [PH_CLIENT_CONFIRMED] = "client_confirmed",
};

static int parse_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

static void advance(struct svc *s);
static void clear_failed(struct svc *s, const char *why);

/* --- the table --- */

static int db_exec(sqlite3 *db, const char *sql, vcr_error_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        vcr_error_make(err, EIO, "recoveries table: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* A recovery state that cannot be saved is not acted on: what a restarted
 * server reloads must never be behind what was done (docs/recovery.md). */
#define SAVE_RETRY_MS 1000

bool recovery_save(struct svc *s)
{
    s->updated_ms = vcr_wall_ms();
    sqlite3_stmt *st = NULL;
    cleanup_free char *timeline = s->timeline ? json_dumps(s->timeline, JSON_COMPACT) : NULL;
    int rc = sqlite3_prepare_v2(
        s->rc->db,
        "INSERT OR REPLACE INTO recoveries (service, state, phase, mode, cause, error, "
        "started_ms, updated_ms, on_standby, timeline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->cfg->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, state_names[s->state], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, phase_names[s->phase], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, standby_mode_name(s->cfg->standby.mode), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, s->cause, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, s->error, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 7, s->started_ms);
        sqlite3_bind_int64(st, 8, s->updated_ms);
        sqlite3_bind_int(st, 9, s->on_standby);
        if (timeline)
            sqlite3_bind_text(st, 10, timeline, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 10);
        rc = sqlite3_step(st);
    }
    const char *why = rc == SQLITE_DONE ? NULL : sqlite3_errmsg(s->rc->db);
    sqlite3_finalize(st);
    if (why == NULL) {
        if (s->unsaved)
            log_info("service %s: its recovery state is saved again", s->cfg->name);
        s->unsaved = false;
        return true;
    }
    if (!s->unsaved)
        log_error("service %s: cannot save its recovery state (%s): holding at phase %s, "
                  "retrying every %d ms",
                  s->cfg->name, why, phase_names[s->phase], SAVE_RETRY_MS);
    s->unsaved = true;
    s->save_retry_at = vcr_mono_ms() + SAVE_RETRY_MS;
    return false;
}

static void load(struct svc *s)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->rc->db,
                           "SELECT state, phase, cause, error, started_ms, on_standby, timeline "
                           "FROM recoveries WHERE service = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, s->cfg->name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        int state = parse_name(state_names, N_STATES, (const char *)sqlite3_column_text(st, 0));
        int phase = parse_name(phase_names, 7, (const char *)sqlite3_column_text(st, 1));
        const char *cause = (const char *)sqlite3_column_text(st, 2);
        const char *error = (const char *)sqlite3_column_text(st, 3);
        const char *timeline = (const char *)sqlite3_column_text(st, 6);
        s->state = state >= 0 ? (enum svc_state)state : SVC_OK;
        s->phase = phase >= 0 ? (enum rec_phase)phase : PH_NONE;
        snprintf(s->cause, sizeof(s->cause), "%s", cause ? cause : "");
        snprintf(s->error, sizeof(s->error), "%s", error ? error : "");
        s->started_ms = sqlite3_column_int64(st, 4);
        s->on_standby = sqlite3_column_int(st, 5) != 0;
        json_decref(s->timeline);
        s->timeline = timeline ? json_loads(timeline, 0, NULL) : NULL;
        if (!json_is_array(s->timeline)) {
            json_decref(s->timeline);
            s->timeline = json_array();
        }
        /* Both are read from the agents' reports again. */
        if (s->state == SVC_DEGRADED || s->state == SVC_STOPPED)
            s->state = SVC_OK;
    }
    sqlite3_finalize(st);
}

/* --- journal --- */

void recovery_journal(struct svc *s, const char *kind, json_t *detail)
{
    journal_note(s->rc->journal, 0, s->cfg->primary.host, s->cfg->primary.vm, kind, detail);
}

static int64_t elapsed(const struct svc *s)
{
    return vcr_mono_ms() - s->started_mono;
}

/* Journals one phase (with extra members, stolen, may be NULL) and adds it to the timeline. */
static void record(struct svc *s, const char *phase, json_t *extra)
{
    int64_t now = vcr_wall_ms();
    json_t *entry = json_pack("{s:s, s:I, s:I}", "phase", phase, "ts_ms", (json_int_t)now,
                              "elapsed_ms", (json_int_t)elapsed(s));
    if (entry && extra)
        json_object_update(entry, extra);
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:I}", "service", s->cfg->name, "phase", phase, "mode",
                  standby_mode_name(s->cfg->standby.mode), "elapsed_ms", (json_int_t)elapsed(s));
    if (detail && extra)
        json_object_update(detail, extra);
    json_decref(extra);
    if (s->timeline == NULL)
        s->timeline = json_array();
    json_array_append_new(s->timeline, entry);
    recovery_journal(s, JOURNAL_RECOVERY, detail);
    log_info("service %s: recovery: %s after %lld ms", s->cfg->name, phase, (long long)elapsed(s));
}

static void phase_done(struct svc *s, enum rec_phase phase, json_t *extra)
{
    s->phase = phase;
    s->step = STEP_IDLE;
    record(s, phase_names[phase], extra);
    if (recovery_save(s))
        advance(s);
}

void recovery_cancel_io(struct svc *s)
{
    check_cancel(s->check);
    s->check = NULL;
    if (s->dns)
        dns_update_cancel(s->dns);
    s->dns = NULL;
    resolve_cancel(s->resolve);
    s->resolve = NULL;
}

void recovery_fail(struct svc *s, const char *fmt, ...)
{
    /* Formatted aside first: callers pass s->error (the last attempt's cause)
     * as an argument, and formatting into it would overwrite it as it is read. */
    char message[sizeof(s->error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    memcpy(s->error, message, sizeof(s->error));
    recovery_cancel_io(s);
    s->state = SVC_FAILED;
    s->step = STEP_IDLE;
    log_error("service %s: recovery FAILED after phase %s: %s (retry: vcr failover %s)",
              s->cfg->name, phase_names[s->phase], s->error, s->cfg->name);
    record(s, "failed", json_pack("{s:s, s:s}", "error", s->error, "after", phase_names[s->phase]));
    recovery_save(s);
}

bool recovery_vm_down(struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    if (vm == NULL || h == NULL || strcmp(h->name, s->cfg->primary.host) != 0)
        return false;
    switch (vm->state) {
    case INV_VM_SHUTDOWN:
    case INV_VM_STOPPED:
    case INV_VM_CRASHED:
    case INV_VM_PANICKED:
    case INV_VM_FAILED:
        return true;
    default:
        return false;
    }
}

bool recovery_primary_running(const struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    return vm && h && h->state == INV_HOST_CONNECTED &&
           strcmp(h->name, s->cfg->primary.host) == 0 && vm->state == INV_VM_RUNNING;
}

/* The standby host that holds the service's container now: a migration
 * (docs/migration.md) may have moved it off the configured one. */
const char *recovery_container_host(const struct svc *s)
{
    const struct inv_host *h =
        inventory_find_container_host(s->rc->inv, s->cfg->standby.container, s->cfg->standby.host);
    return h ? h->name : s->cfg->standby.host;
}

/* --- detection --- */

static void detect(struct svc *s, const char *cause)
{
    if (s->state != SVC_OK && s->state != SVC_DEGRADED)
        return;
    probe_stop(&s->probe);
    s->probe.failures = 0;
    s->probe.answered = false;
    s->probe.unanswered_since = 0;
    s->state = SVC_RECOVERING;
    s->phase = PH_NONE;
    s->error[0] = '\0';
    snprintf(s->cause, sizeof(s->cause), "%s", cause);
    s->started_ms = vcr_wall_ms();
    s->started_mono = vcr_mono_ms();
    json_decref(s->timeline);
    s->timeline = json_array();
    log_warn("service %s: failure detected: %s", s->cfg->name, cause);
    phase_done(s, PH_DETECTED, json_pack("{s:s}", "cause", cause));
}

void recovery_on_vm_event(struct recovery *rc, const char *host, const char *vm, const char *state,
                          const char *cause)
{
    if (rc == NULL || rc->stopping || state == NULL)
        return;
    bool failure = strcmp(state, "crashed") == 0 || strcmp(state, "panicked") == 0 ||
                   strcmp(state, "shutdown") == 0;
    if (!failure)
        return;
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (strcmp(s->cfg->primary.host, host) != 0 || strcmp(s->cfg->primary.vm, vm) != 0)
            continue;
        char why[200];
        snprintf(why, sizeof(why), "VM %s %s (%s)", vm, state, cause ? cause : "no cause");
        detect(s, why);
    }
}

void recovery_on_host_lost(struct recovery *rc, const char *host)
{
    if (rc == NULL || rc->stopping)
        return;
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (strcmp(s->cfg->primary.host, host) != 0)
            continue;
        char why[200];
        snprintf(why, sizeof(why), "host %s lost (no heartbeat)", host);
        detect(s, why);
    }
}

void recovery_on_hello(struct recovery *rc, const char *host)
{
    if (rc == NULL || rc->stopping)
        return;
    provision_on_hello(rc, host);
}

void recovery_probe_result(struct svc *s, bool ok, const char *why)
{
    if (s->state == SVC_FAILED && !s->on_standby && s->step == STEP_IDLE) {
        if (ok)
            clear_failed(s, "its primary answers again");
        else
            snprintf(s->probe.last_error, sizeof(s->probe.last_error), "%s", why ? why : "failed");
        return;
    }
    if (s->state != SVC_OK && s->state != SVC_DEGRADED)
        return;
    if (ok) {
        if (s->state == SVC_DEGRADED)
            log_info("service %s: probe passes again", s->cfg->name);
        s->probe.failures = 0;
        s->probe.answered = true;
        s->probe.unanswered_since = 0;
        s->probe.last_error[0] = '\0';
        s->state = SVC_OK;
        return;
    }
    if (!s->probe.answered) {
        /* The primary has not answered since it (re)started: it is booting,
         * for check.boot_grace_ms at most; a primary hung from its start is
         * a failure after that. */
        int64_t now = vcr_mono_ms();
        if (s->probe.unanswered_since == 0)
            s->probe.unanswered_since = now;
        uint32_t grace = s->cfg->check.boot_grace_ms;
        if (grace == 0 || now - s->probe.unanswered_since < grace) {
            snprintf(s->probe.last_error, sizeof(s->probe.last_error), "not answered yet: %s",
                     why ? why : "failed");
            return;
        }
        log_warn("service %s: the primary has not answered within boot_grace_ms %u of its "
                 "first probe: its failures count from now",
                 s->cfg->name, grace);
        s->probe.answered = true;
    }
    s->probe.failures++;
    snprintf(s->probe.last_error, sizeof(s->probe.last_error), "%s", why ? why : "failed");
    log_warn("service %s: probe %u/%u failed: %s", s->cfg->name, s->probe.failures,
             s->cfg->check.failures, s->probe.last_error);
    s->state = SVC_DEGRADED;
    /* Only while the VM runs is it the service that failed; a dead VM is the
     * host agent's to report. */
    if (s->probe.failures >= s->cfg->check.failures && recovery_primary_running(s)) {
        char cause[200];
        snprintf(cause, sizeof(cause), "service: %u consecutive %s probe failures (%.120s)",
                 s->probe.failures, check_type_name(s->cfg->check.type), s->probe.last_error);
        detect(s, cause);
    }
}

/* --- fencing (fence.c does the work) --- */

void recovery_fenced(struct svc *s, const char *how, int64_t waited_ms)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:I}", "service", s->cfg->name, "how", how, "vm",
                  s->cfg->primary.vm, "waited_ms", (json_int_t)waited_ms);
    recovery_journal(s, JOURNAL_FENCED, detail);
    /* Its agent's report that the VM is down may trail the kill's reply. */
    s->refence_at = vcr_mono_ms() + 2000;
    phase_done(s, PH_FENCED,
               json_pack("{s:s, s:I}", "how", how, "waited_ms", (json_int_t)waited_ms));
}

/* --- the container --- */

static void container_order(struct svc *s, const char *action);

static void on_container_reply(enum order_outcome outcome, const char *message, json_t *reply,
                               void *opaque)
{
    struct svc *s = opaque;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_CONTAINER)
        return;
    const char *action = s->stage ? "container_start" : "container_create";
    enum proto_code code = outcome == ORDER_REFUSED
                               ? proto_code_parse(json_string_value(json_object_get(reply, "code")))
                               : PROTO_CODE_NONE;
    /* Repeating a phase after a restart, or a provisioned container: it may exist. */
    if (code == PROTO_CODE_EXISTS && s->stage == 0) {
        s->stage = 1;
        container_order(s, "container_start");
        return;
    }
    /* Another order for it (provisioning's) is still running: ask again shortly. */
    if (code == PROTO_CODE_BUSY && vcr_mono_ms() - s->step_started < RECOVERY_CONTAINER_ORDER_MS) {
        s->retry_at = vcr_mono_ms() + RETRY_MS * 5;
        return;
    }
    if (outcome != ORDER_DONE) {
        recovery_fail(s, "%s %s on %s: %s", action, s->cfg->standby.container, s->target_host,
                      message ? message : "failed");
        return;
    }
    s->stage = 0;
    s->retry_at = 0;
    phase_done(s, PH_CONTAINER_READY,
               json_pack("{s:s, s:s, s:I}", "container", s->cfg->standby.container, "host",
                         s->target_host, "order_ms",
                         (json_int_t)(vcr_mono_ms() - s->step_started)));
}

static void container_order(struct svc *s, const char *action)
{
    const struct service_config *c = s->cfg;
    cleanup_json json_t *members =
        json_pack("{s:s, s:s, s:s, s:i, s:b}", "name", c->standby.container, "service", c->name,
                  "address", c->standby.address, "prefix", (int)c->standby.prefix, "start", 1);
    if (members && c->standby.gateway)
        json_object_set_new(members, "gateway", json_string(c->standby.gateway));
    if (members && c->standby.template)
        json_object_set_new(members, "template", json_string(c->standby.template));
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, s->target_host, action, c->standby.container, members,
                               RECOVERY_CONTAINER_ORDER_MS, on_container_reply, s, &err) < 0) {
        recovery_fail(s, "%s %s: standby %s: %s", action, c->standby.container, s->target_host,
                      vcr_error_msg(err));
        return;
    }
    s->order_pending = true;
}

/* A standby host that is connected and has reported its containers. */
static bool standby_reporting(const struct inv_host *h)
{
    return h && h->state == INV_HOST_CONNECTED && h->role && strcmp(h->role, "standby") == 0 &&
           json_is_array(h->containers);
}

/* Where the container comes from: a warm one runs already only if a connected
 * standby host says so now; otherwise it is started or created where it can be
 * (standby.host, then standby.fallback_host), at once rather than after the
 * port deadline.  *action is NULL when the warm container runs. */
static const char *container_plan(struct svc *s, const char **action, char *why, size_t why_size)
{
    const struct service_config *c = s->cfg;
    struct inv_host *h =
        inventory_find_container_host(s->rc->inv, c->standby.container, c->standby.host);
    if (h == NULL)
        h = inventory_find_host(s->rc->inv, c->standby.host);
    json_t *ct = standby_reporting(h) ? inventory_host_container(h, c->standby.container) : NULL;
    const char *state = json_string_value(json_object_get(ct, "state"));
    *action = "container_create";
    if (standby_reporting(h)) {
        if (c->standby.mode == STANDBY_WARM && state && strcmp(state, "running") == 0) {
            *action = NULL;
            return h->name;
        }
        if (ct)
            *action = "container_start";
        return h->name;
    }
    snprintf(why, why_size, "standby host %s is %s", c->standby.host,
             h ? inv_host_state_name(h->state) : "not connected");
    struct inv_host *f =
        c->standby.fallback_host ? inventory_find_host(s->rc->inv, c->standby.fallback_host) : NULL;
    if (standby_reporting(f)) {
        ct = inventory_host_container(f, c->standby.container);
        state = json_string_value(json_object_get(ct, "state"));
        if (state && strcmp(state, "running") == 0)
            *action = NULL;
        else if (ct)
            *action = "container_start";
        return f->name;
    }
    return NULL;
}

static void container_step(struct svc *s)
{
    const char *action;
    char why[200] = "";
    const char *host = container_plan(s, &action, why, sizeof(why));
    if (host == NULL) {
        recovery_fail(s, "no standby can take container %s: %s%s%s", s->cfg->standby.container, why,
                      s->cfg->standby.fallback_host ? ", and fallback host "
                                                    : "; no standby.fallback_host is configured",
                      s->cfg->standby.fallback_host ? s->cfg->standby.fallback_host : "");
        return;
    }
    snprintf(s->target_host, sizeof(s->target_host), "%s", host);
    if (action == NULL) {
        phase_done(s, PH_CONTAINER_READY,
                   json_pack("{s:s, s:s, s:s}", "container", s->cfg->standby.container, "host",
                             host, "note", "warm: runs already"));
        return;
    }
    if (why[0] || s->cfg->standby.mode == STANDBY_WARM)
        log_warn("service %s: container %s: %s on %s (%s)", s->cfg->name, s->cfg->standby.container,
                 action, host, why[0] ? why : "the warm container is not running");
    s->step = STEP_CONTAINER;
    s->step_started = vcr_mono_ms();
    s->retry_at = 0;
    s->stage = strcmp(action, "container_start") == 0 ? 1 : 0;
    container_order(s, action);
}

/* Fire and forget: a cold container left by a failed recovery is stopped; a
 * later recovery starts it again (container_create answers that it exists). */
static void on_cold_container_stopped(enum order_outcome outcome, const char *message,
                                      json_t *reply, void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (outcome != ORDER_DONE)
        log_warn("service %s: stopping container %s: %s", s->cfg->name, s->cfg->standby.container,
                 message ? message : "failed");
}

void recovery_stop_cold_container(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *name = json_pack("{s:s}", "name", s->cfg->standby.container);
    if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "container_stop",
                               s->cfg->standby.container, name, RECOVERY_CONTAINER_ORDER_MS,
                               on_cold_container_stopped, s, &err) < 0)
        log_warn("service %s: stopping container %s: %s", s->cfg->name, s->cfg->standby.container,
                 vcr_error_msg(err));
}

/* --- port, DNS, client confirmation --- */

static void on_port_checked(enum check_outcome outcome, const char *why, const char *body,
                            void *arg)
{
    bool healthy = outcome == CHECK_HEALTHY;
    struct svc *s = arg;
    (void)body;
    s->check = NULL;
    if (healthy) {
        phase_done(s, PH_PORT_OPEN,
                   json_pack("{s:s, s:i, s:I}", "address", s->cfg->standby.address, "port",
                             (int)s->cfg->primary.port, "waited_ms",
                             (json_int_t)(vcr_mono_ms() - s->step_started)));
        return;
    }
    snprintf(s->error, sizeof(s->error), "%s", why);
    s->retry_at = vcr_mono_ms() + RETRY_MS;
}

static void on_dns_done(const struct dns_update_outcome *outcome, const char *error, void *arg)
{
    struct svc *s = arg;
    s->dns = NULL;
    if (s->step == STEP_FAILBACK) {
        failback_dns_done(s, error);
        return;
    }
    if (error) {
        recovery_fail(s, "DNS update of %s -> %s: %s (%u attempts)", s->cfg->dns_name,
                      s->cfg->standby.address, error, outcome->attempts);
        return;
    }
    s->on_standby = true;
    phase_done(s, PH_DNS_UPDATED,
               json_pack("{s:s, s:s, s:i, s:f}", "name", s->cfg->dns_name, "address",
                         s->cfg->standby.address, "attempts", (int)outcome->attempts, "dns_ms",
                         outcome->elapsed_ms));
}

int recovery_dns_switch(struct svc *s, const char *address)
{
    const struct dns_settings *d = s->rc->cfg->dns;
    struct dns_update_config dc = {
        .server = d->server,
        .port = d->port,
        .zone = d->zone,
        .key_name = d->key_name,
        .key_secret = d->key_secret,
    };
    cleanup_error vcr_error_t err = NULL;
    s->dns = dns_update_start(s->rc->base, &dc, s->cfg->dns_name, s->cfg->ttl, address, on_dns_done,
                              s, &err);
    if (s->dns == NULL) {
        snprintf(s->error, sizeof(s->error), "DNS update: %s", vcr_error_msg(err));
        return -1;
    }
    return 0;
}

static void on_confirm_checked(enum check_outcome outcome, const char *why, const char *body,
                               void *arg)
{
    bool healthy = outcome == CHECK_HEALTHY;
    struct svc *s = arg;
    s->check = NULL;
    if (!healthy) {
        snprintf(s->error, sizeof(s->error), "%s", why);
        s->retry_at = vcr_mono_ms() + RETRY_MS;
        return;
    }
    char answer[65];
    snprintf(answer, sizeof(answer), "%s", body ? body : "");
    answer[strcspn(answer, "\r\n")] = '\0';
    s->error[0] = '\0';
    phase_done(s, PH_CLIENT_CONFIRMED,
               json_pack("{s:s, s:s, s:s}", "name", s->cfg->dns_name, "address",
                         s->cfg->standby.address, "answer", answer));
}

static void on_resolved(const char *address, const char *why, void *arg)
{
    struct svc *s = arg;
    s->resolve = NULL;
    if (address == NULL || strcmp(address, s->cfg->standby.address) != 0) {
        if (address)
            snprintf(s->error, sizeof(s->error), "%s resolves to %s, not %s yet", s->cfg->dns_name,
                     address, s->cfg->standby.address);
        else
            snprintf(s->error, sizeof(s->error), "%s", why);
        s->retry_at = vcr_mono_ms() + RETRY_MS;
        return;
    }
    struct check_target t = {
        .type = s->cfg->check.type,
        .address = address,
        .port = s->cfg->primary.port,
        .path = s->cfg->check.path,
        .timeout_ms = s->cfg->check.timeout_ms,
    };
    cleanup_error vcr_error_t err = NULL;
    s->check = check_start(s->rc->base, &t, on_confirm_checked, s, &err);
    if (s->check == NULL)
        recovery_fail(s, "client confirmation: %s", vcr_error_msg(err));
}

static void timed_step(struct svc *s, enum svc_step step, int64_t deadline_ms)
{
    s->step = step;
    s->step_started = vcr_mono_ms();
    s->retry_at = s->step_started;
    s->wait_until = s->step_started + deadline_ms;
    s->error[0] = '\0';
}

/* Port and confirmation steps: one attempt at a time until the deadline. */
static void timed_step_tick(struct svc *s, int64_t now)
{
    if (s->check || s->resolve || now < s->retry_at)
        return;
    if (now >= s->wait_until) {
        if (s->step == STEP_PORT)
            recovery_fail(s, "port %s:%u of container %s not open within %d ms: %s",
                          s->cfg->standby.address, s->cfg->primary.port, s->cfg->standby.container,
                          s->rc->cfg->port_timeout_ms, s->error);
        else
            recovery_fail(s, "client confirmation of %s not achieved within %d ms: %s",
                          s->cfg->dns_name, s->rc->cfg->confirm_timeout_ms, s->error);
        return;
    }
    s->retry_at = now + RETRY_MS;
    cleanup_error vcr_error_t err = NULL;
    if (s->step == STEP_PORT) {
        struct check_target t = {
            .type = CHECK_TCP,
            .address = s->cfg->standby.address,
            .port = s->cfg->primary.port,
            .timeout_ms = s->cfg->check.timeout_ms,
        };
        s->check = check_start(s->rc->base, &t, on_port_checked, s, &err);
    } else {
        const struct dns_settings *d = s->rc->cfg->dns;
        s->resolve = resolve_start(s->rc->base, d->server, d->port, s->cfg->dns_name, RESOLVE_MS,
                                   on_resolved, s, &err);
    }
    if (err)
        recovery_fail(s, "%s", vcr_error_msg(err));
}

/* Starts the step after the last phase done. */
static void advance(struct svc *s)
{
    if (s->rc->stopping || s->state != SVC_RECOVERING)
        return;
    switch (s->phase) {
    case PH_NONE:
    case PH_DETECTED:
        fence_start(s);
        break;
    case PH_FENCED:
        container_step(s);
        break;
    case PH_CONTAINER_READY:
        timed_step(s, STEP_PORT, s->rc->cfg->port_timeout_ms);
        break;
    case PH_PORT_OPEN:
        s->step = STEP_DNS;
        if (recovery_dns_switch(s, s->cfg->standby.address) < 0)
            recovery_fail(s, "%s", s->error);
        break;
    case PH_DNS_UPDATED:
        timed_step(s, STEP_CONFIRM, s->rc->cfg->confirm_timeout_ms);
        break;
    case PH_CLIENT_CONFIRMED:
        s->state = SVC_RECOVERED;
        s->step = STEP_IDLE;
        s->error[0] = '\0';
        recovery_save(s);
        log_info("service %s: recovered: %s -> %s in %lld ms", s->cfg->name, s->cfg->dns_name,
                 s->cfg->standby.address, (long long)elapsed(s));
        break;
    }
}

/* --- API --- */

static struct svc *find_svc(struct recovery *rc, const char *name, vcr_error_t *err)
{
    for (size_t i = 0; i < rc->n_svcs; i++)
        if (strcmp(rc->svcs[i].cfg->name, name) == 0)
            return &rc->svcs[i];
    vcr_error_make(err, ENOENT, "no service `%s` in the configuration", name);
    return NULL;
}

static json_t *svc_json(struct svc *s)
{
    const struct service_config *c = s->cfg;
    bool standby = s->on_standby;
    json_t *rec = NULL;
    if (s->phase != PH_NONE || s->state == SVC_FAILED || json_array_size(s->timeline))
        rec = json_pack("{s:s, s:s, s:s?, s:I, s:I, s:O?}", "phase", phase_names[s->phase], "cause",
                        s->cause, "error", s->error[0] ? s->error : NULL, "started_ms",
                        (json_int_t)s->started_ms, "updated_ms", (json_int_t)s->updated_ms,
                        "timeline", s->timeline);
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:{s:s, s:s, s:s}, "
        "s:{s:s, s:s, s:s, s:s, s:s, s:s?}, s:{s:s, s:i, s:s?}, s:o}",
        "name", c->name, "dns_name", c->dns_name, "state", state_names[s->state], "served_by",
        standby ? "standby" : "primary", "address",
        standby ? c->standby.address : c->primary.address, "port", (int)c->primary.port, "mode",
        standby_mode_name(c->standby.mode), "primary", "host", c->primary.host, "vm", c->primary.vm,
        "address", c->primary.address, "standby", "mode", standby_mode_name(c->standby.mode),
        "host", recovery_container_host(s), "container", c->standby.container, "address",
        c->standby.address, "container_state", provision_container_state(s), "provision_error",
        provision_last_error(s), "check", "type", check_type_name(c->check.type), "failures",
        (int)s->probe.failures, "last_error", s->probe.last_error[0] ? s->probe.last_error : NULL,
        "recovery", rec ? rec : json_null());
}

json_t *recovery_services_json(struct recovery *rc)
{
    json_t *list = json_array();
    for (size_t i = 0; rc && list && i < rc->n_svcs; i++)
        json_array_append_new(list, svc_json(&rc->svcs[i]));
    return json_pack("{s:o}", "services", list ? list : json_array());
}

json_t *recovery_failover(struct recovery *rc, const char *name, vcr_error_t *err)
{
    struct svc *s = find_svc(rc, name, err);
    if (s == NULL)
        return NULL;
    if (s->step != STEP_IDLE || s->order_pending || s->state == SVC_RECOVERING) {
        vcr_error_make(err, EBUSY, "service `%s`: a recovery or failback is running (phase %s)",
                       name, phase_names[s->phase]);
        return NULL;
    }
    if (s->state == SVC_RECOVERED) {
        vcr_error_make(err, EBUSY,
                       "service `%s` is served by its standby already; `vcr failback %s` first",
                       name, name);
        return NULL;
    }
    if (s->state == SVC_FAILED) {
        /* Resume after the last phase done: nothing done twice. */
        log_info("service %s: retrying the recovery after phase %s", name, phase_names[s->phase]);
        s->state = SVC_RECOVERING;
        s->error[0] = '\0';
        s->started_mono = vcr_mono_ms();
        record(s, "retry", json_pack("{s:s}", "after", phase_names[s->phase]));
        recovery_save(s);
        advance(s);
    } else {
        if (s->state == SVC_STOPPED)
            s->state = SVC_OK; /* an operator may fail over a primary in maintenance */
        detect(s, "manual failover (vcr failover)");
    }
    return json_pack("{s:s, s:s, s:s}", "service", name, "state", state_names[s->state], "phase",
                     phase_names[s->phase]);
}

json_t *recovery_failback(struct recovery *rc, const char *name, vcr_error_t *err)
{
    struct svc *s = find_svc(rc, name, err);
    if (s == NULL)
        return NULL;
    /* From `failed` too when DNS already points at the container (the
     * confirmation failed): it is served there, failback is the way back. */
    bool served = s->state == SVC_RECOVERED || (s->state == SVC_FAILED && s->on_standby);
    if (!served || s->step != STEP_IDLE || s->order_pending) {
        vcr_error_make(err, EBUSY,
                       "service `%s` is %s%s; failback needs a service served by its standby "
                       "(recovered)%s",
                       name, state_names[s->state], s->step != STEP_IDLE ? " (busy)" : "",
                       s->state == SVC_FAILED ? "; `vcr service reset` clears a failed recovery "
                                                "that never switched DNS"
                                              : "");
        return NULL;
    }
    if (failback_start(s, err) < 0)
        return NULL;
    return json_pack("{s:s, s:s, s:s}", "service", name, "state", state_names[s->state], "failback",
                     "started");
}

/* A failed recovery that never moved DNS: the primary serves the name again
 * (or will once it runs).  A cold container it created is stopped; a warm one
 * is the provisioning's again. */
static void clear_failed(struct svc *s, const char *why)
{
    recovery_cancel_io(s);
    bool cold_container = s->cfg->standby.mode == STANDBY_COLD && s->phase >= PH_CONTAINER_READY;
    s->state = SVC_OK;
    s->step = STEP_IDLE;
    s->error[0] = '\0';
    record(s, "cleared", json_pack("{s:s, s:s}", "why", why, "after", phase_names[s->phase]));
    s->phase = PH_NONE;
    s->probe.failures = 0;
    s->probe.next_ms = 0;
    s->provision.retry_at = 0;
    s->provision.backoff_ms = 0;
    log_info("service %s: failed recovery cleared: %s", s->cfg->name, why);
    recovery_save(s);
    if (cold_container)
        recovery_stop_cold_container(s);
}

json_t *recovery_reset(struct recovery *rc, const char *name, vcr_error_t *err)
{
    struct svc *s = find_svc(rc, name, err);
    if (s == NULL)
        return NULL;
    if (s->state != SVC_FAILED) {
        vcr_error_make(err, EBUSY, "service `%s` is %s; reset clears a failed recovery only", name,
                       state_names[s->state]);
        return NULL;
    }
    if (s->step != STEP_IDLE || s->order_pending) {
        vcr_error_make(err, EBUSY, "service `%s`: an order of its recovery is still pending", name);
        return NULL;
    }
    if (s->on_standby) {
        vcr_error_make(err, EBUSY,
                       "service `%s`: DNS points at its standby container; `vcr failback %s` "
                       "moves it back to the primary",
                       name, name);
        return NULL;
    }
    clear_failed(s, "reset by the operator (vcr service reset)");
    /* Whatever the primary does now is a fresh start for the probes. */
    s->probe.answered = false;
    s->probe.unanswered_since = 0;
    return json_pack("{s:s, s:s}", "service", name, "state", state_names[s->state]);
}

int recovery_check_vm_start(struct recovery *rc, const char *host, const char *vm, vcr_error_t *err)
{
    for (size_t i = 0; rc && i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (strcmp(s->cfg->primary.host, host) != 0 || strcmp(s->cfg->primary.vm, vm) != 0)
            continue;
        if (s->on_standby || (s->state == SVC_RECOVERING && s->phase >= PH_FENCED))
            return vcr_error_make(err, EBUSY,
                                  "VM `%s` is the primary of service `%s`, which is served by its "
                                  "standby container now: started, it would answer beside it; "
                                  "`vcr failback %s` starts it and moves the service back",
                                  vm, s->cfg->name, s->cfg->name);
    }
    return 0;
}

/* --- the tick --- */

/* A primary that died while nobody listened (the server was down, its vm_event
 * went to a closed connection) is found dead in its agent's hello. */
static void resync_primary(struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    if (vm == NULL || h == NULL || h->state != INV_HOST_CONNECTED ||
        strcmp(h->name, s->cfg->primary.host) != 0)
        return;
    if (vm->state != INV_VM_CRASHED && vm->state != INV_VM_PANICKED && vm->state != INV_VM_SHUTDOWN)
        return;
    char why[200];
    snprintf(why, sizeof(why), "VM %s %s (reported by its agent's hello: %s)", s->cfg->primary.vm,
             inv_vm_state_name(vm->state), vm->cause ? vm->cause : "no cause");
    detect(s, why);
}

/* A reloaded recovery waits until the agents it needs are back, or until they
 * had host_timeout_ms to say hello. */
static bool resume_ready(struct svc *s, int64_t now)
{
    if (now >= s->wait_until)
        return true;
    struct inv_host *p = inventory_find_host(s->rc->inv, s->cfg->primary.host);
    struct inv_host *b = inventory_find_host(s->rc->inv, s->cfg->standby.host);
    bool primary_ok = s->phase >= PH_FENCED || (p && p->state == INV_HOST_CONNECTED);
    bool standby_ok = s->phase >= PH_CONTAINER_READY || s->cfg->standby.mode == STANDBY_WARM ||
                      (b && b->state == INV_HOST_CONNECTED);
    return primary_ok && standby_ok;
}

static void svc_tick(struct svc *s, int64_t now)
{
    recovery_watch_primary(s, now);
    if (s->unsaved) {
        /* Hold until the state is durable; then go on from where it stopped. */
        if (now >= s->save_retry_at && recovery_save(s) && s->state == SVC_RECOVERING &&
            s->step == STEP_IDLE)
            advance(s);
        return;
    }
    switch (s->step) {
    case STEP_IDLE:
        if ((s->state == SVC_OK || s->state == SVC_DEGRADED) && recovery_primary_running(s))
            probe_due(s, now);
        else if (s->state == SVC_OK || s->state == SVC_DEGRADED)
            resync_primary(s);
        else if (s->state == SVC_FAILED && !s->on_standby && recovery_primary_running(s))
            probe_due(s, now); /* a primary that answers again clears the failure */
        break;
    case STEP_RESUME_WAIT:
        if (resume_ready(s, now)) {
            log_info("service %s: resuming its recovery after phase %s", s->cfg->name,
                     phase_names[s->phase]);
            s->step = STEP_IDLE;
            advance(s);
        }
        break;
    case STEP_FENCE_WAIT:
        fence_tick(s, now);
        break;
    case STEP_PORT:
    case STEP_CONFIRM:
        timed_step_tick(s, now);
        break;
    case STEP_FAILBACK:
        failback_tick(s, now);
        break;
    case STEP_CONTAINER:
        if (!s->order_pending && s->retry_at && now >= s->retry_at) {
            s->retry_at = 0;
            container_order(s, s->stage ? "container_start" : "container_create");
        }
        break;
    default:
        break;
    }
    provision_tick(s, now);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct recovery *rc = arg;
    (void)fd;
    (void)what;
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < rc->n_svcs && !rc->stopping; i++)
        svc_tick(&rc->svcs[i], now);
}

struct recovery *recovery_new(struct event_base *base, const struct server_config *cfg,
                              struct inventory *inv, struct journal *journal, struct agents *agents,
                              vcr_error_t *err)
{
    struct recovery *rc = calloc(1, sizeof(*rc));
    if (rc == NULL ||
        (cfg->n_services && (rc->svcs = calloc(cfg->n_services, sizeof(*rc->svcs))) == NULL)) {
        free(rc);
        vcr_error_errno(err, "recovery");
        return NULL;
    }
    rc->base = base;
    rc->cfg = cfg;
    rc->inv = inv;
    rc->journal = journal;
    rc->agents = agents;
    rc->n_svcs = cfg->n_services;
    /* A second connection to the journal's file: WAL lets both write in turn. */
    if (sqlite3_open_v2(cfg->journal, &rc->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        vcr_error_make(err, EIO, "recoveries table in `%s`: %s", cfg->journal,
                       rc->db ? sqlite3_errmsg(rc->db) : "out of memory");
        recovery_free(rc);
        return NULL;
    }
    sqlite3_busy_timeout(rc->db, 2000);
    if (db_exec(rc->db,
                "PRAGMA synchronous=FULL;"
                "CREATE TABLE IF NOT EXISTS recoveries (service TEXT PRIMARY KEY,"
                " state TEXT NOT NULL, phase TEXT NOT NULL, mode TEXT, cause TEXT, error TEXT,"
                " started_ms INTEGER, updated_ms INTEGER NOT NULL, on_standby INTEGER NOT NULL"
                " DEFAULT 0, timeline TEXT);",
                err) < 0) {
        recovery_free(rc);
        return NULL;
    }
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        s->rc = rc;
        s->cfg = &cfg->services[i];
        s->timeline = json_array();
        load(s);
        if (s->state == SVC_RECOVERING) {
            s->step = STEP_RESUME_WAIT;
            s->started_mono = now - (vcr_wall_ms() - s->started_ms);
            s->wait_until = now + cfg->host_timeout_ms;
            log_info("service %s: unfinished recovery (after phase %s) reloaded", s->cfg->name,
                     phase_names[s->phase]);
        }
    }
    rc->tick = event_new(base, -1, EV_PERSIST, on_tick, rc);
    struct timeval tv = {0, RECOVERY_TICK_MS * 1000};
    if (rc->tick == NULL || event_add(rc->tick, &tv) < 0) {
        vcr_error_make(err, ENOMEM, "recovery: cannot create its timer");
        recovery_free(rc);
        return NULL;
    }
    return rc;
}

void recovery_stop(struct recovery *rc)
{
    if (rc == NULL)
        return;
    rc->stopping = true;
    for (size_t i = 0; i < rc->n_svcs; i++) {
        recovery_cancel_io(&rc->svcs[i]);
        probe_stop(&rc->svcs[i].probe);
    }
}

void recovery_free(struct recovery *rc)
{
    if (rc == NULL)
        return;
    recovery_stop(rc);
    for (size_t i = 0; i < rc->n_svcs; i++)
        json_decref(rc->svcs[i].timeline);
    if (rc->tick)
        event_free(rc->tick);
    sqlite3_close(rc->db);
    free(rc->svcs);
    free(rc);
}
