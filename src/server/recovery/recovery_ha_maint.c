/* Warm-restart maintenance windows in etcd, for redundant servers
 * (docs/ha.md, "Shared state"; docs/warm-restart.md).  A VM in a warm restart
 * is `restarting`: maintenance, not a failure, until its deadline
 * (inventory.h INV_RESTART_DEADLINE_MS).  Its leader records the window
 * under SERVER_HA_PREFIX "maintenance/HOST/VM" with that deadline (wall clock
 * ms), in a put valid only under its term, and deletes it when the restart
 * ends (the VM reported in another state) or expires.  A new leader loads the
 * windows before it decides anything (recovery_ha.c), and when the agent says
 * hello with the VM still `restarting` it keeps the predecessor's deadline
 * instead of opening a new one: a restart that hangs is declared failed when
 * its window ends, however many takeovers happen meanwhile, and not before.
 *
 * The windows follow the inventory once per tick (the agents' reports are the
 * truth); without `ha:` none of this runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "config/server_config.h"
#include "ha/etcd.h"
#include "ha/ha.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/recovery/recovery_priv.h"

#define MAINT_PREFIX   SERVER_HA_PREFIX "maintenance/"
#define MAINT_RETRY_MS 200
#define JOURNAL_MAINT  "maintenance"

struct maint_window {
    struct recovery *rc;
    char host[65], vm[65];
    int64_t deadline_wall; /* the restart's deadline, wall clock ms */
    bool recorded;         /* etcd has it (written by this leader, or loaded) */
    bool applied;          /* its deadline is the inventory's (loaded windows) */
    bool ended;            /* to be deleted from etcd */
    bool inflight;
    int64_t retry_at; /* monotonic */
    uint64_t epoch;
};

static struct maint_window *window_find(struct recovery *rc, const char *host, const char *vm)
{
    for (size_t i = 0; i < rc->n_maint; i++)
        if (strcmp(rc->maint[i]->host, host) == 0 && strcmp(rc->maint[i]->vm, vm) == 0)
            return rc->maint[i];
    return NULL;
}

static struct maint_window *window_add(struct recovery *rc, const char *host, const char *vm)
{
    struct maint_window **grown = realloc(rc->maint, (rc->n_maint + 1) * sizeof(*grown));
    if (grown == NULL)
        return NULL;
    rc->maint = grown;
    struct maint_window *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->rc = rc;
    snprintf(w->host, sizeof(w->host), "%s", host);
    snprintf(w->vm, sizeof(w->vm), "%s", vm);
    rc->maint[rc->n_maint++] = w;
    return w;
}

/* An answer still in flight keeps its window (freed with the answer). */
static void window_remove(struct recovery *rc, size_t i)
{
    struct maint_window *w = rc->maint[i];
    rc->maint[i] = rc->maint[--rc->n_maint];
    if (w->inflight)
        w->rc = NULL;
    else
        free(w);
}

void recovery_ha_maint_drop(struct recovery *rc)
{
    while (rc->n_maint)
        window_remove(rc, 0);
    free(rc->maint);
    rc->maint = NULL;
}

void recovery_ha_maint_free(struct recovery *rc)
{
    /* The etcd client is freed next (server.c), with the answers in flight. */
    for (size_t i = 0; i < rc->n_maint; i++)
        free(rc->maint[i]);
    rc->n_maint = 0;
    free(rc->maint);
    rc->maint = NULL;
}

static void window_journal(struct maint_window *w, const char *what)
{
    cleanup_json json_t *detail =
        json_pack("{s:s, s:I, s:I}", "window", what, "deadline_ms", (json_int_t)w->deadline_wall,
                  "term", (json_int_t)w->rc->ha_term);
    journal_note(w->rc->journal, 0, w->host, w->vm, JOURNAL_MAINT, detail);
    log_info("host %s: VM %s: warm-restart window %s in etcd (deadline %lld)", w->host, w->vm, what,
             (long long)w->deadline_wall);
}

