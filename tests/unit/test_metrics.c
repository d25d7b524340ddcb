/* Unit tests for the Prometheus text encoder (src/server/metrics.c): escaping,
 * HELP/TYPE once per family, cumulative histogram buckets with +Inf = count;
 * then GET /metrics of a server in-process, its counters folded from the
 * journal, also after a restart on the same journal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "server/journal.h"
#include "server/metrics.h"
#include "server/server.h"
#include "config/server_config.h"
#include "scrape.h"

static size_t occurrences(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_label_values_and_help_are_escaped(void **state)
{
    (void)state;
    struct metrics_out m;
    assert_int_equal(metrics_out_open(&m, NULL), 0);
    metrics_family(&m, "vcr_test", "gauge", "a \\ back\nslash \"quoted\"");
    metrics_sample(&m, "vcr_test", 1, METRICS_LABELS("host", "a\"b\\c\nd", "vm", "plain"));
    size_t len;
    const char *text = metrics_out_text(&m, &len);
    assert_int_equal(strlen(text), len);
    /* HELP: backslash and newline escaped, a double quote left as it is. */
    assert_non_null(strstr(text, "# HELP vcr_test a \\\\ back\\nslash \"quoted\"\n"));
    assert_non_null(strstr(text, "vcr_test{host=\"a\\\"b\\\\c\\nd\",vm=\"plain\"} 1\n"));
    /* Every line ends in a newline and none is split by a raw one. */
    assert_int_equal(text[len - 1], '\n');
    assert_int_equal(occurrences(text, "\n"), 3);
    metrics_out_close(&m);
}

static void test_help_and_type_once_per_family(void **state)
{
    (void)state;
    struct metrics_out m;
    assert_int_equal(metrics_out_open(&m, NULL), 0);
    metrics_family(&m, "vcr_a_total", "counter", "A.");
    metrics_sample(&m, "vcr_a_total", 3, METRICS_LABELS("result", "ok"));
    metrics_family(&m, "vcr_a_total", "counter", "A.");
    metrics_sample(&m, "vcr_a_total", 0.25, METRICS_LABELS("result", "failed"));
    metrics_family(&m, "vcr_b", "gauge", "B.");
    metrics_sample(&m, "vcr_b", 1.5, NULL);
    size_t len;
    const char *text = metrics_out_text(&m, &len);
    assert_int_equal(occurrences(text, "# HELP vcr_a_total "), 1);
    assert_int_equal(occurrences(text, "# TYPE vcr_a_total counter\n"), 1);
    assert_int_equal(occurrences(text, "# TYPE vcr_b gauge\n"), 1);
    assert_string_equal(text, "# HELP vcr_a_total A.\n"
                              "# TYPE vcr_a_total counter\n"
                              "vcr_a_total{result=\"ok\"} 3\n"
                              "vcr_a_total{result=\"failed\"} 0.25\n"
                              "# HELP vcr_b B.\n"
                              "# TYPE vcr_b gauge\n"
                              "vcr_b 1.5\n");
    metrics_out_close(&m);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 1, 10};
    struct metrics_histogram h;
    metrics_histogram_init(&h, bounds, 3);
    metrics_histogram_observe(&h, 0.05);
    metrics_histogram_observe(&h, 0.1); /* on a bound: in that bucket (le) */
    metrics_histogram_observe(&h, 5);
    metrics_histogram_observe(&h, 42);
    metrics_histogram_observe(&h, 0.0 / 0.0); /* NaN: not counted */
    struct metrics_out m;
    assert_int_equal(metrics_out_open(&m, NULL), 0);
    metrics_family(&m, "vcr_h_seconds", "histogram", "H.");
    metrics_histogram_write(&m, "vcr_h_seconds", "phase", "fenced", &h);
    metrics_histogram_write(&m, "vcr_h_seconds", "phase", "empty",
                            &(struct metrics_histogram){
                                .bounds = bounds,
                                .n_bounds = 3,
                            });
    size_t len;
    const char *text = metrics_out_text(&m, &len);
    assert_non_null(strstr(text, "vcr_h_seconds_bucket{phase=\"fenced\",le=\"0.1\"} 2\n"
                                 "vcr_h_seconds_bucket{phase=\"fenced\",le=\"1\"} 2\n"
                                 "vcr_h_seconds_bucket{phase=\"fenced\",le=\"10\"} 3\n"
                                 "vcr_h_seconds_bucket{phase=\"fenced\",le=\"+Inf\"} 4\n"
                                 "vcr_h_seconds_sum{phase=\"fenced\"} 47.15\n"
                                 "vcr_h_seconds_count{phase=\"fenced\"} 4\n"));
    assert_non_null(strstr(text, "vcr_h_seconds_bucket{phase=\"empty\",le=\"+Inf\"} 0\n"
                                 "vcr_h_seconds_sum{phase=\"empty\"} 0\n"
                                 "vcr_h_seconds_count{phase=\"empty\"} 0\n"));
    assert_int_equal(occurrences(text, "# TYPE vcr_h_seconds histogram\n"), 1);
    metrics_out_close(&m);
}

