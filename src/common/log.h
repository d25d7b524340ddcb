/* One way to log: vcr_log(level, fmt, ...) with printf checking.
 * Lines go to stderr as "TIME PROG[PID] LEVEL message"; docs/conventions.md. */
#ifndef VCR_COMMON_LOG_H
#define VCR_COMMON_LOG_H

enum vcr_log_level {
    VCR_LOG_ERROR = 0,
    VCR_LOG_WARN = 1,
    VCR_LOG_INFO = 2,
    VCR_LOG_DEBUG = 3,
};

void vcr_log_init(const char *prog, enum vcr_log_level max_level);
/* Parses "error", "warn", "info", "debug"; returns -1 on anything else. */
int vcr_log_level_parse(const char *s);
enum vcr_log_level vcr_log_max_level(void);
void vcr_log(enum vcr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines a remote peer can cause (a refused request, a bad frame) go through a
 * limit: at most VCR_LOG_LIMIT_LINES per VCR_LOG_LIMIT_WINDOW_MS each; the
 * lines held back are counted and the next line let through says how many. */
#define VCR_LOG_LIMIT_LINES     5
#define VCR_LOG_LIMIT_WINDOW_MS 10000
struct vcr_log_limit {
    long long window_start_ms;
    unsigned lines;
    unsigned long long held_back;
};
void vcr_log_limited(struct vcr_log_limit *limit, enum vcr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(...) vcr_log(VCR_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  vcr_log(VCR_LOG_WARN, __VA_ARGS__)
#define log_info(...)  vcr_log(VCR_LOG_INFO, __VA_ARGS__)
#define log_debug(...) vcr_log(VCR_LOG_DEBUG, __VA_ARGS__)

#endif
