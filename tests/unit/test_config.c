/* Unit tests for the agent configuration (src/config/): the good file loads
 * into the plain struct; each bad field is rejected with a message naming the
 * field path and the bad value.  Bad files are variants of data/agent-good.yaml
 * with one line changed. */
#include <errno.h>
#include <setjmp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "config/agent_config.h"

static const char *data_dir(void)
{
    const char *d = getenv("VCR_TEST_DATA");
    return d ? d : "tests/unit/data";
}

static char *read_file(const char *path)
{
    cleanup_file FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    return buf;
}

/* Replaces every occurrence of from with to; returns a new string. */
static char *replace_all(const char *text, const char *from, const char *to)
{
    size_t cap = strlen(text) * 4 + 4096, len = 0;
    char *out = calloc(1, cap);
    const char *p = text, *hit;
    while ((hit = strstr(p, from)) != NULL) {
        len += (size_t)snprintf(out + len, cap - len, "%.*s%s", (int)(hit - p), p, to);
        p = hit + strlen(from);
    }
    snprintf(out + len, cap - len, "%s", p);
    return out;
}

/* Writes data/agent-good.yaml with `from` replaced by `to` to a temporary
 * file (data file names made absolute) and loads it. */
static struct vcr_agent_config *load_variant(const char *from, const char *to, vcr_error_t *err)
{
    cleanup_free char *good_path = NULL;
    assert_true(asprintf(&good_path, "%s/agent-good.yaml", data_dir()) > 0);
    cleanup_free char *text = read_file(good_path);
    cleanup_free char *changed = from ? replace_all(text, from, to) : strdup(text);
    if (from)
        assert_string_not_equal(changed, text);
    char abs_data[4096];
    assert_non_null(realpath(data_dir(), abs_data));
    static const char *const files[] = {"vmlinuz-test", "initrd-test", "fake-qemu", "agent.key"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        cleanup_free char *abs = NULL;
        assert_true(asprintf(&abs, "%s/%s", abs_data, files[i]) > 0);
        char *next = replace_all(changed, files[i], abs);
        free(changed);
        changed = next;
    }
    char path[] = "/tmp/vcr-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, changed, strlen(changed)), (ssize_t)strlen(changed));
    close(fd);
    struct vcr_agent_config *cfg = vcr_agent_config_load(path, err);
    unlink(path);
    return cfg;
}

/* Loads the variant, expects failure and every needle in the message. */
static void expect_rejected(const char *from, const char *to, ...)
{
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_variant(from, to, &err);
    if (cfg != NULL) {
        vcr_agent_config_free(cfg);
        fail_msg("`%s` -> `%s` was accepted", from, to);
    }
    assert_non_null(err);
    assert_int_equal(vcr_error_status(err), EINVAL);
    va_list ap;
    va_start(ap, to);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (strstr(vcr_error_msg(err), needle) == NULL)
            fail_msg("message lacks `%s`: %s", needle, vcr_error_msg(err));
    va_end(ap);
}

/* The server link's TLS keys (docs/security.md): all three or none, not with
 * `insecure: true`, tls_server_name a DNS name or an IPv4 address.  (The files'
 * contents are checked when the agent builds its context: test_pki.c.) */
