/* The event journal: an append-only SQLite table in WAL mode, so that readers
 * (the API, `vcr events`, a later recovery engine) never block the writer. */
#ifndef VCR_SERVER_JOURNAL_H
#define VCR_SERVER_JOURNAL_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

/* Kinds written by the server (docs/server.md, "Journal"). */
#define JOURNAL_HELLO               "hello"
#define JOURNAL_HOST_UP             "host_up"
#define JOURNAL_HOST_LOST           "host_lost"
#define JOURNAL_VM_EVENT            "vm_event"
#define JOURNAL_WARM_RESTART_FAILED "warm_restart_failed"
#define JOURNAL_WARM_RESTART        "warm_restart"
#define JOURNAL_MIGRATION           "migration"
#define JOURNAL_PROVISION           "provision"
#define JOURNAL_SELF_FENCE          "self_fence"
#define JOURNAL_DATA_COPY           "data_copy"
#define JOURNAL_HA_LEADER           "ha_leader"   /* this server leads: {name, term} */
#define JOURNAL_HA_FOLLOWER         "ha_follower" /* it stepped down: {name, why} */

#define JOURNAL_READ_MAX 1000

struct journal;

struct journal_event {
    int64_t ts_ms;    /* when it happened, by the clock of whoever saw it */
    int64_t rx_ms;    /* when the server received or decided it */
    const char *host; /* may be NULL */
    const char *vm;   /* may be NULL */
    const char *kind;
    json_t *detail; /* borrowed, may be NULL; stored as JSON text */
};

/* Opens or creates the file; fails if WAL mode cannot be set. */
struct journal *journal_open(const char *path, vcr_error_t *err);
void journal_close(struct journal *j);

/* Returns the new event's id (> 0) or -1. */
int64_t journal_append(struct journal *j, const struct journal_event *ev, vcr_error_t *err);

/* What the server records as it goes: rx_ms is now, ts_ms (0: now) when it
 * happened.  A failure (a full disk) is logged, not returned: it must not stop
 * the monitoring itself.  The event is held in memory (at most JOURNAL_HELD_MAX,
 * then the oldest are dropped and counted) and written, in order and before any
 * newer one, by the next note or journal_write_held() that can write. */
#define JOURNAL_HELD_MAX 1024
void journal_note(struct journal *j, int64_t ts_ms, const char *host, const char *vm,
                  const char *kind, json_t *detail);

/* Writes the held events, oldest first; 0 when none is left, -1 when some still
 * cannot be written.  The server calls it on its liveness tick (100 ms). */
int journal_write_held(struct journal *j);
size_t journal_held(const struct journal *j);

/* A JSON array of events {id, ts_ms, rx_ms, host, vm, kind, detail}, oldest
 * first, at most limit (1..JOURNAL_READ_MAX): those with id > since_id, or for
 * since_id < 0 the last limit events. */
json_t *journal_read(struct journal *j, int64_t since_id, int limit, vcr_error_t *err);

/* Called after every successful append (one listener: the API's long polls). */
typedef void (*journal_append_cb)(int64_t id, void *opaque);
void journal_set_listener(struct journal *j, journal_append_cb cb, void *opaque);

#endif
