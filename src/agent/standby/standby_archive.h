/* Checks a tar archive from another machine before GNU tar unpacks it
 * (docs/security.md, "Root actions"): the migration archives pre.tar and
 * final.tar come from another standby VM through the server, so whoever owns
 * that VM chooses their bytes.  Pure parsing (ustar, GNU long names, pax
 * extended headers), no file system access beyond reading the archive: the
 * unit tests and a libFuzzer harness drive it. */
#ifndef VCR_AGENT_STANDBY_ARCHIVE_H
#define VCR_AGENT_STANDBY_ARCHIVE_H

#include <stddef.h>

#include "common/err.h"

/* What an archive may hold.  Every member's name is relative, has no `..`
 * component and starts with one of tops; a member is a regular file or a
 * directory, except:
 *   - under links_under/ (the overlay's upper dir of a container: its own
 *     files), symbolic links, FIFOs and 0:0 character devices (overlayfs
 *     whiteouts) are kept;
 *   - the one symbolic link link_name -> link_target (CRIU's `parent` link
 *     from a final dump to its pre-dump).
 * Hard links, other devices and every other link are refused. */
struct standby_archive_policy {
    const char *const *tops; /* NULL-terminated */
    const char *links_under; /* NULL: nowhere */
    const char *link_name;   /* NULL: none */
    const char *link_target;
};

/* The policies of the migration's two archives (standby_migrate.h). */
extern const struct standby_archive_policy standby_archive_pre;
extern const struct standby_archive_policy standby_archive_final;

/* 0 when every member of the archive in buf follows policy; -1 with EPERM
 * and the member named for one that does not, or EINVAL for a damaged
 * archive (a bad header checksum, a member past the end). */
int standby_archive_check_mem(const unsigned char *buf, size_t len,
                              const struct standby_archive_policy *policy, vcr_error_t *err);
/* The same for the file at path (not followed if it is a symbolic link). */
int standby_archive_check_file(const char *path, const struct standby_archive_policy *policy,
                               vcr_error_t *err);

#endif
