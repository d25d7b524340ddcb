/* Detection (docs/recovery.md, "Detection"): a primary VM's failure state,
 * its host lost, or its service's probes failing start a recovery. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_state.h"
#include "server/check.h"
#include "server/recovery.h"
#include "server/recovery/recovery_priv.h"

void recovery_detect(struct svc *s, const char *cause)
{
    if (s->state != SVC_OK && s->state != SVC_DEGRADED)
        return;
    /* A new leader decides nothing before it has its predecessor's state. */
    if (s->rc->ha && !s->rc->ha_loaded)
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
    snprintf(s->rec_id, sizeof(s->rec_id), "%lld", (long long)s->started_ms);
    json_decref(s->timeline);
    s->timeline = json_array();
    log_warn("service %s: failure detected: %s", s->cfg->name, cause);
    failback_auto_on_failure(s);
    recovery_phase_done(s, PH_DETECTED, json_pack("{s:s}", "cause", cause));
}

void recovery_on_vm_event(struct recovery *rc, const char *host, const char *vm, const char *state,
                          const char *cause)
{
    if (rc == NULL || rc->stopping || state == NULL)
        return;
    if (!proto_vm_state_is_failure(proto_vm_state_parse(state)))
        return;
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (strcmp(s->cfg->primary.host, host) != 0 || strcmp(s->cfg->primary.vm, vm) != 0)
            continue;
        char why[200];
        snprintf(why, sizeof(why), "VM %s %s (%s)", vm, state, cause ? cause : "no cause");
        recovery_detect(s, why);
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
        recovery_detect(s, why);
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
            recovery_clear_failed(s, "its primary answers again");
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
        recovery_detect(s, cause);
    }
}
