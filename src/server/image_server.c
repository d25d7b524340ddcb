/* The image server: GET /v1/images/NAME answers the configured file's bytes.
 *
 * Its own evhttp on its own listener (`images_listen`), not a route of the
 * HTTP API: the API has no authentication and stays on loopback, while the
 * standby VMs must reach this one.  It serves only the files named in
 * `images:`, read-only.  The file goes out as an evbuffer file segment
 * (mapped, never copied into the heap), so a large image neither blocks the
 * loop nor costs memory; Content-Length comes from its size. */
#include "server/images.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "server/inventory.h"
#include "server/listen_guard.h"

/* Inactivity limit of one connection: a standby VM under TCG can be slow to
 * drain, never silent this long. */
#define IMAGE_SERVER_TIMEOUT_S 120

struct image_server {
    struct event_base *base;
    const struct image_config *images;
    size_t n;
    struct evhttp *http;
    struct listen_guard *guard;
    uint16_t port;
    uint64_t bytes_served;
};

static void reply_text(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_text(struct evhttp_request *req, int code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add_printf(buf, "%s\n", text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *opaque)
{
    struct image_server *s = opaque;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    const char *peer = "?";
    ev_uint16_t peer_port = 0;
    char *peer_host = NULL;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer_host, &peer_port);
    if (peer_host)
        peer = peer_host;
    if (path == NULL || strncmp(path, IMAGES_URL_PATH, strlen(IMAGES_URL_PATH)) != 0) {
        reply_text(req, 404, "no endpoint `%s`; this listener serves GET %sNAME only",
                   path ? path : "", IMAGES_URL_PATH);
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        reply_text(req, 405, "`%s` takes GET only", path);
        return;
    }
    const char *name = path + strlen(IMAGES_URL_PATH);
    const struct image_config *img =
        inventory_valid_name(name) ? images_find(s->images, s->n, name) : NULL;
    if (img == NULL) {
        log_warn("image server: %s asked for `%.80s`: no such image", peer, name);
        reply_text(req, 404, "no image `%.80s` in the server's `images:`", name);
        return;
    }
    int fd = open(img->file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        log_error("image server: image `%s`: open `%s`: %s", img->name, img->file, strerror(e));
        reply_text(req, 500, "image `%s`: cannot read its file on the server: %s", img->name,
                   strerror(e));
        return;
    }
    /* The segment owns fd from here (EVBUF_FS_CLOSE_ON_FREE): freed with the
     * last chain that refers to it, once the bytes are sent. */
    struct evbuffer_file_segment *seg =
        evbuffer_file_segment_new(fd, 0, st.st_size, EVBUF_FS_CLOSE_ON_FREE);
    if (seg == NULL) {
        close(fd);
        reply_text(req, 500, "image `%s`: cannot map its file", img->name);
        return;
    }
    struct evbuffer *buf = evbuffer_new();
    int added = buf ? evbuffer_add_file_segment(buf, seg, 0, st.st_size) : -1;
    evbuffer_file_segment_free(seg);
    if (added < 0) {
        if (buf)
            evbuffer_free(buf);
        reply_text(req, 500, "image `%s`: out of memory", img->name);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/gzip");
    evhttp_add_header(h, IMAGES_SHA256_HEADER, img->sha256);
    log_info("image server: image `%s` (%lld bytes) to %s", img->name, (long long)st.st_size, peer);
    s->bytes_served += (uint64_t)st.st_size;
    evhttp_send_reply(req, 200, "OK", buf);
    evbuffer_free(buf);
}

struct image_server *image_server_new(struct event_base *base, const struct image_config *images,
                                      size_t n, vcr_error_t *err)
{
    struct image_server *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->http = evhttp_new(base)) == NULL) {
        free(s);
        vcr_error_make(err, ENOMEM, "image server: out of memory");
        return NULL;
    }
    s->base = base;
    s->images = images;
    s->n = n;
    /* Every method reaches on_request, so that a wrong one gets its 405. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_body_size(s->http, 4096);
    evhttp_set_max_headers_size(s->http, 16 * 1024);
    evhttp_set_timeout(s->http, IMAGE_SERVER_TIMEOUT_S);
    evhttp_set_gencb(s->http, on_request, s);
    return s;
}

int image_server_listen(struct image_server *s, const char *addr, uint16_t port, vcr_error_t *err)
{
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(s->http, addr, port);
    if (bound == NULL)
        return vcr_error_errno(err, "image server: listen on %s:%u", addr, port);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len) < 0)
        return vcr_error_errno(err, "image server: listen on %s:%u", addr, port);
    s->port = ntohs(sin.sin_port);
    s->guard =
        listen_guard_new(s->base, evhttp_bound_socket_get_listener(bound), "image server", err);
    return s->guard ? 0 : -1;
}

uint16_t image_server_port(const struct image_server *s)
{
    return s->port;
}

uint64_t image_server_bytes_served(const struct image_server *s)
{
    return s->bytes_served;
}

void image_server_free(struct image_server *s)
{
    if (s == NULL)
        return;
    listen_guard_free(s->guard);
    evhttp_free(s->http);
    free(s);
}
