/* `vcr pki` with libcrypto (see pki.h). */
#include "pki/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/hostport.h"

bool pki_name_is_valid(const char *name)
{
    return vcr_cert_name_is_valid(name);
}

static char *path_in(const char *dir, const char *name, const char *ext)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s.%s", dir, name, ext) < 0)
        return NULL;
    return p;
}

static int ssl_error(vcr_error_t *err, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return vcr_error_make(err, EIO, "%s: %s", what, r ? r : "OpenSSL failed");
}

/* Refuses if path exists: keys and certificates are never replaced in place. */
static int refuse_existing(const char *path, vcr_error_t *err)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return vcr_error_make(err, EEXIST,
                              "`%s` exists; refusing to overwrite it (remove it first "
                              "if you mean to replace it)",
                              path);
    if (errno != ENOENT)
        return vcr_error_errno(err, "`%s`", path);
    return 0;
}

/* Writes with O_EXCL: a file that appeared meanwhile is not replaced either. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert, vcr_error_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return vcr_error_errno(err, "create `%s`", path);
    /* The umask must not loosen or tighten what we mean. */
    if (fchmod(fd, mode) < 0) {
        vcr_error_errno(err, "chmod `%s`", path);
        close(fd);
        unlink(path);
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        vcr_error_errno(err, "write `%s`", path);
        close(fd);
        unlink(path);
        return -1;
    }
    int ok =
        key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) < 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (ok != 1) {
        unlink(path);
        ERR_clear_error();
        return vcr_error_make(err, EIO, "write `%s` failed", path);
    }
    return 0;
}

/* A key (0600) and its certificate (0644), both or neither: a key whose
 * certificate could not be written is removed. */
static int write_pair(const char *key_path, EVP_PKEY *key, const char *crt_path, X509 *cert,
                      vcr_error_t *err)
{
    if (write_pem(key_path, 0600, key, NULL, err) < 0)
        return -1;
    if (write_pem(crt_path, 0644, NULL, cert, err) < 0) {
        unlink(key_path);
        return -1;
    }
    return 0;
}

static EVP_PKEY *new_key(vcr_error_t *err)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        ssl_error(err, "generate an ECDSA P-256 key");
    return key;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/* A new certificate for key with subject CN=cn, valid from now for days. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, long days)
{
    X509 *cert = X509_new();
    unsigned char serial[16];
    BIGNUM *bn = NULL;
    if (cert == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
        goto fail;
    serial[0] &= 0x7f; /* positive */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_NAME *subject = X509_get_subject_name(cert);
    if (bn == NULL || X509_set_version(cert, 2) != 1 ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) == NULL ||
        X509_gmtime_adj(X509_getm_notBefore(cert), -300) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), days * 86400L) == NULL ||
        X509_set_pubkey(cert, key) != 1 ||
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1)
        goto fail;
    BN_free(bn);
    return cert;
fail:
    BN_free(bn);
    X509_free(cert);
    return NULL;
}

