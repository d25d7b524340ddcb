/* The recovery engine's shared state in etcd, for redundant servers
 * (docs/ha.md, "Shared state").  Without `ha:` none of this runs: the
 * `recoveries` table (recovery_store.c) is the state, as always.
 *
 * Keys, under SERVER_HA_PREFIX:
 *   services/NAME                 the service's state (what the table row holds;
 *                                 a failback in flight: its id and last phase)
 *   recoveries/NAME/ID/PHASE      one record per phase done, written once
 *   failbacks/NAME/ID/PHASE       the same for a failback's phases (failback.c)
 * ID is the recovery's id (its detection's wall clock in ms), or the
 * failback's (its start's).  A phase is one
 * etcd txn: only while the leader key's create revision is this server's term
 * (so a deposed leader's write fails) and only if the phase's record does not
 * exist yet, it puts the record and the service's state together.  The phase
 * is journaled (locally) once that txn committed, and the next step starts
 * only then: a successor that loads the state resumes after the last phase
 * etcd has, so no phase is done or journaled twice.  A step in flight when the
 * leader died is repeated by the successor; every step is safe to repeat
 * (recovery.c), and the DNS step is fenced by the term (dns_update.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "config/server_config.h"
#include "dns/dns_update.h"
#include "dns/resolve.h"
#include "ha/etcd.h"
#include "ha/ha.h"
#include "server/journal.h"
#include "server/recovery/recovery_priv.h"

#define HA_RETRY_MS 200
/* The fence's query, and the wait before reading it again after a failure. */
#define FENCE_QUERY_MS    1000
#define FENCE_RETRY_MS    500
#define JOURNAL_DNS_FENCE "dns_fence"
#define SERVICES_PREFIX   SERVER_HA_PREFIX "services/"

static const enum svc_state state_of[] = {SVC_OK,        SVC_DEGRADED, SVC_RECOVERING,
                                          SVC_RECOVERED, SVC_FAILED,   SVC_STOPPED};

static int parse_state(const char *name)
{
    for (size_t i = 0; name && i < sizeof(state_of) / sizeof(state_of[0]); i++)
        if (strcmp(recovery_state_name(state_of[i]), name) == 0)
            return (int)state_of[i];
    return -1;
}

static int parse_phase(const char *name)
{
    for (int p = PH_NONE; name && p <= PH_CLIENT_CONFIRMED; p++)
        if (strcmp(recovery_phase_name((enum rec_phase)p), name) == 0)
            return p;
    return -1;
}

void recovery_ha_reset(struct svc *s)
{
    s->state = SVC_OK;
    s->phase = PH_NONE;
    s->step = STEP_IDLE;
    s->on_standby = false;
    s->cause[0] = s->error[0] = s->rec_id[0] = '\0';
    s->started_ms = 0;
    json_decref(s->timeline);
    s->timeline = json_array();
    s->auto_ready_since = s->auto_last_ms = s->auto_carried_until = 0;
    s->auto_suspended = false;
    s->fb_id[0] = s->fb_phase[0] = '\0';
}

static void drop_pending(struct svc *s)
{
    json_decref(s->ha_record);
    s->ha_record = NULL;
    s->ha_advance = s->ha_inflight = s->ha_dirty = s->ha_record_fb = false;
    s->ha_fb_then = NULL;
}

void recovery_ha_deposed(struct recovery *rc)
{
    if (rc == NULL || rc->ha == NULL)
        return;
    rc->ha_loaded = false;
    rc->ha_load_stale = rc->ha_loading; /* its answer is ignored; one load at a time */
    rc->ha_epoch++;
    rc->dns_fence_term = 0;
    resolve_cancel(rc->fence_query);
    rc->fence_query = NULL;
    if (rc->fence_claim)
        dns_update_cancel(rc->fence_claim);
    rc->fence_claim = NULL;
    recovery_ha_maint_drop(rc);
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        recovery_cancel_io(s);
        probe_stop(&s->probe);
        drop_pending(s);
        s->step = STEP_IDLE;
    }
}

/* --- writing --- */

/* The automatic failback's timers are monotonic in memory and wall clock in
 * etcd (another server's monotonic clock means nothing here). */
static json_int_t mono_to_wall(int64_t mono)
{
    return mono ? (json_int_t)(vcr_wall_ms() - (vcr_mono_ms() - mono)) : 0;
}

