/* vcr-server: configuration, journal, inventory and liveness with an explicit
 * clock, then the server in-process with a fake agent over loopback TCP and
 * HTTP requests to its API.  Waits run the event loop until a condition holds
 * or a deadline passes; nothing sleeps a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "pki/pki.h"
#include "proto/proto.h"
#include "server/agents.h"
#include "common/hostport.h"
#include "server/api.h"
#include "server/api_auth.h"
#include "server/api_priv.h"
#include "server/chunk_copy.h"
#include "server/images.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/server.h"
#include "config/server_config.h"
#include "server/sse.h"

#define TEST_KEY "0123456789abcdef-test-key"

static void assert_contains(const char *haystack, const char *needle)
{
    if (haystack == NULL || strstr(haystack, needle) == NULL)
        fail_msg("`%s` does not contain `%s`", haystack ? haystack : "(null)", needle);
}

/* --- temporary files --- */

struct tmpdir {
    char path[64];
};

static void tmpdir_make(struct tmpdir *t)
{
    snprintf(t->path, sizeof(t->path), "/tmp/vcr-test-server-XXXXXX");
    assert_non_null(mkdtemp(t->path));
}

static char *tmpdir_file(const struct tmpdir *t, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", t->path, name) > 0);
    return p;
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void tmpdir_remove(struct tmpdir *t)
{
    static const char *const names[] = {
        "journal.db", "journal.db-wal", "journal.db-shm", "server.yaml", "key", "short-key"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        cleanup_free char *p = tmpdir_file(t, names[i]);
        unlink(p);
    }
    rmdir(t->path);
}

/* --- configuration --- */

static struct server_config *parse_config(const char *yaml, vcr_error_t *err)
{
    return server_config_parse(yaml, strlen(yaml), "test.yaml", err);
}

/* yaml must be refused with a message containing each needle. */
static void expect_config_error(const char *yaml, const char *const *needles)
{
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config(yaml, &err);
    if (cfg != NULL)
        fail_msg("accepted: %s", yaml);
    assert_contains(vcr_error_msg(err), "config `test.yaml`");
    for (; *needles; needles++)
        assert_contains(vcr_error_msg(err), *needles);
}

#define EXPECT_CONFIG_ERROR(yaml, ...)                                                             \
    expect_config_error(yaml, (const char *const[]){__VA_ARGS__, NULL})

static void test_config_defaults(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config("", &err);
    assert_non_null(cfg);
    assert_string_equal(cfg->listen_host, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 7070);
    assert_string_equal(cfg->api_host, "127.0.0.1");
    assert_int_equal(cfg->api_port, 7080);
    assert_string_equal(cfg->journal, "/var/lib/vcr-server/journal.db");
    assert_int_equal(cfg->heartbeat_ms, 250);
    assert_int_equal(cfg->host_timeout_ms, 1250);
    assert_null(cfg->agent_key_file);
    assert_null(cfg->agent_key);
    server_config_free(cfg);

    /* host_timeout_ms follows heartbeat_ms unless given. */
    cfg = parse_config("heartbeat_ms: 200\n", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->host_timeout_ms, 3 * 200 + 500);
    server_config_free(cfg);

    cfg = server_config_defaults(&err);
    assert_non_null(cfg);
    assert_int_equal(cfg->listen_port, 7070);
    server_config_free(cfg);
}

/* The migration policy: off unless given; each key checked with what is allowed. */
static void test_config_migration(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config("", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->migration.cpu_pct, 0);
    server_config_free(cfg);
    cfg = parse_config("migration: {cpu_pct: 80, targets: [sb22, sb23]}\n", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->migration.cpu_pct, 80);
    assert_int_equal(cfg->migration.samples, SERVER_MIGRATION_SAMPLES_DEF);
    assert_int_equal(cfg->migration.n_targets, 2);
    assert_string_equal(cfg->migration.targets[1], "sb23");
    server_config_free(cfg);
    EXPECT_CONFIG_ERROR("migration: {cpu_pct: 101, targets: [sb2]}\n", "`migration.cpu_pct`",
                        "`101`", "1..100");
    EXPECT_CONFIG_ERROR("migration: {targets: [sb2]}\n", "`migration.cpu_pct`", "missing");
    EXPECT_CONFIG_ERROR("migration: {cpu_pct: 50, samples: 0, targets: [sb2]}\n",
                        "`migration.samples`", "1..100");
    EXPECT_CONFIG_ERROR("migration: {cpu_pct: 50}\n", "`migration.targets`", "0 given");
    EXPECT_CONFIG_ERROR("migration: {cpu_pct: 50, targets: ['sb 2']}\n", "`migration.targets[0]`",
                        "`sb 2`", "not a host name");
}

/* `ha:` (docs/ha.md): validated, the advertised addresses default to listen and
 * api unless those are 0.0.0.0. */
static void test_config_ha(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config("", &err);
    assert_non_null(cfg);
    assert_false(cfg->ha.enabled);
    server_config_free(cfg);
    cfg = parse_config("listen: 10.0.0.1:7070\napi: 10.0.0.1:7080\n"
                       "ha: {etcd: ['http://127.0.0.1:2379', 'http://127.0.0.1:2381'], name: s1}\n",
                       &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(cfg->ha.enabled);
    assert_int_equal(cfg->ha.n_etcd, 2);
    assert_string_equal(cfg->ha.etcd[1], "http://127.0.0.1:2381");
    assert_int_equal(cfg->ha.lease_ttl_s, SERVER_HA_LEASE_TTL_DEF_S);
    assert_string_equal(cfg->ha.name, "s1");
    assert_string_equal(cfg->ha.advertise, "10.0.0.1:7070");
    assert_string_equal(cfg->ha.advertise_api, "10.0.0.1:7080");
    server_config_free(cfg);
    EXPECT_CONFIG_ERROR("ha: {etcd: ['https://e:1'], name: s1}\n", "`ha.etcd[0]`", "`https://e:1`",
                        "http://ADDR:PORT");
    EXPECT_CONFIG_ERROR("ha: {name: s1}\n", "`ha.etcd`", "0 given");
    EXPECT_CONFIG_ERROR("ha: {etcd: ['http://127.0.0.1:2379']}\n", "`ha.name`", "missing");
    EXPECT_CONFIG_ERROR("ha: {etcd: ['http://127.0.0.1:2379'], name: s1, lease_ttl_s: 0}\n",
                        "`ha.lease_ttl_s`", "1..60");
    EXPECT_CONFIG_ERROR("listen: 0.0.0.0:7070\nha: {etcd: ['http://127.0.0.1:2379'], name: s1}\n",
                        "`ha.advertise`", "0.0.0.0");
}

static void test_config_file_all_keys(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *key = tmpdir_file(&t, "key");
    cleanup_free char *yaml = tmpdir_file(&t, "server.yaml");
    write_file(key, TEST_KEY "\n");
    write_file(yaml, "# all keys\n"
                     "listen: 0.0.0.0:7171\n"
                     "api: 127.0.0.1:7181\n"
                     "journal: journal.db\n"
                     "heartbeat_ms: 500\n"
                     "host_timeout_ms: 1000\n"
                     "agent_key_file: key\n");
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = server_config_load(yaml, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->listen_host, "0.0.0.0");
    assert_int_equal(cfg->listen_port, 7171);
    assert_int_equal(cfg->api_port, 7181);
    /* Relative paths are taken from the config file's directory. */
    cleanup_free char *journal = tmpdir_file(&t, "journal.db");
    assert_string_equal(cfg->journal, journal);
    assert_string_equal(cfg->agent_key_file, key);
    assert_int_equal(cfg->heartbeat_ms, 500);
    assert_int_equal(cfg->host_timeout_ms, 1000);
    assert_int_equal(cfg->agent_key_len, strlen(TEST_KEY));
    assert_memory_equal(cfg->agent_key, TEST_KEY, strlen(TEST_KEY));
    server_config_free(cfg);

    cleanup_free char *missing = tmpdir_file(&t, "absent.yaml");
    assert_null(server_config_load(missing, &err));
    assert_int_equal(vcr_error_status(err), ENOENT);
    tmpdir_remove(&t);
}

/* The agent port's TLS keys: loaded once (ASan sees a leak otherwise), each bad
 * file named, all three or none, never with `insecure: true`. */
static void test_config_tls(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *pki = tmpdir_file(&t, "pki");
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(pki_init(pki, "test-ca", &err), 0);
    assert_int_equal(pki_issue(pki, "vcr-server", true, NULL, 0, &err), 0);
    assert_int_equal(pki_issue(pki, "node1", false, NULL, 0, &err), 0);
    cleanup_free char *yaml = tmpdir_file(&t, "server.yaml");
    write_file(yaml, "tls_ca_file: pki/ca.crt\n"
                     "tls_cert_file: pki/vcr-server.crt\n"
                     "tls_key_file: pki/vcr-server.key\n");
    struct server_config *cfg = server_config_load(yaml, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_non_null(cfg->tls);
    assert_false(cfg->insecure);
    server_config_free(cfg);

    write_file(yaml, "tls_ca_file: pki/ca.crt\n"
                     "tls_cert_file: pki/vcr-server.crt\n"
                     "tls_key_file: pki/node1.key\n");
    assert_null(server_config_load(yaml, &err));
    assert_non_null(strstr(vcr_error_msg(err), "`tls_key_file`"));
    assert_non_null(strstr(vcr_error_msg(err), "does not match `tls_cert_file`"));
    vcr_error_release(&err);

    write_file(yaml, "tls_ca_file: pki/ca.crt\ntls_cert_file: pki/vcr-server.crt\n");
    assert_null(server_config_load(yaml, &err));
    assert_non_null(strstr(vcr_error_msg(err), "`tls_key_file`: missing"));
    vcr_error_release(&err);

    write_file(yaml, "insecure: true\ntls_ca_file: pki/ca.crt\n");
    assert_null(server_config_load(yaml, &err));
    assert_non_null(strstr(vcr_error_msg(err), "`insecure`: true while tls_* keys are set"));
    vcr_error_release(&err);

    write_file(yaml, "insecure: true\n");
    cfg = server_config_load(yaml, &err);
    assert_non_null(cfg);
    assert_null(cfg->tls);
    assert_true(cfg->insecure);
    server_config_free(cfg);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", pki);
    assert_int_equal(system(cmd), 0);
    tmpdir_remove(&t);
}

static void test_config_bad_listen_address(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("listen: 300.1.2.3:7070\n", "`listen`", "300.1.2.3",
                        "not a valid IPv4 address");
    EXPECT_CONFIG_ERROR("listen: localhost:7070\n", "`listen`", "localhost",
                        "IPv4 or IPv6 address");
    EXPECT_CONFIG_ERROR("listen: '::1:7070'\n", "`listen`", "brackets before the port");
    EXPECT_CONFIG_ERROR("api: '[::g]:7070'\n", "`api`", "`::g` is not a valid IPv6 address");
    EXPECT_CONFIG_ERROR("listen: 127.0.0.1\n", "`listen`", "127.0.0.1", "HOST:PORT");
    EXPECT_CONFIG_ERROR("api: ''\n", "`api`", "HOST:PORT");
}

static void test_config_bad_port(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("listen: 127.0.0.1:0\n", "`listen`", "port `0`", "1..65535");
    EXPECT_CONFIG_ERROR("api: 127.0.0.1:70000\n", "`api`", "port `70000`", "1..65535");
    EXPECT_CONFIG_ERROR("api: 127.0.0.1:http\n", "`api`", "port `http`", "1..65535");
}

static void test_config_heartbeat_bounds(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("heartbeat_ms: 99\n", "`heartbeat_ms`", "`99`", "100..60000");
    EXPECT_CONFIG_ERROR("heartbeat_ms: 60001\n", "`heartbeat_ms`", "`60001`", "100..60000");
    EXPECT_CONFIG_ERROR("heartbeat_ms: 0\n", "`heartbeat_ms`", "`0`", "100..60000");
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config("heartbeat_ms: 100\n", &err);
    assert_non_null(cfg);
    server_config_free(cfg);
    cfg = parse_config("heartbeat_ms: 60000\n", &err);
    assert_non_null(cfg);
    server_config_free(cfg);
}

static void test_config_host_timeout_bounds(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("heartbeat_ms: 1000\nhost_timeout_ms: 1999\n", "`host_timeout_ms`",
                        "`1999`", "2000..600000");
    EXPECT_CONFIG_ERROR("host_timeout_ms: 600001\n", "`host_timeout_ms`", "600000");
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_config("heartbeat_ms: 1000\nhost_timeout_ms: 2000\n", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->host_timeout_ms, 2000);
    server_config_free(cfg);
}

static void test_config_unknown_key(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("heartbeat_ms: 1000\nheartbeat: 1000\n", "`heartbeat`", "unknown key",
                        "heartbeat_ms, host_timeout_ms");
}

static void test_config_wrong_type(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("heartbeat_ms: abc\n", "`heartbeat_ms`", "`abc`", "not an integer");
    /* libcyaml alone would read these as 1. */
    EXPECT_CONFIG_ERROR("heartbeat_ms: 1.5\n", "`heartbeat_ms`", "`1.5`", "not an integer");
    EXPECT_CONFIG_ERROR("heartbeat_ms: 1e3\n", "`heartbeat_ms`", "`1e3`", "not an integer");
    EXPECT_CONFIG_ERROR("heartbeat_ms: -5\n", "`heartbeat_ms`", "`-5`", "not an integer");
    EXPECT_CONFIG_ERROR("heartbeat_ms: [1000]\n", "line 1", "`heartbeat_ms`", "got a list",
                        "100..60000");
    EXPECT_CONFIG_ERROR("listen: {addr: 1}\n", "`listen`", "got a mapping", "ADDR:PORT");
    EXPECT_CONFIG_ERROR("- listen\n", "a list", "expected a mapping");
    EXPECT_CONFIG_ERROR("listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", "`listen` is given twice");
    EXPECT_CONFIG_ERROR("listen: \"127.0.0.1:1\n", "YAML syntax error");
}

static void test_config_every_bad_field_named(void **state)
{
    (void)state;
    EXPECT_CONFIG_ERROR("listen: 1.2.3.4.5:1\napi: 127.0.0.1:0\nheartbeat_ms: 5\n"
                        "journal: ''\n",
                        "`listen`", "`api`", "`heartbeat_ms`", "`journal`");
}

static void test_config_key_file(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *shortk = tmpdir_file(&t, "short-key");
    write_file(shortk, "short\n");
    cleanup_free char *yaml = NULL;
    assert_true(asprintf(&yaml, "agent_key_file: %s\n", shortk) > 0);
    EXPECT_CONFIG_ERROR(yaml, "`agent_key_file`", shortk, "16..4096");
    EXPECT_CONFIG_ERROR("agent_key_file: /nonexistent/vcr.key\n", "`agent_key_file`",
                        "/nonexistent/vcr.key", "No such file");
    tmpdir_remove(&t);
}

/* --- journal --- */

static void count_appends(int64_t id, void *opaque)
{
    int64_t *last = opaque;
    *last = id;
}

/* A journal that cannot be written (its disk full: here no write to any regular file,
 * RLIMIT_FSIZE 0) loses no event: each is held, then written in order, before any newer
 * one, once it can be (the campaign's disk_full round lost the killed primary's
 * vm_event and its recovery's `detected`). */
static void test_journal_holds_events_while_it_cannot_write(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *path = tmpdir_file(&t, "journal.db");
    cleanup_error vcr_error_t err = NULL;
    struct journal *j = journal_open(path, &err);
    assert_non_null(j);
    journal_note(j, 1000, "node1", NULL, "hello", NULL);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit full = {.rlim_cur = 0, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &full), 0);
    cleanup_json json_t *crashed = json_pack("{s:s}", "state", "crashed");
    cleanup_json json_t *detected = json_pack("{s:s}", "phase", "detected");
    cleanup_json json_t *fenced = json_pack("{s:s}", "phase", "fenced");
    journal_note(j, 2000, "node1", "web1", "vm_event", crashed);
    journal_note(j, 3000, "node1", "web1", "recovery", detected);
    size_t held = journal_held(j);
    int still = journal_write_held(j);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(held, 2);
    assert_int_equal(still, -1);
    /* Writable again: the held ones first (the tick's journal_write_held, or a note). */
    assert_int_equal(journal_write_held(j), 0);
    assert_int_equal(journal_held(j), 0);
    journal_note(j, 4000, "node1", "web1", "recovery", fenced);
    json_t *events = journal_read(j, 0, 10, &err);
    assert_non_null(events);
    assert_int_equal(json_array_size(events), 4);
    static const char *kinds[] = {"hello", "vm_event", "recovery", "recovery"};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(events, i);
        assert_int_equal(json_integer_value(json_object_get(e, "id")), (json_int_t)i + 1);
        assert_int_equal(json_integer_value(json_object_get(e, "ts_ms")),
                         (json_int_t)i * 1000 + 1000);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), kinds[i]);
    }
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(events, 2), "detail"), "phase")),
                        "detected");
    json_decref(events);
    journal_close(j);
    tmpdir_remove(&t);
}

