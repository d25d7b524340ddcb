/* GET /metrics (docs/server.md, "Metrics"): the Prometheus text format.
 *
 * Gauges are read at each scrape from what the server holds (inventory,
 * services).  Counters and histograms are folded from the journal: each
 * scrape reads the events appended since the last one, so after a restart
 * the first scrape reads the whole journal again and the counters go on
 * from where they were, without a table of their own. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/api_priv.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/metrics.h"
#include "server/recovery.h"
#include "server/recovery/recovery_priv.h"

/* Buckets (seconds), documented in docs/server.md. */
static const double phase_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double dns_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double pause_bounds[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double downtime_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BOUNDS(a) (sizeof(a) / sizeof(a[0]))

/* A recovery's phases after detection (PH_FENCED..PH_CLIENT_CONFIRMED), each
 * timed from the phase before; phase[] is indexed by phase - PH_FENCED. */
#define N_TIMED_PHASES (PH_CLIENT_CONFIRMED - PH_FENCED + 1)

struct api_metrics {
    int64_t last_id;    /* the last journal event folded */
    json_t *recoveries; /* {SERVICE: {MODE: {RESULT: count}}} */
    json_t *phase_at;   /* {SERVICE: elapsed_ms of its recovery's last phase} */
    struct metrics_histogram phase[N_TIMED_PHASES];
    struct metrics_histogram dns;
    uint64_t dns_failures;
    json_t *warm; /* {RESULT: count} */
    struct metrics_histogram warm_pause;
    json_t *migrations; /* {RESULT: count} */
    struct metrics_histogram downtime;
};

void api_metrics_free(struct api_metrics *am)
{
    if (am == NULL)
        return;
    json_decref(am->recoveries);
    json_decref(am->phase_at);
    json_decref(am->warm);
    json_decref(am->migrations);
    free(am);
}

static struct api_metrics *api_metrics_new(void)
{
    struct api_metrics *am = calloc(1, sizeof(*am));
    if (am == NULL)
        return NULL;
    am->recoveries = json_object();
    am->phase_at = json_object();
    am->warm = json_object();
    am->migrations = json_object();
    if (!am->recoveries || !am->phase_at || !am->warm || !am->migrations) {
        api_metrics_free(am);
        return NULL;
    }
    /* Every result from 0, so that rate() and increase() see the first one. */
    static const char *const warm_results[] = {"ok", "fallback", "failed"};
    for (size_t i = 0; i < 3; i++)
        json_object_set_new(am->warm, warm_results[i], json_integer(0));
    json_object_set_new(am->migrations, "ok", json_integer(0));
    json_object_set_new(am->migrations, "failed", json_integer(0));
    for (size_t i = 0; i < N_TIMED_PHASES; i++)
        metrics_histogram_init(&am->phase[i], phase_bounds, N_BOUNDS(phase_bounds));
    metrics_histogram_init(&am->dns, dns_bounds, N_BOUNDS(dns_bounds));
    metrics_histogram_init(&am->warm_pause, pause_bounds, N_BOUNDS(pause_bounds));
    metrics_histogram_init(&am->downtime, downtime_bounds, N_BOUNDS(downtime_bounds));
    return am;
}

static void count(json_t *counts, const char *key)
{
    json_t *n = json_object_get(counts, key);
    json_object_set_new(counts, key, json_integer(n ? json_integer_value(n) + 1 : 1));
}

static const char *str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* The timed phase of that name, or PH_NONE. */
static enum rec_phase timed_phase(const char *name)
{
    for (enum rec_phase p = PH_FENCED; p <= PH_CLIENT_CONFIRMED; p++)
        if (strcmp(recovery_phase_name(p), name) == 0)
            return p;
    return PH_NONE;
}

/* The member key of obj, made an empty object if absent (NULL: out of memory). */
static json_t *member_object(json_t *obj, const char *key)
{
    json_t *o = json_object_get(obj, key);
    if (o == NULL && json_object_set_new(obj, key, o = json_object()) < 0)
        return NULL;
    return o;
}

static void fold_recovery(struct api_metrics *am, json_t *d)
{
    const char *service = str(d, "service"), *phase = str(d, "phase"), *mode = str(d, "mode");
    json_t *elapsed = json_object_get(d, "elapsed_ms");
    if (service == NULL || phase == NULL || mode == NULL || !json_is_integer(elapsed))
        return;
    json_int_t now = json_integer_value(elapsed);
    const char *result = NULL;
    enum rec_phase p = timed_phase(phase);
    if (p != PH_NONE) {
        json_t *before = json_object_get(am->phase_at, service);
        if (before && now >= json_integer_value(before))
            metrics_histogram_observe(&am->phase[p - PH_FENCED],
                                      (double)(now - json_integer_value(before)) / 1000.0);
        json_object_set_new(am->phase_at, service, json_integer(now));
        json_t *dns_ms = json_object_get(d, "dns_ms");
        if (p == PH_DNS_UPDATED && json_is_number(dns_ms))
            metrics_histogram_observe(&am->dns, json_number_value(dns_ms) / 1000.0);
        if (p == PH_CLIENT_CONFIRMED)
            result = "recovered";
    } else if (strcmp(phase, recovery_phase_name(PH_DETECTED)) == 0 ||
               strcmp(phase, "retry") == 0) {
        json_object_set_new(am->phase_at, service, json_integer(now));
    } else if (strcmp(phase, "failed") == 0) {
        result = "failed";
        json_object_del(am->phase_at, service);
        /* The way of the switch that failed (journals before it: failed after
         * port_open, when the DNS switch was the only step after it). */
        const char *way = str(d, "switch");
        const char *after = str(d, "after");
        if (way ? strcmp(way, "dns") == 0
                : after && strcmp(after, recovery_phase_name(PH_PORT_OPEN)) == 0)
            am->dns_failures++;
    }
    json_t *by_result = result ? member_object(member_object(am->recoveries, service), mode) : NULL;
    if (by_result)
        count(by_result, result);
}

static void fold_warm_restart(struct api_metrics *am, json_t *d)
{
    bool ok = json_is_true(json_object_get(d, "ok"));
    const char *result = "failed";
    if (ok)
        result = "ok";
    else if (json_is_true(json_object_get(d, "fallback")))
        result = "fallback";
    count(am->warm, result);
    json_t *pause = json_object_get(d, "pause_ms");
    if (ok && json_is_number(pause))
        metrics_histogram_observe(&am->warm_pause, json_number_value(pause) / 1000.0);
}

static void fold_migration(struct api_metrics *am, json_t *d)
{
    const char *phase = str(d, "phase");
    if (phase == NULL || (strcmp(phase, "done") != 0 && strcmp(phase, "failed") != 0))
        return;
    json_t *result = json_object_get(d, "result");
    bool ok = json_is_true(json_object_get(result, "ok"));
    count(am->migrations, ok ? "ok" : "failed");
    json_t *down = json_object_get(result, "downtime_ms");
    if (ok && json_is_number(down))
        metrics_histogram_observe(&am->downtime, json_number_value(down) / 1000.0);
}

/* Folds the events journaled since the last scrape. */
static int fold_journal(struct api_metrics *am, struct journal *j, vcr_error_t *err)
{
    for (;;) {
        cleanup_json json_t *events = journal_read(j, am->last_id, JOURNAL_READ_MAX, err);
        if (events == NULL)
            return vcr_error_wrap(err, "metrics");
        size_t i;
        json_t *ev;
        json_array_foreach(events, i, ev)
        {
            am->last_id = json_integer_value(json_object_get(ev, "id"));
            const char *kind = str(ev, "kind");
            json_t *d = json_object_get(ev, "detail");
            if (kind == NULL || !json_is_object(d))
                continue;
            if (strcmp(kind, JOURNAL_RECOVERY) == 0)
                fold_recovery(am, d);
            else if (strcmp(kind, JOURNAL_WARM_RESTART) == 0)
                fold_warm_restart(am, d);
            else if (strcmp(kind, JOURNAL_MIGRATION) == 0)
                fold_migration(am, d);
        }
        if (json_array_size(events) < JOURNAL_READ_MAX)
            return 0;
    }
}

static void write_hosts(struct metrics_out *m, const struct inventory *inv, int64_t now)
{
    metrics_family(m, "vcr_host_connected", "gauge",
                   "1 while the host's agent is connected, 0 once it is lost.");
    for (size_t i = 0; i < inv->n_hosts; i++)
        metrics_sample(m, "vcr_host_connected", inv->hosts[i]->state == INV_HOST_CONNECTED,
                       METRICS_LABELS("host", inv->hosts[i]->name));
    metrics_family(m, "vcr_host_heartbeat_age_seconds", "gauge",
                   "Seconds since the last frame from the host's agent.");
    for (size_t i = 0; i < inv->n_hosts; i++)
        metrics_sample(m, "vcr_host_heartbeat_age_seconds",
                       (double)(now - inv->hosts[i]->last_seen_ms) / 1000.0,
                       METRICS_LABELS("host", inv->hosts[i]->name));
    metrics_family(m, "vcr_host_heartbeat_gap_seconds", "histogram",
                   "Time between two heartbeats the server got from the host's agent on one "
                   "connection.");
    for (size_t i = 0; i < inv->n_hosts; i++)
        metrics_histogram_write(m, "vcr_host_heartbeat_gap_seconds", "host", inv->hosts[i]->name,
                                &inv->hosts[i]->heartbeat_gap);
    metrics_family(m, "vcr_host_heartbeat_gap_max_seconds", "gauge",
                   "The longest time between two heartbeats from the host's agent since the "
                   "server started.");
    for (size_t i = 0; i < inv->n_hosts; i++)
        metrics_sample(m, "vcr_host_heartbeat_gap_max_seconds",
                       (double)inv->hosts[i]->heartbeat_gap_max_ms / 1000.0,
                       METRICS_LABELS("host", inv->hosts[i]->name));
}

static void write_vms(struct metrics_out *m, const struct inventory *inv)
{
    metrics_family(m, "vcr_vm_state", "gauge",
                   "1 for the VM's current state, 0 for the others; `unknown` while its host "
                   "is lost.");
    for (size_t i = 0; i < inv->n_hosts; i++) {
        const struct inv_host *h = inv->hosts[i];
        for (size_t k = 0; k < h->n_vms; k++) {
            const struct inv_vm *vm = h->vms[k];
            bool lost = h->state != INV_HOST_CONNECTED;
            for (int s = 0; s < PROTO_VM_N_STATES; s++)
                metrics_sample(m, "vcr_vm_state", !lost && (int)vm->state == s,
                               METRICS_LABELS("host", h->name, "vm", vm->name, "state",
                                              inv_vm_state_name((enum inv_vm_state)s)));
            metrics_sample(m, "vcr_vm_state", lost,
                           METRICS_LABELS("host", h->name, "vm", vm->name, "state", "unknown"));
        }
    }
    metrics_family(m, "vcr_vm_cpu_percent", "gauge",
                   "The VM's CPU use in its host agent's last sample (100 = one CPU).");
    for (size_t i = 0; i < inv->n_hosts; i++)
        for (size_t k = 0; k < inv->hosts[i]->n_vms; k++)
            if (inv->hosts[i]->vms[k]->has_sample)
                metrics_sample(
                    m, "vcr_vm_cpu_percent", inv->hosts[i]->vms[k]->cpu_pct,
                    METRICS_LABELS("host", inv->hosts[i]->name, "vm", inv->hosts[i]->vms[k]->name));
    metrics_family(m, "vcr_vm_rss_bytes", "gauge",
                   "The VM's QEMU resident set in its host agent's last sample.");
    for (size_t i = 0; i < inv->n_hosts; i++)
        for (size_t k = 0; k < inv->hosts[i]->n_vms; k++)
            if (inv->hosts[i]->vms[k]->has_sample)
                metrics_sample(
                    m, "vcr_vm_rss_bytes", (double)inv->hosts[i]->vms[k]->rss_kb * 1024.0,
                    METRICS_LABELS("host", inv->hosts[i]->name, "vm", inv->hosts[i]->vms[k]->name));
}

static void write_services(struct metrics_out *m, json_t *services)
{
    size_t i;
    json_t *s;
    metrics_family(m, "vcr_service_state", "gauge",
                   "1 for the service's current state, 0 for the others (docs/recovery.md).");
    json_array_foreach(services, i, s)
    {
        const char *name = str(s, "name"), *state = str(s, "state");
        for (int k = SVC_OK; k <= SVC_STOPPED && name && state; k++)
            metrics_sample(
                m, "vcr_service_state", strcmp(state, recovery_state_name((enum svc_state)k)) == 0,
                METRICS_LABELS("service", name, "state", recovery_state_name((enum svc_state)k)));
    }
    metrics_family(m, "vcr_service_served_by", "gauge",
                   "1 where the service's DNS name points: `primary` or `standby`.");
    json_array_foreach(services, i, s)
    {
        const char *name = str(s, "name"), *by = str(s, "served_by");
        static const char *const where[] = {"primary", "standby"};
        for (size_t k = 0; k < 2 && name && by; k++)
            metrics_sample(m, "vcr_service_served_by", strcmp(by, where[k]) == 0,
                           METRICS_LABELS("service", name, "where", where[k]));
    }
    metrics_family(m, "vcr_probe_latency_seconds", "gauge",
                   "How long the last probe of the service's primary took to pass or fail.");
    json_array_foreach(services, i, s)
    {
        json_t *latency = json_object_get(json_object_get(s, "check"), "latency_ms");
        if (str(s, "name") && json_is_number(latency))
            metrics_sample(m, "vcr_probe_latency_seconds", json_number_value(latency) / 1000.0,
                           METRICS_LABELS("service", str(s, "name")));
    }
}

static void write_counts(struct metrics_out *m, const char *name, const char *label, json_t *counts)
{
    const char *key;
    json_t *n;
    json_object_foreach(counts, key, n)
    {
        metrics_sample(m, name, (double)json_integer_value(n), METRICS_LABELS(label, key));
    }
}

static void write_folded(struct metrics_out *m, const struct api_metrics *am)
{
    metrics_family(m, "vcr_recoveries_total", "counter",
                   "Recoveries ended, by service, standby mode and result (recovered, failed).");
    const char *service, *mode, *result;
    json_t *modes, *results, *n;
    json_object_foreach(am->recoveries, service, modes)
    {
        json_object_foreach(modes, mode, results)
        {
            json_object_foreach(results, result, n)
            {
                metrics_sample(m, "vcr_recoveries_total", (double)json_integer_value(n),
                               METRICS_LABELS("service", service, "mode", mode, "result", result));
            }
        }
    }
    metrics_family(m, "vcr_recovery_phase_seconds", "histogram",
                   "Time of each recovery phase, from the phase before it.");
    for (enum rec_phase p = PH_FENCED; p <= PH_CLIENT_CONFIRMED; p++)
        metrics_histogram_write(m, "vcr_recovery_phase_seconds", "phase", recovery_phase_name(p),
                                &am->phase[p - PH_FENCED]);
    metrics_family(m, "vcr_dns_update_seconds", "histogram",
                   "Time of a recovery's DNS UPDATE, retries included.");
    metrics_histogram_write(m, "vcr_dns_update_seconds", NULL, NULL, &am->dns);
    metrics_family(m, "vcr_dns_update_failures_total", "counter",
                   "Recoveries that failed at their DNS switch.");
    metrics_sample(m, "vcr_dns_update_failures_total", (double)am->dns_failures, NULL);
    metrics_family(m, "vcr_warm_restarts_total", "counter",
                   "Warm restarts of VMs ended, by result (ok, fallback, failed).");
    write_counts(m, "vcr_warm_restarts_total", "result", am->warm);
    metrics_family(m, "vcr_warm_restart_pause_seconds", "histogram",
                   "The guest's pause in each successful warm restart (stop to cont).");
    metrics_histogram_write(m, "vcr_warm_restart_pause_seconds", NULL, NULL, &am->warm_pause);
    metrics_family(m, "vcr_migrations_total", "counter",
                   "Container migrations ended, by result (ok, failed).");
    write_counts(m, "vcr_migrations_total", "result", am->migrations);
    metrics_family(m, "vcr_migration_downtime_seconds", "histogram",
                   "The container's downtime in each successful migration.");
    metrics_histogram_write(m, "vcr_migration_downtime_seconds", NULL, NULL, &am->downtime);
}

void api_handle_metrics(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    cleanup_error vcr_error_t err = NULL;
    if (api->metrics == NULL && (api->metrics = api_metrics_new()) == NULL) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    if (fold_journal(api->metrics, api->journal, &err) < 0) {
        log_error("GET /metrics: %s", vcr_error_msg(err));
        api_reply_error(req, 500, "%s", vcr_error_msg(err));
        return;
    }
    struct metrics_out m;
    if (metrics_out_open(&m, &err) < 0) {
        api_reply_error(req, 500, "%s", vcr_error_msg(err));
        return;
    }
    write_hosts(&m, api->inv, vcr_mono_ms());
    write_vms(&m, api->inv);
    cleanup_json json_t *services = api->recovery ? recovery_services_json(api->recovery) : NULL;
    write_services(&m, json_object_get(services, "services"));
    write_folded(&m, api->metrics);
    size_t len;
    const char *text = metrics_out_text(&m, &len);
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL || evbuffer_add(buf, text, len) < 0) {
        if (buf)
            evbuffer_free(buf);
        metrics_out_close(&m);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    metrics_out_close(&m);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", METRICS_CONTENT_TYPE);
    evhttp_send_reply(req, 200, NULL, buf);
    evbuffer_free(buf);
}
