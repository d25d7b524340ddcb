/* Mutual TLS for the agent link (docs/protocol.md "Authentication").
 *
 * Both sides hold a certificate signed by the deployment's CA (`vcr pki`):
 * the server checks that the agent's certificate names the host its hello
 * claims (proto_tls_cert_names()), the agent checks the server's certificate
 * and its name.  TLS 1.3 only.  The configuration keys are the same in both
 * daemons: tls_ca_file, tls_cert_file, tls_key_file; errors name them. */
#ifndef VCR_PROTO_TLS_H
#define VCR_PROTO_TLS_H

#include <stdbool.h>

#include "common/err.h"

struct proto_tls;
struct x509_st;

enum proto_tls_side {
    PROTO_TLS_SERVER, /* accepts agents; requires a client certificate */
    PROTO_TLS_CLIENT, /* an agent; verifies the server's certificate and name */
    /* The HTTP API (docs/security.md): the server shows its certificate and asks
     * for none (clients show bearer tokens); the CA is optional (checked when
     * given).  A client (`vcr`) needs only the CA. */
    PROTO_TLS_API_SERVER,
    PROTO_TLS_API_CLIENT,
};

struct proto_tls_files {
    const char *ca;   /* tls_ca_file: the CA certificate (PEM) */
    const char *cert; /* tls_cert_file: our certificate (PEM), signed by the CA */
    const char *key;  /* tls_key_file: its private key (PEM) */
};

/* Loads and checks the three files: each readable, the key matching the
 * certificate, the certificate signed by the CA and not expired.  Errors name
 * the configuration key and the file. */
struct proto_tls *proto_tls_new(enum proto_tls_side side, const struct proto_tls_files *files,
                                vcr_error_t *err);
void proto_tls_free(struct proto_tls *tls);
/* The SSL_CTX (borrowed), for proto_conn. */
void *proto_tls_ctx(const struct proto_tls *tls);

/* Whether cert names `name`: a subjectAltName DNS entry equal to it, or, when
 * the certificate has no DNS entry, its common name (X509_check_host, no
 * wildcards).  An IPv4 literal also matches an IP address entry. */
bool proto_tls_cert_names(struct x509_st *cert, const char *name);

#endif
