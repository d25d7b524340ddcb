/* The recovery engine: services configuration validation, then the state
 * machine driven in-process: fake agents over real loopback proto
 * connections, a fake service on 127.0.0.3 (the container) and 127.0.0.2 (the
 * primary), and a fake DNS server on 127.0.0.1 that applies TSIG-signed
 * UPDATEs and answers A queries with what it was told.  Nothing sleeps a fixed
 * time: the loop runs until a condition holds or a deadline passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <ldns/ldns.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "proto/proto.h"
#include "server/agents.h"
#include "server/check.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/provision.h"
#include "server/migrate.h"
#include "server/recovery.h"
#include "server/recovery/standby_mode.h"
#include "server/server.h"
#include "config/server_config.h"
#include "fake_dns.h"
#include "scrape.h"
#include "server/service_data.h"

#define PRIMARY   "127.0.0.2"
#define CONTAINER "127.0.0.3"

static void assert_contains(const char *haystack, const char *needle)
{
    if (haystack == NULL || strstr(haystack, needle) == NULL)
        fail_msg("`%s` does not contain `%s`", haystack ? haystack : "(null)", needle);
}

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/vcr-test-recovery-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[128];
    fake_dns_write_key(dir, path, sizeof(path));
}

static void remove_dir(void)
{
    static const char *const names[] = {"tsig.key",       "journal.db", "journal.db-wal",
                                        "journal.db-shm", "hook.sh",    "hook.out",
                                        "hook.fail",      "hook.hang",  "scale.yaml"};
    char path[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* --- configuration --- */

#define DNS_OK "dns: {server: 127.0.0.1:5353, zone: vcr.lab, key_file: %s/tsig.key}\n"
#define SERVICE_OK                                                                                 \
    "services:\n"                                                                                  \
    "  - name: web1\n"                                                                             \
    "    dns_name: web1.vcr.lab\n"                                                                 \
    "    primary: {host: node1, vm: web1, address: 10.77.0.11, port: 80}\n"                        \
    "    check: {type: http, path: /, interval_ms: 500, timeout_ms: 300, failures: 3}\n"           \
    "    standby: {mode: warm, host: sb1, container: web1-c, address: 10.77.0.31}\n"

static struct server_config *parse(const char *fmt, const char *a, vcr_error_t *err)
{
    cleanup_free char *yaml = NULL;
    assert_true(asprintf(&yaml, fmt, a, a) > 0);
    return server_config_parse(yaml, strlen(yaml), "test.yaml", err);
}

static void expect_bad(const char *replace, const char *with, const char *const *needles)
{
    char fmt[2048];
    snprintf(fmt, sizeof(fmt), "%s", DNS_OK SERVICE_OK);
    if (replace) {
        char *at = strstr(fmt, replace);
        assert_non_null(at);
        char rest[2048];
        snprintf(rest, sizeof(rest), "%s", at + strlen(replace));
        snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "%s%s", with, rest);
    }
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(fmt, dir, &err);
    if (cfg)
        fail_msg("accepted with `%s` -> `%s`", replace, with);
    for (; *needles; needles++)
        assert_contains(vcr_error_msg(err), *needles);
}

#define EXPECT_BAD(replace, with, ...)                                                             \
    expect_bad(replace, with, (const char *const[]){__VA_ARGS__, NULL})

static void test_config_services_valid(void **state)
{
    (void)state;
    make_dir();
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(DNS_OK SERVICE_OK, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_services, 1);
    assert_string_equal(cfg->dns->server, "127.0.0.1");
    assert_int_equal(cfg->dns->port, 5353);
    assert_string_equal(cfg->dns->key_name, KEY_NAME);
    assert_string_equal(cfg->services[0].dns_name, "web1.vcr.lab");
    assert_int_equal(cfg->services[0].ttl, 5);
    assert_ptr_equal(cfg->services[0].check.type, &check_http_ops);
    assert_string_equal(cfg->services[0].check.path, "/");
    assert_ptr_equal(cfg->services[0].standby.mode, &standby_warm_ops);
    assert_int_equal(cfg->services[0].standby.prefix, 24);
    assert_int_equal(cfg->services[0].takeover, SERVICES_TAKEOVER_DNS);
    /* The host timeout (3 x 250 + 500) with the default heartbeat. */
    assert_int_equal(cfg->fence_timeout_ms, 1250);
    server_config_free(cfg);
    remove_dir();
}

/* A server for 10,000 VMs and their services (make bench-scale): a file of
 * 2.5 MB, which the old limits (256 services, 1 MiB of file) refused. */
static void test_config_services_at_scale(void **state)
{
    (void)state;
    make_dir();
    char path[160];
    snprintf(path, sizeof(path), "%s/scale.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, DNS_OK "services:\n", dir);
    for (int i = 0; i < 10000; i++)
        fprintf(f,
                "  - name: s-%d\n"
                "    dns_name: s-%d.vcr.lab\n"
                "    primary: {host: host-%d, vm: vm-%d, address: 10.0.%d.%d, port: 80}\n"
                "    check: {type: tcp, interval_ms: 1000, timeout_ms: 500, failures: 3}\n"
                "    standby: {mode: cold, host: sb-%d, container: c-%d, address: 10.1.%d.%d}\n",
                i, i, i % 1000, i, i / 250, i % 250 + 1, i % 2, i, i / 250, i % 250 + 1);
    long size = ftell(f);
    fclose(f);
    assert_true(size > 2 * 1024 * 1024);
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = server_config_load(path, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_services, 10000);
    assert_string_equal(cfg->services[9999].primary.vm, "vm-9999");
    assert_string_equal(cfg->services[9999].standby.address, "10.1.39.250");
    server_config_free(cfg);
    remove_dir();
}

/* A dual-stack service: address6 on both sides; `check.family: ipv6` probes the
 * primary's IPv6 address. */
static void test_config_services_dual_stack(void **state)
{
    (void)state;
    make_dir();
    char fmt[2048];
    snprintf(fmt, sizeof(fmt), "%s", DNS_OK SERVICE_OK);
    const char *edits[][2] = {
        {"port: 80}", "port: 80, address6: 'fd77::11'}"},
        {"failures: 3}", "failures: 3, family: ipv6}"},
        {"address: 10.77.0.31}", "address: 10.77.0.31, address6: 'fd77::31'}"},
    };
    for (size_t i = 0; i < 3; i++) {
        char *at = strstr(fmt, edits[i][0]);
        assert_non_null(at);
        char rest[2048];
        snprintf(rest, sizeof(rest), "%s", at + strlen(edits[i][0]));
        snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "%s%s", edits[i][1], rest);
    }
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(fmt, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->services[0].primary.address6, "fd77::11");
    assert_string_equal(cfg->services[0].standby.address6, "fd77::31");
    assert_true(cfg->services[0].check.ipv6);
    server_config_free(cfg);
    remove_dir();
}

/* The VM standby modes (standby_mode.h): standby.vm of host agent
 * standby.host; every container-only field is refused by name. */
#define VM_STANDBY "mode: warm-vm, host: node2, vm: web1-sb,"

static void test_config_vm_standby_modes(void **state)
{
    (void)state;
    make_dir();
    char fmt[2048];
    snprintf(fmt, sizeof(fmt), "%s", DNS_OK SERVICE_OK);
    const char *std = "mode: warm, host: sb1, container: web1-c,";
    char *at = strstr(fmt, std);
    assert_non_null(at);
    char rest[2048];
    snprintf(rest, sizeof(rest), "%s", at + strlen(std));
    snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "%s%s", VM_STANDBY, rest);
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(fmt, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_ptr_equal(cfg->services[0].standby.mode, &standby_warm_vm_ops);
    assert_string_equal(cfg->services[0].standby.vm, "web1-sb");
    assert_string_equal(cfg->services[0].standby.host, "node2");
    assert_null(cfg->services[0].standby.container);
    assert_false(cfg->services[0].standby.mode->container);
    server_config_free(cfg);

    EXPECT_BAD(std, "mode: warm-vm, host: node2,", "`services[0].standby.vm`", "missing");
    EXPECT_BAD(std, VM_STANDBY " container: web1-c,", "`services[0].standby.container`", "`web1-c`",
               "standby mode `warm-vm`", "container standby mode (warm, cold)");
    EXPECT_BAD(std, VM_STANDBY " fallback_host: sb2,", "`services[0].standby.fallback_host`",
               "`sb2`", "container standby mode");
    EXPECT_BAD(std, VM_STANDBY " image: ct-nginx,", "`services[0].standby.image`",
               "container standby mode");
    EXPECT_BAD(std, "mode: warm, host: sb1, container: web1-c, vm: web1-sb,",
               "`services[0].standby.vm`", "`web1-sb`", "standby mode `warm`",
               "VM standby mode (warm-vm");
    EXPECT_BAD("mode: warm, host: sb1, container: web1-c, address: 10.77.0.31}\n",
               VM_STANDBY " address: 10.77.0.31}\n    takeover: both\n", "`services[0].takeover`",
               "`both` with standby mode `warm-vm`", "allowed: dns");
    EXPECT_BAD("mode: warm, host: sb1, container: web1-c, address: 10.77.0.31}\n",
               VM_STANDBY " address: 10.77.0.31}\n    data: {volume: data, path: /srv/data}\n",
               "`services[0].data`", "standby mode `warm-vm`", "allowed: no `data`");
    EXPECT_BAD("mode: warm", "mode: hot", "`services[0].standby.mode`", "hot",
               "warm, cold, warm-vm, cold-vm");
    remove_dir();
}

/* standby.privileged: false (unprivileged) unless `true` (docs/security.md, "Standby
 * containers"); the container order always says which. */
static void test_config_standby_privileged(void **state)
{
    (void)state;
    make_dir();
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(DNS_OK SERVICE_OK, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_false(cfg->services[0].standby.privileged);
    server_config_free(cfg);
    char fmt[2048];
    snprintf(fmt, sizeof(fmt), "%s", DNS_OK SERVICE_OK);
    const char *std = "mode: warm, host: sb1, container: web1-c,";
    char *at = strstr(fmt, std);
    assert_non_null(at);
    char rest[2048];
    snprintf(rest, sizeof(rest), "%s", at + strlen(std));
    snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "%s privileged: true,%s", std, rest);
    cfg = parse(fmt, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(cfg->services[0].standby.privileged);
    server_config_free(cfg);
    EXPECT_BAD(std, "mode: warm, host: sb1, container: web1-c, privileged: no,",
               "`services[0].standby.privileged`", "`no` is not a boolean", "true, false");
    EXPECT_BAD(std, VM_STANDBY " privileged: false,", "`services[0].standby.privileged`",
               "container standby mode");
    remove_dir();
}

static void test_config_services_each_bad_field(void **state)
{
    (void)state;
    make_dir();
    EXPECT_BAD("web1.vcr.lab", "web1.other.lab", "`services[0].dns_name`", "web1.other.lab",
               "not inside zone `vcr.lab`");
    EXPECT_BAD("name: web1", "name: 'web 1'", "`services[0].name`", "web 1", "letters");
    EXPECT_BAD("address: 10.77.0.11", "address: 10.77.0", "`services[0].primary.address`",
               "10.77.0", "IPv4");
    EXPECT_BAD("port: 80", "port: 70000", "`services[0].primary.port`", "70000", "1..65535");
    EXPECT_BAD("port: 80", "port: 8o", "`services[0].primary.port`", "8o", "not an integer");
    EXPECT_BAD("vm: web1,", "", "`services[0].primary.vm`", "missing");
    EXPECT_BAD("type: http", "type: icmp", "`services[0].check.type`", "icmp", "tcp, http, redis");
    EXPECT_BAD("type: http", "type: redis", "`services[0].check.path`", "redis check");
    EXPECT_BAD("path: /,", "path: nope,", "`services[0].check.path`", "nope", "/PATH");
    EXPECT_BAD("timeout_ms: 300", "timeout_ms: 900", "`services[0].check.timeout_ms`", "900",
               "10..500");
    EXPECT_BAD("interval_ms: 500", "interval_ms: 50", "`services[0].check.interval_ms`", "50",
               "100..60000");
    EXPECT_BAD("failures: 3", "failures: 0", "`services[0].check.failures`", "`0`", "1..100");
    EXPECT_BAD("failures: 3", "failures: 3, boot_grace_ms: 3600001",
               "`services[0].check.boot_grace_ms`", "3600001", "0..3600000");
    EXPECT_BAD("mode: warm", "mode: hot", "`services[0].standby.mode`", "hot", "warm, cold");
    EXPECT_BAD("address: 10.77.0.31", "address: 10.77.0.11", "`services[0].standby.address`",
               "primary's address");
    EXPECT_BAD("container: web1-c,", "", "`services[0].standby.container`", "missing");
    EXPECT_BAD("port: 80}", "port: 80, address6: 'fd77::11'}", "`services[0].primary.address6`",
               "one side only", "`standby.address6`");
    EXPECT_BAD("address: 10.77.0.31}", "address: 10.77.0.31, address6: 'fd77::31'}",
               "`services[0].standby.address6`", "one side only");
    EXPECT_BAD("failures: 3}", "failures: 3, family: ipv7}", "`services[0].check.family`",
               "`ipv7` is not an address family; allowed: ipv4, ipv6");
    EXPECT_BAD("failures: 3}", "failures: 3, family: ipv6}", "`services[0].check.family`",
               "without `primary.address6`");
    EXPECT_BAD("port: 80}", "port: 80, address6: 10.77.0.12}", "`services[0].primary.address6`",
               "`10.77.0.12` is not an IPv6 address");
    EXPECT_BAD("port: 80}\n    check: {type: http, path: /, interval_ms: 500, timeout_ms: 300, "
               "failures: 3}\n    standby: {mode: warm, host: sb1, container: web1-c, address: "
               "10.77.0.31}",
               "port: 80, address6: 'fd77::11'}\n    standby: {mode: warm, host: sb1, container: "
               "web1-c, address: 10.77.0.31, address6: 'fd77::11'}",
               "`services[0].standby.address6`", "is the primary's address6 too");
    /* takeover moves address6 too: it must be inside the container's /64. */
    EXPECT_BAD("port: 80}\n    check: {type: http, path: /, interval_ms: 500, timeout_ms: 300, "
               "failures: 3}\n    standby: {mode: warm, host: sb1, container: web1-c, address: "
               "10.77.0.31}",
               "port: 80, address6: 'fd77::11'}\n    standby: {mode: warm, host: sb1, container: "
               "web1-c, address: 10.77.0.31, address6: 'fd78::31'}\n    takeover: both",
               "`services[0].takeover`", "`both`",
               "primary address6 fd77::11 is not in standby.address6 fd78::31/64");
    EXPECT_BAD("dns_name: web1.vcr.lab\n", "dns_name: web1.vcr.lab\n    takeover: arp\n",
               "`services[0].takeover`", "`arp`", "dns, address, both");
    EXPECT_BAD("address: 10.77.0.31}\n", "address: 10.78.0.31}\n    takeover: both\n",
               "`services[0].takeover`", "`both`",
               "10.77.0.11 is not in standby.address "
               "10.78.0.31/24");
    EXPECT_BAD("}\n    standby", ", color: red}\n    standby", "`color`", "inside `check`",
               "unknown key");
    EXPECT_BAD("127.0.0.1:5353", "dns.example:53", "`dns.server`", "dns.example");
    EXPECT_BAD("zone: vcr.lab, ", "", "`dns.zone`", "missing");
    EXPECT_BAD("tsig.key", "absent.key", "`dns.key_file`", "absent.key");
    EXPECT_BAD("dns: {", "# {", "no `dns`");
    remove_dir();
}

/* --- container images (`images:`, standby.image) --- */

#define IMAGE_SUM "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"
#define IMAGES_OK                                                                                  \
    "images_listen: 10.77.0.1:7071\n"                                                              \
    "images:\n"                                                                                    \
    "  - {name: web, file: %s/web.tar.gz, sha256: " IMAGE_SUM ", cmd: /sbin/httpd -f -p 80}\n"     \
    "  - {name: plain, file: web.tar.gz, sha256: " IMAGE_SUM "}\n"                                 \
    "  - {name: ngx, file: %s/web.tar.gz, sha256: " IMAGE_SUM                                      \
    ", cmd: \"nginx -g 'daemon off;'\"}\n"

static void write_image_file(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/web.tar.gz", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not really gzip: the server never reads it at load", f);
    fclose(f);
}

static void remove_image_file(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/web.tar.gz", dir);
    unlink(path);
}

/* fmt has three %s: the images' file dir (twice), dns's key dir. */
static struct server_config *parse_images(const char *fmt, vcr_error_t *err)
{
    cleanup_free char *yaml = NULL;
    assert_true(asprintf(&yaml, fmt, dir, dir, dir) > 0);
    /* A relative `file` is taken from the config file's directory: with
     * server_config_parse there is none, so it stays relative to the cwd. */
    return server_config_parse(yaml, strlen(yaml), "test.yaml", err);
}

static void test_config_images_valid(void **state)
{
    (void)state;
    make_dir();
    write_image_file();
    cleanup_error vcr_error_t err = NULL;
    char fmt[4096];
    snprintf(fmt, sizeof(fmt), "%s%s", IMAGES_OK, DNS_OK SERVICE_OK);
    /* the service names the image instead of the busybox template */
    char *at = strstr(fmt, "address: 10.77.0.31}");
    assert_non_null(at);
    snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "address: 10.77.0.31, image: web}\n");
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0);
    struct server_config *cfg = parse_images(fmt, &err);
    assert_int_equal(chdir(cwd), 0);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_images, 3);
    /* a shell line, quotes and all, as the image's metadata writes it */
    assert_string_equal(cfg->images[2].cmd, "nginx -g 'daemon off;'");
    assert_string_equal(cfg->images_host, "10.77.0.1");
    assert_int_equal(cfg->images_port, 7071);
    assert_string_equal(cfg->images[0].name, "web");
    assert_string_equal(cfg->images[0].sha256, "0123456789abcdef0123456789abcdef0123456789abcdef"
                                               "0123456789abcdef");
    assert_string_equal(cfg->images[0].cmd, "/sbin/httpd -f -p 80");
    assert_null(cfg->images[1].cmd);
    const struct image_config *img = server_config_service_image(cfg, &cfg->services[0]);
    assert_non_null(img);
    assert_ptr_equal(img, &cfg->images[0]);
    /* What a container order carries (docs/protocol.md). */
    cleanup_json json_t *member = server_config_image_json(cfg, img);
    assert_string_equal(json_string_value(json_object_get(member, "url")),
                        "http://10.77.0.1:7071/v1/images/web");
    assert_string_equal(json_string_value(json_object_get(member, "sha256")), img->sha256);
    assert_string_equal(json_string_value(json_object_get(member, "cmd")), "/sbin/httpd -f -p 80");
    cleanup_json json_t *plain = server_config_image_json(cfg, &cfg->images[1]);
    assert_null(json_object_get(plain, "cmd"));
    server_config_free(cfg);
    remove_image_file();
    remove_dir();
}

/* IMAGES_OK with one replacement must be refused naming each needle. */
static void expect_bad_image(const char *replace, const char *with, const char *const *needles)
{
    char fmt[4096];
    snprintf(fmt, sizeof(fmt), "%s%s", IMAGES_OK, DNS_OK SERVICE_OK);
    if (replace) {
        char *at = strstr(fmt, replace);
        if (at == NULL)
            fail_msg("`%s` is not in the test config", replace);
        char rest[4096];
        snprintf(rest, sizeof(rest), "%s", at + strlen(replace));
        snprintf(at, sizeof(fmt) - (size_t)(at - fmt), "%s%s", with, rest);
    }
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse_images(fmt, &err);
    if (cfg)
        fail_msg("accepted with `%s` -> `%s`", replace, with);
    for (; *needles; needles++)
        assert_contains(vcr_error_msg(err), *needles);
}

#define EXPECT_BAD_IMAGE(replace, with, ...)                                                       \
    expect_bad_image(replace, with, (const char *const[]){__VA_ARGS__, NULL})

