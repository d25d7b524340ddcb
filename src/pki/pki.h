/* The deployment's certificate authority for the agent link (`vcr pki`,
 * docs/security.md): a CA key and certificate, and per-host and server
 * certificates signed by it.  Keys are ECDSA P-256; key files are written
 * 0600, certificates 0644; no existing file is ever overwritten.
 *
 * Files in DIR: ca.key, ca.crt, and NAME.key, NAME.crt per issued name. */
#ifndef VCR_PKI_PKI_H
#define VCR_PKI_PKI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define PKI_CA_DAYS   3650
#define PKI_CERT_DAYS 825
#define PKI_NAME_MAX  253

/* Whether name can be a certificate name: a DNS name of a-z, 0-9, '-' and '.'
 * labels (1..63 characters, no leading or trailing '-'), or an IPv4 address. */
bool pki_name_is_valid(const char *name);

/* Creates DIR (0700) if missing, then ca.key and ca.crt (CN `cn`). */
int pki_init(const char *dir, const char *cn, vcr_error_t *err);

/* Issues NAME.key and NAME.crt in DIR, signed by DIR's CA.  The certificate
 * names NAME (CN and subjectAltName) and the n_alt names of alt (DNS names or
 * IPv4 addresses).  server: extendedKeyUsage serverAuth (for vcr-server),
 * else clientAuth (an agent's host certificate: it cannot act as the server). */
int pki_issue(const char *dir, const char *name, bool server, const char *const *alt, size_t n_alt,
              vcr_error_t *err);

/* A token of the HTTP API (docs/security.md): 32 random bytes as `vcr-` and 64
 * hex digits, written to DIR/NAME.token (0600, never overwritten), and the line
 * `NAME ROLE sha256:HEX` appended to DIR/api-tokens (0640), the server's
 * `api_tokens_file`.  role: "read" or "operator".  NAME: 1..64 of letters,
 * digits, '.', '_', '-', not already in api-tokens. */
int pki_token(const char *dir, const char *name, const char *role, vcr_error_t *err);

#endif
