/* QEMU binary allowlist (qemu_allow.h). */
#include "agent/host/qemu_allow.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add(struct qemu_allow *a, const char *path, vcr_error_t *err)
{
    char real[PATH_MAX];
    if (realpath(path, real) == NULL)
        return vcr_error_errno(err, "QEMU allowlist: `%s`", path);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->paths[i], real) == 0)
            return 0;
    char **paths = realloc(a->paths, (a->n + 1) * sizeof(*paths));
    if (paths == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    a->paths = paths;
    if ((a->paths[a->n] = strdup(real)) == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    a->n++;
    return 0;
}

int qemu_allow_init(struct qemu_allow *a, char *const *configured, size_t n, const char *qemu,
                    vcr_error_t *err)
{
    *a = (struct qemu_allow){0};
    for (size_t i = 0; i < n; i++)
        if (add(a, configured[i], err) < 0)
            goto fail;
    if (n > 0)
        return 0;
    if (qemu && add(a, qemu, err) < 0)
        goto fail;
    static const char *const patterns[] = {"/usr/bin/qemu-system-*",
                                           "/usr/local/bin/qemu-system-*"};
    for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
        glob_t g;
        if (glob(patterns[p], 0, NULL, &g) != 0)
            continue;
        int rc = 0;
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++) {
            vcr_error_t ignored = NULL; /* one that vanished since glob: left out */
            if (add(a, g.gl_pathv[i], &ignored) < 0 && vcr_error_status(ignored) == ENOMEM)
                rc = vcr_error_make(err, ENOMEM, "out of memory");
            vcr_error_release(&ignored);
        }
        globfree(&g);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    qemu_allow_clear(a);
    return -1;
}

void qemu_allow_clear(struct qemu_allow *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->paths[i]);
    free(a->paths);
    *a = (struct qemu_allow){0};
}

int qemu_allow_check(const struct qemu_allow *a, const char *path, char *real, size_t size,
                     vcr_error_t *err)
{
    char buf[PATH_MAX];
    if (realpath(path, buf) == NULL)
        return vcr_error_errno(err, "qemu `%s`", path);
    for (size_t i = 0; a && i < a->n; i++)
        if (strcmp(a->paths[i], buf) == 0) {
            if (strlen(buf) >= size)
                return vcr_error_make(err, ENAMETOOLONG, "qemu `%s`: path too long", path);
            memcpy(real, buf, strlen(buf) + 1);
            return 0;
        }
    char list[600] = "";
    size_t used = 0;
    for (size_t i = 0; a && i < a->n && used < sizeof(list); i++)
        used +=
            (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", a->paths[i]);
    return vcr_error_make(err, EPERM,
                          "qemu `%s` (%s) is not an allowed QEMU binary; allowed: %s (the agent "
                          "configuration's `qemu_allowed`)",
                          path, buf, list[0] ? list : "(none)");
}
