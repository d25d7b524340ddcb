/* A service's data follows it (see service_data.h, docs/data.md). */
#include "server/service_data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_code.h"
#include "server/agents.h"
#include "server/chunk_copy.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/recovery/recovery_priv.h"

enum copy_stage { STAGE_SNAPSHOT, STAGE_TRANSFER, STAGE_INSTALL, STAGE_EXPORT, STAGE_RESTORE };

int64_t service_data_age_ms(int64_t detected_ms, int64_t taken_ms)
{
    return taken_ms >= detected_ms ? 0 : detected_ms - taken_ms;
}

static const char *outcome_text(enum order_outcome outcome)
{
    return outcome == ORDER_DONE      ? "done"
           : outcome == ORDER_REFUSED ? "refused"
           : outcome == ORDER_TIMEOUT ? "no reply in time"
                                      : "host unreachable";
}

static int64_t int_member(json_t *reply, const char *key)
{
    json_t *v = json_object_get(reply, key);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static bool host_connected(const struct svc *s, const char *host)
{
    const struct inv_host *h = inventory_find_host(s->rc->inv, host);
    return h && h->state == INV_HOST_CONNECTED;
}

/* The standby host the data goes to: the recovery's, or where the container is. */
static const char *data_host(const struct svc *s)
{
    return s->target_host[0] ? s->target_host : recovery_container_host(s);
}

/* Ends the copy (or the way back) under way; its caller's done runs last. */
static void copy_end(struct svc *s, const char *error)
{
    struct svc_data *d = &s->data;
    void (*done)(struct svc *, const char *) = d->done;
    if (error) {
        snprintf(d->last_error, sizeof(d->last_error), "%s", error);
    } else if (d->busy != DATA_FAILBACK) {
        d->last = d->cur;
        d->last_error[0] = '\0';
    }
    d->busy = DATA_IDLE;
    d->done = NULL;
    if (done)
        done(s, error);
}

static bool order_ok(struct svc *s, const char *what, enum order_outcome outcome,
                     const char *message)
{
    if (s->rc->stopping)
        return false;
    if (outcome == ORDER_DONE)
        return true;
    char text[500];
    snprintf(text, sizeof(text), "%s: %s%s%s", what, outcome_text(outcome), message ? ": " : "",
             message ? message : "");
    copy_end(s, text);
    return false;
}

static int send(struct svc *s, const char *host, const char *action, const char *vm,
                json_t *members, agents_order_reply_cb cb)
{
    cleanup_error vcr_error_t err = NULL;
    s->data.t_stage = vcr_mono_ms();
    if (agents_send_order_with(s->rc->agents, host, action, vm, members, SERVICE_DATA_ORDER_MS, cb,
                               s, &err) < 0) {
        char text[400];
        snprintf(text, sizeof(text), "%s on %s: %s", action, host, vcr_error_msg(err));
        copy_end(s, text);
        return -1;
    }
    return 0;
}

/* --- one copy: snapshot, transfer, install --- */

static void on_installed(enum order_outcome outcome, const char *message, json_t *reply,
                         void *opaque)
{
    (void)reply;
    struct svc *s = opaque;
    if (!order_ok(s, "data_install", outcome, message))
        return;
    s->data.cur.install_ms = vcr_mono_ms() - s->data.t_stage;
    copy_end(s, NULL);
}

static void on_transferred(const char *error, int64_t bytes, int64_t ms, void *opaque)
{
    struct svc *s = opaque;
    if (s->rc->stopping)
        return;
    if (error) {
        copy_end(s, error);
        return;
    }
    struct svc_data *d = &s->data;
    (void)bytes;
    d->cur.transfer_ms = ms;
    d->stage = STAGE_INSTALL;
    cleanup_json json_t *m =
        json_pack("{s:s, s:s, s:I, s:s}", "name", s->cfg->standby.container, "service",
                  s->cfg->name, "taken_ms", (json_int_t)d->cur.taken_ms, "sha256", d->sha256);
    send(s, d->host, "data_install", s->cfg->standby.container, m, on_installed);
}

static void on_snapshot(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    struct svc *s = opaque;
    struct svc_data *d = &s->data;
    if (!order_ok(s, "volume_snapshot", outcome, message))
        return;
    const char *sum = json_string_value(json_object_get(reply, "sha256"));
    const char *method = json_string_value(json_object_get(reply, "method"));
    d->cur.bytes = int_member(reply, "bytes");
    d->cur.raw_bytes = int_member(reply, "raw_bytes");
    d->cur.taken_ms = int_member(reply, "taken_ms");
    d->cur.snapshot_ms = vcr_mono_ms() - d->t_stage;
    snprintf(d->sha256, sizeof(d->sha256), "%s", sum ? sum : "");
    snprintf(d->cur.method, sizeof(d->cur.method), "%s", method ? method : "?");
    if (sum == NULL || d->cur.bytes <= 0 || d->cur.taken_ms <= 0) {
        copy_end(s, "volume_snapshot: the reply has no size, SHA-256 or taken_ms");
        return;
    }
    d->stage = STAGE_TRANSFER;
    cleanup_json json_t *rd = json_pack("{s:s}", "volume", s->cfg->data.volume);
    cleanup_json json_t *wr =
        json_pack("{s:s, s:s}", "name", s->cfg->standby.container, "service", s->cfg->name);
    struct chunk_copy_spec spec = {
        .src_host = s->cfg->primary.host,
        .src_vm = s->cfg->primary.vm,
        .read_action = "volume_snapshot_read",
        .dst_host = d->host,
        .dst_vm = s->cfg->standby.container,
        .write_action = "data_write",
        .read_members = rd,
        .write_members = wr,
        .bytes = d->cur.bytes,
        .sha256 = sum,
    };
    cleanup_error vcr_error_t err = NULL;
    if (chunk_copy_start(s->rc->agents, &spec, on_transferred, s, &err) < 0)
        copy_end(s, vcr_error_msg(err));
}

static void copy_start(struct svc *s, const char *host, enum data_busy why,
                       void (*done)(struct svc *s, const char *error))
{
    struct svc_data *d = &s->data;
    d->busy = why;
    d->done = done;
    d->stage = STAGE_SNAPSHOT;
    memset(&d->cur, 0, sizeof(d->cur));
    snprintf(d->host, sizeof(d->host), "%s", host);
    snprintf(d->cur.host, sizeof(d->cur.host), "%s", host);
    cleanup_json json_t *m = json_pack("{s:s}", "volume", s->cfg->data.volume);
    send(s, s->cfg->primary.host, "volume_snapshot", s->cfg->primary.vm, m, on_snapshot);
}

/* --- recovery --- */

static json_t *copy_json(const struct copy_result *c)
{
    return json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:s}", "taken_ms",
                     (json_int_t)c->taken_ms, "bytes", (json_int_t)c->bytes, "raw_bytes",
                     (json_int_t)c->raw_bytes, "method", c->method, "snapshot_ms",
                     (json_int_t)c->snapshot_ms, "transfer_ms", (json_int_t)c->transfer_ms,
                     "install_ms", (json_int_t)c->install_ms, "host", c->host);
}

