/* vcr-loadgen: many simulated agents on one event loop, for `make bench-scale`
 * (bench/scale.py, bench/results/scale.md).
 *
 * Each simulated host speaks the real agent protocol (docs/protocol.md) over the
 * real mutual TLS, with its own certificate (`vcr pki issue HOST`): hello with
 * its VMs, a heartbeat every `heartbeat_ms` of the welcome, a sample every
 * --sample-ms, and a reply to every order as an agent would give it.  A few
 * standby hosts (role standby) answer the container orders of recoveries.
 * During the measured window it times each heartbeat's echo (the echo of the
 * heartbeat sent right after a sample is the sample's time: frames of one
 * connection are handled in order) and injects --crashes `vm_event crashed` on
 * random VMs, timing the first `vm_kill` order that comes back for each.
 * It also accepts (and closes at once) the server's TCP probes on --listen
 * addresses, so that the services' checks pass.
 *
 * Output: lines `WINDOW_START <wall_ms>` / `WINDOW_END <wall_ms>` on stdout as
 * the window opens and closes, then one JSON object (--out FILE). */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "proto/proto.h"
#include "proto/proto_tls.h"

enum { VM_RUNNING, VM_CRASHED };

struct sim_vm {
    char name[48];
    int state;
    int crash; /* index into crashes, -1 */
};

struct sim_host {
    char name[32];
    bool standby;
    struct proto_tls *tls;
    struct proto_conn *conn;
    bool welcomed;
    int64_t reconnect_at_ms; /* mono; 0: not waiting */
    int64_t heartbeat_ms;
    int64_t seq;
    int64_t next_sample_ms;
    struct {
        int64_t seq;
        int64_t sent_us;
        bool sample;
    } inflight[8];
    struct event *tick;
    struct sim_vm *vms;
    size_t n_vms;
};

struct crash {
    size_t host, vm;
    int64_t sent_wall_us;
    int64_t order_wall_us; /* first vm_kill for it; 0: none yet */
    char action[32];
};

struct samples {
    double *v;
    size_t n, cap;
};

static struct {
    struct event_base *base;
    const char *server, *server_name, *pki;
    size_t n_hosts, n_standby, n_vms, n_crashes;
    int64_t sample_ms, warmup_ms, window_ms, tail_ms, max_pending;
    struct sim_host *hosts;
    size_t total;
    size_t next_connect;
    size_t pending; /* connecting, not yet welcomed */
    size_t welcomed;
    bool all_welcomed_once;
    int64_t all_welcomed_ms;
    int64_t window_start_wall, window_end_wall;
    bool in_window, done;
    struct samples hb, sample;
    struct crash *crashes;
    size_t crashes_sent;
    uint64_t closes, errors, orders, heartbeats, samples_sent, probes;
    uint64_t orders_by_action[8];
    const char *out;
    unsigned rng;
} g;

static int64_t wall_us(void)
{
    return vcr_clock_ns(CLOCK_REALTIME) / 1000;
}

