/* Migrations in flight, for redundant servers (docs/ha.md "Migrations",
 * docs/migration.md "Redundant servers").  Without `ha:` none of this runs.
 *
 * Keys, under SERVER_HA_PREFIX:
 *   migrations/CONTAINER                the migration's state: hosts, what
 *                                       it carries, its last step done
 *   migration-steps/CONTAINER/ID/STEP   one record per step, written once
 * ID is the migration's start (wall clock ms).  A step is one etcd txn, as a
 * recovery's phase is (recovery_ha.c): only under this leader's term and only
 * if its record does not exist yet.  Steps are written in order, one at a
 * time; two points wait for etcd: nothing is ordered before `started` is
 * there (a successor knows of every migration that may have stopped a
 * container), and the source container is destroyed only once `port_open`
 * is there (until a successor reads port_open, the source still has it).
 *
 * A successor does not resume a migration (its images and the chunk copies
 * live with the old leader's orders); it drives it to a safe end, once:
 * - port_open (or later) recorded: the container runs on the target; the
 *   source's is destroyed, both cleaned up: `done`;
 * - anything before: the target's container is destroyed (refused as busy
 *   while an earlier order on it runs: retried, so a restore in flight ends
 *   first), then the container is started again on the source (with its data
 *   when it was carried; a source that reports it running is left alone),
 *   both cleaned up: `failed`, "rolled back".
 * Never on both: the source start is ordered only after the target's destroy
 * was done; the destroy of the source only once port_open was committed.
 * The end is one more step record; the orders before it are idempotent, so a
 * third leader that finds no end repeats them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "config/server_config.h"
#include "ha/etcd.h"
#include "ha/ha.h"
#include "proto/proto_state.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate.h"
#include "server/migrate_priv.h"
#include "server/service_data.h"

#define MIG_PREFIX       SERVER_HA_PREFIX "migrations/"
#define MIG_STEPS_PREFIX SERVER_HA_PREFIX "migration-steps/"
#define MIG_HA_TICK_MS   200
#define MIG_HA_RETRY_MS  500
/* Orders of a successor's end refused (busy: an earlier order still runs)
 * are tried again for this long before the end is reported as failed. */
#define MIG_HA_ORDER_TRIES 240

typedef void (*mig_then_cb)(void *arg);

struct mig_step {
    struct mig_step *next;
    char *record_key, *record, *state; /* NULL record: a barrier */
    char phase[24];
    mig_then_cb then;
    void *arg;
};

struct mig_log {
    struct mig_log *next;
    struct migrator *m; /* NULL: dropped while its txn was in flight */
    struct mig *g;      /* NULL once the migration ended */
    char name[65];
    struct mig_step *head, *tail;
    bool inflight;
    uint64_t epoch;
    int64_t retry_at; /* monotonic */
};

enum takeover_stage {
    TK_WAIT_HOSTS,
    TK_DESTROY, /* finish: on the source; abort: on the target */
    TK_START,   /* abort: the container again on the source */
    TK_END,     /* the end's record */
};

struct mig_takeover {
    struct mig_takeover *next;
    struct migrator *m; /* NULL: dropped while an order was in flight */
    char name[65], src[65], dst[65], service[65], data_path[130], id[24], last[24];
    char error[400];
    bool carry, finish, inflight;
    enum takeover_stage stage;
    int tries;
    int64_t retry_at, wait_until; /* monotonic */
    uint64_t epoch;
    struct mig_log *log;
};

static void step_free(struct mig_step *s)
{
    free(s->record_key);
    free(s->record);
    free(s->state);
    free(s);
}

static void log_free(struct mig_log *l)
{
    while (l->head) {
        struct mig_step *s = l->head;
        l->head = s->next;
        step_free(s);
    }
    free(l);
}

static void log_unlink(struct migrator *m, struct mig_log *l)
{
    for (struct mig_log **p = &m->logs; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            return;
        }
}

static struct mig_log *log_new(struct migrator *m, const char *name)
{
    struct mig_log *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->m = m;
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->next = m->logs;
    m->logs = l;
    return l;
}

