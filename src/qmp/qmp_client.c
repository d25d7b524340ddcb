/* Asynchronous QMP client on a libevent bufferevent.
 *
 * Re-entrancy: user callbacks may free the client or (from closed) connect it
 * again.  Every entry from the loop holds a depth count; qmp_client_free only
 * marks the client while the count is up, and the outermost exit releases
 * it.  Most callbacks run from inside qmp_parser_feed, so nothing there may
 * close the connection (closed could reconnect and replace the parser): a
 * protocol violation found while parsing is recorded and acted on once the
 * parser has returned. */
#include "qmp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

enum client_state {
    CLIENT_IDLE,        /* never connected, or closed */
    CLIENT_RETRYING,    /* waiting for QEMU to create its socket */
    CLIENT_GREETING,    /* connected, QEMU's greeting not seen yet */
    CLIENT_NEGOTIATING, /* qmp_capabilities sent */
    CLIENT_READY,
};

/* Retry delays: QEMU usually listens within a few tens of milliseconds. */
#define RETRY_FIRST_MS 10
#define RETRY_MAX_MS   250

struct pending_reply {
    struct pending_reply *next;
    json_int_t id;
    qmp_reply_cb cb;
    void *opaque;
};

struct qmp_client {
    struct event_base *base;
    struct qmp_client_ops ops;
    void *opaque;
    enum client_state state;
    struct bufferevent *bev;
    struct qmp_parser *parser;
    json_int_t next_id;
    struct pending_reply *pending; /* in sending order: replies usually come in it */
    struct pending_reply **pending_tail;
    char *close_reason; /* protocol violation seen while parsing */

    struct event *retry_timer;
    char *retry_path;
    int64_t retry_deadline_ms;
    int retry_delay_ms;

