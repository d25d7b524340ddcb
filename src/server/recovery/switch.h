/* The traffic switch of a recovery (docs/recovery.md, "Switch" and "Address
 * takeover"): what moves a service's clients from its primary to its
 * container once the container's port is open, after fencing.  One ops
 * struct per way, run in the order of switch_ways[] for each way the
 * service selects (its `takeover`, or a section of its own), each completing
 * its phase (crun's handler tables, keepalived's check_api.h); recovery.c
 * never names one.
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

/* The way back of a way (failback): done(s, error) once, from the loop;
 * error NULL when it is back. */
typedef void (*switch_released_fn)(struct svc *s, const char *error);

struct switch_ops {
    const char *name;
    /* Whether the service uses this way. */
    bool (*selected)(const struct svc *s);
    int done_phase; /* the enum rec_phase its take completes */
    /* Starts moving the traffic.  0: under way; it ends, from the loop, by
     * recovery_phase_done(s, done_phase, ...) or recovery_fail(s, ...).
     * -1: not started, s->error says why. */
    int (*take)(struct svc *s);
    /* Optional: abandons a take or give_back in flight (its callback never
     * runs); s->switch_io is the way's own state while one is. */
    void (*cancel)(struct svc *s);
    /* Optional: failback, once the name points at the primary again and
     * before the standby is stopped: moves what take moved back.  As take;
     * it ends by done(s, error). */
    int (*give_back)(struct svc *s, switch_released_fn done);
};

extern const struct switch_ops switch_address_ops;
extern const struct switch_ops switch_dns_ops;
extern const struct switch_ops switch_hook_ops;

/* The next way to take after phase `after` for this service, or NULL when
 * every way it selects is done (then the client confirmation follows). */
const struct switch_ops *switch_next(const struct svc *s, int after);
/* Failback: the give_back of each way the service selects, in order; done(s,
 * error) once, from the loop (error: the first that failed; the rest do not
 * run). */
void switch_give_back(struct svc *s, switch_released_fn done);
/* Abandons the way in flight (s->switch_way), if any. */
void switch_cancel(struct svc *s);

/* The address takeover's way back (failback, before the primary may answer
 * again): done(s, error) once, from the loop; error NULL when the container
 * holds the address no more.  -1: not started (s->error says why). */
int switch_address_release(struct svc *s, switch_released_fn done);
/* Whether the service's container holds (or may hold) its primary's address. */
bool switch_address_held(const struct svc *s);

#endif
