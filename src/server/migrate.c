/* Container migration between standby VMs (see migrate.h).  One struct mig
 * per migration walks the phases below; every order's reply moves it on. */
#include "server/migrate.h"
#include "server/migrate_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_code.h"
#include "proto/proto_state.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/chunk_copy.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "config/server_config.h"
#include "server/service_data.h"
#include "server/services.h"

static const char *const phase_names[] = {
    [MP_SPACE] = "space",
    [MP_PREDUMP] = "predump",
    [MP_COPY_PRE] = "copy_pre",
    [MP_UNPACK_PRE] = "unpack_pre",
    [MP_DUMP] = "dump",
    [MP_COPY] = "copy",
    [MP_DATA_EXPORT] = "data_export",
    [MP_DATA_COPY] = "data_copy",
    [MP_DATA_INSTALL] = "data_install",
    [MP_RESTORE] = "restore",
    [MP_PORT] = "port_open",
    [MP_DESTROY] = "destroy",
    [MP_CLEANUP] = "cleanup",
    [MP_ROLLBACK] = "rollback",
    [MP_DONE] = "done",
};

struct migrator *migrator_new(struct event_base *base, const struct server_config *cfg,
                              struct inventory *inv, struct journal *journal, struct agents *agents,
                              vcr_error_t *err)
{
    struct migrator *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    m->base = base;
    m->cfg = cfg;
    m->inv = inv;
    m->journal = journal;
    m->agents = agents;
    return m;
}

static uint64_t report_seq(struct migrator *m, const char *host)
{
    const struct inv_host *h = inventory_find_host(m->inv, host);
    return h ? h->containers_seq : 0;
}

/* Unmarks the containers whose hosts have both reported since their
 * migration ended (or whose wait is over). */
void migrate_settle(struct migrator *m)
{
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < m->n_settling;) {
        struct settling *st = &m->settling[i];
        if (now < st->until_ms &&
            (report_seq(m, st->src) == st->src_seq || report_seq(m, st->dst) == st->dst_seq)) {
            i++;
            continue;
        }
        inventory_set_moving(m->inv, st->name, false);
        *st = m->settling[--m->n_settling];
    }
}

static void mig_free(struct mig *g)
{
    struct migrator *m = g->m;
    if (m->n_settling < MIG_MAX) {
        struct settling *st = &m->settling[m->n_settling++];
        snprintf(st->name, sizeof(st->name), "%s", g->name);
        snprintf(st->src, sizeof(st->src), "%s", g->src);
        snprintf(st->dst, sizeof(st->dst), "%s", g->dst);
        st->src_seq = report_seq(m, g->src);
        st->dst_seq = report_seq(m, g->dst);
        st->until_ms = vcr_mono_ms() + MIGRATE_SETTLE_MS;
    } else {
        inventory_set_moving(m->inv, g->name, false);
    }
    for (size_t i = 0; i < m->n_migs; i++)
        if (m->migs[i] == g) {
            m->migs[i] = m->migs[--m->n_migs];
            break;
        }
    check_cancel(g->check);
    if (g->retry)
        event_free(g->retry);
    mig_ha_detach(g);
    json_decref(g->phases);
    free(g);
}

void migrator_stop(struct migrator *m)
{
    if (m)
        m->stopping = true;
}

void migrator_free(struct migrator *m)
{
    if (m == NULL)
        return;
    while (m->n_migs)
        mig_free(m->migs[0]);
    migrate_ha_free(m);
    free(m);
}

static void journal_phase(struct mig *g, const char *phase, json_t *extra)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:s, s:I}", "container", g->name, "from", g->src, "to", g->dst,
                  "phase", phase, "elapsed_ms", (json_int_t)(vcr_mono_ms() - g->t0));
    if (detail && extra)
        json_object_update(detail, extra);
    json_decref(extra);
    journal_note(g->m->journal, 0, g->src, NULL, JOURNAL_MIGRATION, detail);
}