static void log_pump(struct mig_log *l);

static void on_log_step(int status, const char *error, bool succeeded, int64_t guard_rev_now,
                        const struct etcd_kv *record, void *opaque)
{
    struct mig_log *l = opaque;
    l->inflight = false;
    if (l->m == NULL) {
        log_free(l);
        return;
    }
    struct migrator *m = l->m;
    if (l->epoch != m->ha_epoch || m->stopping)
        return;
    struct mig_step *s = l->head;
    if (status || (!succeeded && guard_rev_now != m->ha_term)) {
        /* Not answered, or deposed (the step-down drops the log): again later. */
        log_warn("migration of %s: step %s not written to etcd: %s", l->name, s->phase,
                 status ? (error ? error : "failed") : "this server's term is stale");
        l->retry_at = vcr_mono_ms() + MIG_HA_RETRY_MS;
        return;
    }
    if (!succeeded && record->found) {
        json_error_t jerr;
        cleanup_json json_t *v =
            record->value ? json_loadb(record->value, record->value_len, 0, &jerr) : NULL;
        int64_t by = json_integer_value(json_object_get(v, "term"));
        if (by != m->ha_term)
            log_error("migration of %s: step %s was recorded by term %lld already", l->name,
                      s->phase, (long long)by);
    }
    l->head = s->next;
    if (l->head == NULL)
        l->tail = NULL;
    step_free(s);
    log_pump(l);
}

static void log_pump(struct mig_log *l)
{
    struct migrator *m = l->m;
    while (l->head && !l->inflight) {
        struct mig_step *s = l->head;
        if (s->record == NULL) {
            l->head = s->next;
            if (l->head == NULL)
                l->tail = NULL;
            mig_then_cb then = s->then;
            void *arg = s->arg;
            step_free(s);
            if (then)
                then(arg);
            continue;
        }
        if (vcr_mono_ms() < l->retry_at || ha_term(m->ha) != m->ha_term || m->ha_term == 0)
            return;
        cleanup_error vcr_error_t err = NULL;
        cleanup_free char *state_key = NULL;
        if (asprintf(&state_key, "%s%s", MIG_PREFIX, l->name) < 0 ||
            etcd_step_guarded(ha_etcd(m->ha), ha_leader_key(m->ha), m->ha_term, s->record_key,
                              s->record, state_key, s->state, on_log_step, l, &err) < 0) {
            log_warn("migration of %s: step %s: %s", l->name, s->phase,
                     err ? vcr_error_msg(err) : "out of memory");
            l->retry_at = vcr_mono_ms() + MIG_HA_RETRY_MS;
            return;
        }
        l->inflight = true;
        l->epoch = m->ha_epoch;
        return;
    }
    if (l->head == NULL && l->g == NULL && !l->inflight) {
        log_unlink(m, l);
        free(l);
    }
}

/* record and state: stolen (NULL for a barrier: then(arg) once the steps
 * before it are written). */
static void log_push(struct mig_log *l, const char *phase, const char *id, json_t *record_in,
                     json_t *state_in, mig_then_cb then, void *arg)
{
    cleanup_json json_t *record = record_in;
    cleanup_json json_t *state = state_in;
    struct mig_step *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return;
    snprintf(s->phase, sizeof(s->phase), "%s", phase);
    s->then = then;
    s->arg = arg;
    if (record) {
        struct migrator *m = l->m;
        json_object_set_new(record, "phase", json_string(phase));
        json_object_set_new(record, "term", json_integer(m->ha_term));
        json_object_set_new(record, "by", json_string(m->cfg->ha.name));
        json_object_set_new(record, "ts_ms", json_integer(vcr_wall_ms()));
        json_object_set_new(state, "phase", json_string(phase));
        json_object_set_new(state, "term", json_integer(m->ha_term));
        json_object_set_new(state, "by", json_string(m->cfg->ha.name));
        s->record = json_dumps(record, JSON_COMPACT);
        s->state = json_dumps(state, JSON_COMPACT);
        if (asprintf(&s->record_key, "%s%s/%s/%s", MIG_STEPS_PREFIX, l->name, id, phase) < 0)
            s->record_key = NULL;
        if (s->record == NULL || s->state == NULL || s->record_key == NULL) {
            step_free(s);
            return;
        }
    }
    if (l->tail)
        l->tail->next = s;
    else
        l->head = s;
    l->tail = s;
    log_pump(l);
}