/* One answer: the window in flight is settled or retried. */
static bool window_answered(struct maint_window *w, int status, const char *error)
{
    w->inflight = false;
    if (w->rc == NULL) {
        free(w); /* dropped meanwhile (deposed, stopped) */
        return false;
    }
    if (w->epoch != w->rc->ha_epoch)
        return false;
    if (status) {
        log_warn("host %s: VM %s: warm-restart window in etcd: %s (retrying)", w->host, w->vm,
                 error ? error : "failed");
        w->retry_at = vcr_mono_ms() + MAINT_RETRY_MS;
        return false;
    }
    return true;
}

static void on_window_put(int status, const char *error, bool created, const struct etcd_kv *kv,
                          int64_t revision, void *opaque)
{
    struct maint_window *w = opaque;
    (void)kv;
    (void)revision;
    if (!window_answered(w, status, error))
        return;
    if (!created) {
        /* Deposed: the leader key's term is not ours; the step-down drops it. */
        w->retry_at = vcr_mono_ms() + MAINT_RETRY_MS;
        return;
    }
    w->recorded = true;
    window_journal(w, "opened");
}

static void on_window_deleted(int status, const char *error, void *opaque)
{
    struct maint_window *w = opaque;
    if (!window_answered(w, status, error))
        return;
    window_journal(w, "closed");
    for (size_t i = 0; i < w->rc->n_maint; i++)
        if (w->rc->maint[i] == w) {
            window_remove(w->rc, i);
            return;
        }
}

static void window_write(struct maint_window *w, int64_t now)
{
    struct recovery *rc = w->rc;
    if (w->inflight || now < w->retry_at)
        return;
    cleanup_free char *key = NULL;
    cleanup_error vcr_error_t err = NULL;
    if (asprintf(&key, "%s%s/%s", MAINT_PREFIX, w->host, w->vm) < 0) {
        w->retry_at = now + MAINT_RETRY_MS;
        return;
    }
    int r;
    if (w->ended) {
        r = etcd_delete_guarded(ha_etcd(rc->ha), key, ha_leader_key(rc->ha), rc->ha_term,
                                on_window_deleted, w, &err);
    } else {
        cleanup_json json_t *v = json_pack("{s:s, s:s, s:I, s:I, s:s}", "host", w->host, "vm",
                                           w->vm, "deadline_ms", (json_int_t)w->deadline_wall,
                                           "term", (json_int_t)rc->ha_term, "by", rc->cfg->ha.name);
        cleanup_free char *value = v ? json_dumps(v, JSON_COMPACT) : NULL;
        r = value ? etcd_put_guarded(ha_etcd(rc->ha), key, value, ha_leader_key(rc->ha),
                                     rc->ha_term, on_window_put, w, &err)
                  : -1;
    }
    if (r < 0) {
        log_warn("host %s: VM %s: warm-restart window in etcd: %s", w->host, w->vm,
                 err ? vcr_error_msg(err) : "out of memory");
        w->retry_at = now + MAINT_RETRY_MS;
        return;
    }
    w->inflight = true;
    w->epoch = rc->ha_epoch;
}