static void test_journal_write_read(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *path = tmpdir_file(&t, "journal.db");
    cleanup_error vcr_error_t err = NULL;
    struct journal *j = journal_open(path, &err);
    assert_non_null(j);
    int64_t last_notified = 0;
    journal_set_listener(j, count_appends, &last_notified);

    json_t *detail =
        json_pack("{s:s, s:s, s:i}", "state", "crashed", "cause", "signal 9", "pid", 77);
    struct journal_event ev = {.ts_ms = 1000,
                               .rx_ms = 1005,
                               .host = "h1",
                               .vm = "web1",
                               .kind = JOURNAL_VM_EVENT,
                               .detail = detail};
    assert_int_equal(journal_append(j, &ev, &err), 1);
    assert_int_equal(last_notified, 1);
    struct journal_event hello = {
        .ts_ms = 2000, .rx_ms = 2000, .host = "h1", .kind = JOURNAL_HELLO};
    assert_int_equal(journal_append(j, &hello, &err), 2);
    struct journal_event lost = {
        .ts_ms = 3000, .rx_ms = 3000, .host = "h2", .kind = JOURNAL_HOST_LOST};
    assert_int_equal(journal_append(j, &lost, &err), 3);

    json_t *all = journal_read(j, 0, 100, &err);
    assert_int_equal(json_array_size(all), 3);
    json_t *first = json_array_get(all, 0);
    assert_int_equal(json_integer_value(json_object_get(first, "id")), 1);
    assert_int_equal(json_integer_value(json_object_get(first, "ts_ms")), 1000);
    assert_int_equal(json_integer_value(json_object_get(first, "rx_ms")), 1005);
    assert_string_equal(json_string_value(json_object_get(first, "host")), "h1");
    assert_string_equal(json_string_value(json_object_get(first, "vm")), "web1");
    assert_string_equal(json_string_value(json_object_get(first, "kind")), "vm_event");
    assert_true(json_equal(json_object_get(first, "detail"), detail));
    assert_true(json_is_null(json_object_get(json_array_get(all, 1), "vm")));
    assert_true(json_is_null(json_object_get(json_array_get(all, 1), "detail")));
    json_decref(all);
    json_decref(detail);

    json_t *after1 = journal_read(j, 1, 100, &err);
    assert_int_equal(json_array_size(after1), 2);
    json_decref(after1);
    json_t *tail = journal_read(j, -1, 2, &err);
    assert_int_equal(json_array_size(tail), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(tail, 0), "id")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(tail, 1), "id")), 3);
    json_decref(tail);
    json_t *none = journal_read(j, 3, 10, &err);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    assert_null(journal_read(j, 0, 0, &err));
    assert_contains(vcr_error_msg(err), "limit 0");
    vcr_error_release(&err);
    journal_close(j);

    /* WAL mode is a property of the file, seen by any other reader. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* Reopened, the journal goes on numbering. */
    j = journal_open(path, &err);
    assert_non_null(j);
    assert_int_equal(journal_append(j, &hello, &err), 4);
    /* journal_note: received now; happened now unless told when. */
    int64_t before = vcr_wall_ms();
    journal_note(j, 0, "sb1", NULL, JOURNAL_MIGRATION, NULL);
    journal_note(j, 1234, "h1", "web1", JOURNAL_VM_EVENT, NULL);
    json_t *notes = journal_read(j, 4, 10, &err);
    assert_int_equal(json_array_size(notes), 2);
    json_t *n1 = json_array_get(notes, 0), *n2 = json_array_get(notes, 1);
    assert_true(json_integer_value(json_object_get(n1, "rx_ms")) >= before);
    assert_int_equal(json_integer_value(json_object_get(n1, "ts_ms")),
                     json_integer_value(json_object_get(n1, "rx_ms")));
    assert_int_equal(json_integer_value(json_object_get(n2, "ts_ms")), 1234);
    assert_true(json_integer_value(json_object_get(n2, "rx_ms")) >= before);
    assert_string_equal(json_string_value(json_object_get(n2, "vm")), "web1");
    json_decref(notes);
    journal_close(j);

    assert_null(journal_open("/nonexistent/dir/journal.db", &err));
    assert_contains(vcr_error_msg(err), "/nonexistent/dir/journal.db");
    tmpdir_remove(&t);
}

/* --- inventory --- */

static json_t *hello_msg(const char *host)
{
    return proto_msg_new(
        "hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:[{s:s, s:s, s:i, s:s, s:i, s:i, s:s},"
                           " {s:s, s:s, s:s}]}",
                           "host", host, "role", "host", "agent_version", "0.1.0", "pid", 4242,
                           "accel", "tcg", "vms", "name", "web1", "state", "running", "pid", 100,
                           "address", "10.0.0.2", "memory_mb", 256, "vcpus", 1, "accel", "tcg",
                           "name", "db1", "state", "crashed", "cause", "qemu exited 1"));
}

static json_t *vm_event_msg(const char *vm, const char *state, const char *cause, int64_t ts_ms)
{
    return proto_msg_new("vm_event",
                         json_pack("{s:s, s:s, s:s, s:I, s:i}", "vm", vm, "state", state, "cause",
                                   cause, "ts_ms", (json_int_t)ts_ms, "pid", 101));
}

static void test_inventory_hello(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    json_t *hello = hello_msg("node1");
    bool came_up = false;
    struct inv_host *h = inventory_apply_hello(inv, hello, 1000, &came_up, &err);
    assert_non_null(h);
    assert_true(came_up);
    assert_string_equal(h->role, "host");
    assert_string_equal(h->accel, "tcg");
    assert_string_equal(h->agent_version, "0.1.0");
    assert_int_equal(h->agent_pid, 4242);
    assert_int_equal(h->state, INV_HOST_CONNECTED);
    assert_int_equal(h->last_seen_ms, 1000);
    assert_int_equal(h->n_vms, 2);
    struct inv_host *owner = NULL;
    struct inv_vm *web = inventory_find_vm(inv, "web1", &owner);
    assert_ptr_equal(owner, h);
    assert_int_equal(web->state, INV_VM_RUNNING);
    assert_int_equal(web->pid, 100);
    assert_string_equal(web->address, "10.0.0.2");
    assert_int_equal(web->memory_mb, 256);
    struct inv_vm *db = inventory_find_vm(inv, "db1", NULL);
    assert_null(db->address);
    assert_int_equal(db->pid, 0);
    /* A re-sync keeps why a VM is in its state. */
    assert_int_equal(db->state, INV_VM_CRASHED);
    assert_string_equal(db->cause, "qemu exited 1");

    /* A hello re-syncs: the VM list is replaced, the host is not new. */
    json_array_remove(json_object_get(hello, "vms"), 1);
    assert_ptr_equal(inventory_apply_hello(inv, hello, 2000, &came_up, &err), h);
    assert_false(came_up);
    assert_int_equal(h->n_vms, 1);
    assert_null(inventory_find_vm(inv, "db1", NULL));
    assert_int_equal(inv->n_hosts, 1);
    json_decref(hello);
    inventory_free(inv);
}

/* Heartbeat gaps (GET /metrics, vcr_host_heartbeat_gap_seconds): counted
 * between heartbeats of one connection only; a reconnect starts afresh. */
static void test_inventory_heartbeat_gaps(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    json_t *hello = hello_msg("node1");
    bool came_up = false;
    struct inv_host *h = inventory_apply_hello(inv, hello, 1000, &came_up, &err);
    assert_non_null(h);
    inventory_host_heartbeat(inv, "node1", 1100); /* the first: no gap yet */
    assert_int_equal(h->heartbeat_gap.count, 0);
    inventory_host_heartbeat(inv, "node1", 1350);
    inventory_host_heartbeat(inv, "node1", 2050);
    assert_int_equal(h->heartbeat_gap.count, 2);
    assert_int_equal(h->heartbeat_gap_max_ms, 700);
    assert_true(h->heartbeat_gap.sum > 0.949 && h->heartbeat_gap.sum < 0.951);
    /* 0.25 s is in the bucket of le=0.25, 0.7 s in le=0.75. */
    size_t i25 = 0, i75 = 0;
    while (inv_heartbeat_gap_bounds[i25] < 0.25)
        i25++;
    while (inv_heartbeat_gap_bounds[i75] < 0.75)
        i75++;
    assert_int_equal(h->heartbeat_gap.in_bucket[i25], 1);
    assert_int_equal(h->heartbeat_gap.in_bucket[i75], 1);
    /* Reconnected 10 s later: the silence between connections is no gap. */
    assert_ptr_equal(inventory_apply_hello(inv, hello, 12000, &came_up, &err), h);
    inventory_host_heartbeat(inv, "node1", 12100);
    inventory_host_heartbeat(inv, "node1", 12350);
    assert_int_equal(h->heartbeat_gap.count, 3);
    assert_int_equal(h->heartbeat_gap_max_ms, 700);
    inventory_host_heartbeat(inv, "nobody", 12400); /* unknown host: ignored */
    json_decref(hello);
    inventory_free(inv);
}

