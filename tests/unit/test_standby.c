/* Unit tests for the standby role's pure parts (src/agent/standby/standby_spec.c,
 * standby_load.c, standby_migrate.c): container orders -> specs -> LXC
 * configuration items; /proc/stat, /proc/meminfo, cgroup v1 counter parsing
 * and CPU percentages; migration orders' members, image chunks through base64,
 * paths, CRIU log reasons and the gratuitous ARP frame; container images:
 * their order member, download, SHA-256 check, cache and unpack (against a
 * small HTTP server in a child process); the agent-to-agent stream's orders,
 * token and checks over loopback TCP (a sender in a child process). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <sched.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/standby/standby.h"
#include "agent/standby/standby_archive.h"
#include "agent/standby/standby_address.h"
#include "agent/standby/standby_ct.h"
#include "agent/standby_migrate.h"
#include "agent/standby_stream.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "proto/proto_code.h"

static const char *item(const struct standby_cfg_item *items, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i].key, key) == 0)
            return items[i].value;
    return NULL;
}

static void test_config_items_for_a_container(void **state)
{
    (void)state;
    /* Privileged (explicit: unprivileged is the default): the template itself below. */
    cleanup_json json_t *msg =
        json_pack("{s:s, s:s, s:s, s:s, s:b}", "name", "web1ct", "service", "web1", "address",
                  "10.77.0.31/24", "gateway", "10.77.0.1", "privileged", 1);
    cleanup_error vcr_error_t err = NULL;
    struct standby_ct_spec spec;
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    struct standby_ct_paths p;
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.rootfs, "/var/lib/lxc/web1ct/rootfs");
    assert_string_equal(p.delta, "/var/lib/lxc/web1ct/delta");
    assert_string_equal(p.work, "/var/lib/lxc/web1ct/work");
    assert_string_equal(p.lower, "/var/lib/vcr/templates/busybox");
    struct standby_cfg_item items[STANDBY_CFG_MAX];
    size_t n = standby_ct_config(&spec, &p, items);
    assert_string_equal(item(items, n, "lxc.net.0.type"), "veth");
    assert_string_equal(item(items, n, "lxc.net.0.link"), "br0");
    assert_string_equal(item(items, n, "lxc.net.0.flags"), "up");
    assert_string_equal(item(items, n, "lxc.net.0.ipv4.address"), "10.77.0.31/24");
    assert_string_equal(item(items, n, "lxc.net.0.ipv4.gateway"), "10.77.0.1");
    assert_string_equal(item(items, n, "lxc.net.0.hwaddr"), "02:00:0a:4d:00:1f");
    assert_string_equal(item(items, n, "lxc.rootfs.path"), "/var/lib/lxc/web1ct/rootfs");
    assert_string_equal(item(items, n, "lxc.init.cmd"), "/start");
    assert_string_equal(item(items, n, "lxc.environment"), "VCR_SERVICE=web1");
    assert_string_equal(item(items, n, "lxc.uts.name"), "web1ct");
    /* No AppArmor profile: CRIU restore fails with one (LAB-NOTES). */
    assert_null(item(items, n, "lxc.apparmor.profile"));
    assert_null(item(items, n, "lxc.net.0.ipv6.address"));

    /* A dual-stack service's container gets its IPv6 address too (/64 unless told). */
    json_object_set_new(msg, "address6", json_string("fd77::31"));
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    n = standby_ct_config(&spec, &p, items);
    assert_string_equal(item(items, n, "lxc.net.0.ipv6.address"), "fd77::31/64");
    assert_string_equal(item(items, n, "lxc.net.0.ipv4.address"), "10.77.0.31/24");
    json_object_set_new(msg, "address6", json_string("fd77::31/112"));
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    n = standby_ct_config(&spec, &p, items);
    assert_string_equal(item(items, n, "lxc.net.0.ipv6.address"), "fd77::31/112");
}

