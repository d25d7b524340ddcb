/* The API client: libevent's evhttp client on a private event loop per
 * request.  libevent is already linked for the daemons, and DESIGN.md counts
 * a hand-written HTTP client as a defect; evhttp also gives us timeouts,
 * chunked bodies and keep-alive handling for free. */
#include "cli/cli.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/hostport.h"

#define CLI_MAX_BODY (16 * 1024 * 1024)

struct http_result {
    struct event_base *base;
    bool answered;
    int code;
    char *body;
    size_t len;
    bool error_seen; /* evhttp reported how the request failed */
    enum evhttp_request_error error;
    int sys_errno; /* for failures that are ours, not the network's */
};

static void on_done(struct evhttp_request *req, void *arg)
{
    struct http_result *r = arg;
    event_base_loopbreak(r->base);
    if (req == NULL || evhttp_request_get_response_code(req) == 0)
        return;
    r->answered = true;
    r->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    r->len = evbuffer_get_length(in);
    r->body = malloc(r->len + 1);
    if (r->body == NULL) {
        r->answered = false;
        r->sys_errno = ENOMEM;
        return;
    }
    evbuffer_remove(in, r->body, r->len);
    r->body[r->len] = '\0';
}

static void on_error(enum evhttp_request_error error, void *arg)
{
    struct http_result *r = arg;
    r->error_seen = true;
    r->error = error;
}

static const char *describe_failure(const struct http_result *r, int timeout_s, char *buf,
                                    size_t size)
{
    if (r->sys_errno)
        return strerror(r->sys_errno);
    /* libevent 2.1 reports a failed connect with no error callback and no errno
     * of its own: refused, unreachable and unresolvable all end up here. */
    if (!r->error_seen)
        return "cannot connect (is vcr-server running, with its `api` at this address?)";
    switch (r->error) {
    case EVREQ_HTTP_TIMEOUT:
        snprintf(buf, size, "no answer within %d s", timeout_s);
        return buf;
    case EVREQ_HTTP_DATA_TOO_LONG:
        return "the answer is too large";
    case EVREQ_HTTP_INVALID_HEADER:
        return "the answer is not HTTP";
    default:
        return "the connection closed without an answer";
    }
}

/* Runs one request on a private loop; fills r, or returns -1 with *err. */
static int exchange(struct http_result *r, const char *server, const char *host, uint16_t port,
                    const char *method, const char *path, const char *body, int timeout_s,
                    vcr_error_t *err)
{
    enum evhttp_cmd_type type = strcmp(method, "POST") == 0 ? EVHTTP_REQ_POST : EVHTTP_REQ_GET;
    r->base = event_base_new();
    struct evhttp_connection *conn =
        r->base ? evhttp_connection_base_new(r->base, NULL, host, port) : NULL;
    struct evhttp_request *req = conn ? evhttp_request_new(on_done, r) : NULL;
    int ret = 0;
    if (req == NULL) {
        ret = vcr_error_make(err, ENOMEM, "%s %s: out of memory", method, path);
    } else {
        evhttp_connection_set_timeout(conn, timeout_s);
        evhttp_connection_set_max_body_size(conn, CLI_MAX_BODY);
        evhttp_request_set_error_cb(req, on_error);
        struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
        evhttp_add_header(headers, "Host", server);
        evhttp_add_header(headers, "Accept", "application/json");
        evhttp_add_header(headers, "Connection", "close");
        if (body) {
            evhttp_add_header(headers, "Content-Type", "application/json");
            evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
        }
        /* On failure evhttp_make_request frees req itself. */
        if (evhttp_make_request(conn, req, type, path) < 0)
            ret = vcr_error_make(err, EIO, "%s %s: cannot send the request to %s", method, path,
                                 server);
        else
            event_base_dispatch(r->base);
    }
    if (ret == 0 && !r->answered) {
        char buf[64];
        ret = vcr_error_make(err, r->sys_errno ? r->sys_errno : EIO, "server %s: %s", server,
                             describe_failure(r, timeout_s, buf, sizeof(buf)));
    }
    if (conn)
        evhttp_connection_free(conn);
    if (r->base)
        event_base_free(r->base);
    r->base = NULL;
    return ret;
}

json_t *cli_http_request(const char *server, const char *method, const char *path, int timeout_s,
                         vcr_error_t *err)
{
    return cli_http_request_body(server, method, path, NULL, timeout_s, err);
}

json_t *cli_http_request_body(const char *server, const char *method, const char *path,
                              json_t *body_json, int timeout_s, vcr_error_t *err)
{
    cleanup_free char *body_text = body_json ? json_dumps(body_json, JSON_COMPACT) : NULL;
    cleanup_free char *host = NULL;
    uint16_t port;
    if (vcr_parse_host_port(server, &host, &port, err) < 0) {
        vcr_error_wrap(err, "server address");
        return NULL;
    }
    struct http_result r = {.answered = false};
    if (exchange(&r, server, host, port, method, path, body_text, timeout_s, err) < 0) {
        free(r.body);
        return NULL;
    }
    cleanup_free char *text = r.body;
    json_error_t jerr;
    json_t *body = json_loadb(text, r.len, 0, &jerr);
    if (body == NULL) {
        vcr_error_make(err, EPROTO, "server %s: HTTP %d with a body that is not JSON: %s", server,
                       r.code, jerr.text);
        return NULL;
    }
    if (r.code < 200 || r.code > 299) {
        const char *message = json_string_value(json_object_get(body, "error"));
        vcr_error_make(err, 0, "server %s: HTTP %d: %s", server, r.code,
                       message ? message : "(no error message)");
        json_decref(body);
        return NULL;
    }
    return body;
}
