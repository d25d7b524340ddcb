/* The recovery engine's operator side (docs/server.md): the services' JSON
 * and the actions the API asks for: failover, failback, reset, and whether a
 * primary VM may be started. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_code.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "config/server_config.h"

static struct svc *find_svc(struct recovery *rc, const char *name, vcr_error_t *err)
{
    if (rc->ha && !rc->ha_loaded) {
        /* A follower refuses before this (api.c); a new leader is reading its
         * predecessor's state from etcd (recovery_ha.c). */
        vcr_error_make(err, EBUSY, "this server is loading the services' state from etcd");
        return NULL;
    }
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
        rec = json_pack("{s:s, s:s, s:s?, s:I, s:I, s:O?}", "phase", recovery_phase_name(s->phase),
                        "cause", s->cause, "error", s->error[0] ? s->error : NULL, "started_ms",
                        (json_int_t)s->started_ms, "updated_ms", (json_int_t)s->updated_ms,
                        "timeline", s->timeline);
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:{s:s, s:s, s:s}, "
        "s:{s:s, s:s, s:s, s:s?, s:s?, s:s, s:s?, s:s?}, s:{s:s, s:i, s:s?, s:o}, s:o, s:o*}",
        "name", c->name, "dns_name", c->dns_name, "state", recovery_state_name(s->state),
        "served_by", standby ? "standby" : "primary", "address",
        standby ? recovery_served_address(s) : c->primary.address, "port", (int)c->primary.port,
        "takeover", services_takeover_name(c->takeover), "mode", c->standby.mode->name, "primary",
        "host", c->primary.host, "vm", c->primary.vm, "address", c->primary.address, "standby",
        "mode", c->standby.mode->name, "kind", c->standby.mode->kind, "host",
        recovery_container_host(s), "container", c->standby.container, "vm", c->standby.vm,
        "address", c->standby.address, "container_state",
        c->standby.mode->container ? provision_container_state(s) : NULL, "provision_error",
        provision_last_error(s), "check", "type", check_type_name(c->check.type), "failures",
        (int)s->probe.failures, "last_error", s->probe.last_error[0] ? s->probe.last_error : NULL,
        "latency_ms",
        s->probe.latency_us ? json_real((double)s->probe.latency_us / 1000.0) : json_null(),
        "recovery", rec ? rec : json_null(), "data", service_data_json(s));
}

/* The failback policy (docs/recovery.md, "Automatic failback"). */
static json_t *failback_json(const struct svc *s)
{
    const struct service_config *c = s->cfg;
    return json_pack("{s:s, s:i, s:i, s:b}", "mode", c->failback.automatic ? "auto" : "manual",
                     "after_s", (int)c->failback.after_s, "min_interval_s",
                     (int)c->failback.min_interval_s, "suspended", s->auto_suspended);
}

/* The switch hook (docs/recovery.md, "Switch hook"): its argv and deadline, null without. */
static json_t *hook_json(const struct svc *s)
{
    const struct service_config *c = s->cfg;
    if (c->hook.argv == NULL)
        return json_null();
    json_t *run = json_array();
    for (size_t k = 0; run && c->hook.argv[k]; k++)
        json_array_append_new(run, json_string(c->hook.argv[k]));
    return json_pack("{s:o, s:i}", "run", run ? run : json_array(), "timeout_ms",
                     (int)c->hook.timeout_ms);
}

json_t *recovery_services_json(struct recovery *rc)
{
    json_t *list = json_array();
    for (size_t i = 0; rc && list && i < rc->n_svcs; i++) {
        json_t *o = svc_json(&rc->svcs[i]);
        if (o) {
            json_object_set_new(o, "failback", failback_json(&rc->svcs[i]));
            json_object_set_new(o, "hook", hook_json(&rc->svcs[i]));
        }
        json_array_append_new(list, o);
    }
    return json_pack("{s:o}", "services", list ? list : json_array());
}

json_t *recovery_failover(struct recovery *rc, const char *name, vcr_error_t *err)
{
    struct svc *s = find_svc(rc, name, err);
    if (s == NULL)
        return NULL;
    if (s->step != STEP_IDLE || s->order_pending || s->state == SVC_RECOVERING) {
        vcr_error_make(err, EBUSY, "service `%s`: a recovery or failback is running (phase %s)",
                       name, recovery_phase_name(s->phase));
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
        log_info("service %s: retrying the recovery after phase %s", name,
                 recovery_phase_name(s->phase));
        s->state = SVC_RECOVERING;
        s->error[0] = '\0';
        s->started_mono = vcr_mono_ms();
        recovery_record(s, "retry", json_pack("{s:s}", "after", recovery_phase_name(s->phase)));
        recovery_save(s);
        recovery_advance(s);
    } else {
        if (s->state == SVC_STOPPED)
            s->state = SVC_OK; /* an operator may fail over a primary in maintenance */
        recovery_detect(s, "manual failover (vcr failover)");
    }
    return json_pack("{s:s, s:s, s:s}", "service", name, "state", recovery_state_name(s->state),
                     "phase", recovery_phase_name(s->phase));
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
                       name, recovery_state_name(s->state), s->step != STEP_IDLE ? " (busy)" : "",
                       s->state == SVC_FAILED ? "; `vcr service reset` clears a failed recovery "
                                                "that never switched DNS"
                                              : "");
        return NULL;
    }
    if (failback_start(s, err) < 0)
        return NULL;
    failback_auto_resume(s);
    return json_pack("{s:s, s:s, s:s}", "service", name, "state", recovery_state_name(s->state),
                     "failback", "started");
}

