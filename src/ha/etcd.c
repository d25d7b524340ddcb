/* etcd v3 over its JSON gateway (etcd.h).  One HTTP connection per request:
 * the requests are few (a keepalive every few hundred ms) and a fresh
 * connection is the simplest way to move to another endpoint. */
#include "ha/etcd.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/hostport.h"
#include "common/log.h"

/* No attempt gets less than this, whatever is left of its request's deadline. */
#define ETCD_ATTEMPT_MIN_MS 50

struct endpoint {
    char *url; /* as given, for messages */
    char *host;
    uint16_t port;
};

struct etcd_req;
typedef void (*req_done_fn)(struct etcd_req *r, int status, const char *error, json_t *answer);

struct etcd_req {
    struct etcd *e;
    const char *path; /* static */
    char *body;
    int64_t deadline_ms; /* monotonic */
    size_t tries;
    struct event *start;            /* the first attempt, from the loop */
    struct evhttp_connection *conn; /* the attempt in flight, or NULL */
    struct evhttp_request *http;
    req_done_fn done;
    /* The caller's callback, one of them, and what it needs. */
    etcd_lease_cb lease_cb;
    etcd_kv_cb kv_cb;
    etcd_each_cb each_cb;
    etcd_done_cb done_cb;
    etcd_status_cb status_cb;
    etcd_step_cb step_cb;
    void *opaque;
    LIST_ENTRY(etcd_req) link;
};

struct etcd {
    struct event_base *base;
    struct endpoint *endpoints;
    size_t n;
    size_t cur; /* the endpoint tried first */
    uint32_t timeout_ms;
    LIST_HEAD(, etcd_req) reqs;
    /* Connections whose request has ended: freed from the loop, never inside
     * libevent's request callback (it still uses the connection after it). */
    struct evhttp_connection **done_conns;
    size_t n_done, cap_done;
    struct event *reap;
};

/* --- base64 (RFC 4648, with padding), as the gateway wants keys and values --- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = p[i] << 16 | (i + 1 < len ? p[i + 1] << 8 : 0) | (i + 2 < len ? p[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* NUL-terminated; NULL when s is not base64. */
static char *base64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4)
        return NULL;
    char *out = malloc(n / 4 * 3 + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *c = strchr(b64, s[i + j]);
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                pad++;
                v <<= 6;
            } else if (s[i + j] == '\0' || c == NULL || pad) {
                free(out);
                return NULL;
            } else {
                v = v << 6 | (unsigned)(c - b64);
            }
        }
        out[o++] = (char)(v >> 16);
        if (pad < 2)
            out[o++] = (char)(v >> 8 & 255);
        if (pad < 1)
            out[o++] = (char)(v & 255);
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* The gateway writes int64s as strings ("12"); absent means 0 (proto3). */
static int64_t int64_member(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* A kv object of a range answer into kv; the value is allocated in *value. */
static int parse_kv(json_t *obj, struct etcd_kv *kv, char **value)
{
    const char *v64 = json_string_value(json_object_get(obj, "value"));
    size_t len = 0;
    *value = base64_decode(v64 ? v64 : "", &len);
    if (*value == NULL)
        return -1;
    kv->found = true;
    kv->value = *value;
    kv->value_len = len;
    kv->create_revision = int64_member(obj, "create_revision");
    kv->mod_revision = int64_member(obj, "mod_revision");
    kv->lease = int64_member(obj, "lease");
    return 0;
}

/* --- requests --- */

static void req_free(struct etcd_req *r)
{
    LIST_REMOVE(r, link);
    if (r->start)
        event_free(r->start);
    free(r->body);
    free(r);
}

static void req_finish(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    r->done(r, status, error, answer);
    req_free(r);
}

static void attempt(struct etcd_req *r);

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct etcd *e = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < e->n_done; i++)
        evhttp_connection_free(e->done_conns[i]);
    e->n_done = 0;
}

