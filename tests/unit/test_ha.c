/* The etcd client and leader election against real etcd (Debian's
 * etcd-server, started here on loopback ports: one member, or three for the
 * member-down case).  Waits run the event loop until a condition holds or a
 * deadline passes; nothing sleeps a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent_conn.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/etcd.h"
#include "ha/ha.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate.h"
#include "server/recovery.h"
#include "server/server.h"
#include "config/server_config.h"
#include "fake_dns.h"

#define ETCD_MAX 3

struct etcd_member {
    pid_t pid;
    uint16_t client_port, peer_port;
    char url[64];
};

struct cluster {
    char dir[64];
    size_t n;
    struct etcd_member m[ETCD_MAX];
    const char *urls[ETCD_MAX];
    uint32_t lease_ttl_s; /* of the instances on it; 0: 1 s */
};

static struct event_base *base;
/* The test's cluster, stopped by the teardown even when an assertion failed. */
static struct cluster *running;

/* A port the kernel says is free now (closed again: etcd binds it). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void run_until(bool *flag, int64_t ms)
{
    int64_t deadline = vcr_mono_ms() + ms;
    while (!*flag && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
}

static void member_start(struct cluster *c, size_t i, const char *initial)
{
    struct etcd_member *m = &c->m[i];
    char name[16], data[128], log[128], peer[64];
    snprintf(name, sizeof(name), "m%zu", i);
    snprintf(data, sizeof(data), "%s/%s", c->dir, name);
    snprintf(log, sizeof(log), "%s/%s.log", c->dir, name);
    snprintf(peer, sizeof(peer), "http://127.0.0.1:%u", m->peer_port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        freopen(log, "a", stdout);
        freopen(log, "a", stderr);
        /* A 300 ms election timeout lets etcd grant 1 s leases and elect a new
         * raft leader well within one (docs/ha.md). */
        execlp("etcd", "etcd", "--name", name, "--data-dir", data, "--listen-client-urls", m->url,
               "--advertise-client-urls", m->url, "--listen-peer-urls", peer,
               "--initial-advertise-peer-urls", peer, "--initial-cluster", initial,
               "--initial-cluster-state", "new", "--heartbeat-interval", "30", "--election-timeout",
               "300", (char *)NULL);
        _exit(127);
    }
    m->pid = pid;
}

static void on_ready_grant(int status, const char *error, int64_t id, int64_t ttl, void *opaque)
{
    (void)error;
    (void)id;
    (void)ttl;
    if (status == 0)
        *(bool *)opaque = true;
}