static void samples_add(struct samples *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4096;
        double *nv = realloc(s->v, cap * sizeof(*nv));
        if (nv == NULL)
            return;
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(struct samples *s, double p)
{
    if (s->n == 0)
        return NAN;
    size_t i = (size_t)ceil(p / 100.0 * (double)s->n);
    if (i > 0)
        i--;
    if (i >= s->n)
        i = s->n - 1;
    return s->v[i];
}

static void send_msg(struct sim_host *h, json_t *msg)
{
    vcr_error_t err = NULL;
    if (msg == NULL || h->conn == NULL || proto_conn_send(h->conn, msg, &err) < 0) {
        g.errors++;
        vcr_error_release(&err);
    }
    json_decref(msg);
}

static json_t *vm_object(const struct sim_vm *vm)
{
    return json_pack("{s:s, s:s, s:i, s:s, s:i, s:i, s:s, s:s}", "name", vm->name, "state",
                     vm->state == VM_RUNNING ? "running" : "crashed", "pid", 1000, "address",
                     "127.0.0.1", "memory_mb", 256, "vcpus", 1, "accel", "tcg", "cause",
                     vm->state == VM_RUNNING ? "started" : "qemu killed by signal 9");
}

static void send_hello(struct sim_host *h)
{
    json_t *body;
    if (h->standby) {
        body = json_pack("{s:s, s:s, s:s, s:i, s:s, s:[], s:[]}", "host", h->name, "role",
                         "standby", "agent_version", "loadgen", "pid", (int)getpid(), "accel",
                         "none", "vms", "containers");
    } else {
        json_t *vms = json_array();
        for (size_t i = 0; i < h->n_vms; i++)
            json_array_append_new(vms, vm_object(&h->vms[i]));
        body = json_pack("{s:s, s:s, s:s, s:i, s:s, s:o, s:{s:i, s:s}}", "host", h->name, "role",
                         "host", "agent_version", "loadgen", "pid", (int)getpid(), "accel", "tcg",
                         "vms", vms, "self_fence", "timeout_ms", 8000, "watchdog", "armed");
    }
    send_msg(h, proto_msg_new("hello", body));
}

static void send_sample(struct sim_host *h)
{
    json_t *vms = json_array();
    for (size_t i = 0; i < h->n_vms; i++)
        if (h->vms[i].state == VM_RUNNING)
            json_array_append_new(vms, json_pack("{s:s, s:f, s:i}", "vm", h->vms[i].name, "cpu_pct",
                                                 3.5 + (double)(i % 7), "rss_kb",
                                                 200000 + (int)(i % 1000)));
    json_t *body = json_pack("{s:I, s:o}", "ts_ms", (json_int_t)vcr_wall_ms(), "vms", vms);
    if (h->standby) {
        json_object_set_new(body, "containers", json_array());
        json_object_set_new(body, "vm_load",
                            json_pack("{s:f, s:i, s:i, s:i}", "cpu_pct", 5.0, "ncpus", 2,
                                      "mem_total_kb", 2000000, "mem_used_kb", 500000));
    }
    send_msg(h, proto_msg_new("sample", body));
    g.samples_sent++;
}

static void host_tick(evutil_socket_t fd, short what, void *arg)
{
    struct sim_host *h = arg;
    (void)fd;
    (void)what;
    if (!h->welcomed)
        return;
    int64_t now = vcr_mono_ms();
    bool sample = now >= h->next_sample_ms;
    if (sample) {
        send_sample(h);
        h->next_sample_ms = now + g.sample_ms;
    }
    h->seq++;
    int slot = (int)(h->seq % 8);
    h->inflight[slot].seq = h->seq;
    h->inflight[slot].sent_us = vcr_mono_us();
    h->inflight[slot].sample = sample;
    send_msg(h, proto_msg_new("heartbeat", json_pack("{s:I, s:I}", "seq", (json_int_t)h->seq,
                                                     "ts_ms", (json_int_t)vcr_wall_ms())));
    g.heartbeats++;
    struct timeval tv = {h->heartbeat_ms / 1000, (h->heartbeat_ms % 1000) * 1000};
    evtimer_add(h->tick, &tv);
}

static struct sim_vm *find_vm(struct sim_host *h, const char *name)
{
    /* Names are vm-H-I: parse I instead of searching. */
    if (name == NULL)
        return NULL;
    const char *dash = strrchr(name, '-');
    if (dash == NULL)
        return NULL;
    size_t i = strtoul(dash + 1, NULL, 10);
    if (i < h->n_vms && strcmp(h->vms[i].name, name) == 0)
        return &h->vms[i];
    return NULL;
}

static const char *const actions[] = {
    "vm_kill",         "vm_stop",        "vm_start",          "container_create",
    "container_start", "container_stop", "container_destroy", NULL};

static void on_order(struct sim_host *h, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    const char *action = json_string_value(json_object_get(msg, "action"));
    const char *name = json_string_value(json_object_get(msg, "vm"));
    if (name == NULL)
        name = json_string_value(json_object_get(msg, "name"));
    g.orders++;
    int a = 7;
    for (int i = 0; actions[i]; i++)
        if (action && strcmp(actions[i], action) == 0)
            a = i;
    g.orders_by_action[a]++;
    json_t *reply = json_pack("{s:O}", "id", id);
    struct sim_vm *vm = h->standby ? NULL : find_vm(h, name);
    if (vm && vm->crash >= 0 && g.crashes[vm->crash].order_wall_us == 0) {
        g.crashes[vm->crash].order_wall_us = wall_us();
        snprintf(g.crashes[vm->crash].action, sizeof(g.crashes[vm->crash].action), "%s",
                 action ? action : "?");
    }
    if (a == 0 || a == 1) { /* vm_kill, vm_stop: a crashed VM is not running */
        if (vm == NULL) {
            json_object_set_new(reply, "ok", json_false());
            json_object_set_new(reply, "code", json_string("absent"));
            json_object_set_new(reply, "error", json_string("no such VM"));
        } else if (vm->state != VM_RUNNING) {
            json_object_set_new(reply, "ok", json_false());
            json_object_set_new(reply, "code", json_string("stopped"));
            json_object_set_new(reply, "error", json_string("the VM is not running"));
        } else {
            json_object_set_new(reply, "ok", json_true());
        }
    } else if (a == 2) {
        json_object_set_new(reply, "ok", json_true());
    } else if (a >= 3 && a <= 5) {
        json_object_set_new(reply, "ok", json_true());
        json_object_set_new(reply, "ms", json_integer(1));
        json_t *address = json_object_get(msg, "address");
        json_object_set_new(
            reply, "container",
            json_pack("{s:s, s:s, s:s, s:s, s:n, s:n}", "name", name ? name : "?", "service",
                      name ? name : "?", "state", a == 5 ? "stopped" : "running", "address",
                      json_is_string(address) ? json_string_value(address) : "127.0.0.2", "cpu_pct",
                      "mem_kb"));
    } else if (a == 6) {
        json_object_set_new(reply, "ok", json_true());
        json_object_set_new(reply, "ms", json_integer(1));
    } else {
        json_object_set_new(reply, "ok", json_false());
        json_object_set_new(reply, "code", json_string("unsupported"));
        json_object_set_new(reply, "error", json_string("the load generator does not do this"));
    }
    send_msg(h, proto_msg_new("reply", reply));
}

static void on_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct sim_host *h = opaque;
    (void)c;
    const char *type = proto_msg_type(msg);
    if (strcmp(type, "heartbeat") == 0) {
        int64_t seq = json_integer_value(json_object_get(msg, "seq"));
        int slot = (int)(seq % 8);
        if (h->inflight[slot].seq == seq && h->inflight[slot].sent_us) {
            double ms = (double)(vcr_mono_us() - h->inflight[slot].sent_us) / 1000.0;
            if (g.in_window)
                samples_add(h->inflight[slot].sample ? &g.sample : &g.hb, ms);
            h->inflight[slot].sent_us = 0;
        }
    } else if (strcmp(type, "welcome") == 0) {
        h->welcomed = true;
        h->heartbeat_ms = json_integer_value(json_object_get(msg, "heartbeat_ms"));
        if (h->heartbeat_ms <= 0)
            h->heartbeat_ms = 1000;
        g.pending--;
        g.welcomed++;
        /* Spread the hosts' ticks over the interval, as independent agents are. */
        int64_t phase = rand_r(&g.rng) % h->heartbeat_ms;
        h->next_sample_ms = vcr_mono_ms() + phase + rand_r(&g.rng) % g.sample_ms;
        struct timeval tv = {phase / 1000, (phase % 1000) * 1000};
        evtimer_add(h->tick, &tv);
    } else if (strcmp(type, "order") == 0) {
        on_order(h, msg);
    } else if (strcmp(type, "error") == 0) {
        g.errors++;
        fprintf(stderr, "loadgen: %s: server error: %s\n", h->name,
                json_string_value(json_object_get(msg, "message")));
    }
}