/* The phase ended well: record its time, journal it, enter the next one. */
void mig_phase_done(struct mig *g, enum mig_phase next, json_t *extra)
{
    int64_t now = vcr_mono_ms();
    json_t *entry = json_pack("{s:s, s:I}", "phase", phase_names[g->phase], "ms",
                              (json_int_t)(now - g->t_phase));
    /* The agents' own times: where a phase's time went, beside the server's
     * view of it (docs/migration.md). */
    static const char *const agent_times[] = {"dump_ms", "pack_ms", "unpack_ms", "restore_ms"};
    for (size_t i = 0; entry && extra && i < sizeof(agent_times) / sizeof(agent_times[0]); i++) {
        json_t *v = json_object_get(extra, agent_times[i]);
        if (json_is_integer(v))
            json_object_set(entry, agent_times[i], v);
    }
    json_array_append_new(g->phases, entry);
    log_info("migration of %s from %s to %s: %s done in %lld ms", g->name, g->src, g->dst,
             phase_names[g->phase], (long long)(now - g->t_phase));
    journal_phase(g, phase_names[g->phase], extra);
    mig_ha_step(g, phase_names[g->phase]);
    g->phase = next;
    g->t_phase = now;
}

void mig_copy_phase_done(struct mig *g, enum mig_phase next, int64_t bytes, int64_t ms)
{
    const char *method = g->copy_stats.method[0] ? g->copy_stats.method : "server";
    double mb_s = g->copy_stats.mb_s;
    g->copied_bytes += bytes;
    g->copied_ms += ms;
    if (g->copy_method[0] == '\0')
        snprintf(g->copy_method, sizeof(g->copy_method), "%s", method);
    else if (strcmp(g->copy_method, method) != 0)
        snprintf(g->copy_method, sizeof(g->copy_method), "mixed");
    mig_phase_done(
        g, next,
        json_pack("{s:I, s:s, s:f}", "bytes", (json_int_t)bytes, "method", method, "mb_s", mb_s));
    json_t *last = json_array_get(g->phases, json_array_size(g->phases) - 1);
    json_object_set_new(last, "method", json_string(method));
    json_object_set_new(last, "mb_s", json_real(mb_s));
    memset(&g->copy_stats, 0, sizeof(g->copy_stats));
}

static void finish(struct mig *g)
{
    bool ok = g->error[0] == '\0';
    int64_t now = vcr_mono_ms();
    cleanup_json json_t *result =
        json_pack("{s:b, s:s, s:s, s:s, s:s?, s:I, s:o, s:b, s:I, s:I, s:O, s:b, s:s}", "ok", ok,
                  "container", g->name, "from", g->src, "to", g->dst, "error", ok ? NULL : g->error,
                  "total_ms", (json_int_t)(now - g->t0), "downtime_ms",
                  g->t_down && ok ? json_integer(g->t_down) : json_null(), "predump", g->predump,
                  "pre_bytes", (json_int_t)g->pre_bytes, "final_bytes", (json_int_t)g->final_bytes,
                  "phases", g->phases, "rolled_back", g->rolled_back, "why", g->why);
    if (result) {
        json_object_set_new(result, "copy_mb_s",
                            g->copied_ms > 0 ? json_real((double)g->copied_bytes / 1e6 /
                                                         ((double)g->copied_ms / 1000.0))
                                             : json_null());
        json_object_set_new(result, "copy_method",
                            g->copy_method[0] ? json_string(g->copy_method) : json_null());
    }
    if (result)
        json_object_set_new(result, "data",
                            g->carry ? json_pack("{s:s, s:I, s:I, s:I}", "path", g->data_path,
                                                 "bytes", (json_int_t)g->data_bytes, "raw_bytes",
                                                 (json_int_t)g->data_raw, "alloc_bytes",
                                                 (json_int_t)g->data_alloc)
                                     : json_null());
    if (ok)
        log_info("migration of %s from %s to %s done in %lld ms (downtime %lld ms)", g->name,
                 g->src, g->dst, (long long)(now - g->t0), (long long)g->t_down);
    else
        log_error("migration of %s from %s to %s failed: %s", g->name, g->src, g->dst, g->error);
    g->phase = MP_DONE;
    journal_phase(g, ok ? "done" : "failed", json_pack("{s:O}", "result", result));
    mig_ha_step(g, ok ? "done" : "failed");
    if (g->done && result)
        g->done(result, g->opaque);
    mig_free(g);
}

