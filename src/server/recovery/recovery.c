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

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/ha.h"
#include "dns/dns_update.h"
#include "proto/proto_code.h"
#include "proto/proto_state.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/recovery/recovery_priv.h"
#include "dns/resolve.h"
#include "server/recovery/switch.h"
#include "config/server_config.h"

#define JOURNAL_FENCED "fenced"
#define RETRY_MS       200
#define RESOLVE_MS     1000

/* --- journal --- */

void recovery_journal(struct svc *s, const char *kind, json_t *detail)
{
    journal_note(s->rc->journal, 0, s->cfg->primary.host, s->cfg->primary.vm, kind, detail);
}

static int64_t elapsed(const struct svc *s)
{
    return vcr_mono_ms() - s->started_mono;
}

/* Adds one phase to the timeline; returns its journal detail (new reference). */
json_t *recovery_record_entry(struct svc *s, const char *phase, json_t *extra)
{
    int64_t now = vcr_wall_ms();
    json_t *entry = json_pack("{s:s, s:I, s:I}", "phase", phase, "ts_ms", (json_int_t)now,
                              "elapsed_ms", (json_int_t)elapsed(s));
    if (entry && extra)
        json_object_update(entry, extra);
    json_t *detail =
        json_pack("{s:s, s:s, s:s, s:I}", "service", s->cfg->name, "phase", phase, "mode",
                  s->cfg->standby.mode->name, "elapsed_ms", (json_int_t)elapsed(s));
    if (detail && extra)
        json_object_update(detail, extra);
    json_decref(extra);
    if (s->timeline == NULL)
        s->timeline = json_array();
    json_array_append_new(s->timeline, entry);
    return detail;
}

/* Journals a phase whose timeline entry recovery_record_entry made. */
void recovery_record_commit(struct svc *s, const char *phase, json_t *detail)
{
    recovery_journal(s, JOURNAL_RECOVERY, detail);
    log_info("service %s: recovery: %s after %lld ms", s->cfg->name, phase,
             (long long)json_integer_value(json_object_get(detail, "elapsed_ms")));
}

/* Journals one phase (with extra members, stolen, may be NULL) and adds it to the timeline. */
void recovery_record(struct svc *s, const char *phase, json_t *extra)
{
    cleanup_json json_t *detail = recovery_record_entry(s, phase, extra);
    recovery_record_commit(s, phase, detail);
}

void recovery_phase_done(struct svc *s, enum rec_phase phase, json_t *extra)
{
    s->phase = phase;
    s->step = STEP_IDLE;
    s->switch_way = NULL; /* a way that completes its phase is over */
    if (s->rc->ha) {
        /* Journaled and advanced once etcd has the phase (recovery_ha.c). */
        recovery_ha_phase_done(s, phase, extra);
        return;
    }
    recovery_record(s, recovery_phase_name(phase), extra);
    if (recovery_save(s))
        recovery_advance(s);
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
    s->dns_waiting = false;
    switch_cancel(s);
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
    /* Which way of the switch failed, if one did (GET /metrics counts DNS failures). */
    const char *way = s->switch_way ? s->switch_way->name : NULL;
    recovery_cancel_io(s);
    if (s->rc->ha && !s->rc->ha_loaded) {
        /* This server stepped down meanwhile (an order refused for it): the
         * recovery is its successor's, as etcd has it. */
        log_info("service %s: not leading any more: %s", s->cfg->name, s->error);
        s->step = STEP_IDLE;
        return;
    }
    s->state = SVC_FAILED;
    s->step = STEP_IDLE;
    log_error("service %s: recovery FAILED after phase %s: %s (retry: vcr failover %s)",
              s->cfg->name, recovery_phase_name(s->phase), s->error, s->cfg->name);
    recovery_record(s, "failed",
                    json_pack("{s:s, s:s, s:s?}", "error", s->error, "after",
                              recovery_phase_name(s->phase), "switch", way));
    recovery_save(s);
}

bool recovery_vm_down(struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    if (vm == NULL || h == NULL || strcmp(h->name, s->cfg->primary.host) != 0)
        return false;
    return proto_vm_state_is_down((int)vm->state);
}

bool recovery_primary_running(const struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    return vm && h && h->state == INV_HOST_CONNECTED &&
           strcmp(h->name, s->cfg->primary.host) == 0 && vm->state == INV_VM_RUNNING;
}

