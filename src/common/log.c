#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

static const char *log_prog = "vcr";
static enum vcr_log_level log_max = VCR_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void vcr_log_init(const char *prog, enum vcr_log_level max_level)
{
    log_prog = prog;
    log_max = max_level;
}

int vcr_log_level_parse(const char *s)
{
    for (int i = 0; i <= VCR_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

enum vcr_log_level vcr_log_max_level(void)
{
    return log_max;
}

void vcr_log(enum vcr_log_level level, const char *fmt, ...)
{
    if (level > log_max)
        return;
    int64_t now_ms = vcr_wall_ms();
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);

    char line[2048];
    int n = snprintf(line, sizeof(line), "%s.%03d %s[%d] %s ", stamp, (int)(now_ms % 1000),
                     log_prog, (int)getpid(), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines of concurrent processes do not interleave. */
    fprintf(stderr, "%s\n", line);
}

void vcr_log_limited(struct vcr_log_limit *limit, enum vcr_log_level level, const char *fmt, ...)
{
    if (level > log_max)
        return;
    long long now = (long long)vcr_mono_ms();
    if (limit->window_start_ms == 0 || now - limit->window_start_ms >= VCR_LOG_LIMIT_WINDOW_MS) {
        limit->window_start_ms = now;
        limit->lines = 0;
    }
    if (limit->lines >= VCR_LOG_LIMIT_LINES) {
        limit->held_back++;
        return;
    }
    limit->lines++;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (limit->held_back)
        vcr_log(level, "%s (and %llu like it not logged: at most %d lines per %d s)", line,
                limit->held_back, VCR_LOG_LIMIT_LINES, VCR_LOG_LIMIT_WINDOW_MS / 1000);
    else
        vcr_log(level, "%s", line);
    limit->held_back = 0;
}