static void on_rollback(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque);

void mig_fail(struct mig *g, const char *fmt, ...)
{
    if (g->error[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->error, sizeof(g->error), fmt, ap);
        va_end(ap);
    }
    check_cancel(g->check);
    g->check = NULL;
    if (migrate_ha_deposed(g->m)) {
        /* Redundant servers: this one no longer leads; its successor ends the
         * migration from what etcd has (migrate_ha.c), and agents refuse this
         * server's orders anyway. */
        size_t n = strlen(g->error);
        snprintf(g->error + n, sizeof(g->error) - n,
                 "; this server no longer leads: its successor ends the migration");
        finish(g);
        return;
    }
    /* Past the final dump the source container is stopped: start it again
     * there (from its files: the processes' state is lost), and drop what the
     * target may have made of it. */
    if (g->phase >= MP_DUMP && g->phase <= MP_PORT) {
        log_warn("migration of %s: %s: starting it again on %s", g->name, g->error, g->src);
        g->phase = MP_ROLLBACK;
        cleanup_json json_t *gone = json_pack("{s:s}", "name", g->name);
        mig_order(g, g->dst, "container_destroy", gone, MIGRATE_DUMP_ORDER_MS, NULL);
        /* With its data: mounted again (data_export unmounted it) and bound,
         * then started. */
        if (g->carry) {
            cleanup_json json_t *a = json_pack("{s:s, s:s, s:s}", "name", g->name, "service",
                                               g->service, "path", g->data_path);
            mig_order(g, g->src, "data_attach", a, SERVICE_DATA_ORDER_MS, on_rollback);
            return;
        }
        cleanup_json json_t *n = json_pack("{s:s}", "name", g->name);
        mig_order(g, g->src, "container_start", n, MIGRATE_DUMP_ORDER_MS, on_rollback);
        return;
    }
    finish(g);
}

static void on_rollback(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    (void)reply;
    struct mig *g = opaque;
    if (g->m->stopping)
        return;
    g->rolled_back = outcome == ORDER_DONE;
    size_t n = strlen(g->error);
    snprintf(g->error + n, sizeof(g->error) - n, "%s%s",
             g->rolled_back ? "; rolled back: the container runs again (started cold) on "
                            : "; the rollback failed too: the container is stopped on ",
             g->src);
    if (!g->rolled_back) {
        n = strlen(g->error);
        snprintf(g->error + n, sizeof(g->error) - n, " (%s)", message ? message : "?");
    }
    finish(g);
}

/* Orders whose reply nobody waits for (cb NULL) still need a callback. */
void migrate_on_ignored(enum order_outcome outcome, const char *message, json_t *reply,
                        void *opaque)
{
    (void)reply;
    (void)opaque;
    if (outcome != ORDER_DONE)
        log_warn("migration: an order for cleanup failed: %s", message ? message : "?");
}

void mig_order(struct mig *g, const char *host, const char *action, json_t *members,
               int64_t timeout_ms, agents_order_reply_cb cb)
{
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(g->m->agents, host, action, g->name, members, timeout_ms,
                               cb ? cb : migrate_on_ignored, cb ? (void *)g : NULL, &err) >= 0)
        return;
    if (cb == NULL) {
        log_warn("migration of %s: %s on %s: %s", g->name, action, host, vcr_error_msg(err));
        return;
    }
    if (g->phase == MP_ROLLBACK) {
        on_rollback(ORDER_UNREACHABLE, vcr_error_msg(err), NULL, g);
        return;
    }
    mig_fail(g, "%s on %s: %s", action, host, vcr_error_msg(err));
}