static void test_spec_defaults_and_errors(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct standby_ct_spec spec;
    cleanup_json json_t *minimal =
        json_pack("{s:s, s:s, s:i}", "vm", "c1", "address", "10.0.0.5", "prefix", 16);
    assert_int_equal(standby_ct_spec_from_json(minimal, &spec, &err), 0);
    assert_string_equal(spec.service, "c1");
    /* Unprivileged unless the order says `privileged: true` (docs/security.md). */
    assert_true(spec.unprivileged);
    json_object_set_new(minimal, "privileged", json_null());
    assert_int_equal(standby_ct_spec_from_json(minimal, &spec, &err), 0);
    assert_true(spec.unprivileged);
    json_object_del(minimal, "privileged");
    assert_string_equal(spec.template, "busybox");
    assert_int_equal(spec.prefix, 16);
    assert_string_equal(spec.gateway, "");
    struct standby_ct_paths p;
    standby_ct_paths("/l", "/t", &spec, &p, &err);
    struct standby_cfg_item items[STANDBY_CFG_MAX];
    size_t n = standby_ct_config(&spec, &p, items);
    assert_null(item(items, n, "lxc.net.0.ipv4.gateway"));

    static const char *const bad[][2] = {
        {"address", "10.77.0.300"},  {"address", "10.0.0.1/33"},
        {"gateway", "gw"},           {"address6", "10.0.0.5"},
        {"address6", "fd77::1/129"}, {"address6", "fd77::1::2"},
        {"template", "../etc"},      {"name", "a/b"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cleanup_json json_t *m = json_pack("{s:s, s:s}", "name", "c1", "address", "10.0.0.5");
        json_object_set_new(m, bad[i][0], json_string(bad[i][1]));
        cleanup_error vcr_error_t e = NULL;
        assert_int_equal(standby_ct_spec_from_json(m, &spec, &e), -1);
        assert_non_null(strstr(vcr_error_msg(e), bad[i][0]));
    }
    cleanup_json json_t *noaddr = json_pack("{s:s}", "name", "c1");
    cleanup_error vcr_error_t e2 = NULL;
    assert_int_equal(standby_ct_spec_from_json(noaddr, &spec, &e2), -1);
    assert_false(standby_valid_name(".."));
}

static void test_proc_stat_and_cpu_pct(void **state)
{
    (void)state;
    const char *a = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n"
                    "cpu1 50 0 50 350 50 0 0 0 0 0\nintr 1 2 3\n";
    const char *b = "cpu  200 0 200 1100 100 0 0 0 0 0\ncpu0 1 1 1 1\ncpu1 1 1 1 1\n";
    struct standby_cpu_times ta, tb;
    int ncpus = 0;
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(standby_parse_proc_stat(a, &ta, &ncpus, &err), 0);
    assert_int_equal(ncpus, 2);
    assert_int_equal(ta.total, 1000);
    assert_int_equal(ta.idle, 800);
    assert_int_equal(standby_parse_proc_stat(b, &tb, &ncpus, &err), 0);
    /* 600 jiffies more, 400 of them idle: one third busy. */
    assert_float_equal(standby_vm_cpu_pct(&ta, &tb), 100.0 / 3, 0.01);
    assert_float_equal(standby_vm_cpu_pct(&tb, &ta), 0.0, 0.0);
    assert_int_equal(standby_parse_proc_stat("intr 1\n", &ta, &ncpus, &err), -1);
}

static void test_meminfo_and_counters(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    int64_t total, avail;
    assert_int_equal(standby_parse_meminfo("MemTotal:  251904 kB\nMemFree:  100 kB\n"
                                           "MemAvailable:  180000 kB\n",
                                           &total, &avail, &err),
                     0);
    assert_int_equal(total, 251904);
    assert_int_equal(avail, 180000);
    assert_int_equal(standby_parse_meminfo("MemFree: 5 kB\n", &total, &avail, &err), -1);
    uint64_t v;
    cleanup_error vcr_error_t e2 = NULL;
    assert_int_equal(standby_parse_counter("123456789\n", &v, &e2), 0);
    assert_int_equal(v, 123456789);
    assert_int_equal(standby_parse_counter("12x\n", &v, &e2), -1);
    /* 50 ms of CPU over 100 ms: half a CPU. */
    assert_float_equal(standby_ct_cpu_pct(1000000, 51000000, 100000000), 50.0, 0.001);
    assert_float_equal(standby_ct_cpu_pct(5, 1, 100), 0.0, 0.0);
}

static void expect_error(int rc, vcr_error_t *err, const char *part)
{
    assert_int_equal(rc, -1);
    assert_non_null(*err);
    if (strstr(vcr_error_msg(*err), part) == NULL)
        fail_msg("error `%s` does not say `%s`", vcr_error_msg(*err), part);
    vcr_error_release(err);
}

static void test_migrate_members(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    struct standby_checkpoint_order o;
    cleanup_json json_t *ok = json_pack("{s:s, s:s}", "name", "web1", "phase", "pre");
    assert_int_equal(standby_checkpoint_from_json(ok, &o, &err), 0);
    assert_string_equal(o.name, "web1");
    assert_int_equal(o.phase, STANDBY_PHASE_PRE);
    cleanup_json json_t *bad_phase = json_pack("{s:s, s:s}", "name", "web1", "phase", "half");
    expect_error(standby_checkpoint_from_json(bad_phase, &o, &err), &err,
                 "phase: `half` is not a phase; allowed: pre, final");
    cleanup_json json_t *no_phase = json_pack("{s:s}", "name", "web1");
    expect_error(standby_checkpoint_from_json(no_phase, &o, &err), &err, "`(missing)`");
    cleanup_json json_t *bad_name = json_pack("{s:s, s:s}", "name", "../etc", "phase", "final");
    expect_error(standby_checkpoint_from_json(bad_name, &o, &err), &err,
                 "name: `../etc` is not a name");

    struct standby_image_read rq;
    cleanup_json json_t *rd = json_pack("{s:s, s:s, s:i, s:i}", "name", "web1", "phase", "final",
                                        "offset", 5, "length", STANDBY_CHUNK_MAX);
    assert_int_equal(standby_image_read_from_json(rd, &rq, &err), 0);
    assert_int_equal(rq.offset, 5);
    assert_int_equal(rq.length, STANDBY_CHUNK_MAX);
    json_object_set_new(rd, "length", json_integer(STANDBY_CHUNK_MAX + 1));
    expect_error(standby_image_read_from_json(rd, &rq, &err), &err,
                 "length: `131073` is out of range; allowed: 1..131072");
    json_object_set_new(rd, "length", json_integer(0));
    expect_error(standby_image_read_from_json(rd, &rq, &err), &err, "allowed: 1..131072");
    json_object_set_new(rd, "length", json_integer(1));
    json_object_set_new(rd, "offset", json_integer(-1));
    expect_error(standby_image_read_from_json(rd, &rq, &err), &err, "offset: `-1`");
    json_object_del(rd, "offset");
    expect_error(standby_image_read_from_json(rd, &rq, &err), &err, "`offset` is missing");

    struct standby_image_write w;
    cleanup_json json_t *wr = json_pack("{s:s, s:s, s:i, s:s, s:b}", "name", "web1", "phase", "pre",
                                        "offset", 0, "data", "aGVsbG8=", "last", 0);
    assert_int_equal(standby_image_write_from_json(wr, &w, &err), 0);
    assert_int_equal(w.len, 5);
    assert_memory_equal(w.data, "hello", 5);
    assert_false(w.last);
    standby_image_write_release(&w);
    json_object_set_new(wr, "last", json_true());
    expect_error(standby_image_write_from_json(wr, &w, &err), &err,
                 "the last chunk needs the file's size");
    json_object_set_new(wr, "bytes", json_integer(5));
    expect_error(standby_image_write_from_json(wr, &w, &err), &err, "sha256: `(missing)`");
    json_object_set_new(wr, "sha256", json_string("abc"));
    expect_error(standby_image_write_from_json(wr, &w, &err), &err, "64 hex digits");
    json_object_set_new(wr, "data", json_string("aGVsbG8"));
    json_object_set_new(
        wr, "sha256",
        json_string("2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824"));
    expect_error(standby_image_write_from_json(wr, &w, &err), &err,
                 "data: 7 characters is not base64");
    json_object_set_new(wr, "data", json_string("aGVs*G8="));
    expect_error(standby_image_write_from_json(wr, &w, &err), &err, "character 4 (`*`)");
    json_object_set_new(wr, "data", json_string("aGVsbG8="));
    assert_int_equal(standby_image_write_from_json(wr, &w, &err), 0);
    assert_true(w.last);
    assert_string_equal(w.sha256,
                        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    standby_image_write_release(&w);
}

static void test_base64_round_trip(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    /* Every length modulo 3, and a whole chunk of every byte value. */
    size_t lens[] = {0, 1, 2, 3, 4, 5, 255, STANDBY_CHUNK_MAX};
    unsigned char *buf = malloc(STANDBY_CHUNK_MAX);
    assert_non_null(buf);
    for (size_t i = 0; i < STANDBY_CHUNK_MAX; i++)
        buf[i] = (unsigned char)(i * 7 + i / 256);
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        cleanup_free char *text = standby_base64_encode(buf, lens[k]);
        assert_non_null(text);
        assert_int_equal(strlen(text), 4 * ((lens[k] + 2) / 3));
        assert_null(strchr(text, '\n'));
        unsigned char *back = NULL;
        size_t len = 99;
        assert_int_equal(standby_base64_decode(text, &back, &len, &err), 0);
        assert_int_equal(len, lens[k]);
        if (len)
            assert_memory_equal(back, buf, len);
        free(back);
    }
    free(buf);
    unsigned char *out = NULL;
    size_t len = 0;
    expect_error(standby_base64_decode("a=bc", &out, &len, &err), &err, "character 1");
    expect_error(standby_base64_decode("abc=d===", &out, &len, &err), &err, "character 3");
    /* Non-canonical: bits beside the padding (found by fuzz_chunk). */
    expect_error(standby_base64_decode("QR==", &out, &len, &err), &err, "not canonical");
    expect_error(standby_base64_decode("QUJ=", &out, &len, &err), &err, "not canonical");
    assert_int_equal(standby_base64_decode("QUI=", &out, &len, &err), 0);
    assert_int_equal(len, 2);
    free(out);
}

static char *make_base(void)
{
    char tmpl[] = "/tmp/vcr-test-migrate-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static json_t *write_chunk(const char *base, uint64_t offset, const char *text, bool last,
                           uint64_t bytes, const char *sha, vcr_error_t *err)
{
    struct standby_image_write w = {
        .phase = STANDBY_PHASE_FINAL, .offset = offset, .last = last, .bytes = bytes};
    snprintf(w.name, sizeof(w.name), "web1");
    if (sha)
        snprintf(w.sha256, sizeof(w.sha256), "%s", sha);
    w.data = (unsigned char *)strdup(text);
    w.len = strlen(text);
    json_t *r = standby_image_write(base, &w, err);
    standby_image_write_release(&w);
    return r;
}

static void test_image_chunks_and_paths(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    struct standby_migrate_paths p;
    assert_int_equal(standby_migrate_paths(base, "web1", STANDBY_PHASE_PRE, &p, &err), 0);
    char want[512];
    snprintf(want, sizeof(want), "%s/web1/pre", base);
    assert_string_equal(p.images, want);
    snprintf(want, sizeof(want), "%s/web1/pre.tar", base);
    assert_string_equal(p.tar, want);
    expect_error(standby_migrate_paths(base, "..", STANDBY_PHASE_PRE, &p, &err), &err,
                 "not a container name");

    /* "hello world" in two chunks; the SHA-256 of "hello world". */
    const char *sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    json_t *r = write_chunk(base, 0, "hello ", false, 0, NULL, &err);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "bytes")), 6);
    json_decref(r);
    r = write_chunk(base, 6, "world", true, 11, sha, &err);
    assert_non_null(r);
    json_decref(r);
    /* A wrong size, then a wrong digest, each named. */
    assert_null(write_chunk(base, 6, "world", true, 12, sha, &err));
    expect_error(-1, &err, "bytes: ");
    assert_null(write_chunk(base, 6, "world", true, 11,
                            "0000000000000000000000000000000000000000000000000000000000000000",
                            &err));
    expect_error(-1, &err, "the sender said 0000");
    /* Offset 0 starts the file again. */
    r = write_chunk(base, 0, "hello ", false, 0, NULL, &err);
    assert_int_equal(json_integer_value(json_object_get(r, "bytes")), 6);
    json_decref(r);
    r = write_chunk(base, 6, "world", true, 11, sha, &err);
    assert_non_null(r);
    json_decref(r);

    /* Read it back in chunks of 4: base64 of "hell", "o wo", "rld". */
    struct standby_image_read rq = {.phase = STANDBY_PHASE_FINAL, .length = 4};
    snprintf(rq.name, sizeof(rq.name), "web1");
    const char *want_data[] = {"aGVsbA==", "byB3bw==", "cmxk"};
    for (int i = 0; i < 3; i++) {
        rq.offset = (uint64_t)i * 4;
        cleanup_json json_t *c = standby_image_read(base, &rq, &err);
        assert_non_null(c);
        assert_string_equal(json_string_value(json_object_get(c, "data")), want_data[i]);
        assert_int_equal(json_is_true(json_object_get(c, "eof")), i == 2);
        assert_int_equal(json_integer_value(json_object_get(c, "bytes")), 11);
    }
    rq.offset = 11;
    cleanup_json json_t *end = standby_image_read(base, &rq, &err);
    assert_string_equal(json_string_value(json_object_get(end, "data")), "");
    assert_true(json_is_true(json_object_get(end, "eof")));
    rq.offset = 12;
    assert_null(standby_image_read(base, &rq, &err));
    expect_error(-1, &err, "offset: `12` is past the end");
    rq.phase = STANDBY_PHASE_PRE;
    rq.offset = 0;
    assert_null(standby_image_read(base, &rq, &err));
    expect_error(-1, &err, "no pre image");

    /* Cleanup removes everything and may run twice. */
    assert_int_equal(standby_migrate_cleanup(base, "web1", &err), 0);
    snprintf(want, sizeof(want), "%s/web1", base);
    struct stat st;
    assert_int_equal(stat(want, &st), -1);
    assert_int_equal(standby_migrate_cleanup(base, "web1", &err), 0);
    assert_int_equal(rmdir(base), 0);
}

/* The symlink trick (docs/security.md, "Root actions"): a link planted where
 * final.tar goes is never written or read through. */