struct inv_vm *recovery_standby_vm(const struct svc *s)
{
    struct inv_host *h = NULL;
    struct inv_vm *vm =
        s->cfg->standby.vm ? inventory_find_vm(s->rc->inv, s->cfg->standby.vm, &h) : NULL;
    if (vm == NULL || h == NULL || h->state != INV_HOST_CONNECTED ||
        strcmp(h->name, s->cfg->standby.host) != 0)
        return NULL;
    return vm;
}

/* The standby host that holds the service's container now: a migration
 * (docs/migration.md) may have moved it off the configured one. */
const char *recovery_container_host(const struct svc *s)
{
    if (s->cfg->standby.container == NULL)
        return s->cfg->standby.host;
    const struct inv_host *h =
        inventory_find_container_host(s->rc->inv, s->cfg->standby.container, s->cfg->standby.host);
    return h ? h->name : s->cfg->standby.host;
}

const char *recovery_standby_name(const struct svc *s)
{
    return s->cfg->standby.container ? s->cfg->standby.container : s->cfg->standby.vm;
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
    recovery_phase_done(s, PH_FENCED,
                        json_pack("{s:s, s:I}", "how", how, "waited_ms", (json_int_t)waited_ms));
}

/* --- port, DNS, client confirmation --- */

static void on_port_checked(enum check_outcome outcome, const char *why, const char *body,
                            void *arg)
{
    bool healthy = outcome == CHECK_HEALTHY;
    struct svc *s = arg;
    (void)body;
    s->check = NULL;
    if (healthy && !s->ipv6_leg && s->cfg->standby.address6) {
        /* A dual-stack container serves both families: its IPv6 port next. */
        s->ipv6_leg = true;
        s->retry_at = vcr_mono_ms();
        return;
    }
    if (healthy) {
        json_t *detail = json_pack("{s:s, s:i, s:I}", "address", s->cfg->standby.address, "port",
                                   (int)s->cfg->primary.port, "waited_ms",
                                   (json_int_t)(vcr_mono_ms() - s->step_started));
        if (detail && s->cfg->standby.address6)
            json_object_set_new(detail, "address6", json_string(s->cfg->standby.address6));
        recovery_phase_done(s, PH_PORT_OPEN, detail);
        return;
    }
    snprintf(s->error, sizeof(s->error), "%s", why);
    s->retry_at = vcr_mono_ms() + RETRY_MS;
}

static void on_dns_done(const struct dns_update_outcome *outcome, const char *error, void *arg)
{
    struct svc *s = arg;
    s->dns = NULL;
    /* Refused by the zone's fence: a newer leader has claimed it (recovery_ha.c). */
    if (error && s->rc->ha && outcome->rcode == DNS_RCODE_NXRRSET) {
        recovery_ha_dns_stale(s);
        return;
    }
    if (s->step == STEP_FAILBACK) {
        failback_dns_done(s, error);
        return;
    }
    if (s->step == STEP_CLEAR) {
        recovery_clear_dns_done(s, error);
        return;
    }
    if (error) {
        recovery_fail(s, "DNS update of %s -> %s: %s (%u attempts)", s->cfg->dns_name,
                      s->cfg->standby.address, error, outcome->attempts);
        return;
    }
    s->on_standby = true;
    json_t *detail = json_pack("{s:s, s:s, s:i, s:f}", "name", s->cfg->dns_name, "address",
                               s->cfg->standby.address, "attempts", (int)outcome->attempts,
                               "dns_ms", outcome->elapsed_ms);
    if (detail && s->cfg->standby.address6)
        json_object_set_new(detail, "address6", json_string(s->cfg->standby.address6));
    recovery_phase_done(s, PH_DNS_UPDATED, detail);
}

void recovery_dns_config(const struct recovery *rc, struct dns_update_config *dc)
{
    const struct dns_settings *d = rc->cfg->dns;
    *dc = (struct dns_update_config){
        .server = d->server,
        .port = d->port,
        .zone = d->zone,
        .key_name = d->key_name,
        .key_secret = d->key_secret,
        .algorithm = d->key_algorithm,
    };
}

