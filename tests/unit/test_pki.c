/* Unit tests for `vcr pki` (src/pki/pki.c), the certificate name check and
 * the TLS context's file checks (src/proto/proto_tls.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "pki/pki.h"
#include "proto/proto_tls.h"

struct dirs {
    char a[64]; /* a CA with node1, node2 and a server certificate */
    char b[64]; /* another CA with its own node1 */
};

static char *path(const char *dir, const char *file)
{
    static char buf[16][256];
    static int i;
    i = (i + 1) % 16;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, file);
    return buf[i];
}

static X509 *load(const char *file)
{
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(cert);
    return cert;
}

static int setup(void **state)
{
    struct dirs *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    snprintf(d->a, sizeof(d->a), "/tmp/vcr-test-pki-a-XXXXXX");
    snprintf(d->b, sizeof(d->b), "/tmp/vcr-test-pki-b-XXXXXX");
    assert_non_null(mkdtemp(d->a));
    assert_non_null(mkdtemp(d->b));
    cleanup_error vcr_error_t err = NULL;
    const char *san[] = {"127.0.0.1", "server.lab", "fd77::1"};
    assert_int_equal(pki_init(d->a, "test-ca", &err), 0);
    assert_int_equal(pki_issue(d->a, "node1", false, NULL, 0, &err), 0);
    assert_int_equal(pki_issue(d->a, "node2", false, NULL, 0, &err), 0);
    assert_int_equal(pki_issue(d->a, "vcr-server", true, san, 3, &err), 0);
    assert_int_equal(pki_init(d->b, "other-ca", &err), 0);
    assert_int_equal(pki_issue(d->b, "node1", false, NULL, 0, &err), 0);
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    struct dirs *d = *state;
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", d->a, d->b);
    assert_int_equal(system(cmd), 0);
    free(d);
    return 0;
}

static void test_name_validity(void **state)
{
    (void)state;
    assert_true(vcr_cert_name_is_valid("node1"));
    assert_true(vcr_cert_name_is_valid("vcr-server.lab.example"));
    assert_true(vcr_cert_name_is_valid("10.77.0.1"));
    assert_true(vcr_cert_name_is_valid("fd77::1"));
    assert_false(vcr_cert_name_is_valid(""));
    assert_false(vcr_cert_name_is_valid(NULL));
    assert_false(vcr_cert_name_is_valid("Node1"));
    assert_false(vcr_cert_name_is_valid("node_1"));
    assert_false(vcr_cert_name_is_valid("-node"));
    assert_false(vcr_cert_name_is_valid("node-"));
    assert_false(vcr_cert_name_is_valid("a..b"));
    assert_false(vcr_cert_name_is_valid("*.lab"));
    assert_false(vcr_cert_name_is_valid("node1/../x"));
    char long_label[70];
    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    assert_false(vcr_cert_name_is_valid(long_label));
}

