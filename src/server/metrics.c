/* The Prometheus text exposition format 0.0.4 (metrics.h). */
#include "server/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int metrics_out_open(struct metrics_out *m, vcr_error_t *err)
{
    memset(m, 0, sizeof(*m));
    m->f = open_memstream(&m->text, &m->len);
    if (m->f == NULL)
        return vcr_error_errno(err, "metrics: open_memstream");
    return 0;
}

const char *metrics_out_text(struct metrics_out *m, size_t *len)
{
    fflush(m->f);
    *len = m->len;
    return m->text ? m->text : "";
}

void metrics_out_close(struct metrics_out *m)
{
    if (m->f)
        fclose(m->f);
    free(m->text);
    memset(m, 0, sizeof(*m));
}

/* HELP text: backslash and newline escaped; label values: double quote too. */
static void write_escaped(FILE *f, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else if (*s == '"' && quote)
            fputs("\\\"", f);
        else
            fputc(*s, f);
    }
}

/* Go's strconv as Prometheus parses it: NaN, +Inf, -Inf, else the shortest
 * decimal that reads back as the same double. */
static void write_value(FILE *f, double v)
{
    if (isnan(v))
        fputs("NaN", f);
    else if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", f);
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        fprintf(f, "%lld", (long long)v);
    else {
        char text[40];
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(text, sizeof(text), "%.*g", digits, v);
            if (strtod(text, NULL) == v)
                break;
        }
        fputs(text, f);
    }
}

void metrics_family(struct metrics_out *m, const char *name, const char *type, const char *help)
{
    for (size_t i = 0; i < m->n_families; i++)
        if (strcmp(m->families[i], name) == 0)
            return;
    if (m->n_families < METRICS_FAMILIES_MAX)
        m->families[m->n_families++] = name;
    fprintf(m->f, "# HELP %s ", name);
    write_escaped(m->f, help, false);
    fprintf(m->f, "\n# TYPE %s %s\n", name, type);
}

/* name suffix{labels,le} value; labels as metrics_sample takes them, le NULL: none. */
static void write_sample(FILE *f, const char *name, const char *suffix, double value,
                         const char *const *labels, const char *le)
{
    fputs(name, f);
    fputs(suffix, f);
    bool first = true;
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        fprintf(f, "%s%s=\"", first ? "{" : ",", labels[i]);
        write_escaped(f, labels[i + 1], true);
        fputc('"', f);
        first = false;
    }
    if (le)
        fprintf(f, "%sle=\"%s\"", first ? "{" : ",", le);
    if (le || !first)
        fputc('}', f);
    fputc(' ', f);
    write_value(f, value);
    fputc('\n', f);
}

void metrics_sample(struct metrics_out *m, const char *name, double value,
                    const char *const *labels)
{
    write_sample(m->f, name, "", value, labels, NULL);
}

void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n_bounds)
{
    memset(h, 0, sizeof(*h));
    h->bounds = bounds;
    h->n_bounds = n_bounds < METRICS_BUCKETS_MAX ? n_bounds : METRICS_BUCKETS_MAX;
}

void metrics_histogram_observe(struct metrics_histogram *h, double value)
{
    if (isnan(value))
        return;
    size_t i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    h->in_bucket[i]++;
    h->count++;
    h->sum += value;
}

void metrics_histogram_write(struct metrics_out *m, const char *name, const char *label_name,
                             const char *label_value, const struct metrics_histogram *h)
{
    const char *const labels[] = {label_name, label_value, NULL};
    uint64_t cumulative = 0;
    char le[32];
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative += h->in_bucket[i];
        if (i < h->n_bounds)
            snprintf(le, sizeof(le), "%g", h->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        write_sample(m->f, name, "_bucket", (double)cumulative, labels, le);
    }
    write_sample(m->f, name, "_sum", h->sum, labels, NULL);
    write_sample(m->f, name, "_count", (double)h->count, labels, NULL);
}
