/* Who may do what on the HTTP API, checked before any handler runs
 * (docs/security.md, "The HTTP API"): the Host names this server, a client
 * within its rate, credentials (bearer token or session cookie) of a role that
 * allows the route, and for state-changing requests a JSON body and an Origin
 * that is this server's own.  Refusals are logged at most a few lines per
 * 10 s (vcr_log_limited): a flood of bad requests does not flood the log. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/api_auth.h"
#include "server/api_priv.h"

/* The address the client connected to (a literal), for the Host check. */
static bool local_address(struct evhttp_request *req, char *out, size_t size)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    if (ss.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, size) != NULL;
    if (ss.ss_family != AF_INET6)
        return false;
    const struct in6_addr *a6 = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    /* A listener on [::] takes IPv4 clients too, as ::ffff:A.B.C.D: they name
     * A.B.C.D in Host. */
    if (IN6_IS_ADDR_V4MAPPED(a6))
        return inet_ntop(AF_INET, &a6->s6_addr[12], out, size) != NULL;
    return inet_ntop(AF_INET6, a6, out, size) != NULL;
}

static const char *peer_address(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    ev_uint16_t port = 0;
    if (evcon)
        evhttp_connection_get_peer(evcon, &addr, &port);
    return addr ? addr : "?";
}

static void refuse(struct api *api, struct evhttp_request *req, int code, const char *what,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void refuse(struct api *api, struct evhttp_request *req, int code, const char *what,
                   const char *fmt, ...)
{
    char message[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    const char *path = evhttp_request_get_uri(req);
    vcr_log_limited(&api->refusals_log, VCR_LOG_WARN, "HTTP API: %s %.80s from %s: %d %s", what,
                    path ? path : "", peer_address(req), code, message);
    api_reply_error(req, code, "%s", message);
}

/* The credentials of req: a bearer token, else a session cookie; NULL if none
 * valid.  *cookie tells which. */
static const struct api_token *credentials(struct api *api, struct evhttp_request *req,
                                           bool *cookie, bool *presented)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *authz = evhttp_find_header(in, "Authorization");
    const char *token;
    size_t len;
    *cookie = false;
    *presented = authz != NULL;
    if (authz)
        return api_parse_bearer(authz, &token, &len) == 0
                   ? api_tokens_match(api->opts.tokens, api->opts.n_tokens, token, len)
                   : NULL;
    const char *cookies = evhttp_find_header(in, "Cookie");
    if (api_parse_cookie(cookies, API_SESSION_COOKIE, &token, &len) == 0) {
        *cookie = true;
        *presented = true;
        return api_sessions_find(api->sessions, token, len, vcr_mono_ms());
    }
    return NULL;
}

bool api_access_check(struct api *api, struct evhttp_request *req, enum evhttp_cmd_type method,
                      enum api_role need, const struct api_token **who)
{
    *who = NULL;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    if (api->opts.tls && !api_conn_is_tls(req)) {
        api_reply_error(req, 500, "not a TLS connection");
        return false;
    }
    const char *host = evhttp_find_header(in, "Host");
    char local[INET6_ADDRSTRLEN] = "";
    /* DNS rebinding: a page of another site whose name now points here sends
     * that name as Host. */
    if (!local_address(req, local, sizeof(local)) ||
        !api_host_allowed(host, local, (const char *const *)api->opts.names, api->opts.n_names)) {
        refuse(api, req, 421, "Host", "Host `%.80s` is not a name of this server; allowed: %s%s",
               host ? host : "(none)", local, api->opts.n_names ? " or a name in `api_names`" : "");
        return false;
    }
    bool secure = api->opts.tls != NULL;
    bool cookie = false, presented = false;
    const struct api_token *t = secure ? credentials(api, req, &cookie, &presented) : NULL;
    char key[96];
    if (t)
        snprintf(key, sizeof(key), "t:%s", t->name);
    else
        snprintf(key, sizeof(key), "a:%s", peer_address(req));
    uint32_t retry_s = 1;
    if (!api_rate_take(api->rate, key, vcr_mono_ms(), &retry_s)) {
        char retry[16];
        snprintf(retry, sizeof(retry), "%u", retry_s);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", retry);
        refuse(api, req, 429, "rate", "more than %u requests per second (burst %u) from `%s`",
               api->opts.rate_per_s, api->opts.rate_burst, key + 2);
        return false;
    }
    if (secure && need > API_ROLE_NONE && t == NULL) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"vcr\"");
        refuse(api, req, 401, "credentials", "%s",
               presented ? "the credentials are not valid (token unknown, session ended)"
                         : "credentials needed: `Authorization: Bearer TOKEN` (vcr --token-file, "
                           "VCR_TOKEN) or the dashboard's sign-in");
        return false;
    }
    if (secure && t && t->role < need) {
        refuse(api, req, 403, "role", "token `%s` has role %s; this needs %s", t->name,
               api_role_name(t->role), api_role_name(need));
        return false;
    }
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        /* CSRF: a form of another site can post text/plain or a form encoding,
         * never application/json without a preflight this server never allows. */
        const char *ct = evhttp_find_header(in, "Content-Type");
        size_t body = evbuffer_get_length(evhttp_request_get_input_buffer(req));
        if ((ct || body) && !api_content_type_is_json(ct)) {
            refuse(api, req, 415, "Content-Type",
                   "Content-Type `%.60s`: the API takes application/json bodies only",
                   ct ? ct : "(none)");
            return false;
        }
        const char *origin = evhttp_find_header(in, "Origin");
        /* A browser always sends Origin on a POST; a cookie is only a browser's. */
        if ((origin || cookie) && !api_origin_allowed(origin, host, secure)) {
            refuse(api, req, 403, "Origin", "Origin `%.80s` is not this server (%s://%.80s)",
                   origin ? origin : "(none)", secure ? "https" : "http", host);
            return false;
        }
    }
    *who = t;
    return true;
}