static void test_histogram_without_label(void **state)
{
    (void)state;
    static const double bounds[] = {0.5};
    struct metrics_histogram h;
    metrics_histogram_init(&h, bounds, 1);
    metrics_histogram_observe(&h, 2);
    struct metrics_out m;
    assert_int_equal(metrics_out_open(&m, NULL), 0);
    metrics_histogram_write(&m, "vcr_x_seconds", NULL, NULL, &h);
    size_t len;
    assert_string_equal(metrics_out_text(&m, &len), "vcr_x_seconds_bucket{le=\"0.5\"} 0\n"
                                                    "vcr_x_seconds_bucket{le=\"+Inf\"} 1\n"
                                                    "vcr_x_seconds_sum 2\n"
                                                    "vcr_x_seconds_count 1\n");
    metrics_out_close(&m);
}

/* --- GET /metrics of a server in-process --- */

/* The text of GET /metrics (caller frees), the loop run until it is answered or 5 s pass. */
static char *scrape(struct event_base *base, struct server *srv)
{
    struct scrape s;
    scrape_get(base, server_api_port(srv), "/metrics", &s);
    assert_true(s.done);
    assert_int_equal(s.code, 200);
    assert_string_equal(s.content_type, METRICS_CONTENT_TYPE);
    assert_non_null(s.text);
    return s.text;
}

/* Not inlined: GCC's -Wformat-overflow then takes a scrape's text for NULL. */
__attribute__((noinline)) static void contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("`%s` not in:\n%s", needle, text);
}

static json_t *phase(const char *service, const char *name, int64_t elapsed_ms)
{
    return json_pack("{s:s, s:s, s:s, s:I}", "service", service, "phase", name, "mode", "warm",
                     "elapsed_ms", (json_int_t)elapsed_ms);
}

static void note_recovery(struct journal *j, json_t *detail)
{
    journal_note(j, 0, "node1", "web1", "recovery", detail);
    json_decref(detail);
}

