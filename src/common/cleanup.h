/* Scope-bound cleanup for locals, after crun's src/libcrun/utils.h.
 * A variable declared `cleanup_free char *s = ...` is freed when it leaves
 * scope; ownership leaves it only through steal_pointer() / steal_fd(). */
#ifndef VCR_COMMON_CLEANUP_H
#define VCR_COMMON_CLEANUP_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"

static inline void cleanup_freep(void *p)
{
    free(*(void **)p);
}

static inline void cleanup_closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

static inline void cleanup_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

static inline void cleanup_jsonp(json_t **j)
{
    json_decref(*j);
}

static inline void cleanup_errorp(vcr_error_t *e)
{
    vcr_error_release(e);
}

#define cleanup_free  __attribute__((cleanup(cleanup_freep)))
#define cleanup_close __attribute__((cleanup(cleanup_closep)))
#define cleanup_file  __attribute__((cleanup(cleanup_fclosep)))
#define cleanup_json  __attribute__((cleanup(cleanup_jsonp)))
#define cleanup_error __attribute__((cleanup(cleanup_errorp)))

static inline void *steal_pointer_impl(void *pp)
{
    void **p = pp;
    void *v = *p;
    *p = NULL;
    return v;
}
#define steal_pointer(pp) ((__typeof__(*(pp)))steal_pointer_impl(pp))

static inline int steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

#endif