/* The name indexes (inventory.h) follow every change: hosts added, VM lists
 * replaced by a hello, VMs added by a vm_event; the first host listing a name
 * keeps it, as the linear search did. */
static void test_inventory_index(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    bool came_up;
    char name[32];
    for (int i = 0; i < 300; i++) {
        json_t *vms = json_array();
        for (int j = 0; j < 20; j++) {
            snprintf(name, sizeof(name), "vm-%d-%d", i, j);
            json_array_append_new(vms, json_pack("{s:s, s:s}", "name", name, "state", "running"));
        }
        snprintf(name, sizeof(name), "host-%d", i);
        json_t *hello = proto_msg_new(
            "hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:o}", "host", name, "role", "host",
                               "agent_version", "0.1.0", "pid", 1, "accel", "tcg", "vms", vms));
        assert_non_null(inventory_apply_hello(inv, hello, 1000, &came_up, &err));
        json_decref(hello);
        /* Looked up between changes, so a stale index would show. */
        struct inv_host *owner = NULL;
        snprintf(name, sizeof(name), "vm-%d-19", i);
        assert_non_null(inventory_find_vm(inv, name, &owner));
        assert_ptr_equal(owner, inv->hosts[i]);
    }
    for (int i = 0; i < 300; i += 7) {
        struct inv_host *owner = NULL;
        snprintf(name, sizeof(name), "vm-%d-%d", i, i % 20);
        struct inv_vm *vm = inventory_find_vm(inv, name, &owner);
        assert_non_null(vm);
        assert_string_equal(vm->name, name);
        assert_ptr_equal(owner, inv->hosts[i]);
        snprintf(name, sizeof(name), "host-%d", i);
        assert_ptr_equal(inventory_find_host(inv, name), inv->hosts[i]);
    }
    assert_null(inventory_find_vm(inv, "vm-300-0", NULL));
    assert_null(inventory_find_host(inv, "host-300"));

    /* A vm_event about a VM the hello did not list adds it. */
    json_t *ev = vm_event_msg("late-vm", "running", "started", 5);
    assert_int_equal(inventory_apply_vm_event_at(inv, "host-5", ev, 2000, NULL, &err), 0);
    json_decref(ev);
    struct inv_host *owner = NULL;
    assert_non_null(inventory_find_vm(inv, "late-vm", &owner));
    assert_ptr_equal(owner, inv->hosts[5]);

    /* host-7 re-syncs with vm-3-0 (host-3's) and without its own: host-3 keeps
     * the name, host-7's old VMs are gone. */
    json_t *hello = proto_msg_new(
        "hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:[{s:s, s:s}]}", "host", "host-7", "role",
                           "host", "agent_version", "0.1.0", "pid", 1, "accel", "tcg", "vms",
                           "name", "vm-3-0", "state", "running"));
    assert_non_null(inventory_apply_hello(inv, hello, 3000, &came_up, &err));
    json_decref(hello);
    assert_null(inventory_find_vm(inv, "vm-7-0", NULL));
    assert_non_null(inventory_find_vm(inv, "vm-3-0", &owner));
    assert_ptr_equal(owner, inv->hosts[3]);
    assert_int_equal(inv->n_hosts, 300);
    inventory_free(inv);
}

static void expect_bad_hello(json_t *hello, const char *needle)
{
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    bool came_up = false;
    assert_null(inventory_apply_hello(inv, hello, 1, &came_up, &err));
    assert_contains(vcr_error_msg(err), needle);
    assert_int_equal(inv->n_hosts, 0);
    inventory_free(inv);
    json_decref(hello);
}

static void test_inventory_hello_invalid(void **state)
{
    (void)state;
    json_t *h = hello_msg("node1");
    json_object_del(h, "host");
    expect_bad_hello(h, "hello.host: missing");
    expect_bad_hello(hello_msg("bad name"), "hello.host: `bad name` is not a valid name");
    h = hello_msg("node1");
    json_object_set_new(h, "role", json_string("primary"));
    expect_bad_hello(h, "hello.role: `primary` is not allowed; allowed: host, standby");
    h = hello_msg("node1");
    json_object_set_new(h, "accel", json_string("hvf"));
    expect_bad_hello(h, "hello.accel");
    h = hello_msg("node1");
    json_object_set_new(h, "pid", json_string("4242"));
    expect_bad_hello(h, "hello.pid: expected a non-negative integer");
    h = hello_msg("node1");
    json_object_set_new(json_array_get(json_object_get(h, "vms"), 1), "state", json_string("dead"));
    expect_bad_hello(h, "hello.vms[1].state: `dead` is not a VM state");
    h = hello_msg("node1");
    json_object_set_new(json_array_get(json_object_get(h, "vms"), 1), "name", json_string("web1"));
    expect_bad_hello(h, "hello.vms[1].name: `web1` is listed twice");
    h = hello_msg("node1");
    json_object_del(h, "vms");
    expect_bad_hello(h, "hello.vms: missing");
}

/* The RAM file and its backing, as a host agent's hello reports them, show in the status. */
static void test_inventory_ram_backing_in_status(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    json_t *hello = hello_msg("node1");
    json_t *web1 = json_array_get(json_object_get(hello, "vms"), 0);
    json_object_set_new(web1, "ram", json_string("/dev/hugepages/vcr-node1-web1-0.ram"));
    json_object_set_new(web1, "ram_backing", json_string("hugetlbfs"));
    bool came_up;
    assert_non_null(inventory_apply_hello(inv, hello, 1000, &came_up, &err));
    json_decref(hello);
    cleanup_json json_t *st = inventory_status_json(inv, 1000, 1700000000000);
    json_t *vms = json_object_get(json_array_get(json_object_get(st, "hosts"), 0), "vms");
    json_t *vm0 = json_array_get(vms, 0), *vm1 = json_array_get(vms, 1);
    assert_string_equal(json_string_value(json_object_get(vm0, "ram")),
                        "/dev/hugepages/vcr-node1-web1-0.ram");
    assert_string_equal(json_string_value(json_object_get(vm0, "ram_backing")), "hugetlbfs");
    assert_true(json_is_null(json_object_get(vm1, "ram")));
    assert_true(json_is_null(json_object_get(vm1, "ram_backing")));
    inventory_free(inv);
}

/* A warm restart is maintenance until its deadline; then, or on a bad end, a failure. */
static void test_inventory_warm_restart_deadline(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    json_t *hello = hello_msg("node1");
    bool came_up;
    assert_non_null(inventory_apply_hello(inv, hello, 1000, &came_up, &err));
    json_decref(hello);
    enum inv_restart_change ch;

    json_t *ev = vm_event_msg("web1", "restarting", "warm restart", 1);
    assert_int_equal(inventory_apply_vm_event_at(inv, "node1", ev, 5000, &ch, &err), 0);
    json_decref(ev);
    struct inv_vm *web = inventory_find_vm(inv, "web1", NULL);
    assert_int_equal(ch, INV_RESTART_BEGAN);
    assert_int_equal(web->state, INV_VM_RESTARTING);
    assert_int_equal(web->restart_deadline_ms, 5000 + INV_RESTART_DEADLINE_MS);
    /* Before the deadline: nothing expires.  Back to running: done, no deadline. */
    assert_int_equal(inventory_expire_restarts(inv, 5000 + INV_RESTART_DEADLINE_MS, NULL, NULL), 0);
    ev = vm_event_msg("web1", "running", "warm restart done", 2);
    assert_int_equal(inventory_apply_vm_event_at(inv, "node1", ev, 6000, &ch, &err), 0);
    json_decref(ev);
    assert_int_equal(ch, INV_RESTART_DONE);
    assert_int_equal(web->restart_deadline_ms, 0);

    /* Restarting -> starting (cold-boot fallback) is a failed warm restart. */
    ev = vm_event_msg("web1", "restarting", "warm restart", 3);
    inventory_apply_vm_event_at(inv, "node1", ev, 7000, &ch, &err);
    json_decref(ev);
    ev = vm_event_msg("web1", "starting", "cold boot after a failed warm restart: x", 4);
    assert_int_equal(inventory_apply_vm_event_at(inv, "node1", ev, 8000, &ch, &err), 0);
    json_decref(ev);
    assert_int_equal(ch, INV_RESTART_FAILED);

    /* Overrunning the deadline makes it failed, once. */
    ev = vm_event_msg("web1", "restarting", "warm restart", 5);
    inventory_apply_vm_event_at(inv, "node1", ev, 10000, &ch, &err);
    json_decref(ev);
    cleanup_json json_t *st = inventory_status_json(inv, 10000, 1700000000000);
    json_t *vm0 =
        json_array_get(json_object_get(json_array_get(json_object_get(st, "hosts"), 0), "vms"), 0);
    assert_int_equal(json_integer_value(json_object_get(vm0, "restart_deadline_ms")),
                     1700000000000 + INV_RESTART_DEADLINE_MS);
    assert_int_equal(inventory_expire_restarts(inv, 10000 + INV_RESTART_DEADLINE_MS, NULL, NULL),
                     0);
    assert_int_equal(inventory_expire_restarts(inv, 10001 + INV_RESTART_DEADLINE_MS, NULL, NULL),
                     1);
    assert_int_equal(web->state, INV_VM_FAILED);
    assert_non_null(strstr(web->cause, "warm restart not done within"));
    assert_int_equal(inventory_expire_restarts(inv, 99999999, NULL, NULL), 0);
    inventory_free(inv);
}

static void test_inventory_vm_event_and_sample(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    json_t *hello = hello_msg("node1");
    bool came_up;
    assert_non_null(inventory_apply_hello(inv, hello, 1000, &came_up, &err));
    json_decref(hello);

    json_t *ev = vm_event_msg("db1", "crashed", "qemu killed by signal 9", 1234);
    assert_int_equal(inventory_apply_vm_event(inv, "node1", ev, &err), 0);
    json_decref(ev);
    struct inv_vm *db = inventory_find_vm(inv, "db1", NULL);
    assert_int_equal(db->state, INV_VM_CRASHED);
    assert_string_equal(db->cause, "qemu killed by signal 9");
    assert_int_equal(db->state_ts_ms, 1234);
    assert_int_equal(db->pid, 101);

    /* A VM the hello did not list is added. */
    ev = vm_event_msg("new1", "starting", "vcr-agent start", 1300);
    assert_int_equal(inventory_apply_vm_event(inv, "node1", ev, &err), 0);
    json_decref(ev);
    assert_non_null(inventory_find_vm(inv, "new1", NULL));

    ev = vm_event_msg("db1", "exploded", "?", 1400);
    assert_int_equal(inventory_apply_vm_event(inv, "node1", ev, &err), -1);
    assert_contains(vcr_error_msg(err), "vm_event.state: `exploded`");
    vcr_error_release(&err);
    assert_int_equal(db->state, INV_VM_CRASHED);
    json_object_del(ev, "ts_ms");
    json_object_set_new(ev, "state", json_string("running"));
    assert_int_equal(inventory_apply_vm_event(inv, "node1", ev, &err), -1);
    assert_contains(vcr_error_msg(err), "vm_event.ts_ms: missing");
    vcr_error_release(&err);
    assert_int_equal(inventory_apply_vm_event(inv, "ghost", ev, &err), -1);
    assert_contains(vcr_error_msg(err), "`ghost` has not said hello");
    vcr_error_release(&err);
    json_decref(ev);

    json_t *sample =
        proto_msg_new("sample", json_pack("{s:I, s:[{s:s, s:f, s:I}, {s:s, s:f, s:I}]}", "ts_ms",
                                          (json_int_t)1500, "vms", "vm", "web1", "cpu_pct", 12.5,
                                          "rss_kb", (json_int_t)524288, "vm", "unknown", "cpu_pct",
                                          1.0, "rss_kb", (json_int_t)1));
    assert_int_equal(inventory_apply_sample(inv, "node1", sample, &err), 0);
    json_decref(sample);
    struct inv_vm *web = inventory_find_vm(inv, "web1", NULL);
    assert_true(web->has_sample);
    assert_true(web->cpu_pct > 12.4 && web->cpu_pct < 12.6);
    assert_int_equal(web->rss_kb, 524288);
    assert_int_equal(web->sample_ts_ms, 1500);

    sample = proto_msg_new("sample",
                           json_pack("{s:I, s:[{s:s, s:s, s:I}]}", "ts_ms", (json_int_t)1600, "vms",
                                     "vm", "web1", "cpu_pct", "high", "rss_kb", (json_int_t)1));
    assert_int_equal(inventory_apply_sample(inv, "node1", sample, &err), -1);
    assert_contains(vcr_error_msg(err), "sample.vms[0].cpu_pct");
    json_decref(sample);
    assert_int_equal(web->rss_kb, 524288);

    /* A VM whose QEMU is gone has no load: its last sample must not be shown
     * as if it still ran. */
    ev = vm_event_msg("web1", "crashed", "qemu killed by signal 9", 1700);
    assert_int_equal(inventory_apply_vm_event(inv, "node1", ev, &err), 0);
    json_decref(ev);
    assert_false(web->has_sample);
    inventory_free(inv);
}

struct lost_log {
    char names[4][16];
    int64_t silent[4];
    int n;
};

