/* For tests of what is durable: the pages of a file that the host page cache
 * holds dirty or under writeback (cachestat(2), Linux 6.5+).  A file just
 * written and not fsync'd has some (the kernel writes them back only after
 * ~30 s); one fsync'd has none.  -1 where the kernel lacks cachestat. */
#ifndef VCR_TESTS_PAGE_CACHE_H
#define VCR_TESTS_PAGE_CACHE_H

#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Debian 12's kernel headers (6.1) predate it; the number is the same on
 * every architecture (the unified syscall table). */
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

static inline long unsynced_pages(const char *path)
{
    struct {
        uint64_t off, len; /* len 0: to the end */
    } range = {0, 0};
    struct {
        uint64_t cache, dirty, writeback, evicted, recently_evicted;
    } cs;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long rc = syscall(__NR_cachestat, fd, &range, &cs, 0);
    close(fd);
    return rc == 0 ? (long)(cs.dirty + cs.writeback) : -1;
}

#endif