/* --- a migration of this leader --- */

static json_t *mig_state(const struct mig *g, const char *id)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s}", "id", id, "container",
                     g->name, "from", g->src, "to", g->dst, "service", g->service, "address",
                     g->address, "data_path", g->data_path, "carry", g->carry, "why", g->why);
}

static void mig_id(const struct mig *g, char *out, size_t size)
{
    /* t0 is monotonic: the id is the start in wall clock ms. */
    snprintf(out, size, "%lld", (long long)(vcr_wall_ms() - (vcr_mono_ms() - g->t0)));
}

void mig_ha_step(struct mig *g, const char *phase)
{
    struct migrator *m = g->m;
    if (m->ha == NULL || migrate_ha_deposed(m))
        return;
    if (g->log == NULL && (g->log = log_new(m, g->name)) == NULL)
        return;
    g->log->g = g;
    char id[24];
    mig_id(g, id, sizeof(id));
    log_push(g->log, phase, id, json_object(), mig_state(g, id), NULL, NULL);
}

static void run_then(void *arg)
{
    struct mig *g = arg;
    void (*then)(struct mig *) = g->ha_then;
    g->ha_then = NULL;
    then(g);
}

void mig_ha_then(struct mig *g, void (*then)(struct mig *g))
{
    if (g->m->ha == NULL || g->log == NULL) {
        then(g);
        return;
    }
    g->ha_then = then;
    log_push(g->log, "barrier", NULL, NULL, NULL, run_then, g);
}

void mig_ha_detach(struct mig *g)
{
    struct mig_log *l = g->log;
    if (l == NULL)
        return;
    g->log = NULL;
    l->g = NULL;
    /* Barriers of the freed migration are dropped; its records go on. */
    for (struct mig_step *s = l->head; s; s = s->next)
        if (s->record == NULL)
            s->then = NULL;
    if (l->m)
        log_pump(l);
}

bool migrate_ha_deposed(const struct migrator *m)
{
    return m->ha && !(m->ha_loaded && ha_term(m->ha) == m->ha_term);
}

/* --- a predecessor's migration, ended by this leader --- */

static void takeover_free(struct migrator *m, struct mig_takeover *t)
{
    for (struct mig_takeover **p = &m->takeovers; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            break;
        }
    inventory_set_moving(m->inv, t->name, false);
    if (t->inflight)
        t->m = NULL; /* freed by its order's answer */
    else
        free(t);
}

static void takeover_journal(struct mig_takeover *t, const char *phase)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s?}", "container", t->name, "from", t->src,
                  "to", t->dst, "phase", phase, "taken_over", true, "after", t->last, "error",
                  t->error[0] ? t->error : NULL);
    journal_note(t->m->journal, 0, t->src, NULL, JOURNAL_MIGRATION, detail);
}

static void takeover_end(struct mig_takeover *t)
{
    struct migrator *m = t->m;
    const char *phase = t->finish && t->error[0] == '\0' ? "done" : "failed";
    if (t->finish && t->error[0] == '\0')
        log_info("migration of %s from %s to %s (after %s, a predecessor's): finished", t->name,
                 t->src, t->dst, t->last);
    else
        log_warn("migration of %s from %s to %s (after %s, a predecessor's): %s", t->name, t->src,
                 t->dst, t->last, t->error);
    takeover_journal(t, phase);
    /* The images both sides kept: dropped. */
    const char *hosts[] = {t->src, t->dst};
    for (int i = 0; i < 2; i++) {
        cleanup_json json_t *n = json_pack("{s:s}", "name", t->name);
        if (n && t->carry && i == 0)
            json_object_set_new(n, "service", json_string(t->service));
        cleanup_error vcr_error_t err = NULL;
        if (agents_send_order_with(m->agents, hosts[i], "container_migrate_cleanup", t->name, n,
                                   MIGRATE_CHUNK_ORDER_MS, migrate_on_ignored, NULL, &err) < 0)
            log_warn("migration of %s: cleanup on %s: %s", t->name, hosts[i], vcr_error_msg(err));
    }
    struct mig_log *l = log_new(m, t->name);
    if (l) {
        json_t *state =
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s?}", "id", t->id, "container",
                      t->name, "from", t->src, "to", t->dst, "service", t->service, "data_path",
                      t->data_path, "carry", t->carry, "error", t->error[0] ? t->error : NULL);
        json_t *record = json_pack("{s:s, s:b, s:s?}", "after", t->last, "taken_over", true,
                                   "error", t->error[0] ? t->error : NULL);
        log_push(l, phase, t->id, record, state, NULL, NULL);
    }
    takeover_free(m, t);
}