/* Starts n members and waits until the cluster grants a lease. */
static void cluster_start(struct cluster *c, size_t n)
{
    memset(c, 0, sizeof(*c));
    running = c;
    snprintf(c->dir, sizeof(c->dir), "/tmp/vcr-test-ha-XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    c->n = n;
    char initial[512] = "";
    for (size_t i = 0; i < n; i++) {
        c->m[i].client_port = free_port();
        c->m[i].peer_port = free_port();
        snprintf(c->m[i].url, sizeof(c->m[i].url), "http://127.0.0.1:%u", c->m[i].client_port);
        c->urls[i] = c->m[i].url;
        size_t l = strlen(initial);
        snprintf(initial + l, sizeof(initial) - l, "%sm%zu=http://127.0.0.1:%u", i ? "," : "", i,
                 c->m[i].peer_port);
    }
    for (size_t i = 0; i < n; i++)
        member_start(c, i, initial);
    vcr_error_t err = NULL;
    struct etcd *e = etcd_new(base, c->urls, n, 1000, &err);
    assert_non_null(e);
    int64_t deadline = vcr_mono_ms() + 30000;
    bool ready = false;
    while (!ready && vcr_mono_ms() < deadline) {
        bool answered = false;
        assert_int_equal(etcd_lease_grant(e, 5, on_ready_grant, &ready, &err), 0);
        (void)answered;
        int64_t next = vcr_mono_ms() + 1100;
        run_until(&ready, next - vcr_mono_ms());
    }
    etcd_free(e);
    if (!ready)
        fail_msg("etcd (%zu member(s)) did not answer within 30 s; logs in %s", n, c->dir);
}

static void cluster_stop(struct cluster *c)
{
    running = NULL;
    for (size_t i = 0; i < c->n; i++) {
        if (c->m[i].pid > 0) {
            kill(c->m[i].pid, SIGCONT);
            kill(c->m[i].pid, SIGKILL);
            waitpid(c->m[i].pid, NULL, 0);
        }
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
    assert_int_equal(system(cmd), 0);
}

/* --- the client --- */

struct answer {
    bool done;
    int status;
    int64_t id, ttl;
    bool created;
    bool found;
    char value[256];
    int64_t create_revision, lease, revision;
    int keys;
};

static void on_lease(int status, const char *error, int64_t id, int64_t ttl, void *opaque)
{
    struct answer *a = opaque;
    (void)error;
    a->done = true;
    a->status = status;
    a->id = id;
    a->ttl = ttl;
}

static void on_kv(int status, const char *error, bool created, const struct etcd_kv *kv,
                  int64_t revision, void *opaque)
{
    struct answer *a = opaque;
    (void)error;
    a->done = true;
    a->status = status;
    a->created = created;
    a->found = kv->found;
    snprintf(a->value, sizeof(a->value), "%s", kv->value ? kv->value : "");
    a->create_revision = kv->create_revision;
    a->lease = kv->lease;
    a->revision = revision;
}

static void on_each(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct answer *a = opaque;
    (void)key;
    (void)kv;
    a->keys++;
}

static void on_done(int status, const char *error, void *opaque)
{
    struct answer *a = opaque;
    (void)error;
    a->done = true;
    a->status = status;
}

struct step_answer {
    bool done;
    int status;
    bool succeeded, record_found;
    int64_t guard_rev_now;
    char record[256];
};

static void on_step(int status, const char *error, bool succeeded, int64_t guard_rev_now,
                    const struct etcd_kv *record, void *opaque)
{
    struct step_answer *a = opaque;
    (void)error;
    a->done = true;
    a->status = status;
    a->succeeded = succeeded;
    a->guard_rev_now = guard_rev_now;
    a->record_found = record->found;
    snprintf(a->record, sizeof(a->record), "%s", record->value ? record->value : "");
}

#define WAIT(a)                                                                                    \
    do {                                                                                           \
        run_until(&(a).done, 5000);                                                                \
        assert_true((a).done);                                                                     \
    } while (0)

static void test_etcd_client(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    vcr_error_t err = NULL;
    struct etcd *e = etcd_new(base, c.urls, 1, 1000, &err);
    assert_non_null(e);

    struct answer grant = {0}, ka = {0}, put = {0}, again = {0}, get = {0};
    assert_int_equal(etcd_lease_grant(e, 5, on_lease, &grant, &err), 0);
    assert_false(grant.done); /* never from inside the call */
    WAIT(grant);
    assert_int_equal(grant.status, 0);
    assert_true(grant.id != 0);
    assert_int_equal(grant.ttl, 5);

    assert_int_equal(etcd_lease_keepalive(e, grant.id, on_lease, &ka, &err), 0);
    WAIT(ka);
    assert_int_equal(ka.status, 0);
    assert_int_equal(ka.ttl, 5);

    /* Put-if-absent: the first creates the key with the lease, the second finds it. */
    assert_int_equal(
        etcd_put_if_absent(e, "/t/leader", "{\"name\":\"a\"}", grant.id, on_kv, &put, &err), 0);
    WAIT(put);
    assert_int_equal(put.status, 0);
    assert_true(put.created);
    assert_true(put.create_revision > 0);
    assert_int_equal(etcd_put_if_absent(e, "/t/leader", "other", 0, on_kv, &again, &err), 0);
    WAIT(again);
    assert_int_equal(again.status, 0);
    assert_false(again.created);
    assert_true(again.found);
    assert_string_equal(again.value, "{\"name\":\"a\"}");
    assert_int_equal(again.create_revision, put.create_revision);
    assert_int_equal(again.lease, grant.id);

    /* A put guarded by the leader key's create revision (a term). */
    struct answer guarded = {0}, stale = {0};
    assert_int_equal(etcd_put_guarded(e, "/t/state/s1", "phase=1", "/t/leader", put.create_revision,
                                      on_kv, &guarded, &err),
                     0);
    WAIT(guarded);
    assert_int_equal(guarded.status, 0);
    assert_true(guarded.created);
    assert_int_equal(etcd_put_guarded(e, "/t/state/s1", "phase=2", "/t/leader",
                                      put.create_revision - 1, on_kv, &stale, &err),
                     0);
    WAIT(stale);
    assert_int_equal(stale.status, 0);
    assert_false(stale.created);
    assert_int_equal(etcd_get(e, "/t/state/s1", on_kv, &get, &err), 0);
    WAIT(get);
    assert_true(get.found);
    assert_string_equal(get.value, "phase=1");

    /* A step of the shared state: a record written once and the state, both
     * only under the term.  Again: refused, the record that exists in the
     * answer (a lost answer's retry is recognized by it).  An older term:
     * refused, the term that leads in the answer, nothing written. */
    struct step_answer st1 = {0}, st2 = {0}, st3 = {0}, st4 = {0};
    int64_t term = put.create_revision;
    assert_int_equal(etcd_step_guarded(e, "/t/leader", term, "/u/rec/1/fenced", "{\"term\":1}",
                                       "/u/svc/web1", "fenced", on_step, &st1, &err),
                     0);
    WAIT(st1);
    assert_int_equal(st1.status, 0);
    assert_true(st1.succeeded);
    assert_int_equal(etcd_step_guarded(e, "/t/leader", term, "/u/rec/1/fenced", "{\"term\":2}",
                                       "/u/svc/web1", "again", on_step, &st2, &err),
                     0);
    WAIT(st2);
    assert_int_equal(st2.status, 0);
    assert_false(st2.succeeded);
    assert_int_equal(st2.guard_rev_now, term);
    assert_true(st2.record_found);
    assert_string_equal(st2.record, "{\"term\":1}");
    assert_int_equal(etcd_step_guarded(e, "/t/leader", term - 1, "/u/rec/1/ready", "{}",
                                       "/u/svc/web1", "stale", on_step, &st3, &err),
                     0);
    WAIT(st3);
    assert_false(st3.succeeded);
    assert_int_equal(st3.guard_rev_now, term);
    assert_false(st3.record_found);
    /* The state alone (no record) under the term. */
    assert_int_equal(etcd_step_guarded(e, "/t/leader", term, NULL, NULL, "/u/svc/web1", "state",
                                       on_step, &st4, &err),
                     0);
    WAIT(st4);
    assert_true(st4.succeeded);
    struct answer svc = {0}, ready = {0};
    assert_int_equal(etcd_get(e, "/u/svc/web1", on_kv, &svc, &err), 0);
    WAIT(svc);
    assert_string_equal(svc.value, "state");
    assert_int_equal(etcd_get(e, "/u/rec/1/ready", on_kv, &ready, &err), 0);
    WAIT(ready);
    assert_false(ready.found);

    struct answer list = {0};
    assert_int_equal(etcd_get_prefix(e, "/t/", on_each, on_done, &list, &err), 0);
    WAIT(list);
    assert_int_equal(list.status, 0);
    assert_int_equal(list.keys, 2);

    /* Revoking the lease takes the leader key with it; a keepalive then says ENOENT. */
    struct answer revoke = {0}, gone = {0}, ka2 = {0};
    assert_int_equal(etcd_lease_revoke(e, grant.id, on_lease, &revoke, &err), 0);
    WAIT(revoke);
    assert_int_equal(revoke.status, 0);
    assert_int_equal(etcd_get(e, "/t/leader", on_kv, &gone, &err), 0);
    WAIT(gone);
    assert_int_equal(gone.status, 0);
    assert_false(gone.found);
    assert_int_equal(etcd_lease_keepalive(e, grant.id, on_lease, &ka2, &err), 0);
    WAIT(ka2);
    assert_int_equal(ka2.status, ENOENT);

    struct answer del = {0}, after = {0};
    assert_int_equal(etcd_delete_guarded(e, "/t/state/s1", NULL, 0, on_done, &del, &err), 0);
    WAIT(del);
    assert_int_equal(del.status, 0);
    assert_int_equal(etcd_get(e, "/t/state/s1", on_kv, &after, &err), 0);
    WAIT(after);
    assert_false(after.found);

    /* A request still in flight when the client is freed never answers. */
    struct answer dropped = {0};
    assert_int_equal(etcd_get(e, "/t/x", on_kv, &dropped, &err), 0);
    etcd_free(e);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_false(dropped.done);
    cluster_stop(&c);
}

/* One endpoint refuses, another answers: the request goes on to it; an
 * endpoint that accepts and never answers ends in ETIMEDOUT. */
static void test_etcd_endpoints(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%u", free_port());
    const char *urls[] = {dead, c.urls[0]};
    vcr_error_t err = NULL;
    struct etcd *e = etcd_new(base, urls, 2, 1000, &err);
    assert_non_null(e);
    struct answer get = {0};
    assert_int_equal(etcd_get(e, "/t/none", on_kv, &get, &err), 0);
    WAIT(get);
    assert_int_equal(get.status, 0);
    assert_false(get.found);
    assert_string_equal(etcd_endpoint(e), c.urls[0]);
    etcd_free(e);

    /* A listening socket that never answers. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char silent[64];
    snprintf(silent, sizeof(silent), "http://127.0.0.1:%u", ntohs(sa.sin_port));
    const char *one[] = {silent};
    e = etcd_new(base, one, 1, 300, &err);
    assert_non_null(e);
    struct answer late = {0};
    assert_int_equal(etcd_get(e, "/t/none", on_kv, &late, &err), 0);
    WAIT(late);
    assert_int_equal(late.status, ETIMEDOUT);
    etcd_free(e);
    close(fd);

    /* Bad endpoints are named. */
    const char *bad[] = {"https://127.0.0.1:1"};
    assert_null(etcd_new(base, bad, 1, 1000, &err));
    assert_non_null(strstr(vcr_error_msg(err), "https://127.0.0.1:1"));
    vcr_error_release(&err);
    cluster_stop(&c);
}

struct member_status {
    bool done;
    uint64_t member, leader;
};

static void on_status(int status, const char *error, uint64_t member, uint64_t leader, void *opaque)
{
    struct member_status *m = opaque;
    (void)error;
    m->done = true;
    if (status == 0) {
        m->member = member;
        m->leader = leader;
    }
}

/* The index of the member that is the raft leader now. */
static size_t raft_leader(struct cluster *c)
{
    struct member_status st[ETCD_MAX] = {0};
    vcr_error_t err = NULL;
    for (size_t i = 0; i < c->n; i++) {
        struct etcd *e = etcd_new(base, &c->urls[i], 1, 1000, &err);
        assert_non_null(e);
        assert_int_equal(etcd_member_status(e, on_status, &st[i], &err), 0);
        run_until(&st[i].done, 2000);
        etcd_free(e);
    }
    for (size_t i = 0; i < c->n; i++)
        if (st[i].member && st[i].member == st[0].leader)
            return i;
    fail_msg("no raft leader found among %zu members", c->n);
    return 0;
}

/* --- election --- */

struct instance {
    struct ha *ha;
    int elected, deposed;
    int64_t term;
};

static void on_elected(void *opaque, int64_t term)
{
    struct instance *i = opaque;
    i->elected++;
    i->term = term;
}

static void on_deposed(void *opaque, const char *why)
{
    struct instance *i = opaque;
    (void)why;
    i->deposed++;
}

static const struct ha_watch watch = {.elected = on_elected, .deposed = on_deposed};

static struct ha *instance_new(struct cluster *c, size_t n_urls, const char *name,
                               struct instance *i)
{
    char agents[32];
    snprintf(agents, sizeof(agents), "127.0.0.1:%u", name[1] == 'a' ? 7001 : 7002);
    struct ha_options o = {.etcd = c->urls,
                           .n_etcd = n_urls,
                           .lease_ttl_s = c->lease_ttl_s ? c->lease_ttl_s : 1,
                           .name = name,
                           .agents_addr = agents,
                           .api_addr = "127.0.0.1:8080",
                           .prefix = "/vcr-test/"};
    vcr_error_t err = NULL;
    struct ha *ha = ha_new(base, &o, &watch, i, &err);
    assert_non_null(ha);
    i->ha = ha;
    return ha;
}

static bool one_leads(struct instance *a, struct instance *b)
{
    return (a->ha && ha_is_leader(a->ha)) || (b->ha && ha_is_leader(b->ha));
}

static void run_until_leader(struct instance *a, struct instance *b, int64_t ms)
{
    int64_t deadline = vcr_mono_ms() + ms;
    while (!one_leads(a, b) && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_true(one_leads(a, b));
}

/* Two instances: one leads, the other follows and knows who leads; the leader
 * vanishes without a word (its process died): the follower leads once the lease
 * lapses, with a higher term. */
static void test_ha_election_and_takeover(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    struct instance a = {0}, b = {0};
    instance_new(&c, 1, "sa", &a);
    run_until_leader(&a, &b, 5000);
    instance_new(&c, 1, "sb", &b);
    /* b follows once it has read the key. */
    int64_t deadline = vcr_mono_ms() + 5000;
    while ((ha_leader(b.ha)->name == NULL || strcmp(ha_leader(b.ha)->name, "sa") != 0) &&
           vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_true(ha_is_leader(a.ha));
    assert_false(ha_is_leader(b.ha));
    assert_int_equal(a.elected, 1);
    assert_int_equal(ha_term(a.ha), a.term);
    assert_int_equal(ha_term(b.ha), 0);
    assert_string_equal(ha_leader(b.ha)->name, "sa");
    assert_string_equal(ha_leader(b.ha)->agents_addr, "127.0.0.1:7001");
    assert_int_equal(ha_leader(b.ha)->term, a.term);
    json_t *st = ha_status_json(b.ha);
    assert_false(json_is_true(json_object_get(st, "leader")));
    assert_string_equal(json_string_value(json_object_get(st, "leader_name")), "sa");
    json_decref(st);

    /* The leader dies: nothing revokes its lease. */
    int64_t old_term = a.term;
    ha_free(a.ha);
    a.ha = NULL;
    run_until_leader(&a, &b, 10000);
    assert_int_equal(b.elected, 1);
    assert_true(b.term > old_term);
    assert_string_equal(ha_leader(b.ha)->name, "sb");
    ha_free(b.ha);
    cluster_stop(&c);
}

/* A leader that cannot reach etcd steps down by its own clock, before etcd
 * could expire its lease; it leads again, with a new term, once etcd is back. */
static void test_ha_steps_down_without_etcd(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    struct instance a = {0}, none = {0};
    instance_new(&c, 1, "sa", &a);
    run_until_leader(&a, &none, 5000);
    int64_t first = a.term;
    kill(c.m[0].pid, SIGSTOP);
    int64_t deadline = vcr_mono_ms() + 5000;
    while (a.deposed == 0 && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(a.deposed, 1);
    assert_false(ha_is_leader(a.ha));
    assert_int_equal(ha_term(a.ha), 0);
    kill(c.m[0].pid, SIGCONT);
    run_until_leader(&a, &none, 10000);
    assert_int_equal(a.elected, 2);
    assert_true(a.term > first);
    ha_free(a.ha);
    cluster_stop(&c);
}

/* Three members: one stopped (the raft leader) changes nothing (the leader keeps leading, same
 * term); two stopped (quorum lost): the leader steps down and nobody leads. */
static void test_ha_member_down_and_quorum_lost(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 3);
    /* A 2 s lease (keepalives may go unanswered for 1.6 s): etcd's own election
     * (300 ms timeout, docs/ha.md) took more than the 0.8 s a 1 s lease leaves
     * when the machine was loaded, and the leader rightly stepped down. */
    c.lease_ttl_s = 2;
    struct instance a = {0}, b = {0};
    instance_new(&c, 3, "sa", &a);
    run_until_leader(&a, &b, 5000);
    instance_new(&c, 3, "sb", &b);
    int64_t term = a.term;
    /* The raft leader goes away: the others elect one among them. */
    size_t gone = raft_leader(&c);
    kill(c.m[gone].pid, SIGSTOP);
    /* Two lease TTLs and more pass without a change. */
    int64_t until = vcr_mono_ms() + 4500;
    while (vcr_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE);
    assert_true(ha_is_leader(a.ha));
    assert_false(ha_is_leader(b.ha));
    assert_int_equal(a.deposed, 0);
    assert_int_equal(ha_term(a.ha), term);
    assert_int_equal(b.elected, 0);
    /* Quorum lost: availability is given up, not safety. */
    kill(c.m[(gone + 1) % 3].pid, SIGSTOP);
    int64_t deadline = vcr_mono_ms() + 5000;
    while (a.deposed == 0 && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(a.deposed, 1);
    until = vcr_mono_ms() + 3000;
    while (vcr_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE);
    assert_false(ha_is_leader(a.ha));
    assert_false(ha_is_leader(b.ha));
    assert_int_equal(b.elected, 0);
    ha_free(a.ha);
    ha_free(b.ha);
    cluster_stop(&c);
}

static int group_setup(void **state)
{
    (void)state;
    vcr_log_init("test_ha", getenv("VCR_TEST_DEBUG") ? VCR_LOG_DEBUG : VCR_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    return base ? 0 : -1;
}

/* --- servers and an agent --- */

struct node {
    struct server_config *cfg;
    struct server *srv;
    uint16_t port;
};

/* extra: more configuration (services), or "". */
static void node_start_with(struct node *n, const char *name, struct cluster *c, const char *dir,
                            const char *extra)
{
    n->port = free_port();
    char yaml[4096];
    snprintf(yaml, sizeof(yaml),
             "listen: 127.0.0.1:%u\napi: 127.0.0.1:%u\njournal: %s/%s.db\nheartbeat_ms: 100\n"
             "insecure: true\nha: {etcd: ['%s'], name: %s, lease_ttl_s: 1}\n%s",
             n->port, free_port(), dir, name, c->urls[0], name, extra);
    vcr_error_t err = NULL;
    n->cfg = server_config_parse(yaml, strlen(yaml), name, &err);
    if (n->cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    n->srv = server_new(base, n->cfg, &err);
    if (n->srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
}

static void node_stop(struct node *n)
{
    server_free(n->srv);
    server_config_free(n->cfg);
    n->srv = NULL;
    n->cfg = NULL;
}

static bool node_has_host(struct node *n)
{
    const struct inv_host *h = inventory_find_host(server_inventory(n->srv), "host1");
    return h && h->state == INV_HOST_CONNECTED;
}

struct fake_agent {
    struct agent_conn *conn;
    int heard;
};

static json_t *no_vms(void *opaque)
{
    (void)opaque;
    return json_array();
}

static void refuse_orders(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)action;
    (void)vm;
    (void)msg;
    agent_conn_reply(a->conn, id, false, "test agent");
}

static void agent_heard(int64_t evidence_ms, void *opaque)
{
    (void)evidence_ms;
    ((struct fake_agent *)opaque)->heard++;
}

static const struct agent_conn_ops agent_ops = {
    .vm_list = no_vms, .order = refuse_orders, .heard = agent_heard};

static bool run_until_pred(bool (*pred)(void *), void *arg, int64_t ms)
{
    int64_t deadline = vcr_mono_ms() + ms;
    while (!pred(arg) && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    return pred(arg);
}

static bool node_leads(void *arg)
{
    struct node *n = arg;
    return n->srv && ha_is_leader(server_ha(n->srv));
}

static bool either_leads(void *arg)
{
    struct node *n = arg;
    return node_leads(&n[0]) || node_leads(&n[1]);
}

static bool agent_was_heard(void *arg)
{
    return ((struct fake_agent *)arg)->heard > 0;
}

static bool host_on(void *arg)
{
    return node_has_host(arg);
}

/* Two servers on c's etcd with one configuration (extra), the one started
 * first leading before the other starts; servers: both, the leader first, as
 * an agent's `server` lists them. */
struct server_pair {
    struct node n[2];
    struct node *leader, *follower;
    int64_t term; /* the leader's */
    char servers[64];
};

static void server_pair_start(struct server_pair *p, struct cluster *c, const char *extra)
{
    memset(p, 0, sizeof(*p));
    node_start_with(&p->n[0], "s1", c, c->dir, extra);
    assert_true(run_until_pred(either_leads, p->n, 5000));
    node_start_with(&p->n[1], "s2", c, c->dir, extra);
    p->leader = node_leads(&p->n[0]) ? &p->n[0] : &p->n[1];
    p->follower = p->leader == &p->n[0] ? &p->n[1] : &p->n[0];
    p->term = ha_term(server_ha(p->leader->srv));
    snprintf(p->servers, sizeof(p->servers), "127.0.0.1:%u,127.0.0.1:%u", p->leader->port,
             p->follower->port);
}

/* The agent's real connection code, as `host` of `role`, not yet started. */
static struct agent_conn *agent_connect(const char *servers, const char *host, const char *role,
                                        const struct agent_conn_ops *ops, void *opaque)
{
    struct agent_conn_params p = {.server = servers, .host = host, .role = role, .accel = "tcg"};
    vcr_error_t err = NULL;
    struct agent_conn *conn = agent_conn_new(base, &p, ops, opaque, &err);
    if (conn == NULL)
        fail_msg("%s", vcr_error_msg(err));
    return conn;
}

/* Two real servers on one etcd and the agent's real connection code: the agent,
 * sent to the follower first, is redirected to the leader; the leader dies
 * (freed: no lease revoked, its connections closed); the follower leads with a
 * higher term and the agent is on it, heard again, without being restarted. */
static void test_servers_agent_follows_the_leader(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    struct server_pair pair;
    server_pair_start(&pair, &c, "");
    struct node *leader = pair.leader, *follower = pair.follower;
    int64_t term = pair.term;
    /* The follower must know who leads before the agent asks it. */
    int64_t deadline = vcr_mono_ms() + 5000;
    while (ha_leader(server_ha(follower->srv))->agents_addr == NULL && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);

    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u", follower->port, leader->port);
    struct fake_agent a = {0};
    a.conn = agent_connect(servers, "host1", "host", &agent_ops, &a);
    agent_conn_start(a.conn);
    assert_true(run_until_pred(host_on, leader, 5000));
    assert_false(node_has_host(follower));
    assert_true(run_until_pred(agent_was_heard, &a, 2000)); /* the leader's welcome */

    /* The leader dies. */
    node_stop(leader);
    assert_true(run_until_pred(node_leads, follower, 5000));
    assert_true(ha_term(server_ha(follower->srv)) > term);
    int heard = a.heard;
    assert_true(run_until_pred(host_on, follower, 5000));
    deadline = vcr_mono_ms() + 2000;
    while (a.heard == heard && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    assert_true(a.heard > heard);
    assert_true(agent_conn_is_up(a.conn));

    agent_conn_free(a.conn);
    node_stop(follower);
    cluster_stop(&c);
}

/* --- a takeover in the middle of a recovery --- */

struct host_agent {
    struct agent_conn *conn;
    bool hold;    /* vm_kill orders are kept unanswered */
    int kills;    /* vm_kill orders received */
    json_t *held; /* the ids of those kept */
};

static json_t *crashed_vm(void *opaque)
{
    (void)opaque;
    return json_pack("[{s:s, s:s, s:i, s:s}]", "name", "web1", "state", "crashed", "pid", 100,
                     "cause", "qemu killed by signal 9");
}

static void host_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    struct host_agent *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "vm_kill") != 0) {
        agent_conn_reply(a->conn, id, false, "test agent");
        return;
    }
    a->kills++;
    if (a->hold)
        json_array_append(a->held, id);
    else
        agent_conn_reply(a->conn, id, true, NULL);
}

static const struct agent_conn_ops host_ops = {.vm_list = crashed_vm, .order = host_order};

/* The keys under a prefix, with what each says. */
struct listing {
    bool done;
    int status;
    json_t *keys; /* {key: {value, create_revision, mod_revision}} */
};

static void on_list_each(const char *key, const struct etcd_kv *kv, void *opaque)
{
    struct listing *l = opaque;
    json_object_set_new(l->keys, key,
                        json_pack("{s:s, s:I, s:I}", "value", kv->value ? kv->value : "",
                                  "create_revision", (json_int_t)kv->create_revision,
                                  "mod_revision", (json_int_t)kv->mod_revision));
}

static void on_list_done(int status, const char *error, void *opaque)
{
    struct listing *l = opaque;
    (void)error;
    l->done = true;
    l->status = status;
}

static json_t *etcd_list(struct cluster *c, const char *prefix)
{
    vcr_error_t err = NULL;
    struct etcd *e = etcd_new(base, c->urls, c->n, 1000, &err);
    assert_non_null(e);
    struct listing l = {.keys = json_object()};
    assert_int_equal(etcd_get_prefix(e, prefix, on_list_each, on_list_done, &l, &err), 0);
    WAIT(l);
    assert_int_equal(l.status, 0);
    etcd_free(e);
    return l.keys;
}

/* The n records under prefix, each written once (never rewritten: its
 * create_revision is its mod_revision): {key: its value, parsed}. */
static json_t *etcd_records_written_once(struct cluster *c, const char *prefix, size_t n)
{
    json_t *recs = etcd_list(c, prefix);
    assert_int_equal(json_object_size(recs), n);
    json_t *values = json_object();
    const char *key;
    json_t *kv;
    json_object_foreach(recs, key, kv)
    {
        assert_int_equal(json_integer_value(json_object_get(kv, "create_revision")),
                         json_integer_value(json_object_get(kv, "mod_revision")));
        json_t *v = json_loads(json_string_value(json_object_get(kv, "value")), 0, NULL);
        assert_non_null(v);
        json_object_set_new(values, key, v);
    }
    json_decref(recs);
    return values;
}

/* The phases a server journaled of a kind (`recovery`, `migration`), comma-separated. */
static void journaled_kind(struct node *n, const char *kind, char *out, size_t size)
{
    vcr_error_t err = NULL;
    json_t *events = journal_read(server_journal(n->srv), 0, 1000, &err);
    assert_non_null(events);
    out[0] = '\0';
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        if (strcmp(json_string_value(json_object_get(ev, "kind")), kind) != 0)
            continue;
        const char *phase =
            json_string_value(json_object_get(json_object_get(ev, "detail"), "phase"));
        snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", phase);
    }
    json_decref(events);
}

static void journaled_phases(struct node *n, char *out, size_t size)
{
    journaled_kind(n, "recovery", out, size);
}

/* The node's journal of recoveries reads `want` (it is written once etcd
 * has answered the phase's transaction: a moment after etcd has the record). */
struct journal_want {
    struct node *n;
    const char *want;
};

static bool phases_journaled(void *arg)
{
    struct journal_want *w = arg;
    char phases[256];
    journaled_phases(w->n, phases, sizeof(phases));
    return strcmp(phases, w->want) == 0;
}

static bool kill_ordered(void *arg)
{
    return ((struct host_agent *)arg)->kills > 0;
}

static bool kill_ordered_again(void *arg)
{
    return ((struct host_agent *)arg)->kills > 1;
}

static struct cluster *takeover_cluster;

/* Whether etcd holds web1 in the state arg names ("failed", "recovered"). */
static bool service_state_in_etcd(void *arg)
{
    json_t *keys = etcd_list(takeover_cluster, "/vcr/services/");
    const char *v =
        json_string_value(json_object_get(json_object_get(keys, "/vcr/services/web1"), "value"));
    char want[64];
    snprintf(want, sizeof(want), "\"state\":\"%s\"", (const char *)arg);
    bool found = v && strstr(v, want);
    json_decref(keys);
    return found;
}

/* A standby agent: reports its containers (web1-c running, for a warm
 * service), runs every container order. */
struct standby_agent {
    struct agent_conn *conn;
    int creates, starts;
};

static json_t *no_containers(void *opaque)
{
    (void)opaque;
    return json_pack("{s:[]}", "containers");
}

static json_t *warm_container(void *opaque)
{
    (void)opaque;
    return json_pack("{s:[{s:s, s:s}]}", "containers", "name", "web1-c", "state", "running");
}

static void standby_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    struct standby_agent *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "container_create") == 0)
        a->creates++;
    else if (strcmp(action, "container_start") == 0)
        a->starts++;
    agent_conn_reply(a->conn, id, true, NULL);
}

static const struct agent_conn_ops standby_ops = {
    .vm_list = no_vms, .order = standby_order, .hello_extra = no_containers};
static const struct agent_conn_ops warm_standby_ops = {
    .vm_list = no_vms, .order = standby_order, .hello_extra = warm_container};

static bool standby_on(void *arg)
{
    struct node *n = arg;
    const struct inv_host *h = inventory_find_host(server_inventory(n->srv), "sb1");
    return h && h->state == INV_HOST_CONNECTED;
}

static bool container_ready_in_etcd(void *arg)
{
    (void)arg;
    json_t *keys = etcd_list(takeover_cluster, "/vcr/recoveries/web1/");
    bool found = false;
    const char *key;
    json_t *kv;
    json_object_foreach(keys, key, kv)
    {
        size_t n = strlen(key);
        found |= n > 16 && strcmp(key + n - 16, "/container_ready") == 0;
    }
    json_decref(keys);
    return found;
}

/* Two real servers on etcd with one service, and a host agent (the agent's
 * real connection code) whose VM web1 has crashed.  The leader detects it and
 * orders vm_kill, which the agent holds; the leader dies there (mid-fencing).
 * The follower takes the lead, loads the recovery from etcd and goes on from
 * its last phase done: it fences (vm_kill again: the step in flight is
 * repeated, never a phase done) and continues (here to the container step,
 * which fails: no standby is connected).  Each phase is recorded once in etcd
 * (version 1), by the term that did it, and journaled once across both
 * servers. */
static void test_servers_takeover_mid_recovery(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    takeover_cluster = &c;
    char path[128];
    fake_dns_write_key(c.dir, path, sizeof(path));
    char extra[1024];
    snprintf(extra, sizeof(extra),
             "host_timeout_ms: 1000\n"
             "dns: {server: 127.0.0.1:9, zone: vcr.lab, key_file: %s}\n"
             "services:\n"
             "  - name: web1\n"
             "    dns_name: web1.vcr.lab\n"
             "    primary: {host: host1, vm: web1, address: 127.0.0.2, port: 80}\n"
             "    check: {type: tcp, interval_ms: 500, timeout_ms: 300, failures: 3}\n"
             "    standby: {mode: warm, host: sb1, container: web1-c, address: 127.0.0.3}\n",
             path);
    struct server_pair pair;
    server_pair_start(&pair, &c, extra);
    struct node *leader = pair.leader, *follower = pair.follower;
    int64_t term = pair.term;

    struct host_agent a = {.hold = true, .held = json_array()};
    a.conn = agent_connect(pair.servers, "host1", "host", &host_ops, &a);
    agent_conn_start(a.conn);
    /* Detected (committed to etcd before the next step), then vm_kill. */
    assert_true(run_until_pred(kill_ordered, &a, 10000));
    char phases[256];
    journaled_phases(leader, phases, sizeof(phases));
    assert_string_equal(phases, "detected");

    /* The leader dies in the middle of fencing; the agent answers the next one. */
    node_stop(leader);
    json_array_clear(a.held);
    a.hold = false;
    assert_true(run_until_pred(node_leads, follower, 5000));
    int64_t new_term = ha_term(server_ha(follower->srv));
    assert_true(new_term > term);
    assert_true(run_until_pred(kill_ordered_again, &a, 10000));
    assert_true(run_until_pred(service_state_in_etcd, "failed", 10000));
    assert_int_equal(a.kills, 2);

    /* The successor journaled what it did, not what its predecessor had done. */
    struct journal_want failed_jw = {follower, "fenced,failed"};
    run_until_pred(phases_journaled, &failed_jw, 5000);
    journaled_phases(follower, phases, sizeof(phases));
    assert_string_equal(phases, failed_jw.want);

    /* etcd: one recovery, each phase recorded once (never rewritten), by its term. */
    json_t *recs = etcd_records_written_once(&c, "/vcr/recoveries/web1/", 2);
    const char *key;
    json_t *v;
    int64_t detected_term = 0, fenced_term = 0;
    char rec_id[32] = "";
    json_object_foreach(recs, key, v)
    {
        const char *phase = json_string_value(json_object_get(v, "phase"));
        int64_t t = json_integer_value(json_object_get(v, "term"));
        if (rec_id[0] == '\0')
            snprintf(rec_id, sizeof(rec_id), "%s", json_string_value(json_object_get(v, "rec_id")));
        assert_string_equal(json_string_value(json_object_get(v, "rec_id")), rec_id);
        if (strcmp(phase, "detected") == 0)
            detected_term = t;
        else if (strcmp(phase, "fenced") == 0)
            fenced_term = t;
    }
    json_decref(recs);
    assert_int_equal(detected_term, term);
    assert_int_equal(fenced_term, new_term);

    /* The operator retries once the standby is back with the warm container
     * running: the retry's state write is in flight when container_ready is
     * done (at once: the container runs), and that phase still gets its own
     * record in etcd before it is journaled. */
    struct standby_agent sb = {0};
    sb.conn = agent_connect(pair.servers, "sb1", "standby", &warm_standby_ops, &sb);
    agent_conn_start(sb.conn);
    assert_true(run_until_pred(standby_on, follower, 5000));
    vcr_error_t err = NULL;
    json_t *r = recovery_failover(server_recovery(follower->srv), "web1", &err);
    assert_non_null(r);
    json_decref(r);
    assert_true(run_until_pred(container_ready_in_etcd, NULL, 5000));
    struct journal_want jw = {follower, "fenced,failed,retry,container_ready"};
    run_until_pred(phases_journaled, &jw, 5000);
    journaled_phases(follower, phases, sizeof(phases));
    assert_string_equal(phases, jw.want);

    agent_conn_free(sb.conn);
    agent_conn_free(a.conn);
    json_decref(a.held);
    node_stop(follower);
    cluster_stop(&c);
}

/* --- the same through DNS: a fence-aware DNS server --- */

/* A DNS server on loopback that does what RFC 2136 says of the fence's
 * prerequisites (BIND9 does the same: tests/integration/test_dns.py): TXT
 * `_vcr-term.vcr.lab` is the fence, A `web1.vcr.lab` the service's name.  The
 * first UPDATE that changes an A record can be held (its datagram kept, as a
 * slow network would) and processed later. */
struct fence_dns {
    struct fake_dns_socket sock;
    long long fence;   /* 0: no fence record */
    char address[32];  /* "" none */
    int a_changes;     /* UPDATEs of the A record applied */
    int refused;       /* UPDATEs refused by a prerequisite */
    bool hold_first_a; /* hold the first UPDATE that changes the A record */
    int held_n;
    uint8_t held[4096];
    size_t held_len;
    struct sockaddr_in held_from;
};

static long long txt_term(const ldns_rr *rr)
{
    const ldns_rdf *r = ldns_rr_rd_count(rr) ? ldns_rr_rdf(rr, 0) : NULL;
    if (r == NULL || ldns_rdf_size(r) < 2)
        return -1;
    char text[32];
    snprintf(text, sizeof(text), "%.*s", (int)ldns_rdf_data(r)[0],
             (const char *)ldns_rdf_data(r) + 1);
    return atoll(text);
}

static void fence_dns_process(struct fence_dns *d, const uint8_t *buf, size_t n,
                              const struct sockaddr_in *from, bool release)
{
    ldns_pkt *req = NULL;
    assert_int_equal(ldns_wire2pkt(&req, buf, n), LDNS_STATUS_OK);
    ldns_pkt *reply = fake_dns_reply_to(req);
    if (ldns_pkt_get_opcode(req) == LDNS_PACKET_UPDATE) {
        ldns_rr_list *upd = ldns_pkt_authority(req);
        bool changes_a = false;
        for (size_t i = 0; i < ldns_rr_list_rr_count(upd); i++)
            changes_a |= ldns_rr_get_type(ldns_rr_list_rr(upd, i)) == LDNS_RR_TYPE_A;
        if (changes_a && d->hold_first_a && !release) {
            d->hold_first_a = false;
            d->held_n++;
            memcpy(d->held, buf, n);
            d->held_len = n;
            d->held_from = *from;
            ldns_pkt_free(reply);
            ldns_pkt_free(req);
            return;
        }
        /* Prerequisites (ldns: the answer section), all of them, before anything. */
        int rcode = LDNS_RCODE_NOERROR;
        ldns_rr_list *pre = ldns_pkt_answer(req);
        for (size_t i = 0; i < ldns_rr_list_rr_count(pre); i++) {
            ldns_rr *rr = ldns_rr_list_rr(pre, i);
            assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_TXT);
            if (ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN && txt_term(rr) != d->fence)
                rcode = LDNS_RCODE_NXRRSET;
            else if (ldns_rr_get_class(rr) == LDNS_RR_CLASS_NONE && d->fence != 0)
                rcode = LDNS_RCODE_YXRRSET;
        }
        if (rcode != LDNS_RCODE_NOERROR) {
            d->refused++;
            ldns_pkt_set_rcode(reply, (uint8_t)rcode);
            fake_dns_send(&d->sock, reply, from, sizeof(*from));
            ldns_pkt_free(req);
            return;
        }
        for (size_t i = 0; i < ldns_rr_list_rr_count(upd); i++) {
            ldns_rr *rr = ldns_rr_list_rr(upd, i);
            if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN)
                continue; /* the deletes: each is followed by its add */
            if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_TXT) {
                d->fence = txt_term(rr);
            } else {
                char *a = ldns_rdf2str(ldns_rr_rdf(rr, 0));
                snprintf(d->address, sizeof(d->address), "%s", a);
                free(a);
                d->a_changes++;
            }
        }
        fake_dns_sign(reply, req);
    } else {
        ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(req), 0);
        ldns_pkt_push_rr(reply, LDNS_SECTION_QUESTION, ldns_rr_clone(q));
        cleanup_free char *owner = ldns_rdf2str(ldns_rr_owner(q));
        char text[160] = "";
        if (ldns_rr_get_type(q) == LDNS_RR_TYPE_TXT && d->fence)
            snprintf(text, sizeof(text), "%s 0 IN TXT \"%lld\"", owner, d->fence);
        else if (ldns_rr_get_type(q) == LDNS_RR_TYPE_A && d->address[0])
            snprintf(text, sizeof(text), "%s 5 IN A %s", owner, d->address);
        if (text[0]) {
            ldns_rr *rr = NULL;
            assert_int_equal(ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL), LDNS_STATUS_OK);
            ldns_pkt_push_rr(reply, LDNS_SECTION_ANSWER, rr);
        }
    }
    fake_dns_send(&d->sock, reply, from, sizeof(*from));
    ldns_pkt_free(req);
}