static void test_config_images_each_bad_field(void **state)
{
    (void)state;
    make_dir();
    write_image_file();
    /* the second image's relative file is not in the test's cwd */
    EXPECT_BAD_IMAGE(NULL, NULL, "`images[1].file`", "web.tar.gz", "No such file",
                     "readable rootfs tarball");
    EXPECT_BAD_IMAGE("%s/web.tar.gz", "/nonexistent/web.tar.gz", "`images[0].file`",
                     "/nonexistent/web.tar.gz", "No such file or directory", "*.tar.gz");
    EXPECT_BAD_IMAGE("%s/web.tar.gz", "%s", "`images[0].file`", "not named *.tar.gz");
    EXPECT_BAD_IMAGE("sha256: " IMAGE_SUM ", cmd", "sha256: 12ab, cmd", "`images[0].sha256`",
                     "`12ab`", "64 hex digits");
    EXPECT_BAD_IMAGE("sha256: " IMAGE_SUM ", cmd", "sha256: " IMAGE_SUM "zz, cmd",
                     "`images[0].sha256`", "not a SHA-256");
    EXPECT_BAD_IMAGE("sha256: " IMAGE_SUM ", cmd", "cmd", "`images[0].sha256`", "missing");
    EXPECT_BAD_IMAGE("name: plain", "name: web", "`images[1].name`", "`web` is also images[0]'s",
                     "unique");
    EXPECT_BAD_IMAGE("name: plain", "name: 'a b'", "`images[1].name`", "not a name");
    EXPECT_BAD_IMAGE("cmd: /sbin/httpd -f -p 80", "cmd: \"httpd\\tx\"", "`images[0].cmd`",
                     "control character", "exec CMD");
    EXPECT_BAD_IMAGE("cmd: /sbin/httpd -f -p 80", "cmd: ' '", "`images[0].cmd`", "is empty");
    EXPECT_BAD_IMAGE("images_listen: 10.77.0.1:7071\n", "", "`images_listen`",
                     "missing while 3 image(s)", "10.77.0.1:7071");
    EXPECT_BAD_IMAGE("10.77.0.1:7071", "0.0.0.0:7071", "`images_listen`", "cannot be 0.0.0.0");
    EXPECT_BAD_IMAGE("address: 10.77.0.31}", "address: 10.77.0.31, image: nginx}",
                     "`services[0].standby.image`", "`nginx` is not in `images`",
                     "web, plain, ngx");
    EXPECT_BAD_IMAGE("address: 10.77.0.31}", "address: 10.77.0.31, image: web, template: busybox}",
                     "`services[0].standby.image`", "`standby.template` `busybox`", "one of them");
    remove_image_file();
    remove_dir();
}

static void test_config_fence_timeout_bounds(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    const char *yaml = "host_timeout_ms: 4000\nfence_timeout_ms: 3999\n";
    assert_null(server_config_parse(yaml, strlen(yaml), "t.yaml", &err));
    assert_contains(vcr_error_msg(err), "`fence_timeout_ms`");
    assert_contains(vcr_error_msg(err), "4000..600000");
    vcr_error_release(&err);
    yaml = "fence_timeout_ms: 8000\n";
    struct server_config *cfg = server_config_parse(yaml, strlen(yaml), "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->fence_timeout_ms, 8000);
    server_config_free(cfg);
}

/* The safety argument of docs/fencing.md ("Choosing fence_timeout_ms") for the
 * default timeouts, at the default heartbeat and at every heartbeat allowed:
 * - detection: the default declares a lost host within 1.5 s (host timeout plus
 *   the liveness tick), and only after three missed heartbeats;
 * - no self-fence over a silence the server does not call a host loss: the
 *   agent's watchdog limit (welcome's fence_after_ms) exceeds the host timeout
 *   by at least one heartbeat;
 * - the agent has fenced first: the server switches host + fence timeout after
 *   the host's last frame (the agent's last contact is no later), at least
 *   250 ms (the watchdog's wake-up on a loaded host and the SIGKILL) plus
 *   500 ppm of the whole wait (two hosts' clock rates) after the watchdog's limit. */
static void check_timeout_invariants(const struct server_config *cfg)
{
    uint32_t hb = cfg->heartbeat_ms, host = cfg->host_timeout_ms, fence = cfg->fence_timeout_ms;
    uint32_t fence_after = agents_fence_after_ms(host, fence);
    assert_true(host >= 3 * hb);
    assert_true(fence >= host);
    assert_true(fence_after >= host + hb);
    uint32_t switch_after = host + fence;
    assert_true((uint64_t)switch_after * 1000000 >=
                ((uint64_t)fence_after + 250) * 1000000 + (uint64_t)switch_after * 500);
}

static void test_config_default_timeouts_invariants(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = server_config_parse("", 0, "t.yaml", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->heartbeat_ms, 250);
    assert_int_equal(cfg->host_timeout_ms, 1250);
    assert_true(cfg->host_timeout_ms + AGENTS_TICK_MS <= 1500);
    assert_int_equal(agents_fence_after_ms(cfg->host_timeout_ms, cfg->fence_timeout_ms), 1875);
    check_timeout_invariants(cfg);
    server_config_free(cfg);
    for (uint32_t hb = 100; hb <= 60000; hb += hb < 1000 ? 50 : 1000) {
        char yaml[64];
        snprintf(yaml, sizeof(yaml), "heartbeat_ms: %u\n", hb);
        cfg = server_config_parse(yaml, strlen(yaml), "t.yaml", &err);
        if (cfg == NULL)
            fail_msg("%s", vcr_error_msg(err));
        check_timeout_invariants(cfg);
        server_config_free(cfg);
    }
}

/* --- fake DNS server: applies signed UPDATEs, answers A and AAAA queries --- */

struct fake_dns {
    struct fake_dns_socket sock;
    bool silent;
    bool apply_silently;    /* UPDATEs are applied but never answered (a stopped named's queue) */
    bool mute_after_update; /* queries go unanswered once an UPDATE was answered */
    char address[32];       /* the A record of the service name, "" for none */
    char address6[64];      /* its AAAA record, "" for none */
    bool keep_aaaa;         /* UPDATEs leave the AAAA record as it is (a zone half-switched) */
    unsigned updates;
    int64_t first_update_mono;
};

static void on_dns_request(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_dns *d = arg;
    uint8_t buf[4096];
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
    if (n < 0 || d->silent || (d->mute_after_update && d->updates > 0))
        return;
    ldns_pkt *req = NULL;
    assert_int_equal(ldns_wire2pkt(&req, buf, (size_t)n), LDNS_STATUS_OK);
    ldns_pkt *reply = fake_dns_reply_to(req);
    if (ldns_pkt_get_opcode(req) == LDNS_PACKET_UPDATE) {
        /* The update section (ldns: authority): delete, then add NAME A ADDR. */
        ldns_rr_list *upd = ldns_pkt_authority(req);
        for (size_t i = 0; i < ldns_rr_list_rr_count(upd); i++) {
            ldns_rr *rr = ldns_rr_list_rr(upd, i);
            bool aaaa = ldns_rr_get_type(rr) == LDNS_RR_TYPE_AAAA;
            if (aaaa && d->keep_aaaa)
                continue;
            if (ldns_rr_get_class(rr) == LDNS_RR_CLASS_ANY && aaaa)
                d->address6[0] = '\0';
            if (ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN && ldns_rr_rd_count(rr) == 1) {
                char *a = ldns_rdf2str(ldns_rr_rdf(rr, 0));
                if (aaaa)
                    snprintf(d->address6, sizeof(d->address6), "%s", a);
                else
                    snprintf(d->address, sizeof(d->address), "%s", a);
                free(a);
            }
        }
        if (d->updates++ == 0)
            d->first_update_mono = vcr_mono_ms();
        if (d->apply_silently) {
            ldns_pkt_free(reply);
            ldns_pkt_free(req);
            return;
        }
        fake_dns_sign(reply, req);
    } else {
        ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(req), 0);
        ldns_pkt_push_rr(reply, LDNS_SECTION_QUESTION, ldns_rr_clone(q));
        bool aaaa = ldns_rr_get_type(q) == LDNS_RR_TYPE_AAAA;
        const char *record = aaaa ? d->address6 : d->address;
        if (record[0]) {
            ldns_rr *a = NULL;
            char text[160];
            cleanup_free char *owner = ldns_rdf2str(ldns_rr_owner(q));
            snprintf(text, sizeof(text), "%s 5 IN %s %s", owner, aaaa ? "AAAA" : "A", record);
            assert_int_equal(ldns_rr_new_frm_str(&a, text, 0, NULL, NULL), LDNS_STATUS_OK);
            ldns_pkt_push_rr(reply, LDNS_SECTION_ANSWER, a);
        }
    }
    fake_dns_send(&d->sock, reply, &from, flen);
    ldns_pkt_free(req);
}

/* On 127.0.0.1, or with ipv6 on ::1. */
static void dns_start_on(struct fake_dns *d, struct event_base *base, bool ipv6)
{
    memset(d, 0, sizeof(*d));
    fake_dns_listen_on(&d->sock, base, ipv6, on_dns_request, d);
}

static void dns_start(struct fake_dns *d, struct event_base *base)
{
    dns_start_on(d, base, false);
}

static void dns_stop(struct fake_dns *d)
{
    fake_dns_close(&d->sock);
}

/* --- fake service: accepts, answers its name, closes --- */

struct fake_service {
    struct evconnlistener *l;
    unsigned accepted;
    const char *answer; /* NULL: an HTTP answer "web1" */
};

static void on_service_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                              int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    struct fake_service *s = arg;
    s->accepted++;
    static const char http[] = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nweb1\n";
    const char *answer = s->answer ? s->answer : http;
    ssize_t w = write(fd, answer, strlen(answer));
    (void)w;
    close(fd);
}

static void service_start(struct fake_service *s, struct event_base *base, const char *addr,
                          uint16_t *port)
{
    memset(s, 0, sizeof(*s));
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    socklen_t slen = sizeof(*sin);
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(*port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(*port);
        slen = sizeof(*sin6);
    }
    s->l = evconnlistener_new_bind(base, on_service_accept, s,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                   (struct sockaddr *)&ss, slen);
    assert_non_null(s->l);
    slen = sizeof(ss);
    getsockname(evconnlistener_get_fd(s->l), (struct sockaddr *)&ss, &slen);
    *port = ntohs(ss.ss_family == AF_INET6 ? sin6->sin6_port : sin->sin_port);
}

static void service_stop(struct fake_service *s)
{
    if (s->l)
        evconnlistener_free(s->l);
    s->l = NULL;
}

/* --- fake agents --- */

struct fake_agent {
    struct proto_conn *conn;
    json_t *received;
    json_t *hello;
    bool closed;
    bool heartbeat; /* every 100 ms once welcomed, as a live agent does */
    json_int_t seq;
    struct event *beat;
    /* A host agent that plays its VM: vm_kill/vm_stop report it `stopped`,
     * vm_start reports it `running` with a new pid (as the real agent does). */
    bool plays_vm;
    int64_t vm_pid;
    bool hold_orders; /* no reply until agent_reply_held (an agent busy in liblxc) */
    /* hold_orders is set at the order of this action after hold_skip of them. */
    const char *hold_from_action;
    int hold_skip;
    json_t *held;       /* the id of the order held */
    const char *refuse; /* non-NULL: every order is refused with this error */
    /* refuse_code: the next refuse_times orders refuse_action are refused with this
     * `code` (docs/protocol.md), then served as usual. */
    const char *refuse_action, *refuse_code;
    int refuse_times;
    /* Migration orders (docs/migration.md) played with an image in memory. */
    bool migration;
    bool refuse_predump, refuse_restore;
    unsigned char image[200000]; /* source: what a checkpoint "dumps" */
    unsigned char got[200000];   /* target: what image writes brought */
    size_t got_len;
    bool got_verified; /* the last write's size and sha256 matched */
    /* A service's data (docs/data.md), played with the same image in memory:
     * node1 answers volume_* orders, sb1 data_* orders. */
    bool data;
    int64_t snap_taken_ms; /* node1: the taken_ms of its last volume_snapshot */
    int64_t data_taken_ms; /* sb1: of the copy it holds (0: none, data_attach refused) */
    int restores;          /* node1: volume_restore orders served */
    /* data_space (a migration's first step): the copy attached to the container,
     * and the room left (0: 1 GB). */
    bool data_mounted;
    int64_t free_bytes;
    int stream_refused; /* stream_receive orders refused as unknown */
    int unpacks;        /* container_image_unpack orders served */
};

static void sha256_hex(const unsigned char *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The reply members of a migration order, or NULL to refuse it. */
static json_t *migration_reply(struct fake_agent *a, const char *action, json_t *msg)
{
    if (strcmp(action, "container_checkpoint") == 0) {
        bool pre = strcmp(json_string_value(json_object_get(msg, "phase")), "pre") == 0;
        if (pre && a->refuse_predump)
            return NULL;
        for (size_t i = 0; i < sizeof(a->image); i++)
            a->image[i] = (unsigned char)(i * 7 + (pre ? 1 : 2));
        char hex[65];
        sha256_hex(a->image, sizeof(a->image), hex);
        return json_pack("{s:i, s:s, s:i}", "bytes", (int)sizeof(a->image), "sha256", hex,
                         "dump_ms", 5);
    }
    if (strcmp(action, "container_image_read") == 0) {
        size_t off = (size_t)json_integer_value(json_object_get(msg, "offset"));
        size_t len = (size_t)json_integer_value(json_object_get(msg, "length"));
        assert_true(off + len <= sizeof(a->image) && len <= 131072);
        char *b64 = malloc(4 * ((len + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)b64, a->image + off, (int)len);
        json_t *r = json_pack("{s:s, s:b, s:i}", "data", b64, "eof", off + len == sizeof(a->image),
                              "bytes", (int)sizeof(a->image));
        free(b64);
        return r;
    }
    if (strcmp(action, "container_image_write") == 0) {
        size_t off = (size_t)json_integer_value(json_object_get(msg, "offset"));
        const char *data = json_string_value(json_object_get(msg, "data"));
        size_t n = strlen(data);
        unsigned char *raw = malloc(n);
        int len = EVP_DecodeBlock(raw, (const unsigned char *)data, (int)n);
        len -= (n && data[n - 1] == '=') + (n > 1 && data[n - 2] == '=');
        assert_true(off == a->got_len && off + (size_t)len <= sizeof(a->got));
        memcpy(a->got + off, raw, (size_t)len);
        free(raw);
        a->got_len += (size_t)len;
        if (json_is_true(json_object_get(msg, "last"))) {
            char hex[65];
            sha256_hex(a->got, a->got_len, hex);
            a->got_verified =
                (size_t)json_integer_value(json_object_get(msg, "bytes")) == a->got_len &&
                strcmp(hex, json_string_value(json_object_get(msg, "sha256"))) == 0;
            if (!a->got_verified)
                return NULL;
            a->got_len = 0; /* the next image starts at 0 */
        }
        return json_object();
    }
    if (strcmp(action, "container_restore") == 0)
        return a->refuse_restore ? NULL : json_pack("{s:i, s:i}", "unpack_ms", 6, "restore_ms", 7);
    if (strcmp(action, "container_image_unpack") == 0) {
        /* pre.tar must have arrived whole: the last write checked it. */
        a->unpacks++;
        return a->got_verified ? json_pack("{s:i}", "unpack_ms", 4) : NULL;
    }
    return json_object();
}

/* The reply members of a data order, or NULL to refuse it. */
static json_t *data_reply(struct fake_agent *a, const char *action, json_t *msg)
{
    if (strcmp(action, "volume_snapshot") == 0 || strcmp(action, "data_export") == 0) {
        cleanup_json json_t *dump = json_pack("{s:s}", "phase", "final");
        json_t *r = migration_reply(a, "container_checkpoint", dump);
        a->snap_taken_ms = vcr_wall_ms();
        json_object_set_new(r, "taken_ms", json_integer(a->snap_taken_ms));
        json_object_set_new(r, "method", json_string("file"));
        json_object_set_new(r, "raw_bytes", json_integer(16 << 20));
        return r;
    }
    if (strcmp(action, "volume_snapshot_read") == 0 || strcmp(action, "data_read") == 0)
        return migration_reply(a, "container_image_read", msg);
    if (strcmp(action, "data_write") == 0 || strcmp(action, "volume_restore_write") == 0)
        return migration_reply(a, "container_image_write", msg);
    if (strcmp(action, "data_install") == 0) {
        if (!a->got_verified)
            return NULL;
        a->data_taken_ms = json_integer_value(json_object_get(msg, "taken_ms"));
        return json_pack("{s:i}", "raw_bytes", 16 << 20);
    }
    if (strcmp(action, "data_space") == 0)
        return json_pack("{s:b, s:b, s:i, s:i, s:I}", "copy", a->data_mounted, "mounted",
                         a->data_mounted, "raw_bytes", 16 << 20, "alloc_bytes", 200000,
                         "free_bytes", (json_int_t)(a->free_bytes ? a->free_bytes : 1 << 30));
    if (strcmp(action, "volume_restore") == 0) {
        a->restores += a->got_verified;
        return a->got_verified ? json_object() : NULL;
    }
    if (strcmp(action, "data_attach") == 0) {
        if (a->data_taken_ms == 0)
            return json_pack("{s:s, s:s}", "code", "absent", "error",
                             "no data copy has reached this standby");
        return json_pack("{s:I, s:b, s:i}", "taken_ms", (json_int_t)a->data_taken_ms, "restarted",
                         1, "attach_ms", 3);
    }
    return NULL;
}

static bool is_data_order(const char *action)
{
    return action && (strncmp(action, "data_", 5) == 0 || strncmp(action, "volume_", 7) == 0);
}

static void agent_send(struct fake_agent *a, json_t *msg)
{
    cleanup_error vcr_error_t err = NULL;
    if (a->conn && proto_conn_send(a->conn, msg, &err) < 0)
        fail_msg("fake agent: %s", vcr_error_msg(err));
    json_decref(msg);
}

static void agent_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)c;
    json_array_append(a->received, msg);
    const char *order_action = json_string_value(json_object_get(msg, "action"));
    if (a->hold_from_action && order_action && strcmp(order_action, a->hold_from_action) == 0 &&
        a->hold_skip-- <= 0)
        a->hold_orders = true;
    if (strcmp(proto_msg_type(msg), "order") == 0 && a->hold_orders) {
        json_decref(a->held);
        a->held = json_incref(json_object_get(msg, "id"));
    } else if (strcmp(proto_msg_type(msg), "order") == 0 && a->refuse_times > 0 &&
               a->refuse_action &&
               strcmp(json_string_value(json_object_get(msg, "action")), a->refuse_action) == 0) {
        a->refuse_times--;
        agent_send(
            a, proto_msg_new("reply", json_pack("{s:O, s:b, s:s, s:s}", "id",
                                                json_object_get(msg, "id"), "ok", 0, "error",
                                                "refused by the test", "code", a->refuse_code)));
    } else if (strcmp(proto_msg_type(msg), "order") == 0 && order_action &&
               strncmp(order_action, "stream_", 7) == 0) {
        /* An agent without the stream (docs/migration.md "The stream"): its
         * unknown action, refused with code invalid; the server copies in chunks. */
        a->stream_refused++;
        agent_send(a,
                   proto_msg_new("reply", json_pack("{s:O, s:b, s:s, s:s}", "id",
                                                    json_object_get(msg, "id"), "ok", 0, "error",
                                                    "unknown standby action", "code", "invalid")));
    } else if (strcmp(proto_msg_type(msg), "order") == 0 && a->refuse) {
        agent_send(
            a, proto_msg_new("reply", json_pack("{s:O, s:b, s:s}", "id", json_object_get(msg, "id"),
                                                "ok", 0, "error", a->refuse)));
    } else if (strcmp(proto_msg_type(msg), "order") == 0 && a->data &&
               is_data_order(order_action)) {
        json_t *r = data_reply(a, order_action, msg);
        bool ok = r && json_object_get(r, "code") == NULL;
        json_t *reply = r ? r : json_pack("{s:s}", "error", "refused by the test");
        json_object_set(reply, "id", json_object_get(msg, "id"));
        json_object_set_new(reply, "ok", json_boolean(ok));
        agent_send(a, proto_msg_new("reply", reply));
    } else if (strcmp(proto_msg_type(msg), "order") == 0 && a->migration) {
        json_t *r = migration_reply(a, json_string_value(json_object_get(msg, "action")), msg);
        json_t *reply = r ? r : json_pack("{s:s}", "error", "refused by the test");
        json_object_set(reply, "id", json_object_get(msg, "id"));
        json_object_set_new(reply, "ok", json_boolean(r != NULL));
        agent_send(a, proto_msg_new("reply", reply));
    } else if (strcmp(proto_msg_type(msg), "order") == 0) {
        agent_send(a, proto_msg_new("reply", json_pack("{s:O, s:b}", "id",
                                                       json_object_get(msg, "id"), "ok", 1)));
        const char *act = json_string_value(json_object_get(msg, "action"));
        if (a->plays_vm && act && (strcmp(act, "vm_kill") == 0 || strcmp(act, "vm_stop") == 0))
            agent_send(a, proto_msg_new("vm_event",
                                        json_pack("{s:s, s:s, s:s, s:I}", "vm", "web1", "state",
                                                  "stopped", "cause", "stopped on order", "ts_ms",
                                                  (json_int_t)vcr_wall_ms())));
        if (a->plays_vm && act && strcmp(act, "vm_start") == 0)
            agent_send(
                a, proto_msg_new("vm_event", json_pack("{s:s, s:s, s:s, s:I, s:I}", "vm", "web1",
                                                       "state", "running", "cause", "qmp ready",
                                                       "ts_ms", (json_int_t)vcr_wall_ms(), "pid",
                                                       (json_int_t)++a->vm_pid)));
    }
}