/* Common handling of a reply: false when the migration must not go on. */
bool mig_reply_ok(struct mig *g, enum mig_phase phase, const char *what, enum order_outcome outcome,
                  const char *message)
{
    if (g->m->stopping || g->phase != phase)
        return false;
    if (outcome == ORDER_DONE)
        return true;
    static const char *const how[] = {[ORDER_DONE] = "done",
                                      [ORDER_REFUSED] = "refused",
                                      [ORDER_TIMEOUT] = "no reply in time",
                                      [ORDER_UNREACHABLE] = "host unreachable"};
    mig_fail(g, "%s: %s%s%s", what, how[outcome], message ? ": " : "", message ? message : "");
    return false;
}

static void checkpoint(struct mig *g, const char *which);
static void copy_next(struct mig *g);

static void on_checkpoint(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct mig *g = opaque;
    if (g->m->stopping)
        return;
    if (g->phase == MP_PREDUMP && outcome != ORDER_DONE) {
        /* No pre-copy (the kernel or CRIU refused it): one full dump instead. */
        log_warn("migration of %s: pre-dump on %s: %s; going on with a full dump", g->name, g->src,
                 message ? message : "failed");
        journal_phase(g, "predump_skipped", json_pack("{s:s}", "error", message ? message : "?"));
        g->phase = MP_DUMP;
        g->t_phase = vcr_mono_ms();
        checkpoint(g, "final");
        return;
    }
    enum mig_phase phase = g->phase;
    if (!mig_reply_ok(g, phase, phase == MP_PREDUMP ? "pre-dump" : "dump", outcome, message))
        return;
    json_t *bytes = json_object_get(reply, "bytes");
    const char *sum = json_string_value(json_object_get(reply, "sha256"));
    if (!json_is_integer(bytes) || json_integer_value(bytes) <= 0 || sum == NULL ||
        strlen(sum) != 64) {
        mig_fail(g, "%s on %s: the reply has no image size and sha256",
                 phase == MP_PREDUMP ? "pre-dump" : "dump", g->src);
        return;
    }
    g->image = phase == MP_PREDUMP ? "pre" : "final";
    g->image_bytes = json_integer_value(bytes);
    g->offset = 0;
    snprintf(g->sha256, sizeof(g->sha256), "%s", sum);
    if (phase == MP_PREDUMP) {
        g->predump = true;
        g->pre_bytes = g->image_bytes;
    } else {
        g->final_bytes = g->image_bytes;
    }
    mig_phase_done(g, phase == MP_PREDUMP ? MP_COPY_PRE : MP_COPY,
                   json_pack("{s:I, s:O?, s:O?}", "bytes", (json_int_t)g->image_bytes, "dump_ms",
                             json_object_get(reply, "dump_ms"), "pack_ms",
                             json_object_get(reply, "pack_ms")));
    copy_next(g);
}

static void checkpoint(struct mig *g, const char *which)
{
    if (strcmp(which, "final") == 0)
        g->t_down = vcr_mono_ms(); /* the source container stops in this order */
    if (strcmp(which, "final") == 0)
        g->data_taken_ms = vcr_wall_ms(); /* its data is as of then (it is frozen, then stopped) */
    cleanup_json json_t *members = json_pack("{s:s, s:s}", "name", g->name, "phase", which);
    mig_order(g, g->src, "container_checkpoint", members, MIGRATE_DUMP_ORDER_MS, on_checkpoint);
}

/* The target has checked and unpacked pre.tar: on to the final dump.  An
 * agent without the order (PROTO_CODE_UNKNOWN_ORDER) leaves pre.tar to its
 * restore, inside the downtime as before; any other failure ends the
 * migration here, while nothing is stopped (a pre.tar its check refuses
 * would fail the restore after the final dump). */