static void conn_retire(struct etcd *e, struct evhttp_connection *conn)
{
    if (e->n_done == e->cap_done) {
        size_t cap = e->cap_done ? e->cap_done * 2 : 8;
        void *p = realloc(e->done_conns, cap * sizeof(*e->done_conns));
        if (p == NULL) {
            log_error("etcd: out of memory: an HTTP connection is leaked");
            return;
        }
        e->done_conns = p;
        e->cap_done = cap;
    }
    e->done_conns[e->n_done++] = conn;
    struct timeval zero = {0, 0};
    evtimer_add(e->reap, &zero);
}

static void on_http_done(struct evhttp_request *http, void *arg)
{
    struct etcd_req *r = arg;
    struct etcd *e = r->e;
    conn_retire(e, r->conn);
    r->conn = NULL;
    r->http = NULL;
    int code = http ? evhttp_request_get_response_code(http) : 0;
    const struct endpoint *ep = &e->endpoints[e->cur];
    if (code == 0 || code >= 500) {
        bool late = vcr_mono_ms() >= r->deadline_ms;
        log_debug("etcd %s: %s %s", ep->url, r->path,
                  code   ? "server error"
                  : late ? "timed out"
                         : "no answer");
        e->cur = (e->cur + 1) % e->n;
        if (!late && r->tries < e->n) {
            attempt(r);
            return;
        }
        char msg[256];
        snprintf(msg, sizeof(msg), "etcd %s: no endpoint answered within %u ms (last: %s)", r->path,
                 e->timeout_ms,
                 code   ? "a server error"
                 : late ? "timeout"
                        : "no answer");
        req_finish(r, late ? ETIMEDOUT : ECONNREFUSED, msg, NULL);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(http);
    size_t len = evbuffer_get_length(in);
    const char *text = (const char *)evbuffer_pullup(in, (ssize_t)len);
    json_error_t jerr;
    cleanup_json json_t *answer = text ? json_loadb(text, len, 0, &jerr) : NULL;
    if (!json_is_object(answer)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "etcd %s %s: HTTP %d with a body that is not a JSON object",
                 ep->url, r->path, code);
        req_finish(r, EIO, msg, NULL);
        return;
    }
    if (code != 200) {
        char msg[512];
        const char *why = json_string_value(json_object_get(answer, "message"));
        snprintf(msg, sizeof(msg), "etcd %s %s: HTTP %d: %s", ep->url, r->path, code,
                 why ? why : "(no message)");
        req_finish(r, EIO, msg, NULL);
        return;
    }
    req_finish(r, 0, NULL, answer);
}

static void attempt(struct etcd_req *r)
{
    struct etcd *e = r->e;
    const struct endpoint *ep = &e->endpoints[e->cur];
    /* The deadline is shared by the endpoints left to try: one member that
     * hangs (stopped, partitioned) must not eat it all. */
    int64_t left = (r->deadline_ms - vcr_mono_ms()) / (int64_t)(e->n - r->tries);
    r->tries++;
    if (left < ETCD_ATTEMPT_MIN_MS)
        left = ETCD_ATTEMPT_MIN_MS;
    struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
    r->conn = evhttp_connection_base_new(e->base, NULL, ep->host, ep->port);
    r->http = r->conn ? evhttp_request_new(on_http_done, r) : NULL;
    if (r->http == NULL) {
        if (r->conn)
            evhttp_connection_free(r->conn);
        r->conn = NULL;
        req_finish(r, ENOMEM, "etcd: out of memory", NULL);
        return;
    }
    evhttp_connection_set_timeout_tv(r->conn, &tv);
    evhttp_connection_set_retries(r->conn, 0);
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->http);
    char host_hdr[300];
    snprintf(host_hdr, sizeof(host_hdr), "%s:%u", ep->host, ep->port);
    evhttp_add_header(h, "Host", host_hdr);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(r->http), r->body, strlen(r->body));
    struct evhttp_connection *conn = r->conn;
    if (evhttp_make_request(conn, r->http, EVHTTP_REQ_POST, r->path) < 0) {
        /* libevent freed the request. */
        r->http = NULL;
        r->conn = NULL;
        evhttp_connection_free(conn);
        req_finish(r, ENOMEM, "etcd: cannot send a request", NULL);
    }
}

