/* Unit tests for the Prometheus text encoder (src/server/metrics.c): escaping,
 * HELP/TYPE once per family, cumulative histogram buckets with +Inf = count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "server/metrics.h"

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
    metrics_sample(&m, "vcr_test", 1, "host", "a\"b\\c\nd", "vm", "plain", NULL);
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
    metrics_sample(&m, "vcr_a_total", 3, "result", "ok", NULL);
    metrics_family(&m, "vcr_a_total", "counter", "A.");
    metrics_sample(&m, "vcr_a_total", 0.25, "result", "failed", NULL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_values_and_help_are_escaped),
        cmocka_unit_test(test_help_and_type_once_per_family),
        cmocka_unit_test(test_histogram_buckets_are_cumulative),
        cmocka_unit_test(test_histogram_without_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