static void on_unpack_pre(enum order_outcome outcome, const char *message, json_t *reply,
                          void *opaque)
{
    struct mig *g = opaque;
    if (g->m->stopping || g->phase != MP_UNPACK_PRE)
        return;
    bool older = outcome == ORDER_REFUSED &&
                 proto_code_parse(json_string_value(json_object_get(reply, "code"))) ==
                     PROTO_CODE_UNKNOWN_ORDER;
    if (older) {
        log_warn("migration of %s: %s cannot unpack pre.tar ahead: %s; its restore will", g->name,
                 g->dst, message ? message : "?");
    } else if (!mig_reply_ok(g, MP_UNPACK_PRE, "unpacking pre.tar on the target", outcome,
                             message)) {
        return;
    }
    mig_phase_done(g, MP_DUMP,
                   older ? json_pack("{s:b}", "skipped", true)
                         : json_pack("{s:O?}", "unpack_ms", json_object_get(reply, "unpack_ms")));
    checkpoint(g, "final");
}

/* pre.tar (the pre-dump's pages, most of the memory) checked and unpacked on
 * the target while the container still runs on the source: the restore in
 * the downtime then unpacks only final.tar. */
static void unpack_pre(struct mig *g)
{
    cleanup_json json_t *members = json_pack("{s:s, s:s}", "name", g->name, "phase", "pre");
    mig_order(g, g->dst, "container_image_unpack", members, MIGRATE_DUMP_ORDER_MS, on_unpack_pre);
}

/* The image copied (chunk_copy.h: the same chunk mechanism as a service's
 * data copies): on to the final dump, or to the restore. */
static void on_image_copied(const char *error, int64_t bytes, int64_t ms, void *opaque)
{
    struct mig *g = opaque;
    if (g->m->stopping || (g->phase != MP_COPY_PRE && g->phase != MP_COPY))
        return;
    if (error) {
        mig_fail(g, "image copy: %s", error);
        return;
    }
    g->offset = bytes;
    bool pre = g->phase == MP_COPY_PRE;
    mig_copy_phase_done(g,
                        pre        ? MP_UNPACK_PRE
                        : g->carry ? MP_DATA_EXPORT
                                   : MP_RESTORE,
                        g->offset, ms);
    if (pre)
        unpack_pre(g);
    else if (g->carry)
        mig_data_export(g);
    else
        mig_restore(g);
}

void mig_start_copy(struct mig *g)
{
    if (g->precopy) {
        checkpoint(g, "pre");
    } else {
        g->phase = MP_DUMP;
        checkpoint(g, "final");
    }
}

static void copy_next(struct mig *g)
{
    cleanup_json json_t *members = json_pack("{s:s, s:s}", "name", g->name, "phase", g->image);
    cleanup_json json_t *stream =
        json_pack("{s:s, s:s, s:s}", "kind", "image", "name", g->name, "phase", g->image);
    struct chunk_copy_spec spec = {
        .src_host = g->src,
        .src_vm = g->name,
        .read_action = "container_image_read",
        .dst_host = g->dst,
        .dst_vm = g->name,
        .write_action = "container_image_write",
        .read_members = members,
        .write_members = members,
        .bytes = g->image_bytes,
        .sha256 = g->sha256,
        .chunk_bytes = MIGRATE_CHUNK_BYTES,
        .order_ms = MIGRATE_CHUNK_ORDER_MS,
        .stream_members = stream,
        .no_stream = g->copy_server,
        .out = &g->copy_stats,
    };
    cleanup_error vcr_error_t err = NULL;
    if (chunk_copy_start(g->m->agents, &spec, on_image_copied, g, &err) < 0)
        mig_fail(g, "image copy: %s", vcr_error_msg(err));
}

static void probe_port(struct mig *g);
static void on_destroyed(enum order_outcome outcome, const char *message, json_t *reply,
                         void *opaque);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_port(arg);
}

static void destroy_source(struct mig *g)
{
    cleanup_json json_t *n = json_pack("{s:s}", "name", g->name);
    mig_order(g, g->src, "container_destroy", n, MIGRATE_DUMP_ORDER_MS, on_destroyed);
}