static void on_start(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    attempt(arg);
}

/* body borrowed.  The request starts from the loop, so that done never runs
 * inside the caller. */
static struct etcd_req *req_new(struct etcd *e, const char *path, json_t *body, req_done_fn done,
                                void *opaque, vcr_error_t *err)
{
    struct etcd_req *r = calloc(1, sizeof(*r));
    if (r == NULL || body == NULL || (r->body = json_dumps(body, JSON_COMPACT)) == NULL ||
        (r->start = evtimer_new(e->base, on_start, r)) == NULL) {
        if (r)
            free(r->body);
        free(r);
        vcr_error_make(err, ENOMEM, "etcd %s: out of memory", path);
        return NULL;
    }
    r->e = e;
    r->path = path;
    r->done = done;
    r->opaque = opaque;
    r->deadline_ms = vcr_mono_ms() + e->timeout_ms;
    LIST_INSERT_HEAD(&e->reqs, r, link);
    struct timeval zero = {0, 0};
    evtimer_add(r->start, &zero);
    return r;
}

/* --- leases --- */

static void lease_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    if (r->lease_cb == NULL)
        return;
    /* keepalive answers {"result": {...}}; grant and revoke answer the object. */
    json_t *result = json_object_get(answer, "result");
    json_t *obj = result ? result : answer;
    int64_t id = int64_member(obj, "ID");
    int64_t ttl = int64_member(obj, "TTL");
    if (status == 0 && strcmp(r->path, "/v3/lease/revoke") != 0 && ttl <= 0) {
        /* An expired or unknown lease: etcd answers without a TTL. */
        r->lease_cb(ENOENT, "etcd: the lease has expired or is unknown", id, 0, r->opaque);
        return;
    }
    r->lease_cb(status, error, id, ttl, r->opaque);
}

static int lease_request(struct etcd *e, const char *path, json_t *body, etcd_lease_cb cb,
                         void *opaque, vcr_error_t *err)
{
    struct etcd_req *r = req_new(e, path, body, lease_done, opaque, err);
    if (r == NULL)
        return -1;
    r->lease_cb = cb;
    return 0;
}

int etcd_lease_grant(struct etcd *e, int64_t ttl_s, etcd_lease_cb cb, void *opaque,
                     vcr_error_t *err)
{
    cleanup_json json_t *body = json_pack("{s:I}", "TTL", (json_int_t)ttl_s);
    return lease_request(e, "/v3/lease/grant", body, cb, opaque, err);
}

static json_t *id_body(int64_t id)
{
    char s[24];
    snprintf(s, sizeof(s), "%lld", (long long)id);
    return json_pack("{s:s}", "ID", s);
}

int etcd_lease_keepalive(struct etcd *e, int64_t lease_id, etcd_lease_cb cb, void *opaque,
                         vcr_error_t *err)
{
    cleanup_json json_t *body = id_body(lease_id);
    return lease_request(e, "/v3/lease/keepalive", body, cb, opaque, err);
}

int etcd_lease_revoke(struct etcd *e, int64_t lease_id, etcd_lease_cb cb, void *opaque,
                      vcr_error_t *err)
{
    cleanup_json json_t *body = id_body(lease_id);
    return lease_request(e, "/v3/lease/revoke", body, cb, opaque, err);
}

/* --- keys --- */

static json_t *b64_string(const char *s, size_t len)
{
    cleanup_free char *enc = base64_encode(s, len);
    return enc ? json_string(enc) : NULL;
}

static json_t *int64_string(int64_t v)
{
    char s[24];
    snprintf(s, sizeof(s), "%lld", (long long)v);
    return json_string(s);
}

/* The first kv of a range response (an object with "kvs"), if any. */
static void kv_from_range(json_t *range, struct etcd_kv *kv, char **value, int *bad)
{
    json_t *first = json_array_get(json_object_get(range, "kvs"), 0);
    if (first && parse_kv(first, kv, value) < 0)
        *bad = 1;
}

