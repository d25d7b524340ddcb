#ifndef VCR_COMMON_CLOCK_H
#define VCR_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Wall-clock milliseconds since the epoch: what the journal records, so that
 * timestamps from several processes on one host compare. */
static inline int64_t vcr_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic milliseconds: for deadlines and intervals. */
static inline int64_t vcr_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