static void on_connected(struct proto_conn *c, void *opaque)
{
    (void)c;
    send_hello(opaque);
}

static void on_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct sim_host *h = opaque;
    (void)c;
    g.closes++;
    if (!g.done)
        fprintf(stderr, "loadgen: %s: closed: %s\n", h->name, reason);
    if (h->welcomed)
        g.welcomed--;
    else
        g.pending--;
    h->welcomed = false;
    evtimer_del(h->tick);
    proto_conn_free(h->conn);
    h->conn = NULL;
    h->reconnect_at_ms = vcr_mono_ms() + 1000;
}

static const struct proto_conn_ops conn_ops = {
    .message = on_message,
    .connected = on_connected,
    .closed = on_closed,
};

static void connect_host(struct sim_host *h)
{
    vcr_error_t err = NULL;
    h->reconnect_at_ms = 0;
    h->conn = proto_conn_connect(g.base, g.server, h->tls, g.server_name, &conn_ops, h, &err);
    if (h->conn == NULL) {
        fprintf(stderr, "loadgen: %s: %s\n", h->name, vcr_error_msg(err));
        vcr_error_release(&err);
        h->reconnect_at_ms = vcr_mono_ms() + 1000;
        return;
    }
    g.pending++;
}

static void inject_crash(void)
{
    if (g.n_hosts == 0 || g.crashes_sent >= g.n_crashes)
        return;
    for (int tries = 0; tries < 1000; tries++) {
        struct sim_host *h = &g.hosts[rand_r(&g.rng) % g.n_hosts];
        if (!h->welcomed || h->n_vms == 0)
            continue;
        struct sim_vm *vm = &h->vms[rand_r(&g.rng) % h->n_vms];
        if (vm->state != VM_RUNNING)
            continue;
        vm->state = VM_CRASHED;
        struct crash *cr = &g.crashes[g.crashes_sent];
        vm->crash = (int)g.crashes_sent;
        cr->host = (size_t)(h - g.hosts);
        cr->vm = (size_t)(vm - h->vms);
        cr->sent_wall_us = wall_us();
        g.crashes_sent++;
        send_msg(h, proto_msg_new("vm_event",
                                  json_pack("{s:s, s:s, s:s, s:I, s:i}", "vm", vm->name, "state",
                                            "crashed", "cause", "qemu killed by signal 9", "ts_ms",
                                            (json_int_t)(cr->sent_wall_us / 1000), "pid", 1000)));
        return;
    }
}