int pki_init(const char *dir, const char *cn, vcr_error_t *err)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "create `%s`", dir);
    cleanup_free char *key_path = path_in(dir, "ca", "key");
    cleanup_free char *crt_path = path_in(dir, "ca", "crt");
    if (key_path == NULL || crt_path == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    if (refuse_existing(key_path, err) < 0 || refuse_existing(crt_path, err) < 0)
        return -1;
    EVP_PKEY *key = new_key(err);
    if (key == NULL)
        return -1;
    int rc = -1;
    X509 *cert = new_cert(key, cn, PKI_CA_DAYS);
    if (cert == NULL || X509_set_issuer_name(cert, X509_get_subject_name(cert)) != 1 ||
        add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(cert, cert, NID_subject_key_identifier, "hash") < 0 ||
        X509_sign(cert, key, EVP_sha256()) == 0) {
        ssl_error(err, "make the CA certificate");
        goto out;
    }
    if (write_pair(key_path, key, crt_path, cert, err) < 0)
        goto out;
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static int load_ca(const char *dir, EVP_PKEY **key, X509 **cert, vcr_error_t *err)
{
    cleanup_free char *key_path = path_in(dir, "ca", "key");
    cleanup_free char *crt_path = path_in(dir, "ca", "crt");
    if (key_path == NULL || crt_path == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cleanup_file FILE *kf = fopen(key_path, "r");
    if (kf == NULL)
        return vcr_error_errno(err, "CA key `%s` (run `vcr pki init %s` first)", key_path, dir);
    cleanup_file FILE *cf = fopen(crt_path, "r");
    if (cf == NULL)
        return vcr_error_errno(err, "CA certificate `%s`", crt_path);
    *key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
    if (*key == NULL)
        return ssl_error(err, key_path);
    *cert = PEM_read_X509(cf, NULL, NULL, NULL);
    if (*cert == NULL) {
        EVP_PKEY_free(*key);
        *key = NULL;
        return ssl_error(err, crt_path);
    }
    if (X509_check_private_key(*cert, *key) != 1) {
        ERR_clear_error();
        EVP_PKEY_free(*key);
        X509_free(*cert);
        *key = NULL;
        *cert = NULL;
        return vcr_error_make(err, EINVAL, "CA key `%s` does not match `%s`", key_path, crt_path);
    }
    return 0;
}

/* "DNS:a,IP:10.0.0.1,..." for name and alt. */
static char *san_value(const char *name, const char *const *alt, size_t n_alt)
{
    size_t len = 0;
    for (size_t i = 0; i <= n_alt; i++)
        len += strlen(i == 0 ? name : alt[i - 1]) + 5;
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    for (size_t i = 0; i <= n_alt; i++) {
        const char *n = i == 0 ? name : alt[i - 1];
        strcat(out, i ? "," : "");
        strcat(out, vcr_ip_family(n) != 0 ? "IP:" : "DNS:");
        strcat(out, n);
    }
    return out;
}

int pki_issue(const char *dir, const char *name, bool server, const char *const *alt, size_t n_alt,
              vcr_error_t *err)
{
    if (!pki_name_is_valid(name) || strcmp(name, "ca") == 0)
        return vcr_error_make(err, EINVAL,
                              "name `%s` is not valid; allowed: a host name of a-z, 0-9, '-' "
                              "and '.' (not `ca`), or an IPv4 address",
                              name);
    for (size_t i = 0; i < n_alt; i++)
        if (!pki_name_is_valid(alt[i]))
            return vcr_error_make(err, EINVAL,
                                  "--san `%s` is not valid; allowed: a DNS name of a-z, 0-9, '-' "
                                  "and '.', or an IPv4 address",
                                  alt[i]);
    cleanup_free char *key_path = path_in(dir, name, "key");
    cleanup_free char *crt_path = path_in(dir, name, "crt");
    cleanup_free char *san = san_value(name, alt, n_alt);
    if (key_path == NULL || crt_path == NULL || san == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    if (refuse_existing(key_path, err) < 0 || refuse_existing(crt_path, err) < 0)
        return -1;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    if (load_ca(dir, &ca_key, &ca, err) < 0)
        return -1;
    int rc = -1;
    X509 *cert = NULL;
    EVP_PKEY *key = new_key(err);
    if (key == NULL)
        goto out;
    cert = new_cert(key, name, PKI_CERT_DAYS);
    if (cert == NULL || X509_set_issuer_name(cert, X509_get_subject_name(ca)) != 1 ||
        add_ext(cert, ca, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(cert, ca, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(cert, ca, NID_ext_key_usage, server ? "serverAuth" : "clientAuth") < 0 ||
        add_ext(cert, ca, NID_subject_alt_name, san) < 0 ||
        add_ext(cert, ca, NID_authority_key_identifier, "keyid:always") < 0 ||
        X509_sign(cert, ca_key, EVP_sha256()) == 0) {
        ssl_error(err, "make the certificate");
        goto out;
    }
    if (write_pair(key_path, key, crt_path, cert, err) < 0)
        goto out;
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}

static bool token_name_is_valid(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 64 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int pki_token(const char *dir, const char *name, const char *role, vcr_error_t *err)
{
    if (!token_name_is_valid(name))
        return vcr_error_make(err, EINVAL,
                              "`%s` is not a token name; allowed: 1..64 of letters, digits, '.', "
                              "'_', '-'",
                              name);
    if (strcmp(role, "read") != 0 && strcmp(role, "operator") != 0)
        return vcr_error_make(err, EINVAL, "role `%s`; allowed: read, operator", role);
    cleanup_free char *token_path = path_in(dir, name, "token");
    cleanup_free char *list_path = NULL;
    if (token_path == NULL || asprintf(&list_path, "%s/api-tokens", dir) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    /* The name must be new in the list too: two lines of one name would make
     * the server refuse the file. */
    cleanup_file FILE *list = fopen(list_path, "re");
    char line[512];
    while (list && fgets(line, sizeof(line), list)) {
        size_t n = strcspn(line, " \t");
        if (n == strlen(name) && strncmp(line, name, n) == 0)
            return vcr_error_make(err, EEXIST, "`%s` already has a token `%s`", list_path, name);
    }
    if (refuse_existing(token_path, err) < 0)
        return -1;
    unsigned char raw[32], digest[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return ssl_error(err, "token: random bytes");
    char token[4 + 64 + 1] = "vcr-";
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (EVP_Digest(token, strlen(token), digest, NULL, EVP_sha256(), NULL) != 1)
        return ssl_error(err, "token: SHA-256");
    int fd = open(token_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return vcr_error_errno(err, "create `%s`", token_path);
    size_t len = strlen(token);
    token[len] = '\n';
    bool ok =
        fchmod(fd, 0600) == 0 && write(fd, token, len + 1) == (ssize_t)(len + 1) && fsync(fd) == 0;
    OPENSSL_cleanse(token, sizeof(token));
    if (close(fd) != 0 || !ok) {
        unlink(token_path);
        return vcr_error_errno(err, "write `%s`", token_path);
    }
    char hex[65];
    for (size_t i = 0; i < sizeof(digest); i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    int lfd = open(list_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    char entry[256];
    int n = snprintf(entry, sizeof(entry), "%s %s sha256:%s\n", name, role, hex);
    if (lfd < 0 || write(lfd, entry, (size_t)n) != n || fsync(lfd) != 0) {
        vcr_error_errno(err, "append to `%s`", list_path);
        if (lfd >= 0)
            close(lfd);
        unlink(token_path);
        return -1;
    }
    close(lfd);
    return 0;
}