static void on_port(enum check_outcome outcome, const char *why, const char *body, void *arg)
{
    bool healthy = outcome == CHECK_HEALTHY;
    (void)body;
    struct mig *g = arg;
    g->check = NULL;
    if (healthy) {
        int64_t now = vcr_mono_ms();
        g->t_down = now - g->t_down;
        mig_phase_done(g, MP_DESTROY,
                       json_pack("{s:s, s:i, s:I}", "address", g->address, "port", (int)g->port,
                                 "downtime_ms", (json_int_t)g->t_down));
        /* Redundant servers: not before etcd has port_open (migrate_ha.c). */
        mig_ha_then(g, destroy_source);
        return;
    }
    if (vcr_mono_ms() >= g->port_deadline) {
        mig_fail(g, "port %s:%u of the restored container not open within %d ms: %s", g->address,
                 g->port, MIGRATE_PORT_MS, why ? why : "closed");
        return;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = 50 * 1000};
    evtimer_add(g->retry, &tv);
}

static void probe_port(struct mig *g)
{
    struct check_target t = {
        .type = &check_tcp_ops, .address = g->address, .port = g->port, .timeout_ms = 200};
    cleanup_error vcr_error_t err = NULL;
    g->check = check_start(g->m->base, &t, on_port, g, &err);
    if (g->check == NULL)
        mig_fail(g, "port check of %s:%u: %s", g->address, g->port, vcr_error_msg(err));
}

static void on_restore(enum order_outcome outcome, const char *message, json_t *reply, void *opaque)
{
    struct mig *g = opaque;
    if (!mig_reply_ok(g, MP_RESTORE, "restore on the target", outcome, message))
        return;
    mig_phase_done(g, MP_PORT,
                   json_pack("{s:O?, s:O?}", "unpack_ms", json_object_get(reply, "unpack_ms"),
                             "restore_ms", json_object_get(reply, "restore_ms")));
    g->port_deadline = vcr_mono_ms() + MIGRATE_PORT_MS;
    probe_port(g);
}

void mig_restore(struct mig *g)
{
    cleanup_json json_t *members =
        json_pack("{s:s, s:s, s:s, s:i}", "name", g->name, "service", g->service, "address",
                  g->address, "prefix", g->prefix);
    if (members && g->gateway[0])
        json_object_set_new(members, "gateway", json_string(g->gateway));
    if (members && g->template[0])
        json_object_set_new(members, "template", json_string(g->template));
    /* Always explicit: the target keeps what the source has. */
    if (members)
        json_object_set_new(members, "privileged", json_boolean(!g->unprivileged));
    if (members && g->ct_image)
        json_object_set_new(members, "image", server_config_image_json(g->m->cfg, g->ct_image));
    if (members && g->carry)
        json_object_set_new(members, "data",
                            json_pack("{s:s, s:s}", "service", g->service, "path", g->data_path));
    mig_order(g, g->dst, "container_restore", members, MIGRATE_DUMP_ORDER_MS, on_restore);
}

static void on_cleaned(enum order_outcome outcome, const char *message, json_t *reply, void *opaque)
{
    (void)reply;
    struct mig *g = opaque;
    if (g->m->stopping || g->phase != MP_CLEANUP)
        return;
    if (outcome != ORDER_DONE)
        log_warn("migration of %s: image cleanup: %s", g->name, message ? message : "failed");
    if (--g->cleanups > 0)
        return;
    mig_phase_done(g, MP_DONE, NULL);
    finish(g);
}