static bool source_reports_running(struct mig_takeover *t)
{
    const struct inv_host *h = inventory_find_host(t->m->inv, t->src);
    json_t *c = h && h->state == INV_HOST_CONNECTED ? inventory_host_container(h, t->name) : NULL;
    return c &&
           proto_ct_state_parse(json_string_value(json_object_get(c, "state"))) == PROTO_CT_RUNNING;
}

static void takeover_order(struct mig_takeover *t);

static void on_takeover_order(enum order_outcome outcome, const char *message, json_t *reply,
                              void *opaque)
{
    (void)reply;
    struct mig_takeover *t = opaque;
    t->inflight = false;
    if (t->m == NULL) {
        free(t);
        return;
    }
    if (t->m->stopping || t->epoch != t->m->ha_epoch)
        return;
    bool ok = outcome == ORDER_DONE || (t->stage == TK_START && source_reports_running(t));
    if (!ok) {
        if (++t->tries < MIG_HA_ORDER_TRIES) {
            t->retry_at = vcr_mono_ms() + MIG_HA_RETRY_MS;
            return;
        }
        size_t n = strlen(t->error);
        snprintf(t->error + n, sizeof(t->error) - n, "%s%s on %s: %s", n ? "; " : "",
                 t->stage == TK_START ? (t->carry ? "data_attach" : "container_start")
                                      : "container_destroy",
                 t->stage == TK_DESTROY && !t->finish ? t->dst : t->src,
                 message ? message : "failed");
        takeover_end(t);
        return;
    }
    t->tries = 0;
    if (t->stage == TK_DESTROY && !t->finish) {
        t->stage = TK_START;
        takeover_order(t);
        return;
    }
    if (t->stage == TK_START) {
        size_t n = strlen(t->error);
        snprintf(t->error + n, sizeof(t->error) - n,
                 "; rolled back: the container runs again (started cold) on %s", t->src);
    }
    t->stage = TK_END;
    takeover_end(t);
}

