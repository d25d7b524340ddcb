/* CPU and memory use of a QEMU process from /proc, for the `sample` message:
 * CPU as percent of one CPU over the last interval (utime+stime deltas of
 * /proc/PID/stat), memory as resident set size (/proc/PID/statm). */
#ifndef VCR_AGENT_HOST_SAMPLER_H
#define VCR_AGENT_HOST_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* utime + stime, in clock ticks, from the text of /proc/PID/stat.  The
 * command name (field 2) may hold spaces and parentheses: fields are counted
 * from the last ')'.  Returns false when the text is malformed. */
bool sampler_parse_stat(const char *text, uint64_t *cpu_ticks);
/* Resident pages (field 2) from the text of /proc/PID/statm. */
bool sampler_parse_statm(const char *text, uint64_t *rss_pages);

/* Remembers the last reading of one process. */
struct cpu_meter {
    bool primed;
    uint64_t ticks;
    int64_t mono_ms;
};

/* Feeds a reading; returns the CPU percent since the previous one (100 = one
 * CPU busy), or -1 for the first reading or a non-positive interval. */
double cpu_meter_update(struct cpu_meter *m, uint64_t ticks, int64_t mono_ms, long ticks_per_s);

/* Reads /proc/PID/stat and /proc/PID/statm; false if the process is gone. */
bool sampler_read_proc(pid_t pid, uint64_t *cpu_ticks, uint64_t *rss_kb);

#endif