static void on_recovery_copy(struct svc *s, const char *error)
{
    if (s->rc->stopping || s->state != SVC_RECOVERING || s->step != STEP_DATA)
        return;
    if (error) {
        log_warn("service %s: fresh data copy failed: %s; using the last copy on %s", s->cfg->name,
                 error, data_host(s));
        recovery_phase_done(s, PH_DATA_COPIED,
                            json_pack("{s:s, s:s}", "source", "standby", "why", error));
        return;
    }
    json_t *extra = copy_json(&s->data.last);
    json_object_set_new(extra, "source", json_string("primary"));
    recovery_phase_done(s, PH_DATA_COPIED, extra);
}

void service_data_copy_step(struct svc *s)
{
    s->step = STEP_DATA;
    s->step_started = vcr_mono_ms();
    if (s->data.busy != DATA_IDLE)
        return; /* a periodic copy is under way: service_data_tick comes back */
    if (!host_connected(s, s->cfg->primary.host)) {
        char why[200];
        snprintf(why, sizeof(why),
                 "host %s of the primary is not connected: the last copy that "
                 "reached the standby",
                 s->cfg->primary.host);
        recovery_phase_done(s, PH_DATA_COPIED,
                            json_pack("{s:s, s:s}", "source", "standby", "why", why));
        return;
    }
    copy_start(s, data_host(s), DATA_RECOVERY, on_recovery_copy);
}

