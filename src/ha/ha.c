/* Leader election on an etcd lease (ha.h, docs/ha.md).  One cron tick drives
 * the lease's keepalives, the leader key's polls and the leader's own clock
 * (redis's serverCron); at most one request of each kind is in flight. */
#include "ha/ha.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/etcd.h"

#define HA_TICK_MS 50

struct ha {
    struct event_base *base;
    struct etcd *etcd;
    const struct ha_watch *watch;
    void *opaque;
    char *name, *agents_addr, *api_addr;
    char *leader_key;
    char *value; /* what this instance writes into the leader key */
    uint32_t ttl_asked_s;
    struct event *tick;
    /* Requests started before the last step-down are ignored when they answer. */
    uint64_t epoch;

    int64_t lease_id; /* 0: none */
    int64_t lease_ttl_ms;
    int64_t lease_ok_sent_ms; /* when the last answered grant or keepalive was sent */
    bool grant_inflight, keepalive_inflight, poll_inflight;
    int64_t grant_sent_ms, keepalive_sent_ms;
    uint64_t grant_epoch, keepalive_epoch, poll_epoch;
    int64_t keepalive_next_ms, poll_next_ms;
    int64_t etcd_ok_ms; /* monotonic: the last answer of any kind */
    bool etcd_failing;  /* logged once per outage */
    bool ttl_warned;

    bool leading;
    int64_t term;
    struct ha_leader leader; /* members allocated */

    /* Every instance registers PREFIX/instances/NAME with its lease; the list
     * is read every HA_INSTANCES_MS for status. */
    char *instances_prefix, *instance_key;
    bool registered, register_inflight, instances_inflight;
    uint64_t register_epoch;
    int64_t instances_next_ms;
    json_t *instances, *instances_reading;
};

#define HA_INSTANCES_MS 1000

static int64_t margin_ms(const struct ha *ha)
{
    int64_t m = ha->lease_ttl_ms / 5;
    return m > HA_MARGIN_MIN_MS ? m : HA_MARGIN_MIN_MS;
}

static void set_leader(struct ha *ha, const char *name, const char *agents, const char *api,
                       int64_t term)
{
    free((char *)ha->leader.name);
    free((char *)ha->leader.agents_addr);
    free((char *)ha->leader.api_addr);
    ha->leader.name = name ? strdup(name) : NULL;
    ha->leader.agents_addr = agents ? strdup(agents) : NULL;
    ha->leader.api_addr = api ? strdup(api) : NULL;
    ha->leader.term = term;
}

static void step_down(struct ha *ha, const char *why)
{
    bool was = ha->leading;
    ha->leading = false;
    ha->term = 0;
    ha->epoch++;
    if (ha->lease_id) {
        /* Let a successor in now rather than at the lease's end, if etcd hears us. */
        cleanup_error vcr_error_t err = NULL;
        if (etcd_lease_revoke(ha->etcd, ha->lease_id, NULL, NULL, &err) < 0)
            log_debug("ha: revoke: %s", vcr_error_msg(err));
    }
    ha->lease_id = 0;
    ha->registered = false;
    if (was) {
        log_warn("ha: %s: no longer the leader: %s", ha->name, why);
        set_leader(ha, NULL, NULL, NULL, ha->leader.term);
        if (ha->watch && ha->watch->deposed)
            ha->watch->deposed(ha->opaque, why);
    }
}

static bool lease_valid(const struct ha *ha, int64_t now)
{
    return ha->lease_id && now < ha->lease_ok_sent_ms + ha->lease_ttl_ms - margin_ms(ha);
}

bool ha_is_leader(struct ha *ha)
{
    if (ha->leading && !lease_valid(ha, vcr_mono_ms())) {
        char why[160];
        snprintf(why, sizeof(why),
                 "no keepalive of its lease answered for %lld ms (TTL %lld ms, margin %lld ms)",
                 (long long)(vcr_mono_ms() - ha->lease_ok_sent_ms), (long long)ha->lease_ttl_ms,
                 (long long)margin_ms(ha));
        step_down(ha, why);
    }
    return ha->leading;
}

int64_t ha_term(struct ha *ha)
{
    return ha_is_leader(ha) ? ha->term : 0;
}