static void record_lost(struct inv_host *h, int64_t silent_ms, void *opaque)
{
    struct lost_log *log = opaque;
    snprintf(log->names[log->n], sizeof(log->names[0]), "%s", h->name);
    log->silent[log->n++] = silent_ms;
}

static void test_inventory_heartbeat_timeout(void **state)
{
    (void)state;
    const int64_t timeout = 3500;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    bool came_up;
    json_t *h1 = hello_msg("node1");
    json_t *h2 = proto_msg_new(
        "hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:[], s:[{s:s, s:s}]}", "host", "node2",
                           "role", "standby", "agent_version", "0.1.0", "pid", 1, "accel", "kvm",
                           "vms", "containers", "name", "web1-c", "state", "running"));
    assert_non_null(inventory_apply_hello(inv, h1, 10000, &came_up, &err));
    assert_non_null(inventory_apply_hello(inv, h2, 10000, &came_up, &err));
    struct lost_log log = {.n = 0};

    /* Exactly at the timeout is still alive; one ms more is lost. */
    inventory_host_seen(inv, "node2", 12000);
    assert_int_equal(inventory_expire_hosts(inv, 10000 + timeout, timeout, record_lost, &log), 0);
    assert_int_equal(inventory_expire_hosts(inv, 10000 + timeout + 1, timeout, record_lost, &log),
                     1);
    assert_int_equal(log.n, 1);
    assert_string_equal(log.names[0], "node1");
    assert_int_equal(log.silent[0], timeout + 1);
    assert_int_equal(inventory_find_host(inv, "node1")->state, INV_HOST_LOST);
    assert_int_equal(inventory_find_host(inv, "node2")->state, INV_HOST_CONNECTED);

    /* A lost host is reported once. */
    assert_int_equal(inventory_expire_hosts(inv, 20000, timeout, record_lost, &log), 1);
    assert_int_equal(log.n, 2);
    assert_string_equal(log.names[1], "node2");
    assert_int_equal(log.silent[1], 8000);
    assert_int_equal(inventory_expire_hosts(inv, 30000, timeout, record_lost, &log), 0);

    /* A lost host's VMs are shown unknown, with what its agent last said. */
    json_t *lost = inventory_status_json(inv, 30000, 1700000000500);
    json_t *lvms = json_object_get(json_array_get(json_object_get(lost, "hosts"), 0), "vms");
    assert_int_equal(json_array_size(lvms), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_array_get(lvms, i);
        assert_string_equal(json_string_value(json_object_get(v, "state")), "unknown");
        const char *last = json_string_value(json_object_get(v, "last_state"));
        assert_non_null(last);
        assert_string_not_equal(last, "unknown");
    }
    /* So are its containers: a container is only as known as its host. */
    json_t *lcts = json_object_get(json_array_get(json_object_get(lost, "hosts"), 1), "containers");
    assert_int_equal(json_array_size(lcts), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lcts, 0), "state")),
                        "unknown");
    assert_string_equal(json_string_value(json_object_get(json_array_get(lcts, 0), "last_state")),
                        "running");
    json_decref(lost);

    /* A hello brings it back, and it is reported up. */
    assert_non_null(inventory_apply_hello(inv, h1, 30000, &came_up, &err));
    assert_true(came_up);
    assert_int_equal(inventory_find_host(inv, "node1")->state, INV_HOST_CONNECTED);
    /* The VMs of a lost host are kept. */
    assert_int_equal(inventory_find_host(inv, "node1")->n_vms, 2);

    json_t *status = inventory_status_json(inv, 31000, 1700000001000);
    json_t *host = json_array_get(json_object_get(status, "hosts"), 0);
    assert_string_equal(json_string_value(json_object_get(host, "state")), "connected");
    assert_int_equal(json_integer_value(json_object_get(host, "last_seen_ms")), 1700000000000);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(status, "hosts"), 1), "state")),
                        "lost");
    json_t *vm = json_array_get(json_object_get(host, "vms"), 1);
    assert_string_equal(json_string_value(json_object_get(vm, "name")), "db1");
    assert_string_equal(json_string_value(json_object_get(vm, "state")),
                        json_string_value(json_object_get(vm, "last_state")));
    assert_true(json_is_null(json_object_get(vm, "cpu_pct")));
    assert_true(json_is_null(json_object_get(vm, "address")));
    json_decref(status);
    json_decref(h1);
    json_decref(h2);
    inventory_free(inv);
}

/* Where a container is now: whichever connected standby host lists it. */
static void test_inventory_find_container_host(void **state)
{
    (void)state;
    struct inventory *inv = inventory_new();
    cleanup_error vcr_error_t err = NULL;
    bool up;
    const char *names[] = {"sb1", "sb2"};
    for (int i = 0; i < 2; i++) {
        json_t *h = proto_msg_new("hello",
                                  json_pack("{s:s, s:s, s:s, s:i, s:s, s:[], s:[{s:s, s:s}]}",
                                            "host", names[i], "role", "standby", "agent_version",
                                            "0.1.0", "pid", 1, "accel", "none", "vms", "containers",
                                            "name", i ? "moved" : "stays", "state", "running"));
        assert_non_null(inventory_apply_hello(inv, h, 1000, &up, &err));
        json_decref(h);
    }
    assert_string_equal(inventory_find_container_host(inv, "moved", "sb1")->name, "sb2");
    assert_string_equal(inventory_find_container_host(inv, "stays", "sb2")->name, "sb1");
    assert_null(inventory_find_container_host(inv, "nowhere", "sb1"));
    /* A lost host's report is not trusted. */
    inventory_expire_hosts(inv, 100000, 3500, NULL, NULL);
    assert_null(inventory_find_container_host(inv, "moved", NULL));
    inventory_free(inv);
}

/* --- in-process server with a fake agent --- */

struct fake_agent {
    struct proto_conn *conn;
    json_t *received;
    char *closed;
    json_t *hello;   /* sent after connect, or after the challenge */
    const char *key; /* answer the challenge with it */
    bool silent_orders;
    bool refuse_orders;
};

static void agent_send(struct fake_agent *a, json_t *msg)
{
    cleanup_error vcr_error_t err = NULL;
    if (proto_conn_send(a->conn, msg, &err) < 0)
        fail_msg("fake agent: %s", vcr_error_msg(err));
    json_decref(msg);
}

static void agent_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)c;
    json_array_append(a->received, msg);
    const char *type = proto_msg_type(msg);
    if (strcmp(type, "challenge") == 0 && a->key) {
        char auth[PROTO_AUTH_HEX_LEN + 1];
        proto_auth_compute(a->key, strlen(a->key), json_string_value(json_object_get(msg, "nonce")),
                           auth);
        json_object_set_new(a->hello, "auth", json_string(auth));
        agent_send(a, json_incref(a->hello));
    } else if (strcmp(type, "order") == 0 && !a->silent_orders) {
        json_t *reply =
            json_pack("{s:O, s:b}", "id", json_object_get(msg, "id"), "ok", !a->refuse_orders);
        if (a->refuse_orders)
            json_object_set_new(reply, "error", json_string("VM is not running"));
        agent_send(a, proto_msg_new("reply", reply));
    }
}

static void agent_connected(struct proto_conn *c, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)c;
    if (a->hello && !a->key)
        agent_send(a, json_incref(a->hello));
}

static void agent_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct fake_agent *a = opaque;
    a->closed = strdup(reason);
    proto_conn_free(c);
    a->conn = NULL;
}

static const struct proto_conn_ops agent_ops = {
    .message = agent_message,
    .connected = agent_connected,
    .closed = agent_closed,
};

static void agent_start_at(struct fake_agent *a, struct event_base *base, const char *host,
                           uint16_t port, json_t *hello)
{
    char addr[64];
    vcr_host_port_format(host, port, addr, sizeof(addr));
    a->received = json_array();
    a->hello = hello;
    cleanup_error vcr_error_t err = NULL;
    a->conn = proto_conn_connect(base, addr, NULL, NULL, &agent_ops, a, &err);
    assert_non_null(a->conn);
}

static void agent_start(struct fake_agent *a, struct event_base *base, uint16_t port, json_t *hello)
{
    agent_start_at(a, base, "127.0.0.1", port, hello);
}

static void agent_stop(struct fake_agent *a)
{
    proto_conn_free(a->conn);
    json_decref(a->received);
    json_decref(a->hello);
    free(a->closed);
}

static json_t *agent_got(struct fake_agent *a, const char *type)
{
    size_t i;
    json_t *m;
    json_array_foreach(a->received, i, m)
    {
        if (strcmp(proto_msg_type(m), type) == 0)
            return m;
    }
    return NULL;
}

typedef bool (*condition_fn)(void *arg);

/* Runs the loop until cond holds or 5 s pass; returns whether it holds. */
static bool run_until(struct event_base *base, condition_fn cond, void *arg)
{
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!cond(arg) && vcr_mono_ms() < deadline) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    return cond(arg);
}

struct harness {
    struct tmpdir dir;
    struct event_base *base;
    struct server_config *cfg;
    struct server *srv;
    struct fake_agent agent;
};

static void harness_start(struct harness *h, const char *yaml)
{
    memset(h, 0, sizeof(*h));
    tmpdir_make(&h->dir);
    cleanup_error vcr_error_t err = NULL;
    h->cfg = parse_config(yaml, &err);
    if (h->cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    h->cfg->listen_port = 0;
    h->cfg->api_port = 0;
    free(h->cfg->journal);
    h->cfg->journal = tmpdir_file(&h->dir, "journal.db");
    h->base = event_base_new();
    h->srv = server_new(h->base, h->cfg, &err);
    if (h->srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(server_agent_port(h->srv) > 0);
    assert_true(server_api_port(h->srv) > 0);
}

static void harness_stop(struct harness *h)
{
    agent_stop(&h->agent);
    server_free(h->srv);
    event_base_free(h->base);
    server_config_free(h->cfg);
    tmpdir_remove(&h->dir);
}

static bool got_welcome(void *arg)
{
    struct harness *h = arg;
    return agent_got(&h->agent, "welcome") != NULL || h->agent.closed;
}

static bool agent_has_order(void *arg)
{
    return agent_got(arg, "order") != NULL;
}

static bool agent_was_closed(void *arg)
{
    struct harness *h = arg;
    return h->agent.closed != NULL;
}

static bool db1_crashed_and_journaled(void *arg)
{
    struct harness *h = arg;
    struct inv_vm *vm = inventory_find_vm(server_inventory(h->srv), "db1", NULL);
    json_t *events = journal_read(server_journal(h->srv), 0, 10, NULL);
    bool ok = vm && vm->state == INV_VM_CRASHED && json_array_size(events) == 3;
    json_decref(events);
    return ok;
}

static void test_fence_after_leaves_a_margin(void **state)
{
    (void)state;
    /* The agent self-fences before host_timeout + fence_timeout: 1 s early at most,
     * a quarter early for short timeouts. */
    assert_int_equal(agents_fence_after_ms(3500, 5500), 8000);
    assert_int_equal(agents_fence_after_ms(1500, 2100), 2700);
    assert_int_equal(agents_fence_after_ms(200, 200), 300);
}

static void test_e2e_hello_and_vm_event(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "heartbeat_ms: 250\n");
    int64_t before = vcr_wall_ms();
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    json_t *welcome = agent_got(&h.agent, "welcome");
    assert_non_null(welcome);
    assert_int_equal(json_integer_value(json_object_get(welcome, "heartbeat_ms")), 250);
    assert_string_equal(json_string_value(json_object_get(welcome, "server_version")), VCR_VERSION);
    /* Defaults for heartbeat 250: host timeout 1250, fence timeout 1250; the agent
     * must have fenced a quarter of those 2.5 s before the server switches. */
    assert_int_equal(json_integer_value(json_object_get(welcome, "fence_after_ms")), 1875);
    assert_null(agent_got(&h.agent, "challenge"));

    /* The agent's clock says when it saw the crash; the server adds when it heard. */
    agent_send(&h.agent, vm_event_msg("db1", "crashed", "qemu killed by signal 9", 1234567));
    /* Unknown types are ignored, not fatal. */
    agent_send(&h.agent, proto_msg_new("telemetry_v2", NULL));
    assert_true(run_until(h.base, db1_crashed_and_journaled, &h));

    struct inv_host *host = inventory_find_host(server_inventory(h.srv), "node1");
    assert_int_equal(host->state, INV_HOST_CONNECTED);
    struct inv_vm *db1 = inventory_find_vm(server_inventory(h.srv), "db1", NULL);
    assert_string_equal(db1->cause, "qemu killed by signal 9");

    json_t *events = journal_read(server_journal(h.srv), 0, 10, NULL);
    const char *kinds[] = {"hello", "host_up", "vm_event"};
    for (size_t i = 0; i < 3; i++) {
        json_t *ev = json_array_get(events, i);
        assert_string_equal(json_string_value(json_object_get(ev, "kind")), kinds[i]);
        assert_string_equal(json_string_value(json_object_get(ev, "host")), "node1");
        assert_true(json_integer_value(json_object_get(ev, "rx_ms")) >= before);
    }
    json_t *vm_ev = json_array_get(events, 2);
    assert_string_equal(json_string_value(json_object_get(vm_ev, "vm")), "db1");
    assert_int_equal(json_integer_value(json_object_get(vm_ev, "ts_ms")), 1234567);
    json_t *detail = json_object_get(vm_ev, "detail");
    assert_string_equal(json_string_value(json_object_get(detail, "state")), "crashed");
    assert_int_equal(json_integer_value(json_object_get(detail, "pid")), 101);
    json_decref(events);
    assert_null(h.agent.closed);
    harness_stop(&h);
}

static void test_e2e_message_before_hello_rejected(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    agent_start(&h.agent, h.base, server_agent_port(h.srv), NULL);
    agent_send(&h.agent, proto_msg_new("heartbeat", json_pack("{s:i}", "seq", 1)));
    assert_true(run_until(h.base, agent_was_closed, &h));
    json_t *error = agent_got(&h.agent, "error");
    assert_non_null(error);
    assert_contains(json_string_value(json_object_get(error, "message")),
                    "expected hello first, got `heartbeat`");
    harness_stop(&h);
}

static void test_e2e_bad_hello_rejected(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    json_t *hello = hello_msg("node1");
    json_object_set_new(hello, "role", json_string("primary"));
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello);
    assert_true(run_until(h.base, agent_was_closed, &h));
    assert_contains(json_string_value(json_object_get(agent_got(&h.agent, "error"), "message")),
                    "bad hello: hello.role: `primary`");
    assert_null(inventory_find_host(server_inventory(h.srv), "node1"));
    harness_stop(&h);
}

