/* Leader election of redundant vcr-server instances on an etcd lease
 * (docs/ha.md).
 *
 * Each instance holds a lease of lease_ttl_s seconds, kept alive every quarter
 * of it, and tries to create the leader key PREFIX/leader with that lease (a
 * txn: only if the key does not exist).  The one that created it leads; its
 * term is the key's create revision, which only grows in one etcd cluster, so
 * a newer leader always has a higher term: the fencing token carried by every
 * order (agents refuse an older term than the newest they saw).  The others
 * follow: they read the key every HA_POLL_MS and try to create it as soon as
 * it is gone (the lease lapsed or was revoked).
 *
 * A leader leads only while its last successful keepalive (counted from when
 * it was sent) is younger than the lease's TTL minus a margin: etcd cannot
 * have expired the lease before then.  ha_is_leader() checks that clock
 * itself, so a process that was stopped and resumes stops acting before it
 * handles anything else; it then revokes its old lease and starts over as a
 * candidate with a new one. */
#ifndef VCR_HA_HA_H
#define VCR_HA_HA_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct ha;

/* How often a follower reads the leader key (and a leader checks it still
 * holds it). */
#define HA_POLL_MS 100
/* The leader stops this share of the lease's TTL before etcd could expire it
 * (at least HA_MARGIN_MIN_MS): room for timer slack and a keepalive in flight. */
#define HA_MARGIN_MIN_MS 200

struct ha_options {
    const char *const *etcd; /* http://HOST:PORT endpoints (borrowed) */
    size_t n_etcd;
    uint32_t lease_ttl_s;
    const char *name;        /* this instance's name, unique among the servers */
    const char *agents_addr; /* HOST:PORT agents reach this instance's agent port at */
    const char *api_addr;    /* HOST:PORT of its HTTP API */
    const char *prefix;      /* keys live under it, e.g. "/vcr/" */
};

struct ha_watch {
    /* This instance now leads with term. */
    void (*elected)(void *opaque, int64_t term);
    /* It no longer does (why: for people).  Called before anything else runs
     * once the lease can no longer be counted on. */
    void (*deposed)(void *opaque, const char *why);
};

/* opts copied; watch borrowed for the life of ha. */
struct ha *ha_new(struct event_base *base, const struct ha_options *opts,
                  const struct ha_watch *watch, void *opaque, vcr_error_t *err);
/* Frees; a leader's lease lapses in etcd within its TTL. */
void ha_free(struct ha *ha);

/* Whether this instance leads now (its lease counted on); steps down first
 * (calling deposed) when the lease can no longer be counted on. */
bool ha_is_leader(struct ha *ha);
/* The term this instance leads with; 0 when it does not lead. */
int64_t ha_term(struct ha *ha);

/* The etcd client and the leader key (borrowed, for the life of ha): the
 * shared state is written with txns guarded by the key's create revision, the
 * term (etcd_step_guarded), so that a deposed leader's writes fail. */
struct etcd *ha_etcd(struct ha *ha);
const char *ha_leader_key(const struct ha *ha);

/* The leader as last read from etcd (NULL members: not known). */
struct ha_leader {
    const char *name;
    const char *agents_addr;
    const char *api_addr;
    int64_t term;
};
const struct ha_leader *ha_leader(const struct ha *ha);
/* {"name", "leader": bool, "term", "leader_name", "leader_agents", "leader_api",
 *  "etcd": current endpoint, "lease_ttl_s", "etcd_ok_ms_ago", "instances":
 *  [{name, agents, api}] (the live instances, each registered under
 *  PREFIX/instances/ with its lease; read every second)} (new reference). */
json_t *ha_status_json(struct ha *ha);

#endif