/* Answers the order held by hold_orders. */
static void agent_reply_held(struct fake_agent *a, bool ok)
{
    assert_non_null(a->held);
    agent_send(a, proto_msg_new("reply", json_pack("{s:o, s:b, s:s?}", "id", a->held, "ok", ok,
                                                   "error", ok ? NULL : "held and refused")));
    a->held = NULL;
}

static void agent_connected(struct proto_conn *c, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)c;
    agent_send(a, json_incref(a->hello));
}

static void agent_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct fake_agent *a = opaque;
    (void)reason;
    a->closed = true;
    proto_conn_free(c);
    a->conn = NULL;
}

static bool agent_welcomed(struct fake_agent *a);

static void agent_beat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fake_agent *a = arg;
    if (a->heartbeat && a->conn && agent_welcomed(a))
        agent_send(a, proto_msg_new("heartbeat", json_pack("{s:I, s:I}", "seq", ++a->seq, "ts_ms",
                                                           (json_int_t)vcr_wall_ms())));
}

static const struct proto_conn_ops agent_ops = {
    .message = agent_message,
    .connected = agent_connected,
    .closed = agent_closed,
};

static void agent_start(struct fake_agent *a, struct event_base *base, uint16_t port,
                        const char *host, const char *role, const char *vm_state)
{
    memset(a, 0, sizeof(*a));
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    a->received = json_array();
    json_t *vms = json_array();
    if (vm_state)
        json_array_append_new(vms, json_pack("{s:s, s:s, s:i, s:s}", "name", "web1", "state",
                                             vm_state, "pid", 100, "address", PRIMARY));
    a->hello = proto_msg_new("hello", json_pack("{s:s, s:s, s:s, s:i, s:s, s:o}", "host", host,
                                                "role", role, "agent_version", "0.1.0", "pid", 4242,
                                                "accel", "tcg", "vms", vms));
    /* A host agent reports its self-fencing (docs/fencing.md): armed, 1000 ms. */
    if (strcmp(role, "host") == 0)
        json_object_set_new(a->hello, "self_fence",
                            json_pack("{s:i, s:s}", "timeout_ms", 1000, "watchdog", "armed"));
    a->beat = event_new(base, -1, EV_PERSIST, agent_beat, a);
    struct timeval every = {0, 100000};
    event_add(a->beat, &every);
    cleanup_error vcr_error_t err = NULL;
    a->conn = proto_conn_connect(base, addr, NULL, NULL, &agent_ops, a, &err);
    assert_non_null(a->conn);
}

static void agent_stop(struct fake_agent *a)
{
    if (a->beat)
        event_free(a->beat);
    a->beat = NULL;
    proto_conn_free(a->conn);
    a->conn = NULL;
    json_decref(a->received);
    json_decref(a->hello);
}

static json_t *agent_order(struct fake_agent *a, const char *action)
{
    size_t i;
    json_t *m;
    json_array_foreach(a->received, i, m)
    {
        const char *act = json_string_value(json_object_get(m, "action"));
        if (strcmp(proto_msg_type(m), "order") == 0 && act && strcmp(act, action) == 0)
            return m;
    }
    return NULL;
}

static size_t agent_order_count(struct fake_agent *a, const char *action)
{
    size_t i, n = 0;
    json_t *m;
    json_array_foreach(a->received, i, m)
    {
        const char *act = json_string_value(json_object_get(m, "action"));
        if (strcmp(proto_msg_type(m), "order") == 0 && act && strcmp(act, action) == 0)
            n++;
    }
    return n;
}

/* The standby's containers: web1-c in state `state`, or none for NULL. */
static json_t *containers(const char *state)
{
    json_t *list = json_array();
    if (state)
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:n, s:n}", "name", "web1-c",
                                              "service", "web1", "state", state, "address",
                                              CONTAINER, "cpu_pct", "mem_kb"));
    return list;
}

/* A standby agent's sample listing its containers (stolen). */
static void agent_sample(struct fake_agent *a, json_t *list)
{
    agent_send(a,
               proto_msg_new("sample", json_pack("{s:I, s:[], s:o, s:{s:n, s:i, s:i, s:i}}",
                                                 "ts_ms", (json_int_t)vcr_wall_ms(), "vms",
                                                 "containers", list, "vm_load", "cpu_pct", "ncpus",
                                                 2, "mem_total_kb", 393216, "mem_used_kb", 65536)));
}

static bool agent_welcomed(struct fake_agent *a)
{
    size_t i;
    json_t *m;
    json_array_foreach(a->received, i, m)
    {
        if (strcmp(proto_msg_type(m), "welcome") == 0)
            return true;
    }
    return false;
}

/* --- the harness --- */

struct harness {
    struct event_base *base;
    struct server_config *cfg;
    struct server *srv;
    struct fake_dns dns;
    bool dns_ipv6; /* the DNS server on [::1] (dns_start_on) */
    struct fake_service container;
    struct fake_service container6; /* the container's IPv6 side, on ::1 (dual-stack tests) */
    struct fake_service primary;
    uint16_t port;
    struct fake_agent node1, sb1, sb2; /* sb2: only in the migration tests */
    const char *check;         /* the service's check: {...}; NULL: an http check every 100 ms */
    const char *standby_extra; /* more members of its standby mapping (", key: value") */
    const char *service_extra; /* more lines of the service ("    key: value\n") */
    const char *primary_extra; /* more members of its primary mapping (", key: value") */
    /* What sb1 reports and does from its hello on: its containers (stolen by
     * agents_up; NULL: web1-c running for a warm service, none for a cold one,
     * as after a provisioning or before a recovery), refused orders, held orders. */
    const char *mode;
    json_t *sb1_containers;
    const char *sb1_refuse;
    const char *sb1_refuse_create_code;
    bool sb1_hold;
    /* node1 from its hello on: its `self_fence` (stolen; NULL: armed), heartbeats. */
    json_t *node1_self_fence;
    bool node1_heartbeat;
    bool sb1_heartbeat;
};

typedef bool (*condition_fn)(struct harness *h);

static bool run_until_ms(struct harness *h, condition_fn cond, int64_t ms)
{
    int64_t deadline = vcr_mono_ms() + ms;
    while (!cond(h) && vcr_mono_ms() < deadline) {
        struct timeval tick = {0, 5000};
        event_base_loopexit(h->base, &tick);
        event_base_dispatch(h->base);
    }
    return cond(h);
}

/* Everything of a harness but the server and the agents: the DNS server, the
 * container's service and, with primary, the primary's. */
static void harness_open(struct harness *h, bool primary)
{
    memset(h, 0, sizeof(*h));
    make_dir();
    h->base = event_base_new();
    dns_start(&h->dns, h->base);
    service_start(&h->container, h->base, CONTAINER, &h->port);
    if (primary) {
        uint16_t p = h->port;
        service_start(&h->primary, h->base, PRIMARY, &p);
    }
}

static void server_up(struct harness *h, const char *mode, const char *extra)
{
    cleanup_free char *yaml = NULL;
    /* The harness's agents send no heartbeats unless a test asks: the tests
     * that do not set the heartbeat count on a host timeout of 3500 ms. */
    const char *heartbeat = strstr(extra, "heartbeat_ms") ? "" : "heartbeat_ms: 1000\n";
    assert_true(asprintf(&yaml,
                         "journal: %s/journal.db\n%s%s"
                         "dns: {server: '%s:%u', zone: vcr.lab, key_file: %s/tsig.key}\n"
                         "services:\n"
                         "  - name: web1\n"
                         "    dns_name: web1.vcr.lab\n"
                         "    primary: {host: node1, vm: web1, address: " PRIMARY ", port: %u%s}\n"
                         "    check: %s\n"
                         "    standby: {mode: %s, host: sb1, container: web1-c, address: " CONTAINER
                         ", template: busybox%s}\n%s",
                         dir, heartbeat, extra, h->dns_ipv6 ? "[::1]" : "127.0.0.1",
                         h->dns.sock.port, dir, h->port, h->primary_extra ? h->primary_extra : "",
                         h->check ? h->check : "{type: http, interval_ms: 100, timeout_ms: 100}",
                         mode, h->standby_extra ? h->standby_extra : "",
                         h->service_extra ? h->service_extra : "") > 0);
    h->mode = mode;
    cleanup_error vcr_error_t err = NULL;
    h->cfg = server_config_parse(yaml, strlen(yaml), "test.yaml", &err);
    if (h->cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    h->cfg->listen_port = 0;
    h->cfg->api_port = 0;
    h->srv = server_new(h->base, h->cfg, &err);
    if (h->srv == NULL)
        fail_msg("%s", vcr_error_msg(err));
}

static void server_down(struct harness *h)
{
    agent_stop(&h->node1);
    agent_stop(&h->sb1);
    agent_stop(&h->sb2);
    server_free(h->srv);
    server_config_free(h->cfg);
    h->srv = NULL;
}

static bool both_welcomed(struct harness *h)
{
    return agent_welcomed(&h->node1) && agent_welcomed(&h->sb1);
}

static void agents_up(struct harness *h, const char *vm_state)
{
    agent_start(&h->node1, h->base, server_agent_port(h->srv), "node1", "host", vm_state);
    if (h->node1_self_fence)
        json_object_set_new(h->node1.hello, "self_fence", steal_pointer(&h->node1_self_fence));
    h->node1.heartbeat = h->node1_heartbeat;
    agent_start(&h->sb1, h->base, server_agent_port(h->srv), "sb1", "standby", NULL);
    /* The standby keeps talking: a warm recovery counts on it only while it is connected. */
    h->sb1.heartbeat = h->sb1_heartbeat;
    json_t *list = h->sb1_containers ? h->sb1_containers
                                     : containers(strcmp(h->mode, "warm") == 0 ? "running" : NULL);
    h->sb1_containers = NULL;
    json_object_set_new(h->sb1.hello, "containers", list);
    h->sb1.refuse = h->sb1_refuse;
    if (h->sb1_refuse_create_code) {
        h->sb1.refuse_action = "container_create";
        h->sb1.refuse_code = h->sb1_refuse_create_code;
        h->sb1.refuse_times = 1000;
    }
    h->sb1.hold_orders = h->sb1_hold;
    assert_true(run_until_ms(h, both_welcomed, 5000));
}

/* The standby agent's side of a harness: what it reports and how it answers. */
struct standby_opts {
    json_t *containers; /* stolen; NULL: the default (see struct harness) */
    const char *refuse;
    const char *refuse_create_code; /* every container_create refused with this code */
    bool hold;
};

static void harness_start_with(struct harness *h, const char *mode, const char *extra,
                               struct standby_opts sb)
{
    harness_open(h, true);
    h->sb1_containers = sb.containers;
    h->sb1_refuse = sb.refuse;
    h->sb1_refuse_create_code = sb.refuse_create_code;
    h->sb1_hold = sb.hold;
    server_up(h, mode, extra);
    agents_up(h, "running");
}

static void harness_start(struct harness *h, const char *mode, const char *extra)
{
    harness_start_with(h, mode, extra, (struct standby_opts){0});
}

static void harness_stop(struct harness *h)
{
    server_down(h);
    service_stop(&h->container);
    service_stop(&h->container6);
    service_stop(&h->primary);
    dns_stop(&h->dns);
    event_base_free(h->base);
    remove_dir();
}

static json_t *service_json(struct harness *h)
{
    json_t *all = recovery_services_json(server_recovery(h->srv));
    json_t *s = json_incref(json_array_get(json_object_get(all, "services"), 0));
    json_decref(all);
    return s;
}

static bool state_is(struct harness *h, const char *state)
{
    cleanup_json json_t *s = service_json(h);
    return strcmp(json_string_value(json_object_get(s, "state")), state) == 0;
}

static bool recovered(struct harness *h)
{
    return state_is(h, "recovered");
}

static bool failed(struct harness *h)
{
    return state_is(h, "failed");
}

/* The journal's `kind` events for web1, as "phase,phase,..." (recovery) or count. */
static void journal_phases(struct harness *h, char *out, size_t size, unsigned *fenced)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    out[0] = '\0';
    *fenced = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *kind = json_string_value(json_object_get(e, "kind"));
        json_t *d = json_object_get(e, "detail");
        if (strcmp(kind, "fenced") == 0)
            (*fenced)++;
        if (strcmp(kind, "recovery") != 0)
            continue;
        snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "",
                 json_string_value(json_object_get(d, "phase")));
    }
}

static void vm_crashed(struct harness *h)
{
    agent_send(
        &h->node1,
        proto_msg_new("vm_event", json_pack("{s:s, s:s, s:s, s:I, s:i}", "vm", "web1", "state",
                                            "crashed", "cause", "qemu killed by signal 9", "ts_ms",
                                            (json_int_t)vcr_wall_ms(), "pid", 100)));
}

static void expect_full_recovery(struct harness *h)
{
    char phases[512];
    unsigned fenced;
    journal_phases(h, phases, sizeof(phases), &fenced);
    assert_string_equal(phases,
                        "detected,fenced,container_ready,port_open,dns_updated,client_confirmed");
    assert_int_equal(fenced, 1);
    assert_string_equal(h->dns.address, CONTAINER);
    cleanup_json json_t *s = service_json(h);
    assert_string_equal(json_string_value(json_object_get(s, "served_by")), "standby");
    assert_string_equal(json_string_value(json_object_get(s, "address")), CONTAINER);
    json_t *timeline = json_object_get(json_object_get(s, "recovery"), "timeline");
    assert_int_equal(json_array_size(timeline), 6);
    json_t *last = json_array_get(timeline, 5);
    assert_string_equal(json_string_value(json_object_get(last, "answer")), "web1");
}

/* GET /v1/services and GET /metrics show how long the last probe took. */
static bool probe_latency_known(struct harness *h)
{
    cleanup_json json_t *s = service_json(h);
    json_t *latency = json_object_get(json_object_get(s, "check"), "latency_ms");
    return json_is_number(latency) && json_number_value(latency) > 0;
}

static void test_vm_crash_warm(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "warm", "");
    assert_true(state_is(&h, "ok"));
    assert_true(run_until_ms(&h, probe_latency_known, 5000));
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    /* Fenced by order: the host agent saw vm_kill for web1. */
    json_t *kill = agent_order(&h.node1, "vm_kill");
    assert_non_null(kill);
    assert_string_equal(json_string_value(json_object_get(kill, "vm")), "web1");
    assert_null(agent_order(&h.sb1, "container_create"));
    expect_full_recovery(&h);
    /* GET /metrics shows the service, its recovery and its phases. */
    struct scrape m;
    scrape_get(h.base, server_api_port(h.srv), "/metrics", &m);
    assert_int_equal(m.code, 200);
    static const char *const shown[] = {
        "vcr_service_state{service=\"web1\",state=\"recovered\"} 1\n",
        "vcr_service_state{service=\"web1\",state=\"ok\"} 0\n",
        "vcr_service_served_by{service=\"web1\",where=\"standby\"} 1\n",
        "vcr_service_served_by{service=\"web1\",where=\"primary\"} 0\n",
        "vcr_probe_latency_seconds{service=\"web1\"} ",
        "vcr_recoveries_total{service=\"web1\",mode=\"warm\",result=\"recovered\"} 1\n",
        "vcr_recovery_phase_seconds_count{phase=\"fenced\"} 1\n",
        "vcr_recovery_phase_seconds_count{phase=\"data_copied\"} 0\n",
        "vcr_recovery_phase_seconds_count{phase=\"client_confirmed\"} 1\n",
        "vcr_dns_update_seconds_count 1\n",
        "vcr_host_connected{host=\"node1\"} 1\n",
    };
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
        if (m.text == NULL || strstr(m.text, shown[i]) == NULL)
            fail_msg("GET /metrics lacks `%s`", shown[i]);
    free(m.text);
    harness_stop(&h);
}

static json_t *timeline_phase(json_t *svc, const char *phase);
static void keep_agents_alive(struct harness *h);
static const char *recovery_error(struct harness *h);

/* A dual-stack harness: the container's IPv6 address is ::1 (with_listener: a
 * service answers there on the port), the primary's fd77::11, the name's AAAA
 * record the primary's; dns_ipv6: the zone's server is reached at [::1]. */
static void dual_stack_up(struct harness *h, const char *extra, bool with_listener, bool dns_ipv6)
{
    harness_open(h, true);
    h->dns_ipv6 = dns_ipv6;
    if (dns_ipv6) {
        dns_stop(&h->dns);
        dns_start_on(&h->dns, h->base, true);
    }
    if (with_listener) {
        uint16_t p = h->port;
        service_start(&h->container6, h->base, "::1", &p);
    }
    snprintf(h->dns.address6, sizeof(h->dns.address6), "fd77::11");
    h->primary_extra = ", address6: 'fd77::11'";
    h->standby_extra = ", address6: '::1'";
    server_up(h, "warm", extra);
    agents_up(h, "running");
    keep_agents_alive(h);
}

/* A dual-stack service: the switch moves the AAAA record with the A record (one
 * UPDATE, the fake server applies both); the container's port is checked and
 * the name confirmed in both families (A, then AAAA and the service at it). */
static void test_dual_stack_switch_moves_a_and_aaaa(void **state)
{
    (void)state;
    struct harness h;
    dual_stack_up(&h, "", true, false);
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_string_equal(h.dns.address, CONTAINER);
    assert_string_equal(h.dns.address6, "::1");
    assert_int_equal(h.dns.updates, 1);
    cleanup_json json_t *s = service_json(&h);
    json_t *dns = timeline_phase(s, "dns_updated");
    assert_non_null(dns);
    assert_string_equal(json_string_value(json_object_get(dns, "address6")), "::1");
    json_t *port = timeline_phase(s, "port_open");
    assert_string_equal(json_string_value(json_object_get(port, "address6")), "::1");
    json_t *confirmed = timeline_phase(s, "client_confirmed");
    assert_string_equal(json_string_value(json_object_get(confirmed, "address")), CONTAINER);
    assert_string_equal(json_string_value(json_object_get(confirmed, "answer")), "web1");
    assert_string_equal(json_string_value(json_object_get(confirmed, "address6")), "::1");
    assert_string_equal(json_string_value(json_object_get(confirmed, "answer6")), "web1");
    /* The port step and the confirmation each reached the IPv6 side. */
    assert_true(h.container6.accepted >= 2);
    harness_stop(&h);
}

/* The zone's primary reached over IPv6 (dns.server [::1]:PORT): the UPDATE and
 * the confirmation's queries go there.  Before, the confirmation refused an
 * IPv6 server (`resolve: ... is not an IPv4 address`) after the switch was done. */