static void test_chunk_write_never_follows_a_planted_link(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char dir[300], link[320], target[320];
    snprintf(dir, sizeof(dir), "%s/web1", base);
    snprintf(link, sizeof(link), "%s/final.tar", dir);
    snprintf(target, sizeof(target), "%s/outside", base);
    assert_int_equal(mkdir(dir, 0700), 0);
    FILE *f = fopen(target, "w");
    assert_non_null(f);
    fputs("secret", f);
    fclose(f);
    assert_int_equal(symlink(target, link), 0);
    /* A later chunk into the link: refused. */
    assert_null(write_chunk(base, 6, "world", false, 0, NULL, &err));
    expect_error(-1, &err, "final.tar");
    /* Read through it: refused. */
    struct standby_image_read rq = {.phase = STANDBY_PHASE_FINAL, .length = 4};
    snprintf(rq.name, sizeof(rq.name), "web1");
    assert_null(standby_image_read(base, &rq, &err));
    expect_error(-1, &err, "final.tar");
    /* The first chunk replaces the link by a file of its own. */
    json_t *r = write_chunk(base, 0, "hello ", false, 0, NULL, &err);
    assert_non_null(r);
    json_decref(r);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    char text[16] = "";
    f = fopen(target, "r");
    assert_non_null(f);
    assert_non_null(fgets(text, sizeof(text), f));
    fclose(f);
    assert_string_equal(text, "secret");
    /* A migration directory someone else can write to is not this agent's. */
    assert_int_equal(chmod(dir, 0777), 0);
    assert_null(write_chunk(base, 0, "hello ", false, 0, NULL, &err));
    expect_error(-1, &err, "not a private directory");
    assert_int_equal(standby_migrate_cleanup(base, "web1", &err), 0);
    assert_int_equal(unlink(target), 0);
    assert_int_equal(rmdir(base), 0);
}

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    assert_int_equal(system(cmd), 0);
}

/* container_image_unpack: pre.tar checked and unpacked into pre.unpacked/
 * ahead of the final dump, then removed; a pre.tar its check refuses is not
 * unpacked at all and stays for no restore to use. */
static void test_unpack_pre_ahead(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    const char *opts = "--xattrs --xattrs-include='*' --numeric-owner";
    sh("mkdir -p %s/web1/src/pre && cd %s/web1/src && echo inv > pre/inventory.img && "
       "head -c 100000 /dev/urandom > pre/pages-1.img && tar %s -cf ../pre.tar pre",
       base, base, opts);
    int64_t ms = -1;
    assert_int_equal(standby_ct_unpack_pre(base, "web1", &ms, &err), 0);
    assert_true(ms >= 0);
    sh("cmp %s/web1/src/pre/pages-1.img %s/web1/pre.unpacked/pre/pages-1.img", base, base);
    char path[512];
    snprintf(path, sizeof(path), "%s/web1/pre.tar", base);
    assert_int_equal(access(path, F_OK), -1);
    /* Nothing left to unpack: said so. */
    expect_error(standby_ct_unpack_pre(base, "web1", &ms, &err), &err, "no `");
    /* A member outside pre/: refused by the check, nothing unpacked. */
    sh("cd %s/web1/src && mkdir -p final && echo x > final/inventory.img && "
       "tar %s -cf ../pre.tar pre final",
       base, opts);
    expect_error(standby_ct_unpack_pre(base, "web1", &ms, &err), &err, "final");
    snprintf(path, sizeof(path), "%s/web1/pre.unpacked", base);
    assert_int_equal(access(path, F_OK), -1);
    expect_error(standby_ct_unpack_pre(base, "..", &ms, &err), &err, "not a container name");
    sh("rm -rf %s", base);
}

/* Archives made by GNU tar as the agent makes them, then hostile ones: each
 * refused naming the member. */
static void test_archive_policy(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    cleanup_free char *d = make_base();
    char tar[400];
    snprintf(tar, sizeof(tar), "%s/t.tar", d);
    const char *opts = "--xattrs --xattrs-include='*' --numeric-owner";
    /* A final dump: final/ (with CRIU's parent link), delta/ (links of the
     * container's own, a whiteout), config. */
    sh("cd %s && mkdir -p pre final delta/etc/a-directory-with-a-long-name-%0100d && "
       "echo x > final/inventory.img && ln -s ../pre final/parent && echo y > delta/etc/f && "
       "ln -s /etc/passwd delta/etc/l && mkfifo delta/etc/fifo && echo c > config && "
       "touch pre/inventory.img",
       d, 0);
    sh("cd %s && tar %s -cf t.tar final delta config", d, opts);
    assert_int_equal(standby_archive_check_file(tar, &standby_archive_final, &err), 0);
    sh("cd %s && tar %s -cf t.tar pre", d, opts);
    assert_int_equal(standby_archive_check_file(tar, &standby_archive_pre, &err), 0);
    /* The symlink trick: a pre.tar that plants final.tar. */
    sh("cd %s && ln -s /etc/shadow final.tar && tar -cf t.tar pre final.tar", d);
    expect_error(standby_archive_check_file(tar, &standby_archive_pre, &err), &err,
                 "member `final.tar` is outside pre/");
    /* Links outside delta/, and a link other than final/parent. */
    sh("cd %s && ln -s /etc pre/etc && tar -cf t.tar pre", d);
    expect_error(standby_archive_check_file(tar, &standby_archive_pre, &err), &err,
                 "member `pre/etc` is a symbolic link (to `/etc`)");
    sh("cd %s && rm pre/etc final/parent && ln -s / final/parent && tar -cf t.tar final", d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err,
                 "member `final/parent` is a symbolic link (to `/`)");
    /* A hard link. */
    sh("cd %s && ln final/inventory.img final/hard && tar -cf t.tar final/inventory.img "
       "final/hard",
       d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err,
                 "member `final/hard` is a hard link (to `final/inventory.img`)");
    /* `..` and an absolute name (-P keeps them). */
    sh("cd %s && tar -cPf t.tar pre/../config", d);
    expect_error(standby_archive_check_file(tar, &standby_archive_pre, &err), &err,
                 "member `pre/../config`: an absolute name, a `..` component");
    sh("cd %s && tar -cPf t.tar %s/config", d, d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err,
                 "an absolute name");
    /* A file below a link of delta/: it would be written through it. */
    sh("cd %s && mkdir -p x/etc && echo z > x/etc/passwd && ln -s /etc delta/etc2 && "
       "tar -cf t.tar delta/etc2 x/etc/passwd --transform 's,^x/etc,delta/etc2,'",
       d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err,
                 "member `delta/etc2/passwd` lies below the symbolic link `delta/etc2`");
    /* A damaged header; a file that is a link itself. */
    sh("cd %s && tar -cf t.tar config && printf 'X' | dd of=t.tar bs=1 seek=10 conv=notrunc "
       "2>/dev/null",
       d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err,
                 "bad checksum");
    sh("cd %s && rm t.tar && ln -s config t.tar", d);
    expect_error(standby_archive_check_file(tar, &standby_archive_final, &err), &err, "t.tar");
    sh("rm -rf %s", d);
}

/* --- container images (standby_spec.c, standby_image.c) --- */

#define SUM_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static json_t *image_order(const char *sha, const char *url, const char *cmd)
{
    json_t *image = json_pack("{s:s, s:s, s:s}", "name", "web", "sha256", sha, "url", url);
    if (cmd)
        json_object_set_new(image, "cmd", json_string(cmd));
    return json_pack("{s:s, s:s, s:o}", "name", "web1ct", "address", "10.77.0.31/24", "image",
                     image);
}

static void test_image_spec_and_config_items(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct standby_ct_spec spec;
    cleanup_json json_t *msg =
        image_order("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                    "http://10.77.0.1:7071/v1/images/web", "/sbin/httpd -f -p 80 -h /www");
    json_object_set_new(msg, "privileged", json_true()); /* the cached image itself below */
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    assert_true(spec.has_image);
    assert_string_equal(spec.image.sha256, SUM_A); /* lower case */
    assert_string_equal(spec.image.name, "web");
    struct standby_ct_paths p;
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.lower, "/var/lib/vcr/images/" SUM_A ".rootfs");
    struct standby_cfg_item items[STANDBY_CFG_MAX];
    size_t n = standby_ct_config(&spec, &p, items);
    /* The image's cmd runs from a script: LXC would split a quoted one wrongly. */
    assert_string_equal(item(items, n, "lxc.init.cmd"), "/.vcr-init");
    char script[300];
    assert_int_equal(standby_image_init_script("nginx -g 'daemon off;'", script, sizeof(script)),
                     0);
    assert_string_equal(script, "#!/bin/sh\n# written by vcr-agent: the image's cmd\n"
                                "exec nginx -g 'daemon off;'\n");
    /* Without cmd: the template's start script, as before. */
    cleanup_json json_t *nocmd = image_order(SUM_A, "http://10.77.0.1:7071/v1/images/web", NULL);
    assert_int_equal(standby_ct_spec_from_json(nocmd, &spec, &err), 0);
    n = standby_ct_config(&spec, &p, items);
    assert_string_equal(item(items, n, "lxc.init.cmd"), "/start");

    static const char *const bad[][4] = {
        /* sha256, url, cmd, what the error says */
        {"abc", "http://10.77.0.1:7071/v1/images/web", NULL, "image.sha256: `abc`"},
        {SUM_A, "https://10.77.0.1/v1/images/web", NULL, "not an http:// URL"},
        {SUM_A, "http://server.lab:7071/v1/images/web", NULL, "`server.lab` is not an IPv4"},
        {SUM_A, "http://10.77.0.1:0/v1/images/web", NULL, "port must be 1..65535"},
        {SUM_A, "http://10.77.0.1:7071", NULL, "no path"},
        {SUM_A, "http://10.77.0.1:7071/v1/images/web", "httpd\nx", "image.cmd: `httpd"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cleanup_json json_t *m = image_order(bad[i][0], bad[i][1], bad[i][2]);
        cleanup_error vcr_error_t e = NULL;
        assert_int_equal(standby_ct_spec_from_json(m, &spec, &e), -1);
        if (strstr(vcr_error_msg(e), bad[i][3]) == NULL)
            fail_msg("error `%s` does not say `%s`", vcr_error_msg(e), bad[i][3]);
    }
    cleanup_json json_t *both = image_order(SUM_A, "http://10.77.0.1:7071/v1/images/web", NULL);
    json_object_set_new(both, "template", json_string("busybox"));
    cleanup_error vcr_error_t e2 = NULL;
    assert_int_equal(standby_ct_spec_from_json(both, &spec, &e2), -1);
    assert_non_null(strstr(vcr_error_msg(e2), "template: `busybox` is given with `image`"));
    cleanup_json json_t *nourl = image_order(SUM_A, "x", NULL);
    json_object_del(json_object_get(nourl, "image"), "url");
    cleanup_error vcr_error_t e3 = NULL;
    assert_int_equal(standby_ct_spec_from_json(nourl, &spec, &e3), -1);
    assert_non_null(strstr(vcr_error_msg(e3), "image.url: missing"));
}

static void test_http_head(void **state)
{
    (void)state;
    struct standby_http_head h;
    vcr_error_t err = NULL;
    assert_int_equal(standby_http_parse_head("HTTP/1.1 200 OK\r\nContent-Type: application/gzip"
                                             "\r\ncontent-length:  1093632",
                                             &h, &err),
                     0);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.length, 1093632);
    assert_int_equal(standby_http_parse_head("HTTP/1.0 404 Not Found", &h, &err), 0);
    assert_int_equal(h.status, 404);
    assert_int_equal(h.length, -1);
    expect_error(standby_http_parse_head("SSH-2.0-OpenSSH_9.2", &h, &err), &err,
                 "not an HTTP/1.x status line");
    expect_error(standby_http_parse_head("HTTP/1.0 20", &h, &err), &err, "status line");
    expect_error(standby_http_parse_head("HTTP/1.0 2000 OK", &h, &err), &err, "status line");
    expect_error(standby_http_parse_head("HTTP/1.0 200 OK\r\nContent-Length: -5", &h, &err), &err,
                 "Content-Length `-5` is not a size");
    expect_error(standby_http_parse_head("HTTP/1.0 200 OK\r\nContent-Length: 12x", &h, &err), &err,
                 "not a size");
}

