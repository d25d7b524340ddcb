/* The HTTP API's credentials and request checks (api_auth.h). */
#include "server/api_auth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/cleanup.h"

#define TOKENS_FILE_MAX (1024 * 1024)

const char *api_role_name(enum api_role role)
{
    return role == API_ROLE_OPERATOR ? "operator" : role == API_ROLE_READ ? "read" : "none";
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool valid_token_name(const char *s, size_t n)
{
    if (n == 0 || n > API_TOKEN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* Splits line (NUL-terminated, modified) into at most 4 blank-separated fields. */
static size_t split_fields(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *f = strtok_r(line, " \t", &save); f; f = strtok_r(NULL, " \t", &save)) {
        if (n == max)
            return max + 1;
        fields[n++] = f;
    }
    return n;
}

int api_tokens_parse(const char *text, size_t len, const char *origin, struct api_token **tokens,
                     size_t *n, vcr_error_t *err)
{
    *tokens = NULL;
    *n = 0;
    cleanup_free struct api_token *out = NULL;
    size_t count = 0;
    unsigned lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        lineno++;
        size_t llen = end - pos;
        cleanup_free char *line = strndup(text + pos, llen);
        pos = end + 1;
        if (line == NULL)
            return vcr_error_make(err, ENOMEM, "`%s`: out of memory", origin);
        if (strlen(line) != llen)
            return vcr_error_make(err, EINVAL, "`%s` line %u: a NUL byte", origin, lineno);
        if (llen && line[llen - 1] == '\r')
            line[--llen] = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *fields[4];
        size_t nf = split_fields(line, fields, 3);
        if (nf == 0)
            continue;
        if (nf != 3)
            return vcr_error_make(err, EINVAL,
                                  "`%s` line %u: expected `NAME ROLE sha256:HEX` (vcr pki token)",
                                  origin, lineno);
        if (!valid_token_name(fields[0], strlen(fields[0])))
            return vcr_error_make(err, EINVAL,
                                  "`%s` line %u: `%.80s` is not a token name; allowed: 1..%d of "
                                  "letters, digits, '.', '_', '-'",
                                  origin, lineno, fields[0], API_TOKEN_NAME_MAX);
        enum api_role role = strcmp(fields[1], "operator") == 0 ? API_ROLE_OPERATOR
                             : strcmp(fields[1], "read") == 0   ? API_ROLE_READ
                                                                : API_ROLE_NONE;
        if (role == API_ROLE_NONE)
            return vcr_error_make(err, EINVAL,
                                  "`%s` line %u: role `%.40s`; allowed: read, operator", origin,
                                  lineno, fields[1]);
        const char *h = fields[2];
        if (strncmp(h, "sha256:", 7) != 0 || strlen(h) != 7 + 64)
            return vcr_error_make(err, EINVAL,
                                  "`%s` line %u: `%.80s` is not a token hash; allowed: sha256: "
                                  "and 64 hex digits",
                                  origin, lineno, h);
        if (count == API_TOKENS_MAX)
            return vcr_error_make(err, EINVAL, "`%s`: more than %d tokens", origin, API_TOKENS_MAX);
        struct api_token *grown = realloc(out, (count + 1) * sizeof(*out));
        if (grown == NULL)
            return vcr_error_make(err, ENOMEM, "`%s`: out of memory", origin);
        out = grown;
        struct api_token *t = &out[count];
        memset(t, 0, sizeof(*t));
        snprintf(t->name, sizeof(t->name), "%s", fields[0]);
        t->role = role;
        for (size_t i = 0; i < 32; i++) {
            int hi = hex_value(h[7 + 2 * i]), lo = hex_value(h[8 + 2 * i]);
            if (hi < 0 || lo < 0)
                return vcr_error_make(err, EINVAL,
                                      "`%s` line %u: `%.80s` is not a token hash; allowed: "
                                      "sha256: and 64 hex digits",
                                      origin, lineno, h);
            t->sha256[i] = (unsigned char)(hi << 4 | lo);
        }
        for (size_t i = 0; i < count; i++)
            if (strcmp(out[i].name, t->name) == 0)
                return vcr_error_make(err, EINVAL,
                                      "`%s` line %u: token name `%s` is given twice; allowed: a "
                                      "unique name",
                                      origin, lineno, t->name);
        count++;
    }
    if (count == 0)
        return vcr_error_make(err, EINVAL, "`%s`: no token; add one with `vcr pki token DIR NAME`",
                              origin);
    *tokens = steal_pointer(&out);
    *n = count;
    return 0;
}

int api_tokens_load(const char *path, struct api_token **tokens, size_t *n, vcr_error_t *err)
{
    cleanup_file FILE *f = fopen(path, "re");
    if (f == NULL)
        return vcr_error_errno(err, "`api_tokens_file` `%s`", path);
    cleanup_free char *buf = malloc(TOKENS_FILE_MAX + 1);
    if (buf == NULL)
        return vcr_error_errno(err, "`api_tokens_file` `%s`", path);
    size_t len = fread(buf, 1, TOKENS_FILE_MAX + 1, f);
    if (ferror(f))
        return vcr_error_errno(err, "`api_tokens_file` `%s`", path);
    if (len > TOKENS_FILE_MAX)
        return vcr_error_make(err, EFBIG, "`api_tokens_file` `%s`: larger than %d bytes", path,
                              TOKENS_FILE_MAX);
    return api_tokens_parse(buf, len, path, tokens, n, err);
}

const struct api_token *api_tokens_match(const struct api_token *tokens, size_t n,
                                         const char *token, size_t len)
{
    unsigned char digest[32];
    SHA256((const unsigned char *)token, len, digest);
    const struct api_token *found = NULL;
    /* Every entry is compared, so the time says nothing about which matched. */
    for (size_t i = 0; i < n; i++)
        if (CRYPTO_memcmp(digest, tokens[i].sha256, sizeof(digest)) == 0)
            found = &tokens[i];
    return len ? found : NULL;
}

int api_parse_bearer(const char *header, const char **token, size_t *len)
{
    if (header == NULL || strncasecmp(header, "Bearer", 6) != 0 ||
        (header[6] != ' ' && header[6] != '\t'))
        return -1;
    const char *t = header + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = 0;
    /* RFC 6750 token68 characters. */
    while (t[n] != '\0' && (isalnum((unsigned char)t[n]) || strchr("-._~+/=", t[n]) != NULL))
        n++;
    if (n == 0)
        return -1;
    const char *rest = t + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest != '\0')
        return -1;
    *token = t;
    *len = n;
    return 0;
}

