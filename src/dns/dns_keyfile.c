/* The BIND key file, as `tsig-keygen -a hmac-sha256 NAME` writes it:
 *
 *     key "NAME" {
 *             algorithm hmac-sha256;
 *             secret "BASE64";
 *     };
 *
 * Only this statement is understood, with BIND's comment styles (#, //, C blocks),
 * so that the file handed to named and nsupdate can be handed to us unchanged. */
#include "dns_update.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <ldns/ldns.h>

#include "common/cleanup.h"

/* A key file is a few lines; anything much bigger is the wrong file. */
#define KEYFILE_MAX_BYTES (64 * 1024)
#define TOKEN_MAX         1024

enum token_kind { TOK_END, TOK_WORD, TOK_STRING, TOK_PUNCT };

struct token {
    enum token_kind kind;
    unsigned line;
    char text[TOKEN_MAX];
};

struct lexer {
    const char *path;
    const char *p;
    const char *end;
    unsigned line;
};

static int syntax_error(const struct lexer *lx, unsigned line, vcr_error_t *err, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static int syntax_error(const struct lexer *lx, unsigned line, vcr_error_t *err, const char *fmt,
                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    return vcr_error_make(err, EINVAL, "key file `%s`: line %u: %s", lx->path, line,
                          msg ? msg : "syntax error");
}

static void skip_blanks_and_comments(struct lexer *lx)
{
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == '\n') {
            lx->line++;
            lx->p++;
        } else if (isspace((unsigned char)c)) {
            lx->p++;
        } else if (c == '#' || (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (c == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p < lx->end && !(*lx->p == '*' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
                if (*lx->p == '\n')
                    lx->line++;
                lx->p++;
            }
            lx->p = lx->p < lx->end ? lx->p + 2 : lx->end;
        } else {
            return;
        }
    }
}

static int next_token(struct lexer *lx, struct token *t, vcr_error_t *err)
{
    skip_blanks_and_comments(lx);
    t->line = lx->line;
    t->text[0] = '\0';
    if (lx->p >= lx->end) {
        t->kind = TOK_END;
        return 0;
    }
    char c = *lx->p;
    if (c == '{' || c == '}' || c == ';') {
        t->kind = TOK_PUNCT;
        t->text[0] = c;
        t->text[1] = '\0';
        lx->p++;
        return 0;
    }
    size_t n = 0;
    if (c == '"') {
        t->kind = TOK_STRING;
        lx->p++;
        while (lx->p < lx->end && *lx->p != '"') {
            if (*lx->p == '\n')
                return syntax_error(lx, t->line, err, "unterminated string");
            if (*lx->p == '\\' && lx->p + 1 < lx->end)
                lx->p++;
            if (n + 1 >= TOKEN_MAX)
                return syntax_error(lx, t->line, err, "string longer than %d bytes", TOKEN_MAX - 1);
            t->text[n++] = *lx->p++;
        }
        if (lx->p >= lx->end)
            return syntax_error(lx, t->line, err, "unterminated string");
        lx->p++;
    } else {
        t->kind = TOK_WORD;
        while (lx->p < lx->end && !isspace((unsigned char)*lx->p) && !strchr("{};\"", *lx->p)) {
            if (n + 1 >= TOKEN_MAX)
                return syntax_error(lx, t->line, err, "word longer than %d bytes", TOKEN_MAX - 1);
            t->text[n++] = *lx->p++;
        }
    }
    t->text[n] = '\0';
    return 0;
}

static const char *describe(const struct token *t)
{
    return t->kind == TOK_END ? "end of file" : t->text;
}

static int expect_punct(struct lexer *lx, char punct, const char *after, vcr_error_t *err)
{
    struct token t;
    if (next_token(lx, &t, err) < 0)
        return -1;
    if (t.kind != TOK_PUNCT || t.text[0] != punct)
        return syntax_error(lx, t.line, err, "expected `%c` after %s, found `%s`", punct, after,
                            describe(&t));
    return 0;
}

/* A value: a quoted string or a bare word, then `;`. */
static char *option_value(struct lexer *lx, const char *option, vcr_error_t *err)
{
    struct token t;
    if (next_token(lx, &t, err) < 0)
        return NULL;
    if (t.kind != TOK_WORD && t.kind != TOK_STRING)
        return syntax_error(lx, t.line, err, "expected a value after `%s`, found `%s`", option,
                            describe(&t)),
               NULL;
    cleanup_free char *value = strdup(t.text);
    if (value == NULL)
        return vcr_error_errno(err, "key file `%s`", lx->path), NULL;
    if (expect_punct(lx, ';', option, err) < 0)
        return NULL;
    return steal_pointer(&value);
}

static char *read_small_file(const char *path, size_t *len, vcr_error_t *err)
{
    cleanup_file FILE *f = fopen(path, "re");
    if (f == NULL)
        return vcr_error_errno(err, "key file `%s`", path), NULL;
    struct stat st;
    if (fstat(fileno(f), &st) < 0)
        return vcr_error_errno(err, "key file `%s`", path), NULL;
    if (!S_ISREG(st.st_mode) || st.st_size > KEYFILE_MAX_BYTES)
        return vcr_error_make(err, EINVAL, "key file `%s`: not a regular file of at most %d bytes",
                              path, KEYFILE_MAX_BYTES),
               NULL;
    cleanup_free char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        return vcr_error_errno(err, "key file `%s`", path), NULL;
    *len = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f))
        return vcr_error_errno(err, "key file `%s`: read", path), NULL;
    buf[*len] = '\0';
    return steal_pointer(&buf);
}

