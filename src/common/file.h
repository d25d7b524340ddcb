/* Files that must survive a crash whole: written aside, then swapped in. */
#ifndef VCR_COMMON_FILE_H
#define VCR_COMMON_FILE_H

#include <stddef.h>

#include "err.h"

/* Replaces path with the len bytes of data, durably: PATH.tmp is written and
 * fsync'd, renamed over path, and path's directory is fsync'd, so that after a
 * crash or a power cut path holds either its old contents or all of the new. */
int vcr_file_replace(const char *path, const void *data, size_t len, vcr_error_t *err);

#endif