/* A one-file HTTP server in a child process: GET /v1/images/good answers the
 * file, anything else 404; each request writes one byte to the count pipe. */
struct fake_images {
    pid_t pid;
    uint16_t port;
    int count_fd;
};

static void fake_images_serve(int lfd, int count_fd, const char *file)
{
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        char req[2048] = "";
        size_t used = 0;
        while (used < sizeof(req) - 1 && !strstr(req, "\r\n\r\n")) {
            ssize_t n = read(c, req + used, sizeof(req) - 1 - used);
            if (n <= 0)
                break;
            used += (size_t)n;
            req[used] = '\0';
        }
        (void)!write(count_fd, "r", 1);
        if (strncmp(req, "GET /v1/images/good ", 20) == 0) {
            FILE *f = fopen(file, "rb");
            static char body[1 << 20];
            size_t len = f ? fread(body, 1, sizeof(body), f) : 0;
            if (f)
                fclose(f);
            dprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
            (void)!write(c, body, len);
        } else {
            dprintf(c,
                    "HTTP/1.0 404 Not Found\r\nContent-Length: 22\r\n\r\nno such image, sorry\r\n");
        }
        close(c);
    }
}

static void fake_images_start(struct fake_images *fi, const char *file)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(lfd, 8), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
    fi->port = ntohs(sin.sin_port);
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    fi->pid = fork();
    assert_true(fi->pid >= 0);
    if (fi->pid == 0) {
        /* Never outlive a failed test (its stdout would keep a runner waiting). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        fake_images_serve(lfd, fds[1], file);
        _exit(0);
    }
    close(lfd);
    close(fds[1]);
    fi->count_fd = fds[0];
}

/* Requests served since the last call. */
static int fake_images_requests(struct fake_images *fi)
{
    char buf[64];
    ssize_t n = read(fi->count_fd, buf, sizeof(buf));
    return n > 0 ? (int)n : 0;
}

static void fake_images_stop(struct fake_images *fi)
{
    kill(fi->pid, SIGKILL);
    waitpid(fi->pid, NULL, 0);
    close(fi->count_fd);
}

static bool exists(const char *dir, const char *sha, const char *suffix)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s%s", dir, sha, suffix);
    return access(path, F_OK) == 0;
}

/* `privileged: false`: the idmap, the capabilities, LXC's seccomp deny list and
 * a lower dir of its own (the source's shifted copy); the isolation a running
 * container reports; the shifted copy itself. */
static void test_unprivileged_container(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *msg =
        json_pack("{s:s, s:s, s:b}", "name", "u1", "address", "10.77.0.35/24", "privileged", 0);
    struct standby_ct_spec spec;
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    assert_true(spec.unprivileged);
    struct standby_ct_paths p;
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.source, "/var/lib/vcr/templates/busybox");
    assert_string_equal(p.lower, "/var/lib/vcr/shifted/templates/busybox");
    struct standby_cfg_item items[STANDBY_CFG_MAX];
    size_t n = standby_ct_config(&spec, &p, items), idmaps = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i].key, "lxc.idmap") == 0)
            assert_string_equal(items[i].value, idmaps++ ? "g 0 100000 65536" : "u 0 100000 65536");
    assert_int_equal(idmaps, 2);
    const char *drop = item(items, n, "lxc.cap.drop");
    assert_non_null(drop);
    for (const char *cap = "sys_module\0sys_rawio\0sys_admin\0sys_time\0mac_admin\0"; *cap;
         cap += strlen(cap) + 1)
        assert_non_null(strstr(drop, cap));
    assert_string_equal(item(items, n, "lxc.seccomp.profile"),
                        "/usr/share/lxc/config/common.seccomp");
    /* An image's copy is keyed by its checksum too. */
    json_object_set_new(
        msg, "image",
        json_pack("{s:s, s:s, s:s}", "name", "web", "sha256",
                  "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd", "url",
                  "http://10.77.0.1:7090/web.tar.gz"));
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.lower, "/var/lib/vcr/shifted/images/"
                                 "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
                                 ".rootfs");

    /* Absent: unprivileged too (the default). */
    json_object_del(msg, "image");
    json_object_del(msg, "privileged");
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    assert_true(spec.unprivileged);
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.lower, "/var/lib/vcr/shifted/templates/busybox");

    /* Privileged (`privileged: true` only): none of it, the template itself below. */
    json_object_del(msg, "image");
    json_object_set_new(msg, "privileged", json_true());
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &err), 0);
    assert_false(spec.unprivileged);
    assert_int_equal(standby_ct_paths("/var/lib/lxc", "/var/lib/vcr", &spec, &p, &err), 0);
    assert_string_equal(p.lower, "/var/lib/vcr/templates/busybox");
    n = standby_ct_config(&spec, &p, items);
    assert_null(item(items, n, "lxc.idmap"));
    assert_null(item(items, n, "lxc.cap.drop"));
    assert_null(item(items, n, "lxc.seccomp.profile"));
    json_object_set_new(msg, "privileged", json_string("no"));
    cleanup_error vcr_error_t bad = NULL;
    assert_int_equal(standby_ct_spec_from_json(msg, &spec, &bad), -1);
    assert_non_null(strstr(vcr_error_msg(bad), "privileged"));

    /* What /proc/PID says of the container's init. */
    struct standby_isolation iso;
    assert_int_equal(
        standby_parse_isolation("Name:\tsh\nUid:\t100000\t100000\t100000\t100000\n"
                                "CapEff:\t000001fcfdbcffff\nSeccomp:\t2\nSeccomp_filters:\t1\n",
                                "         0     100000      65536\n", &iso, &err),
        0);
    assert_string_equal(iso.uid_map, "0 100000 65536");
    assert_string_equal(iso.cap_eff, "000001fcfdbcffff");
    assert_int_equal(iso.seccomp, 2);
    assert_int_equal(
        standby_parse_isolation("CapEff:\t000001ffffffffff\n", "0 0 4294967295\n", &iso, &err), 0);
    assert_string_equal(iso.uid_map, "0 0 4294967295");
    assert_int_equal(iso.seccomp, 0);
    cleanup_error vcr_error_t e2 = NULL;
    assert_int_equal(standby_parse_isolation("Seccomp:\t2\n", "0 0 1\n", &iso, &e2), -1);

    /* The shifted copy: owners moved up, set-ID bits kept, links not followed,
     * an owner out of range left; made once. */
    cleanup_free char *base = make_base();
    char src[300], file[320], suid[320], link[320], odd[320], dst[300], got[340];
    snprintf(src, sizeof(src), "%s/src", base);
    snprintf(file, sizeof(file), "%s/file", src);
    snprintf(suid, sizeof(suid), "%s/suid", src);
    snprintf(link, sizeof(link), "%s/link", src);
    snprintf(odd, sizeof(odd), "%s/odd", src);
    snprintf(dst, sizeof(dst), "%s/shifted/templates/t", base);
    assert_int_equal(mkdir(src, 0755), 0);
    for (const char *f = file; f; f = f == file ? suid : f == suid ? odd : NULL)
        close(open(f, O_WRONLY | O_CREAT, 0644));
    assert_int_equal(chown(file, 33, 34), 0);
    assert_int_equal(chmod(suid, 04755), 0);
    assert_int_equal(chown(odd, 70000, 70000), 0);
    assert_int_equal(symlink("/etc/passwd", link), 0);
    assert_int_equal(standby_shift_tree(src, dst, 100000, 65536, &err), 0);
    struct stat st;
    snprintf(got, sizeof(got), "%s/file", dst);
    assert_int_equal(stat(got, &st), 0);
    assert_int_equal(st.st_uid, 100033);
    assert_int_equal(st.st_gid, 100034);
    snprintf(got, sizeof(got), "%s/suid", dst);
    assert_int_equal(stat(got, &st), 0);
    assert_int_equal(st.st_uid, 100000);
    assert_int_equal(st.st_mode & 07777, 04755);
    snprintf(got, sizeof(got), "%s/odd", dst);
    assert_int_equal(stat(got, &st), 0);
    assert_int_equal(st.st_uid, 70000);
    snprintf(got, sizeof(got), "%s/link", dst);
    assert_int_equal(lstat(got, &st), 0);
    assert_int_equal(st.st_uid, 100000);
    assert_int_equal(stat("/etc/passwd", &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_uid, 100000);
    /* Made once: a second call takes it as it is. */
    assert_int_equal(chown(dst, 100001, 100001), 0);
    assert_int_equal(standby_shift_tree(src, dst, 100000, 65536, &err), 0);
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_uid, 100001);
    /* And back (a service's data leaving an unprivileged container). */
    assert_int_equal(standby_map_owners(dst, 100000, 0, 65536, &err), 0);
    snprintf(got, sizeof(got), "%s/file", dst);
    assert_int_equal(stat(got, &st), 0);
    assert_int_equal(st.st_uid, 33);
    char *rm[] = {"rm", "-rf", base, NULL};
    assert_int_equal(standby_run_program(rm, &err), 0);
}