static void test_dual_stack_with_an_ipv6_dns_server(void **state)
{
    (void)state;
    struct harness h;
    dual_stack_up(&h, "", true, true);
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_string_equal(h.dns.address, CONTAINER);
    assert_string_equal(h.dns.address6, "::1");
    cleanup_json json_t *s = service_json(&h);
    json_t *confirmed = timeline_phase(s, "client_confirmed");
    assert_non_null(confirmed);
    assert_string_equal(json_string_value(json_object_get(confirmed, "answer6")), "web1");
    harness_stop(&h);
}

/* A dual-stack container that does not serve IPv6 fails the port step, naming
 * the IPv6 address: its IPv4 port alone does not make it ready. */
static void test_dual_stack_port_needs_the_ipv6_side(void **state)
{
    (void)state;
    struct harness h;
    dual_stack_up(&h, "port_timeout_ms: 1000\n", false, false);
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    const char *e = recovery_error(&h);
    char want[64];
    snprintf(want, sizeof(want), "port [::1]:%u of container web1-c not open within 1000 ms",
             h.port);
    assert_contains(e, want);
    assert_int_equal(h.dns.updates, 0); /* nothing switched */
    harness_stop(&h);
}

/* The client confirmation asks AAAA too: a zone whose AAAA record still names
 * the primary (the A record moved) is not confirmed. */
static void test_dual_stack_confirmation_needs_the_aaaa_record(void **state)
{
    (void)state;
    struct harness h;
    dual_stack_up(&h, "confirm_timeout_ms: 1000\n", true, false);
    h.dns.keep_aaaa = true;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    assert_string_equal(h.dns.address, CONTAINER);
    assert_contains(recovery_error(&h), "web1.vcr.lab resolves to fd77::11, not ::1 yet");
    harness_stop(&h);
}

static void test_vm_crash_cold_creates_container(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    json_t *create = agent_order(&h.sb1, "container_create");
    assert_non_null(create);
    assert_string_equal(json_string_value(json_object_get(create, "name")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(create, "address")), CONTAINER);
    assert_string_equal(json_string_value(json_object_get(create, "service")), "web1");
    assert_string_equal(json_string_value(json_object_get(create, "template")), "busybox");
    /* No `privileged` in the config: the order says unprivileged, explicitly. */
    assert_true(json_is_false(json_object_get(create, "privileged")));
    expect_full_recovery(&h);
    harness_stop(&h);
}

static bool fenced_or_failed(struct harness *h)
{
    char phases[512];
    unsigned fenced;
    journal_phases(h, phases, sizeof(phases), &fenced);
    return fenced > 0 || state_is(h, "failed");
}

static bool sb1_create_sent(struct harness *h)
{
    return agent_order(&h->sb1, "container_create") != NULL;
}

/* The standby's agent between sessions when the recovery reaches its
 * container (its connection closed, the host not declared lost yet: after a
 * takeover every host is listed as the previous term left it): the order waits
 * for its hello, up to host_timeout_ms, instead of failing at once ("host `sb1`
 * has no agent connection"). */
static void test_cold_container_waits_for_the_standby_session(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    agent_stop(&h.sb1);
    vm_crashed(&h);
    assert_true(run_until_ms(&h, fenced_or_failed, 5000));
    assert_false(run_until_ms(&h, failed, 500)); /* the container step tries meanwhile */
    agent_start(&h.sb1, h.base, server_agent_port(h.srv), "sb1", "standby", NULL);
    json_object_set_new(h.sb1.hello, "containers", containers(NULL));
    assert_true(run_until_ms(&h, sb1_create_sent, 5000));
    assert_true(run_until_ms(&h, recovered, 10000));
    expect_full_recovery(&h);
    harness_stop(&h);
}

/* Six heartbeats to a host loss: the fake agents heartbeat from the test's own
 * loop, which a loaded machine can hold up 300 ms (seen at load 5). */
#define FAST_FENCE "heartbeat_ms: 100\nhost_timeout_ms: 600\nfence_timeout_ms: 1200\n"

static void test_host_lost_waits_fence_timeout(void **state)
{
    (void)state;
    struct harness h;
    /* node1 sends no heartbeats: it is lost 600 ms after hello; sb1 keeps talking. */
    harness_open(&h, true);
    server_up(&h, "warm", FAST_FENCE);
    agent_start(&h.node1, h.base, server_agent_port(h.srv), "node1", "host", "running");
    agent_start(&h.sb1, h.base, server_agent_port(h.srv), "sb1", "standby", NULL);
    json_object_set_new(h.sb1.hello, "containers", containers("running"));
    h.sb1.heartbeat = true;
    assert_true(run_until_ms(&h, both_welcomed, 5000));
    int64_t t0 = vcr_mono_ms();
    assert_true(run_until_ms(&h, fenced_or_failed, 5000));
    int64_t fenced_at = vcr_mono_ms();
    assert_true(fenced_at - t0 >= 1200);
    /* Nothing switched before the fence timeout. */
    assert_true(h.dns.updates == 0 || h.dns.first_update_mono - t0 >= 1200);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_true(h.dns.first_update_mono - t0 >= 1200);
    cleanup_json json_t *events = journal_read(server_journal(h.srv), 0, 1000, NULL);
    size_t i;
    json_t *e;
    bool saw = false;
    json_array_foreach(events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), "fenced") == 0) {
            json_t *d = json_object_get(e, "detail");
            assert_contains(json_string_value(json_object_get(d, "how")), "self-fence");
            assert_true(json_integer_value(json_object_get(d, "waited_ms")) >= 1200);
            saw = true;
        }
    }
    assert_true(saw);
    harness_stop(&h);
}

/* The last journal event of `kind`, or NULL (a new reference). */
static json_t *journal_last(struct harness *h, const char *kind)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    json_t *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), kind) == 0)
            found = e;
    }
    return json_incref(found);
}

static size_t journal_count(struct harness *h, const char *kind)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        n += strcmp(json_string_value(json_object_get(e, "kind")), kind) == 0;
    }
    return n;
}

static bool node1_closed(struct harness *h)
{
    return h->node1.closed;
}

static bool dns_switched(struct harness *h)
{
    return h->dns.updates > 0;
}

/* Fast self-fence timings for the tests below: fence_after_ms 1125 (welcome). */
/* A connected agent that does not answer vm_kill in time keeps feeding its
 * watchdog as long as its session lives: the server closes it, refuses the
 * host's new sessions (a welcome would feed the watchdog again), and switches
 * only once the watchdog must have fired, at least fence_after_ms later. */
static void test_unanswered_kill_cuts_the_host_off_then_waits(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.node1_heartbeat = true;
    h.sb1_heartbeat = true;
    server_up(&h, "warm", FAST_FENCE);
    agents_up(&h, "running");
    h.node1.hold_orders = true; /* vm_kill never answered */
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failover(server_recovery(h.srv), "web1", &err);
    assert_non_null(ans);
    int64_t t0 = vcr_mono_ms();
    assert_true(run_until_ms(&h, node1_closed, RECOVERY_KILL_ORDER_MS + 2000));
    int64_t dropped = vcr_mono_ms();
    assert_true(dropped - t0 >= RECOVERY_KILL_ORDER_MS - 100);
    assert_non_null(h.node1.held); /* dropped with its kill unanswered */
    json_decref(h.node1.held);
    h.node1.held = NULL;
    assert_false(dns_switched(&h));
    cleanup_json json_t *lost = journal_last(&h, "host_lost");
    assert_non_null(lost);
    assert_contains(json_string_value(json_object_get(json_object_get(lost, "detail"), "reason")),
                    "counts on its self-fence");
    /* The agent calls in again at once: refused, never welcomed. */
    agent_stop(&h.node1);
    agent_start(&h.node1, h.base, server_agent_port(h.srv), "node1", "host", "running");
    assert_true(run_until_ms(&h, node1_closed, 2000));
    assert_false(agent_welcomed(&h.node1));
    assert_true(run_until_ms(&h, recovered, 10000));
    int64_t fence_after = agents_fence_after_ms(300, 1200);
    print_message("dropped %lld ms after the kill order; switched %lld ms after the drop "
                  "(fence_after_ms %lld)\n",
                  (long long)(dropped - t0), (long long)(h.dns.first_update_mono - dropped),
                  (long long)fence_after);
    assert_true(h.dns.first_update_mono - dropped >= fence_after);
    cleanup_json json_t *fenced = journal_last(&h, "fenced");
    assert_contains(json_string_value(json_object_get(json_object_get(fenced, "detail"), "how")),
                    "self-fence");
    harness_stop(&h);
}

/* An agent whose hello says self-fencing is off: its host lost, nothing kills
 * the VM, so nothing is switched; the recovery stays at fencing and says why
 * until the agent is back and confirms a kill. */
static void test_self_fence_off_no_switch_without_confirmed_kill(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.node1_self_fence = json_pack("{s:i, s:s}", "timeout_ms", 0, "watchdog", "off");
    h.sb1_heartbeat = true;
    server_up(&h, "warm", FAST_FENCE);
    agents_up(&h, "running");
    /* No heartbeats: lost 600 ms after hello; well past host timeout + fence timeout,
     * and past the refusal's retry (RECOVERY_KILL_ORDER_MS), which finds the same: */
    assert_false(run_until_ms(&h, dns_switched, RECOVERY_KILL_ORDER_MS + 600));
    cleanup_json json_t *status =
        inventory_status_json(server_inventory(h.srv), vcr_mono_ms(), vcr_wall_ms());
    json_t *node1 = json_array_get(json_object_get(status, "hosts"), 0);
    assert_string_equal(json_string_value(json_object_get(node1, "name")), "node1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(node1, "self_fence"), "watchdog")),
        "off");
    cleanup_json json_t *s = service_json(&h);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "recovering");
    json_t *rec = json_object_get(s, "recovery");
    assert_string_equal(json_string_value(json_object_get(rec, "phase")), "detected");
    assert_contains(json_string_value(json_object_get(rec, "error")), "not switched");
    assert_contains(json_string_value(json_object_get(rec, "error")), "self-fencing is off");
    assert_null(journal_last(&h, "fenced"));
    cleanup_json json_t *wait = journal_last(&h, "fence_wait");
    assert_non_null(wait);
    assert_false(json_is_true(json_object_get(json_object_get(wait, "detail"), "counted")));
    assert_int_equal(journal_count(&h, "fence_wait"), 1); /* said once, not per retry */
    /* The agent is back, heartbeating: vm_kill again, answered, then the switch. */
    agent_stop(&h.node1);
    agent_start(&h.node1, h.base, server_agent_port(h.srv), "node1", "host", "running");
    json_object_set_new(h.node1.hello, "self_fence",
                        json_pack("{s:i, s:s}", "timeout_ms", 0, "watchdog", "off"));
    h.node1.heartbeat = true;
    assert_true(run_until_ms(&h, recovered, 15000));
    assert_non_null(agent_order(&h.node1, "vm_kill"));
    cleanup_json json_t *fenced = journal_last(&h, "fenced");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(fenced, "detail"), "how")), "vm_kill");
    harness_stop(&h);
}

/* A pause of the watchdog (`vcr-agent --fence-watchdog DIR --pause MS`), told
 * after the hello by a `self_fence` message: the same refusal. */
static void test_paused_watchdog_is_not_counted_on(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.node1_heartbeat = true;
    h.sb1_heartbeat = true;
    server_up(&h, "warm", FAST_FENCE);
    agents_up(&h, "running");
    agent_send(&h.node1,
               proto_msg_new("self_fence", json_pack("{s:i, s:s, s:i}", "timeout_ms", 1000,
                                                     "watchdog", "paused", "pause_ms", 600000)));
    h.node1.heartbeat = false; /* then silent: lost */
    assert_false(run_until_ms(&h, dns_switched, 3000));
    cleanup_json json_t *s = service_json(&h);
    assert_string_equal(json_string_value(json_object_get(s, "state")), "recovering");
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "error")),
                    "fence watchdog is paused");
    struct inv_host *node1 = inventory_find_host(server_inventory(h.srv), "node1");
    assert_int_equal(node1->self_fence.watchdog, INV_WATCHDOG_PAUSED);
    assert_int_equal(node1->self_fence.pause_ms, 600000);
    cleanup_json json_t *told = journal_last(&h, "self_fence");
    assert_non_null(told);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(told, "detail"), "watchdog")), "paused");
    assert_null(journal_last(&h, "fenced"));
    harness_stop(&h);
}

static void test_dns_silent_fails_then_retry_succeeds(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "warm", "");
    h.dns.silent = true;
    vm_crashed(&h);
    /* Default retry policy: four datagrams, failure 3 s after the start. */
    assert_true(run_until_ms(&h, failed, 10000));
    cleanup_json json_t *s = service_json(&h);
    json_t *rec = json_object_get(s, "recovery");
    assert_string_equal(json_string_value(json_object_get(rec, "phase")), "port_open");
    assert_contains(json_string_value(json_object_get(rec, "error")), "no answer from");
    char phases[512];
    unsigned fenced;
    journal_phases(&h, phases, sizeof(phases), &fenced);
    assert_string_equal(phases, "detected,fenced,container_ready,port_open,failed");

    h.dns.silent = false;
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failover(server_recovery(h.srv), "web1", &err);
    assert_non_null(ans);
    assert_true(run_until_ms(&h, recovered, 10000));
    journal_phases(&h, phases, sizeof(phases), &fenced);
    /* Resumed after port_open: nothing before it done twice. */
    assert_string_equal(phases, "detected,fenced,container_ready,port_open,failed,retry,"
                                "dns_updated,client_confirmed");
    assert_int_equal(fenced, 1);

    /* A second failover while recovered is refused; unknown services are 404s. */
    assert_null(recovery_failover(server_recovery(h.srv), "web1", &err));
    assert_int_equal(vcr_error_status(err), EBUSY);
    vcr_error_release(&err);
    assert_null(recovery_failover(server_recovery(h.srv), "nope", &err));
    assert_int_equal(vcr_error_status(err), ENOENT);
    harness_stop(&h);
}

static bool port_open_journaled(struct harness *h)
{
    char phases[512];
    unsigned fenced;
    journal_phases(h, phases, sizeof(phases), &fenced);
    return strstr(phases, "port_open") != NULL;
}

static void test_restart_mid_recovery_resumes(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    h.dns.silent = true; /* the recovery stalls in its DNS step */
    vm_crashed(&h);
    assert_true(run_until_ms(&h, port_open_journaled, 10000));
    assert_non_null(agent_order(&h.node1, "vm_kill"));
    assert_non_null(agent_order(&h.sb1, "container_create"));
    /* The server dies mid-recovery; a new one starts on the same journal. */
    server_down(&h);
    h.dns.silent = false;
    server_up(&h, "cold", "");
    assert_true(state_is(&h, "recovering"));
    agents_up(&h, "crashed");
    assert_true(run_until_ms(&h, recovered, 10000));
    /* Nothing done twice: no second kill, no second container. */
    assert_null(agent_order(&h.node1, "vm_kill"));
    assert_null(agent_order(&h.sb1, "container_create"));
    char phases[512];
    unsigned fenced;
    journal_phases(&h, phases, sizeof(phases), &fenced);
    assert_string_equal(phases,
                        "detected,fenced,container_ready,port_open,dns_updated,client_confirmed");
    assert_int_equal(fenced, 1);
    assert_string_equal(h.dns.address, CONTAINER);
    harness_stop(&h);
}

static bool back_to_ok(struct harness *h)
{
    return state_is(h, "ok");
}

static bool never(struct harness *h)
{
    (void)h;
    return false;
}

/* The primary died while the server was down: its vm_event was lost, the agent's
 * hello to the restarted server lists it crashed. */
static void test_primary_found_crashed_in_hello(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, false);
    server_up(&h, "cold", "");
    agents_up(&h, "crashed");
    assert_true(run_until_ms(&h, recovered, 10000));
    cleanup_json json_t *s = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "cause")),
                    "crashed (reported by its agent's hello");
    harness_stop(&h);
}

static bool sb1_lost(struct harness *h)
{
    struct inv_host *host = inventory_find_host(server_inventory(h->srv), "sb1");
    return host && host->state == INV_HOST_LOST;
}

/* A standby agent works on container orders in a child process and keeps talking
 * meanwhile (docs/agent.md): one that falls silent with our order pending is lost
 * at host_timeout_ms like any other, not kept alive by the order. */
static void test_standby_silent_with_an_order_is_lost(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    h.sb1.hold_orders = true;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, sb1_lost, 4500)); /* host_timeout_ms 3500, no heartbeats */
    assert_non_null(h.sb1.held);                   /* lost with the order still unanswered */
    json_decref(h.sb1.held);
    h.sb1.held = NULL;
    harness_stop(&h);
}

static void test_service_probe_failure_then_failback(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    /* It answers (a failure only counts after a first answer), then dies while its VM
     * runs: three failed probes. */
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    cleanup_json json_t *s = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "cause")),
                    "3 consecutive http probe failures");
    assert_non_null(agent_order(&h.node1, "vm_kill"));

    /* Failback needs the primary back and running. */
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_string_equal(h.dns.address, PRIMARY);
    assert_non_null(agent_order(&h.sb1, "container_stop"));
    assert_non_null(agent_order(&h.sb1, "container_destroy"));
    harness_stop(&h);
}

/* A primary whose VM runs but whose guest still boots does not answer yet: that
 * is not a failed service (the lab's TCG guests take 10-60 s to serve). */
static void test_probe_waits_for_the_first_answer(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, false);
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    assert_false(run_until_ms(&h, never, 1500)); /* 15 probes at 100 ms, all failing */
    assert_true(state_is(&h, "ok"));
    assert_null(agent_order(&h.node1, "vm_kill"));
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_false(run_until_ms(&h, never, 500));
    /* Once it has answered, failures count. */
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_non_null(agent_order(&h.node1, "vm_kill"));
    harness_stop(&h);
}

/* A primary hung from its very start (never answers) is booting only for
 * check.boot_grace_ms after its first probe; then its failures count. */
static void test_primary_hung_from_start_is_detected_after_boot_grace(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, false);
    h.check = "{type: http, interval_ms: 100, timeout_ms: 100, boot_grace_ms: 1000}";
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    int64_t t0 = vcr_mono_ms();
    assert_false(run_until_ms(&h, never, 700)); /* inside the grace: booting */
    assert_true(state_is(&h, "ok"));
    assert_true(run_until_ms(&h, recovered, 10000));
    /* Not before the grace and three counted failures. */
    assert_true(vcr_mono_ms() - t0 >= 1000 + 2 * 100);
    cleanup_json json_t *s = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "cause")),
                    "3 consecutive http probe failures");
    assert_non_null(agent_order(&h.node1, "vm_kill"));
    harness_stop(&h);
}

/* --- the defects of the fault campaign (docs/recovery.md) --- */

static void vm_event(struct harness *h, const char *state, int pid, int boots)
{
    json_t *body = json_pack("{s:s, s:s, s:s, s:I}", "vm", "web1", "state", state, "cause", "test",
                             "ts_ms", (json_int_t)vcr_wall_ms());
    if (pid)
        json_object_set_new(body, "pid", json_integer(pid));
    if (boots)
        json_object_set_new(body, "boots", json_integer(boots));
    agent_send(&h->node1, proto_msg_new("vm_event", body));
}

/* Both agents keep talking, as real ones do: tests longer than host_timeout_ms. */
static void keep_agents_alive(struct harness *h)
{
    h->node1.heartbeat = true;
    h->sb1.heartbeat = true;
}

static bool kill_sent(struct harness *h)
{
    return agent_order(&h->node1, "vm_kill") != NULL;
}

static bool is_stopped(struct harness *h)
{
    return state_is(h, "stopped");
}

static const char *recovery_error(struct harness *h)
{
    static char out[512];
    cleanup_json json_t *s = service_json(h);
    const char *e = json_string_value(json_object_get(json_object_get(s, "recovery"), "error"));
    snprintf(out, sizeof(out), "%s", e ? e : "");
    return out;
}

/* Every start of the primary opens its boot grace: a `vcr vm start` after a
 * stop (new pid), and a reboot inside the same QEMU (a new `boots`).  Before,
 * a primary that had answered once was killed while it booted again. */
