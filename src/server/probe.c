/* The primary's health probe: one check every check.interval_ms, counted by
 * recovery.c.  Scheduling is driven by the engine's cron tick, so a probe
 * never overlaps the previous one of the same service. */
#include <stdlib.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/check.h"
#include "server/recovery_priv.h"

static void on_probe_done(bool healthy, const char *why, const char *body, void *arg)
{
    struct svc *s = arg;
    (void)body;
    s->probe.check = NULL;
    recovery_probe_result(s, healthy, why);
}

void probe_due(struct svc *s, int64_t now)
{
    struct probe *p = &s->probe;
    if (p->check || now < p->next_ms)
        return;
    p->next_ms = now + s->cfg->check.interval_ms;
    struct check_target t = {
        .type = s->cfg->check.type,
        .address = s->cfg->primary.address,
        .port = s->cfg->primary.port,
        .path = s->cfg->check.path,
        .timeout_ms = s->cfg->check.timeout_ms,
    };
    cleanup_error vcr_error_t err = NULL;
    p->check = check_start(s->rc->base, &t, on_probe_done, s, &err);
    if (p->check == NULL)
        log_error("service %s: probe: %s", s->cfg->name, vcr_error_msg(err));
}

void probe_stop(struct probe *p)
{
    check_cancel(p->check);
    p->check = NULL;
}
