/* The check runner: one bufferevent connect with a deadline, the protocol's
 * ops after that.  Every outcome, even a refused connect, reaches done from the
 * loop, never from check_start (callers may be in the middle of a state change). */
#include "server/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/hostport.h"

#define CHECK_BODY_MAX 4096

struct check {
    const struct check_ops *ops;
    struct check_target target;
    char *address;
    char where[64]; /* "address:port", "[address]:port" for IPv6, for messages */
    char *path;
    struct bufferevent *bev;
    struct event *timer; /* the deadline, then the deferred completion */
    check_done_fn done;
    void *arg;
    bool finished;
    enum check_outcome outcome;
    char why[200];
    char body[CHECK_BODY_MAX];
};

static void check_free(struct check *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->timer)
        event_free(c->timer);
    free(c->address);
    free(c->path);
    free(c);
}

void check_cancel(struct check *c)
{
    if (c)
        check_free(c);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct check *c = arg;
    (void)fd;
    (void)what;
    check_done_fn done = c->done;
    void *done_arg = c->arg;
    enum check_outcome outcome = c->outcome;
    char why[sizeof(c->why)], body[sizeof(c->body)];
    memcpy(why, c->why, sizeof(why));
    memcpy(body, c->body, sizeof(body));
    check_free(c);
    done(outcome, outcome == CHECK_HEALTHY ? NULL : why, body, done_arg);
}

/* Ends the check: frees the socket now, reports from the loop. */
static void finish(struct check *c, enum check_outcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct check *c, enum check_outcome outcome, const char *fmt, ...)
{
    if (c->finished)
        return;
    c->finished = true;
    c->outcome = outcome;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->why, sizeof(c->why), fmt, ap);
        va_end(ap);
    }
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    event_del(c->timer);
    event_assign(c->timer, event_get_base(c->timer), -1, 0, on_deferred, c);
    struct timeval now = {0, 0};
    event_add(c->timer, &now);
}

static void copy_body(struct check *c, struct evbuffer *in, size_t start)
{
    size_t len = evbuffer_get_length(in);
    if (start >= len)
        return;
    size_t n = len - start < sizeof(c->body) - 1 ? len - start : sizeof(c->body) - 1;
    const char *text = (const char *)evbuffer_pullup(in, -1);
    memcpy(c->body, text + start, n);
    c->body[n] = '\0';
}

static void received(struct check *c, bool eof)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    char why[sizeof(c->why)] = "";
    size_t body_start = 0;
    int r = c->ops->received(&c->target, in, eof, why, sizeof(why), &body_start);
    if (r == 0 && eof)
        r = -1, snprintf(why, sizeof(why), "closed before a full answer");
    if (r != 0)
        copy_body(c, in, body_start);
    if (r > 0)
        finish(c, CHECK_HEALTHY, NULL);
    else if (r < 0)
        finish(c, CHECK_UNHEALTHY, "%s: %s", c->where, why);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    received(arg, false);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct check *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->ops->connected(&c->target, bufferevent_get_output(c->bev)) > 0)
            finish(c, CHECK_HEALTHY, NULL);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        received(c, true);
        return;
    }
    int e = EVUTIL_SOCKET_ERROR();
    finish(c, check_local_error(e) ? CHECK_INCONCLUSIVE : CHECK_UNHEALTHY, "%s: %s", c->where,
           e ? evutil_socket_error_to_string(e) : "connection error");
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct check *c = arg;
    (void)fd;
    (void)what;
    finish(c, CHECK_UNHEALTHY, "%s: no %s answer within %u ms", c->where, c->ops->name,
           c->target.timeout_ms);
}

struct check *check_start(struct event_base *base, const struct check_target *t, check_done_fn done,
                          void *arg, vcr_error_t *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (vcr_sockaddr_of(t->address, t->port, &ss, &sslen) < 0) {
        vcr_error_make(err, EINVAL, "check: `%s` is not an IPv4 or IPv6 address",
                       t->address ? t->address : "(null)");
        return NULL;
    }
    struct check *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->address = strdup(t->address)) == NULL ||
        (t->path && (c->path = strdup(t->path)) == NULL) ||
        (c->timer = evtimer_new(base, on_timeout, c)) == NULL) {
        if (c)
            check_free(c);
        vcr_error_make(err, ENOMEM, "check %s:%u: out of memory", t->address, t->port);
        return NULL;
    }
    c->ops = t->type ? t->type : &check_tcp_ops;
    c->target = *t;
    c->target.address = c->address;
    vcr_host_port_format(c->address, t->port, c->where, sizeof(c->where));
    c->target.path = c->path;
    c->done = done;
    c->arg = arg;
    struct timeval tv = {.tv_sec = t->timeout_ms / 1000, .tv_usec = (t->timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    /* The socket is made here, not by libevent, so that its errno is ours to read:
     * a process out of descriptors learns nothing about the service. */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        finish(c, check_local_error(e) ? CHECK_INCONCLUSIVE : CHECK_UNHEALTHY, "%s: socket: %s",
               c->where, strerror(e));
        return c;
    }
    if ((c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        close(fd);
        finish(c, CHECK_INCONCLUSIVE, "%s: out of memory", c->where);
        return c;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
        int e = errno;
        finish(c, check_local_error(e) ? CHECK_INCONCLUSIVE : CHECK_UNHEALTHY, "%s: connect: %s",
               c->where, strerror(e));
    }
    return c;
}

bool check_local_error(int error)
{
    switch (error) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
    case EADDRNOTAVAIL:
        return true;
    default:
        return false;
    }
}
