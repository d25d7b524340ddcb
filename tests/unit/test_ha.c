/* The etcd client and leader election against real etcd (Debian's
 * etcd-server, started here on loopback ports: one member, or three for the
 * member-down case).  Waits run the event loop until a condition holds or a
 * deadline passes; nothing sleeps a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent_conn.h"
#include "common/clock.h"
#include "common/log.h"
#include "ha/etcd.h"
#include "ha/ha.h"
#include "server/inventory.h"
#include "server/server.h"
#include "config/server_config.h"

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
                           .lease_ttl_s = 1,
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
    struct instance a = {0}, b = {0};
    instance_new(&c, 3, "sa", &a);
    run_until_leader(&a, &b, 5000);
    instance_new(&c, 3, "sb", &b);
    int64_t term = a.term;
    /* The raft leader goes away: the others elect one among them. */
    size_t gone = raft_leader(&c);
    kill(c.m[gone].pid, SIGSTOP);
    /* Several lease TTLs pass without a change. */
    int64_t until = vcr_mono_ms() + 3000;
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

static void node_start(struct node *n, const char *name, struct cluster *c, const char *dir)
{
    n->port = free_port();
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "listen: 127.0.0.1:%u\napi: 127.0.0.1:%u\njournal: %s/%s.db\nheartbeat_ms: 100\n"
             "insecure: true\nha: {etcd: ['%s'], name: %s, lease_ttl_s: 1}\n",
             n->port, free_port(), dir, name, c->urls[0], name);
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

/* Two real servers on one etcd and the agent's real connection code: the agent,
 * sent to the follower first, is redirected to the leader; the leader dies
 * (freed: no lease revoked, its connections closed); the follower leads with a
 * higher term and the agent is on it, heard again, without being restarted. */
static void test_servers_agent_follows_the_leader(void **state)
{
    (void)state;
    static struct cluster c; /* static: the teardown reads it after a failure */
    cluster_start(&c, 1);
    struct node n[2] = {{0}};
    node_start(&n[0], "s1", &c, c.dir);
    assert_true(run_until_pred(either_leads, n, 5000));
    node_start(&n[1], "s2", &c, c.dir);
    struct node *leader = node_leads(&n[0]) ? &n[0] : &n[1];
    struct node *follower = leader == &n[0] ? &n[1] : &n[0];
    int64_t term = ha_term(server_ha(leader->srv));
    /* The follower must know who leads before the agent asks it. */
    int64_t deadline = vcr_mono_ms() + 5000;
    while (ha_leader(server_ha(follower->srv))->agents_addr == NULL && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_ONCE);

    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u,127.0.0.1:%u", follower->port, leader->port);
    struct fake_agent a = {0};
    struct agent_conn_params p = {
        .server = servers, .host = "host1", .role = "host", .accel = "tcg"};
    vcr_error_t err = NULL;
    a.conn = agent_conn_new(base, &p, &agent_ops, &a, &err);
    assert_non_null(a.conn);
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
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