void recovery_dns_target(const struct svc *s, const char **address, const char **address6)
{
    bool back = s->step == STEP_FAILBACK || s->step == STEP_CLEAR;
    *address = back ? s->cfg->primary.address : s->cfg->standby.address;
    *address6 = back ? s->cfg->primary.address6 : s->cfg->standby.address6;
}

int recovery_dns_switch(struct svc *s)
{
    struct dns_update_config dc;
    recovery_dns_config(s->rc, &dc);
    const char *address, *address6;
    recovery_dns_target(s, &address, &address6);
    if (s->rc->ha) {
        /* Redundant servers: only under the zone's fence of this leader's term
         * (recovery_ha.c); until it is claimed, the switch waits for it. */
        if (!recovery_ha_dns_fenced(s->rc)) {
            s->dns_waiting = true;
            return 0;
        }
        dc.fence_term = s->rc->dns_fence_term;
    }
    cleanup_error vcr_error_t err = NULL;
    s->dns = dns_update_start(s->rc->base, &dc, s->cfg->dns_name, s->cfg->ttl, address, address6,
                              on_dns_done, s, &err);
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
        snprintf(s->error, sizeof(s->error), "%s%s", s->ipv6_leg ? "IPv6: " : "", why);
        s->retry_at = vcr_mono_ms() + RETRY_MS;
        return;
    }
    char answer[65];
    snprintf(answer, sizeof(answer), "%s", body ? body : "");
    answer[strcspn(answer, "\r\n")] = '\0';
    s->error[0] = '\0';
    const char *served6 = recovery_served_address6(s);
    if (!s->ipv6_leg && served6) {
        /* A client of the other family: AAAA, then the service at that address. */
        snprintf(s->confirm_answer, sizeof(s->confirm_answer), "%s", answer);
        s->ipv6_leg = true;
        s->retry_at = vcr_mono_ms();
        return;
    }
    json_t *detail =
        json_pack("{s:s, s:s, s:s}", "name", s->cfg->dns_name, "address",
                  recovery_served_address(s), "answer", served6 ? s->confirm_answer : answer);
    if (detail && served6) {
        json_object_set_new(detail, "address6", json_string(served6));
        json_object_set_new(detail, "answer6", json_string(answer));
    }
    recovery_phase_done(s, PH_CLIENT_CONFIRMED, detail);
}

const char *recovery_served_address(const struct svc *s)
{
    return s->cfg->takeover & SERVICES_TAKEOVER_DNS ? s->cfg->standby.address
                                                    : s->cfg->primary.address;
}

const char *recovery_served_address6(const struct svc *s)
{
    if (s->cfg->standby.address6 == NULL || s->cfg->primary.address6 == NULL)
        return NULL;
    return s->cfg->takeover & SERVICES_TAKEOVER_DNS ? s->cfg->standby.address6
                                                    : s->cfg->primary.address6;
}

static bool same_address(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    if (b == NULL)
        return false;
    if (inet_pton(AF_INET6, a, x) == 1)
        return inet_pton(AF_INET6, b, y) == 1 && memcmp(x, y, 16) == 0;
    return strcmp(a, b) == 0;
}

static void on_resolved(const char *address, const char *why, void *arg)
{
    struct svc *s = arg;
    s->resolve = NULL;
    const char *expected = s->ipv6_leg ? recovery_served_address6(s) : recovery_served_address(s);
    /* Compared as addresses: an IPv6 one has more than one spelling. */
    if (address == NULL || !same_address(address, expected)) {
        if (address)
            snprintf(s->error, sizeof(s->error), "%s resolves to %s, not %s yet", s->cfg->dns_name,
                     address, expected);
        else
            snprintf(s->error, sizeof(s->error), "%s", why);
        s->retry_at = vcr_mono_ms() + RETRY_MS;
        return;
    }
    /* The service's own check, at the address the name resolves to. */
    struct check_target t = recovery_primary_check(s, address);
    cleanup_error vcr_error_t err = NULL;
    s->check = check_start(s->rc->base, &t, on_confirm_checked, s, &err);
    if (s->check == NULL)
        recovery_fail(s, "client confirmation: %s", vcr_error_msg(err));
}

