/* Failback (docs/recovery.md, "Failback"): a service served by its standby
 * container goes back to its primary.
 *
 *   [takeover address or both: the container releases the primary's address
 *   (before the primary may answer, and before its probe, which the
 *   container would otherwise answer)] -> [a service with data: its container stopped, its data
 * copied back into the primary's volume (service_data.c)] -> [vm_start, if the primary is not
 * running] -> probe the primary until it answers (its boot grace at most) -> DNS back to the
 * primary -> the switch's other ways back (switch.h give_back) -> the standby mode's own way back
 * (standby_mode.h: a cold container is stopped and destroyed) -> ok.
 *
 * The primary is started here, not by the operator beforehand: while the
 * service is served elsewhere a running primary is fenced again (primary.c),
 * so that it never answers beside the container.  A failback that fails
 * leaves the service `recovered` (or `failed`) with DNS on the container. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"
#include "server/recovery/switch.h"

/* A primary that ran already when failback was asked for answers within this. */
#define FAILBACK_RUNNING_PROBE_MS 10000
#define FAILBACK_RETRY_MS         500

/* One phase: journaled, then then(s) (NULL: nothing); extra: more members of
 * its journal entry (stolen, may be NULL).  Redundant servers
 * (recovery_ha.c): recorded in etcd first, with the service's state (saved
 * here when save, else by the caller with the state it leaves), journaled
 * once committed, and then(s) only then: a successor goes on after the last
 * phase etcd has (failback_resume), so none is done or journaled twice. */
static void failback_phase(struct svc *s, const char *phase, const char *error, json_t *extra_in,
                           void (*then)(struct svc *s), bool save)
{
    cleanup_json json_t *extra = extra_in;
    json_t *detail = json_pack("{s:s, s:s, s:s, s:I, s:s?}", "service", s->cfg->name, "phase",
                               phase, "mode", s->cfg->standby.mode->name, "elapsed_ms",
                               (json_int_t)(vcr_mono_ms() - s->step_started), "error", error);
    if (detail && extra)
        json_object_update(detail, extra);
    log_info("service %s: failback: %s%s%s", s->cfg->name, phase, error ? ": " : "",
             error ? error : "");
    if (s->rc->ha && s->fb_id[0]) {
        recovery_ha_failback_phase(s, phase, detail, then);
        if (save)
            recovery_save(s);
        return;
    }
    recovery_journal(s, JOURNAL_FAILBACK, detail);
    json_decref(detail);
    if (then)
        then(s);
}

static void failback_record(struct svc *s, const char *phase, const char *error,
                            void (*then)(struct svc *s))
{
    failback_phase(s, phase, error, NULL, then, true);
}

/* The failback is over: nothing of it is in flight any more. */
static void failback_clear(struct svc *s)
{
    s->fb_id[0] = s->fb_phase[0] = '\0';
}

static void failback_fail(struct svc *s, const char *error)
{
    char message[sizeof(s->error)];
    snprintf(message, sizeof(message), "failback: %s", error); /* error may be s->error */
    failback_phase(s, "failed", error, NULL, NULL, false);
    memcpy(s->error, message, sizeof(s->error));
    recovery_cancel_io(s);
    s->step = STEP_IDLE;
    s->failback_starting = false;
    failback_clear(s);
    recovery_save(s);
}

static void failback_done(struct svc *s)
{
    failback_phase(s, "done", NULL, NULL, NULL, false);
    s->step = STEP_IDLE;
    s->state = SVC_OK;
    s->phase = PH_NONE;
    s->on_standby = false;
    s->error[0] = '\0';
    s->probe.failures = 0;
    s->probe.answered = true; /* its check passed before DNS went back */
    s->probe.next_ms = 0;
    failback_clear(s);
    recovery_save(s);
}

void failback_finish(struct svc *s, const char *phase, const char *error)
{
    failback_record(s, phase, error, failback_done);
}