static void test_primary_restart_opens_the_boot_grace(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300)); /* it answers: failures would count */
    service_stop(&h.primary);
    vm_event(&h, "stopped", 0, 0);
    assert_true(run_until_ms(&h, is_stopped, 2000));
    vm_event(&h, "running", 101, 1);
    /* 15 probes at 100 ms, all refused: a booting guest. */
    assert_false(run_until_ms(&h, kill_sent, 1500));
    assert_true(state_is(&h, "ok"));
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_false(run_until_ms(&h, never, 400));
    /* A reboot in the same QEMU: same pid, one boot more. */
    service_stop(&h.primary);
    vm_event(&h, "running", 101, 2);
    assert_false(run_until_ms(&h, kill_sent, 1500));
    assert_true(state_is(&h, "ok"));
    /* Once it has answered again, failures count as before. */
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_false(run_until_ms(&h, never, 400));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    harness_stop(&h);
}

/* A primary stopped on purpose is `stopped` (maintenance): no probe, no
 * failover; it is `ok` again once it runs. */
static void test_stopped_primary_reads_stopped(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    vm_event(&h, "stopped", 0, 0);
    assert_true(run_until_ms(&h, is_stopped, 2000));
    assert_false(run_until_ms(&h, kill_sent, 1000));
    assert_true(state_is(&h, "stopped"));
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    vm_event(&h, "running", 102, 1);
    assert_true(run_until_ms(&h, back_to_ok, 2000));
    harness_stop(&h);
}

/* With no descriptor left, a probe says nothing about the service: it must
 * not count (a healthy primary was killed that way). */
static void test_probe_without_descriptors_is_inconclusive(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300));
    struct rlimit saved, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    low = saved;
    low.rlim_cur = 1024;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fds[1024];
    size_t n = 0;
    while (n < sizeof(fds) / sizeof(fds[0])) {
        int fd = dup(0);
        if (fd < 0)
            break;
        fds[n++] = fd;
    }
    assert_int_equal(errno, EMFILE);
    bool killed = run_until_ms(&h, kill_sent, 1500); /* 15 probes, none can open a socket */
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    setrlimit(RLIMIT_NOFILE, &saved);
    assert_false(killed);
    /* A probe connected just before the exhaustion may time out once (the fake
     * primary, in this process, cannot accept either): degraded at worst. */
    assert_true(state_is(&h, "ok") || state_is(&h, "degraded"));
    harness_stop(&h);
}

/* The agent port holds at most agent_connections_max connections; the rest
 * are closed at accept, and the server keeps working. */
static void test_agent_connections_are_capped(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "agent_connections_max: 16\n");
    keep_agents_alive(&h);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(server_agent_port(h.srv))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fds[40];
    for (size_t i = 0; i < 40; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fds[i] >= 0);
        connect(fds[i], (struct sockaddr *)&sin, sizeof(sin));
    }
    assert_false(run_until_ms(&h, never, 500));
    size_t closed = 0;
    for (size_t i = 0; i < 40; i++) {
        char b;
        ssize_t r = recv(fds[i], &b, 1, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            closed++;
        close(fds[i]);
    }
    /* node1 and sb1 hold 2 of the 16. */
    assert_int_equal(closed, 40 - 14);
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    harness_stop(&h);
}

static bool not_failed(struct harness *h)
{
    return !state_is(h, "failed");
}

/* A failed recovery that never switched DNS clears when the primary answers
 * again; before, `failed` had no way out. */
static void test_failed_clears_when_the_primary_answers(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300));
    h.node1.refuse = "the test refuses to kill";
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, failed, 10000));
    assert_contains(recovery_error(&h), "refused to kill VM web1");
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_true(run_until_ms(&h, not_failed, 3000));
    assert_true(state_is(&h, "ok"));
    char phases[512];
    unsigned fenced;
    journal_phases(&h, phases, sizeof(phases), &fenced);
    assert_string_equal(phases, "detected,failed,cleared");
    harness_stop(&h);
}

/* `vcr service reset` clears a failed recovery that never switched DNS and is
 * refused for any other state. */
static void test_reset_clears_a_failed_recovery(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "warm", "");
    keep_agents_alive(&h);
    cleanup_error vcr_error_t err = NULL;
    assert_null(recovery_reset(server_recovery(h.srv), "web1", &err));
    assert_int_equal(vcr_error_status(err), EBUSY);
    vcr_error_release(&err);
    h.dns.silent = true;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    h.dns.silent = false;
    cleanup_json json_t *ans = recovery_reset(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    /* The DNS step had been tried: the name goes back to the primary first. */
    assert_true(json_is_true(json_object_get(ans, "clearing")));
    assert_true(run_until_ms(&h, not_failed, 5000));
    assert_string_equal(h.dns.address, PRIMARY);
    assert_null(recovery_reset(server_recovery(h.srv), "web1", &err));
    harness_stop(&h);
}

/* A warm recovery counts on the container only if its standby reports it
 * running now: one reported stopped is started at once. */
static void test_warm_recovery_starts_a_stopped_container(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "warm", "provision_warm: false\n",
                       (struct standby_opts){.containers = containers("stopped")});
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_non_null(agent_order(&h.sb1, "container_start"));
    harness_stop(&h);
}

/* Its standby host lost, a warm service is recovered cold on
 * standby.fallback_host at once; with none configured it fails at once with
 * the reason, instead of waiting for the port deadline. */
static void warm_with_sb1_lost(struct harness *h, const char *standby_extra)
{
    harness_open(h, true);
    h->standby_extra = standby_extra;
    server_up(h, "warm", "heartbeat_ms: 100\nhost_timeout_ms: 300\nfence_timeout_ms: 1200\n");
    agent_start(&h->node1, h->base, server_agent_port(h->srv), "node1", "host", "running");
    h->node1.heartbeat = true;
    agent_start(&h->sb1, h->base, server_agent_port(h->srv), "sb1", "standby", NULL);
    json_object_set_new(h->sb1.hello, "containers", containers("running"));
    if (standby_extra) {
        agent_start(&h->sb2, h->base, server_agent_port(h->srv), "sb2", "standby", NULL);
        json_object_set_new(h->sb2.hello, "containers", json_array());
        h->sb2.heartbeat = true;
    }
    assert_true(run_until_ms(h, both_welcomed, 5000));
    /* sb1 sends no heartbeat: lost after 300 ms, before the primary fails. */
    assert_true(run_until_ms(h, sb1_lost, 3000));
    vm_crashed(h);
}

static void test_warm_recovery_fails_at_once_when_the_standby_is_lost(void **state)
{
    (void)state;
    struct harness h;
    warm_with_sb1_lost(&h, NULL);
    int64_t t0 = vcr_mono_ms();
    assert_true(run_until_ms(&h, failed, 10000));
    assert_true(vcr_mono_ms() - t0 < 60000); /* not the port deadline */
    assert_contains(recovery_error(&h), "standby host sb1 is lost");
    assert_contains(recovery_error(&h), "no standby.fallback_host");
    harness_stop(&h);
}

static void test_warm_recovery_falls_back_to_the_fallback_host(void **state)
{
    (void)state;
    struct harness h;
    warm_with_sb1_lost(&h, ", fallback_host: sb2");
    assert_true(run_until_ms(&h, recovered, 10000));
    json_t *create = agent_order(&h.sb2, "container_create");
    assert_non_null(create);
    assert_string_equal(json_string_value(json_object_get(create, "address")), CONTAINER);
    harness_stop(&h);
}

/* After a recovery, a primary reported running again (a rebooted host
 * autostarts its VMs) is killed again; an operator's vm start is refused;
 * failback starts it itself. */
static void test_returning_primary_is_fenced_until_failback(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    h.node1.plays_vm = true;
    h.node1.vm_pid = 300;
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    size_t kills = agent_order_count(&h.node1, "vm_kill");
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(recovery_check_vm_start(server_recovery(h.srv), "node1", "web1", &err), -1);
    assert_contains(vcr_error_msg(err), "vcr failback web1");
    vcr_error_release(&err);
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    vm_event(&h, "running", 400, 1);
    bool refenced = false;
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!refenced && vcr_mono_ms() < deadline) {
        assert_false(run_until_ms(&h, never, 100));
        refenced = agent_order_count(&h.node1, "vm_kill") > kills;
    }
    assert_true(refenced);
    assert_true(recovered(&h));
    /* Failback starts the stopped primary, waits for its answer, switches back. */
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_non_null(agent_order(&h.node1, "vm_start"));
    assert_string_equal(h.dns.address, PRIMARY);
    assert_int_equal(recovery_check_vm_start(server_recovery(h.srv), "node1", "web1", &err), 0);
    harness_stop(&h);
}

/* The cause of a failed port step is kept whole (it was formatted into itself). */
static void test_port_failure_keeps_its_cause(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "port_timeout_ms: 1000\n");
    keep_agents_alive(&h);
    service_stop(&h.container);
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    const char *e = recovery_error(&h);
    assert_contains(e, "not open within 1000 ms: 127.0.0.3:");
    assert_contains(e, "Connection refused");
    assert_null(strstr(strstr(e, "not open within") + 1, "not open within"));
    harness_stop(&h);
}

static bool journal_sql(const char *sql)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/journal.db", dir);
    sqlite3 *db = NULL;
    bool ok = sqlite3_open(path, &db) == SQLITE_OK && sqlite3_busy_timeout(db, 2000) == SQLITE_OK &&
              sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
}

/* A phase whose save fails is not acted on: the recovery holds (no fence, no
 * switch) until the table takes it, then goes on. */
static void test_recovery_holds_while_its_state_cannot_be_saved(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "warm", "");
    keep_agents_alive(&h);
    assert_true(journal_sql("CREATE TRIGGER full BEFORE INSERT ON recoveries BEGIN SELECT "
                            "RAISE(ABORT, 'database or disk is full (test)'); END;"));
    vm_crashed(&h);
    assert_false(run_until_ms(&h, kill_sent, 1500));
    assert_true(state_is(&h, "recovering"));
    assert_true(journal_sql("DROP TRIGGER full;"));
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_non_null(agent_order(&h.node1, "vm_kill"));
    harness_stop(&h);
}

/* The recovery decides on a refusal's `code`, never on its text: `exists` is
 * followed by a start, `busy` (provisioning's order still running) by the
 * same order again; any other code fails the recovery. */
static void refused_then(const char *code, int times, condition_fn until, const char *action,
                         size_t orders)
{
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    h.sb1.refuse_action = "container_create";
    h.sb1.refuse_code = code;
    h.sb1.refuse_times = times;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, until, 10000));
    assert_int_equal(agent_order_count(&h.sb1, action), orders);
    harness_stop(&h);
}

static void test_container_refusal_codes(void **state)
{
    (void)state;
    refused_then("exists", 1, recovered, "container_start", 1);
    refused_then("busy", 2, recovered, "container_create", 3);
    /* Any other code is a failure like any other. */
    refused_then("failed", 1, failed, "container_start", 0);
}

/* A DNS UPDATE that timed out may have been applied all the same: clearing the
 * failed recovery puts the name back on the primary before calling it ok. */
static void test_clearing_a_failed_recovery_puts_dns_back(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300));
    h.dns.apply_silently = true;
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, failed, 15000));
    assert_contains(recovery_error(&h), "DNS update");
    assert_string_equal(h.dns.address, CONTAINER); /* applied, never answered */
    h.dns.apply_silently = false;
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_true(run_until_ms(&h, back_to_ok, 5000));
    assert_string_equal(h.dns.address, PRIMARY);
    harness_stop(&h);
}

struct check_seen {
    bool done;
    enum check_outcome outcome;
    char why[200];
};

static void on_check_seen(enum check_outcome outcome, const char *why, const char *body, void *arg)
{
    (void)body;
    struct check_seen *c = arg;
    c->done = true;
    c->outcome = outcome;
    snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
}

/* A protocol is one file and one table entry (check_protocols.c): redis's PING. */
static void test_check_redis(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    static const char *const answers[] = {"+PONG\r\n", "-NOAUTH Authentication required.\r\n",
                                          "-LOADING Redis is loading the dataset\r\n"};
    static const enum check_outcome expected[] = {CHECK_HEALTHY, CHECK_HEALTHY, CHECK_UNHEALTHY};
    for (size_t i = 0; i < 3; i++) {
        struct fake_service svc;
        uint16_t port = 0;
        service_start(&svc, base, CONTAINER, &port);
        svc.answer = answers[i];
        struct check_target t = {.type = check_protocol("redis"),
                                 .address = CONTAINER,
                                 .port = port,
                                 .timeout_ms = 2000};
        assert_non_null(t.type);
        struct check_seen seen = {0};
        cleanup_error vcr_error_t err = NULL;
        assert_non_null(check_start(base, &t, on_check_seen, &seen, &err));
        int64_t deadline = vcr_mono_ms() + 3000;
        while (!seen.done && vcr_mono_ms() < deadline) {
            struct timeval tick = {0, 5000};
            event_base_loopexit(base, &tick);
            event_base_dispatch(base);
        }
        assert_true(seen.done);
        assert_int_equal(seen.outcome, expected[i]);
        if (expected[i] == CHECK_UNHEALTHY)
            assert_contains(seen.why, "-LOADING");
        service_stop(&svc);
    }
    event_base_free(base);
}

/* A probe reaches an IPv6 address: a listener on [::1] is healthy, the same
 * port once closed is unhealthy, named as [::1]:PORT. */
static void test_check_reaches_ipv6(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    socklen_t slen = sizeof(sin6);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin6, &slen), 0);
    uint16_t port = ntohs(sin6.sin6_port);
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            close(lfd);
        struct check_target t = {.address = "::1", .port = port, .timeout_ms = 2000};
        struct check_seen seen = {0};
        cleanup_error vcr_error_t err = NULL;
        assert_non_null(check_start(base, &t, on_check_seen, &seen, &err));
        int64_t deadline = vcr_mono_ms() + 3000;
        while (!seen.done && vcr_mono_ms() < deadline) {
            struct timeval tick = {0, 5000};
            event_base_loopexit(base, &tick);
            event_base_dispatch(base);
        }
        assert_true(seen.done);
        assert_int_equal(seen.outcome, round == 0 ? CHECK_HEALTHY : CHECK_UNHEALTHY);
        if (round == 1) {
            char where[32];
            snprintf(where, sizeof(where), "[::1]:%u: ", port);
            assert_contains(seen.why, where);
        }
    }
    struct check_target bad = {.address = "fd77::1::2", .port = 80, .timeout_ms = 100};
    cleanup_error vcr_error_t err = NULL;
    assert_null(check_start(base, &bad, on_check_seen, NULL, &err));
    assert_contains(vcr_error_msg(err), "`fd77::1::2` is not an IPv4 or IPv6 address");
    event_base_free(base);
}

/* A recovery whose DNS switch was answered but whose client confirmation
 * failed is served by the container: failback is the way back from `failed`. */
static void test_failback_from_failed_after_the_switch(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "confirm_timeout_ms: 1000\n");
    keep_agents_alive(&h);
    h.node1.plays_vm = true;
    h.node1.vm_pid = 500;
    h.dns.mute_after_update = true;
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, failed, 15000));
    assert_contains(recovery_error(&h), "client confirmation");
    assert_string_equal(h.dns.address, CONTAINER);
    cleanup_error vcr_error_t err = NULL;
    assert_null(recovery_reset(server_recovery(h.srv), "web1", &err)); /* DNS is on it */
    assert_contains(vcr_error_msg(err), "vcr failback web1");
    vcr_error_release(&err);
    h.dns.mute_after_update = false;
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_string_equal(h.dns.address, PRIMARY);
    harness_stop(&h);
}

/* The orders `action` an agent received, in order. */
static json_t *agent_orders(struct fake_agent *a, const char *action)
{
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(a->received, i, m)
    {
        const char *act = json_string_value(json_object_get(m, "action"));
        if (act && strcmp(act, action) == 0)
            json_array_append(out, m);
    }
    return out;
}

/* The journal's `kind` phases for web1, as "phase,phase,...". */
static void kind_phases(struct harness *h, const char *kind, char *out, size_t size)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    out[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), kind) != 0)
            continue;
        const char *phase =
            json_string_value(json_object_get(json_object_get(e, "detail"), "phase"));
        snprintf(out + strlen(out), size - strlen(out), "%s%s", out[0] ? "," : "", phase);
    }
}

/* takeover: both (docs/recovery.md, "Address takeover"): after fencing the
 * container takes the primary's address, then DNS moves; failback has the
 * container release it before the primary is started. */
/* An opened harness (its service_extra set) up with mode, node1 playing its
 * VM (so that failback can start it again); the VM crashes and the service is
 * recovered through `phases`. */
static void crash_and_recover(struct harness *h, const char *mode, const char *phases)
{
    server_up(h, mode, "");
    agents_up(h, "running");
    keep_agents_alive(h);
    h->node1.plays_vm = true;
    h->node1.vm_pid = 500;
    vm_crashed(h);
    assert_true(run_until_ms(h, recovered, 10000));
    char done[512];
    kind_phases(h, "recovery", done, sizeof(done));
    assert_string_equal(done, phases);
}

static void test_address_takeover_then_released_before_the_primary_starts(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.service_extra = "    takeover: both\n";
    crash_and_recover(&h, "warm",
                      "detected,fenced,container_ready,port_open,address_taken,dns_updated,"
                      "client_confirmed");
    cleanup_json json_t *takes = agent_orders(&h.sb1, "container_address");
    assert_int_equal(json_array_size(takes), 1);
    json_t *take = json_array_get(takes, 0);
    assert_string_equal(json_string_value(json_object_get(take, "name")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(take, "address")), PRIMARY);
    assert_true(json_is_true(json_object_get(take, "take")));
    assert_string_equal(h.dns.address, CONTAINER);
    cleanup_json json_t *s = service_json(&h);
    assert_string_equal(json_string_value(json_object_get(s, "takeover")), "both");
    assert_string_equal(json_string_value(json_object_get(s, "served_by")), "standby");

    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_string_equal(h.dns.address, PRIMARY);
    cleanup_json json_t *all = agent_orders(&h.sb1, "container_address");
    assert_int_equal(json_array_size(all), 2);
    assert_true(json_is_false(json_object_get(json_array_get(all, 1), "take")));
    char phases[512];
    kind_phases(&h, "failback", phases, sizeof(phases));
    assert_string_equal(phases, "started,address_released,primary_started,primary_ok,"
                                "dns_updated,done");
    harness_stop(&h);
}

/* A takeover the standby refuses fails the recovery, but the container may
 * hold the address (a gratuitous ARP that failed after the add): the service
 * counts as served there, so no reset puts the primary back beside it;
 * failback (which releases the address first) is the way out. */
static void test_refused_address_takeover_leaves_only_failback(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.service_extra = "    takeover: address\n";
    server_up(&h, "warm", "");
    agents_up(&h, "running");
    keep_agents_alive(&h);
    h.sb1.refuse_action = "container_address";
    h.sb1.refuse_code = "failed";
    h.sb1.refuse_times = 1;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    assert_contains(recovery_error(&h), "address takeover of " PRIMARY);
    cleanup_error vcr_error_t err = NULL;
    assert_null(recovery_reset(server_recovery(h.srv), "web1", &err));
    assert_contains(vcr_error_msg(err), "vcr failback web1");
    /* Failed after port_open, but not in the DNS switch: no DNS failure counted. */
    struct scrape m;
    scrape_get(h.base, server_api_port(h.srv), "/metrics", &m);
    assert_int_equal(m.code, 200);
    assert_non_null(m.text);
    assert_non_null(strstr(m.text, "vcr_dns_update_failures_total 0\n"));
    free(m.text);
    harness_stop(&h);
}

static json_t *journal_last_failback(struct harness *h)
{
    return journal_last(h, "failback");
}

static bool failback_failed(struct harness *h)
{
    cleanup_json json_t *e = journal_last_failback(h);
    return e && strcmp(json_string_value(json_object_get(json_object_get(e, "detail"), "phase")),
                       "failed") == 0;
}

/* A failback whose primary never answers fails within its deadline: the
 * service stays served by its container, and the primary it started is
 * fenced again. */
/* --- the switch's way `hook` (switch_hook.c) --- */