static void test_e2e_challenge(void **state)
{
    (void)state;
    struct tmpdir keydir;
    tmpdir_make(&keydir);
    cleanup_free char *key = tmpdir_file(&keydir, "key");
    write_file(key, TEST_KEY "\n");
    cleanup_free char *yaml = NULL;
    assert_true(asprintf(&yaml, "agent_key_file: %s\n", key) > 0);

    /* The right key: challenge, hello with auth, welcome. */
    struct harness h;
    harness_start(&h, yaml);
    h.agent.key = TEST_KEY;
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    json_t *challenge = agent_got(&h.agent, "challenge");
    assert_non_null(challenge);
    assert_int_equal(strlen(json_string_value(json_object_get(challenge, "nonce"))),
                     PROTO_NONCE_HEX_LEN);
    assert_non_null(agent_got(&h.agent, "welcome"));
    harness_stop(&h);

    /* A wrong key: an error naming the reason, then the connection closes. */
    harness_start(&h, yaml);
    h.agent.key = "another-key-of-16-bytes";
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, agent_was_closed, &h));
    assert_null(agent_got(&h.agent, "welcome"));
    assert_contains(json_string_value(json_object_get(agent_got(&h.agent, "error"), "message")),
                    "authentication failed: wrong auth");
    assert_null(inventory_find_host(server_inventory(h.srv), "node1"));
    harness_stop(&h);

    /* No auth at all. */
    harness_start(&h, yaml);
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, agent_was_closed, &h));
    assert_contains(json_string_value(json_object_get(agent_got(&h.agent, "error"), "message")),
                    "hello has no auth");
    harness_stop(&h);
    unlink(key);
    rmdir(keydir.path);
}

static bool node1_lost(void *arg)
{
    struct harness *h = arg;
    struct inv_host *host = inventory_find_host(server_inventory(h->srv), "node1");
    return host && host->state == INV_HOST_LOST && h->agent.closed;
}

static void test_e2e_host_lost(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "heartbeat_ms: 100\nhost_timeout_ms: 200\n");
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    int64_t welcomed = vcr_mono_ms();
    /* The fake agent sends no heartbeat. */
    assert_true(run_until(h.base, node1_lost, &h));
    assert_true(vcr_mono_ms() - welcomed >= 200);
    assert_contains(json_string_value(json_object_get(agent_got(&h.agent, "error"), "message")),
                    "host declared lost");
    json_t *events = journal_read(server_journal(h.srv), -1, 1, NULL);
    json_t *lost = json_array_get(events, 0);
    assert_string_equal(json_string_value(json_object_get(lost, "kind")), "host_lost");
    assert_true(json_integer_value(json_object_get(json_object_get(lost, "detail"), "silent_ms")) >
                200);
    json_decref(events);
    harness_stop(&h);
}

static bool node1_heartbeat_echoed(void *arg)
{
    struct harness *h = arg;
    return agent_got(&h->agent, "heartbeat") != NULL || h->agent.closed;
}

/* The server stopped (SIGSTOP) or starved longer than host_timeout_ms: the frames its
 * agents sent meanwhile are unread in its sockets when it runs again, and its first
 * liveness tick comes before they are read.  That silence was the server's: no host is
 * lost for it (the campaign's server_stop_7s round failed every service over, 3 false
 * failovers).  A host that then stays silent is lost host_timeout_ms later. */
static void test_e2e_server_stall_is_not_a_host_loss(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "heartbeat_ms: 100\nhost_timeout_ms: 300\n");
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    assert_null(h.agent.closed);
    /* The loop does not run: the server is stopped for 5 host timeouts; the agent's
     * heartbeat waits to be sent and read. */
    usleep(1500 * 1000);
    agent_send(&h.agent, proto_msg_new("heartbeat", json_pack("{s:I, s:I}", "seq", (json_int_t)1,
                                                              "ts_ms", (json_int_t)vcr_wall_ms())));
    assert_true(run_until(h.base, node1_heartbeat_echoed, &h));
    struct inv_host *host = inventory_find_host(server_inventory(h.srv), "node1");
    assert_non_null(host);
    assert_int_equal(host->state, INV_HOST_CONNECTED);
    assert_null(h.agent.closed);
    /* Silent from now on: lost after host_timeout_ms of the server's own running time. */
    int64_t t0 = vcr_mono_ms();
    assert_true(run_until(h.base, node1_lost, &h));
    assert_true(vcr_mono_ms() - t0 >= 200);
    harness_stop(&h);
}

/* --- the HTTP API, with evhttp's client on the same loop --- */

struct http_answer {
    bool done;
    int code;
    json_t *body;
};

static void http_done(struct evhttp_request *req, void *arg)
{
    struct http_answer *a = arg;
    a->done = true;
    if (req == NULL)
        return;
    a->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    a->body = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL);
}

static bool http_answered(void *arg)
{
    return ((struct http_answer *)arg)->done;
}

struct http_call {
    struct evhttp_connection *conn;
    struct http_answer answer;
};

static void http_start(struct http_call *call, struct harness *h, enum evhttp_cmd_type type,
                       const char *path)
{
    memset(call, 0, sizeof(*call));
    call->conn = evhttp_connection_base_new(h->base, NULL, "127.0.0.1", server_api_port(h->srv));
    struct evhttp_request *req = evhttp_request_new(http_done, &call->answer);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    assert_int_equal(evhttp_make_request(call->conn, req, type, path), 0);
}

static void http_finish(struct http_call *call)
{
    json_decref(call->answer.body);
    evhttp_connection_free(call->conn);
}

/* Starts the call, runs the loop until it is answered, checks the code. */
static void http_expect(struct harness *h, enum evhttp_cmd_type type, const char *path, int code,
                        const char *error_part, struct http_call *call)
{
    http_start(call, h, type, path);
    assert_true(run_until(h->base, http_answered, &call->answer));
    if (call->answer.code != code)
        fail_msg("%s: HTTP %d, expected %d", path, call->answer.code, code);
    assert_non_null(call->answer.body);
    if (error_part)
        assert_contains(json_string_value(json_object_get(call->answer.body, "error")), error_part);
}

/* --- the image server (GET /v1/images/NAME on its own listener) --- */

struct image_answer {
    bool done;
    int code;
    char *body;
    size_t len;
    char sha[80];
    char allow[16];
};

static void image_done(struct evhttp_request *req, void *arg)
{
    struct image_answer *a = arg;
    a->done = true;
    if (req == NULL)
        return;
    a->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    a->len = evbuffer_get_length(in);
    a->body = calloc(1, a->len + 1);
    evbuffer_copyout(in, a->body, a->len);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *sha = evhttp_find_header(h, IMAGES_SHA256_HEADER);
    const char *allow = evhttp_find_header(h, "Allow");
    snprintf(a->sha, sizeof(a->sha), "%s", sha ? sha : "");
    snprintf(a->allow, sizeof(a->allow), "%s", allow ? allow : "");
}

static bool image_answered(void *arg)
{
    return ((struct image_answer *)arg)->done;
}

static void image_get(struct event_base *base, uint16_t port, enum evhttp_cmd_type type,
                      const char *path, struct image_answer *a)
{
    free(a->body);
    memset(a, 0, sizeof(*a));
    struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    struct evhttp_request *req = evhttp_request_new(image_done, a);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    assert_int_equal(evhttp_make_request(conn, req, type, path), 0);
    assert_true(run_until(base, image_answered, a));
    evhttp_connection_free(conn);
}

static void test_image_server(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    cleanup_free char *file = tmpdir_file(&t, "key"); /* a name tmpdir_remove knows */
    /* 300 KiB: more than one socket buffer, so that the file goes out in parts. */
    size_t size = 300 * 1024;
    cleanup_free char *bytes = malloc(size);
    for (size_t i = 0; i < size; i++)
        bytes[i] = (char)(i * 7 + i / 251);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, size, f), size);
    fclose(f);
    struct image_config images[] = {
        {.name = "web",
         .file = file,
         .sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
        {.name = "gone", .file = "/nonexistent/gone.tar.gz", .sha256 = "00"},
    };
    struct event_base *base = event_base_new();
    cleanup_error vcr_error_t err = NULL;
    struct image_server *srv = image_server_new(base, images, 2, &err);
    assert_non_null(srv);
    assert_int_equal(image_server_listen(srv, "127.0.0.1", 0, &err), 0);
    uint16_t port = image_server_port(srv);

    struct image_answer a = {0};
    image_get(base, port, EVHTTP_REQ_GET, "/v1/images/web", &a);
    assert_int_equal(a.code, 200);
    assert_int_equal(a.len, size);
    assert_memory_equal(a.body, bytes, size);
    assert_string_equal(a.sha, images[0].sha256);
    assert_int_equal(image_server_bytes_served(srv), size);

    image_get(base, port, EVHTTP_REQ_GET, "/v1/images/nginx", &a);
    assert_int_equal(a.code, 404);
    assert_contains(a.body, "no image `nginx`");
    image_get(base, port, EVHTTP_REQ_GET, "/v1/status", &a);
    assert_int_equal(a.code, 404);
    assert_contains(a.body, "GET /v1/images/NAME only");
    image_get(base, port, EVHTTP_REQ_POST, "/v1/images/web", &a);
    assert_int_equal(a.code, 405);
    assert_string_equal(a.allow, "GET");
    /* The file went away after the configuration was read: 500, said so. */
    image_get(base, port, EVHTTP_REQ_GET, "/v1/images/gone", &a);
    assert_int_equal(a.code, 500);
    assert_contains(a.body, "image `gone`: cannot read its file");
    free(a.body);

    image_server_free(srv);
    event_base_free(base);
    tmpdir_remove(&t);
}

static void test_e2e_api(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    struct http_call call;

    http_expect(&h, EVHTTP_REQ_GET, "/v1/status", 200, NULL, &call);
    json_t *host = json_array_get(json_object_get(call.answer.body, "hosts"), 0);
    assert_string_equal(json_string_value(json_object_get(host, "name")), "node1");
    assert_string_equal(json_string_value(json_object_get(host, "state")), "connected");
    assert_int_equal(json_array_size(json_object_get(host, "vms")), 2);
    assert_true(json_is_integer(json_object_get(call.answer.body, "now_ms")));
    http_finish(&call);

    /* The order reaches the agent, and its reply answers the request. */
    http_expect(&h, EVHTTP_REQ_POST, "/v1/vms/web1/stop", 200, NULL, &call);
    assert_string_equal(json_string_value(json_object_get(call.answer.body, "host")), "node1");
    assert_string_equal(json_string_value(json_object_get(call.answer.body, "action")), "stop");
    json_t *order = agent_got(&h.agent, "order");
    assert_string_equal(json_string_value(json_object_get(order, "action")), "vm_stop");
    assert_string_equal(json_string_value(json_object_get(order, "vm")), "web1");
    http_finish(&call);

    h.agent.refuse_orders = true;
    http_expect(&h, EVHTTP_REQ_POST, "/v1/vms/web1/kill", 502, "VM is not running", &call);
    http_finish(&call);

    http_expect(&h, EVHTTP_REQ_POST, "/v1/vms/nope/stop", 404, "no VM `nope`", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_POST, "/v1/vms/bad%20name/stop", 400, "not a VM name", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/vms/web1/stop", 405, "takes POST only", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/nothing", 404, "no endpoint", &call);
    http_finish(&call);

    http_expect(&h, EVHTTP_REQ_GET, "/v1/events?since=0&limit=1", 200, NULL, &call);
    assert_int_equal(json_array_size(json_object_get(call.answer.body, "events")), 1);
    assert_int_equal(json_integer_value(json_object_get(call.answer.body, "last_id")), 1);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/events?limit=5000", 400, "`limit`", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/events?from=1", 400, "unknown query parameter", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/events?wait_ms=100", 400, "needs `since`", &call);
    http_finish(&call);

    /* A long poll is answered by the next event, not by its timeout. */
    http_start(&call, &h, EVHTTP_REQ_GET, "/v1/events?since=2&wait_ms=30000");
    struct timeval brief = {0, 50000};
    event_base_loopexit(h.base, &brief);
    event_base_dispatch(h.base);
    assert_false(call.answer.done);
    int64_t sent = vcr_mono_ms();
    agent_send(&h.agent, vm_event_msg("web1", "stopped", "order vm_stop", 99));
    assert_true(run_until(h.base, http_answered, &call.answer));
    assert_true(vcr_mono_ms() - sent < 5000);
    json_t *events = json_object_get(call.answer.body, "events");
    assert_int_equal(json_array_size(events), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(events, 0), "kind")),
                        "vm_event");
    http_finish(&call);

    /* A lost host's VMs cannot take orders. */
    inventory_find_host(server_inventory(h.srv), "node1")->state = INV_HOST_LOST;
    http_expect(&h, EVHTTP_REQ_POST, "/v1/vms/web1/stop", 503, "is lost", &call);
    http_finish(&call);
    harness_stop(&h);
}

