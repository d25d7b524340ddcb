/* A small etcd v3 client over its JSON gateway (POST /v3/..., etcd 3.4), on a
 * libevent loop: what leader election and the shared state need and nothing
 * more.  No gRPC: the gateway takes and gives JSON, int64s as decimal
 * strings, keys and values as base64 (docs/ha.md).
 *
 * Every request has a deadline.  A request that fails on one endpoint
 * (connection refused, timeout, a 5xx) is tried on the next one while its
 * deadline allows; the endpoint that answered is tried first next time.
 *
 * Callback contract (docs/conventions.md, "Callbacks"): every call that
 * returns 0 calls its callback exactly once, from the event loop, never from
 * inside the call; etcd_free() drops the requests still in flight (their
 * callbacks never run).  Strings handed to a callback are borrowed for the call. */
#ifndef VCR_HA_ETCD_H
#define VCR_HA_ETCD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;
struct etcd;

/* urls: "http://HOST:PORT" (copied).  timeout_ms: each request's deadline. */
struct etcd *etcd_new(struct event_base *base, const char *const *urls, size_t n_urls,
                      uint32_t timeout_ms, vcr_error_t *err);
void etcd_free(struct etcd *e);
/* The endpoint the next request goes to first. */
const char *etcd_endpoint(const struct etcd *e);

/* status: 0 or an errno-style value (ETIMEDOUT: no endpoint answered in time;
 * ECONNREFUSED; EIO: an answer that was not what etcd sends; ENOENT for a
 * lease etcd no longer has).  error: text for people, NULL on success. */

typedef void (*etcd_lease_cb)(int status, const char *error, int64_t lease_id, int64_t ttl_s,
                              void *opaque);
/* A new lease of ttl_s seconds (etcd may grant more: it rounds a TTL up to
 * 1.5 election timeouts). */
int etcd_lease_grant(struct etcd *e, int64_t ttl_s, etcd_lease_cb cb, void *opaque,
                     vcr_error_t *err);
/* One keepalive: the lease lives ttl_s more seconds from now; ENOENT when the
 * lease has expired or was revoked. */
int etcd_lease_keepalive(struct etcd *e, int64_t lease_id, etcd_lease_cb cb, void *opaque,
                         vcr_error_t *err);
/* Revoke (its keys go with it); cb may be NULL. */
int etcd_lease_revoke(struct etcd *e, int64_t lease_id, etcd_lease_cb cb, void *opaque,
                      vcr_error_t *err);

/* One key's value as etcd holds it. */
struct etcd_kv {
    bool found;
    const char *value; /* NUL-terminated copy of the value's bytes; NULL when !found */
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t lease; /* 0: none */
};
/* created: the put happened; kv: the holder's key when a put-if-absent found
 * one (after a created put-if-absent: found, create_revision = revision, value
 * NULL).  revision: the store's revision in the answer. */
typedef void (*etcd_kv_cb)(int status, const char *error, bool created, const struct etcd_kv *kv,
                           int64_t revision, void *opaque);
/* Put key = value with lease (0: none) only if the key does not exist (a txn
 * comparing its create_revision with 0). */
int etcd_put_if_absent(struct etcd *e, const char *key, const char *value, int64_t lease,
                       etcd_kv_cb cb, void *opaque, vcr_error_t *err);
/* Put key = value only if key's create_revision is guard_rev (guard_key: another
 * key, e.g. the leader key and its term; NULL: unconditional).  created says
 * whether the put happened. */
int etcd_put_guarded(struct etcd *e, const char *key, const char *value, const char *guard_key,
                     int64_t guard_rev, etcd_kv_cb cb, void *opaque, vcr_error_t *err);
/* Put key = value with lease (0: none), unconditionally. */
int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease, etcd_kv_cb cb,
             void *opaque, vcr_error_t *err);
int etcd_get(struct etcd *e, const char *key, etcd_kv_cb cb, void *opaque, vcr_error_t *err);

/* Every key under prefix: cb once per key (kv borrowed), then done. */
typedef void (*etcd_each_cb)(const char *key, const struct etcd_kv *kv, void *opaque);
typedef void (*etcd_done_cb)(int status, const char *error, void *opaque);
int etcd_get_prefix(struct etcd *e, const char *prefix, etcd_each_cb each, etcd_done_cb done,
                    void *opaque, vcr_error_t *err);
/* Delete key only if guard_key's create_revision is guard_rev (NULL: always). */
int etcd_delete_guarded(struct etcd *e, const char *key, const char *guard_key, int64_t guard_rev,
                        etcd_done_cb done, void *opaque, vcr_error_t *err);

/* One step of a shared state, in one txn: only while guard_key's
 * create_revision is guard_rev (the leader key and its term) and, when
 * record_key is not NULL, record_key does not exist yet, puts record_key =
 * record_value (a record written once) and state_key = state_value.
 * succeeded: both puts happened.  Otherwise guard_rev_now is guard_key's
 * create_revision now (0: no such key) and record (when record_key was given)
 * the record that exists already (found false: none). */
typedef void (*etcd_step_cb)(int status, const char *error, bool succeeded, int64_t guard_rev_now,
                             const struct etcd_kv *record, void *opaque);
int etcd_step_guarded(struct etcd *e, const char *guard_key, int64_t guard_rev,
                      const char *record_key, const char *record_value, const char *state_key,
                      const char *state_value, etcd_step_cb cb, void *opaque, vcr_error_t *err);

/* The endpoint's member and the raft leader it knows (POST /v3/maintenance/status;
 * leader_id 0: it knows none). */
typedef void (*etcd_status_cb)(int status, const char *error, uint64_t member_id,
                               uint64_t leader_id, void *opaque);
int etcd_member_status(struct etcd *e, etcd_status_cb cb, void *opaque, vcr_error_t *err);

#endif