static void takeover_order(struct mig_takeover *t)
{
    struct migrator *m = t->m;
    const char *host, *action;
    cleanup_json json_t *members = NULL;
    if (t->stage == TK_DESTROY) {
        host = t->finish ? t->src : t->dst;
        action = "container_destroy";
        members = json_pack("{s:s}", "name", t->name);
    } else if (t->carry) {
        host = t->src;
        action = "data_attach";
        members = json_pack("{s:s, s:s, s:s}", "name", t->name, "service", t->service, "path",
                            t->data_path);
    } else {
        host = t->src;
        action = "container_start";
        members = json_pack("{s:s}", "name", t->name);
    }
    if (t->stage == TK_START && t->tries == 0 && source_reports_running(t)) {
        on_takeover_order(ORDER_DONE, NULL, NULL, t); /* never stopped: left alone */
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    int64_t timeout =
        t->carry && t->stage == TK_START ? SERVICE_DATA_ORDER_MS : MIGRATE_DUMP_ORDER_MS;
    t->inflight = true;
    t->epoch = m->ha_epoch;
    if (agents_send_order_with(m->agents, host, action, t->name, members, timeout,
                               on_takeover_order, t, &err) < 0)
        on_takeover_order(ORDER_UNREACHABLE, vcr_error_msg(err), NULL, t);
}

static void takeover_tick(struct mig_takeover *t, int64_t now)
{
    if (t->inflight || now < t->retry_at)
        return;
    if (t->stage == TK_WAIT_HOSTS) {
        const struct inv_host *hs = inventory_find_host(t->m->inv, t->src);
        const struct inv_host *hd = inventory_find_host(t->m->inv, t->dst);
        bool both = hs && hs->state == INV_HOST_CONNECTED && hd && hd->state == INV_HOST_CONNECTED;
        if (!both && now < t->wait_until)
            return;
        if (!both) {
            t->wait_until = now + t->m->cfg->host_timeout_ms;
            log_warn("migration of %s: waiting for standby hosts %s and %s to end it", t->name,
                     t->src, t->dst);
            return;
        }
        t->stage = TK_DESTROY;
        takeover_journal(t, t->finish ? "finishing" : "rolling_back");
    }
    if (t->stage == TK_DESTROY || t->stage == TK_START)
        takeover_order(t);
}

static bool step_at_or_after_port_open(const char *last)
{
    static const char *const past[] = {"port_open", "destroy", "cleanup"};
    for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++)
        if (strcmp(last, past[i]) == 0)
            return true;
    return false;
}

static void on_load_each(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct migrator *m = opaque;
    (void)key;
    json_error_t jerr;
    cleanup_json json_t *v = kv->value ? json_loadb(kv->value, kv->value_len, 0, &jerr) : NULL;
    const char *last = json_string_value(json_object_get(v, "phase"));
    const char *name = json_string_value(json_object_get(v, "container"));
    const char *src = json_string_value(json_object_get(v, "from"));
    const char *dst = json_string_value(json_object_get(v, "to"));
    const char *id = json_string_value(json_object_get(v, "id"));
    if (!m->ha_loading || last == NULL || name == NULL || src == NULL || dst == NULL ||
        id == NULL || strcmp(last, "done") == 0 || strcmp(last, "failed") == 0)
        return;
    struct mig_takeover *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return;
    t->m = m;
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->src, sizeof(t->src), "%s", src);
    snprintf(t->dst, sizeof(t->dst), "%s", dst);
    snprintf(t->id, sizeof(t->id), "%s", id);
    snprintf(t->last, sizeof(t->last), "%s", last);
    const char *svc = json_string_value(json_object_get(v, "service"));
    const char *path = json_string_value(json_object_get(v, "data_path"));
    snprintf(t->service, sizeof(t->service), "%s", svc ? svc : name);
    snprintf(t->data_path, sizeof(t->data_path), "%s", path ? path : "");
    t->carry = json_is_true(json_object_get(v, "carry"));
    t->finish = step_at_or_after_port_open(last);
    if (!t->finish)
        snprintf(t->error, sizeof(t->error),
                 "the server leading it stopped after step %s: ended by its successor", last);
    t->wait_until = vcr_mono_ms() + m->cfg->host_timeout_ms;
    t->next = m->takeovers;
    m->takeovers = t;
    inventory_set_moving(m->inv, name, true);
    log_info("migration of %s from %s to %s in flight (after %s): this leader %s", name, src, dst,
             last, t->finish ? "finishes it" : "rolls it back");
}

static void on_load_done(int status, const char *error, void *opaque)
{
    struct migrator *m = opaque;
    m->ha_loading = false;
    if (status) {
        log_warn("ha: loading the migrations from etcd: %s (retrying)", error ? error : "failed");
        while (m->takeovers)
            takeover_free(m, m->takeovers);
        return;
    }
    if (ha_term(m->ha) != m->ha_term)
        return; /* deposed meanwhile: the tick starts over */
    m->ha_loaded = true;
}

