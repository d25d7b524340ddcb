/* The traffic switch of a recovery (docs/recovery.md, "Switch" and "Address
 * takeover"): what moves a service's clients from its primary to its
 * container once the container's port is open, after fencing.  One ops
 * struct per way, run in the order of switch_ways[] for each way the
 * service's `takeover` selects (crun's handler tables, keepalived's
 * check_api.h); recovery.c never names one.
 *
 *   address  the primary's address added to the container's interface and
 *            announced by a gratuitous ARP (its address6 too, announced by an
 *            unsolicited neighbour advertisement): clients holding the address (a
 *            cached DNS answer, a keep-alive connection) reach the container
 *            at once; needs the container on the primary's L2 segment.
 *   dns      the name's A record moved to the container's own address by an
 *            RFC 2136 UPDATE (src/dns): routed clients, new lookups. */
#ifndef VCR_SERVER_SWITCH_H
#define VCR_SERVER_SWITCH_H

#include <stdbool.h>

struct svc;

struct switch_ops {
    const char *name;
    unsigned bit;   /* its SERVICES_TAKEOVER_* bit */
    int done_phase; /* the enum rec_phase its take completes */
    /* Starts moving the traffic.  0: under way; it ends, from the loop, by
     * recovery_phase_done(s, done_phase, ...) or recovery_fail(s, ...).
     * -1: not started, s->error says why. */
    int (*take)(struct svc *s);
};

extern const struct switch_ops switch_address_ops;
extern const struct switch_ops switch_dns_ops;

/* The next way to take after phase `after` for this service, or NULL when
 * every way it selects is done (then the client confirmation follows). */
const struct switch_ops *switch_next(const struct svc *s, int after);

/* The address takeover's way back (failback, before the primary may answer
 * again): done(s, error) once, from the loop; error NULL when the container
 * holds the address no more.  -1: not started (s->error says why). */
typedef void (*switch_released_fn)(struct svc *s, const char *error);
int switch_address_release(struct svc *s, switch_released_fn done);
/* Whether the service's container holds (or may hold) its primary's address. */
bool switch_address_held(const struct svc *s);

#endif
