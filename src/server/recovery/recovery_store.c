/* The recovery engine's store (docs/recovery.md, "Restart safety"): the names
 * of states and phases, and the `recoveries` table in the journal's SQLite
 * file, a second connection beside journal.c's (WAL lets both write in turn). */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/recovery/recovery_priv.h"
#include "config/server_config.h"

static const char *const state_names[] = {
    [SVC_OK] = "ok",
    [SVC_DEGRADED] = "degraded",
    [SVC_RECOVERING] = "recovering",
    [SVC_RECOVERED] = "recovered",
    [SVC_FAILED] = "failed",
    [SVC_STOPPED] = "stopped",
};
#define N_STATES (sizeof(state_names) / sizeof(state_names[0]))

static const char *const phase_names[] = {
    [PH_NONE] = "none",
    [PH_DETECTED] = "detected",
    [PH_FENCED] = "fenced",
    [PH_CONTAINER_READY] = "container_ready",
    [PH_DATA_COPIED] = "data_copied",
    [PH_DATA_ATTACHED] = "data_attached",
    [PH_PORT_OPEN] = "port_open",
    [PH_ADDRESS_TAKEN] = "address_taken",
    [PH_DNS_UPDATED] = "dns_updated",
    [PH_HOOK_RUN] = "hook_run",
    [PH_CLIENT_CONFIRMED] = "client_confirmed",
};

static int parse_name(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

const char *recovery_state_name(enum svc_state state)
{
    return (unsigned)state < N_STATES ? state_names[state] : "?";
}

const char *recovery_phase_name(enum rec_phase phase)
{
    return (unsigned)phase < sizeof(phase_names) / sizeof(phase_names[0]) ? phase_names[phase]
                                                                          : "?";
}

static int db_exec(sqlite3 *db, const char *sql, vcr_error_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        vcr_error_make(err, EIO, "recoveries table: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* A recovery state that cannot be saved is not acted on: what a restarted
 * server reloads must never be behind what was done (docs/recovery.md). */
#define SAVE_RETRY_MS 1000

static bool save_row(struct svc *s);

bool recovery_save(struct svc *s)
{
    if (s->rc->ha == NULL)
        return save_row(s);
    /* Redundant servers: etcd holds the state a successor loads (recovery_ha.c);
     * the local row is history only and holds nothing up. */
    recovery_ha_save(s);
    save_row(s);
    s->unsaved = false;
    return true;
}

static bool save_row(struct svc *s)
{
    s->updated_ms = vcr_wall_ms();
    sqlite3_stmt *st = NULL;
    cleanup_free char *timeline = s->timeline ? json_dumps(s->timeline, JSON_COMPACT) : NULL;
    int rc = sqlite3_prepare_v2(
        s->rc->db,
        "INSERT OR REPLACE INTO recoveries (service, state, phase, mode, cause, error, "
        "started_ms, updated_ms, on_standby, timeline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->cfg->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, state_names[s->state], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, phase_names[s->phase], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, s->cfg->standby.mode->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, s->cause, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, s->error, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 7, s->started_ms);
        sqlite3_bind_int64(st, 8, s->updated_ms);
        sqlite3_bind_int(st, 9, s->on_standby);
        if (timeline)
            sqlite3_bind_text(st, 10, timeline, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 10);
        rc = sqlite3_step(st);
    }
    const char *why = rc == SQLITE_DONE ? NULL : sqlite3_errmsg(s->rc->db);
    sqlite3_finalize(st);
    if (why == NULL) {
        if (s->unsaved)
            log_info("service %s: its recovery state is saved again", s->cfg->name);
        s->unsaved = false;
        return true;
    }
    if (!s->unsaved)
        log_error("service %s: cannot save its recovery state (%s): holding at phase %s, "
                  "retrying every %d ms",
                  s->cfg->name, why, phase_names[s->phase], SAVE_RETRY_MS);
    s->unsaved = true;
    s->save_retry_at = vcr_mono_ms() + SAVE_RETRY_MS;
    return false;
}

void recovery_store_load(struct svc *s)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->rc->db,
                           "SELECT state, phase, cause, error, started_ms, on_standby, timeline "
                           "FROM recoveries WHERE service = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, s->cfg->name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        int state = parse_name(state_names, N_STATES, (const char *)sqlite3_column_text(st, 0));
        int phase = parse_name(phase_names, sizeof(phase_names) / sizeof(phase_names[0]),
                               (const char *)sqlite3_column_text(st, 1));
        const char *cause = (const char *)sqlite3_column_text(st, 2);
        const char *error = (const char *)sqlite3_column_text(st, 3);
        const char *timeline = (const char *)sqlite3_column_text(st, 6);
        s->state = state >= 0 ? (enum svc_state)state : SVC_OK;
        s->phase = phase >= 0 ? (enum rec_phase)phase : PH_NONE;
        snprintf(s->cause, sizeof(s->cause), "%s", cause ? cause : "");
        snprintf(s->error, sizeof(s->error), "%s", error ? error : "");
        s->started_ms = sqlite3_column_int64(st, 4);
        s->on_standby = sqlite3_column_int(st, 5) != 0;
        json_decref(s->timeline);
        s->timeline = timeline ? json_loads(timeline, 0, NULL) : NULL;
        if (!json_is_array(s->timeline)) {
            json_decref(s->timeline);
            s->timeline = json_array();
        }
        /* Both are read from the agents' reports again. */
        if (s->state == SVC_DEGRADED || s->state == SVC_STOPPED)
            s->state = SVC_OK;
    }
    sqlite3_finalize(st);
}

int recovery_store_open(struct recovery *rc, vcr_error_t *err)
{
    const char *path = rc->cfg->journal;
    if (sqlite3_open_v2(path, &rc->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK)
        return vcr_error_make(err, EIO, "recoveries table in `%s`: %s", path,
                              rc->db ? sqlite3_errmsg(rc->db) : "out of memory");
    sqlite3_busy_timeout(rc->db, 2000);
    return db_exec(rc->db,
                   "PRAGMA synchronous=FULL;"
                   "CREATE TABLE IF NOT EXISTS recoveries (service TEXT PRIMARY KEY,"
                   " state TEXT NOT NULL, phase TEXT NOT NULL, mode TEXT, cause TEXT, error TEXT,"
                   " started_ms INTEGER, updated_ms INTEGER NOT NULL, on_standby INTEGER NOT NULL"
                   " DEFAULT 0, timeline TEXT);",
                   err);
}