static void kv_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    struct etcd_kv kv = {0};
    cleanup_free char *value = NULL;
    if (status) {
        r->kv_cb(status, error, false, &kv, 0, r->opaque);
        return;
    }
    int64_t revision = int64_member(json_object_get(answer, "header"), "revision");
    bool txn = json_object_get(answer, "responses") != NULL || strcmp(r->path, "/v3/kv/txn") == 0;
    bool created = false;
    int bad = 0;
    if (txn) {
        created = json_is_true(json_object_get(answer, "succeeded"));
        /* A failed compare answers with the failure branch: the key's range. */
        json_t *resp = json_array_get(json_object_get(answer, "responses"), 0);
        json_t *range = json_object_get(resp, "response_range");
        if (range)
            kv_from_range(range, &kv, &value, &bad);
        if (created) {
            kv.found = true;
            kv.create_revision = kv.mod_revision = revision;
        }
    } else if (strcmp(r->path, "/v3/kv/put") == 0) {
        created = true;
    } else {
        kv_from_range(answer, &kv, &value, &bad);
    }
    if (bad) {
        r->kv_cb(EIO, "etcd: a value that is not base64", false, &kv, revision, r->opaque);
        return;
    }
    r->kv_cb(0, NULL, created, &kv, revision, r->opaque);
}

static json_t *compare_create(const char *key, int64_t rev)
{
    return json_pack("{s:o, s:s, s:s, s:o}", "key", b64_string(key, strlen(key)), "target",
                     "CREATE", "result", "EQUAL", "create_revision", int64_string(rev));
}

static json_t *range_of(const char *key)
{
    return json_pack("{s:{s:o}}", "request_range", "key", b64_string(key, strlen(key)));
}

static int txn_put(struct etcd *e, const char *key, const char *value, int64_t lease,
                   const char *guard_key, int64_t guard_rev, etcd_kv_cb cb, void *opaque,
                   vcr_error_t *err)
{
    json_t *put = json_pack("{s:o, s:o}", "key", b64_string(key, strlen(key)), "value",
                            b64_string(value, strlen(value)));
    if (put && lease)
        json_object_set_new(put, "lease", int64_string(lease));
    cleanup_json json_t *body =
        json_pack("{s:[o], s:[{s:o}], s:[o]}", "compare", compare_create(guard_key, guard_rev),
                  "success", "request_put", put, "failure", range_of(key));
    struct etcd_req *r = req_new(e, "/v3/kv/txn", body, kv_done, opaque, err);
    if (r == NULL)
        return -1;
    r->kv_cb = cb;
    return 0;
}

int etcd_put_if_absent(struct etcd *e, const char *key, const char *value, int64_t lease,
                       etcd_kv_cb cb, void *opaque, vcr_error_t *err)
{
    return txn_put(e, key, value, lease, key, 0, cb, opaque, err);
}

int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease, etcd_kv_cb cb,
             void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *body = json_pack("{s:o, s:o}", "key", b64_string(key, strlen(key)),
                                          "value", b64_string(value, strlen(value)));
    if (body && lease)
        json_object_set_new(body, "lease", int64_string(lease));
    struct etcd_req *r = req_new(e, "/v3/kv/put", body, kv_done, opaque, err);
    if (r == NULL)
        return -1;
    r->kv_cb = cb;
    return 0;
}

int etcd_put_guarded(struct etcd *e, const char *key, const char *value, const char *guard_key,
                     int64_t guard_rev, etcd_kv_cb cb, void *opaque, vcr_error_t *err)
{
    if (guard_key)
        return txn_put(e, key, value, 0, guard_key, guard_rev, cb, opaque, err);
    return etcd_put(e, key, value, 0, cb, opaque, err);
}

int etcd_get(struct etcd *e, const char *key, etcd_kv_cb cb, void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *body = json_pack("{s:o}", "key", b64_string(key, strlen(key)));
    struct etcd_req *r = req_new(e, "/v3/kv/range", body, kv_done, opaque, err);
    if (r == NULL)
        return -1;
    r->kv_cb = cb;
    return 0;
}