int api_parse_cookie(const char *header, const char *name, const char **value, size_t *len)
{
    if (header == NULL)
        return -1;
    size_t nlen = strlen(name);
    const char *p = header;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        size_t pair = strcspn(p, ";");
        const char *eq = memchr(p, '=', pair);
        if (eq && (size_t)(eq - p) == nlen && strncmp(p, name, nlen) == 0) {
            const char *v = eq + 1;
            size_t vlen = pair - (size_t)(v - p);
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            *value = v;
            *len = vlen;
            return 0;
        }
        p += pair;
    }
    return -1;
}

bool api_content_type_is_json(const char *value)
{
    if (value == NULL)
        return false;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, "application/json", 16) != 0)
        return false;
    const char *rest = value + 16;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == '\0' || *rest == ';';
}

int api_host_of(const char *host_header, char *out, size_t size)
{
    if (host_header == NULL || size == 0)
        return -1;
    const char *h = host_header;
    size_t n;
    const char *rest;
    if (h[0] == '[') {
        const char *close = strchr(h, ']');
        if (close == NULL)
            return -1;
        h++;
        n = (size_t)(close - h);
        rest = close + 1;
        if (n == 0 || strspn(h, "0123456789abcdefABCDEF:.") < n)
            return -1;
    } else {
        n = strcspn(h, ":");
        rest = h + n;
        if (n == 0 ||
            strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") < n)
            return -1;
    }
    if (*rest == ':') {
        size_t digits = strspn(rest + 1, "0123456789");
        if (digits == 0 || digits > 5 || rest[1 + digits] != '\0' || atoi(rest + 1) > 65535)
            return -1;
    } else if (*rest != '\0') {
        return -1;
    }
    if (n >= size)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)h[i]);
    out[n] = '\0';
    return 0;
}