struct etcd *ha_etcd(struct ha *ha)
{
    return ha->etcd;
}

const char *ha_leader_key(const struct ha *ha)
{
    return ha->leader_key;
}

const struct ha_leader *ha_leader(const struct ha *ha)
{
    return &ha->leader;
}

static void etcd_answered(struct ha *ha, int status, const char *error)
{
    if (status == 0 || status == ENOENT) {
        if (ha->etcd_failing)
            log_info("ha: etcd answers again (%s)", etcd_endpoint(ha->etcd));
        ha->etcd_failing = false;
        ha->etcd_ok_ms = vcr_mono_ms();
    } else if (!ha->etcd_failing) {
        ha->etcd_failing = true;
        log_warn("ha: etcd: %s", error ? error : "failed");
    }
}

static void become_leader(struct ha *ha, int64_t term)
{
    ha->leading = true;
    ha->term = term;
    set_leader(ha, ha->name, ha->agents_addr, ha->api_addr, term);
    log_info("ha: %s leads, term %lld (lease %llx, TTL %lld ms)", ha->name, (long long)term,
             (unsigned long long)ha->lease_id, (long long)ha->lease_ttl_ms);
    if (ha->watch && ha->watch->elected)
        ha->watch->elected(ha->opaque, term);
}

/* --- etcd answers --- */

static void on_grant(int status, const char *error, int64_t lease_id, int64_t ttl_s, void *opaque)
{
    struct ha *ha = opaque;
    ha->grant_inflight = false;
    etcd_answered(ha, status, error);
    if (status || ha->grant_epoch != ha->epoch)
        return;
    ha->lease_id = lease_id;
    ha->lease_ttl_ms = ttl_s * 1000;
    ha->lease_ok_sent_ms = ha->grant_sent_ms;
    ha->keepalive_next_ms = ha->grant_sent_ms + ha->lease_ttl_ms / 4;
    ha->poll_next_ms = 0; /* campaign at once */
    if (ttl_s > (int64_t)ha->ttl_asked_s && !ha->ttl_warned) {
        ha->ttl_warned = true;
        log_warn("ha: etcd granted a lease of %lld s for the %u s asked: it rounds TTLs up to 1.5 "
                 "election timeouts; a takeover takes that long (docs/ha.md)",
                 (long long)ttl_s, ha->ttl_asked_s);
    }
    log_debug("ha: lease %llx granted, TTL %lld s", (unsigned long long)lease_id, (long long)ttl_s);
}

static void on_keepalive(int status, const char *error, int64_t lease_id, int64_t ttl_s,
                         void *opaque)
{
    struct ha *ha = opaque;
    (void)lease_id;
    ha->keepalive_inflight = false;
    etcd_answered(ha, status, error);
    if (ha->keepalive_epoch != ha->epoch)
        return;
    if (status == ENOENT) {
        /* etcd expired it: whatever we led, someone else may lead now. */
        step_down(ha, "etcd says its lease has expired");
        return;
    }
    if (status)
        return;
    if (ha->keepalive_sent_ms > ha->lease_ok_sent_ms)
        ha->lease_ok_sent_ms = ha->keepalive_sent_ms;
    ha->lease_ttl_ms = ttl_s * 1000;
}

static void note_leader_value(struct ha *ha, const struct etcd_kv *kv)
{
    json_error_t jerr;
    cleanup_json json_t *v = kv->value ? json_loadb(kv->value, kv->value_len, 0, &jerr) : NULL;
    const char *name = json_string_value(json_object_get(v, "name"));
    if (ha->leader.term != kv->create_revision)
        log_info("ha: %s follows %s (term %lld)", ha->name, name ? name : "?",
                 (long long)kv->create_revision);
    set_leader(ha, name, json_string_value(json_object_get(v, "agents")),
               json_string_value(json_object_get(v, "api")), kv->create_revision);
}