static void prefix_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    if (status == 0) {
        size_t i;
        json_t *obj;
        json_array_foreach(json_object_get(answer, "kvs"), i, obj)
        {
            struct etcd_kv kv = {0};
            cleanup_free char *value = NULL;
            size_t klen = 0;
            const char *k64 = json_string_value(json_object_get(obj, "key"));
            cleanup_free char *key = base64_decode(k64 ? k64 : "", &klen);
            if (key == NULL || parse_kv(obj, &kv, &value) < 0) {
                r->done_cb(EIO, "etcd: a key or value that is not base64", r->opaque);
                return;
            }
            r->each_cb(key, &kv, r->opaque);
        }
    }
    r->done_cb(status, error, r->opaque);
}

int etcd_get_prefix(struct etcd *e, const char *prefix, etcd_each_cb each, etcd_done_cb done,
                    void *opaque, vcr_error_t *err)
{
    size_t n = strlen(prefix);
    cleanup_free char *end = strdup(prefix);
    if (end == NULL || n == 0)
        return vcr_error_make(err, EINVAL, "etcd: an empty prefix");
    end[n - 1]++; /* keys in [prefix, prefix with its last byte + 1) */
    cleanup_json json_t *body =
        json_pack("{s:o, s:o}", "key", b64_string(prefix, n), "range_end", b64_string(end, n));
    struct etcd_req *r = req_new(e, "/v3/kv/range", body, prefix_done, opaque, err);
    if (r == NULL)
        return -1;
    r->each_cb = each;
    r->done_cb = done;
    return 0;
}

static void step_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    struct etcd_kv guard = {0}, record = {0};
    cleanup_free char *guard_value = NULL, *record_value = NULL;
    if (status) {
        r->step_cb(status, error, false, 0, &record, r->opaque);
        return;
    }
    bool succeeded = json_is_true(json_object_get(answer, "succeeded"));
    int bad = 0;
    if (!succeeded) {
        /* The failure branch: the guard's range, then the record's (if asked). */
        json_t *responses = json_object_get(answer, "responses");
        json_t *g = json_object_get(json_array_get(responses, 0), "response_range");
        json_t *rec = json_object_get(json_array_get(responses, 1), "response_range");
        if (g)
            kv_from_range(g, &guard, &guard_value, &bad);
        if (rec)
            kv_from_range(rec, &record, &record_value, &bad);
    }
    if (bad) {
        r->step_cb(EIO, "etcd: a value that is not base64", false, 0, &record, r->opaque);
        return;
    }
    r->step_cb(0, NULL, succeeded, guard.found ? guard.create_revision : 0, &record, r->opaque);
}

static json_t *put_of(const char *key, const char *value)
{
    return json_pack("{s:{s:o, s:o}}", "request_put", "key", b64_string(key, strlen(key)), "value",
                     b64_string(value, strlen(value)));
}

int etcd_step_guarded(struct etcd *e, const char *guard_key, int64_t guard_rev,
                      const char *record_key, const char *record_value, const char *state_key,
                      const char *state_value, etcd_step_cb cb, void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *body =
        json_pack("{s:[o], s:[o], s:[o]}", "compare", compare_create(guard_key, guard_rev),
                  "success", put_of(state_key, state_value), "failure", range_of(guard_key));
    if (body && record_key) {
        json_array_append_new(json_object_get(body, "compare"), compare_create(record_key, 0));
        json_array_insert_new(json_object_get(body, "success"), 0,
                              put_of(record_key, record_value));
        json_array_append_new(json_object_get(body, "failure"), range_of(record_key));
    }
    struct etcd_req *r = req_new(e, "/v3/kv/txn", body, step_done, opaque, err);
    if (r == NULL)
        return -1;
    r->step_cb = cb;
    return 0;
}

static void delete_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    (void)answer;
    if (r->done_cb)
        r->done_cb(status, error, r->opaque);
}