static void on_fence_dns(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fence_dns *d = arg;
    uint8_t buf[4096];
    struct sockaddr_in from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
    if (n > 0)
        fence_dns_process(d, buf, (size_t)n, &from, false);
}

static void fence_dns_start(struct fence_dns *d)
{
    memset(d, 0, sizeof(*d));
    fake_dns_listen(&d->sock, base, on_fence_dns, d);
}

static void fence_dns_stop(struct fence_dns *d)
{
    fake_dns_close(&d->sock);
}

static void on_port_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    close(fd);
}

struct dns_wait {
    struct fence_dns *d;
    long long fence;
    int held;
};

static bool fence_is(void *arg)
{
    struct dns_wait *w = arg;
    return w->d->fence == w->fence;
}

static bool update_held(void *arg)
{
    return ((struct fence_dns *)arg)->held_n > 0;
}

/* A whole recovery across a takeover at its DNS step.  The leader claims the
 * DNS zone's fence for its term, recovers web1 up to port_open, and sends its
 * DNS UPDATE, which the network holds; it dies there.  The follower leads,
 * moves the fence to its term, resumes after port_open (no container order
 * again) and switches DNS under its own term: recovered.  The old leader's
 * UPDATE, delivered late, is refused by the fence: the name was switched once,
 * to the container, and each phase recorded and journaled once. */
