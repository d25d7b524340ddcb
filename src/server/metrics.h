/* The Prometheus text exposition format 0.0.4 (docs/server.md, "Metrics"):
 * what GET /metrics is written with.  Families are written one after another;
 * a family's `# HELP` and `# TYPE` come once, before its first sample, however
 * often metrics_family() is called for it.  Label values are escaped
 * (backslash, double quote, newline), HELP text too (backslash, newline). */
#ifndef VCR_SERVER_METRICS_H
#define VCR_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* At most this many families per exposition (one GET /metrics). */
#define METRICS_FAMILIES_MAX 64
/* Finite upper bounds of a histogram, at most; +Inf is implied. */
#define METRICS_BUCKETS_MAX 16

struct metrics_out {
    FILE *f; /* an open_memstream over text */
    char *text;
    size_t len;
    const char *families[METRICS_FAMILIES_MAX]; /* borrowed names already announced */
    size_t n_families;
};

int metrics_out_open(struct metrics_out *m, vcr_error_t *err);
/* The text written so far (NUL-terminated, owned by m; valid until the next
 * write or metrics_out_close), its length in *len. */
const char *metrics_out_text(struct metrics_out *m, size_t *len);
void metrics_out_close(struct metrics_out *m);

/* Announces family name (borrowed: a string literal) of type "counter",
 * "gauge" or "histogram" with help, once. */
void metrics_family(struct metrics_out *m, const char *name, const char *type, const char *help);
/* One sample name{labels} value: labels are pairs of label name and value
 * ended by a NULL (a NULL value ends them too), or NULL for none. */
void metrics_sample(struct metrics_out *m, const char *name, double value,
                    const char *const *labels);
/* metrics_sample(m, "vcr_x", 1, METRICS_LABELS("host", name, "vm", vm)) */
#define METRICS_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* A histogram with fixed upper bounds (seconds, increasing, borrowed). */
struct metrics_histogram {
    const double *bounds;
    size_t n_bounds;
    uint64_t in_bucket[METRICS_BUCKETS_MAX + 1]; /* not cumulative; last: above every bound */
    uint64_t count;
    double sum;
};

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n_bounds);
void metrics_histogram_observe(struct metrics_histogram *h, double value);
/* name_bucket{label?,le} (cumulative, le="+Inf" equal to count), name_sum,
 * name_count; label_name NULL: no label beside le. */
void metrics_histogram_write(struct metrics_out *m, const char *name, const char *label_name,
                             const char *label_value, const struct metrics_histogram *h);

#endif