bool failback_order_reply(struct svc *s, enum order_outcome outcome, const char *message,
                          const char *what, const char *failed_phase)
{
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_FAILBACK)
        return false;
    if (outcome == ORDER_DONE)
        return true;
    /* The name points at the primary already: say so, and leave the standby. */
    log_warn("service %s: failback: could not %s %s: %s", s->cfg->name, what,
             recovery_standby_name(s), message ? message : "failed");
    failback_finish(s, failed_phase, message);
    return false;
}

/* Every way of the switch is back on the primary: the standby mode's own way back. */
static void on_switch_given_back(struct svc *s, const char *error)
{
    if (s->rc->stopping || s->step != STEP_FAILBACK)
        return;
    if (error) {
        failback_fail(s, error);
        return;
    }
    const struct standby_mode_ops *mode = s->cfg->standby.mode;
    if (mode->failback == NULL) {
        failback_done(s);
        return;
    }
    s->stage = 2; /* failback_tick holds while the standby is stopped */
    mode->failback(s);
}

/* DNS is back on the primary: the ways with a way back of their own
 * (switch.h give_back); the tick holds meanwhile (stage 2). */
static void give_back(struct svc *s)
{
    s->stage = 2;
    switch_give_back(s, on_switch_given_back);
}

void failback_dns_done(struct svc *s, const char *error)
{
    if (error) {
        failback_fail(s, error);
        return;
    }
    s->on_standby = false;
    failback_record(s, "dns_updated", NULL, give_back);
}

static void switch_dns_back(struct svc *s)
{
    if (recovery_dns_switch(s) < 0)
        failback_fail(s, s->error);
}

static void on_failback_probe(enum check_outcome outcome, const char *why, const char *body,
                              void *arg)
{
    struct svc *s = arg;
    (void)body;
    s->check = NULL;
    if (outcome != CHECK_HEALTHY) {
        snprintf(s->error, sizeof(s->error), "%s", why ? why : "failed");
        s->retry_at = vcr_mono_ms() + FAILBACK_RETRY_MS;
        return;
    }
    s->error[0] = '\0';
    failback_record(s, "primary_ok", NULL, switch_dns_back);
}

static void on_failback_start(enum order_outcome outcome, const char *message, void *opaque)
{
    struct svc *s = opaque;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_FAILBACK)
        return;
    s->failback_starting = false;
    if (outcome != ORDER_DONE) {
        char why[300];
        snprintf(why, sizeof(why), "vm_start of primary VM %s on host %s: %s", s->cfg->primary.vm,
                 s->cfg->primary.host, message ? message : "failed");
        failback_fail(s, why);
        return;
    }
    failback_record(s, "primary_started", NULL, NULL);
}

void failback_tick(struct svc *s, int64_t now)
{
    if (s->step != STEP_FAILBACK || s->order_pending || s->check || s->dns ||
        s->failback_starting || s->stage >= 2)
        return;
    if (now >= s->wait_until) {
        char why[500];
        snprintf(why, sizeof(why), "primary %s:%u did not answer within %lld ms: %.300s",
                 s->cfg->primary.address, s->cfg->primary.port,
                 (long long)(s->wait_until - s->step_started),
                 s->error[0] ? s->error : "its VM is not running");
        failback_fail(s, why);
        return;
    }
    if (now < s->retry_at || !recovery_primary_running(s))
        return;
    s->retry_at = now + FAILBACK_RETRY_MS;
    struct check_target t = recovery_primary_check(s, NULL);
    cleanup_error vcr_error_t err = NULL;
    s->check = check_start(s->rc->base, &t, on_failback_probe, s, &err);
    if (s->check == NULL)
        failback_fail(s, vcr_error_msg(err));
}

static int start_primary(struct svc *s, vcr_error_t *err)
{
    const struct service_config *c = s->cfg;
    if (agents_send_order(s->rc->agents, c->primary.host, "vm_start", c->primary.vm,
                          RECOVERY_VM_START_ORDER_MS, on_failback_start, s, err) < 0)
        return vcr_error_wrap(err, "service `%s`: failback: start primary VM `%s`", c->name,
                              c->primary.vm);
    s->order_pending = true;
    s->failback_starting = true;
    return 0;
}