static void drop_all(struct migrator *m)
{
    m->ha_loaded = false;
    m->ha_epoch++;
    while (m->takeovers)
        takeover_free(m, m->takeovers);
    /* A migration waiting for etcd (a barrier) waits in vain: it ends here,
     * without rollback (mig_fail: the successor ends it). */
    struct mig *waiting[MIG_MAX];
    size_t n_waiting = 0;
    for (struct mig_log *l = m->logs, *next; l; l = next) {
        next = l->next;
        if (l->g) {
            for (struct mig_step *s = l->head; s; s = s->next)
                if (s->record == NULL && s->then && n_waiting < MIG_MAX) {
                    waiting[n_waiting++] = l->g;
                    break;
                }
            l->g->log = NULL;
            l->g = NULL;
        }
        if (l->inflight)
            l->m = NULL; /* freed by its answer */
        else
            log_free(l);
    }
    m->logs = NULL;
    for (size_t i = 0; i < n_waiting; i++)
        mig_fail(waiting[i], "this server no longer leads");
}

static void on_ha_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct migrator *m = arg;
    if (m->stopping)
        return;
    int64_t term = ha_term(m->ha);
    if (term == 0 || term != m->ha_term) {
        if (m->ha_loaded || m->takeovers || m->logs)
            drop_all(m);
        if (term == 0 || m->ha_loading)
            return;
        m->ha_term = term;
        cleanup_error vcr_error_t err = NULL;
        if (etcd_get_prefix(ha_etcd(m->ha), MIG_PREFIX, on_load_each, on_load_done, m, &err) < 0) {
            log_warn("ha: loading the migrations from etcd: %s", vcr_error_msg(err));
            m->ha_term = 0;
            return;
        }
        m->ha_loading = true;
        return;
    }
    if (!m->ha_loaded) {
        if (!m->ha_loading) {
            m->ha_term = 0; /* the load failed: again */
        }
        return;
    }
    int64_t now = vcr_mono_ms();
    for (struct mig_takeover *t = m->takeovers, *next; t; t = next) {
        next = t->next;
        takeover_tick(t, now);
    }
    for (struct mig_log *l = m->logs, *next; l; l = next) {
        next = l->next;
        log_pump(l);
    }
}

void migrator_set_ha(struct migrator *m, struct ha *ha)
{
    m->ha = ha;
    if (ha == NULL)
        return;
    m->ha_tick = event_new(m->base, -1, EV_PERSIST, on_ha_tick, m);
    struct timeval tv = {0, MIG_HA_TICK_MS * 1000};
    if (m->ha_tick)
        event_add(m->ha_tick, &tv);
}

bool migrate_ha_ready(struct migrator *m, const char *name, char *why, size_t size)
{
    if (m->ha == NULL)
        return true;
    if (migrate_ha_deposed(m)) {
        snprintf(why, size,
                 "this server does not lead, or has not loaded the migrations in "
                 "flight yet");
        return false;
    }
    /* One log per container at a time: the state key is the container's. */
    for (struct mig_log *l = m->logs; l; l = l->next)
        if (strcmp(l->name, name) == 0 && l->g == NULL) {
            snprintf(why, size, "container `%s`: its last migration's end is being written to etcd",
                     name);
            return false;
        }
    for (struct mig_takeover *t = m->takeovers; t; t = t->next)
        if (strcmp(t->name, name) == 0) {
            snprintf(why, size,
                     "container `%s`: a migration a previous leader began (after %s) is being "
                     "ended",
                     name, t->last);
            return false;
        }
    return true;
}

json_t *migrate_ha_status(struct migrator *m, json_t *list)
{
    for (struct mig_takeover *t = m->takeovers; list && t; t = t->next)
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:b}", "container", t->name,
                                              "from", t->src, "to", t->dst, "phase",
                                              t->finish ? "finishing" : "rolling_back",
                                              "taken_over", true));
    return list;
}

void migrate_ha_free(struct migrator *m)
{
    if (m->ha_tick)
        event_free(m->ha_tick);
    m->ha_tick = NULL;
    /* The etcd client and the agents go too (server.c): nothing answers any more. */
    while (m->takeovers) {
        struct mig_takeover *t = m->takeovers;
        m->takeovers = t->next;
        free(t);
    }
    while (m->logs) {
        struct mig_log *l = m->logs;
        m->logs = l->next;
        log_free(l);
    }
}