static void on_destroyed(enum order_outcome outcome, const char *message, json_t *reply,
                         void *opaque)
{
    (void)reply;
    struct mig *g = opaque;
    if (g->m->stopping || g->phase != MP_DESTROY)
        return;
    /* The container runs on the target: a source left behind is only reported. */
    if (outcome != ORDER_DONE)
        log_warn("migration of %s: destroying it on %s: %s (it is stopped there)", g->name, g->src,
                 message ? message : "failed");
    mig_phase_done(g, MP_CLEANUP, NULL);
    g->cleanups = 2;
    const char *hosts[] = {g->src, g->dst};
    for (int i = 0; i < 2; i++) {
        cleanup_json json_t *n = json_pack("{s:s}", "name", g->name);
        if (n && g->carry && i == 0) /* the source's packed copy of the data goes too */
            json_object_set_new(n, "service", json_string(g->service));
        cleanup_error vcr_error_t err = NULL;
        if (agents_send_order_with(g->m->agents, hosts[i], "container_migrate_cleanup", g->name, n,
                                   MIGRATE_CHUNK_ORDER_MS, on_cleaned, g, &err) < 0) {
            log_warn("migration of %s: cleanup on %s: %s", g->name, hosts[i], vcr_error_msg(err));
            g->cleanups--;
        }
    }
    if (g->cleanups == 0) {
        mig_phase_done(g, MP_DONE, NULL);
        finish(g);
    }
}

static const struct inv_host *standby_host(struct migrator *m, const char *name, const char *which,
                                           vcr_error_t *err)
{
    const struct inv_host *h = inventory_find_host(m->inv, name);
    if (h == NULL || h->role == NULL || strcmp(h->role, "standby") != 0)
        return vcr_error_make(err, ENOENT, "%s: no standby host `%s` in the inventory", which,
                              name),
               NULL;
    if (h->state != INV_HOST_CONNECTED)
        return vcr_error_make(err, EAGAIN, "%s: standby host `%s` is lost", which, name), NULL;
    return h;
}

static void mig_begin(struct mig *g)
{
    if (g->data_path[0]) {
        /* Before anything stops: is the data attached there, and is there room. */
        g->phase = MP_SPACE;
        cleanup_json json_t *sp = json_pack("{s:s, s:s}", "name", g->name, "service", g->service);
        mig_order(g, g->src, "data_space", sp, MIGRATE_CHUNK_ORDER_MS, mig_on_source_space);
        return;
    }
    mig_start_copy(g);
}

int migrator_start(struct migrator *m, const char *src, const char *name, const char *dst,
                   const char *why, bool precopy, migrate_done_cb done, void *opaque,
                   vcr_error_t *err)
{
    struct migrate_options o = {.precopy = precopy};
    return migrator_start_with(m, src, name, dst, why, &o, done, opaque, err);
}