/* Back to this server's monotonic clock; an instant older than this clock's
 * start is its start (1): an elapsed time is never overstated, so a successor
 * fails back no earlier and rate-limits no less than its predecessor would. */
static int64_t wall_to_mono(json_t *wall)
{
    int64_t w = json_integer_value(wall);
    if (w <= 0)
        return 0;
    int64_t mono = vcr_mono_ms() - (vcr_wall_ms() - w);
    return mono > 0 ? mono : 1;
}

static json_t *auto_value(const struct svc *s)
{
    return json_pack("{s:I, s:I, s:b}", "ready_since_ms", mono_to_wall(s->auto_ready_since),
                     "last_ms", mono_to_wall(s->auto_last_ms), "suspended", s->auto_suspended);
}

static char *state_value(const struct svc *s, int64_t term)
{
    cleanup_json json_t *v = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:I, s:b, s:O, s:I, s:s, s:I}", "state",
        recovery_state_name(s->state), "phase", recovery_phase_name(s->phase), "rec_id", s->rec_id,
        "cause", s->cause, "error", s->error, "started_ms", (json_int_t)s->started_ms, "on_standby",
        s->on_standby, "timeline", s->timeline ? s->timeline : json_null(), "term",
        (json_int_t)term, "by", s->rc->cfg->ha.name, "updated_ms", (json_int_t)vcr_wall_ms());
    if (v && s->cfg->failback.automatic)
        json_object_set_new(v, "auto_failback", auto_value(s));
    /* A failback in flight, at the phase this txn records (or the last one
     * etcd has): a successor goes on after it. */
    const char *fb_phase = s->ha_record && s->ha_record_fb ? s->ha_record_phase : s->fb_phase;
    if (v && s->fb_id[0] && fb_phase[0])
        json_object_set_new(v, "failback",
                            json_pack("{s:s, s:s}", "id", s->fb_id, "phase", fb_phase));
    return v ? json_dumps(v, JSON_COMPACT) : NULL;
}

static void on_step(int status, const char *error, bool succeeded, int64_t guard_rev_now,
                    const struct etcd_kv *record, void *opaque);

static void start_write(struct svc *s)
{
    struct recovery *rc = s->rc;
    int64_t term = ha_term(rc->ha);
    if (term == 0 || term != rc->ha_term)
        return; /* deposed: recovery_ha_deposed drops everything */
    cleanup_free char *key = NULL, *rec_key = NULL, *value = state_value(s, term);
    cleanup_free char *rec_value = NULL;
    if (s->ha_record) {
        json_object_set_new(s->ha_record, "term", json_integer(term));
        json_object_set_new(s->ha_record, "by", json_string(rc->cfg->ha.name));
        json_object_set_new(s->ha_record, s->ha_record_fb ? "failback_id" : "rec_id",
                            json_string(s->ha_record_id));
        rec_value = json_dumps(s->ha_record, JSON_COMPACT);
        if (asprintf(&rec_key, "%s%s/%s/%s/%s", SERVER_HA_PREFIX,
                     s->ha_record_fb ? "failbacks" : "recoveries", s->cfg->name, s->ha_record_id,
                     s->ha_record_phase) < 0)
            rec_key = NULL;
    }
    cleanup_error vcr_error_t err = NULL;
    if (asprintf(&key, "%s%s", SERVICES_PREFIX, s->cfg->name) < 0 || value == NULL ||
        (s->ha_record && (rec_key == NULL || rec_value == NULL))) {
        key = NULL;
        vcr_error_make(&err, ENOMEM, "out of memory");
    } else if (etcd_step_guarded(ha_etcd(rc->ha), ha_leader_key(rc->ha), term, rec_key, rec_value,
                                 key, value, on_step, s, &err) == 0) {
        s->ha_inflight = true;
        s->ha_record_sent = s->ha_record != NULL;
        s->ha_dirty = false;
        s->ha_epoch = rc->ha_epoch;
        return;
    }
    log_warn("service %s: writing its state to etcd: %s", s->cfg->name, vcr_error_msg(err));
    s->ha_dirty = true;
    s->ha_retry_at = vcr_mono_ms() + HA_RETRY_MS;
}