/* A failed recovery that never moved DNS: the primary serves the name again
 * (or will once it runs).  What its standby mode readied is released (a cold
 * container stopped); a warm container is the provisioning's again. */
static void finish_clear(struct svc *s, const char *why)
{
    bool readied = s->phase >= PH_CONTAINER_READY;
    s->state = SVC_OK;
    s->step = STEP_IDLE;
    s->error[0] = '\0';
    s->on_standby = false;
    recovery_record(s, "cleared",
                    json_pack("{s:s, s:s}", "why", why, "after", recovery_phase_name(s->phase)));
    s->phase = PH_NONE;
    s->probe.failures = 0;
    s->probe.next_ms = 0;
    s->provision.retry_at = 0;
    s->provision.backoff_ms = 0;
    log_info("service %s: failed recovery cleared: %s", s->cfg->name, why);
    recovery_save(s);
    if (readied && s->cfg->standby.mode->release)
        s->cfg->standby.mode->release(s);
}

void recovery_clear_failed(struct svc *s, const char *why)
{
    recovery_cancel_io(s);
    snprintf(s->clear_why, sizeof(s->clear_why), "%s", why);
    /* An UPDATE that timed out may still have been applied (a DNS server that
     * was stopped answers its queue when it resumes): the name is put back on
     * the primary before the service is called ok. */
    if (s->phase < PH_PORT_OPEN) {
        finish_clear(s, why);
        return;
    }
    s->step = STEP_CLEAR;
    s->step_started = vcr_mono_ms();
    if (recovery_dns_switch(s) < 0) {
        log_warn("service %s: clearing its failed recovery: %s", s->cfg->name, s->error);
        s->step = STEP_IDLE;
    }
}

void recovery_clear_dns_done(struct svc *s, const char *error)
{
    if (error) {
        snprintf(s->error, sizeof(s->error), "clearing: DNS back to the primary %s: %.300s",
                 s->cfg->primary.address, error);
        log_warn("service %s: %s; it stays failed", s->cfg->name, s->error);
        s->step = STEP_IDLE;
        recovery_save(s);
        return;
    }
    finish_clear(s, s->clear_why);
}

json_t *recovery_reset(struct recovery *rc, const char *name, vcr_error_t *err)
{
    struct svc *s = find_svc(rc, name, err);
    if (s == NULL)
        return NULL;
    if (s->state != SVC_FAILED) {
        vcr_error_make(err, EBUSY, "service `%s` is %s; reset clears a failed recovery only", name,
                       recovery_state_name(s->state));
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
    recovery_clear_failed(s, "reset by the operator (vcr service reset)");
    /* Whatever the primary does now is a fresh start for the probes. */
    s->probe.answered = false;
    s->probe.unanswered_since = 0;
    return json_pack("{s:s, s:s, s:b}", "service", name, "state", recovery_state_name(s->state),
                     "clearing", s->step == STEP_CLEAR);
}

static struct svc *primary_of(struct recovery *rc, const char *host, const char *vm, size_t *i)
{
    for (; rc && *i < rc->n_svcs; (*i)++) {
        struct svc *s = &rc->svcs[*i];
        if (strcmp(s->cfg->primary.host, host) == 0 && strcmp(s->cfg->primary.vm, vm) == 0)
            return s;
    }
    return NULL;
}

int recovery_check_vm_start(struct recovery *rc, const char *host, const char *vm, vcr_error_t *err)
{
    struct svc *s;
    for (size_t i = 0; (s = primary_of(rc, host, vm, &i)) != NULL; i++) {
        if (s->on_standby || (s->state == SVC_RECOVERING && s->phase >= PH_FENCED))
            return vcr_error_make(err, EBUSY,
                                  "VM `%s` is the primary of service `%s`, which is served by its "
                                  "standby container now: started, it would answer beside it; "
                                  "`vcr failback %s` starts it and moves the service back",
                                  vm, s->cfg->name, s->cfg->name);
    }
    return 0;
}

/* How long a primary being stopped on order stays maintenance while its VM
 * still runs: the order's reply (a host agent answers once the VM is down, the
 * grace included) and then the report of its state. */
#define STOP_ORDERED_MS         60000
#define STOP_ANSWERED_MARGIN_MS 5000

void recovery_vm_stop_ordered(struct recovery *rc, const char *host, const char *vm)
{
    struct svc *s;
    for (size_t i = 0; (s = primary_of(rc, host, vm, &i)) != NULL; i++) {
        if (s->step != STEP_IDLE || (s->state != SVC_OK && s->state != SVC_DEGRADED))
            continue;
        probe_stop(&s->probe);
        s->state = SVC_STOPPED;
        s->stop_ordered_until = vcr_mono_ms() + STOP_ORDERED_MS;
        log_info("service %s: primary VM %s stopped by the operator: maintenance, no failover",
                 s->cfg->name, vm);
    }
}

void recovery_vm_stop_done(struct recovery *rc, const char *host, const char *vm, bool ok)
{
    struct svc *s;
    for (size_t i = 0; (s = primary_of(rc, host, vm, &i)) != NULL; i++) {
        if (s->stop_ordered_until == 0)
            continue;
        s->stop_ordered_until = ok ? vcr_mono_ms() + STOP_ANSWERED_MARGIN_MS : 0;
        if (!ok)
            log_info("service %s: the stop of its primary VM %s failed: watched again",
                     s->cfg->name, vm);
    }
}