static void on_campaign(int status, const char *error, bool created, const struct etcd_kv *kv,
                        int64_t revision, void *opaque)
{
    struct ha *ha = opaque;
    (void)revision;
    ha->poll_inflight = false;
    etcd_answered(ha, status, error);
    if (ha->poll_epoch != ha->epoch || ha->leading)
        return;
    if (status == EIO) {
        /* A put with a lease etcd no longer has: start over with a new one. */
        step_down(ha, "campaign refused");
        return;
    }
    if (status || !kv->found)
        return;
    if (!lease_valid(ha, vcr_mono_ms()))
        return; /* too late to count on it; the keepalive or the clock decides */
    if (created || kv->lease == ha->lease_id)
        become_leader(ha, kv->create_revision);
    else
        note_leader_value(ha, kv);
}

static void on_check(int status, const char *error, bool created, const struct etcd_kv *kv,
                     int64_t revision, void *opaque)
{
    struct ha *ha = opaque;
    (void)created;
    (void)revision;
    ha->poll_inflight = false;
    etcd_answered(ha, status, error);
    if (ha->poll_epoch != ha->epoch || !ha->leading || status)
        return;
    if (!kv->found || kv->create_revision != ha->term || kv->lease != ha->lease_id)
        step_down(ha, "the leader key is no longer its own");
}

static void on_registered(int status, const char *error, bool created, const struct etcd_kv *kv,
                          int64_t revision, void *opaque)
{
    struct ha *ha = opaque;
    (void)created;
    (void)kv;
    (void)revision;
    ha->register_inflight = false;
    etcd_answered(ha, status, error);
    if (status == 0 && ha->register_epoch == ha->epoch)
        ha->registered = true;
}

static void on_instance(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct ha *ha = opaque;
    json_error_t jerr;
    json_t *v = json_loadb(kv->value, kv->value_len, 0, &jerr);
    (void)key;
    if (json_is_object(v))
        json_array_append(ha->instances_reading, v);
    json_decref(v);
}

static void on_instances(int status, const char *error, void *opaque)
{
    struct ha *ha = opaque;
    ha->instances_inflight = false;
    etcd_answered(ha, status, error);
    if (status == 0) {
        json_decref(ha->instances);
        ha->instances = ha->instances_reading;
    } else {
        json_decref(ha->instances_reading);
    }
    ha->instances_reading = NULL;
}

/* --- the tick --- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct ha *ha = arg;
    (void)fd;
    (void)what;
    cleanup_error vcr_error_t err = NULL;
    ha_is_leader(ha); /* steps down on its own clock */
    int64_t now = vcr_mono_ms();
    if (ha->lease_id == 0) {
        if (!ha->grant_inflight) {
            ha->grant_sent_ms = now;
            ha->grant_epoch = ha->epoch;
            if (etcd_lease_grant(ha->etcd, ha->ttl_asked_s, on_grant, ha, &err) == 0)
                ha->grant_inflight = true;
        }
        return;
    }
    if (!ha->keepalive_inflight && now >= ha->keepalive_next_ms) {
        ha->keepalive_sent_ms = now;
        ha->keepalive_epoch = ha->epoch;
        ha->keepalive_next_ms = now + ha->lease_ttl_ms / 4;
        if (etcd_lease_keepalive(ha->etcd, ha->lease_id, on_keepalive, ha, &err) == 0)
            ha->keepalive_inflight = true;
    }
    if (!ha->poll_inflight && now >= ha->poll_next_ms) {
        ha->poll_next_ms = now + HA_POLL_MS;
        ha->poll_epoch = ha->epoch;
        int r = ha->leading ? etcd_get(ha->etcd, ha->leader_key, on_check, ha, &err)
                            : etcd_put_if_absent(ha->etcd, ha->leader_key, ha->value, ha->lease_id,
                                                 on_campaign, ha, &err);
        if (r == 0)
            ha->poll_inflight = true;
    }
    if (!ha->registered && !ha->register_inflight) {
        ha->register_epoch = ha->epoch;
        if (etcd_put(ha->etcd, ha->instance_key, ha->value, ha->lease_id, on_registered, ha,
                     &err) == 0)
            ha->register_inflight = true;
    }
    if (!ha->instances_inflight && now >= ha->instances_next_ms &&
        (ha->instances_reading = json_array()) != NULL) {
        ha->instances_next_ms = now + HA_INSTANCES_MS;
        if (etcd_get_prefix(ha->etcd, ha->instances_prefix, on_instance, on_instances, ha, &err) ==
            0) {
            ha->instances_inflight = true;
        } else {
            json_decref(ha->instances_reading);
            ha->instances_reading = NULL;
        }
    }
    if (err)
        log_warn("ha: %s", vcr_error_msg(err));
}