static void on_step(int status, const char *error, bool succeeded, int64_t guard_rev_now,
                    const struct etcd_kv *record, void *opaque)
{
    struct svc *s = opaque;
    struct recovery *rc = s->rc;
    if (s->ha_epoch != rc->ha_epoch || !s->ha_inflight)
        return; /* written for a term that is over */
    s->ha_inflight = false;
    if (rc->stopping)
        return;
    if (status) {
        log_warn("service %s: writing its state to etcd: %s (retrying)", s->cfg->name,
                 error ? error : "failed");
        s->ha_dirty = true;
        s->ha_retry_at = vcr_mono_ms() + HA_RETRY_MS;
        return;
    }
    bool committed = succeeded;
    if (!succeeded && guard_rev_now != rc->ha_term) {
        /* Deposed: another server leads (or none); our own clock or poll
         * steps down within HA_POLL_MS.  Nothing is journaled or advanced. */
        log_warn("service %s: state not written: term %lld is stale (the leader key's is %lld)",
                 s->cfg->name, (long long)rc->ha_term, (long long)guard_rev_now);
        s->ha_dirty = true;
        s->ha_retry_at = vcr_mono_ms() + HA_RETRY_MS;
        return;
    }
    /* A phase that came while a write without it was in flight is not in
     * that txn: it goes in the next one. */
    bool sent = s->ha_record_sent && s->ha_record;
    if (!succeeded && sent && record->found) {
        /* The phase has its record already: ours, when an answer was lost
         * and the txn tried again on another member (the state went with it). */
        json_error_t jerr;
        cleanup_json json_t *v =
            record->value ? json_loadb(record->value, record->value_len, 0, &jerr) : NULL;
        int64_t by_term = json_integer_value(json_object_get(v, "term"));
        if (by_term == rc->ha_term) {
            committed = true;
        } else {
            log_error("service %s: phase %s of %s %s was recorded by term %lld already: "
                      "not journaled again",
                      s->cfg->name, s->ha_record_phase, s->ha_record_fb ? "failback" : "recovery",
                      s->ha_record_id, (long long)by_term);
            json_decref(s->ha_record);
            s->ha_record = NULL;
            sent = false;
            s->ha_dirty = true; /* the state was not written */
        }
    }
    if (committed && sent) {
        if (s->ha_record_fb) {
            snprintf(s->fb_phase, sizeof(s->fb_phase), "%s", s->ha_record_phase);
            recovery_journal(s, JOURNAL_FAILBACK, s->ha_record);
        } else {
            recovery_record_commit(s, s->ha_record_phase, s->ha_record);
        }
        json_decref(s->ha_record);
        s->ha_record = NULL;
    }
    if (!committed && !s->ha_dirty) {
        s->ha_dirty = true;
        s->ha_retry_at = vcr_mono_ms() + HA_RETRY_MS;
    }
    if ((s->ha_dirty || s->ha_record) && vcr_mono_ms() >= s->ha_retry_at)
        start_write(s);
    if (s->ha_record == NULL && s->ha_advance) {
        s->ha_advance = false;
        if (s->ha_record_fb) {
            void (*then)(struct svc *) = s->ha_fb_then;
            s->ha_record_fb = false;
            s->ha_fb_then = NULL;
            if (then)
                then(s);
        } else {
            recovery_advance(s);
        }
    }
}

void recovery_ha_save(struct svc *s)
{
    if (!s->rc->ha_loaded)
        return; /* nothing is written over etcd's state before it was read */
    if (s->ha_inflight) {
        s->ha_dirty = true;
        return;
    }
    start_write(s);
}

void recovery_ha_phase_done(struct svc *s, enum rec_phase phase, json_t *extra)
{
    const char *name = recovery_phase_name(phase);
    if (!s->rc->ha_loaded) {
        /* A late answer to a leader that stepped down: etcd's state is loaded
         * again when it leads again; nothing is recorded from here. */
        log_info("service %s: phase %s not recorded: this server no longer leads", s->cfg->name,
                 name);
        json_decref(extra);
        return;
    }
    json_decref(s->ha_record);
    s->ha_record = recovery_record_entry(s, name, extra);
    snprintf(s->ha_record_phase, sizeof(s->ha_record_phase), "%s", name);
    snprintf(s->ha_record_id, sizeof(s->ha_record_id), "%s", s->rec_id);
    s->ha_record_fb = false;
    s->ha_advance = true;
    recovery_save(s); /* the local row, and the txn (or after the one in flight) */
}

