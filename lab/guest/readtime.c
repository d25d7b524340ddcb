/* readtime: reads one file to its end and reports how long the reading took, timed by
 * this process itself, for the lab guest's /cgi-bin/readfile (lab/guest/init).
 *
 * Usage: readtime PATH
 * Prints one line: "bytes=N ns=T first_ns=F open_ns=O".  T is CLOCK_MONOTONIC from just
 * before the first read() to just after the read() that returns 0 (end of file): the
 * read of the whole file and nothing else, as GNU dd's own report times its copy loop
 * (dd starts its clock after opening the files).  F is the part of T up to the end of
 * the first read() that returned data (an interrupted read() before it included), so
 * that the cost of a first block (code paths run for the first time) shows beside the
 * total; for an empty file F = T.  O is the open() alone (path lookup, reading the
 * inode), outside T as in dd, reported so that a reader can put it back: the first
 * open after a guest reset finds no dentry or inode cached.
 * Blocks of 1 MiB, like `dd bs=1M`.  Errors: "error=..." on stdout, exit status 1.
 *
 * Built static by lab/build-image (the guest has no C library of its own).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1 << 20)

/* Page-aligned like dd's buffer; in .bss, so its pages are first touched by the first
 * read() into them, inside the timed loop, as with dd's. */
static char buf[BLOCK] __attribute__((aligned(4096)));

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int64_t t_open, t0, t_first = -1, t1;
    long long total = 0;
    ssize_t n;
    int fd;

    if (argc != 2) {
        printf("error=usage: readtime PATH\n");
        return 1;
    }
    t_open = now_ns();
    fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    t0 = now_ns();
    if (fd < 0) {
        printf("error=open %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    for (;;) {
        n = read(fd, buf, sizeof(buf));
        if (n > 0 && t_first < 0)
            t_first = now_ns();
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            printf("error=read %s: %s\n", argv[1], strerror(errno));
            close(fd);
            return 1;
        }
        total += n;
    }
    t1 = now_ns();
    close(fd);
    if (t_first < 0)
        t_first = t1;
    printf("bytes=%lld ns=%lld first_ns=%lld open_ns=%lld\n", total, (long long)(t1 - t0),
           (long long)(t_first - t0), (long long)(t0 - t_open));
    return 0;
}