static void timed_step(struct svc *s, enum svc_step step, int64_t deadline_ms)
{
    s->ipv6_leg = false;
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
            recovery_fail(s,
                          s->ipv6_leg ? "port [%s]:%u of %s %s not open within %d ms: %s"
                                      : "port %s:%u of %s %s not open within %d ms: %s",
                          s->ipv6_leg ? s->cfg->standby.address6 : s->cfg->standby.address,
                          s->cfg->primary.port, s->cfg->standby.mode->kind,
                          recovery_standby_name(s), s->rc->cfg->port_timeout_ms, s->error);
        else
            recovery_fail(s, "client confirmation of %s not achieved within %d ms: %s",
                          s->cfg->dns_name, s->rc->cfg->confirm_timeout_ms, s->error);
        return;
    }
    s->retry_at = now + RETRY_MS;
    cleanup_error vcr_error_t err = NULL;
    if (s->step == STEP_PORT) {
        struct check_target t = {
            .type = &check_tcp_ops,
            .address = s->ipv6_leg ? s->cfg->standby.address6 : s->cfg->standby.address,
            .port = s->cfg->primary.port,
            .timeout_ms = s->cfg->check.timeout_ms,
        };
        s->check = check_start(s->rc->base, &t, on_port_checked, s, &err);
    } else {
        const struct dns_settings *d = s->rc->cfg->dns;
        s->resolve =
            resolve_start(s->rc->base, d->server, d->port, s->cfg->dns_name,
                          s->ipv6_leg ? AF_INET6 : AF_INET, RESOLVE_MS, on_resolved, s, &err);
    }
    if (err)
        recovery_fail(s, "%s", vcr_error_msg(err));
}

/* Starts the step after the last phase done. */
void recovery_advance(struct svc *s)
{
    if (s->rc->stopping || s->state != SVC_RECOVERING)
        return;
    /* The switch's phases, whichever ways there are (switch.h): the next one. */
    if (s->phase >= PH_PORT_OPEN && s->phase < PH_CLIENT_CONFIRMED) {
        const struct switch_ops *way = switch_next(s, (int)s->phase);
        s->switch_way = way;
        if (way == NULL)
            timed_step(s, STEP_CONFIRM, s->rc->cfg->confirm_timeout_ms);
        else if (way->take(s) < 0)
            recovery_fail(s, "%s: %s", way->name, s->error);
        return;
    }
    switch (s->phase) {
    case PH_NONE:
    case PH_DETECTED:
        s->fence_refused = FENCE_REFUSAL_NONE; /* a fencing of its own */
        fence_start(s);
        break;
    case PH_FENCED:
        s->cfg->standby.mode->ready(s);
        break;
    case PH_CONTAINER_READY:
        if (s->cfg->data.volume)
            service_data_copy_step(s);
        else
            timed_step(s, STEP_PORT, s->rc->cfg->port_timeout_ms);
        break;
    case PH_DATA_COPIED:
        service_data_attach_step(s);
        break;
    case PH_DATA_ATTACHED:
        timed_step(s, STEP_PORT, s->rc->cfg->port_timeout_ms);
        break;
    default: /* the switch's phases, above */
        break;
    case PH_CLIENT_CONFIRMED:
        s->state = SVC_RECOVERED;
        s->step = STEP_IDLE;
        s->error[0] = '\0';
        recovery_save(s);
        log_info("service %s: recovered: %s -> %s in %lld ms", s->cfg->name, s->cfg->dns_name,
                 recovery_served_address(s), (long long)elapsed(s));
        break;
    }
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
    if (!proto_vm_state_is_failure((int)vm->state))
        return;
    char why[200];
    snprintf(why, sizeof(why), "VM %s %s (reported by its agent's hello: %s)", s->cfg->primary.vm,
             inv_vm_state_name(vm->state), vm->cause ? vm->cause : "no cause");
    recovery_detect(s, why);
}

/* Whether host is back: connected with a live session.  A new leader's
 * inventory still lists hosts `connected` from an earlier term of its own
 * (agents_set_leading) whose sessions are gone: an order to one would fail. */
static bool host_back(const struct svc *s, const char *host)
{
    struct inv_host *h = inventory_find_host(s->rc->inv, host);
    return h && h->state == INV_HOST_CONNECTED && agents_host_has_session(s->rc->agents, host);
}

/* A reloaded recovery waits until the agents it needs are back, or until they
 * had host_timeout_ms to say hello. */