void recovery_ha_failback_phase(struct svc *s, const char *phase, json_t *detail,
                                void (*then)(struct svc *s))
{
    if (!s->rc->ha_loaded) {
        log_info("service %s: failback phase %s not recorded: this server no longer leads",
                 s->cfg->name, phase);
        json_decref(detail);
        return;
    }
    /* One phase at a time: the next one comes from its predecessor's then. */
    json_decref(s->ha_record);
    s->ha_record = detail;
    snprintf(s->ha_record_phase, sizeof(s->ha_record_phase), "%s", phase);
    snprintf(s->ha_record_id, sizeof(s->ha_record_id), "%s", s->fb_id);
    s->ha_record_fb = true;
    s->ha_fb_then = then;
    s->ha_advance = true;
    /* Written by the caller's recovery_save, with the state it leaves. */
}

void recovery_ha_auto_changed(struct svc *s)
{
    if (s->rc->ha)
        recovery_ha_save(s);
}

bool recovery_ha_tick(struct svc *s, int64_t now)
{
    if (s->rc->ha_loaded && !s->ha_inflight && (s->ha_dirty || s->ha_record) &&
        now >= s->ha_retry_at)
        start_write(s);
    return s->ha_advance;
}

/* --- the DNS zone's fence (dns_update.h) ---
 *
 * A new leader reads the fence (FENCE TXT, the term of the leader that last
 * claimed the zone) and moves it to its own term by one UPDATE whose
 * prerequisite is the value it read: a compare-and-swap that only ever moves
 * the fence up (a leader that finds a newer term there claims nothing).
 * Every DNS switch of this leader then requires the fence to be its term: once
 * a newer leader has claimed the zone, a deposed one's switches fail with
 * NXRRSET, whatever its own clock says. */

static void fence_name(const struct recovery *rc, char *out, size_t size)
{
    snprintf(out, size, "%s.%s", DNS_FENCE_LABEL, rc->cfg->dns->zone);
}

static void fence_retry(struct recovery *rc)
{
    rc->fence_retry_at = vcr_mono_ms() + FENCE_RETRY_MS;
}

static void on_fence_claimed(const struct dns_update_outcome *outcome, const char *error, void *arg)
{
    struct recovery *rc = arg;
    (void)outcome;
    rc->fence_claim = NULL;
    if (error) {
        /* Moved meanwhile (NXRRSET/YXRRSET) or not done: read it again. */
        log_warn("ha: claiming the DNS zone's fence for term %lld: %s", (long long)rc->ha_term,
                 error);
        fence_retry(rc);
        return;
    }
    rc->dns_fence_term = rc->ha_term;
    log_info("ha: the DNS zone's fence holds term %lld", (long long)rc->ha_term);
}

static void on_fence_read(bool answered, const char *txt, const char *why, void *arg)
{
    struct recovery *rc = arg;
    rc->fence_query = NULL;
    if (!answered) {
        log_warn("ha: reading the DNS zone's fence: %s", why ? why : "no answer");
        fence_retry(rc);
        return;
    }
    char *end = NULL;
    long long held = txt ? strtoll(txt, &end, 10) : 0;
    if (txt && (end == txt || *end != '\0' || held < 0)) {
        log_warn("ha: the DNS zone's fence holds `%s`, not a term: no DNS switch until it is "
                 "deleted (docs/ha.md)",
                 txt);
        fence_retry(rc);
        return;
    }
    if (held == rc->ha_term) {
        rc->dns_fence_term = rc->ha_term; /* claimed by this leader already */
        return;
    }
    if (held > rc->ha_term) {
        log_warn("ha: the DNS zone's fence holds term %lld, newer than this leader's %lld: "
                 "no DNS switch from here",
                 held, (long long)rc->ha_term);
        fence_retry(rc);
        return;
    }
    struct dns_update_config dc;
    recovery_dns_config(rc, &dc);
    dc.fence_term = held > 0 ? held : 0;
    dc.fence_claim = rc->ha_term;
    cleanup_error vcr_error_t err = NULL;
    rc->fence_claim =
        dns_update_start(rc->base, &dc, NULL, 0, NULL, NULL, on_fence_claimed, rc, &err);
    if (rc->fence_claim == NULL) {
        log_warn("ha: claiming the DNS zone's fence: %s", vcr_error_msg(err));
        fence_retry(rc);
        return;
    }
    cleanup_json json_t *detail = json_pack("{s:I, s:I}", "from", (json_int_t)(held > 0 ? held : 0),
                                            "to", (json_int_t)rc->ha_term);
    journal_note(rc->journal, 0, NULL, NULL, JOURNAL_DNS_FENCE, detail);
}

