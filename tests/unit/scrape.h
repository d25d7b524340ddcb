/* GET a path of a server's API in-process and keep its text (GET /metrics is
 * not JSON): evhttp's client on the caller's loop, run until the answer comes
 * or 5 s pass.  For test_metrics.c and test_recovery.c. */
#ifndef VCR_TESTS_SCRAPE_H
#define VCR_TESTS_SCRAPE_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"

struct scrape {
    bool done;
    int code;
    char content_type[80];
    char *text; /* malloc'd; NULL: no answer */
};

static inline void scrape_done(struct evhttp_request *req, void *arg)
{
    struct scrape *s = arg;
    s->done = true;
    if (req == NULL)
        return;
    s->code = evhttp_request_get_response_code(req);
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    snprintf(s->content_type, sizeof(s->content_type), "%s", ct ? ct : "");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    s->text = strndup((const char *)evbuffer_pullup(in, -1), len);
}

/* Fills *s (s->done false: no answer within 5 s). */
static inline void scrape_get(struct event_base *base, uint16_t port, const char *path,
                              struct scrape *s)
{
    memset(s, 0, sizeof(*s));
    struct evhttp_connection *conn = evhttp_connection_base_new(base, NULL, "127.0.0.1", port);
    struct evhttp_request *req = evhttp_request_new(scrape_done, s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "127.0.0.1");
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) == 0) {
        int64_t deadline = vcr_mono_ms() + 5000;
        while (!s->done && vcr_mono_ms() < deadline) {
            struct timeval tick = {0, 5000};
            event_base_loopexit(base, &tick);
            event_base_dispatch(base);
        }
    }
    evhttp_connection_free(conn);
}

#endif