/* 0 when a child in a new user namespace whose uid map is not written yet
 * opens name in dir (through a descriptor of dir opened before, as CRIU's
 * image fd), else the errno it got. */
static int open_in_new_userns(const char *dir, const char *name)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWUSER) < 0)
            _exit(100);
        int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
        _exit(fd >= 0 ? 0 : errno);
    }
    close(dfd);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 100);
    return WEXITSTATUS(status);
}

static void test_images_for_userns_timens_readable_before_the_map(void **state)
{
    /* The race the restore of an unprivileged container lost: CRIU's root task
     * opens timens-0.img before its uid map is written, as init's uid 0 with no
     * capability over the container root's files.  A child that is exactly
     * that (a new user namespace, no map) must open it through final/. */
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char images[300], timens[340], netns[340], link[340];
    snprintf(images, sizeof(images), "%s/final", base);
    snprintf(timens, sizeof(timens), "%s/timens-0.img", images);
    snprintf(netns, sizeof(netns), "%s/netns-11.img", images);
    snprintf(link, sizeof(link), "%s/timens-1.img", images);
    assert_int_equal(mkdir(images, 0700), 0);
    for (const char *f = timens; f; f = f == timens ? netns : NULL)
        close(open(f, O_WRONLY | O_CREAT, 0600));
    assert_int_equal(standby_map_owners(base, 0, 100000, 65536, &err), 0);
    int before = open_in_new_userns(images, "timens-0.img");
    assert_int_equal(standby_images_for_userns(images, &err), 0);
    assert_int_equal(before, EACCES);
    assert_int_equal(open_in_new_userns(images, "timens-0.img"), 0);
    struct stat st;
    assert_int_equal(stat(netns, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600); /* the others stay the container root's */
    assert_int_equal(stat(images, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0701);
    /* A link named like the image is refused, not followed. */
    assert_int_equal(symlink("/etc/shadow", link), 0);
    assert_int_equal(stat("/etc/shadow", &st), 0);
    mode_t shadow = st.st_mode;
    assert_int_equal(standby_images_for_userns(images, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "timens-1.img"));
    assert_int_equal(stat("/etc/shadow", &st), 0);
    assert_int_equal(st.st_mode, shadow);
    char *rm[] = {"rm", "-rf", base, NULL};
    assert_int_equal(standby_run_program(rm, &err), 0);
}

static void test_nft_lock_tables_dropped_from_the_ruleset_image(void **state)
{
    /* CRIU 3.17 dumps its own lock table (named after the source's pid) with
     * the container's ruleset; restored, it dropped every packet. */
    (void)state;
    static const char in[] = "table inet filter {\n"
                             "\tchain input {\n"
                             "\t\ttype filter hook input priority filter; policy accept;\n"
                             "\t}\n"
                             "}\n"
                             "table inet CRIU-4321 {\n"
                             "\tchain output {\n"
                             "\t\ttype filter hook output priority filter; policy drop;\n"
                             "\t\tmeta mark 0x0000c114 accept\n"
                             "\t}\n"
                             "}\n"
                             "table inet CRIU-12x {\n"
                             "}\n"
                             "table ip CRIU-7 {\n"
                             "}\n";
    static const char want[] = "table inet filter {\n"
                               "\tchain input {\n"
                               "\t\ttype filter hook input priority filter; policy accept;\n"
                               "\t}\n"
                               "}\n"
                               "table inet CRIU-12x {\n"
                               "}\n"
                               "table ip CRIU-7 {\n"
                               "}\n";
    char text[sizeof(in)];
    memcpy(text, in, sizeof(in));
    size_t n = standby_nft_drop_lock_tables(text, sizeof(in) - 1);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(text, want, n);
    /* Nothing to drop: unchanged; a lock table cut short drops to the end. */
    assert_int_equal(standby_nft_drop_lock_tables(text, n), n);
    char cut[] = "table inet t {\n}\ntable inet CRIU-1 {\n\tchain output {\n";
    assert_int_equal(standby_nft_drop_lock_tables(cut, sizeof(cut) - 1), 17);

    /* In an images dir: the nftables image is rewritten, its mode kept. */
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char img[340];
    snprintf(img, sizeof(img), "%s/nftables-11.img", base);
    FILE *f = fopen(img, "w");
    assert_non_null(f);
    fputs(in, f);
    fclose(f);
    assert_int_equal(chmod(img, 0600), 0);
    assert_int_equal(standby_images_drop_nft_lock(base, &err), 0);
    char back[sizeof(in)] = {0};
    f = fopen(img, "r");
    assert_non_null(f);
    size_t got = fread(back, 1, sizeof(back) - 1, f);
    fclose(f);
    assert_int_equal(got, sizeof(want) - 1);
    assert_memory_equal(back, want, got);
    struct stat st;
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    char *rm[] = {"rm", "-rf", base, NULL};
    assert_int_equal(standby_run_program(rm, &err), 0);
}

static void test_image_cache_fetch_verify_unpack(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char src[300], www[320], index[340], tarball[300], images[300];
    snprintf(src, sizeof(src), "%s/src", base);
    snprintf(www, sizeof(www), "%s/www", src);
    snprintf(index, sizeof(index), "%s/index.html", www);
    snprintf(tarball, sizeof(tarball), "%s/web.tar.gz", base);
    snprintf(images, sizeof(images), "%s/lib/images", base);
    assert_int_equal(mkdir(src, 0755), 0);
    assert_int_equal(mkdir(www, 0755), 0);
    FILE *f = fopen(index, "w");
    assert_non_null(f);
    fputs("marker-7f3a\n", f);
    fclose(f);
    char *tar_argv[] = {STANDBY_TAR, "-czf", tarball, "-C", src, ".", NULL};
    assert_int_equal(standby_run_program(tar_argv, &err), 0);

    struct standby_image_ref img = {.name = "web"};
    uint64_t bytes = 0;
    assert_int_equal(warm_state_digest(tarball, img.sha256, &bytes, &err), 0);
    struct fake_images fi;
    fake_images_start(&fi, tarball);
    snprintf(img.url, sizeof(img.url), "http://127.0.0.1:%u/v1/images/good", fi.port);

    /* First use: downloaded, verified, unpacked; the tarball kept in the cache. */
    struct standby_image_result res;
    assert_int_equal(standby_image_ensure(images, &img, &res, &err), 0);
    assert_true(res.fetched);
    assert_false(res.cached);
    assert_int_equal(res.bytes, bytes);
    assert_int_equal(fake_images_requests(&fi), 1);
    assert_true(exists(images, img.sha256, ".tar.gz"));
    assert_false(exists(images, img.sha256, ".tar.gz.tmp"));
    assert_false(exists(images, img.sha256, ".rootfs.tmp"));
    char rootfs[400], got[64] = "";
    assert_int_equal(standby_image_rootfs(images, img.sha256, rootfs, sizeof(rootfs)), 0);
    char marker[512];
    snprintf(marker, sizeof(marker), "%s/www/index.html", rootfs);
    assert_int_equal(standby_read_file(marker, got, sizeof(got), &err), 0);
    assert_string_equal(got, "marker-7f3a\n");

    /* Second use: a cache hit, nothing fetched nor unpacked. */
    assert_int_equal(standby_image_ensure(images, &img, &res, &err), 0);
    assert_true(res.cached);
    assert_false(res.fetched);
    assert_int_equal(fake_images_requests(&fi), 0);

    /* Unpacked rootfs gone, verified tarball kept: unpacked again, not fetched. */
    assert_int_equal(standby_remove_tree(rootfs, &err), 0);
    assert_int_equal(standby_image_ensure(images, &img, &res, &err), 0);
    assert_false(res.cached);
    assert_false(res.fetched);
    assert_int_equal(fake_images_requests(&fi), 0);
    assert_int_equal(access(marker, F_OK), 0);

    /* A wrong SHA-256: the refusal's code, both sums and the image named;
     * nothing left behind. */
    struct standby_image_ref wrong = img;
    snprintf(wrong.name, sizeof(wrong.name), "bad");
    snprintf(wrong.sha256, sizeof(wrong.sha256), "%s", SUM_A);
    assert_int_equal(standby_image_ensure(images, &wrong, &res, &err), -1);
    assert_int_equal(vcr_error_status(err), PROTO_STATUS_IMAGE_CHECKSUM);
    assert_int_equal(proto_code_from_errno(vcr_error_status(err)), PROTO_CODE_IMAGE_CHECKSUM);
    assert_string_equal(proto_code_name(PROTO_CODE_IMAGE_CHECKSUM), "image_checksum");
    const char *msg = vcr_error_msg(err);
    if (!strstr(msg, "image `bad`") || !strstr(msg, "expected SHA-256 " SUM_A) ||
        !strstr(msg, img.sha256) || !strstr(msg, "removed"))
        fail_msg("checksum error `%s` lacks the image, a sum or what was done", msg);
    vcr_error_release(&err);
    assert_int_equal(fake_images_requests(&fi), 1);
    assert_false(exists(images, SUM_A, ".tar.gz"));
    assert_false(exists(images, SUM_A, ".tar.gz.tmp"));
    assert_false(exists(images, SUM_A, ".rootfs"));
    /* ... and asked again, it is fetched again (nothing bad was cached). */
    assert_int_equal(standby_image_ensure(images, &wrong, &res, &err), -1);
    assert_int_equal(vcr_error_status(err), PROTO_STATUS_IMAGE_CHECKSUM);
    vcr_error_release(&err);
    assert_int_equal(fake_images_requests(&fi), 1);

    /* The server has no such image: its answer quoted, ENOENT. */
    struct standby_image_ref missing = wrong;
    snprintf(missing.url, sizeof(missing.url), "http://127.0.0.1:%u/v1/images/nope", fi.port);
    assert_int_equal(standby_image_ensure(images, &missing, &res, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    if (!strstr(vcr_error_msg(err), "HTTP 404: no such image, sorry"))
        fail_msg("404 error: `%s`", vcr_error_msg(err));
    vcr_error_release(&err);

    /* Nobody listening: the connection's error, nothing cached. */
    fake_images_stop(&fi);
    assert_int_equal(standby_image_ensure(images, &missing, &res, &err), -1);
    assert_int_equal(vcr_error_status(err), ECONNREFUSED);
    vcr_error_release(&err);
    assert_false(exists(images, SUM_A, ".tar.gz.tmp"));

    assert_int_equal(standby_remove_tree(base, &err), 0);
}

static void touch(const char *dir, const char *name, const char *text)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static bool exists_in(const char *dir, const char *name)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Pruning keeps the images named in keep, those mounted as an overlay's lower
 * dir and those being downloaded (lock held); removes every file of the others
 * and leaves files that are not an image's. */
static void test_image_cache_prune(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/vcr-prune-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    const char *d = tmpl;
    char sha[4][65];
    for (int i = 0; i < 4; i++) {
        memset(sha[i], "abcd"[i], 64);
        sha[i][64] = '\0';
    }
    char name[200], sub[300];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "%.64s.tar.gz", sha[i]);
        touch(d, name, "0123456789"); /* 10 bytes */
        snprintf(sub, sizeof(sub), "%s/%s.rootfs/etc", d, sha[i]);
        char root[300];
        snprintf(root, sizeof(root), "%s/%s.rootfs", d, sha[i]);
        assert_int_equal(mkdir(root, 0755), 0);
        assert_int_equal(mkdir(sub, 0755), 0);
        touch(sub, "passwd", "root:x:0:0\n");
        snprintf(name, sizeof(name), "%.64s.lock", sha[i]);
        touch(d, name, "");
    }
    snprintf(name, sizeof(name), "%.64s.tar.gz.tmp", sha[3]); /* an interrupted download */
    touch(d, name, "01");
    touch(d, "README", "not an image");
    /* A lock without an image (a checksum refusal leaves one): removed, not reported;
     * one of a kept image without content: left, not reported. */
    touch(d, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.lock", "");
    touch(d, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff.lock", "");
    /* sha[1] is a container's lower dir; sha[2] is being downloaded. */
    char mountinfo[400];
    snprintf(mountinfo, sizeof(mountinfo), "%s/README.mountinfo", d);
    FILE *m = fopen(mountinfo, "w");
    assert_non_null(m);
    fprintf(m,
            "36 25 0:32 / /var/lib/lxc/c1/rootfs rw - overlay overlay rw,lowerdir=%s/%s.rootfs,"
            "upperdir=/var/lib/lxc/c1/delta,workdir=/var/lib/lxc/c1/work\n",
            d, sha[1]);
    fclose(m);
    char lock[400];
    snprintf(lock, sizeof(lock), "%s/%s.lock", d, sha[2]);
    pid_t holder = fork();
    assert_true(holder >= 0);
    if (holder == 0) {
        int fd = open(lock, O_RDWR);
        flock(fd, LOCK_EX);
        touch(d, "README.locked", "");
        pause();
        _exit(0);
    }
    char locked[400];
    snprintf(locked, sizeof(locked), "%s/README.locked", d);
    for (int i = 0; i < 500 && access(locked, F_OK) < 0; i++)
        usleep(10000);
    assert_int_equal(access(locked, F_OK), 0);

    struct standby_image_keep keep[2];
    snprintf(keep[0].sha256, sizeof(keep[0].sha256), "%s", sha[0]);
    snprintf(keep[0].why, sizeof(keep[0].why), "configured for service web");
    memset(keep[1].sha256, 'f', 64);
    keep[1].sha256[64] = '\0';
    snprintf(keep[1].why, sizeof(keep[1].why), "configured for service bad");
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *res = standby_image_prune(d, keep, 2, mountinfo, &err);
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    assert_non_null(res);
    json_t *removed = json_object_get(res, "removed"), *kept = json_object_get(res, "kept");
    assert_int_equal(json_array_size(removed), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(removed, 0), "sha256")),
                        sha[3]);
    assert_int_equal(json_integer_value(json_object_get(res, "freed_bytes")), 10);
    assert_int_equal(json_array_size(kept), 3);
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "%.64s.rootfs/etc/passwd", sha[i]);
        assert_true(exists_in(d, name));
    }
    const char *suffixes[] = {".tar.gz", ".tar.gz.tmp", ".rootfs", ".lock"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "%.64s%s", sha[3], suffixes[i]);
        assert_false(exists_in(d, name));
    }
    assert_true(exists_in(d, "README"));
    assert_false(
        exists_in(d, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.lock"));
    assert_true(
        exists_in(d, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff.lock"));
    size_t i;
    json_t *e;
    json_array_foreach(kept, i, e)
    {
        const char *s = json_string_value(json_object_get(e, "sha256"));
        const char *why = json_string_value(json_object_get(e, "why"));
        if (strcmp(s, sha[0]) == 0)
            assert_string_equal(why, "configured for service web");
        else if (strcmp(s, sha[1]) == 0)
            assert_string_equal(why, "used by container c1");
        else
            assert_non_null(strstr(why, "busy"));
    }
    /* Nothing cached at all: nothing to do. */
    char none[400];
    snprintf(none, sizeof(none), "%s/none", d);
    json_decref(res);
    res = standby_image_prune(none, NULL, 0, NULL, &err);
    assert_non_null(res);
    assert_int_equal(json_array_size(json_object_get(res, "removed")), 0);
    assert_int_equal(standby_remove_tree(d, &err), 0);
}

/* An image whose shifted copy (unprivileged containers) is a container's lower
 * dir is kept; one whose copy is not goes with its copy. */
static void test_image_cache_prune_shifted_copies(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char images[300], shifted[300], path[500], mountinfo[400];
    snprintf(images, sizeof(images), "%s/images", base);
    snprintf(shifted, sizeof(shifted), "%s/shifted", base);
    assert_int_equal(mkdir(images, 0755), 0);
    assert_int_equal(mkdir(shifted, 0755), 0);
    snprintf(path, sizeof(path), "%s/images", shifted);
    assert_int_equal(mkdir(path, 0755), 0);
    char sha[2][65];
    for (int i = 0; i < 2; i++) {
        memset(sha[i], "12"[i], 64);
        sha[i][64] = '\0';
        snprintf(path, sizeof(path), "%.64s.tar.gz", sha[i]);
        touch(images, path, "0123456789");
        snprintf(path, sizeof(path), "%s/%s.rootfs", images, sha[i]);
        assert_int_equal(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/images/%s.rootfs", shifted, sha[i]);
        assert_int_equal(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/images/%s.rootfs.lock", shifted, sha[i]);
        close(open(path, O_WRONLY | O_CREAT, 0600));
    }
    snprintf(mountinfo, sizeof(mountinfo), "%s/mountinfo", base);
    FILE *m = fopen(mountinfo, "w");
    assert_non_null(m);
    fprintf(m,
            "36 25 0:32 / /var/lib/lxc/u1/rootfs rw - overlay overlay rw,lowerdir=%s/images/"
            "%s.rootfs,upperdir=/var/lib/lxc/u1/delta,workdir=/var/lib/lxc/u1/work\n",
            shifted, sha[0]);
    fclose(m);
    cleanup_json json_t *res = standby_image_prune(images, NULL, 0, mountinfo, &err);
    assert_non_null(res);
    json_t *kept = json_object_get(res, "kept"), *removed = json_object_get(res, "removed");
    assert_int_equal(json_array_size(kept), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(kept, 0), "sha256")),
                        sha[0]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(kept, 0), "why")),
                        "used by container u1");
    assert_int_equal(json_array_size(removed), 1);
    snprintf(path, sizeof(path), "%s/images/%s.rootfs", shifted, sha[0]);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/images/%s.rootfs", shifted, sha[1]);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/images/%s.rootfs.lock", shifted, sha[1]);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(standby_remove_tree(base, &err), 0);
}

