/* Unit tests for src/dns: the UPDATE message, key files, validation, and the
 * asynchronous exchange against UDP sockets on 127.0.0.1 that stay silent or play a
 * server.  No sleeps: the loop runs until the callback fires, under a deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <ldns/ldns.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/err.h"
#include "dns/dns_update.h"
#include "dns/dns_update_priv.h"

#define KEY_NAME     "vcr-update"
#define KEY_SECRET   "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_SECRET "BBECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define DEADLINE_MS  2500

static struct dns_update_config lab_config(void)
{
    return (struct dns_update_config){
        .server = "127.0.0.1",
        .zone = "vcr.lab",
        .key_name = KEY_NAME,
        .key_secret = KEY_SECRET,
    };
}

static bool contains(const char *haystack, const char *needle)
{
    return haystack && strstr(haystack, needle) != NULL;
}

#define assert_contains(haystack, needle)                                                          \
    do {                                                                                           \
        if (!contains((haystack), (needle)))                                                       \
            fail_msg("`%s` does not contain `%s`", (haystack) ? (haystack) : "(null)", (needle));  \
    } while (0)

/* ---- the message ---- */

static void test_message_is_signed_update_replacing_a_records(void **state)
{
    (void)state;
    struct dns_update_config cfg = lab_config();
    cleanup_error vcr_error_t err = NULL;
    cleanup_free uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(
        dns_update_message(&cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, &wire, &len, &err), 0);

    /* The TSIG RR is the one additional record, counted in the header. */
    assert_int_equal(LDNS_ARCOUNT(wire), 1);
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, wire, len), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_get_opcode(pkt), LDNS_PACKET_UPDATE);
    assert_false(ldns_pkt_rd(pkt));
    assert_false(ldns_pkt_qr(pkt));

    ldns_rdf *zone = ldns_dname_new_frm_str("vcr.lab.");
    ldns_rdf *owner = ldns_dname_new_frm_str("web1.vcr.lab.");
    assert_int_equal(ldns_update_zocount(pkt), 1);
    ldns_rr *zo = ldns_rr_list_rr(ldns_pkt_question(pkt), 0);
    assert_int_equal(ldns_dname_compare(ldns_rr_owner(zo), zone), 0);
    assert_int_equal(ldns_rr_get_type(zo), LDNS_RR_TYPE_SOA);
    assert_int_equal(ldns_rr_get_class(zo), LDNS_RR_CLASS_IN);
    assert_int_equal(ldns_update_prcount(pkt), 0);

    assert_int_equal(ldns_update_upcount(pkt), 2);
    ldns_rr *del = ldns_rr_list_rr(ldns_pkt_authority(pkt), 0);
    assert_int_equal(ldns_dname_compare(ldns_rr_owner(del), owner), 0);
    assert_int_equal(ldns_rr_get_type(del), LDNS_RR_TYPE_A);
    assert_int_equal(ldns_rr_get_class(del), LDNS_RR_CLASS_ANY);
    assert_int_equal(ldns_rr_ttl(del), 0);
    assert_int_equal(ldns_rr_rd_count(del), 0);
    ldns_rr *add = ldns_rr_list_rr(ldns_pkt_authority(pkt), 1);
    assert_int_equal(ldns_dname_compare(ldns_rr_owner(add), owner), 0);
    assert_int_equal(ldns_rr_get_type(add), LDNS_RR_TYPE_A);
    assert_int_equal(ldns_rr_get_class(add), LDNS_RR_CLASS_IN);
    assert_int_equal(ldns_rr_ttl(add), 5);
    cleanup_free char *a = ldns_rdf2str(ldns_rr_rdf(add, 0));
    assert_string_equal(a, "10.77.0.11");

    ldns_rr *tsig = ldns_pkt_tsig(pkt);
    assert_non_null(tsig);
    cleanup_free char *key = ldns_rdf2str(ldns_rr_owner(tsig));
    cleanup_free char *alg = ldns_rdf2str(ldns_rr_rdf(tsig, 0));
    assert_string_equal(key, KEY_NAME ".");
    assert_string_equal(alg, "hmac-sha256.");
    /* What the server does first: verify the request with the shared key. */
    assert_true(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, KEY_SECRET, NULL));
    assert_false(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, OTHER_SECRET, NULL));

    ldns_rdf_deep_free(zone);
    ldns_rdf_deep_free(owner);
    ldns_pkt_free(pkt);
}

/* A dual-stack name: the A and the AAAA RRsets are each deleted and re-added, in
 * one message (the server applies it atomically); a v6-only update leaves A alone. */
