/* The project's clocks, in one place (docs/conventions.md, "Clocks"): wall
 * time for what is recorded, monotonic for deadlines and timings, boot time
 * for what must count a suspend. */
#ifndef VCR_COMMON_CLOCK_H
#define VCR_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* One read of a clock, in nanoseconds; the functions below scale it. */
static inline int64_t vcr_clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wall-clock milliseconds since the epoch: what the journal records, so that
 * timestamps from several processes on one host compare. */
static inline int64_t vcr_wall_ms(void)
{
    return vcr_clock_ns(CLOCK_REALTIME) / 1000000;
}

/* Monotonic milliseconds: for deadlines and intervals. */
static inline int64_t vcr_mono_ms(void)
{
    return vcr_clock_ns(CLOCK_MONOTONIC) / 1000000;
}

/* Monotonic microseconds and nanoseconds, and milliseconds with a fraction:
 * for timings reported to people (a pause of 0.4 ms is not 0). */
static inline int64_t vcr_mono_us(void)
{
    return vcr_clock_ns(CLOCK_MONOTONIC) / 1000;
}

static inline uint64_t vcr_mono_ns(void)
{
    return (uint64_t)vcr_clock_ns(CLOCK_MONOTONIC);
}

static inline double vcr_mono_ms_f(void)
{
    return (double)vcr_clock_ns(CLOCK_MONOTONIC) / 1e6;
}

/* Milliseconds of CLOCK_BOOTTIME: like monotonic, but it goes on while the
 * machine is suspended, so a fencing deadline measured with it cannot be
 * slept through (docs/fencing.md). */
static inline int64_t vcr_boot_ms(void)
{
    return vcr_clock_ns(CLOCK_BOOTTIME) / 1000000;
}

#endif
