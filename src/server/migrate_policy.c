/* The migration policy (docs/migration.md, "Policy"; server config
 * `migration`): after each sample of a standby host, one at or above
 * migration.cpu_pct for migration.samples samples in a row has its busiest
 * running container moved (migrate.c) to the least busy connected target; a
 * target VM that is down is started and used once its agent says hello. */
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto_state.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate_priv.h"
#include "config/server_config.h"

static struct busy_host *busy_of(struct migrator *m, const char *name)
{
    for (size_t i = 0; i < m->n_busy; i++)
        if (strcmp(m->busy[i].name, name) == 0)
            return &m->busy[i];
    if (m->n_busy == BUSY_MAX)
        return NULL;
    struct busy_host *b = &m->busy[m->n_busy++];
    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    return b;
}

static double load_of(const struct inv_host *h)
{
    json_t *pct = json_object_get(h->vm_load, "cpu_pct");
    return json_is_number(pct) ? json_number_value(pct) : -1;
}

/* The VM named like a target, on a connected host agent, if it is down. */
static bool start_target_vm(struct migrator *m, const char *target)
{
    for (size_t i = 0; i < m->inv->n_hosts; i++) {
        const struct inv_host *h = m->inv->hosts[i];
        if (h->state != INV_HOST_CONNECTED)
            continue;
        for (size_t j = 0; j < h->n_vms; j++) {
            const struct inv_vm *vm = h->vms[j];
            if (strcmp(vm->name, target) != 0)
                continue;
            if (vm->state == INV_VM_RUNNING || vm->state == INV_VM_STARTING ||
                vm->state == INV_VM_RESTARTING)
                return false; /* booting: its agent says hello soon */
            struct busy_host *b = busy_of(m, target);
            int64_t now = vcr_mono_ms();
            if (b == NULL || (b->vm_started_ms && now - b->vm_started_ms < MIGRATE_TARGET_BOOT_MS))
                return false;
            b->vm_started_ms = now;
            log_info("migration policy: starting spare standby VM %s on %s", target, h->name);
            cleanup_error vcr_error_t err = NULL;
            if (agents_send_order_with(m->agents, h->name, "vm_start", target, NULL,
                                       MIGRATE_CHUNK_ORDER_MS, migrate_on_ignored, NULL, &err) < 0)
                log_warn("migration policy: vm_start %s: %s", target, vcr_error_msg(err));
            cleanup_json json_t *d =
                json_pack("{s:s, s:s}", "phase", "target_started", "target", target);
            journal_note(m->journal, 0, h->name, target, JOURNAL_MIGRATION, d);
            return true;
        }
    }
    return false;
}

void migrator_on_sample(struct migrator *m, const char *host)
{
    if (m == NULL || m->stopping)
        return;
    migrate_settle(m);
    if (m->cfg->migration.cpu_pct == 0)
        return;
    const struct inv_host *h = inventory_find_host(m->inv, host);
    if (h == NULL || h->role == NULL || strcmp(h->role, "standby") != 0)
        return;
    struct busy_host *b = busy_of(m, host);
    if (b == NULL)
        return;
    double pct = load_of(h);
    if (pct < (double)m->cfg->migration.cpu_pct) {
        b->over = 0;
        return;
    }
    if (++b->over < m->cfg->migration.samples || migrate_host_busy(m, host))
        return;
    /* The busiest running container. */
    const char *name = NULL;
    double most = -1;
    size_t i;
    json_t *c;
    json_array_foreach(h->containers, i, c)
    {
        const char *st = json_string_value(json_object_get(c, "state"));
        json_t *cp = json_object_get(c, "cpu_pct");
        double v = json_is_number(cp) ? json_number_value(cp) : 0;
        if (proto_ct_state_parse(st) == PROTO_CT_RUNNING && v > most) {
            most = v;
            name = json_string_value(json_object_get(c, "name"));
        }
    }
    if (name == NULL)
        return;
    /* The least busy connected target that does not hold it. */
    const char *to = NULL;
    double least = 1e9;
    for (size_t t = 0; t < m->cfg->migration.n_targets; t++) {
        const char *cand = m->cfg->migration.targets[t];
        const struct inv_host *th = inventory_find_host(m->inv, cand);
        if (strcmp(cand, host) == 0 || th == NULL || th->state != INV_HOST_CONNECTED ||
            th->role == NULL || strcmp(th->role, "standby") != 0 ||
            inventory_host_container(th, name) || migrate_host_busy(m, cand))
            continue;
        double l = load_of(th);
        if (l < least) {
            least = l;
            to = cand;
        }
    }
    if (to == NULL) {
        /* None up: bring a spare up; a later sample finds it. */
        for (size_t t = 0; t < m->cfg->migration.n_targets; t++)
            if (strcmp(m->cfg->migration.targets[t], host) != 0 &&
                start_target_vm(m, m->cfg->migration.targets[t]))
                break;
        return;
    }
    char why[200];
    snprintf(why, sizeof(why), "policy: %s at %.0f%% CPU for %u samples (threshold %u%%)", host,
             pct, b->over, m->cfg->migration.cpu_pct);
    cleanup_error vcr_error_t err = NULL;
    if (migrator_start(m, host, name, to, why, true, NULL, NULL, &err) < 0)
        log_warn("migration policy: %s from %s to %s: %s", name, host, to, vcr_error_msg(err));
    b->over = 0;
}