static void test_criu_log_reason(void **state)
{
    (void)state;
    char out[200];
    standby_criu_log_reason("(00.001) Version: 3.17.1\n"
                            "(00.002) Error (criu/cr-dump.c:1): first\n"
                            "(00.003) Error (criu/mem.c:2): second\n"
                            "(00.004) Error (criu/a.c:3): third\n"
                            "(00.005) Error (criu/b.c:4): fourth\n"
                            "(00.006) Dumping finished\n",
                            out, sizeof(out));
    /* The first (the cause) and the last two: the second is left out. */
    assert_string_equal(out, "Error (criu/cr-dump.c:1): first; Error (criu/a.c:3): third; "
                             "Error (criu/b.c:4): fourth");
    /* A restore's tasks put their pid before theirs: the cause is one of them. */
    standby_criu_log_reason("(00.04)      1: Error (criu/mount.c:5): mnt: cause\n"
                            "(00.05) Error (criu/cr-restore.c:2537): Restoring FAILED.\n",
                            out, sizeof(out));
    assert_string_equal(out, "Error (criu/mount.c:5): mnt: cause; Error "
                             "(criu/cr-restore.c:2537): Restoring FAILED.");
    /* LXC 5.0.2's restore on the Debian standby VM (CRIU 3.17.1): no timestamps; the
     * cause in the root task's line, before RTNETLINK lines and the last one. */
    standby_criu_log_reason(
        "Warn  (criu/cr-restore.c:1297): Set CLONE_PARENT | CLONE_NEWPID but ...\n"
        "RTNETLINK answers: File exists\n"
        "     1: Error (criu/mount-v2.c:319): mnt-v2: Failed to open_tree "
        "/var/lib/vcr/data/kv/mnt/: Permission denied\n"
        "Error (criu/cr-restore.c:2537): Restoring FAILED.\n",
        out, sizeof(out));
    assert_string_equal(out, "Error (criu/mount-v2.c:319): mnt-v2: Failed to open_tree "
                             "/var/lib/vcr/data/kv/mnt/: Permission denied; Error "
                             "(criu/cr-restore.c:2537): Restoring FAILED.");
    standby_criu_log_reason("(00.1) Warn: x\n(00.2) Looking at soft-dirty\n\n", out, sizeof(out));
    assert_string_equal(out, "Looking at soft-dirty");
    char tiny[12];
    standby_criu_log_reason("Error (x): a long reason\n", tiny, sizeof(tiny));
    assert_string_equal(tiny, "Error (x): ");
}