static bool resume_ready(struct svc *s, int64_t now)
{
    if (now >= s->wait_until)
        return true;
    if (s->fb_id[0]) /* a failback orders both */
        return host_back(s, s->cfg->primary.host) &&
               (s->cfg->standby.mode->resume_without_standby_host ||
                host_back(s, recovery_container_host(s)));
    bool primary_ok = s->phase >= PH_FENCED || host_back(s, s->cfg->primary.host);
    bool standby_ok = s->phase >= PH_CONTAINER_READY ||
                      s->cfg->standby.mode->resume_without_standby_host ||
                      host_back(s, s->cfg->standby.host);
    return primary_ok && standby_ok;
}

static void svc_tick(struct svc *s, int64_t now)
{
    recovery_watch_primary(s, now);
    /* Redundant servers: a phase waits for etcd before the next step starts. */
    if (s->rc->ha && recovery_ha_tick(s, now))
        return;
    if (s->dns_waiting && recovery_ha_dns_fenced(s->rc)) {
        s->dns_waiting = false;
        if (recovery_dns_switch(s) < 0) {
            struct dns_update_outcome none = {.rcode = -1};
            on_dns_done(&none, s->error, s);
        }
    }
    if (s->unsaved) {
        /* Hold until the state is durable; then go on from where it stopped. */
        if (now >= s->save_retry_at && recovery_save(s) && s->state == SVC_RECOVERING &&
            s->step == STEP_IDLE)
            recovery_advance(s);
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
        /* Recovered: its healthy period runs; otherwise one still set is ended. */
        if (s->state == SVC_RECOVERED || s->auto_ready_since)
            failback_auto_tick(s, now);
        break;
    case STEP_RESUME_WAIT:
        if (resume_ready(s, now) && s->fb_id[0]) {
            failback_resume(s);
        } else if (resume_ready(s, now)) {
            log_info("service %s: resuming its recovery after phase %s", s->cfg->name,
                     recovery_phase_name(s->phase));
            s->step = STEP_IDLE;
            recovery_advance(s);
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
        if (s->cfg->standby.mode->tick)
            s->cfg->standby.mode->tick(s, now);
        break;
    default:
        break;
    }
    provision_tick(s, now);
    service_data_tick(s, now);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct recovery *rc = arg;
    (void)fd;
    (void)what;
    /* A follower probes nothing and decides nothing (docs/ha.md); a new
     * leader first loads the shared state (recovery_ha.c). */
    if (rc->ha && !recovery_ha_ready(rc))
        return;
    int64_t now = vcr_mono_ms();
    if (rc->ha)
        recovery_ha_maint_tick(rc, now);
    for (size_t i = 0; i < rc->n_svcs && !rc->stopping; i++)
        svc_tick(&rc->svcs[i], now);
}

void recovery_set_ha(struct recovery *rc, struct ha *ha)
{
    rc->ha = ha;
    /* The state is etcd's, loaded on taking the lead: not the local table's. */
    for (size_t i = 0; ha && i < rc->n_svcs; i++)
        recovery_ha_reset(&rc->svcs[i]);
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
    if (recovery_store_open(rc, err) < 0) {
        recovery_free(rc);
        return NULL;
    }
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        s->rc = rc;
        s->cfg = &cfg->services[i];
        s->timeline = json_array();
        recovery_store_load(s);
        if (s->state == SVC_RECOVERING) {
            s->step = STEP_RESUME_WAIT;
            s->started_mono = now - (vcr_wall_ms() - s->started_ms);
            s->wait_until = now + cfg->host_timeout_ms;
            log_info("service %s: unfinished recovery (after phase %s) reloaded", s->cfg->name,
                     recovery_phase_name(s->phase));
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
    /* The DNS fence's query or claim (recovery_ha.c). */
    resolve_cancel(rc->fence_query);
    rc->fence_query = NULL;
    if (rc->fence_claim)
        dns_update_cancel(rc->fence_claim);
    rc->fence_claim = NULL;
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
    for (size_t i = 0; i < rc->n_svcs; i++) {
        json_decref(rc->svcs[i].timeline);
        json_decref(rc->svcs[i].ha_record);
    }
    if (rc->tick)
        event_free(rc->tick);
    recovery_ha_maint_free(rc);
    sqlite3_close(rc->db);
    free(rc->svcs);
    free(rc);
}