/* A hook program: appends its arguments and its VCR_* environment to
 * DIR/hook.out; exits 3 while DIR/hook.fail exists, outlives any deadline
 * while DIR/hook.hang does. */
static void write_hook(struct harness *h, const char *timeout_ms)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/hook.sh", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{ echo \"args=$*\"; env | grep '^VCR_' | sort; echo ---; } >> %s/hook.out\n"
            "[ -e %s/hook.fail ] && exit 3\n"
            "[ -e %s/hook.hang ] && exec sleep 30\n"
            "exit 0\n",
            dir, dir, dir);
    fclose(f);
    static char extra[256];
    snprintf(extra, sizeof(extra), "    hook: {run: [/bin/sh, %s, pool-a], timeout_ms: %s}\n", path,
             timeout_ms);
    h->service_extra = extra;
}

static char *hook_out(void)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/hook.out", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

static void touch(const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

/* The hook runs after DNS as its own phase, told what moved where (argv as
 * configured, no shell of ours), and again at failback with the primary's
 * address once the name is back. */
static void test_hook_switch_runs_at_recovery_and_failback(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    write_hook(&h, "5000");
    crash_and_recover(&h, "cold",
                      "detected,fenced,container_ready,port_open,dns_updated,hook_run,"
                      "client_confirmed");
    cleanup_free char *out = hook_out();
    assert_string_equal(out, "args=pool-a\n"
                             "VCR_ADDRESS6=\n"
                             "VCR_ADDRESS=" CONTAINER "\n"
                             "VCR_DNS_NAME=web1.vcr.lab\n"
                             "VCR_OLD_ADDRESS=" PRIMARY "\n"
                             "VCR_PHASE=recover\n"
                             "VCR_SERVICE=web1\n"
                             "---\n");
    /* GET /v1/services shows the hook the service runs. */
    cleanup_json json_t *svc = service_json(&h);
    json_t *hook = json_object_get(svc, "hook");
    assert_int_equal(json_integer_value(json_object_get(hook, "timeout_ms")), 5000);
    json_t *run = json_object_get(hook, "run");
    assert_int_equal(json_array_size(run), 3);
    assert_string_equal(json_string_value(json_array_get(run, 0)), "/bin/sh");
    assert_string_equal(json_string_value(json_array_get(run, 2)), "pool-a");

    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_string_equal(h.dns.address, PRIMARY);
    cleanup_free char *both = hook_out();
    assert_contains(both, "---\nargs=pool-a\nVCR_ADDRESS6=\nVCR_ADDRESS=" PRIMARY
                          "\nVCR_DNS_NAME=web1.vcr.lab\nVCR_OLD_ADDRESS=" CONTAINER
                          "\nVCR_PHASE=failback\n");
    harness_stop(&h);
}

/* Its exit status decides: 3 fails the recovery, naming the hook, and so does
 * its deadline (the program is killed); failback needs its hook too. */
static void test_hook_switch_status_and_deadline(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    write_hook(&h, "300");
    touch("hook.fail");
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    vm_crashed(&h);
    assert_true(run_until_ms(&h, failed, 10000));
    cleanup_json json_t *s = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "error")),
                    "exited with status 3");
    cleanup_json json_t *events = journal_read(server_journal(h.srv), 0, 1000, NULL);
    json_t *last = json_object_get(json_array_get(events, json_array_size(events) - 1), "detail");
    assert_string_equal(json_string_value(json_object_get(last, "phase")), "failed");
    assert_string_equal(json_string_value(json_object_get(last, "switch")), "hook");
    assert_string_equal(json_string_value(json_object_get(last, "after")), "dns_updated");

    /* Retried: the hook hangs now, and is killed at its deadline. */
    char path[160];
    snprintf(path, sizeof(path), "%s/hook.fail", dir);
    unlink(path);
    touch("hook.hang");
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *r = recovery_failover(server_recovery(h.srv), "web1", &err);
    if (r == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, failed, 10000));
    cleanup_json json_t *s2 = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s2, "recovery"), "error")),
                    "killed at its deadline (hook.timeout_ms 300)");
    harness_stop(&h);
}

static void test_config_hook(void **state)
{
    (void)state;
    make_dir();
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg =
        parse(DNS_OK SERVICE_OK "    hook: {run: [/bin/true, --pool, web]}\n", dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->services[0].hook.argv[0], "/bin/true");
    assert_string_equal(cfg->services[0].hook.argv[2], "web");
    assert_null(cfg->services[0].hook.argv[3]);
    assert_int_equal(cfg->services[0].hook.timeout_ms, 10000);
    server_config_free(cfg);
    const char *at = "address: 10.77.0.31}\n";
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: []}\n", "`services[0].hook.run`",
               "0 item(s)", "allowed: 1..32");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: [lb-switch]}\n",
               "`services[0].hook.run[0]`", "`lb-switch` is not an absolute path");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: [/nonexistent/lb]}\n",
               "`services[0].hook.run[0]`", "`/nonexistent/lb` is not an executable file",
               "No such file");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: [/tmp]}\n",
               "`/tmp` is not an executable file (not a regular file)");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: [/bin/true], timeout_ms: 50}\n",
               "`services[0].hook.timeout_ms`", "`50`", "100..600000");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    hook: {run: /bin/true}\n", "`run`");
    remove_dir();
}

static void test_failback_that_fails_leaves_the_standby_serving(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.check = "{type: http, interval_ms: 100, timeout_ms: 100, boot_grace_ms: 1000}";
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    keep_agents_alive(&h);
    h.node1.plays_vm = true;
    h.node1.vm_pid = 600;
    assert_false(run_until_ms(&h, never, 300));
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    size_t kills = agent_order_count(&h.node1, "vm_kill");
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, failback_failed, 10000)); /* boot_grace_ms 1000 */
    assert_non_null(agent_order(&h.node1, "vm_start"));
    assert_true(recovered(&h));
    assert_string_equal(h.dns.address, CONTAINER);
    cleanup_json json_t *s = service_json(&h);
    assert_contains(json_string_value(json_object_get(json_object_get(s, "recovery"), "error")),
                    "did not answer within");
    bool refenced = false;
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!refenced && vcr_mono_ms() < deadline) {
        assert_false(run_until_ms(&h, never, 100));
        refenced = agent_order_count(&h.node1, "vm_kill") > kills;
    }
    assert_true(refenced);
    harness_stop(&h);
}

static bool journal_has_failback_phase(struct harness *h, const char *phase)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        json_t *d = json_object_get(e, "detail");
        if (strcmp(json_string_value(json_object_get(e, "kind")), "failback") == 0 &&
            json_is_string(json_object_get(d, "phase")) &&
            strcmp(json_string_value(json_object_get(d, "phase")), phase) == 0)
            return true;
    }
    return false;
}

static bool auto_suspended(struct harness *h)
{
    return journal_has_failback_phase(h, "auto_suspended") && recovered(h);
}

/* failback: auto: once recovered with the primary's host connected for
 * after_s, the engine fails back by itself (the primary started, checked, DNS
 * back); a second failure within min_interval_s of that is flapping: no
 * automatic failback until the operator's, which re-enables it. */
static void test_auto_failback_then_flapping_suspends_it(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.service_extra = "    failback: {mode: auto, after_s: 1, min_interval_s: 60}\n";
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    keep_agents_alive(&h);
    h.node1.plays_vm = true;
    h.node1.vm_pid = 700;
    assert_false(run_until_ms(&h, never, 300));
    cleanup_json json_t *cfg = service_json(&h);
    json_t *fb = json_object_get(cfg, "failback");
    assert_string_equal(json_string_value(json_object_get(fb, "mode")), "auto");
    assert_int_equal(json_integer_value(json_object_get(fb, "after_s")), 1);
    assert_true(json_is_null(json_object_get(cfg, "hook"))); /* present, null: no hook */

    service_stop(&h.primary);
    assert_true(run_until_ms(&h, recovered, 10000));
    assert_string_equal(h.dns.address, CONTAINER);
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p); /* what the started VM will serve */
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    assert_true(journal_has_failback_phase(&h, "auto_started"));
    assert_string_equal(h.dns.address, PRIMARY);
    assert_non_null(agent_order(&h.node1, "vm_start"));

    /* It fails again at once: flapping. */
    service_stop(&h.primary);
    assert_true(run_until_ms(&h, auto_suspended, 10000));
    p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_false(run_until_ms(&h, back_to_ok, 2500)); /* after_s is 1: it would have gone */
    cleanup_json json_t *s = service_json(&h);
    assert_true(json_is_true(json_object_get(json_object_get(s, "failback"), "suspended")));
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(journal_has_failback_phase(&h, "auto_resumed"));
    assert_true(run_until_ms(&h, back_to_ok, 10000));
    harness_stop(&h);
}

/* The last automatic failback's healthy period start (ready_since_ms, wall), 0: none. */
static int64_t last_auto_ready_since(struct harness *h)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    int64_t since = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        json_t *d = json_object_get(e, "detail");
        const char *phase = json_string_value(json_object_get(d, "phase"));
        if (strcmp(json_string_value(json_object_get(e, "kind")), "failback") == 0 && phase &&
            strcmp(phase, "auto_started") == 0)
            since = json_integer_value(json_object_get(d, "ready_since_ms"));
    }
    return since;
}

/* Each recovery starts its own healthy period: after an automatic failback
 * the next recovery waits after_s again (the period of the first one was kept,
 * and with min_interval_s passed the second failed back at once). */
static void test_auto_failback_period_starts_again_each_recovery(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.service_extra = "    failback: {mode: auto, after_s: 2, min_interval_s: 0}\n";
    server_up(&h, "cold", "");
    agents_up(&h, "running");
    keep_agents_alive(&h);
    h.node1.plays_vm = true;
    h.node1.vm_pid = 700;
    for (int round = 0; round < 2; round++) {
        assert_false(run_until_ms(&h, never, 300)); /* answered once: its failures count */
        service_stop(&h.primary);
        assert_true(run_until_ms(&h, recovered, 10000));
        int64_t recovered_at = vcr_wall_ms();
        uint16_t p = h.port;
        service_start(&h.primary, h.base, PRIMARY, &p);
        assert_true(run_until_ms(&h, back_to_ok, 10000));
        /* The period began once this recovery was done, not before. */
        int64_t since = last_auto_ready_since(&h);
        if (since < recovered_at - 200)
            fail_msg("recovery %d: its failback's healthy period began %lld ms before it was done",
                     round + 1, (long long)(recovered_at - since));
    }
    harness_stop(&h);
}

static bool recovery_began(struct harness *h)
{
    char phases[512];
    unsigned fenced;
    journal_phases(h, phases, sizeof(phases), &fenced);
    return phases[0] != '\0';
}

/* An operator's stop of a primary (`vcr vm stop`) is maintenance from the
 * order on, not from the VM's `stopped` report: a guest whose service stops
 * answering before its host reports the VM down (libvirtd reports a destroy
 * once it has cleaned up) was failed over.  A stop that fails is watched again. */
static void test_operator_stop_is_maintenance_from_the_order(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "cold", "");
    keep_agents_alive(&h);
    assert_false(run_until_ms(&h, never, 300)); /* answered once: its failures count */
    struct recovery *rc = server_recovery(h.srv);
    recovery_vm_stop_ordered(rc, "node1", "web1");
    assert_true(state_is(&h, "stopped"));
    service_stop(&h.primary); /* the guest's service ends; the VM is still reported running */
    assert_false(run_until_ms(&h, recovery_began, 2000));
    recovery_vm_stop_done(rc, "node1", "web1", true);
    agent_send(&h.node1,
               proto_msg_new("vm_event", json_pack("{s:s, s:s, s:s, s:I}", "vm", "web1", "state",
                                                   "stopped", "cause", "destroyed on order",
                                                   "ts_ms", (json_int_t)vcr_wall_ms())));
    assert_false(run_until_ms(&h, recovery_began, 1000));
    assert_true(state_is(&h, "stopped"));
    assert_null(agent_order(&h.sb1, "container_create"));

    /* A stop that failed: the primary, still reported running, is watched again. */
    agent_send(&h.node1, proto_msg_new("vm_event",
                                       json_pack("{s:s, s:s, s:s, s:I, s:i}", "vm", "web1", "state",
                                                 "running", "cause", "started on order", "ts_ms",
                                                 (json_int_t)vcr_wall_ms(), "pid", 101)));
    uint16_t p = h.port;
    service_start(&h.primary, h.base, PRIMARY, &p);
    assert_false(run_until_ms(&h, never, 300));
    recovery_vm_stop_ordered(rc, "node1", "web1");
    recovery_vm_stop_done(rc, "node1", "web1", false);
    assert_true(run_until_ms(&h, back_to_ok, 2000));
    harness_stop(&h);
}

static void test_config_failback_policy(void **state)
{
    (void)state;
    make_dir();
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(DNS_OK SERVICE_OK, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_false(cfg->services[0].failback.automatic); /* manual by default */
    assert_int_equal(cfg->services[0].failback.after_s, 60);
    assert_int_equal(cfg->services[0].failback.min_interval_s, 600);
    server_config_free(cfg);
    cfg = parse(DNS_OK SERVICE_OK "    failback: {mode: auto, after_s: 30, min_interval_s: 0}\n",
                dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(cfg->services[0].failback.automatic);
    assert_int_equal(cfg->services[0].failback.after_s, 30);
    assert_int_equal(cfg->services[0].failback.min_interval_s, 0);
    server_config_free(cfg);
    const char *at = "address: 10.77.0.31}\n";
    EXPECT_BAD(at, "address: 10.77.0.31}\n    failback: {mode: sometimes}\n",
               "`services[0].failback.mode`", "`sometimes`", "allowed: manual, auto");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    failback: {mode: auto, after_s: 0}\n",
               "`services[0].failback.after_s`", "`0`", "1..86400");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    failback: {mode: auto, min_interval_s: 1w}\n",
               "`services[0].failback.min_interval_s`", "`1w`");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    failback: {mode: auto, after: 3}\n", "`after`",
               "unknown key");
    remove_dir();
}

/* --- provisioning of warm containers (docs/recovery.md, "Provisioning") --- */

static const char *container_state(struct harness *h)
{
    static char out[32];
    cleanup_json json_t *s = service_json(h);
    snprintf(out, sizeof(out), "%s",
             json_string_value(json_object_get(json_object_get(s, "standby"), "container_state")));
    return out;
}

static bool create_sent(struct harness *h)
{
    return agent_order_count(&h->sb1, "container_create") > 0;
}

static bool start_sent(struct harness *h)
{
    return agent_order_count(&h->sb1, "container_start") > 0;
}

static bool two_creates_sent(struct harness *h)
{
    return agent_order_count(&h->sb1, "container_create") >= 2;
}

static bool container_running(struct harness *h)
{
    return strcmp(container_state(h), "running") == 0;
}

/* The journal's `provision` events, as "action:ok|error,...". */
static void journal_provisions(struct harness *h, char *out, size_t size)
{
    cleanup_json json_t *events = journal_read(server_journal(h->srv), 0, 1000, NULL);
    out[0] = '\0';
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), "provision") != 0)
            continue;
        json_t *d = json_object_get(e, "detail");
        assert_string_equal(json_string_value(json_object_get(d, "service")), "web1");
        assert_string_equal(json_string_value(json_object_get(d, "container")), "web1-c");
        assert_string_equal(json_string_value(json_object_get(d, "host")), "sb1");
        assert_true(json_is_integer(json_object_get(d, "ms")));
        const char *error = json_string_value(json_object_get(d, "error"));
        snprintf(out + strlen(out), size - strlen(out), "%s%s:%s", out[0] ? "," : "",
                 json_string_value(json_object_get(d, "action")),
                 json_is_true(json_object_get(d, "ok")) ? "ok"
                 : error                                ? error
                                                        : "?");
    }
}

static void test_provision_creates_an_absent_warm_container_once(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "warm", "",
                       (struct standby_opts){.containers = containers(NULL), .hold = true});
    assert_true(run_until_ms(&h, create_sent, 2000));
    json_t *create = agent_order(&h.sb1, "container_create");
    assert_string_equal(json_string_value(json_object_get(create, "vm")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(create, "name")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(create, "service")), "web1");
    assert_string_equal(json_string_value(json_object_get(create, "address")), CONTAINER);
    assert_int_equal(json_integer_value(json_object_get(create, "prefix")), 24);
    assert_string_equal(json_string_value(json_object_get(create, "template")), "busybox");
    assert_true(json_is_true(json_object_get(create, "start")));
    assert_string_equal(container_state(&h), "provisioning");
    /* Pending, and the host still reports no container: no second order. */
    agent_sample(&h.sb1, containers(NULL));
    assert_false(run_until_ms(&h, two_creates_sent, 600));
    agent_reply_held(&h.sb1, true);
    /* Done, but until a newer report lists it the old list is stale: still nothing. */
    assert_false(run_until_ms(&h, two_creates_sent, 300));
    assert_string_equal(container_state(&h), "provisioning");
    agent_sample(&h.sb1, containers("running"));
    assert_true(run_until_ms(&h, container_running, 2000));
    assert_false(run_until_ms(&h, two_creates_sent, 300));
    assert_int_equal(agent_order_count(&h.sb1, "container_create"), 1);
    assert_int_equal(agent_order_count(&h.sb1, "container_start"), 0);
    char prov[512];
    journal_provisions(&h, prov, sizeof(prov));
    assert_string_equal(prov, "container_create:ok");
    assert_true(state_is(&h, "ok"));
    harness_stop(&h);
}

static bool sb2_welcomed(struct harness *h)
{
    return agent_welcomed(&h->sb2);
}

/* A migration moved the container to sb2: it is not created again on sb1. */
static void test_provision_follows_a_migrated_container(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.sb1_containers = containers(NULL);
    server_up(&h, "warm", "");
    agent_start(&h.sb2, h.base, server_agent_port(h.srv), "sb2", "standby", NULL);
    json_object_set_new(h.sb2.hello, "containers", containers("running"));
    assert_true(run_until_ms(&h, sb2_welcomed, 2000));
    agents_up(&h, "running"); /* sb1 reports no container */
    assert_false(run_until_ms(&h, create_sent, 600));
    assert_string_equal(container_state(&h), "running");
    cleanup_json json_t *svc = service_json(&h);
    assert_string_equal(json_string_value(json_object_get(json_object_get(svc, "standby"), "host")),
                        "sb2");
    harness_stop(&h);
}

/* While a migration moves it (stopped on the source after the final dump),
 * the container is not started by provisioning. */
static void test_provision_leaves_a_moving_container_alone(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.sb1_containers = containers("stopped");
    server_up(&h, "warm", "");
    inventory_set_moving(server_inventory(h.srv), "web1-c", true);
    agents_up(&h, "running");
    assert_false(run_until_ms(&h, start_sent, 600));
    inventory_set_moving(server_inventory(h.srv), "web1-c", false);
    assert_true(run_until_ms(&h, start_sent, 2000));
    harness_stop(&h);
}

static void test_provision_starts_a_stopped_warm_container(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "warm", "", (struct standby_opts){.containers = containers("stopped")});
    assert_true(run_until_ms(&h, start_sent, 2000));
    json_t *start = agent_order(&h.sb1, "container_start");
    assert_string_equal(json_string_value(json_object_get(start, "name")), "web1-c");
    assert_int_equal(agent_order_count(&h.sb1, "container_create"), 0);
    agent_sample(&h.sb1, containers("running"));
    assert_true(run_until_ms(&h, container_running, 2000));
    assert_int_equal(agent_order_count(&h.sb1, "container_start"), 1);
    char prov[512];
    journal_provisions(&h, prov, sizeof(prov));
    assert_string_equal(prov, "container_start:ok");
    harness_stop(&h);
}

