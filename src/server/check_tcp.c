/* TCP health check: the port accepts a connection.  That is all a hung
 * process with a live listen socket fails to hide from the kernel's backlog,
 * so HTTP checks exist for services that can hang after accept. */
#include <event2/buffer.h>

#include "server/check.h"

static int tcp_connected(const struct check_target *t, struct evbuffer *out)
{
    (void)t;
    (void)out;
    return 1;
}

static int tcp_received(const struct check_target *t, struct evbuffer *in, bool eof, char *why,
                        size_t why_size, size_t *body_start)
{
    (void)t;
    (void)in;
    (void)eof;
    (void)why;
    (void)why_size;
    (void)body_start;
    return 1;
}

const struct check_ops check_tcp_ops = {
    .name = "tcp",
    .connected = tcp_connected,
    .received = tcp_received,
};