static void on_reattached(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    if (outcome != ORDER_DONE)
        log_error("service %s: failback: container %s not restarted with its data: %s",
                  s->cfg->name, s->cfg->standby.container, message ? message : "failed");
}

/* The container was stopped for the copy: it serves again, with its data. */
static void data_back_failed(struct svc *s, const char *error)
{
    cleanup_json json_t *m = json_pack("{s:s, s:s, s:s}", "name", s->cfg->standby.container,
                                       "service", s->cfg->name, "path", s->cfg->data.path);
    cleanup_error vcr_error_t err2 = NULL;
    if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "data_attach",
                               s->cfg->standby.container, m, SERVICE_DATA_ORDER_MS, on_reattached,
                               s, &err2) < 0)
        log_error("service %s: failback: container %s not restarted: %s", s->cfg->name,
                  s->cfg->standby.container, vcr_error_msg(err2));
    char why[700];
    snprintf(why, sizeof(why), "data of %s back to volume %s of %s: %s", s->cfg->name,
             s->cfg->data.volume, s->cfg->primary.vm, error);
    failback_fail(s, why);
}

/* The data is in the primary's volume: the primary starts. */
static void after_data_returned(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    if (start_primary(s, &err) < 0)
        data_back_failed(s, vcr_error_msg(err));
}

static void on_data_back(struct svc *s, const char *error)
{
    if (s->rc->stopping || s->step != STEP_FAILBACK)
        return;
    s->failback_starting = false;
    if (error) {
        data_back_failed(s, error);
        return;
    }
    json_t *extra = json_pack("{s:s, s:I}", "volume", s->cfg->data.volume, "bytes",
                              (json_int_t)s->data.cur.bytes);
    failback_phase(s, "data_returned", NULL, extra, after_data_returned, true);
}

/* After the address release, if any: the primary's side. */
static int failback_primary(struct svc *s, bool running, vcr_error_t *err)
{
    if (running)
        return 0;
    if (s->cfg->data.volume) {
        /* The wait for the primary's answer counts from its start. */
        s->failback_starting = true;
        service_data_failback(s, on_data_back);
        return 0;
    }
    return start_primary(s, err);
}

static void primary_side(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    if (failback_primary(s, recovery_primary_running(s), &err) < 0)
        failback_fail(s, vcr_error_msg(err));
}

static void on_address_released(struct svc *s, const char *error)
{
    if (s->step != STEP_FAILBACK)
        return;
    if (error) {
        failback_fail(s, error);
        return;
    }
    failback_record(s, "address_released", NULL, primary_side);
}

/* After `started`: the address released first, if the container holds it. */
static int failback_begin(struct svc *s, vcr_error_t *err)
{
    if (switch_address_held(s)) {
        if (switch_address_release(s, on_address_released) < 0)
            return vcr_error_make(err, EIO, "service `%s`: failback: %s", s->cfg->name, s->error);
        return 0;
    }
    return failback_primary(s, recovery_primary_running(s), err);
}

static void begin_after_started(struct svc *s)
{
    cleanup_error vcr_error_t err = NULL;
    if (failback_begin(s, &err) < 0)
        failback_fail(s, vcr_error_msg(err));
}

static void failback_enter(struct svc *s, bool running)
{
    s->step = STEP_FAILBACK;
    s->step_started = vcr_mono_ms();
    s->retry_at = s->step_started;
    s->stage = 0;
    s->error[0] = '\0';
    s->failback_starting = false;
    uint32_t grace =
        s->cfg->check.boot_grace_ms ? s->cfg->check.boot_grace_ms : SERVICES_DEFAULT_BOOT_GRACE_MS;
    s->wait_until = s->step_started + (running ? FAILBACK_RUNNING_PROBE_MS : grace);
}

