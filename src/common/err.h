/* Error reporting, after crun's design-docs/error_handling.md.
 *
 * A function that can fail takes `vcr_error_t *err` as its last parameter and
 * returns a negative value (or NULL).  On failure it fills *err with an
 * errno-style status and an allocated message; on success it never touches
 * *err.  A caller that passes the failure up adds context with
 * vcr_error_wrap(); a caller that handles it calls vcr_error_release().
 * See docs/conventions.md. */
#ifndef VCR_COMMON_ERR_H
#define VCR_COMMON_ERR_H

#include <stdio.h>

struct vcr_error_s {
    int status; /* errno value, or 0 when the failure is not a system error */
    char *msg;
};
typedef struct vcr_error_s *vcr_error_t;

/* Fill *err (if err and *err is empty) and return -1.  status is an errno value or 0. */
int vcr_error_make(vcr_error_t *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same as vcr_error_make with status = errno, and ": strerror(errno)" appended. */
int vcr_error_errno(vcr_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the message in *err with context ("ctx: old message"); returns -1. */
int vcr_error_wrap(vcr_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "prog: message" to stream, free the error and return its status (or 1). */
int vcr_error_report(vcr_error_t *err, FILE *stream, const char *prog);

void vcr_error_release(vcr_error_t *err);

/* Status of an error, or 0 if none. */
static inline int vcr_error_status(vcr_error_t err)
{
    return err ? err->status : 0;
}

static inline const char *vcr_error_msg(vcr_error_t err)
{
    return err && err->msg ? err->msg : "(no error)";
}

#endif