static void http_start_body(struct http_call *call, struct harness *h, const char *path,
                            const char *body)
{
    memset(call, 0, sizeof(*call));
    call->conn = evhttp_connection_base_new(h->base, NULL, "127.0.0.1", server_api_port(h->srv));
    struct evhttp_request *req = evhttp_request_new(http_done, &call->answer);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    assert_int_equal(evhttp_make_request(call->conn, req, EVHTTP_REQ_POST, path), 0);
}

static void http_expect_body(struct harness *h, const char *path, const char *body, int code,
                             const char *error_part, struct http_call *call)
{
    http_start_body(call, h, path, body);
    assert_true(run_until(h->base, http_answered, &call->answer));
    if (call->answer.code != code)
        fail_msg("%s %s: HTTP %d, expected %d", path, body, call->answer.code, code);
    assert_non_null(call->answer.body);
    if (error_part)
        assert_contains(json_string_value(json_object_get(call->answer.body, "error")), error_part);
}

/* The last order the fake agent received. */
static json_t *agent_last_order(struct fake_agent *a)
{
    for (size_t i = json_array_size(a->received); i > 0; i--) {
        json_t *m = json_array_get(a->received, i - 1);
        if (strcmp(proto_msg_type(m), "order") == 0)
            return m;
    }
    return NULL;
}

/* POST .../containers {"image": NAME}: the `images:` entry goes into the
 * order; an unknown name, `template` with it, or `image` on another action
 * are refused before any order.  POST .../images/prune sends image_prune
 * with the configured services' images to keep. */
static void test_e2e_container_image_and_prune(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-images-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[80], yaml[600];
    snprintf(file, sizeof(file), "%s/ct.tar.gz", dir);
    write_file(file, "not really gzip");
    const char *sha = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    snprintf(yaml, sizeof(yaml),
             "images_listen: 127.0.0.1:7999\n"
             "images:\n"
             "  - {name: ct, file: %s, sha256: %s, cmd: \"run me\"}\n"
             "  - {name: other, file: %s, sha256: %s}\n",
             file, sha, file, sha);
    struct harness h;
    memset(&h, 0, sizeof(h));
    tmpdir_make(&h.dir);
    cleanup_error vcr_error_t err = NULL;
    h.cfg = parse_config(yaml, &err);
    if (h.cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    h.cfg->listen_port = 0;
    h.cfg->api_port = 0;
    h.cfg->images_port = 0;
    free(h.cfg->journal);
    h.cfg->journal = tmpdir_file(&h.dir, "journal.db");
    h.base = event_base_new();
    h.srv = server_new(h.base, h.cfg, &err);
    if (h.srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
    agent_start(&h.agent, h.base, server_agent_port(h.srv),
                proto_msg_new("hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:[], s:[]}", "host",
                                                 "sb1", "role", "standby", "agent_version", "0.1.0",
                                                 "pid", 1, "accel", "none", "vms", "containers")));
    assert_true(run_until(h.base, got_welcome, &h));
    struct http_call call;

    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c1\", \"address\": \"10.0.0.9\", \"image\": \"ct\"}", 200, NULL,
                     &call);
    http_finish(&call);
    json_t *order = agent_last_order(&h.agent);
    assert_string_equal(json_string_value(json_object_get(order, "action")), "container_create");
    json_t *image = json_object_get(order, "image");
    assert_string_equal(json_string_value(json_object_get(image, "name")), "ct");
    assert_string_equal(json_string_value(json_object_get(image, "sha256")), sha);
    assert_string_equal(json_string_value(json_object_get(image, "url")),
                        "http://127.0.0.1:0/v1/images/ct");
    assert_string_equal(json_string_value(json_object_get(image, "cmd")), "run me");
    assert_true(json_is_true(json_object_get(order, "start")));
    /* No `privileged` in the body: the order says unprivileged (the default). */
    assert_true(json_is_false(json_object_get(order, "privileged")));
    size_t orders = json_array_size(h.agent.received);

    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9\", \"image\": \"nosuch\"}", 404,
                     "no image `nosuch` in the server's `images:`; known: ct, other", &call);
    http_finish(&call);
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9\", \"image\": \"ct\", "
                     "\"template\": \"busybox\"}",
                     400, "`template` and `image` given", &call);
    http_finish(&call);
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c1\", \"action\": \"start\", \"image\": \"ct\"}", 400,
                     "`image` is only for create", &call);
    http_finish(&call);
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9\", \"image\": 7}", 400,
                     "body: `image`: `7` is not valid; allowed: the name of an image of the "
                     "server's `images:`",
                     &call);
    http_finish(&call);
    /* The 400 names the field and its bad value, not the start of the whole body
     * (a long body once hid the value behind its first 100 characters). */
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9\", \"service\": "
                     "\"a-service-whose-long-name-fills-the-first-hundred-characters\", "
                     "\"image\": \"../../etc/passwd\"}",
                     400,
                     "body: `image`: `../../etc/passwd` is not valid; allowed: the name of an "
                     "image of the server's `images:` (1..64 of letters, digits, '.', '_', '-')",
                     &call);
    assert_null(strstr(json_string_value(json_object_get(call.answer.body, "error")), "long-name"));
    http_finish(&call);
    /* The order is rebuilt from checked members: anything else is refused, not
     * passed on to the agent. */
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9\", \"lxc_config\": \"x\"}", 400,
                     "unknown member `lxc_config`", &call);
    http_finish(&call);
    http_expect_body(&h, "/v1/hosts/sb1/containers",
                     "{\"name\": \"c2\", \"address\": \"10.0.0.9; rm\"}", 400,
                     "`address`: `10.0.0.9; rm` is not valid; allowed: A.B.C.D", &call);
    http_finish(&call);
    assert_int_equal(json_array_size(h.agent.received), orders); /* none of them reached it */

    http_expect(&h, EVHTTP_REQ_POST, "/v1/hosts/sb1/images/prune", 200, NULL, &call);
    assert_string_equal(json_string_value(json_object_get(call.answer.body, "host")), "sb1");
    http_finish(&call);
    order = agent_last_order(&h.agent);
    assert_string_equal(json_string_value(json_object_get(order, "action")), "image_prune");
    /* No service names an image here: nothing is kept on the server's word. */
    assert_int_equal(json_array_size(json_object_get(order, "keep")), 0);
    http_expect(&h, EVHTTP_REQ_POST, "/v1/hosts/nohost/images/prune", 404, "no standby host",
                &call);
    http_finish(&call);

    harness_stop(&h);
    unlink(file);
    rmdir(dir);
}

/* Built by hand to give the API a short order deadline. */
static void test_e2e_order_timeout_and_disconnect(void **state)
{
    (void)state;
    struct harness h;
    memset(&h, 0, sizeof(h));
    tmpdir_make(&h.dir);
    h.base = event_base_new();
    cleanup_free char *path = tmpdir_file(&h.dir, "journal.db");
    cleanup_error vcr_error_t err = NULL;
    struct journal *journal = journal_open(path, &err);
    struct inventory *inv = inventory_new();
    struct agents_options aopts = {.heartbeat_ms = 1000, .host_timeout_ms = 3500};
    struct agents *agents = agents_new(h.base, inv, journal, &aopts, &err);
    assert_non_null(agents);
    assert_int_equal(agents_listen(agents, "127.0.0.1", 0, &err), 0);
    struct api_options popts = {.order_timeout_ms = 150};
    struct api *api = api_new(h.base, inv, journal, agents, &popts, &err);
    assert_non_null(api);
    assert_int_equal(api_listen(api, "127.0.0.1", 0, &err), 0);

    h.agent.silent_orders = true;
    agent_start(&h.agent, h.base, agents_port(agents), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));

    struct http_call call;
    memset(&call, 0, sizeof(call));
    call.conn = evhttp_connection_base_new(h.base, NULL, "127.0.0.1", api_port(api));
    struct evhttp_request *req = evhttp_request_new(http_done, &call.answer);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_make_request(call.conn, req, EVHTTP_REQ_POST, "/v1/vms/web1/stop");
    assert_true(run_until(h.base, http_answered, &call.answer));
    assert_int_equal(call.answer.code, 504);
    assert_contains(json_string_value(json_object_get(call.answer.body, "error")),
                    "no reply from host `node1`");
    http_finish(&call);

    /* The agent goes away while an order is pending: 503 at once. */
    json_array_clear(h.agent.received);
    memset(&call, 0, sizeof(call));
    call.conn = evhttp_connection_base_new(h.base, NULL, "127.0.0.1", api_port(api));
    req = evhttp_request_new(http_done, &call.answer);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_make_request(call.conn, req, EVHTTP_REQ_POST, "/v1/vms/db1/kill");
    assert_true(run_until(h.base, agent_has_order, &h.agent));
    proto_conn_free(h.agent.conn);
    h.agent.conn = NULL;
    assert_true(run_until(h.base, http_answered, &call.answer));
    assert_int_equal(call.answer.code, 503);
    assert_contains(json_string_value(json_object_get(call.answer.body, "error")),
                    "closed before it replied");
    http_finish(&call);

    /* At shutdown, a pending order is answered too (no leak, no hang). */
    agent_stop(&h.agent);
    memset(&h.agent, 0, sizeof(h.agent));
    h.agent.silent_orders = true;
    agent_start(&h.agent, h.base, agents_port(agents), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    memset(&call, 0, sizeof(call));
    call.conn = evhttp_connection_base_new(h.base, NULL, "127.0.0.1", api_port(api));
    req = evhttp_request_new(http_done, &call.answer);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    evhttp_make_request(call.conn, req, EVHTTP_REQ_POST, "/v1/vms/db1/kill");
    assert_true(run_until(h.base, agent_has_order, &h.agent));
    agents_free(agents);
    api_free(api);
    evhttp_connection_free(call.conn);
    json_decref(call.answer.body);

    journal_close(journal);
    inventory_free(inv);
    agent_stop(&h.agent);
    event_base_free(h.base);
    tmpdir_remove(&h.dir);
}

/* --- GET /v1/events/stream (server-sent events) and GET /ui/ --- */

static void test_sse_event_id_and_format(void **state)
{
    (void)state;
    int64_t id = 7;
    assert_int_equal(sse_parse_event_id("0", 1, &id), 0);
    assert_int_equal(id, 0);
    assert_int_equal(sse_parse_event_id("123456789012345", 15, &id), 0);
    assert_int_equal(id, 123456789012345LL);
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "12a", "1234567890123456", "0x10", "1\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        id = 7;
        assert_int_equal(sse_parse_event_id(bad[i], strlen(bad[i]), &id), -1);
        assert_int_equal(id, 7); /* untouched */
    }
    /* Only the given length counts (a header value is not NUL-terminated there). */
    assert_int_equal(sse_parse_event_id("42xyz", 2, &id), 0);
    assert_int_equal(id, 42);

    struct evbuffer *out = evbuffer_new();
    assert_int_equal(sse_format_event(out, 5, "{\"a\":1}"), 0);
    assert_int_equal(sse_format_event(out, 6, "x\ny\r\nz\rw"), 0);
    assert_int_equal(sse_format_event(out, 7, ""), 0);
    size_t len = evbuffer_get_length(out);
    const char *text = (const char *)evbuffer_pullup(out, -1);
    const char *want = "id: 5\ndata: {\"a\":1}\n\n"
                       "id: 6\ndata: x\ndata: y\ndata: z\ndata: w\n\n"
                       "id: 7\ndata: \n\n";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(text, want, len);
    evbuffer_free(out);
}

struct stream {
    bool headers;
    int code;
    char content_type[64];
    struct evbuffer *got;
    bool ended;
};