static void test_servers_takeover_at_the_dns_step(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    takeover_cluster = &c;
    struct fence_dns d;
    fence_dns_start(&d);
    d.hold_first_a = true;
    /* The container's port, on 127.0.0.3. */
    uint16_t port = free_port();
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.3", &sin.sin_addr);
    struct evconnlistener *listener = evconnlistener_new_bind(
        base, on_port_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 16,
        (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(listener);

    char path[128];
    fake_dns_write_key(c.dir, path, sizeof(path));
    char extra[1024];
    snprintf(extra, sizeof(extra),
             "host_timeout_ms: 1000\n"
             "port_timeout_ms: 5000\n"
             "confirm_timeout_ms: 5000\n"
             "dns: {server: 127.0.0.1:%u, zone: vcr.lab, key_file: %s}\n"
             "services:\n"
             "  - name: web1\n"
             "    dns_name: web1.vcr.lab\n"
             "    primary: {host: host1, vm: web1, address: 127.0.0.2, port: %u}\n"
             "    check: {type: tcp, interval_ms: 500, timeout_ms: 300, failures: 3}\n"
             "    standby: {mode: cold, host: sb1, container: web1-c, address: 127.0.0.3}\n",
             d.sock.port, path, port);
    struct server_pair pair;
    server_pair_start(&pair, &c, extra);
    struct node *leader = pair.leader, *follower = pair.follower;
    int64_t term = pair.term;
    struct dns_wait w = {.d = &d, .fence = term};
    assert_true(run_until_pred(fence_is, &w, 5000)); /* the first claim: from none */

    struct host_agent a = {.held = json_array()};
    a.conn = agent_connect(pair.servers, "host1", "host", &host_ops, &a);
    struct standby_agent sb = {0};
    sb.conn = agent_connect(pair.servers, "sb1", "standby", &standby_ops, &sb);
    agent_conn_start(sb.conn);
    /* The standby first, so that the recovery finds it. */
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!standby_on(leader) && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    agent_conn_start(a.conn);

    /* Up to the DNS step; its UPDATE is held on the way. */
    assert_true(run_until_pred(update_held, &d, 15000));
    char phases[256];
    journaled_phases(leader, phases, sizeof(phases));
    assert_string_equal(phases, "detected,fenced,container_ready,port_open");
    assert_int_equal(sb.creates, 1);

    node_stop(leader);
    assert_true(run_until_pred(node_leads, follower, 5000));
    int64_t new_term = ha_term(server_ha(follower->srv));
    assert_true(new_term > term);
    assert_true(run_until_pred(service_state_in_etcd, "recovered", 15000));
    assert_int_equal(d.fence, new_term);
    assert_string_equal(d.address, "127.0.0.3");
    assert_int_equal(d.a_changes, 1);
    assert_int_equal(d.refused, 0);

    /* The old leader's UPDATE arrives now: refused by the fence (NXRRSET). */
    fence_dns_process(&d, d.held, d.held_len, &d.held_from, true);
    assert_int_equal(d.refused, 1);
    assert_int_equal(d.a_changes, 1);

    /* No container order again, and each phase journaled once across both. */
    assert_int_equal(sb.creates, 1);
    assert_int_equal(sb.starts, 0);
    assert_int_equal(a.kills, 1);
    struct journal_want jw = {follower, "dns_updated,client_confirmed"};
    run_until_pred(phases_journaled, &jw, 5000);
    journaled_phases(follower, phases, sizeof(phases));
    assert_string_equal(phases, jw.want);
    json_t *recs = etcd_records_written_once(&c, "/vcr/recoveries/web1/", 6);
    const char *key;
    json_t *v;
    json_object_foreach(recs, key, v)
    {
        const char *phase = json_string_value(json_object_get(v, "phase"));
        bool late = strcmp(phase, "dns_updated") == 0 || strcmp(phase, "client_confirmed") == 0;
        assert_int_equal(json_integer_value(json_object_get(v, "term")), late ? new_term : term);
    }
    json_decref(recs);

    agent_conn_free(a.conn);
    agent_conn_free(sb.conn);
    json_decref(a.held);
    node_stop(follower);
    evconnlistener_free(listener);
    fence_dns_stop(&d);
    cluster_stop(&c);
}

static int test_teardown(void **state)
{
    (void)state;
    if (running) {
        /* An assertion left the test early: no etcd may outlive it. */
        for (size_t i = 0; i < running->n; i++)
            if (running->m[i].pid > 0) {
                kill(running->m[i].pid, SIGCONT);
                kill(running->m[i].pid, SIGKILL);
                waitpid(running->m[i].pid, NULL, 0);
            }
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", running->dir);
        if (system(cmd) != 0)
            return -1;
        running = NULL;
    }
    return 0;
}

/* --- the automatic failback's timers survive a takeover --- */

/* The servers' configuration of one service web1 (primary web1 on host1, a
 * warm container on sb1, a DNS server that is never reached), more appended
 * to the service. */
static void web1_config(struct cluster *c, const char *more, char *out, size_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/tsig.key", c->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", KEY_NAME,
            KEY_SECRET);
    fclose(f);
    snprintf(out, size,
             "host_timeout_ms: 3000\n"
             "dns: {server: 127.0.0.1:9, zone: vcr.lab, key_file: %s}\n"
             "services:\n"
             "  - name: web1\n"
             "    dns_name: web1.vcr.lab\n"
             "    primary: {host: host1, vm: web1, address: 127.0.0.2, port: 80}\n"
             "    check: {type: tcp, interval_ms: 200, timeout_ms: 100, failures: 1}\n"
             "    standby: {mode: warm, host: sb1, container: web1-c, address: 127.0.0.3}\n%s",
             path, more);
}

/* A host agent whose primary is crashed; it kills on order and refuses
 * everything else (a failback's vm_start: the failback fails, and the
 * automatic one is rate-limited after that). */
struct failback_agent {
    struct agent_conn *conn;
    int starts; /* vm_start orders received */
};

static void failback_agent_order(json_t *id, const char *action, const char *vm, json_t *msg,
                                 void *opaque)
{
    struct failback_agent *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "vm_start") == 0)
        a->starts++;
    agent_conn_reply(a->conn, id, strcmp(action, "vm_kill") == 0, "test agent");
}