static void test_message_replaces_a_and_aaaa_in_one_update(void **state)
{
    (void)state;
    struct dns_update_config cfg = lab_config();
    cleanup_error vcr_error_t err = NULL;
    cleanup_free uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(
        dns_update_message(&cfg, "web1.vcr.lab", 5, "10.77.0.11", "fd77::11", &wire, &len, &err),
        0);
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, wire, len), LDNS_STATUS_OK);
    ldns_rdf *owner = ldns_dname_new_frm_str("web1.vcr.lab.");
    assert_int_equal(ldns_update_upcount(pkt), 4);
    const struct {
        ldns_rr_type type;
        ldns_rr_class class;
        uint32_t ttl;
        const char *rdata; /* NULL: none (delete the RRset) */
    } want[] = {
        {LDNS_RR_TYPE_A, LDNS_RR_CLASS_ANY, 0, NULL},
        {LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 5, "10.77.0.11"},
        {LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_ANY, 0, NULL},
        {LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, 5, "fd77::11"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_authority(pkt), i);
        assert_int_equal(ldns_dname_compare(ldns_rr_owner(rr), owner), 0);
        assert_int_equal(ldns_rr_get_type(rr), want[i].type);
        assert_int_equal(ldns_rr_get_class(rr), want[i].class);
        assert_int_equal(ldns_rr_ttl(rr), want[i].ttl);
        if (want[i].rdata == NULL) {
            assert_int_equal(ldns_rr_rd_count(rr), 0);
        } else {
            cleanup_free char *text = ldns_rdf2str(ldns_rr_rdf(rr, 0));
            assert_string_equal(text, want[i].rdata);
        }
    }
    assert_true(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, KEY_SECRET, NULL));
    ldns_pkt_free(pkt);
    free(wire);
    wire = NULL;

    assert_int_equal(
        dns_update_message(&cfg, "web1.vcr.lab", 5, NULL, "fd77::12", &wire, &len, &err), 0);
    assert_int_equal(ldns_wire2pkt(&pkt, wire, len), LDNS_STATUS_OK);
    assert_int_equal(ldns_update_upcount(pkt), 2);
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_authority(pkt), i)),
                         LDNS_RR_TYPE_AAAA);
    ldns_pkt_free(pkt);
    ldns_rdf_deep_free(owner);
}

/* ---- validation ---- */

struct bad_input {
    const char *field, *value;
    const char *expected;
};

static void expect_rejected(const struct dns_update_config *cfg, const char *name, long ttl,
                            const char *addr, const char *addr6, const char *expected)
{
    cleanup_error vcr_error_t err = NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(dns_update_message(cfg, name, ttl, addr, addr6, &wire, &len, &err), -1);
    assert_null(wire);
    assert_contains(vcr_error_msg(err), expected);
    assert_int_equal(vcr_error_status(err), EINVAL);
}

/* A hmac-sha512 key signs with hmac-sha512 (tsig-keygen -a hmac-sha512). */
static void test_message_signed_with_hmac_sha512(void **state)
{
    (void)state;
    struct dns_update_config cfg = {.server = "10.77.0.1",
                                    .zone = "vcr.lab",
                                    .key_name = KEY_NAME,
                                    .key_secret = KEY_SECRET,
                                    .algorithm = "hmac-sha512"};
    cleanup_error vcr_error_t err = NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(
        dns_update_message(&cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, &wire, &len, &err), 0);
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, wire, len), LDNS_STATUS_OK);
    cleanup_free char *alg = ldns_rdf2str(ldns_rr_rdf(ldns_pkt_tsig(pkt), 0));
    assert_string_equal(alg, "hmac-sha512.");
    assert_true(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, KEY_SECRET, NULL));
    assert_false(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, OTHER_SECRET, NULL));
    ldns_pkt_free(pkt);
    free(wire);
}

/* The fence of redundant servers (docs/ha.md): a leader's update requires the zone's
 * fence TXT to be its term (RFC 2136 2.4.2: class IN, TTL 0, the value) and changes
 * only the A RRset; a claim requires the previous term (or, from none, 2.4.3: class
 * NONE, no rdata) and replaces the fence's TXT RRset by the new term. */
static void check_fence_txt(const ldns_rr *rr, ldns_rr_class class, const char *value)
{
    ldns_rdf *fence = ldns_dname_new_frm_str("_vcr-term.vcr.lab.");
    assert_int_equal(ldns_dname_compare(ldns_rr_owner(rr), fence), 0);
    ldns_rdf_deep_free(fence);
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_TXT);
    assert_int_equal(ldns_rr_get_class(rr), class);
    assert_int_equal(ldns_rr_ttl(rr), 0);
    if (value == NULL) {
        assert_int_equal(ldns_rr_rd_count(rr), 0);
        return;
    }
    assert_int_equal(ldns_rr_rd_count(rr), 1);
    cleanup_free char *text = ldns_rdf2str(ldns_rr_rdf(rr, 0));
    assert_string_equal(text, value);
}