static int stream_headers(struct evhttp_request *req, void *arg)
{
    struct stream *s = arg;
    s->headers = true;
    s->code = evhttp_request_get_response_code(req);
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    snprintf(s->content_type, sizeof(s->content_type), "%s", ct ? ct : "");
    return 0;
}

static void stream_chunk(struct evhttp_request *req, void *arg)
{
    struct stream *s = arg;
    evbuffer_add_buffer(s->got, evhttp_request_get_input_buffer(req));
}

static void stream_done(struct evhttp_request *req, void *arg)
{
    struct stream *s = arg;
    s->ended = true;
    if (req && !s->headers)
        s->code = evhttp_request_get_response_code(req);
    if (req)
        evbuffer_add_buffer(s->got, evhttp_request_get_input_buffer(req));
}

/* Opens GET path as a stream; last_id (or NULL) as Last-Event-ID. */
static struct evhttp_connection *stream_open(struct harness *h, struct stream *s, const char *path,
                                             const char *last_id)
{
    memset(s, 0, sizeof(*s));
    s->got = evbuffer_new();
    struct evhttp_connection *conn =
        evhttp_connection_base_new(h->base, NULL, "127.0.0.1", server_api_port(h->srv));
    struct evhttp_request *req = evhttp_request_new(stream_done, s);
    evhttp_request_set_header_cb(req, stream_headers);
    evhttp_request_set_chunked_cb(req, stream_chunk);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    if (last_id)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Last-Event-ID", last_id);
    assert_int_equal(evhttp_make_request(conn, req, EVHTTP_REQ_GET, path), 0);
    return conn;
}

static void stream_close(struct evhttp_connection *conn, struct stream *s)
{
    evhttp_connection_free(conn);
    evbuffer_free(s->got);
}

struct stream_wait {
    struct stream *s;
    const char *needle;
};

static bool stream_has(void *arg)
{
    struct stream_wait *w = arg;
    return evbuffer_search(w->s->got, w->needle, strlen(w->needle), NULL).pos >= 0;
}

static bool stream_answered(void *arg)
{
    struct stream *s = arg;
    return s->headers || s->ended;
}

static bool stream_answered_and_ended(void *arg)
{
    return ((struct stream *)arg)->ended;
}

static void test_e2e_event_stream(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h)); /* events 1 hello, 2 host_up */

    /* Without an id: the last events, then every new one as it is journaled. */
    struct stream s;
    struct evhttp_connection *conn = stream_open(&h, &s, "/v1/events/stream", NULL);
    struct stream_wait w = {&s, "id: 2\n"};
    assert_true(run_until(h.base, stream_has, &w));
    assert_int_equal(s.code, 200);
    assert_string_equal(s.content_type, "text/event-stream");
    w.needle = "retry: ";
    assert_true(stream_has(&w));
    w.needle = "id: 1\ndata: {";
    assert_true(stream_has(&w));
    agent_send(&h.agent, vm_event_msg("web1", "crashed", "qemu killed by signal 9", 99));
    w.needle = "id: 3\ndata: {";
    assert_true(run_until(h.base, stream_has, &w));
    w.needle = "\"kind\":\"vm_event\"";
    assert_true(stream_has(&w));
    assert_false(s.ended);
    stream_close(conn, &s);

    /* A browser reconnecting says where it was: only what came after. */
    conn = stream_open(&h, &s, "/v1/events/stream?since=1", "2");
    w = (struct stream_wait){&s, "id: 3\n"};
    assert_true(run_until(h.base, stream_has, &w));
    w.needle = "id: 2\n";
    assert_false(stream_has(&w));
    stream_close(conn, &s);

    /* Bad ids and parameters are 400s, before any stream starts. */
    struct http_call call;
    http_expect(&h, EVHTTP_REQ_GET, "/v1/events/stream?since=-1", 400, "not an event id", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/v1/events/stream?from=1", 400, "unknown query", &call);
    http_finish(&call);

    /* At most SSE_CLIENTS_MAX streams (16): the next is refused, one closed frees a place. */
    struct stream many[17];
    struct evhttp_connection *conns[17];
    for (int i = 0; i < 17; i++) {
        conns[i] = stream_open(&h, &many[i], "/v1/events/stream?since=0", NULL);
        assert_true(run_until(h.base, stream_answered, &many[i]));
    }
    for (int i = 0; i < 16; i++)
        assert_int_equal(many[i].code, 200);
    assert_int_equal(many[16].code, 503);
    stream_close(conns[16], &many[16]);
    stream_close(conns[0], &many[0]);
    /* The server sees the close at its next write (the keepalive, or an event). */
    agent_send(&h.agent, vm_event_msg("web1", "stopped", "order vm_stop", 100));
    w = (struct stream_wait){&many[1], "id: 4\n"};
    assert_true(run_until(h.base, stream_has, &w));
    conns[0] = stream_open(&h, &many[0], "/v1/events/stream?since=0", NULL);
    assert_true(run_until(h.base, stream_answered, &many[0]));
    assert_int_equal(many[0].code, 200);
    for (int i = 0; i < 16; i++)
        stream_close(conns[i], &many[i]);

    /* A server shutting down ends its open streams properly (the last chunk). */
    conn = stream_open(&h, &s, "/v1/events/stream", NULL);
    w = (struct stream_wait){&s, "id: 4\n"};
    assert_true(run_until(h.base, stream_has, &w));
    server_free(h.srv);
    h.srv = NULL;
    assert_true(run_until(h.base, stream_answered_and_ended, &s));
    stream_close(conn, &s);
    harness_stop(&h);
}

struct raw_reader {
    int fd;
    size_t bytes;
    bool eof;
};