/* Every 10 ms: connect (at most max_pending at once: the server keeps 64
 * connections without a hello, docs/server.md "Limits"), open and close the
 * window, inject the crashes evenly over it. */
static void cron(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int64_t now = vcr_mono_ms();
    for (size_t i = 0; i < g.total && g.pending < (size_t)g.max_pending; i++) {
        struct sim_host *h = &g.hosts[(g.next_connect + i) % g.total];
        if (h->conn == NULL && h->reconnect_at_ms && h->reconnect_at_ms <= now) {
            connect_host(h);
            g.next_connect = (g.next_connect + i + 1) % g.total;
            i = (size_t)-1; /* continue from the new cursor */
        }
    }
    if (!g.all_welcomed_once && g.welcomed == g.total) {
        g.all_welcomed_once = true;
        g.all_welcomed_ms = now;
        fprintf(stderr, "loadgen: all %zu hosts welcomed\n", g.total);
    }
    if (!g.all_welcomed_once)
        return;
    int64_t t = now - g.all_welcomed_ms;
    if (!g.in_window && g.window_start_wall == 0 && t >= g.warmup_ms) {
        g.in_window = true;
        g.window_start_wall = vcr_wall_ms();
        printf("WINDOW_START %lld\n", (long long)g.window_start_wall);
        fflush(stdout);
    }
    if (g.in_window) {
        int64_t w = t - g.warmup_ms;
        /* Crashes at (k + 0.5) / n of the window. */
        while (g.crashes_sent < g.n_crashes &&
               w * (int64_t)g.n_crashes >= ((int64_t)g.crashes_sent * 2 + 1) * g.window_ms / 2)
            inject_crash();
        if (w >= g.window_ms) {
            g.in_window = false;
            g.window_end_wall = vcr_wall_ms();
            printf("WINDOW_END %lld\n", (long long)g.window_end_wall);
            fflush(stdout);
        }
    }
    if (g.window_end_wall && t >= g.warmup_ms + g.window_ms + g.tail_ms) {
        g.done = true;
        event_base_loopexit(g.base, NULL);
    }
}

