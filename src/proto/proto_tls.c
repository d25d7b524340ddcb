/* TLS contexts for the agent link (see proto_tls.h). */
#include "proto/proto_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/hostport.h"

struct proto_tls {
    SSL_CTX *ctx;
};

/* The reason OpenSSL gives for its last error, or `fallback`. */
static const char *ssl_reason(char *buf, size_t size, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (e == 0)
        return fallback;
    const char *r = ERR_reason_error_string(e);
    snprintf(buf, size, "%s", r ? r : fallback);
    return buf;
}

static X509 *read_cert(const char *field, const char *path, vcr_error_t *err)
{
    cleanup_file FILE *f = fopen(path, "r");
    if (f == NULL)
        return vcr_error_errno(err, "`%s` `%s`", field, path), NULL;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    if (cert == NULL) {
        char buf[128];
        vcr_error_make(err, EINVAL, "`%s` `%s`: not a PEM certificate (%s)", field, path,
                       ssl_reason(buf, sizeof(buf), "no certificate found"));
    }
    return cert;
}

/* The certificate must be signed by the CA and valid now: a wrong file shows
 * at start, not as a handshake failure at the peer. */
static int check_signed_by(X509 *cert, X509 *ca, const struct proto_tls_files *files,
                           vcr_error_t *err)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    int rc = -1;
    if (store == NULL || sctx == NULL || X509_STORE_add_cert(store, ca) != 1 ||
        X509_STORE_CTX_init(sctx, store, cert, NULL) != 1) {
        vcr_error_make(err, ENOMEM, "`tls_cert_file`: out of memory");
        goto out;
    }
    if (X509_verify_cert(sctx) != 1) {
        vcr_error_make(
            err, EINVAL, "`tls_cert_file` `%s` does not verify against `tls_ca_file` `%s`: %s",
            files->cert, files->ca, X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
        goto out;
    }
    rc = 0;
out:
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return rc;
}

static int load_files(SSL_CTX *ctx, enum proto_tls_side side, const struct proto_tls_files *files,
                      vcr_error_t *err)
{
    char buf[128];
    if (side == PROTO_TLS_API_CLIENT) {
        if (files->ca == NULL)
            return vcr_error_make(err, EINVAL, "TLS: no CA certificate to check the server with");
        if (SSL_CTX_load_verify_locations(ctx, files->ca, NULL) != 1)
            return vcr_error_make(err, EINVAL, "CA certificate `%s`: %s", files->ca,
                                  ssl_reason(buf, sizeof(buf), "cannot load"));
        return 0;
    }
    if ((files->ca == NULL && side != PROTO_TLS_API_SERVER) || files->cert == NULL ||
        files->key == NULL)
        return vcr_error_make(err, EINVAL,
                              "`%s`: missing; TLS needs tls_ca_file, tls_cert_file "
                              "and tls_key_file (`vcr pki`), or `insecure: true`",
                              files->ca == NULL     ? "tls_ca_file"
                              : files->cert == NULL ? "tls_cert_file"
                                                    : "tls_key_file");
    int rc;
    if (files->ca) {
        X509 *ca = read_cert("tls_ca_file", files->ca, err);
        if (ca == NULL)
            return -1;
        X509 *cert = read_cert("tls_cert_file", files->cert, err);
        if (cert == NULL) {
            X509_free(ca);
            return -1;
        }
        rc = check_signed_by(cert, ca, files, err);
        X509_free(cert);
        X509_free(ca);
        if (rc < 0)
            return -1;
    }
    if (files->ca && SSL_CTX_load_verify_locations(ctx, files->ca, NULL) != 1)
        return vcr_error_make(err, EINVAL, "`tls_ca_file` `%s`: %s", files->ca,
                              ssl_reason(buf, sizeof(buf), "cannot load"));
    if (SSL_CTX_use_certificate_chain_file(ctx, files->cert) != 1)
        return vcr_error_make(err, EINVAL, "`tls_cert_file` `%s`: %s", files->cert,
                              ssl_reason(buf, sizeof(buf), "cannot load"));
    cleanup_file FILE *kf = fopen(files->key, "r");
    if (kf == NULL)
        return vcr_error_errno(err, "`tls_key_file` `%s`", files->key);
    EVP_PKEY *key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
    if (key == NULL)
        return vcr_error_make(err, EINVAL, "`tls_key_file` `%s`: not a PEM private key (%s)",
                              files->key, ssl_reason(buf, sizeof(buf), "no key found"));
    rc = SSL_CTX_use_PrivateKey(ctx, key);
    EVP_PKEY_free(key);
    if (rc != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        return vcr_error_make(err, EINVAL,
                              "`tls_key_file` `%s` does not match `tls_cert_file` `%s`", files->key,
                              files->cert);
    }
    return 0;
}

struct proto_tls *proto_tls_new(enum proto_tls_side side, const struct proto_tls_files *files,
                                vcr_error_t *err)
{
    bool server = side == PROTO_TLS_SERVER || side == PROTO_TLS_API_SERVER;
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    struct proto_tls *tls = calloc(1, sizeof(*tls));
    if (ctx == NULL || tls == NULL) {
        SSL_CTX_free(ctx);
        free(tls);
        ERR_clear_error();
        return vcr_error_make(err, ENOMEM, "TLS: out of memory"), NULL;
    }
    tls->ctx = ctx;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
        proto_tls_free(tls);
        return vcr_error_make(err, EINVAL, "TLS: this OpenSSL has no TLS 1.3"), NULL;
    }
    if (load_files(ctx, side, files, err) < 0) {
        proto_tls_free(tls);
        return NULL;
    }
    if (side == PROTO_TLS_API_SERVER || side == PROTO_TLS_API_CLIENT) {
        SSL_CTX_set_verify(ctx, side == PROTO_TLS_API_CLIENT ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                           NULL);
        SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        if (side == PROTO_TLS_API_CLIENT)
            SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
        return tls;
    }
    /* The server demands a certificate; the agent demands the server's. */
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (side == PROTO_TLS_SERVER ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
    /* Agents hold one long connection: resumption buys nothing and tickets
     * would outlive a revoked certificate. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* A peer that vanishes without close_notify is an EOF, as over plain TCP:
     * frames carry their length, so a cut frame is still caught (proto.h). */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (side == PROTO_TLS_SERVER)
        SSL_CTX_set_num_tickets(ctx, 0);
    /* Purpose: a host certificate (clientAuth only) cannot act as the server. */
    SSL_CTX_set_purpose(ctx, side == PROTO_TLS_SERVER ? X509_PURPOSE_SSL_CLIENT
                                                      : X509_PURPOSE_SSL_SERVER);
    return tls;
}

void proto_tls_free(struct proto_tls *tls)
{
    if (tls == NULL)
        return;
    SSL_CTX_free(tls->ctx);
    free(tls);
}

void *proto_tls_ctx(const struct proto_tls *tls)
{
    return tls->ctx;
}

bool proto_tls_cert_names(struct x509_st *cert, const char *name)
{
    if (cert == NULL || name == NULL || *name == '\0')
        return false;
    int r = vcr_ip_family(name) != 0
                ? X509_check_ip_asc(cert, name, 0)
                : X509_check_host(cert, name, strlen(name), X509_CHECK_FLAG_NO_WILDCARDS, NULL);
    ERR_clear_error();
    return r == 1;
}
