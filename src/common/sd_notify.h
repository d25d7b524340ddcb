/* systemd's service notification protocol (sd_notify(3)), without libsystemd:
 * readiness, status, stopping, and the watchdog fed from the event loop, so a
 * daemon whose loop hangs is restarted by systemd (Type=notify, WatchdogSec=
 * in packaging/systemd/).  Outside systemd ($NOTIFY_SOCKET unset) every call
 * is a no-op. */
#ifndef VCR_COMMON_SD_NOTIFY_H
#define VCR_COMMON_SD_NOTIFY_H

#include <stdint.h>

struct event_base;
struct vcr_sd_watchdog;

/* Sends state ("READY=1", "STATUS=...", "STOPPING=1", several joined by
 * newlines) as one datagram to $NOTIFY_SOCKET (a path, or '@' for the
 * abstract namespace).  1 when sent, 0 when there is no socket to send to,
 * -1 when sending failed (errno set; the daemon logs it and goes on). */
int vcr_sd_notify(const char *state);
/* printf-style vcr_sd_notify; the message is cut at 1 KiB. */
int vcr_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The interval systemd expects WATCHDOG=1 within, in microseconds, from
 * $WATCHDOG_USEC when $WATCHDOG_PID is unset or names this process; 0 when no
 * watchdog is asked for. */
uint64_t vcr_sd_watchdog_usec(void);

/* When systemd asks for a watchdog, a timer on base sends WATCHDOG=1 every
 * half interval (so only a loop that runs feeds it); NULL when none is asked
 * for or the timer cannot be made (logged).  Free with vcr_sd_watchdog_free
 * before the base. */
struct vcr_sd_watchdog *vcr_sd_watchdog_start(struct event_base *base);
void vcr_sd_watchdog_free(struct vcr_sd_watchdog *w);

#endif
