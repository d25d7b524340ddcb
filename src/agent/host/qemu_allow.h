/* The QEMU binaries this agent runs (docs/security.md, "Root actions"): a
 * warm restart order may name the binary of the new QEMU, and the agent runs
 * it as root, so only binaries of a list fixed at start are accepted.  The
 * list is the configuration's `qemu_allowed`, or by default the configured
 * `qemu` and every /usr/bin/qemu-system-* and /usr/local/bin/qemu-system-*
 * present at start; each entry and each request is compared by its real path
 * (realpath: no symbolic link, no `..`). */
#ifndef VCR_AGENT_QEMU_ALLOW_H
#define VCR_AGENT_QEMU_ALLOW_H

#include <stddef.h>

#include "common/err.h"

struct qemu_allow {
    char **paths; /* real paths */
    size_t n;
};

/* configured: n paths (n 0: the default above, from qemu). */
int qemu_allow_init(struct qemu_allow *a, char *const *configured, size_t n, const char *qemu,
                    vcr_error_t *err);
void qemu_allow_clear(struct qemu_allow *a);
/* 0 with path's real path in real (size bytes) when it is on the list; -1
 * with EPERM naming the path and the list otherwise (or the realpath error). */
int qemu_allow_check(const struct qemu_allow *a, const char *path, char *real, size_t size,
                     vcr_error_t *err);

#endif