void recovery_ha_maint_tick(struct recovery *rc, int64_t now)
{
    int64_t wall = vcr_wall_ms();
    /* Restarts the inventory has: each has its window. */
    for (size_t i = 0; i < rc->inv->n_hosts; i++) {
        struct inv_host *h = rc->inv->hosts[i];
        if (h->state != INV_HOST_CONNECTED)
            continue;
        for (size_t j = 0; j < h->n_vms; j++) {
            struct inv_vm *vm = h->vms[j];
            if (vm->state != INV_VM_RESTARTING || vm->restart_deadline_ms == 0)
                continue;
            if (vm->restart_deadline_ms <= now && window_find(rc, h->name, vm->name) == NULL)
                continue; /* over: inventory_expire_restarts fails it */
            struct maint_window *w = window_find(rc, h->name, vm->name);
            if (w == NULL && (w = window_add(rc, h->name, vm->name)) != NULL) {
                w->deadline_wall = wall + (vm->restart_deadline_ms - now);
                w->applied = true;
            }
            if (w && !w->applied) {
                /* Opened by a predecessor: its deadline, not a new one. */
                vm->restart_deadline_ms = now - (wall - w->deadline_wall);
                if (vm->restart_deadline_ms <= 0)
                    vm->restart_deadline_ms = 1; /* over: inventory_expire_restarts says so */
                w->applied = true;
                log_info("host %s: VM %s: warm restart within the window its predecessor "
                         "opened (%lld ms left)",
                         h->name, vm->name, (long long)(w->deadline_wall - wall));
            }
        }
    }
    /* Windows whose restart ended (the VM's host reports it in another
     * state) or whose deadline passed: closed. */
    for (size_t i = 0; i < rc->n_maint;) {
        struct maint_window *w = rc->maint[i];
        struct inv_host *h = inventory_find_host(rc->inv, w->host);
        struct inv_vm *vm = NULL;
        for (size_t j = 0; h && j < h->n_vms && vm == NULL; j++)
            if (strcmp(h->vms[j]->name, w->vm) == 0)
                vm = h->vms[j];
        bool reported = h && h->state == INV_HOST_CONNECTED;
        if (!w->ended && ((reported && (vm == NULL || vm->state != INV_VM_RESTARTING)) ||
                          wall > w->deadline_wall)) {
            w->ended = true;
            w->retry_at = 0;
        }
        if (w->ended && !w->recorded && !w->inflight) {
            window_remove(rc, i); /* never in etcd: nothing to close there */
            continue;
        }
        if (w->ended || !w->recorded)
            window_write(w, now);
        i++;
    }
}

/* --- loading, on taking the lead (after the services' state) --- */

static void on_maint_each(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct recovery *rc = opaque;
    (void)key;
    if (!rc->ha_loading || rc->ha_load_stale)
        return;
    json_error_t jerr;
    cleanup_json json_t *v = kv->value ? json_loadb(kv->value, kv->value_len, 0, &jerr) : NULL;
    const char *host = json_string_value(json_object_get(v, "host"));
    const char *vm = json_string_value(json_object_get(v, "vm"));
    int64_t deadline = json_integer_value(json_object_get(v, "deadline_ms"));
    if (host == NULL || vm == NULL || deadline <= 0 || strlen(host) > 64 || strlen(vm) > 64 ||
        window_find(rc, host, vm))
        return;
    struct maint_window *w = window_add(rc, host, vm);
    if (w == NULL)
        return;
    w->deadline_wall = deadline;
    w->recorded = true;
    log_info("host %s: VM %s: warm-restart window loaded from etcd (%lld ms left)", host, vm,
             (long long)(deadline - vcr_wall_ms()));
}

static void on_maint_done(int status, const char *error, void *opaque)
{
    struct recovery *rc = opaque;
    rc->ha_loading = false;
    if (rc->ha_load_stale) {
        rc->ha_load_stale = false;
        return;
    }
    if (status) {
        log_warn("ha: loading the warm-restart windows from etcd: %s (retrying)",
                 error ? error : "failed");
        return;
    }
    rc->ha_loaded = true;
    log_info("ha: the services' state loaded from etcd (term %lld)", (long long)rc->ha_term);
}

int recovery_ha_maint_load(struct recovery *rc, vcr_error_t *err)
{
    recovery_ha_maint_drop(rc);
    if (etcd_get_prefix(ha_etcd(rc->ha), MAINT_PREFIX, on_maint_each, on_maint_done, rc, err) < 0)
        return -1;
    rc->ha_loading = true;
    return 0;
}