static void on_attached(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    struct svc *s = opaque;
    s->data.busy = DATA_IDLE;
    if (s->rc->stopping || s->state != SVC_RECOVERING || s->step != STEP_DATA)
        return;
    enum proto_code code = outcome == ORDER_REFUSED
                               ? proto_code_parse(json_string_value(json_object_get(reply, "code")))
                               : PROTO_CODE_NONE;
    if (code == PROTO_CODE_ABSENT) {
        /* No copy ever reached this standby: the service runs, without its data. */
        s->data.age_ms = -1;
        log_error("service %s: no data copy on %s: the container serves without its data (%s)",
                  s->cfg->name, data_host(s), message ? message : "");
        recovery_phase_done(s, PH_DATA_ATTACHED,
                            json_pack("{s:s, s:n, s:s}", "host", data_host(s), "data_age_ms",
                                      "error", message ? message : "no copy"));
        return;
    }
    if (outcome != ORDER_DONE) {
        recovery_fail(s, "data_attach of %s on %s: %s%s%s", s->cfg->name, data_host(s),
                      outcome_text(outcome), message ? ": " : "", message ? message : "");
        return;
    }
    int64_t taken = int_member(reply, "taken_ms");
    s->data.age_ms = taken > 0 ? service_data_age_ms(s->started_ms, taken) : -1;
    recovery_phase_done(s, PH_DATA_ATTACHED,
                        json_pack("{s:s, s:s, s:I, s:I, s:O?, s:I, s:O?}", "host", data_host(s),
                                  "path", s->cfg->data.path, "taken_ms", (json_int_t)taken,
                                  "data_age_ms", (json_int_t)s->data.age_ms, "restarted",
                                  json_object_get(reply, "restarted"), "attach_ms",
                                  (json_int_t)int_member(reply, "attach_ms"), "owner_changed",
                                  json_object_get(reply, "owner_changed")));
}

void service_data_attach_step(struct svc *s)
{
    s->step = STEP_DATA;
    s->step_started = vcr_mono_ms();
    s->data.busy = DATA_RECOVERY;
    cleanup_json json_t *m = json_pack("{s:s, s:s, s:s}", "name", s->cfg->standby.container,
                                       "service", s->cfg->name, "path", s->cfg->data.path);
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, data_host(s), "data_attach",
                               s->cfg->standby.container, m, SERVICE_DATA_ORDER_MS, on_attached, s,
                               &err) < 0) {
        s->data.busy = DATA_IDLE;
        recovery_fail(s, "data_attach on %s: %s", data_host(s), vcr_error_msg(err));
    }
}

/* --- failback: export, copy back, restore --- */

static void on_restored(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    (void)reply;
    struct svc *s = opaque;
    if (!order_ok(s, "volume_restore", outcome, message))
        return;
    log_info("service %s: data back in volume %s of %s (%lld ms)", s->cfg->name,
             s->cfg->data.volume, s->cfg->primary.vm, (long long)(vcr_mono_ms() - s->data.t_stage));
    copy_end(s, NULL);
}

static void on_copied_back(const char *error, int64_t bytes, int64_t ms, void *opaque)
{
    struct svc *s = opaque;
    (void)bytes;
    if (s->rc->stopping)
        return;
    if (error) {
        copy_end(s, error);
        return;
    }
    s->data.cur.transfer_ms = ms;
    s->data.stage = STAGE_RESTORE;
    cleanup_json json_t *m = json_pack("{s:s}", "volume", s->cfg->data.volume);
    send(s, s->cfg->primary.host, "volume_restore", s->cfg->primary.vm, m, on_restored);
}

static void on_exported(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    struct svc *s = opaque;
    if (!order_ok(s, "data_export", outcome, message))
        return;
    const char *sum = json_string_value(json_object_get(reply, "sha256"));
    int64_t bytes = int_member(reply, "bytes");
    cleanup_json json_t *rd =
        json_pack("{s:s, s:s}", "name", s->cfg->standby.container, "service", s->cfg->name);
    cleanup_json json_t *wr = json_pack("{s:s}", "volume", s->cfg->data.volume);
    struct chunk_copy_spec spec = {
        .src_host = s->data.host,
        .src_vm = s->cfg->standby.container,
        .read_action = "data_read",
        .dst_host = s->cfg->primary.host,
        .dst_vm = s->cfg->primary.vm,
        .write_action = "volume_restore_write",
        .read_members = rd,
        .write_members = wr,
        .bytes = bytes,
        .sha256 = sum,
    };
    s->data.stage = STAGE_TRANSFER;
    s->data.cur.bytes = bytes;
    cleanup_error vcr_error_t err = NULL;
    if (chunk_copy_start(s->rc->agents, &spec, on_copied_back, s, &err) < 0)
        copy_end(s, vcr_error_msg(err));
}

