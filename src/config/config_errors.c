/* Error reporting for configuration files: every bad field becomes one line
 * "path: `value` problem; allowed: what", after redis's config.c, which names
 * the offending line and what it expected. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "config/config_internal.h"

/* Caps what a hostile or broken file can make us keep in memory. */
#define REPORT_MAX_TEXT 65536

static void append(char **buf, size_t *len, const char *s, size_t n)
{
    if (*len + n + 1 > REPORT_MAX_TEXT)
        return;
    char *grown = realloc(*buf, *len + n + 1);
    if (grown == NULL)
        return;
    memcpy(grown + *len, s, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
}

void config_report_add(struct config_report *r, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *what = NULL;
    if (vasprintf(&what, fmt, ap) < 0)
        what = NULL;
    va_end(ap);
    cleanup_free char *line = NULL;
    int n = asprintf(&line, "%s%s%s\n", path ? path : "", path && *path ? ": " : "",
                     what ? what : "(out of memory)");
    if (n > 0)
        append(&r->text, &r->len, line, (size_t)n);
    r->count++;
}

void config_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct config_report *r = ctx;
    if (level < CYAML_LOG_ERROR)
        return;
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), fmt, args);
    if (n > 0)
        append(&r->cyaml_log, &r->cyaml_log_len, buf,
               (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

int config_cyaml_frames(char *log, char **message, struct config_frame *frames)
{
    int n = 0;
    *message = NULL;
    bool in_trace = false;
    for (char *save = NULL, *l = strtok_r(log, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (*l == ' ')
            l++;
        if (strncmp(l, "Load: ", 6) == 0)
            l += 6;
        if (strcmp(l, "Backtrace:") == 0) {
            in_trace = true;
            continue;
        }
        if (!in_trace) {
            if (*message == NULL)
                *message = l;
            continue;
        }
        if (n == CONFIG_MAX_FRAMES)
            break;
        struct config_frame *f = &frames[n];
        memset(f, 0, sizeof(*f));
        const char *q;
        if (strncmp(l, "in mapping field '", 18) == 0) {
            f->kind = CONFIG_FRAME_FIELD;
            q = l + 18;
        } else if (strncmp(l, "in sequence entry '", 19) == 0) {
            f->kind = CONFIG_FRAME_ENTRY;
            q = l + 19;
        } else if (strncmp(l, "in mapping", 10) == 0) {
            f->kind = CONFIG_FRAME_MAPPING;
            q = NULL;
        } else {
            continue;
        }
        if (q) {
            const char *end = strchr(q, '\'');
            size_t len = end ? (size_t)(end - q) : strlen(q);
            if (len >= sizeof(f->name))
                len = sizeof(f->name) - 1;
            memcpy(f->name, q, len);
        }
        const char *line = strstr(l, "(line: ");
        f->line = line ? atoi(line + 7) : 0;
        n++;
    }
    return n;
}

/* Builds "vms[1].mac" from frames[from..n-1] (outermost is last). */
static void frames_path(const struct config_frame *frames, int from, int n, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = n - 1; i >= from && len < size; i--) {
        int w = 0;
        if (frames[i].kind == CONFIG_FRAME_FIELD)
            w = snprintf(out + len, size - len, "%s%s", len ? "." : "", frames[i].name);
        else if (frames[i].kind == CONFIG_FRAME_ENTRY)
            w = snprintf(out + len, size - len, "[%d]", atoi(frames[i].name) - 1);
        if (w > 0)
            len += (size_t)w;
    }
}

/* The mapping schema at the container of frames[from..]: to list allowed keys. */
static const cyaml_schema_field_t *mapping_at(const cyaml_schema_value_t *v,
                                              const struct config_frame *frames, int from, int n)
{
    for (int i = n - 1; i >= from && v; i--) {
        if (frames[i].kind == CONFIG_FRAME_FIELD) {
            if (v->type != CYAML_MAPPING)
                return NULL;
            const cyaml_schema_field_t *f = v->mapping.fields;
            while (f->key && strcmp(f->key, frames[i].name) != 0)
                f++;
            v = f->key ? &f->value : NULL;
        } else if (frames[i].kind == CONFIG_FRAME_ENTRY) {
            v = v->type == CYAML_SEQUENCE ? v->sequence.entry : NULL;
        }
    }
    return v && v->type == CYAML_MAPPING ? v->mapping.fields : NULL;
}

static const char *allowed_for(const struct config_report *r, const char *key)
{
    for (const struct config_allowed *a = r->allowed; a && a->key; a++)
        if (strcmp(a->key, key) == 0)
            return a->allowed;
    return NULL;
}

static const char *event_noun(const char *event)
{
    if (strncmp(event, "SEQUENCE", 8) == 0)
        return "a list";
    if (strncmp(event, "MAPPING", 7) == 0)
        return "a mapping";
    if (strncmp(event, "SCALAR", 6) == 0)
        return "a single value";
    return event;
}

void config_report_cyaml_failure(struct config_report *r, cyaml_err_t status)
{
    cleanup_free char *log = r->cyaml_log ? strdup(r->cyaml_log) : NULL;
    char *message = NULL;
    struct config_frame frames[CONFIG_MAX_FRAMES];
    int n = log ? config_cyaml_frames(log, &message, frames) : 0;
    if (message == NULL) {
        config_report_add(r, NULL, "%s", cyaml_strerror(status));
        return;
    }
    /* For errors about a key, the innermost frame is the mapping holding it
     * (libcyaml names the last field it read there, not the one at fault). */
    int container = n > 0 && frames[0].kind != CONFIG_FRAME_ENTRY ? 1 : 0;
    char where[256], path[512];
    const char *key;
    int line = n > 0 ? frames[0].line : 0;
    char at_line[32] = "";
    if (line > 0)
        snprintf(at_line, sizeof(at_line), " (line %d)", line);

    if ((key = strstr(message, "Unexpected key: ")) != NULL) {
        key += 16;
        frames_path(frames, container, n, where, sizeof(where));
        snprintf(path, sizeof(path), "%s%s%s", where, *where ? "." : "", key);
        char keys[512] = "";
        size_t len = 0;
        const cyaml_schema_field_t *f = mapping_at(r->schema, frames, container, n);
        for (; f && f->key && len < sizeof(keys); f++) {
            int w = snprintf(keys + len, sizeof(keys) - len, "%s%s", len ? ", " : "", f->key);
            if (w > 0)
                len += (size_t)w;
        }
        config_report_add(r, path, "unknown key%s; allowed: %s", at_line, *keys ? keys : "none");
    } else if ((key = strstr(message, "Missing required mapping field: ")) != NULL) {
        key += 32;
        frames_path(frames, container, n, where, sizeof(where));
        snprintf(path, sizeof(path), "%s%s%s", where, *where ? "." : "", key);
        const char *allowed = allowed_for(r, key);
        config_report_add(r, path, "missing; required%s%s", allowed ? ": " : "",
                          allowed ? allowed : "");
    } else if ((key = strstr(message, "Mapping field already seen: ")) != NULL) {
        key += 28;
        frames_path(frames, container, n, where, sizeof(where));
        snprintf(path, sizeof(path), "%s%s%s", where, *where ? "." : "", key);
        config_report_add(r, path, "duplicate key%s; allowed: once per mapping", at_line);
    } else if (strncmp(message, "Expecting ", 10) == 0) {
        char expected[32] = "", got[32] = "";
        sscanf(message, "Expecting %31[A-Z_], got event: %31[A-Z_]", expected, got);
        frames_path(frames, 0, n, path, sizeof(path));
        config_report_add(r, *path ? path : "(document)", "expected %s, found %s%s",
                          event_noun(expected), event_noun(got), at_line);
    } else if (strncmp(message, "libyaml: ", 9) == 0) {
        config_report_add(r, NULL, "YAML syntax error near line %d: %s", line, message + 9);
    } else {
        frames_path(frames, 0, n, path, sizeof(path));
        config_report_add(r, *path ? path : NULL, "%s%s", message, at_line);
    }
}

int config_report_finish(struct config_report *r, const char *origin, vcr_error_t *err)
{
    if (r->count == 0)
        return 0;
    if (r->text == NULL)
        return vcr_error_make(err, EINVAL, "%s: invalid configuration", origin);
    /* Drop the final newline; with several problems, list one per line. */
    r->text[r->len - 1] = '\0';
    if (r->count == 1)
        return vcr_error_make(err, EINVAL, "%s: %s", origin, r->text);
    cleanup_free char *indented = NULL;
    size_t len = 0;
    for (char *save = NULL, *l = strtok_r(r->text, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        append(&indented, &len, "\n  ", 3);
        append(&indented, &len, l, strlen(l));
    }
    return vcr_error_make(err, EINVAL, "%s: %u problems:%s", origin, r->count,
                          indented ? indented : "");
}

int config_report_finish_each(struct config_report *r, const char *origin, vcr_error_t *err)
{
    if (r->count == 0)
        return 0;
    cleanup_free char *text = NULL;
    size_t len = 0;
    char *lines = r->text;
    for (char *save = NULL, *l = lines ? strtok_r(lines, "\n", &save) : NULL; l;
         l = strtok_r(NULL, "\n", &save)) {
        cleanup_free char *line = NULL;
        int n = asprintf(&line, "%sconfig `%s`: %s", len ? "\n" : "", origin, l);
        if (n > 0)
            append(&text, &len, line, (size_t)n);
    }
    return vcr_error_make(err, EINVAL, "%s", text ? text : "invalid");
}

void config_report_release(struct config_report *r)
{
    free(r->text);
    free(r->cyaml_log);
    r->text = r->cyaml_log = NULL;
    r->len = r->cyaml_log_len = 0;
    r->count = 0;
}

bool config_check_range(struct config_report *r, const char *path, int64_t value, int64_t min,
                        int64_t max)
{
    if (value >= min && value <= max)
        return true;
    config_report_add(r, path, "%lld is out of range; allowed: %lld..%lld", (long long)value,
                      (long long)min, (long long)max);
    return false;
}

bool config_parse_int(struct config_report *r, const char *path, const char *text, int64_t min,
                      int64_t max, int64_t *out)
{
    /* Parsed here rather than by libcyaml, whose integer reader takes "1s" as 1. */
    const char *p = text + (text[0] == '-');
    bool digits = *p != '\0';
    for (; *p; p++)
        digits = digits && *p >= '0' && *p <= '9';
    errno = 0;
    long long v = digits ? strtoll(text, NULL, 10) : 0;
    if (!digits || errno == ERANGE) {
        config_report_add(r, path, "`%s` is not an integer; allowed: an integer %lld..%lld", text,
                          (long long)min, (long long)max);
        return false;
    }
    if (!config_check_range(r, path, v, min, max))
        return false;
    *out = v;
    return true;
}

bool config_parse_bool(struct config_report *r, const char *path, const char *text, bool *out)
{
    /* libcyaml's boolean reader takes any unknown word as true. */
    if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0) {
        *out = text[0] == 't';
        return true;
    }
    config_report_add(r, path, "`%s` is not valid; allowed: true or false", text);
    return false;
}

char *config_path(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static char *config_join(const char *dir, const char *file)
{
    if (file[0] == '/' || dir == NULL)
        return strdup(file);
    return config_path("%s/%s", dir, file);
}

bool config_check_file(struct config_report *r, const char *path, const char *value,
                       const char *base_dir, bool executable, char **resolved)
{
    const char *allowed = executable ? "an executable file" : "a readable regular file";
    if (value == NULL || *value == '\0') {
        config_report_add(r, path, "empty; allowed: %s", allowed);
        return false;
    }
    cleanup_free char *full = config_join(base_dir, value);
    if (full == NULL) {
        config_report_add(r, path, "out of memory");
        return false;
    }
    struct stat st;
    if (stat(full, &st) < 0 || access(full, executable ? X_OK : R_OK) < 0) {
        config_report_add(r, path, "`%s`: %s; allowed: %s", full, strerror(errno), allowed);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        config_report_add(r, path, "`%s` is not a regular file; allowed: %s", full, allowed);
        return false;
    }
    *resolved = steal_pointer(&full);
    return true;
}

bool config_check_name(struct config_report *r, const char *path, const char *value)
{
    if (vcr_name_is_valid(value))
        return true;
    config_report_add(r, path,
                      "`%s` is not a valid name; allowed: 1 to %d characters of a-z, 0-9, -",
                      value ? value : "", VCR_NAME_MAX);
    return false;
}
