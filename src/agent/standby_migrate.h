/* Live migration of a container between standby VMs (docs/agent.md,
 * "Migration (CRIU)"): the pure parts, without liblxc, so that they build
 * into agent_lib and the unit tests check them.
 *
 * Every file of a migration lives under STANDBY_MIGRATE_DIR/NAME/:
 *   pre/, final/          CRIU images of the pre-dump and of the final dump
 *   pre.tar, final.tar    what travels between the VMs (final.tar also holds
 *                         the overlay's upper dir as delta/ and the config)
 * The server copies PHASE.tar from the source agent to the target agent in
 * chunks (container_image_read / container_image_write). */
#ifndef VCR_AGENT_STANDBY_MIGRATE_H
#define VCR_AGENT_STANDBY_MIGRATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "agent/standby/standby.h"
#include "common/err.h"

#define STANDBY_MIGRATE_DIR "/var/lib/vcr/migrate"
/* The largest chunk of a container_image_read/write: its base64 (174764
 * characters) fits a frame (PROTO_MAX_FRAME 262144) with room to spare. */
#define STANDBY_CHUNK_MAX 131072

enum standby_phase {
    STANDBY_PHASE_PRE,   /* pre-dump: the container keeps running */
    STANDBY_PHASE_FINAL, /* dump: the container stops */
};
const char *standby_phase_name(enum standby_phase phase);

/* STANDBY_MIGRATE_DIR (or a test's base)/NAME and what is in it. */
struct standby_migrate_paths {
    char dir[256];    /* BASE/NAME */
    char images[272]; /* BASE/NAME/PHASE: CRIU's images dir */
    char tar[272];    /* BASE/NAME/PHASE.tar */
    char pre[272];    /* BASE/NAME/pre: the pre-dump, parent of a final dump */
};
int standby_migrate_paths(const char *base, const char *name, enum standby_phase phase,
                          struct standby_migrate_paths *p, vcr_error_t *err);

/* container_checkpoint {name, phase}. */
struct standby_checkpoint_order {
    char name[65];
    enum standby_phase phase;
};
int standby_checkpoint_from_json(json_t *msg, struct standby_checkpoint_order *o, vcr_error_t *err);

/* container_image_read {name, phase, offset, length (1..STANDBY_CHUNK_MAX)}. */
struct standby_image_read {
    char name[65];
    enum standby_phase phase;
    uint64_t offset;
    size_t length;
};
int standby_image_read_from_json(json_t *msg, struct standby_image_read *rq, vcr_error_t *err);
/* Reads the chunk of BASE/NAME/PHASE.tar: the reply's members {data (base64),
 * eof, bytes (the file's size)}.  NULL and *err if there is no such file or
 * offset is past its end. */
json_t *standby_image_read(const char *base, const struct standby_image_read *rq, vcr_error_t *err);

/* container_image_write {name, phase, offset, data (base64), last, bytes?,
 * sha256?}; data is decoded (at most STANDBY_CHUNK_MAX bytes). */
struct standby_image_write {
    char name[65];
    enum standby_phase phase;
    uint64_t offset;
    unsigned char *data; /* owned: standby_image_write_release() */
    size_t len;
    bool last;
    uint64_t bytes;  /* when last: the whole file's size */
    char sha256[65]; /* when last: its SHA-256, lower-case hex */
};
int standby_image_write_from_json(json_t *msg, struct standby_image_write *w, vcr_error_t *err);
void standby_image_write_release(struct standby_image_write *w);
/* Writes the chunk into BASE/NAME/PHASE.tar (created with NAME/ as needed;
 * offset 0 truncates it first); after the last one, checks the size and the
 * SHA-256.  The reply's members: {bytes (the file's size now)}. */
json_t *standby_image_write(const char *base, const struct standby_image_write *w,
                            vcr_error_t *err);

/* The chunk members shared by every chunked copy (the migration's images,
 * a service's data copies, docs/data.md): offset, length for a read;
 * offset, data, last, bytes?, sha256? for a write (into *w, whose name and
 * phase are left as they are). */
int standby_chunk_range_from_json(json_t *msg, uint64_t *offset, size_t *length, vcr_error_t *err);
int standby_chunk_from_json(json_t *msg, struct standby_image_write *w, vcr_error_t *err);
/* The reply members of a chunk read of path: {data (base64), eof, bytes}. */
/* path opened read-only without following a link, and stat'd into st: a
 * descriptor, or -1 with err (EPERM when it is not a regular file). */
int standby_open_regular(const char *path, struct stat *st, vcr_error_t *err);
json_t *standby_chunk_read(const char *path, uint64_t offset, size_t length, vcr_error_t *err);
/* Writes the chunk into path (offset 0 truncates it first); after the last
 * one, checks the file's size and SHA-256 (EIO naming both).  {bytes}. */
json_t *standby_chunk_write(const char *path, const struct standby_image_write *w,
                            vcr_error_t *err);
/* The same for the file named file in the directory dir_fd (path: its name
 * in messages).  The first chunk (offset 0) replaces whatever had the name
 * without following it (O_NOFOLLOW | O_EXCL); a later one writes only into a
 * regular file of this user with one link (docs/security.md). */
json_t *standby_chunk_write_at(int dir_fd, const char *file, const char *path,
                               const struct standby_image_write *w, vcr_error_t *err);

/* BASE/NAME, made private as container_image_write makes it (0700, this
 * agent's, not followed through a symbolic link): its fd, or -1 and *err.
 * The stream (standby_stream.h) receives PHASE.tar into it. */
int standby_migrate_dir_open(const char *base, const char *name, vcr_error_t *err);

/* container_migrate_cleanup {name}: removes BASE/NAME (nothing there is fine). */
int standby_migrate_cleanup(const char *base, const char *name, vcr_error_t *err);

/* Base64 without newlines (OpenSSL EVP_EncodeBlock): a NUL-terminated string
 * to free(), NULL when out of memory. */
char *standby_base64_encode(const unsigned char *buf, size_t len);
/* Strict: length a multiple of 4, only the base64 alphabet, '=' only as the
 * last one or two characters.  *out (to free(), NULL for "") and *len. */
int standby_base64_decode(const char *text, unsigned char **out, size_t *len, vcr_error_t *err);

/* Why CRIU failed, from the text of its log (DIR/dump.log, pre-dump.log,
 * restore.log): its first `Error` line (the cause: a restore's later ones are
 * its consequences) and the last two after it, without their timestamps and
 * task pids, joined with "; " (else the last line), in out (always
 * NUL-terminated). */
void standby_criu_log_reason(const char *log_text, char *out, size_t size);

/* A gratuitous ARP request (broadcast; sender and target address both
 * `address`, sender MAC mac): the Ethernet frame, 42 bytes. */
#define STANDBY_GARP_LEN 42
int standby_garp_frame(const unsigned char mac[6], const char *address,
                       unsigned char frame[STANDBY_GARP_LEN], vcr_error_t *err);

/* rm -rf: removes path and everything below it (not following symlinks);
 * a missing path succeeds. */
int standby_remove_tree(const char *path, vcr_error_t *err);

#endif