static ldns_pkt *fence_message(int64_t term, int64_t claim, const char *name, const char *addr)
{
    struct dns_update_config cfg = {.server = "10.77.0.1",
                                    .zone = "vcr.lab",
                                    .key_name = KEY_NAME,
                                    .key_secret = KEY_SECRET,
                                    .fence_term = term,
                                    .fence_claim = claim};
    cleanup_error vcr_error_t err = NULL;
    cleanup_free uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(dns_update_message(&cfg, name, 5, addr, NULL, &wire, &len, &err), 0);
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, wire, len), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_get_opcode(pkt), LDNS_PACKET_UPDATE);
    assert_true(ldns_pkt_tsig_verify(pkt, wire, len, KEY_NAME, KEY_SECRET, NULL));
    return pkt;
}

static void test_message_fenced_by_term(void **state)
{
    (void)state;
    /* A leader of term 42 switches web1: prerequisite fence = "42", A replaced. */
    ldns_pkt *pkt = fence_message(42, 0, "web1.vcr.lab", "10.77.0.31");
    assert_int_equal(ldns_update_prcount(pkt), 1);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_answer(pkt), 0), LDNS_RR_CLASS_IN, "\"42\"");
    assert_int_equal(ldns_update_upcount(pkt), 2);
    assert_int_equal(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_authority(pkt), 0)), LDNS_RR_TYPE_A);
    assert_int_equal(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_authority(pkt), 1)), LDNS_RR_TYPE_A);
    ldns_pkt_free(pkt);

    /* Term 57 claims the zone from term 42: no A record touched. */
    pkt = fence_message(42, 57, NULL, NULL);
    assert_int_equal(ldns_update_prcount(pkt), 1);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_answer(pkt), 0), LDNS_RR_CLASS_IN, "\"42\"");
    assert_int_equal(ldns_update_upcount(pkt), 2);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_authority(pkt), 0), LDNS_RR_CLASS_ANY, NULL);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_authority(pkt), 1), LDNS_RR_CLASS_IN, "\"57\"");
    ldns_pkt_free(pkt);

    /* The first claim ever: the fence must not exist. */
    pkt = fence_message(0, 7, NULL, NULL);
    assert_int_equal(ldns_update_prcount(pkt), 1);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_answer(pkt), 0), LDNS_RR_CLASS_NONE, NULL);
    assert_int_equal(ldns_update_upcount(pkt), 2);
    check_fence_txt(ldns_rr_list_rr(ldns_pkt_authority(pkt), 1), LDNS_RR_CLASS_IN, "\"7\"");
    ldns_pkt_free(pkt);

    /* No fence (the single server): no prerequisite at all (as before). */
    pkt = fence_message(0, 0, "web1.vcr.lab", "10.77.0.31");
    assert_int_equal(ldns_update_prcount(pkt), 0);
    ldns_pkt_free(pkt);

    /* No name and no claim is no update. */
    struct dns_update_config cfg = {
        .server = "10.77.0.1", .zone = "vcr.lab", .key_name = KEY_NAME, .key_secret = KEY_SECRET};
    cleanup_error vcr_error_t err = NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(dns_update_message(&cfg, NULL, 5, NULL, NULL, &wire, &len, &err), -1);
}

