/* /proc readings for `sample` (see host_sampler.h). */
#include "agent/host/host_sampler.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

bool sampler_parse_stat(const char *text, uint64_t *cpu_ticks)
{
    const char *p = strrchr(text, ')');
    if (p == NULL)
        return false;
    p++;
    /* After the name: field 3 (state) ... field 14 utime, 15 stime. */
    unsigned long long utime = 0, stime = 0;
    if (sscanf(p, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return false;
    *cpu_ticks = (uint64_t)utime + (uint64_t)stime;
    return true;
}

bool sampler_parse_statm(const char *text, uint64_t *rss_pages)
{
    unsigned long long size, resident;
    if (sscanf(text, "%llu %llu", &size, &resident) != 2)
        return false;
    *rss_pages = resident;
    return true;
}

double cpu_meter_update(struct cpu_meter *m, uint64_t ticks, int64_t mono_ms, long ticks_per_s)
{
    double pct = -1;
    if (m->primed && mono_ms > m->mono_ms && ticks >= m->ticks && ticks_per_s > 0)
        pct = (double)(ticks - m->ticks) * 1000.0 * 100.0 /
              ((double)ticks_per_s * (double)(mono_ms - m->mono_ms));
    m->primed = true;
    m->ticks = ticks;
    m->mono_ms = mono_ms;
    return pct;
}

static bool read_small(const char *path, char *buf, size_t size)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, size - 1);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

bool sampler_read_proc(pid_t pid, uint64_t *cpu_ticks, uint64_t *rss_kb)
{
    char path[64], buf[1024];
    uint64_t pages;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (!read_small(path, buf, sizeof(buf)) || !sampler_parse_stat(buf, cpu_ticks))
        return false;
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    if (!read_small(path, buf, sizeof(buf)) || !sampler_parse_statm(buf, &pages))
        return false;
    *rss_kb = pages * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
    return true;
}
