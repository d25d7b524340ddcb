#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

static int fill(vcr_error_t *err, int status, char *msg)
{
    if (err == NULL || *err != NULL) {
        /* Keep the first error: it is the root cause. */
        free(msg);
        return -1;
    }
    struct vcr_error_s *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        free(msg);
        return -1;
    }
    e->status = status;
    e->msg = msg ? msg : strdup("out of memory while formatting an error");
    *err = e;
    return -1;
}

int vcr_error_make(vcr_error_t *err, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    return fill(err, status, msg);
}

int vcr_error_errno(vcr_error_t *err, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    char *head = vformat(fmt, ap);
    va_end(ap);
    char *msg = NULL;
    if (head && asprintf(&msg, "%s: %s", head, strerror(saved)) < 0)
        msg = NULL;
    free(head);
    return fill(err, saved, msg);
}

int vcr_error_wrap(vcr_error_t *err, const char *fmt, ...)
{
    if (err == NULL || *err == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = vformat(fmt, ap);
    va_end(ap);
    char *msg = NULL;
    if (ctx && asprintf(&msg, "%s: %s", ctx, (*err)->msg) >= 0) {
        free((*err)->msg);
        (*err)->msg = msg;
    }
    free(ctx);
    return -1;
}

int vcr_error_report(vcr_error_t *err, FILE *stream, const char *prog)
{
    int status = 1;
    if (err && *err) {
        fprintf(stream, "%s: %s\n", prog, (*err)->msg);
        if ((*err)->status > 0 && (*err)->status < 126)
            status = (*err)->status;
    }
    vcr_error_release(err);
    return status;
}

void vcr_error_release(vcr_error_t *err)
{
    if (err == NULL || *err == NULL)
        return;
    free((*err)->msg);
    free(*err);
    *err = NULL;
}
