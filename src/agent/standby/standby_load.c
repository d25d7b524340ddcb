/* Load figures of a standby VM and its containers: /proc/stat, /proc/meminfo
 * and cgroup v1 counters (the guest mounts cgroup v1 only: lab/guest/init). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/standby/standby.h"
#include "common/cleanup.h"

int standby_read_file(const char *path, char *buf, size_t size, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", path);
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "read `%s`", path);
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return 0;
}

int standby_parse_proc_stat(const char *text, struct standby_cpu_times *t, int *ncpus,
                            vcr_error_t *err)
{
    if (strncmp(text, "cpu ", 4) != 0)
        return vcr_error_make(err, EPROTO, "/proc/stat: the first line is not `cpu ...`");
    /* user nice system idle iowait irq softirq steal (guest, guest_nice are
     * already counted in user and nice). */
    uint64_t f[8] = {0};
    int got = sscanf(text + 4,
                     "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                     " %" SCNu64 " %" SCNu64,
                     &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7]);
    if (got < 4)
        return vcr_error_make(err, EPROTO, "/proc/stat: `cpu` line has %d fields; expected 4+",
                              got < 0 ? 0 : got);
    t->total = 0;
    for (int i = 0; i < got; i++)
        t->total += f[i];
    t->idle = f[3] + f[4];
    int n = 0;
    for (const char *p = strchr(text, '\n'); p; p = strchr(p + 1, '\n'))
        if (strncmp(p + 1, "cpu", 3) == 0 && p[4] >= '0' && p[4] <= '9')
            n++;
    *ncpus = n > 0 ? n : 1;
    return 0;
}

static bool meminfo_field(const char *text, const char *key, int64_t *kb)
{
    size_t klen = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            char *end;
            long long v = strtoll(p + klen + 1, &end, 10);
            if (end == p + klen + 1 || v < 0)
                return false;
            *kb = v;
            return true;
        }
    }
    return false;
}

int standby_parse_meminfo(const char *text, int64_t *total_kb, int64_t *avail_kb, vcr_error_t *err)
{
    if (!meminfo_field(text, "MemTotal", total_kb))
        return vcr_error_make(err, EPROTO, "/proc/meminfo: no MemTotal");
    if (!meminfo_field(text, "MemAvailable", avail_kb)) {
        /* Kernels before 3.14: approximate with MemFree. */
        if (!meminfo_field(text, "MemFree", avail_kb))
            return vcr_error_make(err, EPROTO, "/proc/meminfo: no MemAvailable or MemFree");
    }
    return 0;
}

int standby_parse_counter(const char *text, uint64_t *value, vcr_error_t *err)
{
    char *end;
    if (text[0] < '0' || text[0] > '9')
        return vcr_error_make(err, EPROTO, "counter `%.30s`: not a decimal number", text);
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno == ERANGE || (*end != '\0' && strcmp(end, "\n") != 0))
        return vcr_error_make(err, EPROTO, "counter `%.30s`: not a decimal number", text);
    *value = v;
    return 0;
}

double standby_vm_cpu_pct(const struct standby_cpu_times *prev, const struct standby_cpu_times *cur)
{
    if (cur->total <= prev->total || cur->idle < prev->idle)
        return 0.0;
    uint64_t total = cur->total - prev->total;
    uint64_t idle = cur->idle - prev->idle;
    if (idle > total)
        return 0.0;
    return 100.0 * (double)(total - idle) / (double)total;
}

double standby_ct_cpu_pct(uint64_t prev_ns, uint64_t cur_ns, uint64_t wall_ns)
{
    if (wall_ns == 0 || cur_ns < prev_ns)
        return 0.0;
    return 100.0 * (double)(cur_ns - prev_ns) / (double)wall_ns;
}

/* The value after "Key:" on its own line of text, into out (up to the line's
 * end, surrounding blanks dropped). */
static bool status_field(const char *text, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, klen) != 0 || line[klen] != ':')
            continue;
        const char *v = line + klen + 1;
        v += strspn(v, " \t");
        size_t n = strcspn(v, "\n");
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == 0 || n >= size)
            return false;
        memcpy(out, v, n);
        out[n] = '\0';
        return true;
    }
    return false;
}

int standby_parse_isolation(const char *status, const char *uid_map, struct standby_isolation *iso,
                            vcr_error_t *err)
{
    char seccomp[16];
    if (!status_field(status, "CapEff", iso->cap_eff, sizeof(iso->cap_eff)) ||
        strspn(iso->cap_eff, "0123456789abcdef") != strlen(iso->cap_eff))
        return vcr_error_make(err, EPROTO, "/proc/PID/status: no CapEff");
    /* Kernels without CONFIG_SECCOMP have no Seccomp line: mode 0. */
    iso->seccomp = status_field(status, "Seccomp", seccomp, sizeof(seccomp)) ? atoi(seccomp) : 0;
    /* The first line of uid_map, its columns one blank apart. */
    size_t n = 0;
    bool blank = true;
    for (const char *c = uid_map; *c && *c != '\n'; c++) {
        bool b = *c == ' ' || *c == '\t';
        if ((!b || !blank) && n + 1 < sizeof(iso->uid_map))
            iso->uid_map[n++] = b ? ' ' : *c;
        blank = b;
    }
    while (n > 0 && iso->uid_map[n - 1] == ' ')
        n--;
    iso->uid_map[n] = '\0';
    if (n == 0)
        return vcr_error_make(err, EPROTO, "/proc/PID/uid_map: empty");
    return 0;
}
