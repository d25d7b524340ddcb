/* A running QEMU's tap descriptor (see tap_fd.h). */
#include "agent/host/tap_fd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "agent/proc.h"
#include "common/cleanup.h"

bool tap_fdinfo_is(const char *fdinfo, const char *ifname)
{
    size_t n = strlen(ifname);
    const char *line = fdinfo;
    while (line && *line) {
        if (strncmp(line, "iff:", 4) == 0) {
            const char *v = line + 4 + strspn(line + 4, " \t");
            return n > 0 && strncmp(v, ifname, n) == 0 && strchr(" \t\n", v[n]) != NULL;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

int tap_fd_of_process(pid_t pid, const char *ifname, vcr_error_t *err)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return vcr_error_errno(err, "tap `%s` of qemu pid %d: %s", ifname, (int)pid, dir);
    int found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end != '\0' || end == e->d_name || fd < 0 || fd > INT_MAX)
            continue;
        char path[96], target[64];
        snprintf(path, sizeof(path), "%s/%ld", dir, fd);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strcmp(target, "/dev/net/tun") != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%ld", (int)pid, fd);
        cleanup_close int info = open(path, O_RDONLY | O_CLOEXEC);
        char buf[1024];
        ssize_t got = info < 0 ? -1 : read(info, buf, sizeof(buf) - 1);
        if (got <= 0)
            continue;
        buf[got] = '\0';
        if (tap_fdinfo_is(buf, ifname))
            found = (int)fd;
    }
    closedir(d);
    if (found < 0)
        return vcr_error_make(err, ENOENT, "qemu pid %d holds no descriptor of tap `%s`", (int)pid,
                              ifname);
    return found;
}

int tap_fd_take(pid_t pid, const char *ifname, vcr_error_t *err)
{
    int fd = tap_fd_of_process(pid, ifname, err);
    if (fd < 0)
        return -1;
    int copy = proc_getfd(pid, fd, err);
    if (copy < 0)
        return vcr_error_wrap(err, "tap `%s` of qemu pid %d", ifname, (int)pid);
    return copy;
}

int tap_vnet_hdr_get(int fd, int *len, vcr_error_t *err)
{
    if (ioctl(fd, TUNGETVNETHDRSZ, len) < 0)
        return vcr_error_errno(err, "TUNGETVNETHDRSZ");
    return 0;
}

int tap_vnet_hdr_set(int fd, int len, vcr_error_t *err)
{
    if (ioctl(fd, TUNSETVNETHDRSZ, &len) < 0)
        return vcr_error_errno(err, "TUNSETVNETHDRSZ %d", len);
    return 0;
}