static bool is_loopback(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, ip, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

bool api_host_allowed(const char *host_header, const char *local_ip, const char *const *names,
                      size_t n_names)
{
    char host[256];
    if (api_host_of(host_header, host, sizeof(host)) < 0)
        return false;
    if (local_ip && strcasecmp(host, local_ip) == 0)
        return true;
    if (local_ip && is_loopback(local_ip) && strcmp(host, "localhost") == 0)
        return true;
    for (size_t i = 0; i < n_names; i++)
        if (strcasecmp(host, names[i]) == 0)
            return true;
    return false;
}

bool api_origin_allowed(const char *origin, const char *host_header, bool tls)
{
    if (origin == NULL || host_header == NULL)
        return false;
    const char *scheme = tls ? "https://" : "http://";
    size_t sl = strlen(scheme);
    if (strncasecmp(origin, scheme, sl) != 0)
        return false;
    return strcasecmp(origin + sl, host_header) == 0;
}

/* --- sessions --- */

struct api_session {
    unsigned char id[API_SESSION_ID_BYTES];
    const struct api_token *token; /* NULL: a free slot */
    int64_t opened_ms;
    int64_t expires_ms;
};

struct api_sessions {
    struct api_session slots[API_SESSIONS_MAX];
};

struct api_sessions *api_sessions_new(void)
{
    return calloc(1, sizeof(struct api_sessions));
}

void api_sessions_free(struct api_sessions *s)
{
    if (s)
        OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

static int id_from_hex(const char *hex, size_t len, unsigned char *id)
{
    if (len != 2 * API_SESSION_ID_BYTES)
        return -1;
    for (size_t i = 0; i < API_SESSION_ID_BYTES; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        id[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int api_sessions_open(struct api_sessions *s, const struct api_token *token, int64_t now_ms,
                      char *id_hex, vcr_error_t *err)
{
    struct api_session *slot = &s->slots[0];
    for (size_t i = 0; i < API_SESSIONS_MAX; i++) {
        struct api_session *c = &s->slots[i];
        if (c->token == NULL || c->expires_ms <= now_ms) {
            slot = c;
            break;
        }
        if (c->opened_ms < slot->opened_ms)
            slot = c;
    }
    if (RAND_bytes(slot->id, sizeof(slot->id)) != 1)
        return vcr_error_make(err, EIO, "session: no random bytes");
    slot->token = token;
    slot->opened_ms = now_ms;
    slot->expires_ms = now_ms + API_SESSION_TTL_MS;
    for (size_t i = 0; i < API_SESSION_ID_BYTES; i++)
        snprintf(id_hex + 2 * i, 3, "%02x", slot->id[i]);
    return 0;
}

static struct api_session *session_find(struct api_sessions *s, const char *id, size_t len,
                                        int64_t now_ms)
{
    unsigned char want[API_SESSION_ID_BYTES];
    if (id_from_hex(id, len, want) < 0)
        return NULL;
    struct api_session *found = NULL;
    for (size_t i = 0; i < API_SESSIONS_MAX; i++) {
        struct api_session *c = &s->slots[i];
        if (CRYPTO_memcmp(c->id, want, sizeof(want)) == 0 && c->token && c->expires_ms > now_ms)
            found = c;
    }
    return found;
}

const struct api_token *api_sessions_find(struct api_sessions *s, const char *id, size_t len,
                                          int64_t now_ms)
{
    struct api_session *c = session_find(s, id, len, now_ms);
    return c ? c->token : NULL;
}

void api_sessions_close(struct api_sessions *s, const char *id, size_t len)
{
    struct api_session *c = session_find(s, id, len, INT64_MIN);
    if (c)
        memset(c, 0, sizeof(*c));
}

/* --- rate limits: a token bucket per client, in a small table --- */

#define RATE_SLOTS 512

struct rate_slot {
    char key[80];
    double tokens;
    int64_t last_ms;
};

struct api_rate {
    uint32_t per_s;
    uint32_t burst;
    struct rate_slot slots[RATE_SLOTS];
};

struct api_rate *api_rate_new(uint32_t per_s, uint32_t burst)
{
    struct api_rate *r = calloc(1, sizeof(*r));
    if (r) {
        r->per_s = per_s ? per_s : 1;
        r->burst = burst ? burst : 1;
    }
    return r;
}

void api_rate_free(struct api_rate *r)
{
    free(r);
}

bool api_rate_take(struct api_rate *r, const char *key, int64_t now_ms, uint32_t *retry_after_s)
{
    struct rate_slot *slot = NULL, *victim = NULL;
    for (size_t i = 0; i < RATE_SLOTS && slot == NULL; i++) {
        struct rate_slot *c = &r->slots[i];
        if (c->key[0] == '\0') {
            if (victim == NULL || victim->key[0] != '\0')
                victim = c;
        } else if (strncmp(c->key, key, sizeof(c->key) - 1) == 0) {
            slot = c;
        } else if (victim == NULL || (victim->key[0] != '\0' && c->last_ms < victim->last_ms)) {
            victim = c;
        }
    }
    if (slot == NULL) {
        /* A new client takes a free slot, or the one idle longest: that bucket
         * has refilled the most, so forgetting it costs its client the least. */
        slot = victim;
        snprintf(slot->key, sizeof(slot->key), "%s", key);
        slot->tokens = r->burst;
        slot->last_ms = now_ms;
    }
    double elapsed = now_ms > slot->last_ms ? (double)(now_ms - slot->last_ms) / 1000.0 : 0;
    slot->tokens += elapsed * r->per_s;
    if (slot->tokens > r->burst)
        slot->tokens = r->burst;
    slot->last_ms = now_ms;
    if (slot->tokens >= 1.0) {
        slot->tokens -= 1.0;
        return true;
    }
    double wait_s = (1.0 - slot->tokens) / r->per_s;
    *retry_after_s = (uint32_t)wait_s + 1;
    return false;
}