static void test_tls_keys(void **state)
{
    (void)state;
    const char *from = "agent_key_file: agent.key";
    expect_rejected(from, "agent_key_file: agent.key\ntls_ca_file: agent.key\n", "tls_cert_file",
                    "missing", "insecure: true", NULL);
    expect_rejected(from,
                    "agent_key_file: agent.key\ntls_ca_file: agent.key\ntls_cert_file: "
                    "agent.key\ntls_key_file: /nonexistent/k\n",
                    "tls_key_file", "/nonexistent/k", NULL);
    expect_rejected(from, "agent_key_file: agent.key\ninsecure: true\ntls_ca_file: agent.key\n",
                    "insecure", "tls_* keys", NULL);
    expect_rejected(from, "agent_key_file: agent.key\ninsecure: maybe\n", "insecure", "maybe",
                    NULL);
    expect_rejected(from,
                    "agent_key_file: agent.key\ntls_ca_file: agent.key\ntls_cert_file: "
                    "agent.key\ntls_key_file: agent.key\ntls_server_name: Bad_Name\n",
                    "tls_server_name", "`Bad_Name`", NULL);
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg =
        load_variant(from, "agent_key_file: agent.key\ninsecure: true\n", &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(cfg->insecure);
    assert_null(cfg->tls_ca_file);
    vcr_agent_config_free(cfg);
    cfg = load_variant(from,
                       "agent_key_file: agent.key\ntls_ca_file: agent.key\ntls_cert_file: "
                       "agent.key\ntls_key_file: agent.key\ntls_server_name: vcr.lab\n",
                       &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_false(cfg->insecure);
    assert_non_null(strstr(cfg->tls_key_file, "/agent.key"));
    assert_string_equal(cfg->tls_server_name, "vcr.lab");
    vcr_agent_config_free(cfg);
}

static void test_good_file_loads(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *path = NULL;
    assert_true(asprintf(&path, "%s/agent-good.yaml", data_dir()) > 0);
    struct vcr_agent_config *cfg = vcr_agent_config_load(path, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->host, "host1");
    assert_string_equal(cfg->server, "10.77.0.1:7070");
    assert_string_equal(cfg->state_dir, "/run/vcrlab/agent-host1");
    assert_int_equal(cfg->accel, VCR_ACCEL_AUTO);
    assert_int_equal(cfg->sample_interval_ms, 1000);
    assert_int_equal(cfg->probe_deadline_ms, 20000);
    assert_non_null(strstr(cfg->probe_kernel, "/vmlinuz-test"));
    assert_true(cfg->probe_kernel[0] == '/');
    assert_non_null(strstr(cfg->agent_key_file, "/agent.key"));
    assert_int_equal(cfg->n_vms, 2);
    const struct vcr_vm_spec *web1 = &cfg->vms[0];
    assert_string_equal(web1->name, "web1");
    assert_int_equal(web1->memory_mb, 256);
    assert_int_equal(web1->vcpus, 1);
    assert_string_equal(web1->mac, "52:54:00:77:00:11");
    assert_string_equal(web1->tap, "tap0");
    assert_string_equal(web1->address, "10.77.0.11/24");
    assert_string_equal(web1->ip, "10.77.0.11");
    assert_int_equal(web1->prefix, 24);
    assert_string_equal(web1->gateway, "10.77.0.1");
    assert_string_equal(web1->kernel_args, "vcr.dns=10.77.0.1");
    assert_true(web1->autostart);
    const struct vcr_vm_spec *web2 = &cfg->vms[1];
    assert_string_equal(web2->name, "web2");
    assert_string_equal(web2->mac, "52:54:00:77:00:ab");
    assert_int_equal(web2->vcpus, 2);
    assert_null(web2->gateway);
    assert_null(web2->kernel_args);
    assert_true(web2->autostart); /* the default */
    vcr_agent_config_free(cfg);
}

static void test_defaults_and_bare_vms_key(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    /* As the lab's write_agent_config emits it for a host without VMs. */
    struct vcr_agent_config *cfg = load_variant("accel: auto\n", "accel: tcg\n", &err);
    assert_non_null(cfg);
    vcr_agent_config_free(cfg);

    char path[] = "/tmp/vcr-test-config-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "host: h\nserver: s:1\nstate_dir: /tmp/x\naccel: tcg\n"
                       "qemu: /bin/sh\nvms:\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cfg = vcr_agent_config_load(path, &err);
    unlink(path);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_vms, 0);
    assert_int_equal(cfg->sample_interval_ms, VCR_SAMPLE_INTERVAL_MS_DEF);
    assert_int_equal(cfg->accel, VCR_ACCEL_TCG);
    assert_null(cfg->probe_kernel);
    assert_null(cfg->agent_key_file);
    assert_string_equal(cfg->ram_dir, VCR_RAM_DIR_DEF);
    vcr_agent_config_free(cfg);
}

/* qemu_user (docs/security.md, "Least privilege"): an existing user other
 * than uid 0, resolved at load; `root` keeps QEMU as root; the default is
 * vcr-qemu (made by the package and the lab). */
static void test_qemu_user(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_variant(NULL, NULL, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->qemu_user, VCR_QEMU_USER_DEF);
    struct passwd *pw = getpwnam(VCR_QEMU_USER_DEF);
    if (pw == NULL)
        fail_msg("user `%s` missing: scripts/install-deps makes it", VCR_QEMU_USER_DEF);
    assert_int_equal(cfg->qemu_uid, pw->pw_uid);
    assert_int_equal(cfg->qemu_gid, pw->pw_gid);
    vcr_agent_config_free(cfg);

    cfg = load_variant("accel: auto\n", "accel: auto\nqemu_user: root\n", &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->qemu_user, "root");
    assert_int_equal(cfg->qemu_uid, 0);
    vcr_agent_config_free(cfg);

    expect_rejected("accel: auto\n", "accel: auto\nqemu_user: vcr-no-such-user\n",
                    "qemu_user:", "`vcr-no-such-user`: no such user", "useradd --system", NULL);
    expect_rejected("accel: auto\n", "accel: auto\nqemu_user: sync2\n", "qemu_user:", NULL);
}

/* ram_dir: an existing absolute directory; its filesystem type is checked when a
 * host agent starts (src/agent/host/ram_dir.c), not at load. */
static void test_ram_dir(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    char dir[] = "/tmp/vcr-test-ramdir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *line = NULL;
    assert_true(asprintf(&line, "accel: auto\nram_dir: %s\n", dir) > 0);
    struct vcr_agent_config *cfg = load_variant("accel: auto\n", line, &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->ram_dir, dir);
    vcr_agent_config_free(cfg);
    assert_int_equal(rmdir(dir), 0);

    expect_rejected("accel: auto\n", "accel: auto\nram_dir: hugepages\n",
                    "ram_dir:", "`hugepages` is not an absolute path",
                    "allowed: an absolute path of an existing directory on tmpfs (default "
                    "/dev/shm) or hugetlbfs",
                    NULL);
    expect_rejected("accel: auto\n", "accel: auto\nram_dir: /no/such/dir\n",
                    "ram_dir:", "`/no/such/dir` does not exist", "allowed:", NULL);
    expect_rejected("accel: auto\n", "accel: auto\nram_dir: /etc/hostname\n",
                    "ram_dir:", "`/etc/hostname` is not a directory", "allowed:", NULL);
}

/* qemu_allowed (docs/config-vm.md): executables, resolved; none: NULL list. */
static void test_qemu_allowed(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_variant(
        "accel: auto\n", "accel: auto\nqemu_allowed:\n  - /bin/sh\n  - /bin/true\n", &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_qemu_allowed, 2);
    assert_string_equal(cfg->qemu_allowed[0], "/bin/sh");
    vcr_agent_config_free(cfg);
    cfg = load_variant("sample_interval_ms: 1000\n", "sample_interval_ms: 2000\n", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_qemu_allowed, 0);
    vcr_agent_config_free(cfg);
    expect_rejected("accel: auto\n", "accel: auto\nqemu_allowed:\n  - /no/such/qemu\n",
                    "qemu_allowed[0]", "/no/such/qemu", NULL);
    expect_rejected("accel: auto\n", "accel: auto\nqemu_allowed:\n  - /bin/true\n  - agent.key\n",
                    "qemu_allowed[1]", "agent.key", "allowed: an executable file", NULL);
}

/* `server:` as a list (redundant servers, docs/ha.md): joined by commas, every
 * entry checked; the list's errors name the bad entry. */
static void test_server_list(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg =
        load_variant("server: 10.77.0.1:7070", "server: [10.77.0.1:7070, 10.77.0.2:7070]", &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->server, "10.77.0.1:7070,10.77.0.2:7070");
    vcr_agent_config_free(cfg);
    /* Every other key is read the same way with a list: qemu_allowed was missing
     * from the list's schema, so such a file was refused. */
    cfg = load_variant("server: 10.77.0.1:7070",
                       "server: [10.77.0.1:7070, 10.77.0.2:7070]\nqemu_allowed:\n  - /bin/true",
                       &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->n_qemu_allowed, 1);
    assert_string_equal(cfg->qemu_allowed[0], "/bin/true");
    vcr_agent_config_free(cfg);
    expect_rejected("server: 10.77.0.1:7070", "server: [10.77.0.1:7070, 10.77.0.2]", "server",
                    "`10.77.0.2`", "HOST:PORT", NULL);
    expect_rejected("server: 10.77.0.1:7070", "server: []", "server", NULL);
}

/* Writes text to a temporary file and loads it. */
static struct vcr_agent_config *load_text(const char *text, vcr_error_t *err)
{
    char path[] = "/tmp/vcr-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct vcr_agent_config *cfg = vcr_agent_config_load(path, err);
    unlink(path);
    return cfg;
}

static void expect_text_rejected(const char *text, const char *needle1, const char *needle2)
{
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_text(text, &err);
    if (cfg != NULL) {
        vcr_agent_config_free(cfg);
        fail_msg("accepted: %s", text);
    }
    if (strstr(vcr_error_msg(err), needle1) == NULL || strstr(vcr_error_msg(err), needle2) == NULL)
        fail_msg("message lacks `%s` or `%s`: %s", needle1, needle2, vcr_error_msg(err));
}

/* `libvirt: {uri, domains}` (the libvirt role, docs/agent.md): no probe needed with
 * accel auto; names checked like vms[].name, each once; not beside `vms`. */
static void test_libvirt_section(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
#define LV_HEAD "host: h\nserver: s:1\nstate_dir: /tmp/x\nqemu: /bin/sh\n"
    struct vcr_agent_config *cfg =
        load_text(LV_HEAD "libvirt:\n  uri: \"qemu:///system?socket=/tmp/s\"\n"
                          "  domains: [web1, db-2]\n",
                  &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->libvirt_uri, "qemu:///system?socket=/tmp/s");
    assert_int_equal(cfg->n_libvirt_domains, 2);
    assert_string_equal(cfg->libvirt_domains[1], "db-2");
    assert_int_equal(cfg->n_vms, 0);
    vcr_agent_config_free(cfg);
    expect_text_rejected(LV_HEAD "libvirt:\n  uri: qemu:///system\n  domains: [Web_1]\n",
                         "libvirt.domains[0]", "`Web_1`");
    expect_text_rejected(LV_HEAD "libvirt:\n  uri: qemu:///system\n  domains: [a, b, a]\n",
                         "libvirt.domains[2]", "listed twice");
    expect_text_rejected(LV_HEAD "libvirt:\n  uri: qemu:///system\n  domains: []\n", "domains", "");
    expect_text_rejected(LV_HEAD "libvirt:\n  domains: [a]\n", "uri", "");
    expect_rejected("accel: auto\n", "accel: auto\nlibvirt: {uri: qemu:///system, domains: [b]}\n",
                    "libvirt", "beside `vms`", NULL);
#undef LV_HEAD
}

static void test_bad_host_name(void **state)
{
    (void)state;
    expect_rejected("host: host1", "host: Host_1", "host", "`Host_1`", "a-z, 0-9", NULL);
}

static void test_bad_vm_name(void **state)
{
    (void)state;
    expect_rejected("name: web2", "name: Web_2", "vms[1].name", "`Web_2`", NULL);
    expect_rejected("name: web2", "name: a-name-that-is-longer-than-32-chars", "vms[1].name",
                    "a-name-that-is-longer-than-32-chars", "1 to 32", NULL);
}

static void test_duplicate_vm_name(void **state)
{
    (void)state;
    expect_rejected("name: web2", "name: web1", "vms[1].name", "`web1`", "already used by vms[0]",
                    NULL);
}

static void test_bad_memory_mb(void **state)
{
    (void)state;
    expect_rejected("memory_mb: 512", "memory_mb: 32", "vms[1].memory_mb", "32", "64..65536", NULL);
    expect_rejected("memory_mb: 512", "memory_mb: lots", "vms[1].memory_mb", "`lots`", "64..65536",
                    NULL);
}

static void test_bad_vcpus(void **state)
{
    (void)state;
    expect_rejected("vcpus: 2", "vcpus: 0", "vms[1].vcpus", "0 is out of range", "1..64", NULL);
    expect_rejected("vcpus: 2", "vcpus: 65", "vms[1].vcpus", "65", "1..64", NULL);
}

static void test_image_path_missing(void **state)
{
    (void)state;
    expect_rejected(
        "image: {kernel: vmlinuz-test, initrd: initrd-test}\n    mac: \"52:54:00:77:00:AB\"",
        "image: {kernel: /nonexistent/vmlinuz, initrd: initrd-test}\n    mac: "
        "\"52:54:00:77:00:AB\"",
        "vms[1].image.kernel", "/nonexistent/vmlinuz", "No such file", NULL);
    expect_rejected(
        "image: {kernel: vmlinuz-test, initrd: initrd-test}\n    mac: \"52:54:00:77:00:AB\"",
        "image: {kernel: vmlinuz-test}\n    mac: \"52:54:00:77:00:AB\"", "vms[1].image.initrd",
        "missing", NULL);
}

static void test_mac_malformed(void **state)
{
    (void)state;
    expect_rejected("52:54:00:77:00:AB", "52:54:00:77:0012", "vms[1].mac", "`52:54:00:77:0012`",
                    "not a MAC address", NULL);
    expect_rejected("52:54:00:77:00:AB", "52:54:00:77:00:zz", "vms[1].mac", "52:54:00:77:00:zz",
                    NULL);
}

static void test_mac_multicast(void **state)
{
    (void)state;
    expect_rejected("52:54:00:77:00:AB", "01:00:5e:00:00:01", "vms[1].mac", "`01:00:5e:00:00:01`",
                    "multicast", "unicast", NULL);
}

static void test_mac_duplicate(void **state)
{
    (void)state;
    expect_rejected("52:54:00:77:00:AB", "52:54:00:77:00:11", "vms[1].mac", "52:54:00:77:00:11",
                    "already used by vms[0]", NULL);
    /* MACs compare after normalisation to lower case. */
    expect_rejected("52:54:00:77:00:11", "52:54:00:77:00:ab", "vms[1].mac", "already used", NULL);
}

static void test_bad_tap(void **state)
{
    (void)state;
    expect_rejected("tap: tap1", "tap: tap/1", "vms[1].tap", "`tap/1`", "interface name", NULL);
    expect_rejected("tap: tap1", "tap: a-very-long-tap-name", "vms[1].tap", "a-very-long-tap-name",
                    NULL);
    expect_rejected("tap: tap1", "tap: tap0", "vms[1].tap", "`tap0`", "already used", NULL);
}

static void test_bad_address(void **state)
{
    (void)state;
    expect_rejected("address: 10.77.0.12/24", "address: 10.77.0.300/24", "vms[1].address",
                    "`10.77.0.300/24`", "A.B.C.D/N", NULL);
    expect_rejected("address: 10.77.0.12/24", "address: 10.77.0.12", "vms[1].address",
                    "`10.77.0.12`", NULL);
    expect_rejected("address: 10.77.0.12/24", "address: 10.77.0.12/33", "vms[1].address",
                    "10.77.0.12/33", NULL);
    expect_rejected("address: 10.77.0.12/24", "address: 10.77.0.11/16", "vms[1].address",
                    "`10.77.0.11`", "already used by vms[0]", NULL);
}

static void test_bad_gateway(void **state)
{
    (void)state;
    expect_rejected("gateway: 10.77.0.1", "gateway: 10.77.0", "vms[0].gateway", "`10.77.0`", "IPv4",
                    NULL);
    expect_rejected("gateway: 10.77.0.1", "gateway: 192.168.1.1", "vms[0].gateway", "`192.168.1.1`",
                    "10.77.0.11/24", NULL);
}

static void test_bad_sample_interval(void **state)
{
    (void)state;
    expect_rejected("sample_interval_ms: 1000", "sample_interval_ms: 50", "sample_interval_ms",
                    "50", "100..60000", NULL);
    expect_rejected("sample_interval_ms: 1000", "sample_interval_ms: 1s", "sample_interval_ms",
                    "`1s`", "100..60000", NULL);
}

static void test_bad_accel(void **state)
{
    (void)state;
    expect_rejected("accel: auto", "accel: hvf", "accel", "`hvf`", "auto, kvm, tcg", NULL);
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_rejected("    tap: tap1\n", "    tap: tap1\n    disk: /x.img\n", "vms[1].disk",
                    "unknown key", "memory_mb", NULL);
    expect_rejected("host: host1\n", "host: host1\nport: 7\n", "port", "unknown key", "server",
                    NULL);
}

static void test_probe_required_for_auto(void **state)
{
    (void)state;
    expect_rejected("probe: {kernel: vmlinuz-test, initrd: initrd-test, deadline_ms: 20000}\n", "",
                    "probe", "accel is auto", NULL);
    expect_rejected("deadline_ms: 20000", "deadline_ms: 10", "probe.deadline_ms", "10",
                    "1000..600000", NULL);
}

static void test_other_fields(void **state)
{
    (void)state;
    expect_rejected("server: 10.77.0.1:7070", "server: 10.77.0.1", "server", "`10.77.0.1`",
                    "HOST:PORT", NULL);
    expect_rejected("server: 10.77.0.1:7070", "server: 10.77.0:7070", "server", "`10.77.0:7070`",
                    NULL);
    expect_rejected("server: 10.77.0.1:7070", "server: 10.77.0.1:70000", "server", "70000", NULL);
    expect_rejected("state_dir: /run/vcrlab/agent-host1", "state_dir: run/x", "state_dir",
                    "`run/x`", "absolute", NULL);
    expect_rejected("autostart: true", "autostart: maybe", "vms[0].autostart", "`maybe`",
                    "true or false", NULL);
    expect_rejected("kernel_args: \"vcr.dns=10.77.0.1\"", "kernel_args: \"a\\nb\"",
                    "vms[0].kernel_args", "control character", NULL);
    expect_rejected("qemu: fake-qemu", "qemu: vmlinuz-test", "qemu", "vmlinuz-test", "executable",
                    NULL);
    expect_rejected("host: host1\n", "host: host1\nhost: host2\n", "host", "duplicate key", NULL);
    expect_rejected("    memory_mb: 512\n", "", "vms[1].memory_mb", "missing", NULL);
}

static void test_all_problems_reported_at_once(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    assert_null(load_variant("    mac: \"52:54:00:77:00:AB\"\n    tap: tap1\n",
                             "    mac: \"01:54:00:77:00:12\"\n    tap: tap/1\n", &err));
    assert_non_null(strstr(vcr_error_msg(err), "2 problems"));
    assert_non_null(strstr(vcr_error_msg(err), "vms[1].mac"));
    assert_non_null(strstr(vcr_error_msg(err), "vms[1].tap"));
}

static void test_syntax_error_and_missing_file(void **state)
{
    (void)state;
    expect_rejected("host: host1\n", "host: [host1\n", "host", NULL);
    cleanup_error vcr_error_t err = NULL;
    assert_null(vcr_agent_config_load("/nonexistent/agent.yaml", &err));
    assert_int_equal(vcr_error_status(err), ENOENT);
    assert_non_null(strstr(vcr_error_msg(err), "/nonexistent/agent.yaml"));
}

static void test_syntax_helpers(void **state)
{
    (void)state;
    uint8_t mac[6];
    assert_true(vcr_mac_parse("52:54:00:AB:cd:11", mac));
    assert_int_equal(mac[3], 0xab);
    assert_false(vcr_mac_parse("52-54-00-ab-cd-11", mac));
    uint32_t ip;
    assert_true(vcr_ipv4_parse("10.77.0.1", &ip));
    assert_int_equal(ip, 0x0a4d0001);
    assert_false(vcr_ipv4_parse("10.77.1", &ip));
    assert_true(vcr_name_is_valid("web-1"));
    assert_false(vcr_name_is_valid(""));
    assert_false(vcr_name_is_valid("web.1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file_loads),
        cmocka_unit_test(test_tls_keys),
        cmocka_unit_test(test_defaults_and_bare_vms_key),
        cmocka_unit_test(test_ram_dir),
        cmocka_unit_test(test_qemu_user),
        cmocka_unit_test(test_qemu_allowed),
        cmocka_unit_test(test_server_list),
        cmocka_unit_test(test_libvirt_section),
        cmocka_unit_test(test_bad_host_name),
        cmocka_unit_test(test_bad_vm_name),
        cmocka_unit_test(test_duplicate_vm_name),
        cmocka_unit_test(test_bad_memory_mb),
        cmocka_unit_test(test_bad_vcpus),
        cmocka_unit_test(test_image_path_missing),
        cmocka_unit_test(test_mac_malformed),
        cmocka_unit_test(test_mac_multicast),
        cmocka_unit_test(test_mac_duplicate),
        cmocka_unit_test(test_bad_tap),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_bad_gateway),
        cmocka_unit_test(test_bad_sample_interval),
        cmocka_unit_test(test_bad_accel),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_probe_required_for_auto),
        cmocka_unit_test(test_other_fields),
        cmocka_unit_test(test_all_problems_reported_at_once),
        cmocka_unit_test(test_syntax_error_and_missing_file),
        cmocka_unit_test(test_syntax_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