static void test_provision_retries_a_failed_create_after_the_backoff(void **state)
{
    (void)state;
    struct harness h;
    /* The fake agents send no heartbeats: a host timeout (9.5 s) past the retry. */
    harness_start_with(&h, "warm", "heartbeat_ms: 3000\n",
                       (struct standby_opts){.containers = containers(NULL),
                                             .refuse = "template `busybox` is missing"});
    assert_true(run_until_ms(&h, create_sent, 2000));
    int64_t first = vcr_mono_ms();
    cleanup_json json_t *s = NULL;
    /* Refused: nothing again before the first backoff (5 s). */
    assert_false(run_until_ms(&h, two_creates_sent, PROVISION_RETRY_FIRST_MS - 500));
    s = service_json(&h);
    json_t *standby = json_object_get(s, "standby");
    assert_string_equal(json_string_value(json_object_get(standby, "container_state")), "absent");
    assert_contains(json_string_value(json_object_get(standby, "provision_error")),
                    "template `busybox` is missing");
    h.sb1.refuse = NULL;
    assert_true(run_until_ms(&h, two_creates_sent, 2000));
    assert_true(vcr_mono_ms() - first >= PROVISION_RETRY_FIRST_MS - 100);
    char prov[512];
    assert_false(run_until_ms(&h, never, 200)); /* the reply to the retry */
    journal_provisions(&h, prov, sizeof(prov));
    assert_string_equal(prov, "container_create:template `busybox` is missing,container_create:ok");
    json_decref(s);
    s = service_json(&h);
    assert_true(json_is_null(json_object_get(json_object_get(s, "standby"), "provision_error")));
    harness_stop(&h);
}

/* The server decides on the refusal's code: wrong image bytes (image_checksum)
 * would come back at once, so the next attempt waits the longest backoff, not
 * the first one; the code is journaled with the event. */
static void test_provision_backs_off_longest_after_image_checksum(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "warm", "heartbeat_ms: 3000\n",
                       (struct standby_opts){.containers = containers(NULL),
                                             .refuse_create_code = "image_checksum"});
    assert_true(run_until_ms(&h, create_sent, 2000));
    /* Past the first backoff (5 s): still one create. */
    assert_false(run_until_ms(&h, two_creates_sent, PROVISION_RETRY_FIRST_MS + 1500));
    cleanup_json json_t *events = journal_read(server_journal(h.srv), 0, 1000, NULL);
    size_t i;
    json_t *e, *refused = NULL;
    json_array_foreach(events, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "kind")), "provision") == 0)
            refused = json_object_get(e, "detail");
    }
    assert_non_null(refused);
    assert_string_equal(json_string_value(json_object_get(refused, "code")), "image_checksum");
    assert_false(json_is_true(json_object_get(refused, "ok")));
    harness_stop(&h);
}

static void test_provision_leaves_cold_services_alone(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "cold", "", (struct standby_opts){.containers = containers(NULL)});
    assert_false(run_until_ms(&h, create_sent, 600));
    assert_int_equal(json_array_size(h.sb1.received), 1); /* the welcome only */
    assert_string_equal(container_state(&h), "absent");
    harness_stop(&h);
}

static void test_provision_off(void **state)
{
    (void)state;
    struct harness h;
    harness_start_with(&h, "warm", "provision_warm: false\n",
                       (struct standby_opts){.containers = containers("stopped")});
    assert_false(run_until_ms(&h, start_sent, 600));
    assert_int_equal(json_array_size(h.sb1.received), 1);
    assert_string_equal(container_state(&h), "stopped");
    harness_stop(&h);
}

static bool fence_order_sent(struct harness *h)
{
    return agent_order(&h->node1, "vm_kill") != NULL;
}

/* During a recovery and once the container serves, the container is the
 * recovery's and failback's: not provisioned even when it vanishes. */
static void test_provision_waits_while_recovering_or_recovered(void **state)
{
    (void)state;
    struct harness h;
    harness_start(&h, "warm", "");
    assert_true(container_running(&h));
    h.node1.hold_orders = true; /* the recovery waits for its vm_kill reply */
    vm_crashed(&h);
    assert_true(run_until_ms(&h, fence_order_sent, 2000));
    assert_true(state_is(&h, "recovering"));
    agent_sample(&h.sb1, containers(NULL));
    assert_false(run_until_ms(&h, create_sent, 600));
    agent_reply_held(&h.node1, true);
    assert_true(run_until_ms(&h, recovered, 10000));
    agent_sample(&h.sb1, containers("stopped"));
    assert_false(run_until_ms(&h, start_sent, 600));
    /* The one create is the recovery's own: a warm container that vanished is
     * made again by the recovery (container_plan), never by provisioning. */
    assert_int_equal(agent_order_count(&h.sb1, "container_create"), 1);
    char prov[512];
    journal_provisions(&h, prov, sizeof(prov));
    assert_string_equal(prov, "");
    harness_stop(&h);
}

static void test_config_provision_warm(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = server_config_parse("", 0, "t.yaml", &err);
    assert_non_null(cfg);
    assert_true(cfg->provision_warm);
    server_config_free(cfg);
    const char *yaml = "provision_warm: false\n";
    cfg = server_config_parse(yaml, strlen(yaml), "t.yaml", &err);
    assert_non_null(cfg);
    assert_false(cfg->provision_warm);
    server_config_free(cfg);
    static const char *const bad[] = {"yes", "1", "True", "maybe", "''"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[64];
        snprintf(text, sizeof(text), "provision_warm: %s\n", bad[i]);
        assert_null(server_config_parse(text, strlen(text), "t.yaml", &err));
        assert_contains(vcr_error_msg(err), "config `t.yaml`: `provision_warm`: `");
        assert_contains(vcr_error_msg(err), "is not a boolean; allowed: true, false");
        vcr_error_release(&err);
    }
    yaml = "provision_warm: [true]\n";
    assert_null(server_config_parse(yaml, strlen(yaml), "t.yaml", &err));
    assert_contains(vcr_error_msg(err), "`provision_warm`: got a list; allowed: true, false");
}

/* --- migration (docs/migration.md) with two fake standby agents --- */

static json_t *migrated; /* the migration's result */

static void on_migrated(json_t *result, void *opaque)
{
    (void)opaque;
    migrated = json_incref(result);
}

static bool migration_ended(struct harness *h)
{
    (void)h;
    return migrated != NULL;
}

static bool three_welcomed(struct harness *h)
{
    return both_welcomed(h) && agent_welcomed(&h->sb2);
}

/* sb1 runs container web1-c (the service's warm standby, at CONTAINER, where a
 * fake service listens); sb2 is empty. */
static void migration_start_full(struct harness *h, const char *extra, const char *standby_extra)
{
    harness_open(h, true);
    h->standby_extra = standby_extra;
    server_up(h, "warm", extra);
    uint16_t port = server_agent_port(h->srv);
    agent_start(&h->node1, h->base, port, "node1", "host", "running");
    /* A spare standby VM, down: the policy may start it. */
    json_array_append_new(json_object_get(h->node1.hello, "vms"),
                          json_pack("{s:s, s:s}", "name", "sb3", "state", "stopped"));
    agent_start(&h->sb1, h->base, port, "sb1", "standby", NULL);
    agent_start(&h->sb2, h->base, port, "sb2", "standby", NULL);
    json_object_set_new(h->sb1.hello, "containers",
                        json_pack("[{s:s, s:s, s:s, s:s}]", "name", "web1-c", "service", "web1",
                                  "state", "running", "address", CONTAINER));
    h->sb1.migration = h->sb2.migration = true;
    assert_true(run_until_ms(h, three_welcomed, 5000));
    migrated = NULL;
}

static void migration_start_with(struct harness *h, const char *extra)
{
    migration_start_full(h, extra, NULL);
}

static void migration_start(struct harness *h)
{
    migration_start_with(h, "");
}

/* sb1 reports its VM at pct % CPU, web1-c busier than other-c. */
static void sb1_busy(struct harness *h, int pct)
{
    agent_send(&h->sb1,
               proto_msg_new("sample",
                             json_pack("{s:I, s:[], s:[{s:s, s:s, s:s, s:s, s:f}, {s:s, s:s, s:s, "
                                       "s:s, s:f}], s:{s:i, s:i}}",
                                       "ts_ms", (json_int_t)vcr_wall_ms(), "vms", "containers",
                                       "name", "other-c", "service", "other", "state", "running",
                                       "address", "127.0.0.9", "cpu_pct", 5.0, "name", "web1-c",
                                       "service", "web1", "state", "running", "address", CONTAINER,
                                       "cpu_pct", 40.0, "vm_load", "cpu_pct", pct, "ncpus", 2)));
}

static bool sb1_checkpoint_sent(struct harness *h)
{
    return agent_order_count(&h->sb1, "container_checkpoint") > 0;
}

static bool sb2_restored(struct harness *h)
{
    return agent_order(&h->sb2, "container_restore") != NULL;
}

static bool sb3_started(struct harness *h)
{
    json_t *o = agent_order(&h->node1, "vm_start");
    return o && strcmp(json_string_value(json_object_get(o, "vm")), "sb3") == 0;
}

/* The policy: a standby VM at or above cpu_pct for `samples` samples in a row
 * has its busiest container moved to a target. */
static void test_migration_policy_moves_the_busiest_container(void **state)
{
    (void)state;
    struct harness h;
    migration_start_with(&h, "migration: {cpu_pct: 50, samples: 2, targets: [sb2]}\n");
    sb1_busy(&h, 90);
    sb1_busy(&h, 30); /* not in a row */
    sb1_busy(&h, 90);
    assert_false(run_until_ms(&h, sb1_checkpoint_sent, 400));
    sb1_busy(&h, 95);
    assert_true(run_until_ms(&h, sb2_restored, 10000));
    json_t *ck = agent_order(&h.sb1, "container_checkpoint");
    assert_string_equal(json_string_value(json_object_get(ck, "name")), "web1-c");
    assert_null(agent_order(&h.node1, "vm_start"));
    harness_stop(&h);
}

/* No target up: a spare target VM that is down is started first. */
static void test_migration_policy_starts_a_spare_target(void **state)
{
    (void)state;
    struct harness h;
    migration_start_with(&h, "migration: {cpu_pct: 50, samples: 2, targets: [sb3]}\n");
    sb1_busy(&h, 90);
    sb1_busy(&h, 90);
    assert_true(run_until_ms(&h, sb3_started, 3000));
    assert_int_equal(agent_order_count(&h.sb1, "container_checkpoint"), 0);
    /* Once is enough while it boots. */
    sb1_busy(&h, 90);
    sb1_busy(&h, 90);
    assert_false(run_until_ms(&h, never, 300));
    assert_int_equal(agent_order_count(&h.node1, "vm_start"), 1);
    harness_stop(&h);
}

static void start_migration_with(struct harness *h, bool precopy)
{
    cleanup_error vcr_error_t err = NULL;
    if (migrator_start(server_migrator(h->srv), "sb1", "web1-c", "sb2", "test", precopy,
                       on_migrated, NULL, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(h, migration_ended, 10000));
}

static void start_migration(struct harness *h)
{
    start_migration_with(h, true);
}

static bool has_phase(json_t *result, const char *phase)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(result, "phases"), i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "phase")), phase) == 0)
            return true;
    }
    return false;
}

static void test_migration_copies_images_and_moves_the_container(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    /* Refused before anything happens. */
    cleanup_error vcr_error_t err = NULL;
    struct migrator *m = server_migrator(h.srv);
    assert_int_equal(migrator_start(m, "sb1", "web1-c", "sb1", NULL, true, NULL, NULL, &err), -1);
    assert_int_equal(vcr_error_status(err), EINVAL);
    vcr_error_release(&err);
    assert_int_equal(migrator_start(m, "sb1", "nosuch", "sb2", NULL, true, NULL, NULL, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);
    assert_int_equal(migrator_start(m, "node1", "web1-c", "sb2", NULL, true, NULL, NULL, &err), -1);
    assert_contains(vcr_error_msg(err), "no standby host `node1`");
    vcr_error_release(&err);

    start_migration(&h);
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    assert_true(json_is_true(json_object_get(migrated, "predump")));
    assert_int_equal(json_integer_value(json_object_get(migrated, "final_bytes")), 200000);
    assert_true(h.sb2.got_verified); /* both images arrived whole, in chunks */
    /* sb2 has no stream (stream_receive refused as unknown): the chunks, and the result says so. */
    assert_int_equal(h.sb2.stream_refused, 2);
    assert_string_equal(json_string_value(json_object_get(migrated, "copy_method")), "server");
    assert_true(json_real_value(json_object_get(migrated, "copy_mb_s")) > 0);
    json_t *copy_phases = json_object_get(migrated, "phases"), *ph;
    size_t k;
    int copies = 0;
    json_array_foreach(copy_phases, k, ph)
    {
        const char *name = json_string_value(json_object_get(ph, "phase"));
        if (strcmp(name, "copy_pre") == 0 || strcmp(name, "copy") == 0) {
            assert_string_equal(json_string_value(json_object_get(ph, "method")), "server");
            copies++;
        }
    }
    assert_int_equal(copies, 2);
    /* In this order: pre.tar unpacked on the target before the final dump. */
    const char *phases[] = {"predump", "copy_pre",  "unpack_pre", "dump",   "copy",
                            "restore", "port_open", "destroy",    "cleanup"};
    assert_int_equal(json_array_size(copy_phases), sizeof(phases) / sizeof(phases[0]));
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(copy_phases, i), "phase")), phases[i]);
    assert_int_equal(h.sb2.unpacks, 1);
    json_t *unpack = agent_order(&h.sb2, "container_image_unpack");
    assert_string_equal(json_string_value(json_object_get(unpack, "name")), "web1-c");
    assert_string_equal(json_string_value(json_object_get(unpack, "phase")), "pre");
    /* The agents' own times ride in their phases. */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(copy_phases, 0), "dump_ms")),
                     5);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(copy_phases, 2), "unpack_ms")), 4);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(copy_phases, 5), "restore_ms")), 7);
    assert_int_equal(
        json_integer_value(json_object_get(json_array_get(copy_phases, 5), "unpack_ms")), 6);
    assert_non_null(agent_order(&h.sb2, "container_restore"));
    assert_non_null(agent_order(&h.sb1, "container_destroy"));
    assert_non_null(agent_order(&h.sb1, "container_migrate_cleanup"));
    assert_null(agent_order(&h.sb1, "container_start"));
    /* The restore was given the service's settings. */
    json_t *r = agent_order(&h.sb2, "container_restore");
    assert_string_equal(json_string_value(json_object_get(r, "address")), CONTAINER);
    assert_string_equal(json_string_value(json_object_get(r, "service")), "web1");
    json_decref(migrated);
    harness_stop(&h);
}

static bool sb1_holds(struct harness *h)
{
    return h->sb1.held != NULL;
}

/* The source standby is lost in the middle of its final dump: the migration
 * fails and says so, nothing is restored on the target, and no container is
 * started twice (a rollback needs the source: docs/migration.md). */
static void test_migration_whose_source_is_lost(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    h.sb1.hold_from_action = "container_checkpoint";
    h.sb1.hold_skip = 1; /* the pre-dump is answered, the final dump is not */
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(migrator_start(server_migrator(h.srv), "sb1", "web1-c", "sb2", "test", true,
                                    on_migrated, NULL, &err),
                     0);
    assert_true(run_until_ms(&h, sb1_holds, 10000));
    json_decref(h.sb1.held);
    h.sb1.held = NULL;
    proto_conn_free(h.sb1.conn); /* the source VM is gone */
    h.sb1.conn = NULL;
    assert_true(run_until_ms(&h, migration_ended, 10000));
    assert_false(json_is_true(json_object_get(migrated, "ok")));
    assert_contains(json_string_value(json_object_get(migrated, "error")), "sb1");
    assert_null(agent_order(&h.sb2, "container_restore"));
    assert_null(agent_order(&h.sb2, "container_start"));
    json_decref(migrated);
    harness_stop(&h);
}

static bool sb1_start_sent(struct harness *h)
{
    return agent_order_count(&h->sb1, "container_start") > 0;
}

/* The source reports the container stopped (after its final dump) until its next
 * report: provisioning must not start it there once the migration has ended, only
 * after both hosts have reported since (the demo caught this). */
static void test_migration_end_waits_for_fresh_reports(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    cleanup_error vcr_error_t err = NULL;
    if (migrator_start(server_migrator(h.srv), "sb1", "web1-c", "sb2", "test", true, on_migrated,
                       NULL, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    agent_sample(&h.sb1, containers("stopped")); /* arrives while it moves */
    assert_true(run_until_ms(&h, migration_ended, 10000));
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    assert_false(run_until_ms(&h, sb1_start_sent, 500));
    /* Fresh reports: gone from sb1, running on sb2; still nothing to do. */
    agent_sample(&h.sb1, containers(NULL));
    agent_sample(&h.sb2, containers("running"));
    assert_false(run_until_ms(&h, sb1_start_sent, 500));
    assert_int_equal(agent_order_count(&h.sb1, "container_create"), 0);
    assert_false(inventory_is_moving(server_inventory(h.srv), "web1-c"));
    json_decref(migrated);
    harness_stop(&h);
}

/* precopy false (the bench's baseline): straight to the full dump. */
static void test_migration_without_precopy_by_choice(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    start_migration_with(&h, false);
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    assert_false(json_is_true(json_object_get(migrated, "predump")));
    assert_false(has_phase(migrated, "predump"));
    assert_true(has_phase(migrated, "dump") && has_phase(migrated, "restore"));
    json_t *ck = agent_order(&h.sb1, "container_checkpoint");
    assert_string_equal(json_string_value(json_object_get(ck, "phase")), "final");
    assert_int_equal(agent_order_count(&h.sb1, "container_checkpoint"), 1);
    json_decref(migrated);
    harness_stop(&h);
}

static void test_migration_without_predump_and_rollback(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    h.sb1.refuse_predump = true;
    h.sb2.refuse_restore = true;
    start_migration(&h);
    assert_false(json_is_true(json_object_get(migrated, "ok")));
    assert_false(json_is_true(json_object_get(migrated, "predump")));
    assert_true(json_is_true(json_object_get(migrated, "rolled_back")));
    assert_contains(json_string_value(json_object_get(migrated, "error")),
                    "restore on the target: refused");
    assert_contains(json_string_value(json_object_get(migrated, "error")), "rolled back");
    /* Started again where it was; the target's copy removed; the source kept. */
    assert_non_null(agent_order(&h.sb1, "container_start"));
    assert_non_null(agent_order(&h.sb2, "container_destroy"));
    assert_null(agent_order(&h.sb1, "container_destroy"));
    json_decref(migrated);
    harness_stop(&h);
}

/* A target without container_image_unpack (an older agent: unknown_order)
 * unpacks pre.tar in its restore: the migration goes on. */
static void test_migration_unpack_pre_unknown_goes_on(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    h.sb2.refuse_action = "container_image_unpack";
    h.sb2.refuse_code = "unknown_order";
    h.sb2.refuse_times = 1;
    start_migration(&h);
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    assert_true(json_is_true(json_object_get(migrated, "predump")));
    assert_true(has_phase(migrated, "unpack_pre"));
    assert_non_null(agent_order(&h.sb2, "container_restore"));
    json_decref(migrated);
    harness_stop(&h);
}

/* Any other refusal of the unpack (pre.tar fails its checks) ends the
 * migration before the final dump: the container never stopped, nothing to
 * roll back. */
static void test_migration_unpack_pre_refused_stops_before_the_dump(void **state)
{
    (void)state;
    struct harness h;
    migration_start(&h);
    h.sb2.refuse_action = "container_image_unpack";
    h.sb2.refuse_code = "invalid";
    h.sb2.refuse_times = 1;
    start_migration(&h);
    assert_false(json_is_true(json_object_get(migrated, "ok")));
    assert_false(json_is_true(json_object_get(migrated, "rolled_back")));
    assert_contains(json_string_value(json_object_get(migrated, "error")),
                    "unpacking pre.tar on the target: refused");
    assert_true(json_is_null(json_object_get(migrated, "downtime_ms")));
    assert_int_equal(agent_order_count(&h.sb1, "container_checkpoint"), 1); /* the pre-dump */
    assert_null(agent_order(&h.sb1, "container_start"));
    assert_null(agent_order(&h.sb2, "container_restore"));
    json_decref(migrated);
    harness_stop(&h);
}

/* --- a migration that carries the service's data (docs/migration.md "Data") --- */

#define MIG_DATA_EXTRA "}\n    data: {volume: data, path: /srv/data"

/* web1-c serves with its data attached on sb1 (after a recovery). */
static void migration_with_data(struct harness *h)
{
    migration_start_full(h, "", MIG_DATA_EXTRA);
    h->sb1.data = h->sb2.data = true;
    h->sb1.data_mounted = true;
    h->sb1.data_taken_ms = 1;
}

static void test_migration_carries_the_data_volume(void **state)
{
    (void)state;
    struct harness h;
    migration_with_data(&h);
    start_migration(&h);
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    const char *phases[] = {"space",       "predump",   "copy_pre",     "dump",    "copy",
                            "data_export", "data_copy", "data_install", "restore", "port_open"};
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++)
        if (!has_phase(migrated, phases[i]))
            fail_msg("no phase %s", phases[i]);
    json_t *data = json_object_get(migrated, "data");
    assert_string_equal(json_string_value(json_object_get(data, "path")), "/srv/data");
    assert_int_equal(json_integer_value(json_object_get(data, "bytes")), 200000);
    /* Packed on the source after the final dump, checked and installed on the target,
     * mounted by the restore at the same path; the source's packed copy removed. */
    assert_non_null(agent_order(&h.sb1, "data_export"));
    assert_true(agent_order_count(&h.sb1, "data_read") >= 2);
    json_t *install = agent_order(&h.sb2, "data_install");
    assert_non_null(install);
    assert_string_equal(json_string_value(json_object_get(install, "service")), "web1");
    assert_true(json_integer_value(json_object_get(install, "taken_ms")) > 0);
    json_t *r = json_object_get(agent_order(&h.sb2, "container_restore"), "data");
    assert_string_equal(json_string_value(json_object_get(r, "service")), "web1");
    assert_string_equal(json_string_value(json_object_get(r, "path")), "/srv/data");
    json_t *clean = NULL, *m;
    size_t i;
    json_array_foreach(h.sb1.received, i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "action")) ?: "",
                   "container_migrate_cleanup") == 0)
            clean = m;
    }
    assert_string_equal(json_string_value(json_object_get(clean, "service")), "web1");
    json_decref(migrated);
    harness_stop(&h);
}

