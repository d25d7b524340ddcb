/* The API client: libevent's evhttp client on a private event loop per
 * request.  libevent is already linked for the daemons, and DESIGN.md counts
 * a hand-written HTTP client as a defect; evhttp also gives us timeouts,
 * chunked bodies and keep-alive handling for free. */
#include "cli/cli.h"

#include <errno.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "proto/proto_tls.h"

/* The credentials of every request (cli_http_set_credentials). */
static struct proto_tls *cli_tls;
static char cli_authorization[256];

int cli_http_set_credentials(const char *ca_file, const char *token, vcr_error_t *err)
{
    if (token && ca_file == NULL)
        return vcr_error_make(err, EINVAL,
                              "a token is sent over TLS only: give the CA of the server's "
                              "certificate (--ca FILE or $VCR_CA)");
    if (ca_file) {
        struct proto_tls_files files = {.ca = ca_file};
        proto_tls_free(cli_tls);
        if ((cli_tls = proto_tls_new(PROTO_TLS_API_CLIENT, &files, err)) == NULL)
            return -1;
    }
    if (token) {
        size_t n = strlen(token);
        if (n == 0 || n > 200 || strcspn(token, " \t\r\n") != n)
            return vcr_error_make(err, EINVAL,
                                  "the token is not one (1..200 characters, no blanks)");
        snprintf(cli_authorization, sizeof(cli_authorization), "Bearer %s", token);
    }
    return 0;
}

#define CLI_MAX_BODY (16 * 1024 * 1024)

struct http_result {
    struct event_base *base;
    bool answered;
    int code;
    char *body;
    size_t len;
    bool error_seen; /* evhttp reported how the request failed */
    long tls_verify; /* X509_V_OK, or why the server's certificate was refused */
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
    if (r->tls_verify != X509_V_OK) {
        snprintf(buf, size, "TLS: the server's certificate is refused: %s",
                 X509_verify_cert_error_string(r->tls_verify));
        return buf;
    }
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
    r->tls_verify = X509_V_OK;
    SSL *ssl = NULL;
    struct evhttp_connection *conn = NULL;
    if (r->base && cli_tls) {
        /* The certificate must name what --server says: an address is matched
         * against its IP entries, a name against its DNS names. */
        struct in_addr a4;
        struct in6_addr a6;
        bool literal = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
        ssl = SSL_new(proto_tls_ctx(cli_tls));
        if (ssl && !literal)
            SSL_set_tlsext_host_name(ssl, host);
        if (ssl && (literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
                            : SSL_set1_host(ssl, host)) == 1) {
            struct bufferevent *bev =
                bufferevent_openssl_socket_new(r->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
            if (bev) {
                bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
                conn = evhttp_connection_base_bufferevent_new(r->base, NULL, bev, host, port);
            } else {
                SSL_free(ssl);
                ssl = NULL;
            }
        }
    } else if (r->base) {
        conn = evhttp_connection_base_new(r->base, NULL, host, port);
    }
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
        if (cli_authorization[0])
            evhttp_add_header(headers, "Authorization", cli_authorization);
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
    if (ssl && !r->answered)
        r->tls_verify = SSL_get_verify_result(ssl);
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
