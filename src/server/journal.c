/* Event journal on SQLite. */
#include "server/journal.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* Bumped with every schema change; journal_open refuses files from the future. */
#define JOURNAL_SCHEMA_VERSION 1
#define STRINGIFY_(x)          #x
#define STRINGIFY(x)           STRINGIFY_(x)

/* An event journal_note could not write (a full disk), kept to be written first by
 * the next write that can: late, in order, rather than lost. */
struct held_event {
    int64_t ts_ms, rx_ms;
    char *host, *vm, *kind, *detail; /* owned; host, vm, detail may be NULL */
};

struct journal {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *insert;
    sqlite3_stmt *since;
    sqlite3_stmt *tail;
    journal_append_cb listener;
    void *listener_opaque;
    struct held_event held[JOURNAL_HELD_MAX];
    size_t n_held;
    uint64_t dropped; /* held events dropped (the oldest) past JOURNAL_HELD_MAX */
};

static void held_free(struct held_event *h)
{
    free(h->host);
    free(h->vm);
    free(h->kind);
    free(h->detail);
    memset(h, 0, sizeof(*h));
}

static int db_error(struct journal *j, vcr_error_t *err, const char *what)
{
    return vcr_error_make(err, EIO, "journal `%s`: %s: %s", j->path, what, sqlite3_errmsg(j->db));
}

void journal_close(struct journal *j)
{
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->n_held; i++)
        held_free(&j->held[i]);
    sqlite3_finalize(j->insert);
    sqlite3_finalize(j->since);
    sqlite3_finalize(j->tail);
    sqlite3_close(j->db);
    free(j->path);
    free(j);
}

