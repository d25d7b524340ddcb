/* systemd notifications without libsystemd (sd_notify.h): the protocol is one
 * datagram of NEWLINE-separated KEY=VALUE pairs to the unix socket named by
 * $NOTIFY_SOCKET (sd_notify(3), "Notes"). */
#include "common/sd_notify.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

struct vcr_sd_watchdog {
    struct event *timer;
};

int vcr_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        errno = EINVAL;
        return -1;
    }
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL */
    socklen_t salen =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 1;
}

int vcr_sd_notifyf(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return vcr_sd_notify(msg);
}

uint64_t vcr_sd_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    if (usec == NULL || usec[0] == '\0')
        return 0;
    char *end;
    if (pid != NULL && pid[0] != '\0') {
        errno = 0;
        long long p = strtoll(pid, &end, 10);
        if (errno != 0 || *end != '\0' || p != (long long)getpid())
            return 0; /* meant for another process (our parent's, say) */
    }
    errno = 0;
    unsigned long long v = strtoull(usec, &end, 10);
    if (errno != 0 || *end != '\0' || usec[0] == '-')
        return 0;
    return (uint64_t)v;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (vcr_sd_notify("WATCHDOG=1") < 0)
        log_warn("systemd watchdog: cannot notify $NOTIFY_SOCKET: %s", strerror(errno));
}

struct vcr_sd_watchdog *vcr_sd_watchdog_start(struct event_base *base)
{
    uint64_t usec = vcr_sd_watchdog_usec();
    if (usec == 0)
        return NULL;
    struct vcr_sd_watchdog *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->timer = event_new(base, -1, EV_PERSIST, on_watchdog, w)) == NULL) {
        log_warn("systemd watchdog: cannot make its timer; systemd will restart us after %llu ms",
                 (unsigned long long)(usec / 1000));
        free(w);
        return NULL;
    }
    uint64_t half = usec / 2;
    struct timeval tv = {.tv_sec = (time_t)(half / 1000000),
                         .tv_usec = (suseconds_t)(half % 1000000)};
    event_add(w->timer, &tv);
    on_watchdog(-1, 0, w);
    log_info("systemd watchdog: WATCHDOG=1 every %llu ms from the event loop",
             (unsigned long long)(half / 1000));
    return w;
}

void vcr_sd_watchdog_free(struct vcr_sd_watchdog *w)
{
    if (w == NULL)
        return;
    event_free(w->timer);
    free(w);
}
