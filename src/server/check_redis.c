/* Redis health check: `PING` answered `+PONG` (RESP), so a Redis that
 * accepts connections but is still loading its data set (`-LOADING`), or
 * hung, fails; one that wants a password (`-NOAUTH`) answers, so it is up. */
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>

#include "server/check.h"

static int redis_connected(const struct check_target *t, struct evbuffer *out)
{
    (void)t;
    evbuffer_add(out, "PING\r\n", 6);
    return 0;
}

static int redis_received(const struct check_target *t, struct evbuffer *in, bool eof, char *why,
                          size_t why_size, size_t *body_start)
{
    (void)t;
    (void)eof;
    size_t len = evbuffer_get_length(in);
    const char *text = (const char *)evbuffer_pullup(in, -1);
    const char *end = text ? memchr(text, '\n', len) : NULL;
    if (end == NULL)
        return len > 512 ? (snprintf(why, why_size, "no RESP line in %zu bytes", len), -1) : 0;
    *body_start = 0;
    if (len >= 5 && memcmp(text, "+PONG", 5) == 0)
        return 1;
    if (len >= 7 && memcmp(text, "-NOAUTH", 7) == 0)
        return 1;
    int n = (int)(end - text);
    snprintf(why, why_size, "PING answered `%.*s`", n > 80 ? 80 : n, text);
    return -1;
}

const struct check_ops check_redis_ops = {
    .name = "redis",
    .connected = redis_connected,
    .received = redis_received,
};
