/* The `images:` list: schema of the raw strings and its validation (after
 * services.c: every bad field named with its path, value and what is
 * allowed, all of them reported at once). */
#include "server/images.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "server/inventory.h"

#define RAW_STR(key, member)                                                                       \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct images_raw_image, \
                           member, 0, CYAML_UNLIMITED)

static const cyaml_schema_field_t image_fields[] = {
    RAW_STR("name", name), RAW_STR("file", file), RAW_STR("sha256", sha256),
    RAW_STR("cmd", cmd),   CYAML_FIELD_END,
};

const cyaml_schema_value_t images_raw_image_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct images_raw_image, image_fields),
};

struct conv {
    services_report_fn report;
    void *ctx;
    unsigned problems;
};

static void bad(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct conv *c, const char *fmt, ...)
{
    cleanup_free char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    c->problems++;
    c->report(c->ctx, n >= 0 ? line : "out of memory");
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

#define FILE_ALLOWED "a readable rootfs tarball (gzip: *.tar.gz or *.tgz) on this machine"

static char *take_file(struct conv *c, size_t i, const char *value, const char *base_dir)
{
    if (value == NULL || value[0] == '\0') {
        bad(c, "`images[%zu].file`: missing; allowed: %s", i, FILE_ALLOWED);
        return NULL;
    }
    char *path = NULL;
    int n = value[0] == '/' || base_dir == NULL ? asprintf(&path, "%s", value)
                                                : asprintf(&path, "%s/%s", base_dir, value);
    if (n < 0) {
        bad(c, "`images[%zu].file`: out of memory", i);
        return NULL;
    }
    struct stat st;
    if (!ends_with(path, ".tar.gz") && !ends_with(path, ".tgz"))
        bad(c, "`images[%zu].file`: `%s` is not named *.tar.gz or *.tgz; allowed: %s", i, value,
            FILE_ALLOWED);
    else if (stat(path, &st) < 0)
        bad(c, "`images[%zu].file`: `%s`: %s; allowed: %s", i, path, strerror(errno), FILE_ALLOWED);
    else if (!S_ISREG(st.st_mode))
        bad(c, "`images[%zu].file`: `%s` is not a regular file; allowed: %s", i, path,
            FILE_ALLOWED);
    else if (access(path, R_OK) < 0)
        bad(c, "`images[%zu].file`: `%s`: %s; allowed: %s", i, path, strerror(errno), FILE_ALLOWED);
    else
        return path;
    free(path);
    return NULL;
}

static void take_sha256(struct conv *c, size_t i, const char *value, char out[IMAGES_HEX_LEN + 1])
{
    if (value == NULL) {
        bad(c,
            "`images[%zu].sha256`: missing; allowed: the file's SHA-256, 64 hex digits "
            "(sha256sum FILE)",
            i);
        return;
    }
    size_t n = strspn(value, "0123456789abcdefABCDEF");
    if (n != IMAGES_HEX_LEN || value[n] != '\0') {
        bad(c,
            "`images[%zu].sha256`: `%.80s` is not a SHA-256; allowed: 64 hex digits "
            "(sha256sum FILE)",
            i, value);
        return;
    }
    for (size_t k = 0; k < IMAGES_HEX_LEN; k++)
        out[k] = (char)(value[k] | 0x20); /* lower case: hex digits only */
    out[IMAGES_HEX_LEN] = '\0';
}

/* A shell command line: the agent runs it as `exec CMD` from a script in the
 * container (docs/agent.md), so quotes work as in a shell, as the images'
 * own metadata writes them (`nginx -g 'daemon off;'`). */
static void take_cmd(struct conv *c, size_t i, const char *value, char **out)
{
    if (value == NULL)
        return;
    size_t n = strlen(value);
    const char *why = NULL;
    if (n == 0 || strspn(value, " ") == n)
        why = "is empty";
    else if (n > IMAGES_CMD_MAX)
        why = "is too long";
    for (size_t k = 0; why == NULL && k < n; k++)
        if ((unsigned char)value[k] < 0x20 || value[k] == 0x7f)
            why = "holds a control character (a newline, a tab)";
    if (why) {
        bad(c,
            "`images[%zu].cmd`: `%.80s` %s; allowed: one shell command line of at most %d "
            "characters, run by the image's /bin/sh as `exec CMD` (PID 1 of the container)",
            i, value, why, IMAGES_CMD_MAX);
        return;
    }
    *out = strdup(value);
}

unsigned images_config_convert(const struct images_raw_image *raw, size_t n, const char *base_dir,
                               struct image_config **images, size_t *n_images,
                               services_report_fn report, void *ctx)
{
    struct conv c = {.report = report, .ctx = ctx};
    *images = NULL;
    *n_images = 0;
    if (n == 0)
        return 0;
    if (n > IMAGES_MAX) {
        bad(&c, "`images`: %zu given; allowed: at most %d", n, IMAGES_MAX);
        return c.problems;
    }
    struct image_config *out = calloc(n, sizeof(*out));
    if (out == NULL) {
        bad(&c, "`images`: out of memory");
        return c.problems;
    }
    for (size_t i = 0; i < n; i++) {
        const struct images_raw_image *r = &raw[i];
        struct image_config *img = &out[i];
        if (r->name == NULL)
            bad(&c,
                "`images[%zu].name`: missing; allowed: a name of 1..64 letters, digits, '.', "
                "'_', '-'",
                i);
        else if (!inventory_valid_name(r->name))
            bad(&c,
                "`images[%zu].name`: `%s` is not a name; allowed: 1..64 letters, digits, '.', "
                "'_', '-'",
                i, r->name);
        else
            img->name = strdup(r->name);
        img->file = take_file(&c, i, r->file, base_dir);
        take_sha256(&c, i, r->sha256, img->sha256);
        take_cmd(&c, i, r->cmd, &img->cmd);
        for (size_t j = 0; img->name && j < i; j++)
            if (out[j].name && strcmp(out[j].name, img->name) == 0)
                bad(&c, "`images[%zu].name`: `%s` is also images[%zu]'s; allowed: a unique name", i,
                    img->name, j);
    }
    *images = out;
    *n_images = n;
    return c.problems;
}

const struct image_config *images_find(const struct image_config *images, size_t n,
                                       const char *name)
{
    for (size_t i = 0; name && i < n; i++)
        if (images[i].name && strcmp(images[i].name, name) == 0)
            return &images[i];
    return NULL;
}

int images_url(const char *host, uint16_t port, const char *name, char *buf, size_t size)
{
    int n = snprintf(buf, size, "http://%s:%u%s%s", host, port, IMAGES_URL_PATH, name);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

void images_free(struct image_config *images, size_t n)
{
    for (size_t i = 0; images && i < n; i++) {
        free(images[i].name);
        free(images[i].file);
        free(images[i].cmd);
    }
    free(images);
}
