/* Listeners that survive running out of descriptors.  A listening socket with
 * a connection the process cannot accept (EMFILE, ENFILE, ENOBUFS, ENOMEM)
 * stays readable: libevent would call accept again at once, forever, and log
 * each time.  A guarded listener is disabled for LISTEN_GUARD_PAUSE_MS
 * instead, with one log line per pause (nginx's accept_mutex_delay, in
 * miniature), and the descriptors the server needs for its probes and agents
 * stay free. */
#ifndef VCR_SERVER_LISTEN_GUARD_H
#define VCR_SERVER_LISTEN_GUARD_H

#include <stdint.h>

#include "common/err.h"

#define LISTEN_GUARD_PAUSE_MS 1000

struct event_base;
struct evconnlistener;
struct listen_guard;

/* Guards l (borrowed, must outlive the guard); what names it in log lines. */
struct listen_guard *listen_guard_new(struct event_base *base, struct evconnlistener *l,
                                      const char *what, vcr_error_t *err);
void listen_guard_free(struct listen_guard *g);
/* How often the listener was paused. */
uint64_t listen_guard_pauses(const struct listen_guard *g);

/* Raises the soft RLIMIT_NOFILE to the hard one (once per process), and
 * returns the soft limit then in force. */
uint64_t listen_guard_raise_nofile(void);

#endif