static void test_garp_frame(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    unsigned char mac[6] = {0x02, 0x00, 0x0a, 0x4d, 0x00, 0x1f};
    unsigned char f[STANDBY_GARP_LEN];
    assert_int_equal(standby_garp_frame(mac, "10.77.0.31", f, &err), 0);
    const unsigned char want[STANDBY_GARP_LEN] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x0a, 0x4d, 0x00, 0x1f, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 6,    4,    0x00, 0x01, 0x02, 0x00, 0x0a, 0x4d, 0x00, 0x1f,
        10,   77,   0,    31,   0,    0,    0,    0,    0,    0,    10,   77,   0,    31};
    assert_memory_equal(f, want, sizeof(want));
    expect_error(standby_garp_frame(mac, "10.77.0", f, &err), &err, "not an IPv4 address");
}

/* The unsolicited neighbour advertisement (RFC 4861 4.4): type 136, Override
 * alone, the target, its link-layer address option. */
static void test_unsolicited_na_message(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    unsigned char mac[6] = {0x02, 0x00, 0x0a, 0x4d, 0x00, 0x1f};
    unsigned char m[STANDBY_NA_LEN];
    assert_int_equal(standby_na_message(mac, "fd77::17", m, &err), 0);
    const unsigned char want[STANDBY_NA_LEN] = {
        136, 0, 0, 0, 0x20, 0, 0, 0,    0xfd, 0x77, 0,    0,    0,    0,    0,    0,
        0,   0, 0, 0, 0,    0, 0, 0x17, 2,    1,    0x02, 0x00, 0x0a, 0x4d, 0x00, 0x1f};
    assert_memory_equal(m, want, sizeof(want));
    expect_error(standby_na_message(mac, "10.77.0.17", m, &err), &err, "not an IPv6 address");
}

/* Whether lo in the caller's namespace holds address (either family). */
static bool lo_has(const char *address)
{
    struct ifaddrs *all = NULL;
    bool found = false;
    if (getifaddrs(&all) < 0)
        return false;
    for (struct ifaddrs *i = all; i; i = i->ifa_next) {
        char text[INET6_ADDRSTRLEN];
        if (i->ifa_addr == NULL || strcmp(i->ifa_name, "lo") != 0)
            continue;
        int family = i->ifa_addr->sa_family;
        const void *a =
            family == AF_INET    ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
            : family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                                 : NULL;
        if (a && inet_ntop(family, a, text, sizeof(text)) && strcmp(text, address) == 0)
            found = true;
    }
    freeifaddrs(all);
    return found;
}

/* In a child of its own network namespace (as a container's): the address
 * added through /proc/PID/ns/net, twice (idempotent), then removed, twice.
 * Exit status: the step that failed, 0 all passed, 99 no namespace allowed. */
static int address_steps(void)
{
    if (unshare(CLONE_NEWNET) < 0)
        return 99;
    int pid = getpid();
    vcr_error_t err = NULL;
    if (standby_address_apply(pid, "lo", "10.77.0.17", true, &err) < 0 || !lo_has("10.77.0.17"))
        return 1;
    if (standby_address_apply(pid, "lo", "10.77.0.17", true, &err) < 0)
        return 2;
    if (standby_address_apply(pid, "lo", "10.77.0.17", false, &err) < 0 || lo_has("10.77.0.17"))
        return 3;
    if (standby_address_apply(pid, "lo", "10.77.0.17", false, &err) < 0)
        return 4;
    if (standby_address_apply(pid, "nope0", "10.77.0.17", true, &err) == 0)
        return 5;
    vcr_error_release(&err);
    if (standby_address_apply(pid, "lo", "10.77.0", true, &err) == 0 ||
        vcr_error_status(err) != EINVAL)
        return 6;
    vcr_error_release(&err);
    /* An IPv6 address the same way (a dual-stack primary's address6). */
    if (standby_address_apply(pid, "lo", "fd77::17", true, &err) < 0 || !lo_has("fd77::17"))
        return 7;
    if (standby_address_apply(pid, "lo", "fd77::17", true, &err) < 0)
        return 8;
    if (standby_address_apply(pid, "lo", "fd77::17", false, &err) < 0 || lo_has("fd77::17"))
        return 9;
    if (standby_address_apply(pid, "lo", "fd77::17", false, &err) < 0)
        return 10;
    return 0;
}

static void test_address_take_and_release_in_a_namespace(void **state)
{
    (void)state;
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(address_steps());
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 99)
        skip(); /* not allowed to make a network namespace here */
    assert_int_equal(WEXITSTATUS(status), 0);
}

#define STREAM_TOKEN "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void test_stream_orders_and_token(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    unsigned char a[STANDBY_STREAM_TOKEN_BYTES], b[STANDBY_STREAM_TOKEN_BYTES];
    assert_int_equal(standby_stream_token_parse(STREAM_TOKEN, a, &err), 0);
    assert_int_equal(a[0], 0x00);
    assert_int_equal(a[1], 0x11);
    assert_int_equal(a[31], 0xff);
    memcpy(b, a, sizeof(b));
    assert_true(standby_stream_token_equal(a, b));
    b[31] ^= 1; /* the last byte differs */
    assert_false(standby_stream_token_equal(a, b));
    b[31] ^= 1;
    b[0] ^= 0x80;
    assert_false(standby_stream_token_equal(a, b));
    assert_int_equal(standby_stream_token_parse("0011", a, &err), -1);
    vcr_error_release(&err);
    char bad[65];
    snprintf(bad, sizeof(bad), "%.63sg", STREAM_TOKEN);
    assert_int_equal(standby_stream_token_parse(bad, a, &err), -1);
    vcr_error_release(&err);

    struct standby_stream_order o;
    cleanup_json json_t *rx = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:s, s:i}", "kind", "image", "name", "web1", "phase", "pre",
        "bytes", 10, "sha256", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "token", STREAM_TOKEN, "deadline_ms", 5000);
    assert_int_equal(standby_stream_order_from_json(rx, false, &o, &err), 0);
    assert_false(o.data);
    assert_string_equal(o.phase, "pre");
    assert_int_equal(o.bytes, 10);
    assert_int_equal(o.sha256[0], 'a'); /* lower case */
    /* A send needs the target's address and port. */
    assert_int_equal(standby_stream_order_from_json(rx, true, &o, &err), -1);
    vcr_error_release(&err);
    json_object_set_new(rx, "phase", json_string("../x"));
    assert_int_equal(standby_stream_order_from_json(rx, false, &o, &err), -1);
    assert_int_equal(vcr_error_status(err), EINVAL);
    vcr_error_release(&err);
    cleanup_json json_t *tx =
        json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:i}", "kind", "data", "name", "kv-c",
                  "service", "kv", "bytes", 3, "token", STREAM_TOKEN, "address", "127.0.0.1",
                  "port", 4000, "deadline_ms", 5000);
    assert_int_equal(standby_stream_order_from_json(tx, true, &o, &err), 0);
    assert_true(o.data);
    assert_string_equal(o.service, "kv");
    assert_int_equal(o.port, 4000);
    json_object_set_new(tx, "name", json_string("a/b"));
    assert_int_equal(standby_stream_order_from_json(tx, true, &o, &err), -1);
    vcr_error_release(&err);
}

