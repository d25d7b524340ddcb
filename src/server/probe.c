/* The primary's health probe: one check every check.interval_ms, counted by
 * recovery.c.  Scheduling is driven by the engine's cron tick, so a probe
 * never overlaps the previous one of the same service. */
#include <stdlib.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/check.h"
#include "server/recovery/recovery_priv.h"

/* At most one log line per this long about inconclusive probes: a server out
 * of descriptors would otherwise write one per probe (megabytes in seconds). */
#define PROBE_INCONCLUSIVE_LOG_MS 10000

static void on_probe_done(enum check_outcome outcome, const char *why, const char *body, void *arg)
{
    struct svc *s = arg;
    (void)body;
    struct probe *p = &s->probe;
    p->check = NULL;
    if (outcome != CHECK_INCONCLUSIVE)
        p->latency_us = vcr_mono_us() - p->started_us;
    if (outcome == CHECK_INCONCLUSIVE) {
        /* Says nothing about the service: neither a failure nor a pass. */
        p->inconclusive++;
        int64_t now = vcr_mono_ms();
        if (p->inconclusive_logged_ms == 0 ||
            now - p->inconclusive_logged_ms >= PROBE_INCONCLUSIVE_LOG_MS) {
            log_warn(
                "service %s: probe inconclusive (a local error, not counted as a failure; %llu "
                "so far): %s",
                s->cfg->name, (unsigned long long)p->inconclusive, why ? why : "?");
            p->inconclusive_logged_ms = now;
        }
        return;
    }
    recovery_probe_result(s, outcome == CHECK_HEALTHY, why);
}

void probe_due(struct svc *s, int64_t now)
{
    struct probe *p = &s->probe;
    if (p->check || now < p->next_ms)
        return;
    p->next_ms = now + s->cfg->check.interval_ms;
    struct check_target t = recovery_primary_check(s, NULL);
    cleanup_error vcr_error_t err = NULL;
    p->started_us = vcr_mono_us();
    p->check = check_start(s->rc->base, &t, on_probe_done, s, &err);
    if (p->check == NULL)
        log_error("service %s: probe: %s", s->cfg->name, vcr_error_msg(err));
}

void probe_stop(struct probe *p)
{
    check_cancel(p->check);
    p->check = NULL;
}
