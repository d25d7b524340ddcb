/* Standby mode `warm` (standby_mode.h): the service's container runs in a
 * standby VM before any failure (provision.c keeps it so).  A recovery
 * counts it ready when a connected standby reports it running; otherwise it
 * is started or created there or on standby.fallback_host
 * (recovery_container.c).  Failback leaves it running for the next failure. */
#include "server/recovery/recovery_priv.h"
#include "server/recovery/standby_mode.h"

static void warm_ready(struct svc *s)
{
    recovery_container_ready(s, true);
}

const struct standby_mode_ops standby_warm_ops = {
    .name = "warm",
    .kind = "container",
    .container = true,
    .provisioned = true,
    .resume_without_standby_host = true,
    .ready = warm_ready,
    .tick = recovery_container_tick,
};