static void dns_fence_tick(struct recovery *rc)
{
    if (rc->cfg->dns == NULL || rc->dns_fence_term == rc->ha_term || rc->fence_query ||
        rc->fence_claim || vcr_mono_ms() < rc->fence_retry_at)
        return;
    char name[300];
    fence_name(rc, name, sizeof(name));
    const struct dns_settings *d = rc->cfg->dns;
    cleanup_error vcr_error_t err = NULL;
    rc->fence_query = resolve_txt_start(rc->base, d->server, d->port, name, FENCE_QUERY_MS,
                                        on_fence_read, rc, &err);
    if (rc->fence_query == NULL) {
        log_warn("ha: reading the DNS zone's fence: %s", vcr_error_msg(err));
        fence_retry(rc);
    }
}

bool recovery_ha_dns_fenced(struct recovery *rc)
{
    return rc->ha_loaded && rc->dns_fence_term != 0 && rc->dns_fence_term == rc->ha_term;
}

void recovery_ha_dns_stale(struct svc *s)
{
    struct recovery *rc = s->rc;
    const char *address, *address6;
    recovery_dns_target(s, &address, &address6);
    log_warn("service %s: DNS switch to %s refused by the zone's fence: term %lld is stale (a "
             "newer leader has claimed the zone); not retried",
             s->cfg->name, address, (long long)rc->dns_fence_term);
    cleanup_json json_t *detail = json_pack("{s:s, s:s, s:I}", "service", s->cfg->name, "address",
                                            address, "term", (json_int_t)rc->dns_fence_term);
    recovery_journal(s, "dns_stale", detail);
    /* Read the fence again: a deposed leader finds a newer term there and
     * never switches; the switch waits (dropped when it steps down). */
    rc->dns_fence_term = 0;
    s->dns_waiting = true;
}

/* --- loading, on taking the lead --- */

static struct svc *svc_named(struct recovery *rc, const char *name)
{
    for (size_t i = 0; i < rc->n_svcs; i++)
        if (strcmp(rc->svcs[i].cfg->name, name) == 0)
            return &rc->svcs[i];
    return NULL;
}

static void on_load_each(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct recovery *rc = opaque;
    if (!rc->ha_loading || rc->ha_load_stale ||
        strncmp(key, SERVICES_PREFIX, strlen(SERVICES_PREFIX)) != 0)
        return;
    struct svc *s = svc_named(rc, key + strlen(SERVICES_PREFIX));
    json_error_t jerr;
    cleanup_json json_t *v = kv->value ? json_loadb(kv->value, kv->value_len, 0, &jerr) : NULL;
    if (s == NULL || !json_is_object(v))
        return;
    int state = parse_state(json_string_value(json_object_get(v, "state")));
    int phase = parse_phase(json_string_value(json_object_get(v, "phase")));
    const char *rec_id = json_string_value(json_object_get(v, "rec_id"));
    const char *cause = json_string_value(json_object_get(v, "cause"));
    const char *error = json_string_value(json_object_get(v, "error"));
    s->state = state >= 0 ? (enum svc_state)state : SVC_OK;
    s->phase = phase >= 0 ? (enum rec_phase)phase : PH_NONE;
    snprintf(s->rec_id, sizeof(s->rec_id), "%s", rec_id ? rec_id : "");
    snprintf(s->cause, sizeof(s->cause), "%s", cause ? cause : "");
    snprintf(s->error, sizeof(s->error), "%s", error ? error : "");
    s->started_ms = json_integer_value(json_object_get(v, "started_ms"));
    s->on_standby = json_is_true(json_object_get(v, "on_standby"));
    json_t *timeline = json_object_get(v, "timeline");
    json_decref(s->timeline);
    s->timeline = json_is_array(timeline) ? json_deep_copy(timeline) : json_array();
    /* Both are read from the agents' reports again. */
    if (s->state == SVC_DEGRADED || s->state == SVC_STOPPED)
        s->state = SVC_OK;
    /* The automatic failback's healthy period goes on through the takeover
     * (failback.c keeps it while the host reconnects), and its rate limit and
     * suspension are the predecessor's. */
    json_t *af = json_object_get(v, "auto_failback");
    s->auto_ready_since = wall_to_mono(json_object_get(af, "ready_since_ms"));
    s->auto_last_ms = wall_to_mono(json_object_get(af, "last_ms"));
    s->auto_suspended = json_is_true(json_object_get(af, "suspended"));
    s->auto_carried_until =
        s->auto_ready_since ? vcr_mono_ms() + (int64_t)rc->cfg->host_timeout_ms : 0;
    json_t *fb = json_object_get(v, "failback");
    const char *fb_id = json_string_value(json_object_get(fb, "id"));
    const char *fb_phase = json_string_value(json_object_get(fb, "phase"));
    snprintf(s->fb_id, sizeof(s->fb_id), "%s", fb_id && fb_phase ? fb_id : "");
    snprintf(s->fb_phase, sizeof(s->fb_phase), "%s", fb_id && fb_phase ? fb_phase : "");
    s->ha_seen = true;
}

