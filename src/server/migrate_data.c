/* A migration's service data (docs/migration.md "Data"): room checked on
 * both sides first (data_space), then, after the final image, the volume
 * exported on the source, copied chunk by chunk and installed on the target. */
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/chunk_copy.h"
#include "server/migrate.h"
#include "server/migrate_priv.h"
#include "server/service_data.h"

static void on_data_installed(enum order_outcome outcome, const char *message, json_t *reply,
                              void *opaque)
{
    struct mig *g = opaque;
    if (!mig_reply_ok(g, MP_DATA_INSTALL, "data install on the target", outcome, message))
        return;
    mig_phase_done(g, MP_RESTORE,
                   json_pack("{s:O?, s:I}", "unpack_ms", json_object_get(reply, "unpack_ms"),
                             "raw_bytes", (json_int_t)g->data_raw));
    mig_restore(g);
}

static void on_data_copied(const char *error, int64_t bytes, int64_t ms, void *opaque)
{
    struct mig *g = opaque;
    if (g->m->stopping || g->phase != MP_DATA_COPY)
        return;
    if (error) {
        mig_fail(g, "data copy: %s", error);
        return;
    }
    mig_copy_phase_done(g, MP_DATA_INSTALL, bytes, ms);
    cleanup_json json_t *m =
        json_pack("{s:s, s:s, s:I, s:s}", "name", g->name, "service", g->service, "taken_ms",
                  (json_int_t)g->data_taken_ms, "sha256", g->data_sha256);
    mig_order(g, g->dst, "data_install", m, SERVICE_DATA_ORDER_MS, on_data_installed);
}

static void on_data_exported(enum order_outcome outcome, const char *message, json_t *reply,
                             void *opaque)
{
    struct mig *g = opaque;
    if (!mig_reply_ok(g, MP_DATA_EXPORT, "data export on the source", outcome, message))
        return;
    const char *sum = json_string_value(json_object_get(reply, "sha256"));
    json_t *bytes = json_object_get(reply, "bytes");
    if (!json_is_integer(bytes) || json_integer_value(bytes) <= 0 || sum == NULL ||
        strlen(sum) != 64) {
        mig_fail(g, "data export on %s: the reply has no size and sha256", g->src);
        return;
    }
    g->data_bytes = json_integer_value(bytes);
    if (json_is_integer(json_object_get(reply, "raw_bytes")))
        g->data_raw = json_integer_value(json_object_get(reply, "raw_bytes"));
    snprintf(g->data_sha256, sizeof(g->data_sha256), "%s", sum);
    mig_phase_done(g, MP_DATA_COPY,
                   json_pack("{s:I, s:I, s:O?}", "bytes", (json_int_t)g->data_bytes, "raw_bytes",
                             (json_int_t)g->data_raw, "pack_ms",
                             json_object_get(reply, "pack_ms")));
    cleanup_json json_t *members = json_pack("{s:s, s:s}", "name", g->name, "service", g->service);
    cleanup_json json_t *stream =
        json_pack("{s:s, s:s, s:s}", "kind", "data", "name", g->name, "service", g->service);
    struct chunk_copy_spec spec = {
        .src_host = g->src,
        .src_vm = g->name,
        .read_action = "data_read",
        .dst_host = g->dst,
        .dst_vm = g->name,
        .write_action = "data_write",
        .read_members = members,
        .write_members = members,
        .bytes = g->data_bytes,
        .sha256 = g->data_sha256,
        .chunk_bytes = MIGRATE_CHUNK_BYTES,
        .order_ms = MIGRATE_CHUNK_ORDER_MS,
        .stream_members = stream,
        .no_stream = g->copy_server,
        .out = &g->copy_stats,
    };
    cleanup_error vcr_error_t err = NULL;
    if (chunk_copy_start(g->m->agents, &spec, on_data_copied, g, &err) < 0)
        mig_fail(g, "data copy: %s", vcr_error_msg(err));
}

/* The container is dumped and stopped: its data is unmounted and packed on the
 * source, so the copy is the data as of the dump, consistent with the
 * processes' state. */
void mig_data_export(struct mig *g)
{
    cleanup_json json_t *m = json_pack("{s:s, s:s}", "name", g->name, "service", g->service);
    mig_order(g, g->src, "data_export", m, SERVICE_DATA_ORDER_MS, on_data_exported);
}

static const char *mb(int64_t bytes, char buf[32])
{
    snprintf(buf, 32, "%.1f MB", (double)bytes / 1e6);
    return buf;
}

/* data_space's free_bytes, or -1 when the reply lacks it. */
static int64_t free_bytes(json_t *reply)
{
    json_t *v = json_object_get(reply, "free_bytes");
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void on_target_space(enum order_outcome outcome, const char *message, json_t *reply,
                            void *opaque)
{
    struct mig *g = opaque;
    if (!mig_reply_ok(g, MP_SPACE, "data space on the target", outcome, message))
        return;
    /* The packed copy arrives whole, then is unpacked beside it: at worst
     * (data that does not compress) twice the blocks the volume holds. */
    int64_t need = 2 * g->data_alloc + MIGRATE_DATA_MARGIN_BYTES, have = free_bytes(reply);
    char a[32], b[32];
    if (have < need) {
        mig_fail(g,
                 "target `%s` lacks space for the data of service `%s`: %s free in its data "
                 "directory, the copy needs %s (packed and unpacked, %s in use in a %s volume)",
                 g->dst, g->service, mb(have, a), mb(need, b), mb(g->data_alloc, (char[32]){0}),
                 mb(g->data_raw, (char[32]){0}));
        return;
    }
    mig_phase_done(g, MP_PREDUMP,
                   json_pack("{s:b, s:I, s:I, s:I}", "carry", 1, "alloc_bytes",
                             (json_int_t)g->data_alloc, "raw_bytes", (json_int_t)g->data_raw,
                             "target_free_bytes", (json_int_t)have));
    mig_start_copy(g);
}

void mig_on_source_space(enum order_outcome outcome, const char *message, json_t *reply,
                         void *opaque)
{
    struct mig *g = opaque;
    if (!mig_reply_ok(g, MP_SPACE, "data space on the source", outcome, message))
        return;
    g->carry = json_is_true(json_object_get(reply, "mounted"));
    if (!g->carry) {
        /* No copy attached (a warm container before any recovery): the
         * container uses no data, nothing to carry. */
        mig_phase_done(g, MP_PREDUMP,
                       json_pack("{s:b, s:s}", "carry", 0, "why",
                                 "no copy of the data is attached on the source"));
        mig_start_copy(g);
        return;
    }
    json_t *alloc = json_object_get(reply, "alloc_bytes");
    g->data_alloc = json_is_integer(alloc) ? json_integer_value(alloc) : 0;
    json_t *raw = json_object_get(reply, "raw_bytes");
    g->data_raw = json_is_integer(raw) ? json_integer_value(raw) : 0;
    /* data_export packs the volume beside it. */
    int64_t need = g->data_alloc + MIGRATE_DATA_MARGIN_BYTES, have = free_bytes(reply);
    char a[32], b[32];
    if (have < need) {
        mig_fail(g,
                 "source `%s` lacks space to pack the data of service `%s`: %s free in its data "
                 "directory, packing needs up to %s",
                 g->src, g->service, mb(have, a), mb(need, b));
        return;
    }
    cleanup_json json_t *m = json_pack("{s:s, s:s}", "name", g->name, "service", g->service);
    mig_order(g, g->dst, "data_space", m, MIGRATE_CHUNK_ORDER_MS, on_target_space);
}
