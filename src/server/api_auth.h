/* Who may use the HTTP API, and the request checks made before any handler
 * runs (docs/security.md, "The HTTP API").
 *
 * Bearer tokens, two roles: `read` (every GET) and `operator` (everything).
 * The server holds only each token's SHA-256 (the `api_tokens_file`, lines
 * `NAME ROLE sha256:HEX`, written by `vcr pki token`); a token is 32 random
 * bytes, so a plain hash is enough (nothing to guess from it), and tokens are
 * compared in constant time.  A browser signs in once (POST /v1/login with its
 * token) and then carries a session cookie (HttpOnly, Secure, SameSite=Strict).
 *
 * Every function here is a pure parser or a lookup: the fuzz harness
 * (tests/fuzz/fuzz_api.c) drives them with any bytes. */
#ifndef VCR_SERVER_API_AUTH_H
#define VCR_SERVER_API_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

enum api_role {
    API_ROLE_NONE = 0, /* no credentials needed (the dashboard's files, login) */
    API_ROLE_READ = 1,
    API_ROLE_OPERATOR = 2,
};

#define API_TOKEN_NAME_MAX   64
#define API_TOKENS_MAX       1024
#define API_SESSIONS_MAX     64
#define API_SESSION_TTL_MS   (12 * 3600 * 1000)
#define API_SESSION_COOKIE   "vcr_session"
#define API_SESSION_ID_BYTES 32

struct api_token {
    char name[API_TOKEN_NAME_MAX + 1];
    enum api_role role;
    unsigned char sha256[32];
};

/* "read" or "operator". */
const char *api_role_name(enum api_role role);

/* Parses a tokens file's text; origin names it in messages.  Every bad line is
 * named (line number, what is wrong, what is allowed).  *tokens is malloc'd. */
int api_tokens_parse(const char *text, size_t len, const char *origin, struct api_token **tokens,
                     size_t *n, vcr_error_t *err);
int api_tokens_load(const char *path, struct api_token **tokens, size_t *n, vcr_error_t *err);

/* The entry whose hash is SHA-256(token), compared in constant time over every
 * entry; NULL if none. */
const struct api_token *api_tokens_match(const struct api_token *tokens, size_t n,
                                         const char *token, size_t len);

/* "Bearer TOKEN" (scheme case-insensitive, one space or more): 0 and the token's
 * span in header; -1 for anything else. */
int api_parse_bearer(const char *header, const char **token, size_t *len);

/* The value of cookie `name` in a Cookie header ("a=1; b=2"): 0 and its span;
 * -1 when absent. */
int api_parse_cookie(const char *header, const char *name, const char **value, size_t *len);

/* application/json, with parameters (charset) allowed, case-insensitive. */
bool api_content_type_is_json(const char *value);

/* The host part of a Host header ("name", "name:port", "[v6]:port"), lower-cased
 * into out; -1 if it is not one (empty, bad port, bad characters). */
int api_host_of(const char *host_header, char *out, size_t size);

/* Whether a request's Host names this server: the address the client connected
 * to (local_ip, a literal), `localhost` when that is a loopback address, or one
 * of names (the `api_names` key).  A name of another site (DNS rebinding) is not. */
bool api_host_allowed(const char *host_header, const char *local_ip, const char *const *names,
                      size_t n_names);

/* Whether an Origin header is this server's own: "SCHEME://HOST" with the
 * scheme of this listener (https with TLS) and the request's Host header. */
bool api_origin_allowed(const char *origin, const char *host_header, bool tls);

/* Signed-in browsers (POST /v1/login). */
struct api_sessions;
struct api_sessions *api_sessions_new(void);
void api_sessions_free(struct api_sessions *s);
/* A new session for token (borrowed, outlives the sessions); its id in hex
 * (2 * API_SESSION_ID_BYTES + 1).  The oldest session makes room when full. */
int api_sessions_open(struct api_sessions *s, const struct api_token *token, int64_t now_ms,
                      char *id_hex, vcr_error_t *err);
const struct api_token *api_sessions_find(struct api_sessions *s, const char *id, size_t len,
                                          int64_t now_ms);
void api_sessions_close(struct api_sessions *s, const char *id, size_t len);

/* A token bucket per client (rate limiting, 429). */
struct api_rate;
struct api_rate *api_rate_new(uint32_t per_s, uint32_t burst);
void api_rate_free(struct api_rate *r);
/* Takes one request from key's bucket: true if allowed, else false and the
 * seconds until one is (Retry-After). */
bool api_rate_take(struct api_rate *r, const char *key, int64_t now_ms, uint32_t *retry_after_s);

#endif