static void on_load_done(int status, const char *error, void *opaque)
{
    struct recovery *rc = opaque;
    rc->ha_loading = false;
    if (rc->ha_load_stale) {
        rc->ha_load_stale = false; /* deposed meanwhile: the next tick loads again */
        return;
    }
    if (status) {
        log_warn("ha: loading the services' state from etcd: %s (retrying)",
                 error ? error : "failed");
        return;
    }
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < rc->n_svcs; i++) {
        struct svc *s = &rc->svcs[i];
        if (!s->ha_seen)
            recovery_ha_reset(s);
        drop_pending(s);
        s->step = STEP_IDLE;
        if (s->state == SVC_RECOVERING) {
            /* As after a restart: the agents get time to say hello again. */
            s->step = STEP_RESUME_WAIT;
            s->started_mono = now - (vcr_wall_ms() - s->started_ms);
            s->wait_until = now + rc->cfg->host_timeout_ms;
            log_info("service %s: recovery %s in flight (after phase %s) taken over in term %lld",
                     s->cfg->name, s->rec_id, recovery_phase_name(s->phase),
                     (long long)rc->ha_term);
        } else if (s->fb_id[0]) {
            /* A failback in flight: it goes on (failback_resume) once the
             * hosts it orders say hello, or had host_timeout_ms to. */
            s->step = STEP_RESUME_WAIT;
            s->wait_until = now + rc->cfg->host_timeout_ms;
            log_info("service %s: failback %s in flight (after phase %s) taken over in term %lld",
                     s->cfg->name, s->fb_id, s->fb_phase, (long long)rc->ha_term);
        }
    }
    /* Then the warm-restart windows; the state counts as loaded after them. */
    cleanup_error vcr_error_t err = NULL;
    if (recovery_ha_maint_load(rc, &err) < 0)
        log_warn("ha: loading the warm-restart windows from etcd: %s", vcr_error_msg(err));
}

bool recovery_ha_ready(struct recovery *rc)
{
    int64_t term = ha_term(rc->ha); /* 0: not leading (stepped down first if due) */
    if (term == 0)
        return false;
    if (rc->ha_loaded && term == rc->ha_term) {
        dns_fence_tick(rc);
        return true;
    }
    if (rc->ha_loaded || (rc->ha_loading && !rc->ha_load_stale && term != rc->ha_term))
        recovery_ha_deposed(rc); /* a new term without a step-down seen: start over */
    if (rc->ha_loading)
        return false;
    for (size_t i = 0; i < rc->n_svcs; i++)
        rc->svcs[i].ha_seen = false;
    rc->ha_term = term;
    cleanup_error vcr_error_t err = NULL;
    if (etcd_get_prefix(ha_etcd(rc->ha), SERVICES_PREFIX, on_load_each, on_load_done, rc, &err) <
        0) {
        log_warn("ha: loading the services' state from etcd: %s", vcr_error_msg(err));
        return false;
    }
    rc->ha_loading = true;
    return false;
}