static bool raw_read_to_eof(void *arg)
{
    struct raw_reader *r = arg;
    char buf[65536];
    for (;;) {
        ssize_t n = read(r->fd, buf, sizeof(buf));
        if (n > 0) {
            r->bytes += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            r->eof = true;
        return r->eof;
    }
}

/* The agent port and the API bound on IPv6 ([::1]:PORT in the configuration); an
 * agent connecting to [::1] is welcomed. */
static void test_e2e_ipv6_listeners(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "listen: '[::1]:7070'\napi: '[::1]:7071'\n");
    assert_string_equal(h.cfg->listen_host, "::1");
    assert_string_equal(h.cfg->api_host, "::1");
    agent_start_at(&h.agent, h.base, "::1", server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    assert_non_null(agent_got(&h.agent, "welcome"));
    struct inv_host *host = inventory_find_host(server_inventory(h.srv), "node1");
    assert_int_equal(host->state, INV_HOST_CONNECTED);
    /* The API answers a TCP connection on [::1] only (not on 127.0.0.1). */
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                                .sin6_addr = IN6ADDR_LOOPBACK_INIT,
                                .sin6_port = htons(server_api_port(h.srv))};
    assert_int_equal(connect(fd, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
    close(fd);
    harness_stop(&h);

    /* On [::] the API takes IPv4 clients as well: one that connects to 127.0.0.1
     * and names it in Host passes the Host check (the socket's own address is
     * ::ffff:127.0.0.1). */
    harness_start(&h, "api: '[::]:7071'\n");
    struct http_call call;
    http_expect(&h, EVHTTP_REQ_GET, "/v1/status", 200, NULL, &call);
    http_finish(&call);
    harness_stop(&h);
}

/* A client that does not read is dropped once SSE_BUFFER_MAX bytes wait for it:
 * the server's memory stays bounded and the loop never waits for it. */
static void test_e2e_slow_stream_is_dropped(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(server_api_port(h.srv))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    const char *get = "GET /v1/events/stream?since=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(write(fd, get, strlen(get)), (ssize_t)strlen(get));
    struct timeval brief = {0, 50000};
    event_base_loopexit(h.base, &brief);
    event_base_dispatch(h.base);

    /* 4 MB of events while the client reads nothing. */
    char pad[1001];
    memset(pad, 'x', 1000);
    pad[1000] = '\0';
    for (int i = 0; i < 4000; i++) {
        cleanup_json json_t *detail = json_pack("{s:s}", "pad", pad);
        journal_note(server_journal(h.srv), 0, "node1", "web1", JOURNAL_VM_EVENT, detail);
        if (i % 100 == 0) {
            event_base_loopexit(h.base, &brief);
            event_base_dispatch(h.base);
        }
    }
    /* Now it reads: what was queued, then the end (not the rest of the 4 MB). */
    fcntl(fd, F_SETFL, O_NONBLOCK);
    struct raw_reader r = {fd, 0, false};
    assert_true(run_until(h.base, raw_read_to_eof, &r));
    assert_true(r.bytes < 3 * 1024 * 1024);
    close(fd);
    /* The server goes on serving. */
    struct http_call call;
    http_expect(&h, EVHTTP_REQ_GET, "/v1/status", 200, NULL, &call);
    http_finish(&call);
    harness_stop(&h);
}

/* The API's credentials and request checks (api_auth.c): the tokens file, a
 * bearer header, the session cookie, Host (DNS rebinding), Origin (CSRF),
 * Content-Type, sessions and the per-client rate. */
static void test_api_auth_checks(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct api_token *t = NULL;
    size_t n = 0;
    /* SHA-256("vcr-abc") */
    unsigned char d[32];
    const char *tok = "vcr-abc";
    char line[200] = "op operator sha256:", hex[65];
    SHA256((const unsigned char *)tok, strlen(tok), d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    strcat(line, hex);
    strcat(line, "\n# a comment\nro read sha256:");
    strcat(line, hex);
    line[strlen(line) - 1] = '0'; /* another hash */
    assert_int_equal(api_tokens_parse(line, strlen(line), "t", &t, &n, &err), 0);
    assert_int_equal(n, 2);
    const struct api_token *m = api_tokens_match(t, n, tok, strlen(tok));
    assert_non_null(m);
    assert_string_equal(m->name, "op");
    assert_int_equal(m->role, API_ROLE_OPERATOR);
    assert_null(api_tokens_match(t, n, "vcr-abd", 7));
    assert_null(api_tokens_match(t, n, "", 0));
    free(t);
    const char *bad = "op admin sha256:00\n";
    assert_int_equal(api_tokens_parse(bad, strlen(bad), "t", &t, &n, &err), -1);
    assert_contains(vcr_error_msg(err), "role `admin`; allowed: read, operator");
    vcr_error_release(&err);

    const char *v;
    size_t len;
    assert_int_equal(api_parse_bearer("Bearer vcr-abc", &v, &len), 0);
    assert_int_equal(len, 7);
    assert_int_equal(api_parse_bearer("bearer  vcr-abc ", &v, &len), 0);
    assert_int_equal(api_parse_bearer("Basic dXNlcjpwdw==", &v, &len), -1);
    assert_int_equal(api_parse_bearer("Bearer a b", &v, &len), -1);
    assert_int_equal(api_parse_cookie("a=1; vcr_session=xyz; b=2", "vcr_session", &v, &len), 0);
    assert_int_equal(len, 3);
    assert_int_equal(api_parse_cookie("xvcr_session=1", "vcr_session", &v, &len), -1);

    assert_true(api_content_type_is_json("application/json"));
    assert_true(api_content_type_is_json("Application/JSON; charset=utf-8"));
    assert_false(api_content_type_is_json("text/plain"));
    assert_false(api_content_type_is_json("application/jsonp"));
    assert_false(api_content_type_is_json(NULL));

    const char *names[] = {"vcr.example"};
    assert_true(api_host_allowed("127.0.0.1:7080", "127.0.0.1", names, 1));
    assert_true(api_host_allowed("localhost:7080", "127.0.0.1", names, 1));
    assert_true(api_host_allowed("VCR.example", "10.0.0.1", names, 1));
    assert_false(api_host_allowed("localhost", "10.0.0.1", names, 1));
    assert_false(api_host_allowed("evil.example:7080", "127.0.0.1", names, 1));
    assert_false(api_host_allowed(NULL, "127.0.0.1", names, 1));
    assert_false(api_host_allowed("127.0.0.1:99999", "127.0.0.1", names, 1));
    assert_true(api_origin_allowed("https://127.0.0.1:7080", "127.0.0.1:7080", true));
    assert_false(api_origin_allowed("http://127.0.0.1:7080", "127.0.0.1:7080", true));
    assert_false(api_origin_allowed("https://evil.example", "127.0.0.1:7080", true));
    assert_false(api_origin_allowed("null", "127.0.0.1:7080", true));

    struct api_sessions *ss = api_sessions_new();
    struct api_token who = {.name = "op", .role = API_ROLE_OPERATOR};
    char id[2 * API_SESSION_ID_BYTES + 1];
    assert_int_equal(api_sessions_open(ss, &who, 1000, id, &err), 0);
    assert_ptr_equal(api_sessions_find(ss, id, strlen(id), 2000), &who);
    assert_null(api_sessions_find(ss, id, strlen(id), 1000 + API_SESSION_TTL_MS));
    api_sessions_close(ss, id, strlen(id));
    assert_null(api_sessions_find(ss, id, strlen(id), 2000));
    api_sessions_free(ss);

    /* 2 per second, burst 3: the 4th at once is refused with a retry in 1 s. */
    struct api_rate *r = api_rate_new(2, 3);
    uint32_t retry = 0;
    for (int i = 0; i < 3; i++)
        assert_true(api_rate_take(r, "a:1", 5000, &retry));
    assert_false(api_rate_take(r, "a:1", 5000, &retry));
    assert_int_equal(retry, 1);
    assert_true(api_rate_take(r, "a:2", 5000, &retry)); /* another client */
    assert_true(api_rate_take(r, "a:1", 5600, &retry)); /* refilled */
    api_rate_free(r);
}

/* One request over TLS (the lab CA checks the server), with optional headers
 * "Name: value" (NULL-terminated); answered or not, the call is finished. */
static void tls_call(struct harness *h, SSL_CTX *ctx, enum evhttp_cmd_type type, const char *path,
                     const char *body, const char *const *headers, struct http_call *call)
{
    memset(call, 0, sizeof(*call));
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1"), 1);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        h->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(bev);
    call->conn = evhttp_connection_base_bufferevent_new(h->base, NULL, bev, "127.0.0.1",
                                                        server_api_port(h->srv));
    struct evhttp_request *req = evhttp_request_new(http_done, &call->answer);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Host", "127.0.0.1");
    for (size_t i = 0; headers && headers[i]; i++) {
        char name[64];
        const char *colon = strchr(headers[i], ':');
        snprintf(name, sizeof(name), "%.*s", (int)(colon - headers[i]), headers[i]);
        evhttp_add_header(out, name, colon + 2);
    }
    if (body) {
        evhttp_add_header(out, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    }
    assert_int_equal(evhttp_make_request(call->conn, req, type, path), 0);
    assert_true(run_until(h->base, http_answered, &call->answer));
}

static char *read_line(const char *file)
{
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    char buf[256] = "";
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return strdup(buf);
}

/* The authenticated API in process: TLS with the server's certificate, tokens
 * of `vcr pki token`; no credentials 401, a read token reads and cannot act
 * (403), a forged Origin is refused (403), and none of these reaches the agent;
 * the operator's token does. */
static void test_e2e_api_tokens_over_tls(void **state)
{
    (void)state;
    char pki[] = "/tmp/vcr-test-apitls-XXXXXX";
    assert_non_null(mkdtemp(pki));
    cleanup_error vcr_error_t err = NULL;
    const char *san[] = {"127.0.0.1"};
    assert_int_equal(pki_init(pki, "ca", &err), 0);
    assert_int_equal(pki_issue(pki, "vcr-server", true, san, 1, &err), 0);
    assert_int_equal(pki_token(pki, "op", "operator", &err), 0);
    assert_int_equal(pki_token(pki, "ro", "read", &err), 0);
    char yaml[1024], file[300];
    snprintf(yaml, sizeof(yaml),
             "insecure: true\napi_tokens_file: %s/api-tokens\napi_tls_cert_file: "
             "%s/vcr-server.crt\napi_tls_key_file: %s/vcr-server.key\n",
             pki, pki, pki);
    struct harness h;
    harness_start(&h, yaml);
    agent_start(&h.agent, h.base, server_agent_port(h.srv), hello_msg("node1"));
    assert_true(run_until(h.base, got_welcome, &h));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    snprintf(file, sizeof(file), "%s/ca.crt", pki);
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, file, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    snprintf(file, sizeof(file), "%s/op.token", pki);
    cleanup_free char *op = read_line(file);
    snprintf(file, sizeof(file), "%s/ro.token", pki);
    cleanup_free char *ro = read_line(file);
    char op_h[200], ro_h[200];
    snprintf(op_h, sizeof(op_h), "Authorization: Bearer %s", op);
    snprintf(ro_h, sizeof(ro_h), "Authorization: Bearer %s", ro);
    const char *const none[] = {NULL};
    const char *const reader[] = {ro_h, NULL};
    const char *const forged[] = {op_h, "Origin: https://evil.example", NULL};
    const char *const oper[] = {op_h, "Origin: https://127.0.0.1", NULL};
    struct http_call call;
    size_t before = json_array_size(h.agent.received);

    tls_call(&h, ctx, EVHTTP_REQ_GET, "/v1/status", NULL, none, &call);
    assert_int_equal(call.answer.code, 401);
    http_finish(&call);
    tls_call(&h, ctx, EVHTTP_REQ_POST, "/v1/vms/web1/stop", "{}", none, &call);
    assert_int_equal(call.answer.code, 401);
    http_finish(&call);
    tls_call(&h, ctx, EVHTTP_REQ_GET, "/v1/status", NULL, reader, &call);
    assert_int_equal(call.answer.code, 200);
    http_finish(&call);
    tls_call(&h, ctx, EVHTTP_REQ_POST, "/v1/vms/web1/stop", "{}", reader, &call);
    assert_int_equal(call.answer.code, 403);
    assert_contains(json_string_value(json_object_get(call.answer.body, "error")), "role read");
    http_finish(&call);
    tls_call(&h, ctx, EVHTTP_REQ_POST, "/v1/vms/web1/stop", "{}", forged, &call);
    assert_int_equal(call.answer.code, 403);
    assert_contains(json_string_value(json_object_get(call.answer.body, "error")), "Origin");
    http_finish(&call);
    assert_int_equal(json_array_size(h.agent.received), before); /* no order reached it */

    tls_call(&h, ctx, EVHTTP_REQ_POST, "/v1/vms/web1/stop", "{}", oper, &call);
    assert_int_equal(call.answer.code, 200);
    assert_string_equal(json_string_value(json_object_get(agent_last_order(&h.agent), "action")),
                        "vm_stop");
    http_finish(&call);

    /* Plain HTTP to the TLS port gets no answer. */
    http_start(&call, &h, EVHTTP_REQ_GET, "/v1/status");
    assert_true(run_until(h.base, http_answered, &call.answer));
    assert_int_equal(call.answer.code, 0);
    http_finish(&call);
    SSL_CTX_free(ctx);
    harness_stop(&h);
    snprintf(file, sizeof(file), "rm -rf %s", pki);
    assert_int_equal(system(file), 0);
}

struct half_requests {
    int fd[6];
    size_t closed;
};

static bool count_closed(void *arg)
{
    struct half_requests *q = arg;
    q->closed = 0;
    for (size_t i = 0; i < 6; i++) {
        char c;
        ssize_t n = recv(q->fd[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            q->closed++;
    }
    return false;
}

static bool all_closed(void *arg)
{
    count_closed(arg);
    return ((struct half_requests *)arg)->closed == 6;
}

/* The API's connection cap and request deadline (api_conn.c): with a cap of 4,
 * six connections that never finish their request cannot keep a seventh client
 * out (the ones idle longest are closed to make room), and those left are closed
 * once API_REQUEST_DEADLINE_MS has passed without a whole request. */
static void test_e2e_api_connection_cap_and_deadline(void **state)
{
    (void)state;
    struct harness h;
    memset(&h, 0, sizeof(h));
    tmpdir_make(&h.dir);
    cleanup_error vcr_error_t err = NULL;
    h.cfg = parse_config("", &err);
    h.cfg->listen_port = 0;
    h.cfg->api_port = 0;
    h.cfg->api_connections_max = 4;
    free(h.cfg->journal);
    h.cfg->journal = tmpdir_file(&h.dir, "journal.db");
    h.base = event_base_new();
    h.srv = server_new(h.base, h.cfg, &err);
    assert_non_null(h.srv);
    struct half_requests q;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(server_api_port(h.srv))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *half = "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a";
    for (size_t i = 0; i < 6; i++) {
        q.fd[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(q.fd[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(write(q.fd[i], half, strlen(half)), (ssize_t)strlen(half));
        struct timeval brief = {0, 20000};
        event_base_loopexit(h.base, &brief);
        event_base_dispatch(h.base);
    }
    struct http_call call;
    http_expect(&h, EVHTTP_REQ_GET, "/v1/status", 200, NULL, &call);
    http_finish(&call);
    run_until(h.base, count_closed, &q); /* 5 s */
    assert_true(q.closed >= 2 && q.closed < 6);
    /* The rest: at the deadline (10 s after their accept). */
    int64_t started = vcr_mono_ms();
    while (!all_closed(&q) && vcr_mono_ms() - started < API_REQUEST_DEADLINE_MS + 5000)
        run_until(h.base, all_closed, &q);
    assert_int_equal(q.closed, 6);
    for (size_t i = 0; i < 6; i++)
        close(q.fd[i]);
    harness_stop(&h);
}

static void test_e2e_ui_files(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "");
    const char *files[] = {"/ui/", "/ui/dashboard.js", "/ui/dashboard.css", "/ui/icon.svg"};
    const char *types[] = {"text/html", "text/javascript", "text/css", "image/svg+xml"};
    for (size_t i = 0; i < 4; i++) {
        struct stream s;
        struct evhttp_connection *conn = stream_open(&h, &s, files[i], NULL);
        assert_true(run_until(h.base, stream_answered, &s));
        assert_int_equal(s.code, 200);
        assert_true(strncmp(s.content_type, types[i], strlen(types[i])) == 0);
        stream_close(conn, &s);
    }
    struct http_call call;
    http_expect(&h, EVHTTP_REQ_GET, "/ui/nothing.js", 404, "no dashboard file", &call);
    http_finish(&call);
    http_expect(&h, EVHTTP_REQ_GET, "/ui/a%20b", 400, "not a dashboard file name", &call);
    http_finish(&call);
    harness_stop(&h);
}

/* The stream's deadline grows with the file but never past what the agents
 * accept (PROTO_STREAM_DEADLINE_MAX_MS): over it they refuse the order as
 * invalid, and a file over ~7 GB went through the server instead. */
static void test_stream_deadline_capped_at_the_agents_maximum(void **state)
{
    (void)state;
    assert_int_equal(chunk_copy_stream_ms(1), 60000);
    assert_int_equal(chunk_copy_stream_ms(1000000000), 60000 + 500000);
    int64_t at_cap = (int64_t)(PROTO_STREAM_DEADLINE_MAX_MS - 60000) * 2000;
    assert_int_equal(chunk_copy_stream_ms(at_cap - 2000), PROTO_STREAM_DEADLINE_MAX_MS - 1);
    assert_int_equal(chunk_copy_stream_ms(at_cap), PROTO_STREAM_DEADLINE_MAX_MS);
    assert_int_equal(chunk_copy_stream_ms(8000000000LL), PROTO_STREAM_DEADLINE_MAX_MS);
    assert_int_equal(chunk_copy_stream_ms(INT64_MAX), PROTO_STREAM_DEADLINE_MAX_MS);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    vcr_log_init("test_server", VCR_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_config_file_all_keys),
        cmocka_unit_test(test_config_tls),
        cmocka_unit_test(test_config_migration),
        cmocka_unit_test(test_stream_deadline_capped_at_the_agents_maximum),
        cmocka_unit_test(test_config_ha),
        cmocka_unit_test(test_inventory_find_container_host),
        cmocka_unit_test(test_config_bad_listen_address),
        cmocka_unit_test(test_config_bad_port),
        cmocka_unit_test(test_config_heartbeat_bounds),
        cmocka_unit_test(test_config_host_timeout_bounds),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_wrong_type),
        cmocka_unit_test(test_config_every_bad_field_named),
        cmocka_unit_test(test_config_key_file),
        cmocka_unit_test(test_journal_write_read),
        cmocka_unit_test(test_journal_holds_events_while_it_cannot_write),
        cmocka_unit_test(test_inventory_hello),
        cmocka_unit_test(test_inventory_heartbeat_gaps),
        cmocka_unit_test(test_inventory_index),
        cmocka_unit_test(test_inventory_hello_invalid),
        cmocka_unit_test(test_inventory_vm_event_and_sample),
        cmocka_unit_test(test_inventory_heartbeat_timeout),
        cmocka_unit_test(test_fence_after_leaves_a_margin),
        cmocka_unit_test(test_inventory_ram_backing_in_status),
        cmocka_unit_test(test_inventory_warm_restart_deadline),
        cmocka_unit_test(test_e2e_hello_and_vm_event),
        cmocka_unit_test(test_e2e_ipv6_listeners),
        cmocka_unit_test(test_e2e_message_before_hello_rejected),
        cmocka_unit_test(test_e2e_bad_hello_rejected),
        cmocka_unit_test(test_e2e_challenge),
        cmocka_unit_test(test_e2e_host_lost),
        cmocka_unit_test(test_e2e_server_stall_is_not_a_host_loss),
        cmocka_unit_test(test_e2e_api),
        cmocka_unit_test(test_e2e_container_image_and_prune),
        cmocka_unit_test(test_image_server),
        cmocka_unit_test(test_e2e_order_timeout_and_disconnect),
        cmocka_unit_test(test_sse_event_id_and_format),
        cmocka_unit_test(test_e2e_event_stream),
        cmocka_unit_test(test_e2e_slow_stream_is_dropped),
        cmocka_unit_test(test_e2e_ui_files),
        cmocka_unit_test(test_api_auth_checks),
        cmocka_unit_test(test_e2e_api_tokens_over_tls),
        cmocka_unit_test(test_e2e_api_connection_cap_and_deadline),
    };
    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