int migrator_start_with(struct migrator *m, const char *src, const char *name, const char *dst,
                        const char *why, const struct migrate_options *o, migrate_done_cb done,
                        void *opaque, vcr_error_t *err)
{
    bool precopy = o->precopy;
    if (name == NULL || !inventory_valid_name(name))
        return vcr_error_make(err, EINVAL, "container `%s`: not a valid name", name ? name : "");
    if (src == NULL || dst == NULL || strcmp(src, dst) == 0)
        return vcr_error_make(err, EINVAL, "to: `%s` must be another standby host than `%s`",
                              dst ? dst : "", src ? src : "");
    const struct inv_host *hs = standby_host(m, src, "from", err);
    const struct inv_host *hd = hs ? standby_host(m, dst, "to", err) : NULL;
    if (hd == NULL)
        return -1;
    json_t *c = inventory_host_container(hs, name);
    if (c == NULL)
        return vcr_error_make(err, ENOENT, "no container `%s` on standby host `%s`", name, src);
    const char *state = json_string_value(json_object_get(c, "state"));
    if (proto_ct_state_parse(state) != PROTO_CT_RUNNING)
        return vcr_error_make(err, EAGAIN, "container `%s` on `%s` is %s: only a running one moves",
                              name, src, state ? state : "in an unknown state");
    if (inventory_host_container(hd, name))
        return vcr_error_make(err, EEXIST, "standby host `%s` already has a container `%s`", dst,
                              name);
    const char *address = json_string_value(json_object_get(c, "address"));
    if (address == NULL || strlen(address) >= 16)
        return vcr_error_make(err, EINVAL, "container `%s` on `%s` has no known address", name,
                              src);
    for (size_t i = 0; i < m->n_migs; i++)
        if (strcmp(m->migs[i]->name, name) == 0)
            return vcr_error_make(err, EBUSY, "container `%s` is being migrated already (%s)", name,
                                  phase_names[m->migs[i]->phase]);
    if (m->n_migs >= MIG_MAX)
        return vcr_error_make(err, EBUSY, "%d migrations under way already", MIG_MAX);
    char why_not[200];
    if (!migrate_ha_ready(m, name, why_not, sizeof(why_not)))
        return vcr_error_make(err, EBUSY, "%s", why_not);
    struct mig *g = calloc(1, sizeof(*g));
    if (g == NULL || (g->phases = json_array()) == NULL ||
        (g->retry = evtimer_new(m->base, on_retry, g)) == NULL) {
        if (g) {
            json_decref(g->phases);
            free(g);
        }
        return vcr_error_make(err, ENOMEM, "out of memory");
    }
    g->m = m;
    snprintf(g->name, sizeof(g->name), "%s", name);
    snprintf(g->src, sizeof(g->src), "%s", src);
    snprintf(g->dst, sizeof(g->dst), "%s", dst);
    snprintf(g->why, sizeof(g->why), "%s", why ? why : "order");
    snprintf(g->address, sizeof(g->address), "%s", address);
    const char *svc = json_string_value(json_object_get(c, "service"));
    snprintf(g->service, sizeof(g->service), "%s", svc ? svc : name);
    g->prefix = 24;
    g->port = 80;
    g->unprivileged = json_is_false(json_object_get(c, "privileged"));
    /* A protected service's container: its own settings and port. */
    for (size_t i = 0; i < m->cfg->n_services; i++) {
        const struct service_config *s = &m->cfg->services[i];
        if (s->standby.container == NULL || strcmp(s->standby.container, name) != 0)
            continue;
        g->prefix = (int)s->standby.prefix;
        g->port = s->primary.port;
        snprintf(g->service, sizeof(g->service), "%s", s->name);
        if (s->standby.gateway)
            snprintf(g->gateway, sizeof(g->gateway), "%s", s->standby.gateway);
        if (s->standby.template)
            snprintf(g->template, sizeof(g->template), "%s", s->standby.template);
        g->ct_image = server_config_service_image(m->cfg, s);
        if (s->data.volume && s->data.path)
            snprintf(g->data_path, sizeof(g->data_path), "%s", s->data.path);
    }
    g->done = done;
    g->opaque = opaque;
    g->t0 = g->t_phase = vcr_mono_ms();
    g->phase = MP_PREDUMP;
    m->migs[m->n_migs++] = g;
    for (size_t i = 0; i < m->n_settling; i++)
        if (strcmp(m->settling[i].name, name) == 0) {
            m->settling[i] = m->settling[--m->n_settling];
            break;
        }
    inventory_set_moving(m->inv, name, true);
    log_info("migration of %s from %s to %s begins (%s)", name, src, dst, g->why);
    journal_phase(
        g, "started",
        json_pack("{s:s, s:s, s:b}", "why", g->why, "address", g->address, "precopy", precopy));
    g->precopy = precopy;
    g->copy_server = o->copy_server;
    /* Redundant servers: no order before etcd knows of the migration. */
    mig_ha_step(g, "started");
    mig_ha_then(g, mig_begin);
    return 0;
}

json_t *migrator_status_json(struct migrator *m)
{
    json_t *list = json_array();
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; list && i < m->n_migs; i++) {
        const struct mig *g = m->migs[i];
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:s, s:I}", "container", g->name, "from",
                                        g->src, "to", g->dst, "phase", phase_names[g->phase],
                                        "elapsed_ms", (json_int_t)(now - g->t0)));
    }
    return m->ha ? migrate_ha_status(m, list) : list;
}

bool migrate_host_busy(const struct migrator *m, const char *host)
{
    for (size_t i = 0; i < m->n_migs; i++)
        if (strcmp(m->migs[i]->src, host) == 0 || strcmp(m->migs[i]->dst, host) == 0)
            return true;
    return false;
}