static const struct agent_conn_ops failback_agent_ops = {.vm_list = crashed_vm,
                                                         .order = failback_agent_order};

static void etcd_put_value(struct cluster *c, const char *key, const char *value)
{
    vcr_error_t err = NULL;
    struct etcd *e = etcd_new(base, c->urls, c->n, 1000, &err);
    assert_non_null(e);
    struct answer a = {0};
    assert_int_equal(etcd_put(e, key, value, 0, on_kv, &a, &err), 0);
    WAIT(a);
    assert_int_equal(a.status, 0);
    etcd_free(e);
}

/* The service's state in etcd (new reference), or NULL. */
static json_t *etcd_service_state(struct cluster *c, const char *name)
{
    char key[128];
    snprintf(key, sizeof(key), "/vcr/services/%s", name);
    json_t *keys = etcd_list(c, "/vcr/services/");
    const char *v = json_string_value(json_object_get(json_object_get(keys, key), "value"));
    json_t *state = v ? json_loads(v, 0, NULL) : NULL;
    json_decref(keys);
    return state;
}

static struct cluster *auto_cluster;
static const char *auto_writer; /* the server whose state write is waited for */

static bool other_leads(void *arg)
{
    struct node *n = arg;
    return node_leads(&n[0]) || node_leads(&n[1]);
}

/* etcd has web1's automatic failback timers as written by auto_writer, with
 * the start of a healthy period. */
static bool auto_period_in_etcd(void *arg)
{
    (void)arg;
    json_t *v = etcd_service_state(auto_cluster, "web1");
    json_t *af = json_object_get(v, "auto_failback");
    bool ok = json_integer_value(json_object_get(af, "ready_since_ms")) > 0 &&
              strcmp(json_string_value(json_object_get(v, "by")) ?: "", auto_writer) == 0;
    json_decref(v);
    return ok;
}

/* etcd has web1's last automatic failback. */
static bool auto_last_in_etcd(void *arg)
{
    (void)arg;
    json_t *v = etcd_service_state(auto_cluster, "web1");
    bool ok =
        json_integer_value(json_object_get(json_object_get(v, "auto_failback"), "last_ms")) > 0;
    json_decref(v);
    return ok;
}

/* A server's journaled failback phase `phase` (its detail, new reference), or NULL. */
static json_t *journaled_failback(struct node *n, const char *phase)
{
    vcr_error_t err = NULL;
    json_t *events = journal_read(server_journal(n->srv), 0, 1000, &err);
    assert_non_null(events);
    json_t *found = NULL;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        json_t *d = json_object_get(ev, "detail");
        if (strcmp(json_string_value(json_object_get(ev, "kind")), "failback") == 0 &&
            strcmp(json_string_value(json_object_get(d, "phase")) ?: "", phase) == 0 &&
            found == NULL)
            found = json_incref(d);
    }
    json_decref(events);
    return found;
}

static struct node *auto_node;

static bool auto_started_on_node(void *arg)
{
    (void)arg;
    json_t *d = journaled_failback(auto_node, "auto_started");
    json_decref(d);
    return d != NULL;
}

static bool failback_refused(void *arg)
{
    (void)arg;
    json_t *d = journaled_failback(auto_node, "failed");
    json_decref(d);
    return d != NULL;
}

static bool wall_passed(void *arg)
{
    return vcr_wall_ms() >= *(int64_t *)arg;
}

/* `failback: auto` across takeovers.  A service recovered (its state in etcd,
 * as a finished recovery leaves it), its primary's host connected: the
 * leader starts the healthy period (written to etcd) and dies before after_s.
 * The successor continues that period (its automatic failback starts with the
 * predecessor's start, not its own), the failback fails (vm_start refused),
 * and the rate limit holds it back.  That successor dies too: the next leader
 * loads the last automatic failback's time and does not fail back again
 * within min_interval_s (without it in etcd, it would after after_s). */
static void test_servers_takeover_keeps_auto_failback_timers(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    auto_cluster = &c;
    etcd_put_value(&c, "/vcr/services/web1",
                   "{\"state\":\"recovered\",\"phase\":\"client_confirmed\",\"rec_id\":\"1\","
                   "\"cause\":\"VM web1 crashed\",\"error\":\"\",\"started_ms\":1,"
                   "\"on_standby\":true,\"timeline\":[],\"term\":1,\"by\":\"s0\"}");
    char extra[1024];
    web1_config(&c, "    failback: {mode: auto, after_s: 3, min_interval_s: 600}\n", extra,
                sizeof(extra));
    struct node n[3] = {{0}};
    node_start_with(&n[0], "s1", &c, c.dir, extra);
    assert_true(run_until_pred(node_leads, &n[0], 5000));
    node_start_with(&n[1], "s2", &c, c.dir, extra);
    node_start_with(&n[2], "s3", &c, c.dir, extra);

    char servers[96];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", n[0].port,
             n[1].port, n[2].port);
    struct failback_agent a = {0};
    struct agent_conn_params p = {
        .server = servers, .host = "host1", .role = "host", .accel = "tcg"};
    vcr_error_t err = NULL;
    a.conn = agent_conn_new(base, &p, &failback_agent_ops, &a, &err);
    assert_non_null(a.conn);
    agent_conn_start(a.conn);

    /* s1 sees the host connected: the healthy period begins, in etcd. */
    auto_writer = "s1";
    assert_true(run_until_pred(auto_period_in_etcd, NULL, 5000));
    json_t *v = etcd_service_state(&c, "web1");
    int64_t ready_since =
        json_integer_value(json_object_get(json_object_get(v, "auto_failback"), "ready_since_ms"));
    json_decref(v);
    int64_t until = ready_since + 1000;
    run_until_pred(wall_passed, &until, 2000);
    assert_null(journaled_failback(&n[0], "auto_started"));
    node_stop(&n[0]); /* before after_s */

    assert_true(run_until_pred(other_leads, &n[1], 5000));
    struct node *second = node_leads(&n[1]) ? &n[1] : &n[2];
    struct node *third = second == &n[1] ? &n[2] : &n[1];
    auto_node = second;
    assert_true(run_until_pred(auto_started_on_node, NULL, 10000));
    json_t *started = journaled_failback(second, "auto_started");
    /* The predecessor's period, continued (to the clocks' conversions). */
    int64_t carried = json_integer_value(json_object_get(started, "ready_since_ms"));
    json_decref(started);
    assert_true(carried >= ready_since - 50 && carried <= ready_since + 50);
    assert_true(run_until_pred(failback_refused, NULL, 5000));
    assert_int_equal(a.starts, 1);
    /* The last automatic failback, in etcd. */
    assert_true(run_until_pred(auto_last_in_etcd, NULL, 5000));
    v = etcd_service_state(&c, "web1");
    int64_t last =
        json_integer_value(json_object_get(json_object_get(v, "auto_failback"), "last_ms"));
    json_decref(v);
    assert_true(last > ready_since);

    /* The second leader dies: the third leads with the rate-limit history
     * and, past after_s with the host connected, does not fail back again. */
    node_stop(second);
    assert_true(run_until_pred(node_leads, third, 5000));
    assert_true(run_until_pred(host_on, third, 5000));
    until = vcr_wall_ms() + 3500;
    run_until_pred(wall_passed, &until, 4000);
    assert_int_equal(a.starts, 1);
    auto_node = third;
    assert_false(auto_started_on_node(NULL));

    agent_conn_free(a.conn);
    node_stop(third);
    cluster_stop(&c);
}

