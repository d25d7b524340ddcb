#include "server/listen_guard.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/log.h"

/* The error callback of a listener gets the accept callback's argument, which
 * evhttp owns for its own listeners: the guard is found by its listener. */
#define GUARDS_MAX 8

struct listen_guard {
    struct evconnlistener *listener;
    struct event *resume;
    const char *what;
    uint64_t pauses;
};

static struct listen_guard *guards[GUARDS_MAX];

static struct listen_guard *guard_of(struct evconnlistener *l)
{
    for (size_t i = 0; i < GUARDS_MAX; i++)
        if (guards[i] && guards[i]->listener == l)
            return guards[i];
    return NULL;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct listen_guard *g = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(g->listener);
}

static void on_accept_error(struct evconnlistener *l, void *ctx)
{
    (void)ctx;
    int e = EVUTIL_SOCKET_ERROR();
    struct listen_guard *g = guard_of(l);
    if (g == NULL)
        return;
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
        log_warn("%s: accept: %s", g->what, evutil_socket_error_to_string(e));
        return;
    }
    g->pauses++;
    evconnlistener_disable(l);
    struct timeval tv = {LISTEN_GUARD_PAUSE_MS / 1000, (LISTEN_GUARD_PAUSE_MS % 1000) * 1000};
    event_add(g->resume, &tv);
    /* One line for the first pause, then one per 60 pauses (about a minute). */
    if (g->pauses == 1 || g->pauses % 60 == 0)
        log_error("%s: accept: %s: not accepting for %d ms (paused %llu times so far)", g->what,
                  evutil_socket_error_to_string(e), LISTEN_GUARD_PAUSE_MS,
                  (unsigned long long)g->pauses);
}

struct listen_guard *listen_guard_new(struct event_base *base, struct evconnlistener *l,
                                      const char *what, vcr_error_t *err)
{
    size_t slot = GUARDS_MAX;
    for (size_t i = 0; i < GUARDS_MAX && slot == GUARDS_MAX; i++)
        if (guards[i] == NULL)
            slot = i;
    struct listen_guard *g = slot < GUARDS_MAX ? calloc(1, sizeof(*g)) : NULL;
    if (g == NULL || (g->resume = evtimer_new(base, on_resume, g)) == NULL) {
        free(g);
        vcr_error_make(err, ENOMEM, "%s: cannot guard its listener", what);
        return NULL;
    }
    g->listener = l;
    g->what = what;
    guards[slot] = g;
    evconnlistener_set_error_cb(l, on_accept_error);
    return g;
}

void listen_guard_free(struct listen_guard *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < GUARDS_MAX; i++)
        if (guards[i] == g)
            guards[i] = NULL;
    event_free(g->resume);
    free(g);
}

uint64_t listen_guard_pauses(const struct listen_guard *g)
{
    return g ? g->pauses : 0;
}

uint64_t listen_guard_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}