int failback_start(struct svc *s, vcr_error_t *err)
{
    const struct service_config *c = s->cfg;
    bool running = recovery_primary_running(s);
    struct inv_host *h = inventory_find_host(s->rc->inv, c->primary.host);
    if (!running && (h == NULL || h->state != INV_HOST_CONNECTED))
        return vcr_error_make(err, EBUSY,
                              "service `%s`: host `%s` of primary VM `%s` is not connected; "
                              "failback starts the primary there",
                              c->name, c->primary.host, c->primary.vm);
    if (c->data.volume && running)
        return vcr_error_make(err, EBUSY,
                              "service `%s`: primary VM `%s` runs: its volume `%s` cannot take "
                              "the container's data back while it does; stop it first",
                              c->name, c->primary.vm, c->data.volume);
    if (c->data.volume && !running && s->data.busy != DATA_IDLE)
        return vcr_error_make(err, EBUSY, "service `%s`: a data copy is under way; try again",
                              c->name);
    failback_enter(s, running);
    if (s->rc->ha) {
        /* Redundant servers: in etcd (`started`) before anything is ordered. */
        snprintf(s->fb_id, sizeof(s->fb_id), "%lld", (long long)vcr_wall_ms());
        failback_record(s, "started", NULL, begin_after_started);
        return 0;
    }
    failback_record(s, "started", NULL, NULL);
    if (failback_begin(s, err) < 0) {
        s->step = STEP_IDLE;
        return -1;
    }
    return 0;
}

/* The predecessor's vm_start started the primary: no start again, its probe follows. */
static void started_by_predecessor(struct svc *s)
{
    failback_record(s, "primary_started", NULL, NULL);
}

static void on_released_after_start(struct svc *s, const char *error)
{
    if (s->step != STEP_FAILBACK)
        return;
    if (error) {
        failback_fail(s, error);
        return;
    }
    failback_record(s, "address_released", NULL, started_by_predecessor);
}

/* A predecessor's failback goes on after the last phase etcd has: that
 * phase's step is not done again (a step in flight when the predecessor
 * died is repeated: each is safe to repeat, and the DNS switch is fenced by
 * the term, recovery_ha.c). */
void failback_resume(struct svc *s)
{
    const char *last = s->fb_phase;
    bool running = recovery_primary_running(s);
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(s->rc->inv, s->cfg->primary.vm, &h);
    /* Up to data_returned, a primary that runs or is starting was started by
     * the predecessor's vm_start (the step in flight): not again (the agent
     * refuses a second start), its probe follows. */
    bool started =
        running || (vm && h && h->state == INV_HOST_CONNECTED &&
                    strcmp(h->name, s->cfg->primary.host) == 0 && vm->state == INV_VM_STARTING);
    bool before_start = strcmp(last, "started") == 0 || strcmp(last, "address_released") == 0 ||
                        strcmp(last, "data_returned") == 0;
    /* The boot grace, counted from here: a primary that runs may be one the
     * predecessor's vm_start has just started, still booting (etcd has no
     * record of when its start began). */
    failback_enter(s, false);
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:s, s:b}", "service", s->cfg->name, "phase", "resumed", "after",
                  last, "failback_id", s->fb_id, "taken_over", true);
    recovery_journal(s, JOURNAL_FAILBACK, detail);
    log_info("service %s: failback %s of a predecessor: resumed after %s", s->cfg->name, s->fb_id,
             last);
    if (before_start && started && strcmp(last, "started") == 0 && switch_address_held(s)) {
        /* The release first, as failback_begin does: the container would
         * answer the primary's probe on its address. */
        if (switch_address_release(s, on_released_after_start) < 0)
            failback_fail(s, s->error);
    } else if (before_start && started) {
        started_by_predecessor(s);
    } else if (strcmp(last, "started") == 0) {
        begin_after_started(s);
    } else if (strcmp(last, "address_released") == 0) {
        primary_side(s);
    } else if (strcmp(last, "data_returned") == 0) {
        after_data_returned(s);
    } else if (strcmp(last, "primary_started") == 0) {
        /* failback_tick probes it */
    } else if (strcmp(last, "primary_ok") == 0) {
        switch_dns_back(s);
    } else if (strcmp(last, "dns_updated") == 0) {
        s->on_standby = false;
        give_back(s);
    } else {
        /* The standby mode's way back was recorded (standby_mode.h). */
        failback_done(s);
    }
}

/* --- failback: auto (docs/recovery.md, "Automatic failback") --- */