/* --- a warm restart's maintenance window survives a takeover --- */

/* A host agent whose VM web1 is in a warm restart (`restarting`) until the
 * test says it is over; it counts the kills it is ordered. */
struct warm_agent {
    struct agent_conn *conn;
    const char *state;
    int kills;
};

static json_t *warm_vm(void *opaque)
{
    struct warm_agent *a = opaque;
    return json_pack("[{s:s, s:s, s:i, s:s}]", "name", "web1", "state", a->state, "pid", 100,
                     "cause", "warm restart");
}

static void warm_agent_order(json_t *id, const char *action, const char *vm, json_t *msg,
                             void *opaque)
{
    struct warm_agent *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "vm_kill") == 0)
        a->kills++;
    agent_conn_reply(a->conn, id, false, "test agent");
}

static const struct agent_conn_ops warm_agent_ops = {.vm_list = warm_vm, .order = warm_agent_order};

static struct cluster *maint_cluster;

static bool window_in_etcd(void *arg)
{
    (void)arg;
    json_t *keys = etcd_list(maint_cluster, "/vcr/maintenance/");
    bool found = json_object_get(keys, "/vcr/maintenance/host1/web1") != NULL;
    json_decref(keys);
    return found;
}

static bool no_window_in_etcd(void *arg)
{
    (void)arg;
    json_t *keys = etcd_list(maint_cluster, "/vcr/maintenance/");
    bool none = json_object_size(keys) == 0;
    json_decref(keys);
    return none;
}

static int64_t maint_deadline; /* the window's deadline in etcd, wall clock ms */

/* The node's inventory has web1 restarting until the window's deadline
 * (to the clocks' conversion). */
static bool restart_deadline_is_the_window(void *arg)
{
    struct node *n = arg;
    struct inv_host *h = NULL;
    struct inv_vm *vm = inventory_find_vm(server_inventory(n->srv), "web1", &h);
    if (vm == NULL || vm->state != INV_VM_RESTARTING || vm->restart_deadline_ms == 0)
        return false;
    int64_t wall = vcr_wall_ms() - (vcr_mono_ms() - vm->restart_deadline_ms);
    return wall >= maint_deadline - 50 && wall <= maint_deadline + 50;
}

/* The kinds `maintenance` a server journaled, their `window` comma-separated. */
static void journaled_windows(struct node *n, char *out, size_t size)
{
    vcr_error_t err = NULL;
    json_t *events = journal_read(server_journal(n->srv), 0, 1000, &err);
    assert_non_null(events);
    out[0] = '\0';
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        if (strcmp(json_string_value(json_object_get(ev, "kind")), "maintenance") != 0)
            continue;
        const char *w = json_string_value(json_object_get(json_object_get(ev, "detail"), "window"));
        snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", w);
    }
    json_decref(events);
}

/* The server journaled a window closed (once etcd answered the delete). */
static bool window_closed(void *arg)
{
    char windows[128];
    journaled_windows(arg, windows, sizeof(windows));
    return strstr(windows, "closed") != NULL;
}

/* A warm restart in progress on web1 (a protected service's primary): the
 * leader records its window in etcd with its deadline, and dies.  The
 * successor loads the window and, when the agent says hello with web1 still
 * `restarting`, keeps the predecessor's deadline (not a new one from its own
 * takeover: a restart that hangs still fails when its window ends).  Nothing
 * is detected or fenced.  The restart ends (vm_event running): the successor
 * closes the window in etcd. */
static void test_servers_takeover_keeps_warm_restart_window(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    maint_cluster = &c;
    char extra[1024];
    web1_config(&c, "", extra, sizeof(extra));
    struct node n[2] = {{0}};
    node_start_with(&n[0], "s1", &c, c.dir, extra);
    assert_true(run_until_pred(node_leads, &n[0], 5000));
    node_start_with(&n[1], "s2", &c, c.dir, extra);

    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u", n[0].port, n[1].port);
    struct warm_agent a = {.state = "restarting"};
    struct agent_conn_params p = {
        .server = servers, .host = "host1", .role = "host", .accel = "tcg"};
    vcr_error_t err = NULL;
    a.conn = agent_conn_new(base, &p, &warm_agent_ops, &a, &err);
    assert_non_null(a.conn);
    agent_conn_start(a.conn);

    /* s1 records the window with its deadline. */
    assert_true(run_until_pred(window_in_etcd, NULL, 5000));
    json_t *keys = etcd_list(&c, "/vcr/maintenance/");
    json_t *w = json_loads(json_string_value(json_object_get(
                               json_object_get(keys, "/vcr/maintenance/host1/web1"), "value")),
                           0, NULL);
    json_decref(keys);
    maint_deadline = json_integer_value(json_object_get(w, "deadline_ms"));
    assert_string_equal(json_string_value(json_object_get(w, "by")), "s1");
    json_decref(w);
    assert_true(maint_deadline > vcr_wall_ms());
    assert_true(restart_deadline_is_the_window(&n[0]));
    /* A second passes (a new window would end that much later), s1 dies. */
    int64_t until = vcr_wall_ms() + 1000;
    run_until_pred(wall_passed, &until, 2000);
    node_stop(&n[0]);

    assert_true(run_until_pred(node_leads, &n[1], 5000));
    assert_true(run_until_pred(host_on, &n[1], 5000));
    assert_true(run_until_pred(restart_deadline_is_the_window, &n[1], 5000));
    assert_true(window_in_etcd(NULL));

    /* The restart ends: the window is closed. */
    a.state = "running";
    agent_conn_send_event(a.conn, json_pack("{s:s, s:s, s:s, s:I, s:i}", "vm", "web1", "state",
                                            "running", "cause", "warm restart done", "ts_ms",
                                            (json_int_t)vcr_wall_ms(), "pid", 101));
    assert_true(run_until_pred(window_closed, &n[1], 5000));
    assert_true(no_window_in_etcd(NULL));
    char windows[128];
    journaled_windows(&n[1], windows, sizeof(windows));
    assert_string_equal(windows, "closed");
    /* Neither leader took the restart for a failure. */
    assert_int_equal(a.kills, 0);
    json_t *v = etcd_service_state(&c, "web1");
    assert_true(v == NULL || strcmp(json_string_value(json_object_get(v, "state")), "ok") == 0);
    json_decref(v);

    agent_conn_free(a.conn);
    node_stop(&n[1]);
    cluster_stop(&c);
}

/* --- a migration in flight when its leader dies --- */

/* Two standby agents: sb1 runs container web1-c (its final dump is held:
 * the container stops there, the dump never answers); sb2 is the target.
 * Orders are numbered in the order they arrive. */
struct mig_agent {
    struct agent_conn *conn;
    const char *ct_state; /* web1-c as reported; NULL: not listed */
    int order_no;         /* of the last container_destroy / container_start */
    int destroys, starts, cleanups, dumps;
};

static int orders_seen;

static json_t *mig_agent_containers(void *opaque)
{
    struct mig_agent *a = opaque;
    if (a->ct_state == NULL)
        return json_pack("{s:[]}", "containers");
    return json_pack("{s:[{s:s, s:s, s:s}]}", "containers", "name", "web1-c", "state", a->ct_state,
                     "address", "10.0.0.5");
}

static void mig_agent_order(json_t *id, const char *action, const char *vm, json_t *msg,
                            void *opaque)
{
    struct mig_agent *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "container_checkpoint") == 0) {
        a->dumps++;
        a->ct_state = "stopped"; /* the final dump stops it; its answer is held */
        return;
    }
    if (strcmp(action, "container_destroy") == 0) {
        a->destroys++;
        a->order_no = ++orders_seen;
        a->ct_state = NULL;
    } else if (strcmp(action, "container_start") == 0) {
        a->starts++;
        a->order_no = ++orders_seen;
        a->ct_state = "running";
    } else if (strcmp(action, "container_migrate_cleanup") == 0) {
        a->cleanups++;
    }
    agent_conn_reply(a->conn, id, true, NULL);
}

static const struct agent_conn_ops mig_agent_ops = {
    .vm_list = no_vms, .order = mig_agent_order, .hello_extra = mig_agent_containers};

static struct cluster *mig_cluster;
static const char *mig_wait_container = "web1-c";

struct status_answer {
    bool done;
    json_t *body;
};

static void on_status_answer(struct evhttp_request *req, void *arg)
{
    struct status_answer *a = arg;
    a->done = true;
    if (req == NULL || evhttp_request_get_response_code(req) != 200)
        return;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    a->body = json_loadb((const char *)evbuffer_pullup(in, (ssize_t)n), n, 0, NULL);
}

/* GET /v1/status of a node's API (plain HTTP: test configs have no tokens). */
static json_t *node_status(struct node *n)
{
    struct status_answer a = {0};
    struct evhttp_connection *conn =
        evhttp_connection_base_new(base, NULL, "127.0.0.1", server_api_port(n->srv));
    assert_non_null(conn);
    struct evhttp_request *req = evhttp_request_new(on_status_answer, &a);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    assert_int_equal(evhttp_make_request(conn, req, EVHTTP_REQ_GET, "/v1/status"), 0);
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!a.done && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    evhttp_connection_free(conn);
    assert_non_null(a.body);
    return a.body;
}

/* etcd's state of mig_wait_container's migration says `phase`. */
static bool migration_state_is(void *arg)
{
    const char *phase = arg;
    json_t *keys = etcd_list(mig_cluster, "/vcr/migrations/");
    char key[128];
    snprintf(key, sizeof(key), "/vcr/migrations/%s", mig_wait_container);
    const char *v = json_string_value(json_object_get(json_object_get(keys, key), "value"));
    json_t *state = v ? json_loads(v, 0, NULL) : NULL;
    bool is = state && strcmp(json_string_value(json_object_get(state, "phase")), phase) == 0;
    json_decref(state);
    json_decref(keys);
    return is;
}

