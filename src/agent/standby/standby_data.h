/* A service's data on the standby side (docs/data.md; files in
 * data_image.h): copies received in chunks, unpacked, loop-mounted and bound
 * into the service's container; packed again for failback.  Without liblxc:
 * standby_role.c adds the container's part. */
#ifndef VCR_AGENT_STANDBY_DATA_H
#define VCR_AGENT_STANDBY_DATA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* On the loop: data_write {service, offset, data, last, bytes?, sha256?} into
 * BASE/SERVICE/incoming.gz (size and SHA-256 checked at the last chunk), or
 * data_read {service, offset, length} of BASE/SERVICE/outgoing.gz, or
 * data_space {service}: {copy, mounted, raw_bytes, alloc_bytes, free_bytes}
 * (data.img there, attached, its size and allocated bytes, the room left on
 * BASE's filesystem).  The reply's members, or NULL and *err. */
json_t *standby_data_loop_order(const char *base, const char *action, json_t *msg,
                                vcr_error_t *err);
/* In a child: data_install {service, taken_ms, sha256?}: incoming.gz checked
 * and unpacked over data.img (temp + rename), taken.json written.  A copy
 * still mounted (a recovery that was cleared) is detached first: the server
 * installs only while the primary serves, or before a data_attach. */
int standby_data_install(const char *base, json_t *msg, vcr_error_t *err);
/* In a child: loop-mounts BASE/SERVICE/data.img at BASE/SERVICE/mnt (mnt:
 * its path) unless it is already; *taken_ms from taken.json.  ENOENT when no
 * copy has arrived. */
int standby_data_mount(const char *base, const char *service, char *mnt, size_t size,
                       int64_t *taken_ms, vcr_error_t *err);
/* In a child: the copy mounted at mnt takes the owner of the directory it
 * covers in the container (image_dir: that path in the container's root
 * filesystem, its image), e.g. Redis's /var/lib/redis, redis:redis.  The primary and the
 * container image are separate installations whose system users get different
 * ids (Debian 12 here: redis 101:103 in the VM, 100:101 in ct-redis), so
 * without this the service in the container cannot write its own files.
 * Every file owned by the copy's root's uid (gid) gets the directory's uid
 * (gid); others keep theirs.  Nothing is done when image_dir does not exist
 * or already has the copy's owner.  *changed: files changed. */
int standby_data_take_owner(const char *mnt, const char *image_dir, unsigned long *changed,
                            vcr_error_t *err);
/* In a child, the container stopped: unmounts mnt and packs data.img into
 * outgoing.gz (job result: bytes, raw_bytes, sha256, pack_ms). */
int standby_data_export(const char *base, const char *service, vcr_error_t *err);
/* BASE/SERVICE (made if missing) opened as a directory, not through a
 * symbolic link: where the stream (standby_stream.h) puts incoming.gz.  Its
 * fd, or -1 and *err; dir (if not NULL): its path. */
int standby_data_dir_open(const char *base, const char *service, char *dir, size_t size,
                          vcr_error_t *err);
/* Whether path is a mount point in /proc/self/mounts. */
bool standby_data_mounted(const char *path);
/* Removes SERVICE/outgoing.gz (data_export's packed copy) once it has been
 * carried away (a migration's cleanup). */
void standby_data_forget_outgoing(const char *base, const char *service);

#endif
