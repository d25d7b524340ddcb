/* A service's data copy (docs/data.md): a point-in-time copy of a volume
 * image, packed on the primary's host (gzip -1: an ext4 image is mostly
 * zeros), carried by the server in chunks like the migration images
 * (standby_chunk_read / standby_chunk_write, standby_migrate.h) and unpacked
 * on the standby side, where the latest complete copy is kept with the time
 * it was taken.  Pure file functions (zlib, OpenSSL): both roles use them,
 * from a child process (standby_job.h) since an image is megabytes; the unit
 * tests drive them directly.
 *
 * On the standby side every service has STANDBY_DATA_DIR/SERVICE/:
 *   incoming.gz   the copy being received (chunks), checked at its last one
 *   data.img      the latest complete copy, unpacked (replaced by rename)
 *   taken.json    {"taken_ms": ..., "installed_ms": ..., "bytes": ...} of data.img
 *   mnt/          where data.img is loop-mounted once attached to the container
 *   outgoing.gz   failback: data.img packed for the way back */
#ifndef VCR_AGENT_DATA_IMAGE_H
#define VCR_AGENT_DATA_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define STANDBY_DATA_DIR "/var/lib/vcr/data"

struct data_packed {
    uint64_t bytes;     /* the .gz file */
    uint64_t raw_bytes; /* the image */
    char sha256[65];    /* of the .gz file, lower-case hex */
    int64_t pack_ms;
};

/* gzip -1 of src into dst (through DST.tmp, fsync'd and renamed), with the
 * SHA-256 of what was written.  src is read once, front to back. */
int data_pack(const char *src, const char *dst, struct data_packed *out, vcr_error_t *err);

/* Checks that gz has the SHA-256 sha256 (NULL: no check; a mismatch is EIO,
 * the error naming both digests) and unpacks it into dst through DST.tmp
 * (blocks of zeros left as holes), fsync'd and renamed: dst is either the old
 * copy or the whole new one.  *raw_bytes: the unpacked size. */
int data_unpack(const char *gz, const char *sha256, const char *dst, uint64_t *raw_bytes,
                vcr_error_t *err);

/* DIR/taken.json, written through a rename; read back (ENOENT: none yet). */
int data_taken_write(const char *dir, int64_t taken_ms, int64_t installed_ms, uint64_t bytes,
                     vcr_error_t *err);
int data_taken_read(const char *dir, int64_t *taken_ms, vcr_error_t *err);

/* STANDBY_DATA_DIR (or a test's base)/SERVICE/FILE, checking the name. */
int data_path(const char *base, const char *service, const char *file, char *out, size_t size,
              vcr_error_t *err);

#endif