/* The temporary files (.NAME.PID.part) left in base. */
static int count_parts(const char *base)
{
    DIR *d = opendir(base);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        n += len > 5 && strcmp(e->d_name + len - 5, ".part") == 0;
    }
    closedir(d);
    return n;
}

/* A TCP connection to 127.0.0.1:port (blocking); its fd. */
static int connect_loopback(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* One transfer over loopback: the sender (token sent_token) in a child; the
 * receive here.  With squatter, a connection that sends nothing is made
 * before the sender's (accepted first).  Returns the receive's status (0 or
 * -1 with *err) and the child's exit code (0, or the sender's errno-style
 * status) in *sent.  Short accept and header deadlines (the defaults are 20 s
 * and 2 s) keep the refusals quick. */
static int stream_once(int dir_fd, const char *src, uint64_t bytes, const char *sha,
                       const char *sent_token, bool squatter, int *sent, vcr_error_t *err)
{
    struct standby_stream_order rx = {
        .bytes = bytes, .deadline_ms = 10000, .accept_ms = 1500, .header_ms = 300};
    snprintf(rx.sha256, sizeof(rx.sha256), "%s", sha);
    assert_int_equal(standby_stream_token_parse(STREAM_TOKEN, rx.token, err), 0);
    uint16_t port = 0;
    int lfd = standby_stream_listen(&port, err);
    assert_true(lfd >= 0);
    int squat = squatter ? connect_loopback(port) : -1;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(lfd);
        signal(SIGPIPE, SIG_IGN); /* as in the agent (standby_stream.h) */
        struct standby_stream_order tx = {.bytes = bytes, .deadline_ms = 10000, .port = port};
        snprintf(tx.address, sizeof(tx.address), "127.0.0.1");
        vcr_error_t e = NULL;
        standby_stream_token_parse(sent_token, tx.token, &e);
        struct standby_stream_stats st;
        _exit(standby_stream_send(src, &tx, &st, &e) == 0 ? 0 : vcr_error_status(e));
    }
    struct standby_stream_stats st = {0};
    int rc = standby_stream_receive(lfd, dir_fd, "pre.tar", "pre.tar", &rx, &st, err);
    if (squat >= 0)
        close(squat);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    *sent = WEXITSTATUS(status);
    if (rc == 0)
        assert_int_equal(st.bytes, bytes);
    return rc;
}

static void test_stream_transfer_checks_token_size_and_digest(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    char src[300], dst[300];
    snprintf(src, sizeof(src), "%s/src.tar", base);
    snprintf(dst, sizeof(dst), "%s/pre.tar", base);
    /* 3 MB of varied bytes: more than one buffer and one sendfile call. */
    size_t len = 3 * 1000 * 1000 + 17;
    unsigned char *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 11));
    FILE *f = fopen(src, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
    char sha[WARM_STATE_HEX_LEN + 1];
    uint64_t size = 0;
    assert_int_equal(warm_state_digest(src, sha, &size, &err), 0);
    cleanup_close int dir_fd = open(base, O_RDONLY | O_DIRECTORY);
    assert_true(dir_fd >= 0);
    int sent = -1;

    /* A wrong token: refused on both sides, nothing in place, no leftover. */
    char wrong[65];
    snprintf(wrong, sizeof(wrong), "%.63s0", STREAM_TOKEN);
    assert_int_equal(stream_once(dir_fd, src, len, sha, wrong, false, &sent, &err), -1);
    assert_int_equal(vcr_error_status(err), EACCES);
    assert_int_equal(sent, EACCES);
    assert_int_equal(access(dst, F_OK), -1);
    assert_int_equal(count_parts(base), 0);
    vcr_error_release(&err);

    /* The right token but another digest than the order's: not renamed into place. */
    char other[65];
    snprintf(other, sizeof(other), "%.63s%c", sha, sha[63] == '0' ? '1' : '0');
    assert_int_equal(stream_once(dir_fd, src, len, other, STREAM_TOKEN, false, &sent, &err), -1);
    assert_int_equal(vcr_error_status(err), EIO);
    assert_int_equal(sent, EIO);
    assert_int_equal(access(dst, F_OK), -1);
    assert_int_equal(count_parts(base), 0);
    vcr_error_release(&err);

    /* All right: the file is in place, byte for byte. */
    assert_int_equal(stream_once(dir_fd, src, len, sha, STREAM_TOKEN, false, &sent, &err), 0);
    assert_int_equal(sent, 0);
    char got[WARM_STATE_HEX_LEN + 1];
    assert_int_equal(warm_state_digest(dst, got, &size, &err), 0);
    assert_string_equal(got, sha);
    assert_int_equal(size, len);
    assert_int_equal(count_parts(base), 0);

    /* A connection that sends nothing comes first (a port scan, a squatter):
     * hung up on after its header deadline, the sender's is accepted next. */
    assert_int_equal(unlink(dst), 0);
    assert_int_equal(stream_once(dir_fd, src, len, sha, STREAM_TOKEN, true, &sent, &err), 0);
    assert_int_equal(sent, 0);
    assert_int_equal(warm_state_digest(dst, got, &size, &err), 0);
    assert_string_equal(got, sha);
    assert_int_equal(count_parts(base), 0);
    free(buf);
    assert_int_equal(standby_remove_tree(base, &err), 0);
}

/* A sender that stops midway without closing (its VM died: no FIN, no RST):
 * the receive gives up after its idle time, not at its deadline, and leaves
 * no temporary file. */
static void test_stream_receiver_gives_up_on_a_silent_sender(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *base = make_base();
    cleanup_close int dir_fd = open(base, O_RDONLY | O_DIRECTORY);
    assert_true(dir_fd >= 0);
    struct standby_stream_order rx = {
        .bytes = 1000000, .deadline_ms = 60000, .accept_ms = 5000, .idle_ms = 300};
    memset(rx.sha256, 'a', 64);
    assert_int_equal(standby_stream_token_parse(STREAM_TOKEN, rx.token, &err), 0);
    uint16_t port = 0;
    int lfd = standby_stream_listen(&port, &err);
    assert_true(lfd >= 0);
    int hold[2];
    assert_int_equal(pipe(hold), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(lfd);
        close(hold[1]);
        int fd = connect_loopback(port);
        unsigned char head[STANDBY_STREAM_TOKEN_BYTES + 8] = {0};
        memcpy(head, rx.token, STANDBY_STREAM_TOKEN_BYTES);
        uint64_t v = rx.bytes;
        for (int i = 7; i >= 0; i--, v >>= 8)
            head[STANDBY_STREAM_TOKEN_BYTES + i] = (unsigned char)(v & 0xff);
        static unsigned char half[400000];
        if (write(fd, head, sizeof(head)) != (ssize_t)sizeof(head) ||
            write(fd, half, sizeof(half)) != (ssize_t)sizeof(half))
            _exit(1);
        char c;
        (void)!read(hold[0], &c, 1); /* silent, connection open, until the test ends */
        _exit(0);
    }
    close(hold[0]);
    struct standby_stream_stats st = {0};
    int rc = standby_stream_receive(lfd, dir_fd, "pre.tar", "pre.tar", &rx, &st, &err);
    close(hold[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(rc, -1);
    assert_int_equal(vcr_error_status(err), ETIMEDOUT);
    assert_true(st.bytes >= 400000 && st.bytes < rx.bytes);
    /* Far below the 60 s deadline (the idle time is 0.3 s). */
    assert_true(st.ms < rx.deadline_ms / 2);
    assert_int_equal(count_parts(base), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(standby_remove_tree(base, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_items_for_a_container),
        cmocka_unit_test(test_spec_defaults_and_errors),
        cmocka_unit_test(test_proc_stat_and_cpu_pct),
        cmocka_unit_test(test_meminfo_and_counters),
        cmocka_unit_test(test_migrate_members),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_image_chunks_and_paths),
        cmocka_unit_test(test_chunk_write_never_follows_a_planted_link),
        cmocka_unit_test(test_stream_orders_and_token),
        cmocka_unit_test(test_stream_transfer_checks_token_size_and_digest),
        cmocka_unit_test(test_stream_receiver_gives_up_on_a_silent_sender),
        cmocka_unit_test(test_archive_policy),
        cmocka_unit_test(test_unpack_pre_ahead),
        cmocka_unit_test(test_image_spec_and_config_items),
        cmocka_unit_test(test_http_head),
        cmocka_unit_test(test_image_cache_fetch_verify_unpack),
        cmocka_unit_test(test_image_cache_prune),
        cmocka_unit_test(test_unprivileged_container),
        cmocka_unit_test(test_image_cache_prune_shifted_copies),
        cmocka_unit_test(test_images_for_userns_timens_readable_before_the_map),
        cmocka_unit_test(test_nft_lock_tables_dropped_from_the_ruleset_image),
        cmocka_unit_test(test_criu_log_reason),
        cmocka_unit_test(test_garp_frame),
        cmocka_unit_test(test_unsolicited_na_message),
        cmocka_unit_test(test_address_take_and_release_in_a_namespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
