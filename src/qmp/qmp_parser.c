/* Incremental QMP parser: jansson parses one object at a time from the front
 * of a buffer (JSON_DISABLE_EOF_CHECK), the rest waits for more bytes. */
#include "qmp.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

struct qmp_parser {
    char *buf;
    size_t len; /* bytes held, all belonging to messages not yet delivered */
    size_t cap;
    size_t max_message;
    /* After a parse found the object at the front incomplete: the length of
     * the buffer at that time.  Every object ends with '}', so until one
     * arrives after this offset another attempt cannot complete it; skipping
     * those attempts saves re-parsing a growing prefix at every read. */
    size_t incomplete_at;
    bool failed;
};

struct qmp_parser *qmp_parser_new(size_t max_message)
{
    struct qmp_parser *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (max_message == 0)
        max_message = QMP_MAX_MESSAGE;
    /* jansson reports offsets as int; one byte of headroom detects overflow. */
    if (max_message > INT_MAX - 1)
        max_message = INT_MAX - 1;
    p->max_message = max_message;
    return p;
}

void qmp_parser_free(struct qmp_parser *p)
{
    if (p == NULL)
        return;
    free(p->buf);
    free(p);
}

size_t qmp_parser_buffered(const struct qmp_parser *p)
{
    return p->len;
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* True if s[0..n) is the start of a valid UTF-8 sequence cut short: jansson
 * reports a multi-byte character split across reads as invalid UTF-8. */
static bool is_truncated_utf8(const unsigned char *s, size_t n)
{
    size_t need;
    if (n == 0)
        return false;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        need = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        need = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        need = 4;
    else
        return false;
    if (n >= need)
        return false;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return false;
    return true;
}

int qmp_msg_classify(json_t *root, struct qmp_msg *out, vcr_error_t *err)
{
    static const char *const kind_keys[] = {
        [QMP_MSG_GREETING] = "QMP",
        [QMP_MSG_RETURN] = "return",
        [QMP_MSG_ERROR] = "error",
        [QMP_MSG_EVENT] = "event",
    };
    if (!json_is_object(root))
        return vcr_error_make(err, EPROTO, "QMP message is not a JSON object");

    int kind = -1;
    for (int k = 0; k < (int)(sizeof(kind_keys) / sizeof(kind_keys[0])); k++) {
        if (json_object_get(root, kind_keys[k]) == NULL)
            continue;
        if (kind >= 0)
            return vcr_error_make(err, EPROTO, "QMP message has both `%s` and `%s`",
                                  kind_keys[kind], kind_keys[k]);
        kind = k;
    }
    if (kind < 0)
        return vcr_error_make(err, EPROTO,
                              "QMP message has none of `QMP`, `return`, `error`, `event`");

    struct qmp_msg m = {
        .kind = (enum qmp_msg_kind)kind,
        .root = root,
        .id = json_object_get(root, "id"),
        .value = json_object_get(root, kind_keys[kind]),
    };
    switch (m.kind) {
    case QMP_MSG_GREETING:
        if (!json_is_object(m.value))
            return vcr_error_make(err, EPROTO, "QMP greeting: `QMP` is not an object");
        break;
    case QMP_MSG_RETURN:
        break;
    case QMP_MSG_ERROR:
        m.eclass = json_string_value(json_object_get(m.value, "class"));
        m.desc = json_string_value(json_object_get(m.value, "desc"));
        if (m.eclass == NULL || m.desc == NULL)
            return vcr_error_make(err, EPROTO,
                                  "QMP error reply: `error` needs string `class` and `desc`");
        break;
    case QMP_MSG_EVENT: {
        m.event = json_string_value(m.value);
        if (m.event == NULL)
            return vcr_error_make(err, EPROTO, "QMP event: `event` is not a string");
        /* Events without data (STOP, RESUME, ...) omit the member. */
        m.value = json_object_get(root, "data");
        json_t *ts = json_object_get(root, "timestamp");
        json_int_t sec = json_integer_value(json_object_get(ts, "seconds"));
        json_int_t usec = json_integer_value(json_object_get(ts, "microseconds"));
        /* An out-of-range stamp would overflow int64; it carries no time then. */
        if (sec > 0 && sec < INT64_MAX / 1000000 - 1 && usec >= 0 && usec < 1000000)
            m.ts_us = (int64_t)sec * 1000000 + (int64_t)usec;
        break;
    }
    }
    *out = m;
    return 0;
}

/* Whether a parse error only says that the object goes on past the buffer. */
static bool is_truncation(const json_error_t *jerr, const char *s, size_t n)
{
    size_t pos = jerr->position > 0 ? (size_t)jerr->position : 0;
    switch (json_error_code(jerr)) {
    case json_error_premature_end_of_input:
        return true;
    case json_error_invalid_utf8:
        return pos < n && is_truncated_utf8((const unsigned char *)s + pos, n - pos);
    default:
        /* A token cut by the end ("tr", "1e", "\u00") is reported as
         * invalid, at the end; so is a misplaced one-byte token that happens
         * to be last ("{]"), which no further byte can repair. */
        return pos >= n && memchr("{}[]:,", s[n - 1], 6) == NULL;
    }
}

/* The buffer grows with the largest message seen, not to the limit at once:
 * most clients only ever see small replies. */
static int reserve(struct qmp_parser *p, size_t need, vcr_error_t *err)
{
    if (need <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap * 2 : 4096;
    if (cap < need)
        cap = need;
    if (cap > p->max_message + 1)
        cap = p->max_message + 1;
    char *buf = realloc(p->buf, cap);
    if (buf == NULL)
        return vcr_error_errno(err, "QMP parser: grow buffer to %zu bytes", cap);
    p->buf = buf;
    p->cap = cap;
    return 0;
}

/* Delivers the message at the front of the buffer, if it is complete.
 * Returns the bytes it used (0 when more are needed) or -1. */
static long parse_front(struct qmp_parser *p, size_t start, qmp_msg_cb cb, void *opaque,
                        vcr_error_t *err)
{
    const char *s = p->buf + start;
    size_t n = p->len - start;

    if (s[0] != '{')
        return vcr_error_make(err, EPROTO, "QMP message is not a JSON object (starts with 0x%02x)",
                              (unsigned char)s[0]);
    if (p->incomplete_at > start &&
        memchr(p->buf + p->incomplete_at, '}', p->len - p->incomplete_at) == NULL)
        return 0;

    json_error_t jerr;
    cleanup_json json_t *root = json_loadb(s, n, JSON_DISABLE_EOF_CHECK, &jerr);
    if (root == NULL) {
        if (!is_truncation(&jerr, s, n))
            return vcr_error_make(err, EPROTO, "QMP message: invalid JSON: %s", jerr.text);
        p->incomplete_at = p->len;
        return 0;
    }
    size_t used = (size_t)jerr.position;
    if (used > p->max_message)
        return vcr_error_make(err, EMSGSIZE, "QMP message of %zu bytes exceeds the limit of %zu",
                              used, p->max_message);
    struct qmp_msg msg;
    if (qmp_msg_classify(root, &msg, err) < 0)
        return -1;
    p->incomplete_at = 0;
    cb(&msg, opaque);
    return (long)used;
}

/* Delivers every complete message held and keeps the partial rest. */
static int drain(struct qmp_parser *p, qmp_msg_cb cb, void *opaque, vcr_error_t *err)
{
    size_t start = 0;
    for (;;) {
        while (start < p->len && is_json_space(p->buf[start]))
            start++;
        if (start == p->len)
            break;
        long used = parse_front(p, start, cb, opaque, err);
        if (used < 0)
            return -1;
        if (used == 0)
            break;
        start += (size_t)used;
    }
    if (p->len - start > p->max_message)
        return vcr_error_make(err, EMSGSIZE,
                              "QMP message exceeds the limit of %zu bytes without ending",
                              p->max_message);
    memmove(p->buf, p->buf + start, p->len - start);
    p->len -= start;
    p->incomplete_at = p->incomplete_at > start ? p->incomplete_at - start : 0;
    return 0;
}

int qmp_parser_feed(struct qmp_parser *p, const char *data, size_t len, qmp_msg_cb cb, void *opaque,
                    vcr_error_t *err)
{
    if (p->failed)
        return vcr_error_make(err, EPROTO, "QMP parser fed after an error");
    while (len > 0) {
        /* drain() leaves at most max_message bytes, so there is room for one
         * more: the buffer never grows past the limit, whatever the read size. */
        size_t room = p->max_message + 1 - p->len;
        size_t n = len < room ? len : room;
        if (reserve(p, p->len + n, err) < 0) {
            p->failed = true;
            return -1;
        }
        memcpy(p->buf + p->len, data, n);
        p->len += n;
        data += n;
        len -= n;
        if (drain(p, cb, opaque, err) < 0) {
            p->failed = true;
            return -1;
        }
    }
    return 0;
}