void service_data_failback(struct svc *s, void (*done)(struct svc *s, const char *error))
{
    struct svc_data *d = &s->data;
    d->busy = DATA_FAILBACK;
    d->done = done;
    d->stage = STAGE_EXPORT;
    memset(&d->cur, 0, sizeof(d->cur));
    snprintf(d->host, sizeof(d->host), "%s", recovery_container_host(s));
    cleanup_json json_t *m =
        json_pack("{s:s, s:s}", "name", s->cfg->standby.container, "service", s->cfg->name);
    send(s, d->host, "data_export", s->cfg->standby.container, m, on_exported);
}

/* --- periodic copies of a warm service --- */

static void on_periodic_copy(struct svc *s, const char *error)
{
    const struct copy_result *c = &s->data.last;
    cleanup_json json_t *detail = error ? json_pack("{s:s, s:s, s:b, s:s}", "service", s->cfg->name,
                                                    "host", s->data.host, "ok", 0, "error", error)
                                        : copy_json(c);
    if (detail && !error) {
        json_object_set_new(detail, "service", json_string(s->cfg->name));
        json_object_set_new(detail, "ok", json_true());
    }
    journal_note(s->rc->journal, 0, s->data.host, s->cfg->standby.container, JOURNAL_DATA_COPY,
                 detail);
    if (error)
        log_warn("service %s: data copy to %s failed: %s", s->cfg->name, s->data.host, error);
    else
        log_info("service %s: data copy to %s: %lld bytes (%lld raw, %s) in %lld ms", s->cfg->name,
                 c->host, (long long)c->bytes, (long long)c->raw_bytes, c->method,
                 (long long)(c->snapshot_ms + c->transfer_ms + c->install_ms));
}

/* Another service's copy to the same standby host under way, or NULL. */
static const struct svc *standby_busy(const struct svc *s, const char *host)
{
    for (size_t i = 0; i < s->rc->n_svcs; i++) {
        const struct svc *o = &s->rc->svcs[i];
        if (o != s && o->data.busy != DATA_IDLE && strcmp(o->data.host, host) == 0)
            return o;
    }
    return NULL;
}

void service_data_tick(struct svc *s, int64_t now)
{
    struct svc_data *d = &s->data;
    const struct service_config *c = s->cfg;
    if (c->data.volume == NULL || d->busy != DATA_IDLE)
        return;
    if (s->state == SVC_RECOVERING && s->step == STEP_DATA && s->phase == PH_CONTAINER_READY) {
        service_data_copy_step(s); /* it waited for a periodic copy to end */
        return;
    }
    if (c->data.interval_s == 0 || !c->standby.mode->provisioned || now < d->next_copy_mono ||
        (s->state != SVC_OK && s->state != SVC_DEGRADED) || s->step != STEP_IDLE ||
        !recovery_primary_running(s) || !provision_container_running(s))
        return;
    d->next_copy_mono = now + (int64_t)c->data.interval_s * 1000;
    const char *host = recovery_container_host(s);
    const struct svc *other = standby_busy(s, host);
    if (other) {
        log_info("service %s: data copy skipped: a copy for %s to %s is still under way", c->name,
                 other->cfg->name, host);
        return;
    }
    copy_start(s, host, DATA_PERIODIC, on_periodic_copy);
}

json_t *service_data_json(const struct svc *s)
{
    const struct service_config *c = s->cfg;
    if (c->data.volume == NULL)
        return NULL;
    const struct svc_data *d = &s->data;
    json_t *last = d->last.taken_ms > 0 ? copy_json(&d->last) : json_null();
    /* From the timeline, which a restarted server reloads. */
    json_t *age = json_null();
    size_t i;
    json_t *entry;
    json_array_foreach(s->timeline, i, entry)
    {
        const char *phase = json_string_value(json_object_get(entry, "phase"));
        if (phase && strcmp(phase, "data_attached") == 0)
            age = json_object_get(entry, "data_age_ms");
    }
    age = json_incref(age ? age : json_null());
    static const char *const busy[] = {[DATA_IDLE] = NULL,
                                       [DATA_PERIODIC] = "periodic copy",
                                       [DATA_RECOVERY] = "recovery",
                                       [DATA_FAILBACK] = "failback"};
    return json_pack("{s:s, s:s, s:I, s:o, s:o, s:s?, s:s?}", "volume", c->data.volume, "path",
                     c->data.path, "interval_s", (json_int_t)c->data.interval_s, "last_copy", last,
                     "age_ms", age, "busy", busy[d->busy], "error",
                     d->last_error[0] ? d->last_error : NULL);
}