static void test_validation_names_field_and_value(void **state)
{
    (void)state;
    const struct bad_input cases[] = {
        {"server", "10.0.0", "server: `10.0.0` is not an IPv4 (A.B.C.D) or IPv6 address"},
        {"server", "fd77::1::2", "server: `fd77::1::2` is not an IPv4 (A.B.C.D) or IPv6 address"},
        {"algorithm", "hmac-md5",
         "algorithm: `hmac-md5` is not supported; use one of hmac-sha256, hmac-sha512"},
        {"algorithm", "hmac-sha5120", "algorithm: `hmac-sha5120` is not supported"},
        {"zone", "", "zone: `` is not a valid domain name"},
        {"key_name", "", "key_name: `` is not a valid domain name"},
        {"key_secret", "not base64!", "key_secret: not valid base64"},
        {"name", "web1.other.lab", "name: `web1.other.lab` is not inside zone `vcr.lab`"},
        {"name", "evilvcr.lab", "name: `evilvcr.lab` is not inside zone `vcr.lab`"},
        {"addr", "10.77.0.256", "address: `10.77.0.256` is not an IPv4 address"},
        {"addr", "fe80::1", "address: `fe80::1` is not an IPv4 address"},
        {"addr6", "10.77.0.11", "address6: `10.77.0.11` is not an IPv6 address"},
        {"addr6", "fd77::1::2", "address6: `fd77::1::2` is not an IPv6 address"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dns_update_config cfg = lab_config();
        const char *name = "web1.vcr.lab", *addr = "10.77.0.11", *addr6 = NULL;
        const char *f = cases[i].field;
        if (strcmp(f, "server") == 0)
            cfg.server = cases[i].value;
        else if (strcmp(f, "algorithm") == 0)
            cfg.algorithm = cases[i].value;
        else if (strcmp(f, "zone") == 0)
            cfg.zone = cases[i].value;
        else if (strcmp(f, "key_name") == 0)
            cfg.key_name = cases[i].value;
        else if (strcmp(f, "key_secret") == 0)
            cfg.key_secret = cases[i].value;
        else if (strcmp(f, "name") == 0)
            name = cases[i].value;
        else if (strcmp(f, "addr6") == 0)
            addr6 = cases[i].value;
        else
            addr = cases[i].value;
        expect_rejected(&cfg, name, 5, addr, addr6, cases[i].expected);
    }
    struct dns_update_config cfg = lab_config();
    expect_rejected(&cfg, "web1.vcr.lab", -1, "10.77.0.11", NULL,
                    "ttl: `-1` is out of range; use 0..86400");
    expect_rejected(&cfg, "web1.vcr.lab", 86401, "10.77.0.11", NULL,
                    "ttl: `86401` is out of range; use 0..86400");
    expect_rejected(&cfg, "web1.vcr.lab", 5, NULL, NULL,
                    "address: none given; give an IPv4 address, an IPv6 address or both");
}

static void test_validation_accepts_bounds_and_apex(void **state)
{
    (void)state;
    struct dns_update_config cfg = lab_config();
    cfg.algorithm = "HMAC-SHA256.";
    const struct {
        const char *name;
        long ttl;
    } ok[] = {{"web1.vcr.lab", 0}, {"web1.vcr.lab.", 86400}, {"vcr.lab", 5}, {"A.B.VCR.LAB", 5}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cleanup_error vcr_error_t err = NULL;
        cleanup_free uint8_t *wire = NULL;
        size_t len = 0;
        int rc =
            dns_update_message(&cfg, ok[i].name, ok[i].ttl, "10.77.0.11", NULL, &wire, &len, &err);
        if (rc != 0)
            fail_msg("%s ttl %ld: %s", ok[i].name, ok[i].ttl, vcr_error_msg(err));
    }
}

static void test_retry_policy_out_of_range_is_rejected(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dns_update_config cfg = lab_config();
    cfg.retry = (struct dns_retry_policy){.first_timeout_ms = 500, .max_timeout_ms = 100};
    cleanup_error vcr_error_t err = NULL;
    assert_null(
        dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, NULL, NULL, &err));
    assert_contains(vcr_error_msg(err), "retry.max_timeout_ms: `100` is out of range; use 500..");
    vcr_error_release(&err);
    cfg.retry = (struct dns_retry_policy){.attempts = 11};
    assert_null(
        dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, NULL, NULL, &err));
    assert_contains(vcr_error_msg(err), "retry.attempts: `11` is out of range; use 1..10");
    event_base_free(base);
}

/* ---- key files ---- */

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/test_dns_keyXXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_key_file_as_written_by_tsig_keygen(void **state)
{
    (void)state;
    const char *texts[] = {
        "key \"vcr-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"" KEY_SECRET "\";\n};\n",
        "# lab key\n/* written\n by hand */ key vcr-update { // name unquoted\n"
        "  secret \"" KEY_SECRET "\"; algorithm \"HMAC-SHA256\"; };",
        "key \"vcr-update\" {\n\talgorithm hmac-sha512.;\n\tsecret \"" KEY_SECRET "\";\n};\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        cleanup_free char *path = write_temp(texts[i]);
        cleanup_error vcr_error_t err = NULL;
        struct dns_tsig_key key = {0};
        int rc = dns_tsig_key_load(path, &key, &err);
        unlink(path);
        if (rc != 0)
            fail_msg("text %zu: %s", i, vcr_error_msg(err));
        assert_string_equal(key.name, "vcr-update");
        assert_string_equal(key.secret, KEY_SECRET);
        assert_string_equal(key.algorithm, i == 2 ? "hmac-sha512" : "hmac-sha256");
        dns_tsig_key_clear(&key);
        assert_null(key.name);
        assert_null(key.secret);
    }
}