    int depth; /* nesting of entries from the event loop */
    bool free_requested;
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_bev_event(struct bufferevent *bev, short what, void *arg);
static void on_retry_timer(evutil_socket_t fd, short what, void *arg);

static void client_enter(struct qmp_client *c)
{
    c->depth++;
}

/* qmp_client_free has already disconnected and failed the pending replies. */
static void destroy(struct qmp_client *c)
{
    event_free(c->retry_timer);
    qmp_parser_free(c->parser);
    free(c->close_reason);
    free(c);
}

static void client_leave(struct qmp_client *c)
{
    if (--c->depth == 0 && c->free_requested)
        destroy(c);
}

struct qmp_client *qmp_client_new(struct event_base *base, const struct qmp_client_ops *ops,
                                  void *opaque)
{
    struct qmp_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    if (ops)
        c->ops = *ops;
    c->opaque = opaque;
    c->next_id = 1;
    c->pending_tail = &c->pending;
    c->retry_timer = evtimer_new(base, on_retry_timer, c);
    if (c->retry_timer == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void qmp_client_set_ops(struct qmp_client *c, const struct qmp_client_ops *ops, void *opaque)
{
    memset(&c->ops, 0, sizeof(c->ops));
    if (ops)
        c->ops = *ops;
    c->opaque = opaque;
}

int qmp_client_is_ready(const struct qmp_client *c)
{
    return c->state == CLIENT_READY && !c->free_requested;
}

/* Drops the connection or the retrying; the parser stays, as it may be in
 * the middle of feeding when a callback frees the client. */
static void disconnect(struct qmp_client *c)
{
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    evtimer_del(c->retry_timer);
    free(c->retry_path);
    c->retry_path = NULL;
    c->state = CLIENT_IDLE;
}

static void fail_pending(struct qmp_client *c, const char *error)
{
    /* Detached first: a callback may send (refused: not ready) or free. */
    struct pending_reply *list = c->pending;
    c->pending = NULL;
    c->pending_tail = &c->pending;
    while (list) {
        struct pending_reply *r = list;
        list = r->next;
        if (r->cb)
            r->cb(c, NULL, error, r->opaque);
        free(r);
    }
}

/* The connection ended by itself; the caller holds client_enter. */
static void client_close(struct qmp_client *c, const char *reason)
{
    if (reason)
        log_debug("QMP connection closed: %s", reason);
    disconnect(c);
    free(c->close_reason);
    c->close_reason = NULL;
    cleanup_free char *error = NULL;
    if (reason == NULL || asprintf(&error, "connection closed: %s", reason) < 0)
        error = NULL;
    fail_pending(c, error ? error : "connection closed");
    if (!c->free_requested && c->ops.closed)
        c->ops.closed(c, reason, c->opaque);
}

static bool connect_error_is_transient(int status)
{
    return status == ENOENT || status == ECONNREFUSED || status == EAGAIN;
}

static int try_connect(struct qmp_client *c, const char *path, vcr_error_t *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return vcr_error_make(err, ENAMETOOLONG, "QMP socket `%s`: path longer than %zu bytes",
                              path, sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);

    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vcr_error_errno(err, "QMP socket `%s`: socket", path);
    /* On Linux a UNIX-domain connect is never in progress: it succeeds or
     * fails now, so there is no EINPROGRESS to wait for. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return vcr_error_errno(err, "connect to QMP socket `%s`", path);

    struct qmp_parser *parser = qmp_parser_new(QMP_MAX_MESSAGE);
    if (parser == NULL)
        return vcr_error_make(err, ENOMEM, "QMP socket `%s`: out of memory", path);
    struct bufferevent *bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        qmp_parser_free(parser);
        return vcr_error_make(err, ENOMEM, "QMP socket `%s`: cannot create bufferevent", path);
    }
    steal_fd(&fd);
    bufferevent_setcb(bev, on_read, NULL, on_bev_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);

    qmp_parser_free(c->parser);
    c->parser = parser;
    c->bev = bev;
    c->state = CLIENT_GREETING;
    log_debug("QMP connected to `%s`", path);
    return 0;
}

static int check_can_connect(struct qmp_client *c, const char *path, vcr_error_t *err)
{
    if (c->free_requested || c->state != CLIENT_IDLE)
        return vcr_error_make(err, EISCONN,
                              "QMP socket `%s`: client already connected or connecting", path);
    return 0;
}

int qmp_client_connect(struct qmp_client *c, const char *socket_path, vcr_error_t *err)
{
    if (check_can_connect(c, socket_path, err) < 0)
        return -1;
    return try_connect(c, socket_path, err);
}

static void arm_retry(struct qmp_client *c)
{
    int64_t left = c->retry_deadline_ms - vcr_mono_ms();
    int delay = c->retry_delay_ms < left ? c->retry_delay_ms : (int)(left > 0 ? left : 0);
    struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (long)(delay % 1000) * 1000};
    evtimer_add(c->retry_timer, &tv);
    c->retry_delay_ms = c->retry_delay_ms * 2 < RETRY_MAX_MS ? c->retry_delay_ms * 2 : RETRY_MAX_MS;
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct qmp_client *c = arg;
    client_enter(c);
    cleanup_error vcr_error_t e = NULL;
    cleanup_free char *path = steal_pointer(&c->retry_path);
    if (try_connect(c, path, &e) == 0) {
        /* connected: try_connect moved the state on */
    } else if (connect_error_is_transient(vcr_error_status(e)) &&
               vcr_mono_ms() < c->retry_deadline_ms) {
        c->retry_path = steal_pointer(&path);
        arm_retry(c);
    } else {
        client_close(c, vcr_error_msg(e));
    }
    client_leave(c);
}

int qmp_client_connect_retry(struct qmp_client *c, const char *socket_path, int timeout_ms,
                             vcr_error_t *err)
{
    if (check_can_connect(c, socket_path, err) < 0)
        return -1;
    cleanup_error vcr_error_t first = NULL;
    if (try_connect(c, socket_path, &first) == 0)
        return 0;
    if (!connect_error_is_transient(vcr_error_status(first)))
        return vcr_error_make(err, vcr_error_status(first), "%s", vcr_error_msg(first));
    c->retry_path = strdup(socket_path);
    if (c->retry_path == NULL)
        return vcr_error_make(err, ENOMEM, "QMP socket `%s`: out of memory", socket_path);
    c->retry_deadline_ms = vcr_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    c->retry_delay_ms = RETRY_FIRST_MS;
    c->state = CLIENT_RETRYING;
    arm_retry(c);
    return 0;
}

/* The command's bytes with fd as SCM_RIGHTS ancillary data on their first byte,
 * after whatever the bufferevent still holds: QEMU's monitor keeps the last
 * descriptor it received until a command takes it (add-fd, getfd), so the
 * earlier commands must be in the socket first.  Whatever sendmsg did not
 * take goes through the bufferevent. */
static int send_with_fd(struct qmp_client *c, const char *command, const char *text, int fd,
                        vcr_error_t *err)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evutil_socket_t sock = bufferevent_getfd(c->bev);
    /* A socket bufferevent keeps its output's start frozen but while its own
     * write callback runs: thawed here for the same purpose. */
    evbuffer_unfreeze(out, 1);
    while (evbuffer_get_length(out) > 0 && evbuffer_write(out, sock) > 0)
        ;
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0)
        return vcr_error_make(err, EAGAIN, "QMP command `%s`: earlier commands are still unsent",
                              command);
    size_t len = strlen(text);
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct iovec iov = {.iov_base = (void *)text, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return vcr_error_errno(err, "QMP command `%s`: sendmsg", command);
    if ((size_t)n < len && bufferevent_write(c->bev, text + n, len - (size_t)n) < 0)
        return vcr_error_make(err, ENOMEM, "QMP command `%s`: cannot queue the request", command);
    return 0;
}

/* Sends {"execute": command, "arguments": args, "id": N}; args is stolen.  fd
 * >= 0: sent with it (send_with_fd). */
static int send_command(struct qmp_client *c, const char *command, json_t *args, int fd,
                        qmp_reply_cb cb, void *opaque, vcr_error_t *err)
{
    json_int_t id = c->next_id;
    cleanup_json json_t *msg =
        json_pack("{s:s, s:o*, s:I}", "execute", command, "arguments", args, "id", id);
    if (msg == NULL)
        return vcr_error_make(err, ENOMEM, "QMP command `%s`: out of memory", command);
    cleanup_free char *text = json_dumps(msg, JSON_COMPACT);
    cleanup_free struct pending_reply *r = calloc(1, sizeof(*r));
    if (text == NULL || r == NULL)
        return vcr_error_make(err, ENOMEM, "QMP command `%s`: out of memory", command);
    /* No "\r\n" after the object: QEMU reads its monitor a byte at a time and
     * stops after each command, so after `quit` the newline would still be
     * unread when QEMU exits, and the kernel would then report a reset
     * (ECONNRESET) instead of an orderly EOF. */
    if (fd >= 0) {
        if (send_with_fd(c, command, text, fd, err) < 0)
            return -1;
    } else if (bufferevent_write(c->bev, text, strlen(text)) < 0)
        return vcr_error_make(err, ENOMEM, "QMP command `%s`: cannot queue the request", command);
    c->next_id++;
    r->id = id;
    r->cb = cb;
    r->opaque = opaque;
    *c->pending_tail = r;
    c->pending_tail = &r->next;
    steal_pointer(&r);
    return 0;
}

static int command_checked(struct qmp_client *c, const char *command, json_t *args, int fd,
                           qmp_reply_cb cb, void *opaque, vcr_error_t *err)
{
    cleanup_json json_t *owned_args = args;
    if (command == NULL)
        return vcr_error_make(err, EINVAL, "QMP command: no command name");
    if (!qmp_client_is_ready(c))
        return vcr_error_make(err, ENOTCONN, "QMP command `%s`: client is not ready", command);
    if (args && !json_is_object(args))
        return vcr_error_make(err, EINVAL, "QMP command `%s`: arguments must be an object",
                              command);
    return send_command(c, command, steal_pointer(&owned_args), fd, cb, opaque, err);
}

int qmp_client_command(struct qmp_client *c, const char *command, json_t *args, qmp_reply_cb cb,
                       void *opaque, vcr_error_t *err)
{
    return command_checked(c, command, args, -1, cb, opaque, err);
}

int qmp_client_command_fd(struct qmp_client *c, const char *command, json_t *args, int fd,
                          qmp_reply_cb cb, void *opaque, vcr_error_t *err)
{
    if (fd < 0) {
        json_decref(args);
        return vcr_error_make(err, EBADF, "QMP command `%s`: no descriptor to pass", command);
    }
    return command_checked(c, command, args, fd, cb, opaque, err);
}

static void set_close_reason(struct qmp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_close_reason(struct qmp_client *c, const char *fmt, ...)
{
    if (c->close_reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&c->close_reason, fmt, ap) < 0)
        c->close_reason = NULL;
    va_end(ap);
    /* Even without memory for the text the connection must end. */
    if (c->close_reason == NULL)
        c->close_reason = strdup("protocol violation");
}

static void on_capabilities_reply(struct qmp_client *c, json_t *result, const char *error,
                                  void *opaque)
{
    (void)opaque;
    if (c->state != CLIENT_NEGOTIATING)
        return; /* the connection ended first; closed reports that */
    if (result == NULL) {
        set_close_reason(c, "qmp_capabilities failed: %s", error);
        return;
    }
    c->state = CLIENT_READY;
    if (c->ops.ready)
        c->ops.ready(c, c->opaque);
}

static struct pending_reply *take_pending(struct qmp_client *c, json_int_t id)
{
    for (struct pending_reply **pp = &c->pending; *pp; pp = &(*pp)->next) {
        struct pending_reply *r = *pp;
        if (r->id != id)
            continue;
        *pp = r->next;
        if (c->pending_tail == &r->next)
            c->pending_tail = pp;
        r->next = NULL;
        return r;
    }
    return NULL;
}

static void on_reply(struct qmp_client *c, const struct qmp_msg *m)
{
    if (!json_is_integer(m->id)) {
        set_close_reason(c, "reply without a command id");
        return;
    }
    cleanup_free struct pending_reply *r = take_pending(c, json_integer_value(m->id));
    if (r == NULL) {
        set_close_reason(c, "reply to unknown command id %" JSON_INTEGER_FORMAT,
                         json_integer_value(m->id));
        return;
    }
    if (r->cb == NULL)
        return;
    if (m->kind == QMP_MSG_RETURN) {
        r->cb(c, m->value, NULL, r->opaque);
        return;
    }
    cleanup_free char *error = NULL;
    if (asprintf(&error, "%s: %s", m->eclass, m->desc) < 0)
        error = NULL;
    r->cb(c, NULL, error ? error : m->eclass, r->opaque);
}

static void on_message(const struct qmp_msg *m, void *arg)
{
    struct qmp_client *c = arg;
    if (c->free_requested || c->close_reason || c->bev == NULL)
        return;
    if (c->state == CLIENT_GREETING) {
        if (m->kind != QMP_MSG_GREETING) {
            set_close_reason(c, "expected the QMP greeting first");
            return;
        }
        cleanup_error vcr_error_t e = NULL;
        c->state = CLIENT_NEGOTIATING;
        if (send_command(c, "qmp_capabilities", NULL, -1, on_capabilities_reply, NULL, &e) < 0)
            set_close_reason(c, "%s", vcr_error_msg(e));
        return;
    }
    switch (m->kind) {
    case QMP_MSG_GREETING:
        set_close_reason(c, "second QMP greeting");
        break;
    case QMP_MSG_RETURN:
    case QMP_MSG_ERROR:
        on_reply(c, m);
        break;
    case QMP_MSG_EVENT:
        if (c->ops.event)
            c->ops.event(c, m->event, m->value, m->ts_us, c->opaque);
        break;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct qmp_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    client_enter(c);
    /* c->bev changes when a callback frees the client or closes it. */
    while (c->bev == bev && evbuffer_get_length(in) > 0) {
        char chunk[4096];
        int n = evbuffer_remove(in, chunk, sizeof(chunk));
        if (n <= 0)
            break;
        cleanup_error vcr_error_t e = NULL;
        int rc = qmp_parser_feed(c->parser, chunk, (size_t)n, on_message, c, &e);
        if (c->bev != bev)
            break; /* a callback freed the client */
        if (rc < 0) {
            client_close(c, vcr_error_msg(e));
        } else if (c->close_reason) {
            cleanup_free char *reason = steal_pointer(&c->close_reason);
            client_close(c, reason);
        }
    }
    client_leave(c);
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct qmp_client *c = arg;
    client_enter(c);
    if (what & BEV_EVENT_EOF) {
        const char *reason = NULL;
        if (qmp_parser_buffered(c->parser) > 0)
            reason = "connection closed in the middle of a QMP message";
        else if (c->state != CLIENT_READY)
            reason = "connection closed during the QMP handshake";
        client_close(c, reason);
    } else if (what & BEV_EVENT_ERROR) {
        cleanup_free char *reason = NULL;
        if (asprintf(&reason, "QMP socket: %s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())) < 0)
            reason = NULL;
        client_close(c, reason ? reason : "QMP socket error");
    }
    client_leave(c);
}

void qmp_client_free(struct qmp_client *c)
{
    if (c == NULL || c->free_requested)
        return;
    c->free_requested = true;
    client_enter(c);
    disconnect(c);
    fail_pending(c, "connection closed");
    client_leave(c);
}