/* --- POST /v1/login, POST /v1/logout (the dashboard's sign-in) --- */

void api_handle_login(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    if (api->opts.tls == NULL) {
        api_reply_error(req, 404, "no sign-in: the API is not authenticated (api_insecure)");
        return;
    }
    cleanup_free char *text = NULL;
    cleanup_json json_t *body = NULL;
    if (api_read_body(req, false, &body, &text) < 0)
        return;
    json_t *token = json_object_get(body, "token");
    if (!json_is_object(body) || json_object_size(body) != 1 || !json_is_string(token)) {
        api_reply_error(req, 400, "body: expected {\"token\": TOKEN}");
        return;
    }
    const struct api_token *t = api_tokens_match(
        api->opts.tokens, api->opts.n_tokens, json_string_value(token), json_string_length(token));
    if (t == NULL) {
        refuse(api, req, 401, "sign-in", "unknown token");
        return;
    }
    char id[2 * API_SESSION_ID_BYTES + 1];
    cleanup_error vcr_error_t err = NULL;
    if (api_sessions_open(api->sessions, t, vcr_mono_ms(), id, &err) < 0) {
        api_reply_error(req, 500, "%s", vcr_error_msg(err));
        return;
    }
    char cookie[200];
    snprintf(cookie, sizeof(cookie),
             API_SESSION_COOKIE "=%s; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=%d", id,
             API_SESSION_TTL_MS / 1000);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Set-Cookie", cookie);
    log_info("HTTP API: token `%s` (%s) signed in from %s", t->name, api_role_name(t->role),
             peer_address(req));
    cleanup_json json_t *answer =
        json_pack("{s:s, s:s}", "name", t->name, "role", api_role_name(t->role));
    api_reply_json(req, 200, answer);
}

void api_handle_logout(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    const char *cookies = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
    const char *id;
    size_t len;
    if (api_parse_cookie(cookies, API_SESSION_COOKIE, &id, &len) == 0)
        api_sessions_close(api->sessions, id, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Set-Cookie",
                      API_SESSION_COOKIE "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    cleanup_json json_t *answer = json_pack("{s:s}", "result", "signed out");
    api_reply_json(req, 200, answer);
}

/* GET /v1/whoami: whether this API authenticates, and who the request's
 * credentials are (name null: none); the dashboard asks it to know whether it
 * must sign in.  Open: a 401 here would be an error in the browser's console. */
void api_handle_whoami(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    const struct api_token *t = api->who;
    bool auth = api->opts.tls != NULL;
    cleanup_json json_t *answer =
        t ? json_pack("{s:b, s:s, s:s}", "auth", auth, "name", t->name, "role",
                      api_role_name(t->role))
          : json_pack("{s:b, s:n, s:s?}", "auth", auth, "name", "role", auth ? NULL : "operator");
    api_reply_json(req, 200, answer);
}