/* migrator_start of web1-c from sb1 to sb2, no pre-copy: true once accepted. */
static bool migration_begun(void *arg)
{
    static void *begun; /* the server it was accepted by */
    if (begun == arg)
        return true;
    vcr_error_t err = NULL;
    int r = migrator_start(server_migrator(arg), "sb1", "web1-c", "sb2", "test", false, NULL, NULL,
                           &err);
    vcr_error_release(&err);
    if (r == 0)
        begun = arg;
    return r == 0;
}

static bool dump_ordered(void *arg)
{
    return ((struct mig_agent *)arg)->dumps > 0;
}

static bool standby_hosts_on(void *arg)
{
    struct node *n = arg;
    const struct inv_host *h1 = inventory_find_host(server_inventory(n->srv), "sb1");
    const struct inv_host *h2 = inventory_find_host(server_inventory(n->srv), "sb2");
    return h1 && h1->state == INV_HOST_CONNECTED && h1->containers && h2 &&
           h2->state == INV_HOST_CONNECTED;
}

/* A migration of web1-c from sb1 to sb2 (no pre-copy) is recorded in etcd
 * (`started`) before its first order; its final dump is held on sb1 (the
 * container stopped there) and the leader dies.  The successor loads the
 * migration and ends it once: the target's container destroyed first, then
 * the container started again on the source (never on both), both cleaned
 * up, the end (`failed`, rolled back) recorded once by its term.  Then a
 * migration recorded up to port_open (its container runs on the target): the
 * next leader finishes it, destroying the source's container only. */
static void test_servers_takeover_mid_migration(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    mig_cluster = &c;
    mig_wait_container = "web1-c";
    struct node n[3] = {{0}};
    node_start_with(&n[0], "s1", &c, c.dir, "host_timeout_ms: 3000\n");
    assert_true(run_until_pred(node_leads, &n[0], 5000));
    node_start_with(&n[1], "s2", &c, c.dir, "host_timeout_ms: 3000\n");
    node_start_with(&n[2], "s3", &c, c.dir, "host_timeout_ms: 3000\n");
    int64_t term = ha_term(server_ha(n[0].srv));

    char servers[96];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", n[0].port,
             n[1].port, n[2].port);
    struct mig_agent src = {.ct_state = "running"}, dst = {0};
    struct agent_conn_params p1 = {
        .server = servers, .host = "sb1", .role = "standby", .accel = "tcg"};
    struct agent_conn_params p2 = {
        .server = servers, .host = "sb2", .role = "standby", .accel = "tcg"};
    vcr_error_t err = NULL;
    src.conn = agent_conn_new(base, &p1, &mig_agent_ops, &src, &err);
    dst.conn = agent_conn_new(base, &p2, &mig_agent_ops, &dst, &err);
    assert_non_null(src.conn);
    assert_non_null(dst.conn);
    agent_conn_start(src.conn);
    agent_conn_start(dst.conn);
    assert_true(run_until_pred(standby_hosts_on, &n[0], 5000));
    /* A new leader's migrations wait for its predecessor's to be loaded. */
    assert_true(run_until_pred(migration_begun, n[0].srv, 5000));
    assert_true(run_until_pred(dump_ordered, &src, 5000));
    assert_true(migration_state_is("started"));
    /* GET /v1/status lists it (vcr status). */
    json_t *status = node_status(&n[0]);
    json_t *mig = json_array_get(json_object_get(status, "migrations"), 0);
    assert_int_equal(json_array_size(json_object_get(status, "migrations")), 1);
    assert_string_equal(json_string_value(json_object_get(mig, "container")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(mig, "from")), "sb1");
    assert_string_equal(json_string_value(json_object_get(mig, "to")), "sb2");
    assert_true(json_is_integer(json_object_get(mig, "elapsed_ms")));
    json_decref(status);

    node_stop(&n[0]); /* with the final dump held: the container is stopped on sb1 */
    assert_true(run_until_pred(other_leads, &n[1], 5000));
    struct node *second = node_leads(&n[1]) ? &n[1] : &n[2];
    struct node *third = second == &n[1] ? &n[2] : &n[1];
    int64_t new_term = ha_term(server_ha(second->srv));
    assert_true(new_term > term);
    assert_true(run_until_pred(migration_state_is, "failed", 10000));
    /* Once each, the target's destroy before the source's start. */
    assert_int_equal(dst.destroys, 1);
    assert_int_equal(src.starts, 1);
    assert_int_equal(src.destroys, 0);
    assert_true(dst.order_no < src.order_no);
    assert_int_equal(src.dumps, 1);

    /* etcd: each step recorded once, by the term that did it. */
    json_t *recs = etcd_records_written_once(&c, "/vcr/migration-steps/web1-c/", 2);
    const char *key;
    json_t *v;
    json_object_foreach(recs, key, v)
    {
        const char *phase = json_string_value(json_object_get(v, "phase"));
        int64_t t = json_integer_value(json_object_get(v, "term"));
        if (strcmp(phase, "started") == 0)
            assert_int_equal(t, term);
        else if (strcmp(phase, "failed") == 0)
            assert_int_equal(t, new_term);
        else
            fail_msg("unexpected step %s", phase);
    }
    json_decref(recs);
    char phases[256];
    journaled_kind(second, "migration", phases, sizeof(phases));
    assert_string_equal(phases, "rolling_back,failed");
    json_t *st = migrator_status_json(server_migrator(second->srv));
    assert_int_equal(json_array_size(st), 0);
    json_decref(st);

    /* A migration (of web2-c) whose leader had recorded port_open when it
     * died: the next leader finishes it, the source's container destroyed
     * and nothing started or destroyed on the target. */
    etcd_put_value(&c, "/vcr/migrations/web2-c",
                   "{\"id\":\"1\",\"container\":\"web2-c\",\"from\":\"sb1\",\"to\":\"sb2\","
                   "\"service\":\"web2-c\",\"address\":\"10.0.0.6\",\"data_path\":\"\","
                   "\"carry\":false,\"why\":\"test\",\"phase\":\"port_open\",\"term\":1,"
                   "\"by\":\"s0\"}");
    node_stop(second);
    assert_true(run_until_pred(node_leads, third, 5000));
    mig_wait_container = "web2-c";
    assert_true(run_until_pred(migration_state_is, "done", 10000));
    assert_int_equal(src.destroys, 1);
    assert_int_equal(src.starts, 1);
    assert_int_equal(dst.destroys, 1);
    journaled_kind(third, "migration", phases, sizeof(phases));
    assert_string_equal(phases, "finishing,done");

    agent_conn_free(src.conn);
    agent_conn_free(dst.conn);
    node_stop(third);
    cluster_stop(&c);
}

/* --- a failback in flight across takeovers --- */

/* A host agent whose VM web1 is crashed until a vm_start, which it keeps
 * unanswered (the leader dies with it in flight) while reporting the VM
 * running from then on; it counts the starts and kills it is ordered. */
struct fb_host {
    struct agent_conn *conn;
    const char *vm_state;
    int starts, kills;
    json_t *held;
};

static json_t *fb_host_vms(void *opaque)
{
    struct fb_host *a = opaque;
    return json_pack("[{s:s, s:s, s:i}]", "name", "web1", "state", a->vm_state, "pid", 100);
}

static void fb_host_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    struct fb_host *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "vm_start") == 0) {
        a->starts++;
        a->vm_state = "running";
        json_array_append(a->held, id);
        return;
    }
    if (strcmp(action, "vm_kill") == 0)
        a->kills++;
    agent_conn_reply(a->conn, id, false, "test agent");
}

static const struct agent_conn_ops fb_host_ops = {.vm_list = fb_host_vms, .order = fb_host_order};

/* A standby agent with web1-c running; it keeps its first container_stop
 * unanswered (the leader dies with it in flight) and runs the rest. */
struct fb_standby {
    struct agent_conn *conn;
    int stops, destroys;
    json_t *held;
};

static void fb_standby_order(json_t *id, const char *action, const char *vm, json_t *msg,
                             void *opaque)
{
    struct fb_standby *a = opaque;
    (void)vm;
    (void)msg;
    if (strcmp(action, "container_stop") == 0 && a->stops++ == 0) {
        json_array_append(a->held, id);
        return;
    }
    if (strcmp(action, "container_destroy") == 0)
        a->destroys++;
    agent_conn_reply(a->conn, id, true, NULL);
}

static const struct agent_conn_ops fb_standby_ops = {
    .vm_list = no_vms, .order = fb_standby_order, .hello_extra = warm_container};

static struct cluster *fb_cluster;

/* etcd's state of web1 has a failback in flight at phase arg, or (arg "")
 * none and the service ok. */
static bool failback_in_etcd_is(void *arg)
{
    const char *phase = arg;
    json_t *v = etcd_service_state(fb_cluster, "web1");
    json_t *fb = json_object_get(v, "failback");
    bool is = phase[0] ? strcmp(json_string_value(json_object_get(fb, "phase")) ?: "", phase) == 0
                       : fb == NULL && strcmp(json_string_value(json_object_get(v, "state")) ?: "",
                                              "ok") == 0;
    json_decref(v);
    return is;
}

static bool vm_start_ordered(void *arg)
{
    return ((struct fb_host *)arg)->starts > 0;
}

static bool container_stop_ordered(void *arg)
{
    return ((struct fb_standby *)arg)->stops > 0;
}

/* The failback phases a server journaled, comma-separated. */
static void journaled_failbacks(struct node *n, char *out, size_t size)
{
    journaled_kind(n, "failback", out, size);
}

static bool failback_done_journaled(void *arg)
{
    json_t *d = journaled_failback(arg, "done");
    json_decref(d);
    return d != NULL;
}

/* etcd as a finished recovery of web1 leaves it (served by its container),
 * with `failback` (a JSON member, "" for none) as a predecessor recorded it. */
static void fb_seed_recovered(struct cluster *c, const char *failback)
{
    char value[512];
    snprintf(value, sizeof(value),
             "{\"state\":\"recovered\",\"phase\":\"client_confirmed\",\"rec_id\":\"1\","
             "\"cause\":\"VM web1 crashed\",\"error\":\"\",\"started_ms\":1,"
             "\"on_standby\":true,\"timeline\":[],%s\"term\":1,\"by\":\"s0\"}",
             failback);
    etcd_put_value(c, "/vcr/services/web1", value);
}

/* The servers' config for the failback tests: web1 with a cold container on
 * sb1, DNS at the fence-aware server d, the primary's port, `more` (lines of
 * the service, "" for none) and its boot grace. */
static void fb_config(char *out, size_t size, struct cluster *c, const struct fence_dns *d,
                      uint16_t port, const char *more, unsigned boot_grace_ms)
{
    char path[128];
    fake_dns_write_key(c->dir, path, sizeof(path));
    snprintf(out, size,
             "host_timeout_ms: 3000\n"
             "dns: {server: 127.0.0.1:%u, zone: vcr.lab, key_file: %s}\n"
             "services:\n"
             "  - name: web1\n"
             "    dns_name: web1.vcr.lab\n"
             "%s"
             "    primary: {host: host1, vm: web1, address: 127.0.0.2, port: %u}\n"
             "    check: {type: tcp, interval_ms: 200, timeout_ms: 150, failures: 3,"
             " boot_grace_ms: %u}\n"
             "    standby: {mode: cold, host: sb1, container: web1-c, address: 127.0.0.3}\n",
             d->sock.port, path, more, port, boot_grace_ms);
}