static void test_counters_folded_from_the_journal(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-metrics-XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *journal = NULL;
    assert_true(asprintf(&journal, "%s/journal.db", dir) > 0);
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = server_config_parse("", 0, "test.yaml", &err);
    assert_non_null(cfg);
    cfg->listen_port = 0;
    cfg->api_port = 0;
    free(cfg->journal);
    cfg->journal = strdup(journal);
    struct event_base *base = event_base_new();
    struct server *srv = server_new(base, cfg, &err);
    if (srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
    struct journal *j = server_journal(srv);

    /* One recovery that ends well, with its DNS switch timed... */
    note_recovery(j, phase("web1", "detected", 0));
    note_recovery(j, phase("web1", "fenced", 300));
    note_recovery(j, phase("web1", "container_ready", 1300));
    note_recovery(j, phase("web1", "port_open", 1400));
    json_t *dns = phase("web1", "dns_updated", 1450);
    json_object_set_new(dns, "dns_ms", json_real(12.5));
    note_recovery(j, dns);
    note_recovery(j, phase("web1", "client_confirmed", 1500));
    char *text = scrape(base, srv);
    contains(text, "vcr_recoveries_total{service=\"web1\",mode=\"warm\",result=\"recovered\"} 1\n");
    contains(text, "vcr_recovery_phase_seconds_bucket{phase=\"fenced\",le=\"0.25\"} 0\n");
    contains(text, "vcr_recovery_phase_seconds_bucket{phase=\"fenced\",le=\"0.5\"} 1\n");
    contains(text, "vcr_recovery_phase_seconds_sum{phase=\"container_ready\"} 1\n");
    contains(text, "vcr_recovery_phase_seconds_count{phase=\"client_confirmed\"} 1\n");
    contains(text, "vcr_dns_update_seconds_bucket{le=\"0.01\"} 0\n");
    contains(text, "vcr_dns_update_seconds_bucket{le=\"0.025\"} 1\n");
    contains(text, "vcr_dns_update_seconds_sum 0.0125\n");
    contains(text, "vcr_dns_update_failures_total 0\n");
    contains(text, "vcr_warm_restarts_total{result=\"ok\"} 0\n");
    free(text);

    /* ... then, scraped again: only what came since is added. */
    note_recovery(j, phase("web1", "detected", 0));
    json_t *failed = phase("web1", "failed", 9000);
    json_object_set_new(failed, "after", json_string("port_open"));
    note_recovery(j, failed);
    json_t *warm =
        json_pack("{s:s, s:b, s:b, s:f}", "vm", "web1", "ok", 1, "fallback", 0, "pause_ms", 40.0);
    journal_note(j, 0, "node1", "web1", JOURNAL_WARM_RESTART, warm);
    json_decref(warm);
    json_t *mig = json_pack("{s:s, s:s, s:{s:b, s:i}}", "container", "web1-c", "phase", "done",
                            "result", "ok", 1, "downtime_ms", 2000);
    journal_note(j, 0, "sb1", NULL, JOURNAL_MIGRATION, mig);
    json_decref(mig);
    text = scrape(base, srv);
    contains(text, "vcr_recoveries_total{service=\"web1\",mode=\"warm\",result=\"recovered\"} 1\n");
    contains(text, "vcr_recoveries_total{service=\"web1\",mode=\"warm\",result=\"failed\"} 1\n");
    contains(text, "vcr_recovery_phase_seconds_count{phase=\"fenced\"} 1\n");
    contains(text, "vcr_dns_update_failures_total 1\n");
    contains(text, "vcr_warm_restarts_total{result=\"ok\"} 1\n");
    contains(text, "vcr_warm_restart_pause_seconds_bucket{le=\"0.05\"} 1\n");
    contains(text, "vcr_migrations_total{result=\"ok\"} 1\n");
    contains(text, "vcr_migration_downtime_seconds_bucket{le=\"1\"} 0\n");
    contains(text, "vcr_migration_downtime_seconds_bucket{le=\"2.5\"} 1\n");
    free(text);
    server_free(srv);

    /* A restarted server on the same journal counts the same. */
    srv = server_new(base, cfg, &err);
    if (srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
    text = scrape(base, srv);
    contains(text, "vcr_recoveries_total{service=\"web1\",mode=\"warm\",result=\"failed\"} 1\n");
    contains(text, "vcr_warm_restarts_total{result=\"ok\"} 1\n");
    contains(text, "vcr_migrations_total{result=\"ok\"} 1\n");
    free(text);
    server_free(srv);
    event_base_free(base);
    server_config_free(cfg);
    static const char *const files[] = {"journal.db", "journal.db-wal", "journal.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        cleanup_free char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", dir, files[i]) > 0);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_values_and_help_are_escaped),
        cmocka_unit_test(test_help_and_type_once_per_family),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_histogram_without_label),
        cmocka_unit_test(test_counters_folded_from_the_journal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