/* A copy not attached on the source (a warm container before any recovery):
 * the container uses no data, the migration carries none. */
static void test_migration_without_attached_data_carries_none(void **state)
{
    (void)state;
    struct harness h;
    migration_with_data(&h);
    h.sb1.data_mounted = false;
    start_migration(&h);
    assert_true(json_is_true(json_object_get(migrated, "ok")));
    assert_true(json_is_null(json_object_get(migrated, "data")));
    assert_null(agent_order(&h.sb1, "data_export"));
    assert_null(agent_order(&h.sb2, "data_space"));
    assert_null(json_object_get(agent_order(&h.sb2, "container_restore"), "data"));
    json_decref(migrated);
    harness_stop(&h);
}

/* The target lacks room for the copy: refused before anything stops. */
static void test_migration_refused_when_the_target_lacks_space(void **state)
{
    (void)state;
    struct harness h;
    migration_with_data(&h);
    h.sb2.free_bytes = 10 << 20;
    start_migration(&h);
    assert_false(json_is_true(json_object_get(migrated, "ok")));
    const char *error = json_string_value(json_object_get(migrated, "error"));
    assert_contains(error, "target `sb2` lacks space for the data of service `web1`");
    assert_contains(error, "10.5 MB free");
    assert_false(json_is_true(json_object_get(migrated, "rolled_back")));
    assert_null(agent_order(&h.sb1, "container_checkpoint"));
    assert_null(agent_order(&h.sb1, "data_export"));
    json_decref(migrated);
    harness_stop(&h);
}

/* A failed restore after the data moved: the source mounts its copy again,
 * binds and starts the container (data_attach), not a bare container_start. */
static void test_migration_with_data_rolls_back_with_the_data(void **state)
{
    (void)state;
    struct harness h;
    migration_with_data(&h);
    h.sb2.refuse_restore = true;
    start_migration(&h);
    assert_false(json_is_true(json_object_get(migrated, "ok")));
    assert_true(json_is_true(json_object_get(migrated, "rolled_back")));
    json_t *attach = agent_order(&h.sb1, "data_attach");
    assert_non_null(attach);
    assert_string_equal(json_string_value(json_object_get(attach, "path")), "/srv/data");
    assert_null(agent_order(&h.sb1, "container_start"));
    json_decref(migrated);
    harness_stop(&h);
}

/* --- a service's data (docs/data.md) --- */

#define DATA_LINE "    data: {volume: data, path: /srv/data, interval_s: 30}\n"

static void test_config_service_data(void **state)
{
    (void)state;
    make_dir();
    cleanup_error vcr_error_t err = NULL;
    struct server_config *cfg = parse(DNS_OK SERVICE_OK DATA_LINE, dir, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->services[0].data.volume, "data");
    assert_string_equal(cfg->services[0].data.path, "/srv/data");
    assert_int_equal(cfg->services[0].data.interval_s, 30);
    server_config_free(cfg);
    cfg = parse(DNS_OK SERVICE_OK, dir, &err);
    assert_null(cfg->services[0].data.volume); /* no data declared */
    server_config_free(cfg);
    const char *at = "address: 10.77.0.31}\n";
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {path: /srv/data}\n",
               "`services[0].data.volume`", "missing");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: Data_1, path: /srv/data}\n",
               "`services[0].data.volume`", "Data_1", "a-z 0-9 -");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data}\n", "`services[0].data.path`",
               "missing");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data, path: srv/data}\n",
               "`services[0].data.path`", "srv/data", "absolute path");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data, path: /srv/../etc}\n",
               "`services[0].data.path`", "no `..`");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data, path: '/srv/my data'}\n",
               "`services[0].data.path`", "/srv/my data");
    EXPECT_BAD(at,
               "address: 10.77.0.31}\n    data: {volume: data, path: /srv/data, interval_s: 5}\n",
               "`services[0].data.interval_s`", "`5`", "0 (copy at recovery only), or 10..86400");
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data, path: /d, interval_s: 1h}\n",
               "`services[0].data.interval_s`", "`1h`");
    /* Periodic copies need a warm container to copy to. */
    char fmt[2048];
    snprintf(fmt, sizeof(fmt), "%s", DNS_OK SERVICE_OK DATA_LINE);
    char *m = strstr(fmt, "mode: warm");
    memcpy(m, "mode: cold", 10);
    cfg = parse(fmt, dir, &err);
    assert_null(cfg);
    assert_contains(vcr_error_msg(err), "with a cold standby; allowed: 0");
    vcr_error_release(&err);
    EXPECT_BAD(at, "address: 10.77.0.31}\n    data: {volume: data, path: /d, size: 3}\n", "`size`",
               "unknown key");
    remove_dir();
}

static void test_data_age(void **state)
{
    (void)state;
    /* A copy taken before the failure misses what the primary did since. */
    assert_int_equal(service_data_age_ms(1765000010000, 1765000004000), 6000);
    /* A copy of a dead VM's volume, taken after the failure, misses nothing. */
    assert_int_equal(service_data_age_ms(1765000010000, 1765000010250), 0);
    assert_int_equal(service_data_age_ms(1765000010000, 1765000010000), 0);
}

#define DATA_EXTRA "}\n    data: {volume: data, path: /srv/data"

static json_t *timeline_phase(json_t *svc, const char *phase)
{
    json_t *timeline = json_object_get(json_object_get(svc, "recovery"), "timeline");
    size_t i;
    json_t *e;
    json_array_foreach(timeline, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "phase")), phase) == 0)
            return e;
    }
    return NULL;
}

static void expect_data_phases(struct harness *h)
{
    char phases[512];
    unsigned fenced;
    journal_phases(h, phases, sizeof(phases), &fenced);
    assert_string_equal(phases, "detected,fenced,container_ready,data_copied,data_attached,"
                                "port_open,dns_updated,client_confirmed");
}

/* A VM failure, its host connected: the volume as the VM left it is copied
 * (snapshot -> chunks -> install, checksum checked), attached at `path`, and
 * the data age is 0 (the copy was taken after the VM died). */
static void test_data_follows_a_vm_failure(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.standby_extra = DATA_EXTRA;
    server_up(&h, "warm", "");
    agents_up(&h, "running");
    h.node1.data = h.sb1.data = true;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    expect_data_phases(&h);
    assert_true(h.sb1.got_verified);
    json_t *snap = agent_order(&h.node1, "volume_snapshot");
    assert_non_null(snap);
    assert_string_equal(json_string_value(json_object_get(snap, "volume")), "data");
    assert_true(agent_order_count(&h.node1, "volume_snapshot_read") >= 3); /* 200000 bytes */
    json_t *install = agent_order(&h.sb1, "data_install");
    assert_int_equal(json_integer_value(json_object_get(install, "taken_ms")),
                     h.node1.snap_taken_ms);
    json_t *attach = agent_order(&h.sb1, "data_attach");
    assert_string_equal(json_string_value(json_object_get(attach, "path")), "/srv/data");
    assert_string_equal(json_string_value(json_object_get(attach, "name")), "web1-c");
    cleanup_json json_t *s = service_json(&h);
    json_t *copied = timeline_phase(s, "data_copied");
    assert_string_equal(json_string_value(json_object_get(copied, "source")), "primary");
    assert_int_equal(json_integer_value(json_object_get(copied, "bytes")), 200000);
    json_t *attached = timeline_phase(s, "data_attached");
    assert_int_equal(json_integer_value(json_object_get(attached, "data_age_ms")), 0);
    json_t *data = json_object_get(s, "data");
    assert_int_equal(json_integer_value(json_object_get(data, "age_ms")), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(data, "last_copy"), "taken_ms")),
        h.node1.snap_taken_ms);
    harness_stop(&h);
}

/* The primary's host lost: the last copy on the standby is used, its age is
 * the detection time minus when it was taken. */
static void test_data_after_host_lost_is_the_standby_copy(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.standby_extra = DATA_EXTRA;
    server_up(&h, "warm", FAST_FENCE);
    agent_start(&h.node1, h.base, server_agent_port(h.srv), "node1", "host", "running");
    agent_start(&h.sb1, h.base, server_agent_port(h.srv), "sb1", "standby", NULL);
    json_object_set_new(h.sb1.hello, "containers", containers("running"));
    h.sb1.heartbeat = true;
    h.node1.data = h.sb1.data = true;
    int64_t taken = vcr_wall_ms() - 60000;
    h.sb1.data_taken_ms = taken;
    assert_true(run_until_ms(&h, both_welcomed, 5000));
    assert_true(run_until_ms(&h, recovered, 10000));
    expect_data_phases(&h);
    assert_null(agent_order(&h.node1, "volume_snapshot"));
    assert_null(agent_order(&h.sb1, "data_install"));
    cleanup_json json_t *s = service_json(&h);
    json_t *copied = timeline_phase(s, "data_copied");
    assert_string_equal(json_string_value(json_object_get(copied, "source")), "standby");
    assert_contains(json_string_value(json_object_get(copied, "why")), "not connected");
    int64_t detected =
        json_integer_value(json_object_get(json_object_get(s, "recovery"), "started_ms"));
    json_t *attached = timeline_phase(s, "data_attached");
    assert_int_equal(json_integer_value(json_object_get(attached, "taken_ms")), taken);
    assert_int_equal(json_integer_value(json_object_get(attached, "data_age_ms")),
                     detected - taken);
    assert_true(detected - taken >= 60000);
    harness_stop(&h);
}

/* No copy ever reached the standby: the service is recovered without its data,
 * and says so. */
static void test_data_none_on_the_standby(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.standby_extra = DATA_EXTRA;
    server_up(&h, "warm", "");
    agents_up(&h, "running");
    h.node1.data = h.sb1.data = true;
    h.node1.refuse_action = "volume_snapshot"; /* the fresh copy fails */
    h.node1.refuse_code = "failed";
    h.node1.refuse_times = 1;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    expect_data_phases(&h);
    cleanup_json json_t *s = service_json(&h);
    json_t *copied = timeline_phase(s, "data_copied");
    assert_string_equal(json_string_value(json_object_get(copied, "source")), "standby");
    assert_contains(json_string_value(json_object_get(copied, "why")), "refused by the test");
    json_t *attached = timeline_phase(s, "data_attached");
    assert_true(json_is_null(json_object_get(attached, "data_age_ms")));
    assert_contains(json_string_value(json_object_get(attached, "error")), "no data copy");
    harness_stop(&h);
}

static bool back_to_ok_data(struct harness *h)
{
    return state_is(h, "ok");
}

/* Failback brings the container's data back into the primary's volume before
 * the primary starts: data_export, chunks (checked), volume_restore, vm_start. */
static void test_failback_brings_the_data_back(void **state)
{
    (void)state;
    struct harness h;
    harness_open(&h, true);
    h.standby_extra = DATA_EXTRA;
    server_up(&h, "warm", "");
    agents_up(&h, "running");
    h.node1.data = h.sb1.data = true;
    h.node1.plays_vm = true;
    vm_crashed(&h);
    assert_true(run_until_ms(&h, recovered, 10000));
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *ans = recovery_failback(server_recovery(h.srv), "web1", &err);
    if (ans == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(run_until_ms(&h, back_to_ok_data, 10000));
    assert_int_equal(h.node1.restores, 1);
    /* In that order: export, restore, then the start. */
    size_t i, export_at = 0, restore_at = 0, start_at = 0;
    json_t *m;
    json_array_foreach(h.node1.received, i, m)
    {
        const char *act = json_string_value(json_object_get(m, "action"));
        if (act && strcmp(act, "volume_restore") == 0)
            restore_at = i;
        if (act && strcmp(act, "vm_start") == 0)
            start_at = i;
    }
    assert_non_null(agent_order(&h.sb1, "data_export"));
    json_array_foreach(h.sb1.received, i, m)
    {
        const char *act = json_string_value(json_object_get(m, "action"));
        if (act && strcmp(act, "data_export") == 0)
            export_at = i + 1;
    }
    assert_true(export_at > 0 && restore_at > 0 && start_at > restore_at);
    assert_string_equal(h.dns.address, PRIMARY);
    cleanup_json json_t *back = journal_last(&h, "failback");
    assert_non_null(back);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_services_valid),
        cmocka_unit_test(test_config_services_at_scale),
        cmocka_unit_test(test_config_services_dual_stack),
        cmocka_unit_test(test_config_services_each_bad_field),
        cmocka_unit_test(test_config_vm_standby_modes),
        cmocka_unit_test(test_config_standby_privileged),
        cmocka_unit_test(test_config_images_valid),
        cmocka_unit_test(test_config_images_each_bad_field),
        cmocka_unit_test(test_config_fence_timeout_bounds),
        cmocka_unit_test(test_config_default_timeouts_invariants),
        cmocka_unit_test(test_vm_crash_warm),
        cmocka_unit_test(test_dual_stack_switch_moves_a_and_aaaa),
        cmocka_unit_test(test_dual_stack_port_needs_the_ipv6_side),
        cmocka_unit_test(test_dual_stack_with_an_ipv6_dns_server),
        cmocka_unit_test(test_dual_stack_confirmation_needs_the_aaaa_record),
        cmocka_unit_test(test_check_reaches_ipv6),
        cmocka_unit_test(test_vm_crash_cold_creates_container),
        cmocka_unit_test(test_cold_container_waits_for_the_standby_session),
        cmocka_unit_test(test_host_lost_waits_fence_timeout),
        cmocka_unit_test(test_unanswered_kill_cuts_the_host_off_then_waits),
        cmocka_unit_test(test_self_fence_off_no_switch_without_confirmed_kill),
        cmocka_unit_test(test_paused_watchdog_is_not_counted_on),
        cmocka_unit_test(test_dns_silent_fails_then_retry_succeeds),
        cmocka_unit_test(test_restart_mid_recovery_resumes),
        cmocka_unit_test(test_service_probe_failure_then_failback),
        cmocka_unit_test(test_probe_waits_for_the_first_answer),
        cmocka_unit_test(test_migration_copies_images_and_moves_the_container),
        cmocka_unit_test(test_migration_whose_source_is_lost),
        cmocka_unit_test(test_migration_without_predump_and_rollback),
        cmocka_unit_test(test_migration_unpack_pre_unknown_goes_on),
        cmocka_unit_test(test_migration_unpack_pre_refused_stops_before_the_dump),
        cmocka_unit_test(test_migration_without_precopy_by_choice),
        cmocka_unit_test(test_migration_carries_the_data_volume),
        cmocka_unit_test(test_migration_without_attached_data_carries_none),
        cmocka_unit_test(test_migration_refused_when_the_target_lacks_space),
        cmocka_unit_test(test_migration_with_data_rolls_back_with_the_data),
        cmocka_unit_test(test_migration_end_waits_for_fresh_reports),
        cmocka_unit_test(test_migration_policy_moves_the_busiest_container),
        cmocka_unit_test(test_migration_policy_starts_a_spare_target),
        cmocka_unit_test(test_primary_hung_from_start_is_detected_after_boot_grace),
        cmocka_unit_test(test_standby_silent_with_an_order_is_lost),
        cmocka_unit_test(test_primary_found_crashed_in_hello),
        cmocka_unit_test(test_config_provision_warm),
        cmocka_unit_test(test_provision_creates_an_absent_warm_container_once),
        cmocka_unit_test(test_provision_starts_a_stopped_warm_container),
        cmocka_unit_test(test_provision_retries_a_failed_create_after_the_backoff),
        cmocka_unit_test(test_provision_backs_off_longest_after_image_checksum),
        cmocka_unit_test(test_provision_leaves_cold_services_alone),
        cmocka_unit_test(test_provision_off),
        cmocka_unit_test(test_provision_follows_a_migrated_container),
        cmocka_unit_test(test_provision_leaves_a_moving_container_alone),
        cmocka_unit_test(test_provision_waits_while_recovering_or_recovered),
        cmocka_unit_test(test_primary_restart_opens_the_boot_grace),
        cmocka_unit_test(test_stopped_primary_reads_stopped),
        cmocka_unit_test(test_probe_without_descriptors_is_inconclusive),
        cmocka_unit_test(test_agent_connections_are_capped),
        cmocka_unit_test(test_failed_clears_when_the_primary_answers),
        cmocka_unit_test(test_reset_clears_a_failed_recovery),
        cmocka_unit_test(test_warm_recovery_starts_a_stopped_container),
        cmocka_unit_test(test_warm_recovery_fails_at_once_when_the_standby_is_lost),
        cmocka_unit_test(test_warm_recovery_falls_back_to_the_fallback_host),
        cmocka_unit_test(test_returning_primary_is_fenced_until_failback),
        cmocka_unit_test(test_port_failure_keeps_its_cause),
        cmocka_unit_test(test_recovery_holds_while_its_state_cannot_be_saved),
        cmocka_unit_test(test_container_refusal_codes),
        cmocka_unit_test(test_clearing_a_failed_recovery_puts_dns_back),
        cmocka_unit_test(test_check_redis),
        cmocka_unit_test(test_failback_from_failed_after_the_switch),
        cmocka_unit_test(test_address_takeover_then_released_before_the_primary_starts),
        cmocka_unit_test(test_hook_switch_runs_at_recovery_and_failback),
        cmocka_unit_test(test_hook_switch_status_and_deadline),
        cmocka_unit_test(test_config_hook),
        cmocka_unit_test(test_refused_address_takeover_leaves_only_failback),
        cmocka_unit_test(test_failback_that_fails_leaves_the_standby_serving),
        cmocka_unit_test(test_auto_failback_then_flapping_suspends_it),
        cmocka_unit_test(test_auto_failback_period_starts_again_each_recovery),
        cmocka_unit_test(test_operator_stop_is_maintenance_from_the_order),
        cmocka_unit_test(test_config_failback_policy),
        cmocka_unit_test(test_config_service_data),
        cmocka_unit_test(test_data_age),
        cmocka_unit_test(test_data_follows_a_vm_failure),
        cmocka_unit_test(test_data_after_host_lost_is_the_standby_copy),
        cmocka_unit_test(test_data_none_on_the_standby),
        cmocka_unit_test(test_failback_brings_the_data_back),
    };
    /* VCR_TEST_FILTER=PATTERN runs the matching tests only (cmocka's * and ?). */
    if (getenv("VCR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("VCR_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