/* A failback of web1 (cold container on sb1, DNS through a fence-aware
 * server) across two takeovers, each by kill of the leader with an order in
 * flight.  The first leader records `started` in etcd before ordering
 * vm_start, which the host keeps; it dies.  The second resumes after
 * `started`: the primary runs (the vm_start in flight started it), so
 * `primary_started` and no vm_start again (nor a kill of the primary a
 * failback started), probe, DNS back (once, under its fence),
 * `dns_updated`; its container_stop is kept on sb1 and it dies.  The third
 * resumes after `dns_updated`: no DNS switch again, the container stopped
 * (the stop in flight repeated, never done twice) and destroyed once, done.
 * In etcd each phase is one record (version 1) by the term that did it;
 * each server journaled the phases it did, none twice across the three. */
static void test_servers_takeover_mid_failback(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    fb_cluster = &c;
    struct fence_dns d;
    fence_dns_start(&d);
    /* The primary's port, on 127.0.0.2. */
    uint16_t port = free_port();
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.2", &sin.sin_addr);
    struct evconnlistener *listener = evconnlistener_new_bind(
        base, on_port_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 16,
        (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(listener);
    /* Recovered to the container, as a finished recovery leaves it. */
    fb_seed_recovered(&c, "");
    char extra[1024];
    fb_config(extra, sizeof(extra), &c, &d, port, "", 20000);
    struct node n[3] = {{0}};
    node_start_with(&n[0], "s1", &c, c.dir, extra);
    assert_true(run_until_pred(node_leads, &n[0], 5000));
    node_start_with(&n[1], "s2", &c, c.dir, extra);
    node_start_with(&n[2], "s3", &c, c.dir, extra);
    int64_t term = ha_term(server_ha(n[0].srv));
    struct dns_wait w = {.d = &d, .fence = term};
    assert_true(run_until_pred(fence_is, &w, 5000));

    char servers[96];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", n[0].port,
             n[1].port, n[2].port);
    struct fb_host h = {.vm_state = "crashed", .held = json_array()};
    struct fb_standby sb = {.held = json_array()};
    h.conn = agent_connect(servers, "host1", "host", &fb_host_ops, &h);
    sb.conn = agent_connect(servers, "sb1", "standby", &fb_standby_ops, &sb);
    agent_conn_start(h.conn);
    agent_conn_start(sb.conn);
    assert_true(run_until_pred(host_on, &n[0], 5000));
    assert_true(run_until_pred(standby_on, &n[0], 5000));

    vcr_error_t err = NULL;
    json_t *r = recovery_failback(server_recovery(n[0].srv), "web1", &err);
    if (r == NULL)
        fail_msg("%s", vcr_error_msg(err));
    json_decref(r);
    /* `started` is in etcd before vm_start is ordered. */
    assert_true(run_until_pred(vm_start_ordered, &h, 5000));
    assert_true(failback_in_etcd_is("started"));
    char phases[256];
    journaled_failbacks(&n[0], phases, sizeof(phases));
    assert_string_equal(phases, "started");

    node_stop(&n[0]); /* with vm_start in flight */
    assert_true(run_until_pred(other_leads, &n[1], 5000));
    struct node *second = node_leads(&n[1]) ? &n[1] : &n[2];
    struct node *third = second == &n[1] ? &n[2] : &n[1];
    int64_t term2 = ha_term(server_ha(second->srv));
    assert_true(term2 > term);
    assert_true(run_until_pred(container_stop_ordered, &sb, 15000));
    assert_true(run_until_pred(failback_in_etcd_is, "dns_updated", 5000));
    assert_int_equal(d.fence, term2);
    assert_string_equal(d.address, "127.0.0.2");
    assert_int_equal(d.a_changes, 1);
    assert_int_equal(h.starts, 1);
    assert_int_equal(h.kills, 0);
    journaled_failbacks(second, phases, sizeof(phases));
    assert_string_equal(phases, "resumed,primary_started,primary_ok,dns_updated");

    node_stop(second); /* with container_stop in flight */
    assert_true(run_until_pred(node_leads, third, 5000));
    int64_t term3 = ha_term(server_ha(third->srv));
    assert_true(term3 > term2);
    assert_true(run_until_pred(failback_in_etcd_is, "", 15000));
    assert_int_equal(d.a_changes, 1);
    assert_int_equal(h.starts, 1);
    assert_int_equal(h.kills, 0);
    assert_int_equal(sb.stops, 2);
    assert_int_equal(sb.destroys, 1);
    /* Journaled once the txn's answer came (etcd may have it a moment before). */
    assert_true(run_until_pred(failback_done_journaled, third, 5000));
    journaled_failbacks(third, phases, sizeof(phases));
    assert_string_equal(phases, "resumed,container_stopped,done");

    /* etcd: each phase recorded once (never rewritten), by the term that did it. */
    json_t *recs = etcd_list(&c, "/vcr/failbacks/web1/");
    assert_int_equal(json_object_size(recs), 6);
    const char *key;
    json_t *kv;
    char fb_id[32] = "";
    json_object_foreach(recs, key, kv)
    {
        assert_int_equal(json_integer_value(json_object_get(kv, "create_revision")),
                         json_integer_value(json_object_get(kv, "mod_revision")));
        json_t *v = json_loads(json_string_value(json_object_get(kv, "value")), 0, NULL);
        assert_non_null(v);
        const char *phase = json_string_value(json_object_get(v, "phase"));
        if (fb_id[0] == '\0')
            snprintf(fb_id, sizeof(fb_id), "%s",
                     json_string_value(json_object_get(v, "failback_id")));
        assert_string_equal(json_string_value(json_object_get(v, "failback_id")), fb_id);
        int64_t want = term3;
        if (strcmp(phase, "started") == 0)
            want = term;
        else if (strstr(",primary_started,primary_ok,dns_updated,", phase))
            want = term2;
        else
            assert_true(strcmp(phase, "container_stopped") == 0 || strcmp(phase, "done") == 0);
        assert_int_equal(json_integer_value(json_object_get(v, "term")), want);
        json_decref(v);
    }
    json_decref(recs);

    agent_conn_free(h.conn);
    agent_conn_free(sb.conn);
    json_decref(h.held);
    json_decref(sb.held);
    node_stop(third);
    evconnlistener_free(listener);
    fence_dns_stop(&d);
    cluster_stop(&c);
}

/* A standby agent with web1-c running that records its container_address
 * orders (take or release) in the order of all its orders, and runs them all. */
struct fb_address_standby {
    struct agent_conn *conn;
    int releases, takes;
};

static void fb_address_order(json_t *id, const char *action, const char *vm, json_t *msg,
                             void *opaque)
{
    struct fb_address_standby *a = opaque;
    (void)vm;
    if (strcmp(action, "container_address") == 0) {
        if (json_is_true(json_object_get(msg, "take")))
            a->takes++;
        else
            a->releases++;
    }
    agent_conn_reply(a->conn, id, true, NULL);
}

static const struct agent_conn_ops fb_address_standby_ops = {
    .vm_list = no_vms, .order = fb_address_order, .hello_extra = warm_container};

static struct node *fb_node;

static bool failback_failed_journaled(void *arg)
{
    (void)arg;
    json_t *d = journaled_failback(fb_node, "failed");
    json_decref(d);
    return d != NULL;
}

/* A failback whose leader died after `started` with its vm_start in flight,
 * of a service with `takeover: address` (cold container on sb1): the primary
 * the predecessor started runs, and does not answer (a guest still booting).
 * The successor releases the address first (the container would answer the
 * primary's probe on it): `address_released`, then `primary_started`, no
 * vm_start again; and it waits for the primary up to the boot grace counted
 * from the resume (2000 ms here), not the 10 s given to a primary that ran
 * when the failback was asked for.  Without the release on resume the phases read
 * resumed,primary_started,failed and no release is ordered; without the boot grace the failure says
 * "within 10000 ms". */
static void test_servers_resumed_failback_releases_and_waits_boot(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    fb_cluster = &c;
    struct fence_dns d;
    fence_dns_start(&d);
    uint16_t port = free_port(); /* nothing listens: the primary does not answer */
    fb_seed_recovered(&c, "\"failback\":{\"id\":\"7\",\"phase\":\"started\"},");
    char extra[1024];
    fb_config(extra, sizeof(extra), &c, &d, port, "    takeover: address\n", 2000);
    struct node n = {0};
    node_start_with(&n, "s1", &c, c.dir, extra);
    fb_node = &n;
    assert_true(run_until_pred(node_leads, &n, 5000));
    char servers[32];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", n.port);
    /* The predecessor's vm_start in flight has started the primary. */
    struct fb_host h = {.vm_state = "running", .held = json_array()};
    struct fb_address_standby sb = {0};
    h.conn = agent_connect(servers, "host1", "host", &fb_host_ops, &h);
    sb.conn = agent_connect(servers, "sb1", "standby", &fb_address_standby_ops, &sb);
    agent_conn_start(h.conn);
    agent_conn_start(sb.conn);

    assert_true(run_until_pred(failback_failed_journaled, NULL, 15000));
    char phases[256];
    journaled_failbacks(&n, phases, sizeof(phases));
    assert_string_equal(phases, "resumed,address_released,primary_started,failed");
    assert_int_equal(sb.releases, 1);
    assert_int_equal(sb.takes, 0);
    assert_int_equal(h.starts, 0);
    assert_int_equal(h.kills, 0);
    json_t *failed = journaled_failback(&n, "failed");
    const char *error = json_string_value(json_object_get(failed, "error"));
    assert_non_null(error);
    if (strstr(error, "did not answer within 2000 ms") == NULL)
        fail_msg("failed: %s", error);
    json_decref(failed);
    /* The failback's end is in etcd (no failback member), the service still recovered. */
    json_t *v = etcd_service_state(&c, "web1");
    assert_null(json_object_get(v, "failback"));
    assert_string_equal(json_string_value(json_object_get(v, "state")), "recovered");
    json_decref(v);

    agent_conn_free(h.conn);
    agent_conn_free(sb.conn);
    json_decref(h.held);
    node_stop(&n);
    fence_dns_stop(&d);
    cluster_stop(&c);
}

static int group_teardown(void **state)
{
    (void)state;
    event_base_free(base);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_etcd_client, test_teardown),
        cmocka_unit_test_teardown(test_etcd_endpoints, test_teardown),
        cmocka_unit_test_teardown(test_ha_election_and_takeover, test_teardown),
        cmocka_unit_test_teardown(test_ha_steps_down_without_etcd, test_teardown),
        cmocka_unit_test_teardown(test_ha_member_down_and_quorum_lost, test_teardown),
        cmocka_unit_test_teardown(test_servers_agent_follows_the_leader, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_mid_recovery, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_at_the_dns_step, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_keeps_auto_failback_timers, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_keeps_warm_restart_window, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_mid_migration, test_teardown),
        cmocka_unit_test_teardown(test_servers_takeover_mid_failback, test_teardown),
        cmocka_unit_test_teardown(test_servers_resumed_failback_releases_and_waits_boot,
                                  test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