static int pragma_text(struct journal *j, const char *sql, char *out, size_t size, vcr_error_t *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(j->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(j, err, sql);
    int rc = sqlite3_step(st);
    const unsigned char *text = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
    snprintf(out, size, "%s", text ? (const char *)text : "");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_error(j, err, sql);
    return 0;
}

static int setup(struct journal *j, vcr_error_t *err)
{
    char mode[32];
    /* WAL lets readers run beside the writer; FULL sync makes every event
     * durable when its append returns (NORMAL would survive a crash of the
     * server but lose the last events to a power cut). */
    if (pragma_text(j, "PRAGMA journal_mode=WAL", mode, sizeof(mode), err) < 0)
        return -1;
    if (strcmp(mode, "wal") != 0)
        return vcr_error_make(err, EIO, "journal `%s`: cannot use WAL mode (got `%s`)", j->path,
                              mode);
    char *msg = NULL;
    if (sqlite3_exec(j->db, "PRAGMA synchronous=FULL", NULL, NULL, &msg) != SQLITE_OK) {
        vcr_error_make(err, EIO, "journal `%s`: %s", j->path, msg ? msg : "synchronous");
        sqlite3_free(msg);
        return -1;
    }
    sqlite3_busy_timeout(j->db, 2000);
    char version[32];
    if (pragma_text(j, "PRAGMA user_version", version, sizeof(version), err) < 0)
        return -1;
    int v = atoi(version);
    if (v > JOURNAL_SCHEMA_VERSION)
        return vcr_error_make(err, EIO,
                              "journal `%s`: schema version %d is newer than this server's (%d)",
                              j->path, v, JOURNAL_SCHEMA_VERSION);
    static const char schema[] = "CREATE TABLE IF NOT EXISTS events ("
                                 " id INTEGER PRIMARY KEY,"
                                 " ts_ms INTEGER NOT NULL,"
                                 " rx_ms INTEGER NOT NULL,"
                                 " host TEXT,"
                                 " vm TEXT,"
                                 " kind TEXT NOT NULL,"
                                 " detail TEXT);"
                                 "PRAGMA user_version = " STRINGIFY(JOURNAL_SCHEMA_VERSION) ";";
    if (sqlite3_exec(j->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        vcr_error_make(err, EIO, "journal `%s`: create table: %s", j->path, msg ? msg : "failed");
        sqlite3_free(msg);
        return -1;
    }
    if (sqlite3_prepare_v2(j->db,
                           "INSERT INTO events (ts_ms, rx_ms, host, vm, kind, detail)"
                           " VALUES (?, ?, ?, ?, ?, ?)",
                           -1, &j->insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(j->db,
                           "SELECT id, ts_ms, rx_ms, host, vm, kind, detail FROM events"
                           " WHERE id > ? ORDER BY id LIMIT ?",
                           -1, &j->since, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(j->db,
                           "SELECT * FROM (SELECT id, ts_ms, rx_ms, host, vm, kind, detail"
                           " FROM events ORDER BY id DESC LIMIT ?) ORDER BY id",
                           -1, &j->tail, NULL) != SQLITE_OK)
        return db_error(j, err, "prepare");
    return 0;
}

struct journal *journal_open(const char *path, vcr_error_t *err)
{
    struct journal *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->path = strdup(path)) == NULL) {
        free(j);
        vcr_error_errno(err, "journal `%s`", path);
        return NULL;
    }
    if (sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        if (j->db)
            db_error(j, err, "open");
        else
            vcr_error_make(err, ENOMEM, "journal `%s`: out of memory", path);
        journal_close(j);
        return NULL;
    }
    if (setup(j, err) < 0) {
        journal_close(j);
        return NULL;
    }
    return j;
}

static int bind_text_or_null(sqlite3_stmt *st, int col, const char *s)
{
    return s ? sqlite3_bind_text(st, col, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, col);
}

static int64_t insert(struct journal *j, int64_t ts_ms, int64_t rx_ms, const char *host,
                      const char *vm, const char *kind, const char *detail, vcr_error_t *err)
{
    sqlite3_stmt *st = j->insert;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (sqlite3_bind_int64(st, 1, ts_ms) != SQLITE_OK ||
        sqlite3_bind_int64(st, 2, rx_ms) != SQLITE_OK ||
        bind_text_or_null(st, 3, host) != SQLITE_OK || bind_text_or_null(st, 4, vm) != SQLITE_OK ||
        bind_text_or_null(st, 5, kind) != SQLITE_OK ||
        bind_text_or_null(st, 6, detail) != SQLITE_OK)
        return db_error(j, err, "append");
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    /* The statement keeps no copy of the row's texts until the next append. */
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE)
        return db_error(j, err, "append");
    int64_t id = sqlite3_last_insert_rowid(j->db);
    if (j->listener)
        j->listener(id, j->listener_opaque);
    return id;
}

int64_t journal_append(struct journal *j, const struct journal_event *ev, vcr_error_t *err)
{
    cleanup_free char *detail = ev->detail ? json_dumps(ev->detail, JSON_COMPACT) : NULL;
    return insert(j, ev->ts_ms, ev->rx_ms, ev->host, ev->vm, ev->kind, detail, err);
}

size_t journal_held(const struct journal *j)
{
    return j->n_held;
}

int journal_write_held(struct journal *j)
{
    size_t done = 0;
    while (done < j->n_held) {
        struct held_event *h = &j->held[done];
        cleanup_error vcr_error_t err = NULL;
        if (insert(j, h->ts_ms, h->rx_ms, h->host, h->vm, h->kind, h->detail, &err) < 0)
            break;
        held_free(h);
        done++;
    }
    if (done == 0)
        return j->n_held ? -1 : 0;
    memmove(j->held, j->held + done, (j->n_held - done) * sizeof(j->held[0]));
    j->n_held -= done;
    if (j->n_held == 0) {
        if (j->dropped)
            log_error("journal `%s`: written again; %llu events were dropped meanwhile (more "
                      "than %d held)",
                      j->path, (unsigned long long)j->dropped, JOURNAL_HELD_MAX);
        else
            log_info("journal `%s`: written again, with the %zu events held meanwhile", j->path,
                     done);
        j->dropped = 0;
        return 0;
    }
    return -1;
}

static void hold(struct journal *j, const struct journal_event *ev)
{
    if (j->n_held == JOURNAL_HELD_MAX) {
        held_free(&j->held[0]);
        memmove(j->held, j->held + 1, (JOURNAL_HELD_MAX - 1) * sizeof(j->held[0]));
        j->n_held--;
        j->dropped++;
    }
    struct held_event *h = &j->held[j->n_held++];
    h->ts_ms = ev->ts_ms;
    h->rx_ms = ev->rx_ms;
    h->host = ev->host ? strdup(ev->host) : NULL;
    h->vm = ev->vm ? strdup(ev->vm) : NULL;
    h->kind = strdup(ev->kind);
    h->detail = ev->detail ? json_dumps(ev->detail, JSON_COMPACT) : NULL;
}

void journal_note(struct journal *j, int64_t ts_ms, const char *host, const char *vm,
                  const char *kind, json_t *detail)
{
    struct journal_event ev = {
        .ts_ms = ts_ms,
        .rx_ms = vcr_wall_ms(),
        .host = host,
        .vm = vm,
        .kind = kind,
        .detail = detail,
    };
    if (ev.ts_ms == 0)
        ev.ts_ms = ev.rx_ms;
    /* Never before an older event that is still held: the journal keeps the order. */
    if (journal_write_held(j) < 0) {
        hold(j, &ev);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    if (journal_append(j, &ev, &err) < 0) {
        log_error("%s; the event is held and written once the journal can be written "
                  "(at most %d held)",
                  vcr_error_msg(err), JOURNAL_HELD_MAX);
        hold(j, &ev);
    }
}

static json_t *column_text_or_null(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s ? json_string((const char *)s) : json_null();
}

static json_t *row_json(sqlite3_stmt *st)
{
    json_t *detail = NULL;
    const unsigned char *text = sqlite3_column_text(st, 6);
    if (text && (detail = json_loads((const char *)text, JSON_DECODE_ANY, NULL)) == NULL)
        detail = json_string((const char *)text);
    return json_pack("{s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "id",
                     (json_int_t)sqlite3_column_int64(st, 0), "ts_ms",
                     (json_int_t)sqlite3_column_int64(st, 1), "rx_ms",
                     (json_int_t)sqlite3_column_int64(st, 2), "host", column_text_or_null(st, 3),
                     "vm", column_text_or_null(st, 4), "kind", column_text_or_null(st, 5), "detail",
                     detail ? detail : json_null());
}

json_t *journal_read(struct journal *j, int64_t since_id, int limit, vcr_error_t *err)
{
    if (limit < 1 || limit > JOURNAL_READ_MAX) {
        vcr_error_make(err, EINVAL, "journal read: limit %d is out of range; allowed: 1..%d", limit,
                       JOURNAL_READ_MAX);
        return NULL;
    }
    sqlite3_stmt *st = since_id >= 0 ? j->since : j->tail;
    sqlite3_reset(st);
    int col = 1;
    if (since_id >= 0)
        sqlite3_bind_int64(st, col++, since_id);
    sqlite3_bind_int(st, col, limit);
    cleanup_json json_t *events = json_array();
    int rc = SQLITE_DONE;
    while (events && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (json_array_append_new(events, row_json(st)) < 0) {
            sqlite3_reset(st);
            vcr_error_make(err, ENOMEM, "journal `%s`: read: out of memory", j->path);
            return NULL;
        }
    sqlite3_reset(st);
    if (events == NULL || rc != SQLITE_DONE) {
        db_error(j, err, "read");
        return NULL;
    }
    return steal_pointer(&events);
}

void journal_set_listener(struct journal *j, journal_append_cb cb, void *opaque)
{
    j->listener = cb;
    j->listener_opaque = opaque;
}
