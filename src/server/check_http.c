/* HTTP health check: GET path answered with a 2xx or 3xx status line, and the
 * body read to the end (HTTP/1.0, Connection: close), so that a service that
 * accepts but never answers (hung) fails within the timeout. */
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/check.h"

#define HTTP_MAX_ANSWER (64 * 1024)

static int http_connected(const struct check_target *t, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: vcr-server\r\n"
                        "Connection: close\r\n\r\n",
                        t->path ? t->path : "/", t->address);
    return 0;
}

static int http_received(const struct check_target *t, struct evbuffer *in, bool eof, char *why,
                         size_t why_size, size_t *body_start)
{
    (void)t;
    size_t len = evbuffer_get_length(in);
    if (!eof && len < HTTP_MAX_ANSWER)
        return 0;
    const char *text = (const char *)evbuffer_pullup(in, -1);
    int major = 0, minor = 0, status = 0;
    if (text == NULL || len < 12 || sscanf(text, "HTTP/%d.%d %3d", &major, &minor, &status) != 3) {
        snprintf(why, why_size, "not an HTTP answer (%zu bytes)", len);
        return -1;
    }
    const char *end = memmem(text, len, "\r\n\r\n", 4);
    *body_start = end ? (size_t)(end + 4 - text) : len;
    if (status < 200 || status > 399) {
        snprintf(why, why_size, "HTTP status %d", status);
        return -1;
    }
    return 1;
}

const struct check_ops check_http_ops = {
    .name = "http",
    .takes_path = true,
    .connected = http_connected,
    .received = http_received,
};