static void test_key_file_errors_say_where_and_why(void **state)
{
    (void)state;
    const struct {
        const char *text, *expected;
    } cases[] = {
        {"key \"k\" {\n algorithm hmac-sha1;\n secret \"" KEY_SECRET "\";\n};\n",
         "key `k`: algorithm `hmac-sha1` is not supported; use one of hmac-sha256, hmac-sha512"},
        {"key \"k\" {\n secret \"" KEY_SECRET "\";\n};\n", "key `k` has no algorithm"},
        {"key \"k\" {\n algorithm hmac-sha256;\n};\n", "key `k` has no secret"},
        {"key \"k\" {\n algorithm hmac-sha256;\n secret \"%%%\";\n};\n",
         "key `k`: secret is not valid base64"},
        {"key \"a\" { algorithm hmac-sha256; secret \"" KEY_SECRET "\"; };\n"
         "key \"b\" { algorithm hmac-sha256; secret \"" KEY_SECRET "\"; };\n",
         "line 2: a second key; the file must hold exactly one (the first is on line 1)"},
        {"options { };\n", "line 1: expected `key`, found `options`"},
        {"key \"k\" {\n algorithm hmac-sha256\n secret \"x\";\n};\n",
         "line 3: expected `;` after algorithm, found `secret`"},
        {"key \"k\" {\n algorithm hmac-sha256;\n secret \"abc\n", "line 3: unterminated string"},
        {"key \"k\" {\n algorithm hmac-sha256;\n", "line 3: expected `algorithm`, `secret` or `}` "
                                                   "in key `k`, found `end of file`"},
        {"key \"k\" { algorithm hmac-sha256; secret \"" KEY_SECRET "\"; }\n",
         "line 2: expected `;` after `}`, found `end of file`"},
        {"# nothing here\n", "no `key` statement"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cleanup_free char *path = write_temp(cases[i].text);
        cleanup_error vcr_error_t err = NULL;
        struct dns_tsig_key key = {0};
        int rc = dns_tsig_key_load(path, &key, &err);
        unlink(path);
        assert_int_equal(rc, -1);
        assert_null(key.name);
        assert_contains(vcr_error_msg(err), path);
        assert_contains(vcr_error_msg(err), cases[i].expected);
    }
    cleanup_error vcr_error_t err = NULL;
    struct dns_tsig_key key = {0};
    assert_int_equal(dns_tsig_key_load("/nonexistent/tsig.key", &key, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    assert_string_equal(vcr_error_msg(err),
                        "key file `/nonexistent/tsig.key`: No such file or directory");
}

/* ---- the exchange ---- */

struct completion {
    bool called;
    struct dns_update_outcome outcome;
    char *error;
};

static void on_done(const struct dns_update_outcome *outcome, const char *error, void *arg)
{
    struct completion *c = arg;
    assert_false(c->called);
    c->called = true;
    c->outcome = *outcome;
    c->error = error ? strdup(error) : NULL;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

static void run_until_done(struct event_base *base, struct completion *c)
{
    bool expired = false;
    struct event *deadline = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = {.tv_sec = DEADLINE_MS / 1000, .tv_usec = (DEADLINE_MS % 1000) * 1000};
    evtimer_add(deadline, &tv);
    while (!c->called && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
    if (!c->called)
        fail_msg("no completion within %d ms", DEADLINE_MS);
}

static int udp_socket_on_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t slen = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static unsigned drain_datagrams(int fd)
{
    unsigned n = 0;
    uint8_t buf[4096];
    while (recv(fd, buf, sizeof(buf), 0) >= 0)
        n++;
    return n;
}

static void test_retries_then_fails_when_nobody_answers(void **state)
{
    (void)state;
    uint16_t port;
    cleanup_close int silent = udp_socket_on_loopback(&port);
    struct event_base *base = event_base_new();
    struct dns_update_config cfg = lab_config();
    cfg.port = port;
    cfg.retry = (struct dns_retry_policy){
        .attempts = 3, .first_timeout_ms = 50, .multiplier = 2, .max_timeout_ms = 80};
    struct completion c = {0};
    cleanup_error vcr_error_t err = NULL;
    int64_t t0 = vcr_mono_ms();
    assert_non_null(
        dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, on_done, &c, &err));
    assert_false(c.called); /* never from inside the start call */
    run_until_done(base, &c);
    int64_t took = vcr_mono_ms() - t0;

    assert_int_equal(c.outcome.attempts, 3);
    assert_int_equal(c.outcome.rcode, -1);
    assert_contains(c.error, "no answer from `127.0.0.1:");
    /* Waits of 50, 80 (doubling capped) and 80 ms = 210 ms. libevent arms its
     * timers on CLOCK_MONOTONIC_COARSE (one tick is up to 4 ms here), so each
     * wait may end up to a tick early: 3 waits, 12 ms of slack (CI saw 208.7). */
    assert_true(c.outcome.elapsed_ms >= 198.0);
    assert_true(took < 1500);
    assert_int_equal(drain_datagrams(silent), 3);
    free(c.error);
    event_base_free(base);
}

/* A DNS server on IPv6: the update's datagrams reach [::1]. */
static void test_update_reaches_an_ipv6_server(void **state)
{
    (void)state;
    int silent = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(silent >= 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    assert_int_equal(bind(silent, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
    socklen_t slen = sizeof(sin6);
    assert_int_equal(getsockname(silent, (struct sockaddr *)&sin6, &slen), 0);
    struct event_base *base = event_base_new();
    struct dns_update_config cfg = lab_config();
    cfg.server = "::1";
    cfg.port = ntohs(sin6.sin6_port);
    cfg.retry = (struct dns_retry_policy){.attempts = 2, .first_timeout_ms = 20};
    struct completion c = {0};
    cleanup_error vcr_error_t err = NULL;
    assert_non_null(dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", "fd77::11",
                                     on_done, &c, &err));
    run_until_done(base, &c);
    assert_int_equal(c.outcome.attempts, 2);
    assert_contains(c.error, "no answer from `[::1]:");
    assert_int_equal(drain_datagrams(silent), 2);
    free(c.error);
    close(silent);
    event_base_free(base);
}

enum fake_mode {
    FAKE_REFUSED,      /* REFUSED, unsigned */
    FAKE_SIGNED_OK,    /* a wrong-id REFUSED first, then NOERROR signed with the key */
    FAKE_UNSIGNED_OK,  /* NOERROR without TSIG: must be discarded */
    FAKE_OTHER_KEY_OK, /* NOERROR signed with another secret: must be discarded */
    FAKE_BADSIG,       /* NOTAUTH with an unsigned TSIG RR carrying BADSIG */
};

struct fake_server {
    int fd;
    enum fake_mode mode;
    unsigned requests;
    struct event *ev;
};

static ldns_pkt *reply_to(uint16_t id, uint8_t rcode)
{
    ldns_pkt *r = ldns_pkt_new();
    ldns_pkt_set_id(r, id);
    ldns_pkt_set_qr(r, true);
    ldns_pkt_set_opcode(r, LDNS_PACKET_UPDATE);
    ldns_pkt_set_rcode(r, rcode);
    return r;
}

/* As BIND answers a request it cannot verify: TSIG error set, no MAC (RFC 8945 5.3.2). */
static void add_badsig_tsig(ldns_pkt *reply, const ldns_pkt *req)
{
    const ldns_rr *rt = ldns_pkt_tsig(req);
    ldns_rr *t = ldns_rr_new();
    ldns_rr_set_owner(t, ldns_rdf_clone(ldns_rr_owner(rt)));
    ldns_rr_set_type(t, LDNS_RR_TYPE_TSIG);
    ldns_rr_set_class(t, LDNS_RR_CLASS_ANY);
    ldns_rr_set_ttl(t, 0);
    ldns_rr_push_rdf(t, ldns_rdf_clone(ldns_rr_rdf(rt, 0)));
    ldns_rr_push_rdf(t, ldns_rdf_clone(ldns_rr_rdf(rt, 1)));
    ldns_rr_push_rdf(t, ldns_rdf_clone(ldns_rr_rdf(rt, 2)));
    ldns_rr_push_rdf(t, ldns_native2rdf_int16_data(0, NULL));
    ldns_rr_push_rdf(t, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, ldns_pkt_id(req)));
    ldns_rr_push_rdf(t, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 16 /* BADSIG */));
    ldns_rr_push_rdf(t, ldns_native2rdf_int16_data(0, NULL));
    ldns_pkt_set_tsig(reply, t);
}

static void send_reply(int fd, ldns_pkt *reply, const struct sockaddr_in *to)
{
    uint8_t *wire = NULL;
    size_t len = 0;
    assert_int_equal(ldns_pkt2wire(&wire, reply, &len), LDNS_STATUS_OK);
    assert_int_equal(sendto(fd, wire, len, 0, (const struct sockaddr *)to, sizeof(*to)),
                     (ssize_t)len);
    free(wire);
    ldns_pkt_free(reply);
}

static void on_fake_request(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_server *s = arg;
    uint8_t buf[4096];
    struct sockaddr_in from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
    if (n < 0)
        return;
    s->requests++;
    ldns_pkt *req = NULL;
    assert_int_equal(ldns_wire2pkt(&req, buf, (size_t)n), LDNS_STATUS_OK);
    uint16_t id = ldns_pkt_id(req);
    ldns_pkt *reply;
    switch (s->mode) {
    case FAKE_REFUSED:
        send_reply(fd, reply_to(id, LDNS_RCODE_REFUSED), &from);
        break;
    case FAKE_SIGNED_OK:
        send_reply(fd, reply_to((uint16_t)(id + 1), LDNS_RCODE_REFUSED), &from);
        reply = reply_to(id, LDNS_RCODE_NOERROR);
        assert_int_equal(ldns_pkt_tsig_sign(reply, KEY_NAME, KEY_SECRET, 300, "hmac-sha256.",
                                            ldns_rr_rdf(ldns_pkt_tsig(req), 3)),
                         LDNS_STATUS_OK);
        send_reply(fd, reply, &from);
        break;
    case FAKE_OTHER_KEY_OK:
        reply = reply_to(id, LDNS_RCODE_NOERROR);
        assert_int_equal(ldns_pkt_tsig_sign(reply, KEY_NAME, OTHER_SECRET, 300, "hmac-sha256.",
                                            ldns_rr_rdf(ldns_pkt_tsig(req), 3)),
                         LDNS_STATUS_OK);
        send_reply(fd, reply, &from);
        break;
    case FAKE_UNSIGNED_OK:
        send_reply(fd, reply_to(id, LDNS_RCODE_NOERROR), &from);
        break;
    case FAKE_BADSIG:
        reply = reply_to(id, LDNS_RCODE_NOTAUTH);
        add_badsig_tsig(reply, req);
        send_reply(fd, reply, &from);
        break;
    }
    ldns_pkt_free(req);
}

static void fake_start(struct fake_server *s, struct event_base *base, enum fake_mode mode,
                       uint16_t *port)
{
    s->fd = udp_socket_on_loopback(port);
    s->mode = mode;
    s->requests = 0;
    s->ev = event_new(base, s->fd, EV_READ | EV_PERSIST, on_fake_request, s);
    event_add(s->ev, NULL);
}

static void fake_stop(struct fake_server *s)
{
    event_free(s->ev);
    close(s->fd);
}

static struct completion exchange_with_fake(enum fake_mode mode, struct dns_retry_policy retry,
                                            unsigned *requests)
{
    struct event_base *base = event_base_new();
    struct fake_server fake;
    uint16_t port;
    fake_start(&fake, base, mode, &port);
    struct dns_update_config cfg = lab_config();
    cfg.port = port;
    cfg.retry = retry;
    struct completion c = {0};
    cleanup_error vcr_error_t err = NULL;
    assert_non_null(
        dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, on_done, &c, &err));
    run_until_done(base, &c);
    *requests = fake.requests;
    fake_stop(&fake);
    event_base_free(base);
    return c;
}

static void test_refused_fails_at_once_without_retry(void **state)
{
    (void)state;
    unsigned requests;
    struct completion c = exchange_with_fake(
        FAKE_REFUSED, (struct dns_retry_policy){.attempts = 4, .first_timeout_ms = 1000},
        &requests);
    assert_int_equal(requests, 1);
    assert_int_equal(c.outcome.attempts, 1);
    assert_int_equal(c.outcome.rcode, LDNS_RCODE_REFUSED);
    assert_true(c.outcome.elapsed_ms < 500.0); /* did not wait for the first timeout */
    assert_contains(c.error, "answered REFUSED");
    free(c.error);
}

static void test_signed_noerror_succeeds_and_other_ids_are_ignored(void **state)
{
    (void)state;
    unsigned requests;
    struct completion c = exchange_with_fake(
        FAKE_SIGNED_OK, (struct dns_retry_policy){.first_timeout_ms = 1000}, &requests);
    assert_null(c.error);
    assert_int_equal(requests, 1);
    assert_int_equal(c.outcome.attempts, 1);
    assert_int_equal(c.outcome.rcode, LDNS_RCODE_NOERROR);
}

static void test_unsigned_noerror_is_discarded(void **state)
{
    (void)state;
    unsigned requests;
    struct completion c = exchange_with_fake(
        FAKE_UNSIGNED_OK,
        (struct dns_retry_policy){.attempts = 2, .first_timeout_ms = 50, .max_timeout_ms = 50},
        &requests);
    assert_int_equal(requests, 2);
    assert_int_equal(c.outcome.attempts, 2);
    assert_int_equal(c.outcome.rcode, -1);
    assert_contains(c.error, "NOERROR reply without TSIG, discarded");
    free(c.error);
}

static void test_noerror_signed_with_other_key_is_discarded(void **state)
{
    (void)state;
    unsigned requests;
    struct completion c = exchange_with_fake(
        FAKE_OTHER_KEY_OK,
        (struct dns_retry_policy){.attempts = 2, .first_timeout_ms = 50, .max_timeout_ms = 50},
        &requests);
    assert_int_equal(requests, 2);
    assert_int_equal(c.outcome.rcode, -1);
    assert_contains(c.error, "NOERROR reply whose TSIG does not verify, discarded");
    free(c.error);
}

static void test_badsig_names_the_tsig_failure(void **state)
{
    (void)state;
    unsigned requests;
    struct completion c = exchange_with_fake(
        FAKE_BADSIG, (struct dns_retry_policy){.first_timeout_ms = 1000}, &requests);
    assert_int_equal(requests, 1);
    assert_int_equal(c.outcome.attempts, 1);
    assert_int_equal(c.outcome.rcode, LDNS_RCODE_NOTAUTH);
    assert_contains(c.error, "answered NOTAUTH, TSIG error BADSIG: bad key or signature");
    free(c.error);
}

static void test_cancel_frees_without_callback(void **state)
{
    (void)state;
    uint16_t port;
    cleanup_close int silent = udp_socket_on_loopback(&port);
    struct event_base *base = event_base_new();
    struct dns_update_config cfg = lab_config();
    cfg.port = port;
    struct completion c = {0};
    cleanup_error vcr_error_t err = NULL;
    struct dns_update *u =
        dns_update_start(base, &cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, on_done, &c, &err);
    assert_non_null(u);
    dns_update_cancel(u);
    /* Nothing is left on the loop: it returns at once instead of running timers. */
    assert_int_equal(event_base_dispatch(base), 1);
    assert_false(c.called);
    event_base_free(base);
}

static void test_sync_reports_timeout_with_outcome(void **state)
{
    (void)state;
    uint16_t port;
    cleanup_close int silent = udp_socket_on_loopback(&port);
    struct dns_update_config cfg = lab_config();
    cfg.port = port;
    cfg.retry = (struct dns_retry_policy){.attempts = 2, .first_timeout_ms = 40};
    struct dns_update_outcome outcome;
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(dns_update_sync(&cfg, "web1.vcr.lab", 5, "10.77.0.11", NULL, &outcome, &err),
                     -1);
    assert_int_equal(vcr_error_status(err), ETIMEDOUT);
    assert_contains(vcr_error_msg(err), "no answer from");
    assert_int_equal(outcome.attempts, 2);
    assert_int_equal(drain_datagrams(silent), 2);
}

/* Replies ldns would leak on are dropped before it parses them (dns_wire.c). */
static void test_wire_tsig_count(void **state)
{
    (void)state;
    /* header: id, QR|UPDATE, QD 1, AN 0, NS 0, AR 2; zone vcr.lab SOA IN; two empty TSIGs */
    static const uint8_t two[] = {0x42, 0x42, 0xa8, 0x00, 0,    1,    0,   0,   0, 0, 0, 2,
                                  3,    'v',  'c',  'r',  3,    'l',  'a', 'b', 0, 0, 6, 0,
                                  1,    0,    0,    0xfa, 0,    0xff, 0,   0,   0, 0, 0, 0,
                                  0,    0,    0xfa, 0,    0xff, 0,    0,   0,   0, 0, 0};
    assert_int_equal(dns_wire_tsig_count(two, sizeof(two)), 2);
    /* The header counts 2, one is there: ldns would fail on it, and leak. */
    assert_int_equal(dns_wire_tsig_count(two, sizeof(two) - 11), -1);
    uint8_t one[sizeof(two) - 11];
    memcpy(one, two, sizeof(one));
    one[11] = 1;
    assert_int_equal(dns_wire_tsig_count(one, sizeof(one)), 1);
    assert_int_equal(dns_wire_tsig_count(two, sizeof(two) - 12), -1); /* cut inside a record */
    assert_int_equal(dns_wire_tsig_count(two, 11), -1);
    struct dns_reply_judgement j;
    dns_update_judge_reply(0x4242, KEY_NAME, KEY_SECRET, "hmac-sha256.", NULL, two, sizeof(two),
                           &j);
    assert_int_equal(j.kind, DNS_REPLY_IGNORED);
    assert_non_null(strstr(j.problem, "more than one TSIG"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_is_signed_update_replacing_a_records),
        cmocka_unit_test(test_message_signed_with_hmac_sha512),
        cmocka_unit_test(test_message_replaces_a_and_aaaa_in_one_update),
        cmocka_unit_test(test_update_reaches_an_ipv6_server),
        cmocka_unit_test(test_message_fenced_by_term),
        cmocka_unit_test(test_wire_tsig_count),
        cmocka_unit_test(test_validation_names_field_and_value),
        cmocka_unit_test(test_validation_accepts_bounds_and_apex),
        cmocka_unit_test(test_retry_policy_out_of_range_is_rejected),
        cmocka_unit_test(test_key_file_as_written_by_tsig_keygen),
        cmocka_unit_test(test_key_file_errors_say_where_and_why),
        cmocka_unit_test(test_retries_then_fails_when_nobody_answers),
        cmocka_unit_test(test_refused_fails_at_once_without_retry),
        cmocka_unit_test(test_signed_noerror_succeeds_and_other_ids_are_ignored),
        cmocka_unit_test(test_unsigned_noerror_is_discarded),
        cmocka_unit_test(test_noerror_signed_with_other_key_is_discarded),
        cmocka_unit_test(test_badsig_names_the_tsig_failure),
        cmocka_unit_test(test_cancel_frees_without_callback),
        cmocka_unit_test(test_sync_reports_timeout_with_outcome),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
