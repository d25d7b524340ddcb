/* Files that must survive a host crash once written: the file's data is
 * fsync'd before the rename that publishes it, and the directory after it,
 * so that a crash leaves either the old file or the whole new one (the
 * rename is only durable once its directory is).  Used for the warm-restart
 * state files (agent/warm_state.c), fenced.json (agent/host/fence_watchdog.c) and
 * the volume images (agent/host/host_volume.c). */
#ifndef VCR_COMMON_DURABLE_H
#define VCR_COMMON_DURABLE_H

#include <stddef.h>

#include "err.h"

/* write(2) until all len bytes are written (EINTR retried); path names the
 * file in the error. */
int vcr_write_all(int fd, const void *buf, size_t len, const char *path, vcr_error_t *err);
/* fsync(2) of an existing file (or directory), opened read-only. */
int vcr_fsync_path(const char *path, vcr_error_t *err);
/* fsync(2) of the directory that holds path. */
int vcr_fsync_parent_dir(const char *path, vcr_error_t *err);
/* fsync tmp, rename it to path, fsync path's directory.  On failure errno is
 * the failing call's (callers that log strerror(errno) may pass err NULL) and
 * tmp is left for the caller to remove. */
int vcr_rename_durable(const char *tmp, const char *path, vcr_error_t *err);
/* Replaces path with the len bytes of data, durably: PATH.tmp is written, then
 * vcr_rename_durable, so that after a crash or a power cut path holds either
 * its old contents or all of the new. */
int vcr_file_replace(const char *path, const void *data, size_t len, vcr_error_t *err);

#endif