int etcd_delete_guarded(struct etcd *e, const char *key, const char *guard_key, int64_t guard_rev,
                        etcd_done_cb done, void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *del =
        json_pack("{s:{s:o}}", "request_delete_range", "key", b64_string(key, strlen(key)));
    cleanup_json json_t *body = NULL;
    const char *path = "/v3/kv/txn";
    if (guard_key) {
        body = json_pack("{s:[o], s:[O]}", "compare", compare_create(guard_key, guard_rev),
                         "success", del);
    } else {
        path = "/v3/kv/deleterange";
        body = json_pack("{s:o}", "key", b64_string(key, strlen(key)));
    }
    struct etcd_req *r = req_new(e, path, body, delete_done, opaque, err);
    if (r == NULL)
        return -1;
    r->done_cb = done;
    return 0;
}

static void status_done(struct etcd_req *r, int status, const char *error, json_t *answer)
{
    /* uint64 ids, as decimal strings. */
    const char *member =
        json_string_value(json_object_get(json_object_get(answer, "header"), "member_id"));
    const char *leader = json_string_value(json_object_get(answer, "leader"));
    r->status_cb(status, error, member ? strtoull(member, NULL, 10) : 0,
                 leader ? strtoull(leader, NULL, 10) : 0, r->opaque);
}

int etcd_member_status(struct etcd *e, etcd_status_cb cb, void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *body = json_object();
    struct etcd_req *r = req_new(e, "/v3/maintenance/status", body, status_done, opaque, err);
    if (r == NULL)
        return -1;
    r->status_cb = cb;
    return 0;
}

/* --- the client --- */

static int parse_url(const char *url, struct endpoint *ep, vcr_error_t *err)
{
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return vcr_error_make(err, EINVAL, "etcd endpoint `%s` is not http://HOST:PORT", url);
    const char *hp = url + sizeof(scheme) - 1;
    cleanup_free char *copy = strdup(hp);
    if (copy == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    size_t n = strlen(copy);
    if (n && copy[n - 1] == '/')
        copy[n - 1] = '\0';
    if (vcr_parse_host_port(copy, &ep->host, &ep->port, err) < 0)
        return vcr_error_wrap(err, "etcd endpoint `%s`", url);
    if ((ep->url = strdup(url)) == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    return 0;
}

struct etcd *etcd_new(struct event_base *base, const char *const *urls, size_t n_urls,
                      uint32_t timeout_ms, vcr_error_t *err)
{
    if (n_urls == 0)
        return vcr_error_make(err, EINVAL, "etcd: no endpoint"), NULL;
    struct etcd *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->endpoints = calloc(n_urls, sizeof(*e->endpoints))) == NULL) {
        free(e);
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    }
    e->base = base;
    e->timeout_ms = timeout_ms;
    LIST_INIT(&e->reqs);
    if ((e->reap = evtimer_new(base, on_reap, e)) == NULL) {
        etcd_free(e);
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    }
    for (size_t i = 0; i < n_urls; i++, e->n++) {
        if (parse_url(urls[i], &e->endpoints[i], err) < 0) {
            etcd_free(e);
            return NULL;
        }
    }
    return e;
}

const char *etcd_endpoint(const struct etcd *e)
{
    return e->endpoints[e->cur].url;
}

void etcd_free(struct etcd *e)
{
    if (e == NULL)
        return;
    while (!LIST_EMPTY(&e->reqs)) {
        struct etcd_req *r = LIST_FIRST(&e->reqs);
        if (r->conn)
            evhttp_connection_free(r->conn); /* its request goes with it, unanswered */
        r->conn = NULL;
        req_free(r);
    }
    if (e->reap) {
        on_reap(-1, 0, e);
        event_free(e->reap);
    }
    free(e->done_conns);
    for (size_t i = 0; i < e->n; i++) {
        free(e->endpoints[i].url);
        free(e->endpoints[i].host);
    }
    free(e->endpoints);
    free(e);
}