static void on_probe(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                     void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    g.probes++;
    close(fd);
}

static void add_listener(const char *addr)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) < 0) {
        fprintf(stderr, "loadgen: --listen %s: not ADDR:PORT\n", addr);
        exit(2);
    }
    if (evconnlistener_new_bind(g.base, on_probe, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                                4096, (struct sockaddr *)&ss, len) == NULL) {
        fprintf(stderr, "loadgen: --listen %s: %s\n", addr, strerror(errno));
        exit(1);
    }
}

static void write_stats(FILE *f, const char *key, struct samples *s)
{
    qsort(s->v, s->n, sizeof(double), cmp_double);
    fprintf(f, "\"%s\": {\"n\": %zu, \"p50\": %.3f, \"p99\": %.3f, \"max\": %.3f}", key, s->n,
            s->n ? pct(s, 50) : 0.0, s->n ? pct(s, 99) : 0.0, s->n ? s->v[s->n - 1] : 0.0);
}

static void write_out(void)
{
    FILE *f = g.out ? fopen(g.out, "w") : stdout;
    if (f == NULL) {
        perror(g.out);
        exit(1);
    }
    fprintf(f, "{\"hosts\": %zu, \"standby\": %zu, \"vms\": %zu, \"window\": [%lld, %lld], ",
            g.n_hosts, g.n_standby, g.n_vms, (long long)g.window_start_wall,
            (long long)g.window_end_wall);
    write_stats(f, "hb_rtt_ms", &g.hb);
    fprintf(f, ", ");
    write_stats(f, "sample_rtt_ms", &g.sample);
    fprintf(f,
            ", \"closes\": %llu, \"errors\": %llu, \"orders\": %llu, \"heartbeats\": %llu, "
            "\"samples\": %llu, \"probes_accepted\": %llu, \"orders_by_action\": {",
            (unsigned long long)g.closes, (unsigned long long)g.errors,
            (unsigned long long)g.orders, (unsigned long long)g.heartbeats,
            (unsigned long long)g.samples_sent, (unsigned long long)g.probes);
    for (int i = 0; i < 8; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", actions[i] ? actions[i] : "other",
                (unsigned long long)g.orders_by_action[i]);
    fprintf(f, "}, \"crashes\": [");
    for (size_t i = 0; i < g.crashes_sent; i++) {
        struct crash *c = &g.crashes[i];
        fprintf(f,
                "%s{\"host\": \"%s\", \"vm\": \"%s\", \"sent_us\": %lld, \"order_us\": %lld, "
                "\"action\": \"%s\"}",
                i ? ", " : "", g.hosts[c->host].name, g.hosts[c->host].vms[c->vm].name,
                (long long)c->sent_wall_us, (long long)c->order_wall_us, c->action);
    }
    fprintf(f, "]}\n");
    if (f != stdout)
        fclose(f);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vcr-loadgen --server HOST:PORT --pki DIR --hosts N --vms N [options]\n"
               "  --server-name NAME  the name the server's certificate must show (HOST)\n"
               "  --pki DIR           ca.crt and HOST.crt/HOST.key for each simulated host:\n"
               "                      host-0..host-(N-1), standby-0..standby-(S-1)\n"
               "  --standby S         simulated standby hosts (1)\n"
               "  --sample-ms MS      sample interval (1000, the agent's default)\n"
               "  --warmup-s S        after all hosts are welcomed, before the window (5)\n"
               "  --window-s S        the measured window (30)\n"
               "  --tail-s S          after the window, for late orders (5)\n"
               "  --crashes N         vm_event crashed injected over the window (0)\n"
               "  --max-pending N     connections opened at once before their welcome (32)\n"
               "  --listen ADDR:PORT  accept and close TCP probes there (repeatable)\n"
               "  --out FILE          the JSON results (stdout)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'},
        {"server-name", required_argument, NULL, 'n'},
        {"pki", required_argument, NULL, 'p'},
        {"hosts", required_argument, NULL, 'H'},
        {"vms", required_argument, NULL, 'V'},
        {"standby", required_argument, NULL, 'S'},
        {"sample-ms", required_argument, NULL, 'm'},
        {"warmup-s", required_argument, NULL, 'w'},
        {"window-s", required_argument, NULL, 'W'},
        {"tail-s", required_argument, NULL, 't'},
        {"crashes", required_argument, NULL, 'c'},
        {"max-pending", required_argument, NULL, 'P'},
        {"listen", required_argument, NULL, 'l'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listens[8];
    int n_listens = 0;
    g.n_standby = 1;
    g.sample_ms = 1000;
    g.warmup_ms = 5000;
    g.window_ms = 30000;
    g.tail_ms = 5000;
    g.max_pending = 32;
    g.rng = (unsigned)getpid();
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's':
            g.server = optarg;
            break;
        case 'n':
            g.server_name = optarg;
            break;
        case 'p':
            g.pki = optarg;
            break;
        case 'H':
            g.n_hosts = strtoul(optarg, NULL, 10);
            break;
        case 'V':
            g.n_vms = strtoul(optarg, NULL, 10);
            break;
        case 'S':
            g.n_standby = strtoul(optarg, NULL, 10);
            break;
        case 'm':
            g.sample_ms = atoll(optarg);
            break;
        case 'w':
            g.warmup_ms = atoll(optarg) * 1000;
            break;
        case 'W':
            g.window_ms = atoll(optarg) * 1000;
            break;
        case 't':
            g.tail_ms = atoll(optarg) * 1000;
            break;
        case 'c':
            g.n_crashes = strtoul(optarg, NULL, 10);
            break;
        case 'P':
            g.max_pending = atoll(optarg);
            break;
        case 'l':
            if (n_listens < 8)
                listens[n_listens++] = optarg;
            break;
        case 'o':
            g.out = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (g.server == NULL || g.pki == NULL || g.n_hosts == 0 || g.sample_ms <= 0 ||
        g.max_pending <= 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g.base = event_base_new();
    g.total = g.n_hosts + g.n_standby;
    g.hosts = calloc(g.total, sizeof(*g.hosts));
    g.crashes = calloc(g.n_crashes + 1, sizeof(*g.crashes));
    char ca[4096], cert[4096], key[4096];
    snprintf(ca, sizeof(ca), "%s/ca.crt", g.pki);
    for (size_t i = 0; i < g.total; i++) {
        struct sim_host *h = &g.hosts[i];
        h->standby = i >= g.n_hosts;
        if (h->standby)
            snprintf(h->name, sizeof(h->name), "standby-%zu", i - g.n_hosts);
        else
            snprintf(h->name, sizeof(h->name), "host-%zu", i);
        snprintf(cert, sizeof(cert), "%s/%s.crt", g.pki, h->name);
        snprintf(key, sizeof(key), "%s/%s.key", g.pki, h->name);
        struct proto_tls_files files = {.ca = ca, .cert = cert, .key = key};
        vcr_error_t err = NULL;
        h->tls = proto_tls_new(PROTO_TLS_CLIENT, &files, &err);
        if (h->tls == NULL) {
            fprintf(stderr, "loadgen: %s: %s\n", h->name, vcr_error_msg(err));
            return 1;
        }
        h->tick = evtimer_new(g.base, host_tick, h);
        h->reconnect_at_ms = 1;
        if (!h->standby) {
            /* VMs spread evenly: host i has vm-i-0 .. */
            h->n_vms = g.n_vms / g.n_hosts + (i < g.n_vms % g.n_hosts);
            h->vms = calloc(h->n_vms ? h->n_vms : 1, sizeof(*h->vms));
            for (size_t j = 0; j < h->n_vms; j++) {
                snprintf(h->vms[j].name, sizeof(h->vms[j].name), "vm-%zu-%zu", i, j);
                h->vms[j].crash = -1;
            }
        }
    }
    for (int i = 0; i < n_listens; i++)
        add_listener(listens[i]);
    struct event *tick = event_new(g.base, -1, EV_PERSIST, cron, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    event_base_dispatch(g.base);
    write_out();
    return 0;
}
