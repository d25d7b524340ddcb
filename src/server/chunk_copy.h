/* A file carried from one agent to another through the server, in chunks of
 * base64 inside orders: the mechanism of the migration images
 * (docs/migration.md, `copy`), for a service's data copies (docs/data.md).
 * One read order on the source, then one write order on the target, until
 * the end; the last write carries the file's size and SHA-256, which the
 * target checks.  Every order's outcome moves it on; a failure ends it.
 * Used by the migration (migrate.c: container_image_read/_write) and by a
 * service's data copies (service_data.c). */
#ifndef VCR_SERVER_CHUNK_COPY_H
#define VCR_SERVER_CHUNK_COPY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct agents;

/* 96 KiB: 128 KiB of base64 with the order's members stays well inside a frame. */
#define CHUNK_COPY_BYTES    98304
#define CHUNK_COPY_ORDER_MS 30000
/* The stream's deadline (deadline_ms of stream_receive and stream_send): 60 s
 * plus a second per 2 MB (0.5 s/MB: 40x slower than the stream measured under
 * TCG still ends in time), at most PROTO_STREAM_DEADLINE_MAX_MS, which the
 * agents refuse to exceed (a file over ~7 GB would otherwise be refused).
 * A dead peer is caught sooner: both ends give up after 10 s without a byte
 * (standby_stream.h). */
int64_t chunk_copy_stream_ms(int64_t bytes);

struct chunk_copy_spec {
    const char *src_host, *src_vm, *read_action;  /* e.g. volume_snapshot_read */
    const char *dst_host, *dst_vm, *write_action; /* e.g. data_write */
    json_t *read_members, *write_members;         /* borrowed; copied */
    int64_t bytes;
    const char *sha256;
    int64_t chunk_bytes; /* 0: CHUNK_COPY_BYTES */
    int64_t order_ms;    /* each order's reply deadline; 0: CHUNK_COPY_ORDER_MS */
    /* The stream (docs/migration.md "The stream"): the file named to the
     * agents' stream_receive / stream_send ({kind, name, phase | service},
     * borrowed; copied).  NULL: chunks through the server only.  Tried first;
     * an agent that refuses stream_receive as an unknown order (code invalid
     * or unsupported) gets the chunks instead. */
    json_t *stream_members;
    bool no_stream;               /* the chunks even so (the benchmark's baseline) */
    struct chunk_copy_stats *out; /* borrowed: filled before done runs; may be NULL */
};

/* How a copy went: its method ("stream" or "server") and its rate. */
struct chunk_copy_stats {
    char method[8];
    double mb_s;
};

/* error NULL on success; bytes: what was written; ms: how long it took. */
typedef void (*chunk_copy_done_cb)(const char *error, int64_t bytes, int64_t ms, void *opaque);

/* Starts the copy; done runs exactly once, from the loop, unless this fails
 * (-1 and *err, nothing sent). */
int chunk_copy_start(struct agents *agents, const struct chunk_copy_spec *spec,
                     chunk_copy_done_cb done, void *opaque, vcr_error_t *err);

/* base64 text's decoded length. */
int64_t chunk_copy_b64_len(const char *data);

#endif