/* A monotonic instant as wall clock ms (0: none). */
static int64_t mono_wall(int64_t mono)
{
    return mono ? vcr_wall_ms() - (vcr_mono_ms() - mono) : 0;
}

/* ready_since_ms: the start of the healthy period (wall clock), 0 to leave it out. */
static void auto_record(struct svc *s, const char *phase, const char *why, int64_t ready_since_ms)
{
    cleanup_json json_t *detail = json_pack("{s:s, s:s, s:s, s:s}", "service", s->cfg->name,
                                            "phase", phase, "trigger", "auto", "why", why);
    if (detail && ready_since_ms)
        json_object_set_new(detail, "ready_since_ms", json_integer(ready_since_ms));
    recovery_journal(s, JOURNAL_FAILBACK, detail);
    log_info("service %s: failback: %s: %s", s->cfg->name, phase, why);
}

void failback_auto_tick(struct svc *s, int64_t now)
{
    const struct service_config *c = s->cfg;
    if (!c->failback.automatic || s->auto_suspended)
        return;
    struct inv_host *h = inventory_find_host(s->rc->inv, c->primary.host);
    bool ready = s->state == SVC_RECOVERED && s->on_standby && s->step == STEP_IDLE &&
                 !s->order_pending && h != NULL && h->state == INV_HOST_CONNECTED;
    if (!ready) {
        /* A healthy period loaded from a predecessor (recovery_ha.c) waits for
         * the host to say hello to this leader. */
        if (s->auto_carried_until && now < s->auto_carried_until && s->state == SVC_RECOVERED &&
            (h == NULL || h->state != INV_HOST_CONNECTED))
            return;
        s->auto_carried_until = 0;
        if (s->auto_ready_since) {
            s->auto_ready_since = 0;
            recovery_ha_auto_changed(s);
        }
        return;
    }
    s->auto_carried_until = 0;
    if (s->auto_ready_since == 0) {
        s->auto_ready_since = now;
        recovery_ha_auto_changed(s);
    }
    if (now - s->auto_ready_since < (int64_t)c->failback.after_s * 1000)
        return;
    int64_t since_last = now - s->auto_last_ms;
    if (s->auto_last_ms && since_last < (int64_t)c->failback.min_interval_s * 1000)
        return;
    char why[200];
    snprintf(why, sizeof(why), "recovered, host %s connected for %u s", c->primary.host,
             c->failback.after_s);
    cleanup_error vcr_error_t err = NULL;
    s->auto_last_ms = now;
    recovery_ha_auto_changed(s);
    if (failback_start(s, &err) < 0) {
        /* Tried again after after_s; logged at most once a minute. */
        s->auto_ready_since = now;
        recovery_ha_auto_changed(s);
        if (s->auto_retry_logged_ms == 0 || now - s->auto_retry_logged_ms >= 60000) {
            s->auto_retry_logged_ms = now;
            log_warn("service %s: automatic failback not started: %s", c->name, vcr_error_msg(err));
        }
        return;
    }
    auto_record(s, "auto_started", why, mono_wall(s->auto_ready_since));
}

void failback_auto_on_failure(struct svc *s)
{
    const struct service_config *c = s->cfg;
    if (!c->failback.automatic || s->auto_last_ms == 0 || s->auto_suspended)
        return;
    int64_t since = vcr_mono_ms() - s->auto_last_ms;
    if (since >= (int64_t)c->failback.min_interval_s * 1000)
        return;
    s->auto_suspended = true;
    recovery_ha_auto_changed(s);
    char why[200];
    snprintf(why, sizeof(why),
             "failed again %lld s after the last automatic failback (min_interval_s %u): "
             "`vcr failback` re-enables it",
             (long long)(since / 1000), c->failback.min_interval_s);
    auto_record(s, "auto_suspended", why, 0);
}

void failback_auto_resume(struct svc *s)
{
    if (!s->auto_suspended)
        return;
    s->auto_suspended = false;
    s->auto_last_ms = 0;
    recovery_ha_auto_changed(s);
    auto_record(s, "auto_resumed", "the operator failed back", 0);
}