struct ha *ha_new(struct event_base *base, const struct ha_options *opts,
                  const struct ha_watch *watch, void *opaque, vcr_error_t *err)
{
    struct ha *ha = calloc(1, sizeof(*ha));
    if (ha == NULL)
        return vcr_error_make(err, ENOMEM, "ha: out of memory"), NULL;
    ha->base = base;
    ha->watch = watch;
    ha->opaque = opaque;
    ha->ttl_asked_s = opts->lease_ttl_s;
    ha->lease_ttl_ms = (int64_t)opts->lease_ttl_s * 1000;
    /* A request may take a quarter of the lease: two may fail before the
     * leader must stop. */
    uint32_t timeout_ms = opts->lease_ttl_s * 1000 / 4;
    cleanup_json json_t *value =
        json_pack("{s:s, s:s, s:s}", "name", opts->name, "agents", opts->agents_addr, "api",
                  opts->api_addr ? opts->api_addr : "");
    if ((ha->name = strdup(opts->name)) == NULL ||
        (ha->agents_addr = strdup(opts->agents_addr)) == NULL ||
        (ha->api_addr = strdup(opts->api_addr ? opts->api_addr : "")) == NULL ||
        asprintf(&ha->leader_key, "%sleader", opts->prefix) < 0 ||
        asprintf(&ha->instances_prefix, "%sinstances/", opts->prefix) < 0 ||
        asprintf(&ha->instance_key, "%sinstances/%s", opts->prefix, opts->name) < 0 ||
        (ha->instances = json_array()) == NULL || value == NULL ||
        (ha->value = json_dumps(value, JSON_COMPACT)) == NULL) {
        ha_free(ha);
        return vcr_error_make(err, ENOMEM, "ha: out of memory"), NULL;
    }
    if ((ha->etcd = etcd_new(base, opts->etcd, opts->n_etcd, timeout_ms, err)) == NULL) {
        ha_free(ha);
        return NULL;
    }
    ha->tick = event_new(base, -1, EV_PERSIST, on_tick, ha);
    struct timeval tv = {0, HA_TICK_MS * 1000};
    if (ha->tick == NULL || event_add(ha->tick, &tv) < 0) {
        ha_free(ha);
        return vcr_error_make(err, ENOMEM, "ha: cannot create its timer"), NULL;
    }
    event_active(ha->tick, EV_TIMEOUT, 0); /* the first grant now, not a tick later */
    log_info("ha: %s: etcd %s%s, lease TTL %u s, leader key %s", ha->name, opts->etcd[0],
             opts->n_etcd > 1 ? " (and more)" : "", opts->lease_ttl_s, ha->leader_key);
    return ha;
}

void ha_free(struct ha *ha)
{
    if (ha == NULL)
        return;
    if (ha->tick)
        event_free(ha->tick);
    etcd_free(ha->etcd);
    set_leader(ha, NULL, NULL, NULL, 0);
    free(ha->name);
    free(ha->agents_addr);
    free(ha->api_addr);
    free(ha->leader_key);
    free(ha->instances_prefix);
    free(ha->instance_key);
    json_decref(ha->instances);
    json_decref(ha->instances_reading);
    free(ha->value);
    free(ha);
}

json_t *ha_status_json(struct ha *ha)
{
    bool leading = ha_is_leader(ha);
    const struct ha_leader *l = &ha->leader;
    json_t *j = json_pack("{s:s, s:b, s:I, s:s?, s:s?, s:s?, s:I, s:s, s:I}", "name", ha->name,
                          "leader", leading, "term", (json_int_t)l->term, "leader_name", l->name,
                          "leader_agents", l->agents_addr, "leader_api", l->api_addr, "lease_ttl_s",
                          (json_int_t)(ha->lease_ttl_ms / 1000), "etcd", etcd_endpoint(ha->etcd),
                          "etcd_ok_ms_ago",
                          (json_int_t)(ha->etcd_ok_ms ? vcr_mono_ms() - ha->etcd_ok_ms : -1));
    if (j)
        json_object_set(j, "instances", ha->instances);
    return j;
}