static void test_key_modes_and_no_overwrite(void **state)
{
    struct dirs *d = *state;
    struct stat st;
    assert_int_equal(stat(path(d->a, "ca.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(path(d->a, "node1.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(path(d->a, "node1.crt"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    /* Neither the CA nor a host certificate is replaced. */
    struct stat before;
    assert_int_equal(stat(path(d->a, "ca.key"), &before), 0);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(pki_init(d->a, "again", &err), -1);
    assert_int_equal(vcr_error_status(err), EEXIST);
    assert_non_null(strstr(vcr_error_msg(err), "refusing to overwrite"));
    vcr_error_release(&err);
    assert_int_equal(pki_issue(d->a, "node1", false, NULL, 0, &err), -1);
    assert_int_equal(vcr_error_status(err), EEXIST);
    vcr_error_release(&err);
    assert_int_equal(stat(path(d->a, "ca.key"), &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    assert_int_equal(st.st_mtime, before.st_mtime);

    /* Bad names, and a directory without a CA. */
    assert_int_equal(pki_issue(d->a, "Bad_Name", false, NULL, 0, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "`Bad_Name` is not valid"));
    vcr_error_release(&err);
    assert_int_equal(pki_issue(d->a, "ca", false, NULL, 0, &err), -1);
    vcr_error_release(&err);
    assert_int_equal(pki_issue("/nonexistent-vcr-pki", "node9", false, NULL, 0, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "vcr pki init"));
}

/* The name the server checks against hello's host (docs/security.md). */
static void test_cert_names(void **state)
{
    struct dirs *d = *state;
    X509 *node1 = load(path(d->a, "node1.crt"));
    assert_true(proto_tls_cert_names(node1, "node1"));
    assert_false(proto_tls_cert_names(node1, "node2"));
    assert_false(proto_tls_cert_names(node1, "node"));
    assert_false(proto_tls_cert_names(node1, "node10"));
    assert_false(proto_tls_cert_names(node1, "NODE1.evil"));
    assert_false(proto_tls_cert_names(node1, ""));
    assert_false(proto_tls_cert_names(node1, NULL));
    assert_false(proto_tls_cert_names(NULL, "node1"));
    X509_free(node1);

    X509 *server = load(path(d->a, "vcr-server.crt"));
    assert_true(proto_tls_cert_names(server, "vcr-server"));
    assert_true(proto_tls_cert_names(server, "server.lab"));
    assert_true(proto_tls_cert_names(server, "127.0.0.1"));
    assert_false(proto_tls_cert_names(server, "127.0.0.2"));
    /* An IPv6 SAN is an IP entry, matched in any spelling of the address. */
    assert_true(proto_tls_cert_names(server, "fd77::1"));
    assert_true(proto_tls_cert_names(server, "fd77:0::0:1"));
    assert_false(proto_tls_cert_names(server, "fd77::2"));
    assert_false(proto_tls_cert_names(server, "node1"));
    X509_free(server);
}

static void expect_tls_error(enum proto_tls_side side, const char *ca, const char *cert,
                             const char *key, const char *want1, const char *want2)
{
    cleanup_error vcr_error_t err = NULL;
    struct proto_tls_files files = {.ca = ca, .cert = cert, .key = key};
    struct proto_tls *tls = proto_tls_new(side, &files, &err);
    if (tls != NULL)
        fail_msg("accepted ca=%s cert=%s key=%s", ca, cert, key);
    if (strstr(vcr_error_msg(err), want1) == NULL ||
        (want2 && strstr(vcr_error_msg(err), want2) == NULL))
        fail_msg("error `%s` lacks `%s` / `%s`", vcr_error_msg(err), want1, want2 ? want2 : "");
}

/* vcr pki token: the token file 0600, its SHA-256 appended to api-tokens with
 * its role, a name never given twice, a bad role refused. */
static void test_api_token(void **state)
{
    struct dirs *d = *state;
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(pki_token(d->a, "alice", "operator", &err), 0);
    assert_int_equal(pki_token(d->a, "grafana", "read", &err), 0);
    struct stat st;
    assert_int_equal(stat(path(d->a, "alice.token"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char token[128] = "";
    FILE *f = fopen(path(d->a, "alice.token"), "r");
    assert_non_null(f);
    assert_non_null(fgets(token, sizeof(token), f));
    fclose(f);
    token[strcspn(token, "\n")] = '\0';
    assert_int_equal(strlen(token), 4 + 64);
    assert_memory_equal(token, "vcr-", 4);
    unsigned char digest[32];
    SHA256((const unsigned char *)token, strlen(token), digest);
    char want[128] = "alice operator sha256:";
    for (int i = 0; i < 32; i++)
        snprintf(want + strlen(want), 3, "%02x", digest[i]);
    char list[1024] = "";
    f = fopen(path(d->a, "api-tokens"), "r");
    assert_non_null(f);
    size_t n = fread(list, 1, sizeof(list) - 1, f);
    fclose(f);
    list[n] = '\0';
    assert_non_null(strstr(list, want));
    assert_non_null(strstr(list, "\ngrafana read sha256:"));
    assert_int_equal(pki_token(d->a, "alice", "read", &err), -1);
    assert_int_equal(vcr_error_status(err), EEXIST);
    vcr_error_release(&err);
    assert_int_equal(pki_token(d->a, "bob", "admin", &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "allowed: read, operator"));
}

static void test_tls_files_checked(void **state)
{
    struct dirs *d = *state;
    cleanup_error vcr_error_t err = NULL;
    struct proto_tls_files good = {.ca = path(d->a, "ca.crt"),
                                   .cert = path(d->a, "node1.crt"),
                                   .key = path(d->a, "node1.key")};
    struct proto_tls *tls = proto_tls_new(PROTO_TLS_CLIENT, &good, &err);
    assert_non_null(tls);
    proto_tls_free(tls);
    struct proto_tls_files srv = {.ca = path(d->a, "ca.crt"),
                                  .cert = path(d->a, "vcr-server.crt"),
                                  .key = path(d->a, "vcr-server.key")};
    tls = proto_tls_new(PROTO_TLS_SERVER, &srv, &err);
    assert_non_null(tls);
    proto_tls_free(tls);

    /* Each error names the key and the file. */
    expect_tls_error(PROTO_TLS_CLIENT, "/nonexistent/ca.crt", good.cert, good.key,
                     "`tls_ca_file` `/nonexistent/ca.crt`", "No such file");
    expect_tls_error(PROTO_TLS_CLIENT, good.ca, "/nonexistent/x.crt", good.key,
                     "`tls_cert_file` `/nonexistent/x.crt`", NULL);
    expect_tls_error(PROTO_TLS_CLIENT, good.key, good.cert, good.key, "`tls_ca_file`",
                     "not a PEM certificate");
    expect_tls_error(PROTO_TLS_CLIENT, good.ca, good.cert, path(d->a, "node2.key"),
                     "`tls_key_file`", "does not match `tls_cert_file`");
    expect_tls_error(PROTO_TLS_CLIENT, good.ca, good.cert, good.cert, "`tls_key_file`",
                     "not a PEM private key");
    expect_tls_error(PROTO_TLS_CLIENT, good.ca, path(d->b, "node1.crt"), path(d->b, "node1.key"),
                     "does not verify against `tls_ca_file`", NULL);
    expect_tls_error(PROTO_TLS_CLIENT, good.ca, good.cert, NULL, "`tls_key_file`: missing", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_validity), cmocka_unit_test(test_key_modes_and_no_overwrite),
        cmocka_unit_test(test_cert_names),    cmocka_unit_test(test_tls_files_checked),
        cmocka_unit_test(test_api_token),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