static void free_secret(char **s)
{
    if (*s)
        explicit_bzero(*s, strlen(*s));
    free(*s);
}

int dns_tsig_key_load(const char *path, struct dns_tsig_key *key, vcr_error_t *err)
{
    size_t len = 0;
    __attribute__((cleanup(free_secret))) char *text = read_small_file(path, &len, err);
    if (text == NULL)
        return -1;
    return dns_tsig_key_parse(text, len, path, key, err);
}

int dns_tsig_key_parse(const char *text, size_t len, const char *path, struct dns_tsig_key *key,
                       vcr_error_t *err)
{
    struct lexer lx = {.path = path, .p = text, .end = text + len, .line = 1};
    cleanup_free char *name = NULL;
    cleanup_free char *algorithm = NULL;
    __attribute__((cleanup(free_secret))) char *secret = NULL;
    unsigned key_line = 0;
    struct token t;
    for (;;) {
        if (next_token(&lx, &t, err) < 0)
            return -1;
        if (t.kind == TOK_END)
            break;
        if (t.kind != TOK_WORD || strcasecmp(t.text, "key") != 0)
            return syntax_error(&lx, t.line, err, "expected `key`, found `%s`", t.text);
        if (name)
            return syntax_error(&lx, t.line, err,
                                "a second key; the file must hold exactly one (the first is "
                                "on line %u)",
                                key_line);
        key_line = t.line;
        if (next_token(&lx, &t, err) < 0)
            return -1;
        if ((t.kind != TOK_WORD && t.kind != TOK_STRING) || t.text[0] == '\0')
            return syntax_error(&lx, t.line, err, "expected the key name after `key`, found `%s`",
                                describe(&t));
        name = strdup(t.text);
        if (name == NULL)
            return vcr_error_errno(err, "key file `%s`", path);
        if (expect_punct(&lx, '{', "the key name", err) < 0)
            return -1;
        for (;;) {
            if (next_token(&lx, &t, err) < 0)
                return -1;
            if (t.kind == TOK_PUNCT && t.text[0] == '}')
                break;
            char **slot = NULL;
            if (t.kind == TOK_WORD && strcasecmp(t.text, "algorithm") == 0)
                slot = &algorithm;
            else if (t.kind == TOK_WORD && strcasecmp(t.text, "secret") == 0)
                slot = &secret;
            else
                return syntax_error(&lx, t.line, err,
                                    "expected `algorithm`, `secret` or `}` in key `%s`, found "
                                    "`%s`",
                                    name, describe(&t));
            if (*slot)
                return syntax_error(&lx, t.line, err, "`%s` given twice in key `%s`", t.text, name);
            *slot = option_value(&lx, t.text, err);
            if (*slot == NULL)
                return -1;
        }
        if (expect_punct(&lx, ';', "`}`", err) < 0)
            return -1;
    }
    if (name == NULL)
        return vcr_error_make(err, EINVAL, "key file `%s`: no `key` statement", path);
    if (algorithm == NULL)
        return vcr_error_make(
            err, EINVAL,
            "key file `%s`: key `%s` has no algorithm; expected one of " DNS_TSIG_ALGORITHMS, path,
            name);
    const char *wire = dns_tsig_algorithm_wire(algorithm);
    if (wire == NULL)
        return vcr_error_make(err, EINVAL,
                              "key file `%s`: key `%s`: algorithm `%s` is not supported; use "
                              "one of " DNS_TSIG_ALGORITHMS " (tsig-keygen -a hmac-sha256)",
                              path, name, algorithm);
    if (secret == NULL)
        return vcr_error_make(err, EINVAL, "key file `%s`: key `%s` has no secret", path, name);
    ldns_rdf *decoded = NULL;
    if (secret[0] == '\0' || ldns_str2rdf_b64(&decoded, secret) != LDNS_STATUS_OK)
        return vcr_error_make(err, EINVAL, "key file `%s`: key `%s`: secret is not valid base64",
                              path, name);
    ldns_rdf_deep_free(decoded);
    key->name = steal_pointer(&name);
    key->secret = steal_pointer(&secret);
    key->algorithm = strcmp(wire, "hmac-sha512.") == 0 ? "hmac-sha512" : "hmac-sha256";
    return 0;
}

const char *dns_tsig_algorithm_wire(const char *name)
{
    static const char *const wire[] = {"hmac-sha256.", "hmac-sha512."};
    if (name == NULL)
        return NULL;
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof(wire) / sizeof(wire[0]); i++)
        if (strncasecmp(name, wire[i], strlen(wire[i]) - 1) == 0 &&
            (len == strlen(wire[i]) - 1 || (len == strlen(wire[i]) && name[len - 1] == '.')))
            return wire[i];
    return NULL;
}

void dns_tsig_key_clear(struct dns_tsig_key *key)
{
    free(key->name);
    free_secret(&key->secret);
    key->name = NULL;
    key->secret = NULL;
    key->algorithm = NULL;
}
