/* RAM files on tmpfs or hugetlbfs (see ram_dir.h). */
#include "agent/host/ram_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "common/cleanup.h"

const char *ram_backing_name(enum ram_backing b)
{
    return b == RAM_BACKING_HUGETLBFS ? "hugetlbfs" : "tmpfs";
}

/* Names for the types a directory is most likely to be on by mistake. */
static const char *fs_type_name(int64_t f_type)
{
    static const struct {
        int64_t magic;
        const char *name;
    } known[] = {
        {0xEF53, "ext2/3/4"},     {0x58465342, "xfs"},  {0x9123683E, "btrfs"},
        {0x794C7630, "overlay"},  {0x6969, "nfs"},      {0x858458F6, "ramfs"},
        {0x73717368, "squashfs"}, {0x65735546, "fuse"}, {0x62656572, "sysfs"},
        {0x9FA0, "proc"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].magic == f_type)
            return known[i].name;
    return "unknown";
}

int ram_dir_from_statfs(const char *path, int64_t f_type, uint64_t f_bsize, struct ram_dir *out,
                        vcr_error_t *err)
{
    if (f_type == RAM_DIR_TMPFS_MAGIC) {
        *out = (struct ram_dir){.path = path, .backing = RAM_BACKING_TMPFS, .page_size = f_bsize};
        return 0;
    }
    if (f_type == RAM_DIR_HUGETLBFS_MAGIC && f_bsize >= 4096 && (f_bsize & (f_bsize - 1)) == 0) {
        *out =
            (struct ram_dir){.path = path, .backing = RAM_BACKING_HUGETLBFS, .page_size = f_bsize};
        return 0;
    }
    if (f_type == RAM_DIR_HUGETLBFS_MAGIC)
        return vcr_error_make(err, 0,
                              "ram_dir: `%s` is hugetlbfs with a page size of %" PRIu64
                              " bytes; allowed: a power of two of at least 4096",
                              path, f_bsize);
    return vcr_error_make(err, 0,
                          "ram_dir: `%s` is on a filesystem of type 0x%" PRIx64
                          " (%s); allowed: a directory on tmpfs (e.g. /dev/shm) or hugetlbfs "
                          "(e.g. /dev/hugepages)",
                          path, (uint64_t)f_type, fs_type_name(f_type));
}

int ram_dir_probe(const char *path, struct ram_dir *out, vcr_error_t *err)
{
    struct statfs st;
    if (statfs(path, &st) < 0)
        return vcr_error_errno(err, "ram_dir: `%s`", path);
    /* Others may write there only if the directory is sticky (/dev/shm is):
     * then nobody but the agent can remove or rename the RAM files it made. */
    struct stat ds;
    if (stat(path, &ds) < 0)
        return vcr_error_errno(err, "ram_dir: `%s`", path);
    if ((ds.st_mode & 0022) && !(ds.st_mode & S_ISVTX))
        return vcr_error_make(err, EPERM,
                              "ram_dir: `%s` (mode %04o) may be written by others and is not "
                              "sticky: they could replace a VM's RAM file; allowed: a directory "
                              "only this agent writes to, or a sticky one such as /dev/shm",
                              path, (unsigned)(ds.st_mode & 07777));
    return ram_dir_from_statfs(path, (int64_t)(uint32_t)st.f_type, (uint64_t)st.f_bsize, out, err);
}

uint64_t ram_dir_pages_needed(const struct ram_dir *d, uint32_t memory_mb)
{
    if (d->backing != RAM_BACKING_HUGETLBFS)
        return 0;
    uint64_t bytes = (uint64_t)memory_mb << 20;
    return (bytes + d->page_size - 1) / d->page_size;
}

int ram_dir_check_size(const struct ram_dir *d, const char *vm, uint32_t memory_mb,
                       vcr_error_t *err)
{
    if (d->backing != RAM_BACKING_HUGETLBFS || (((uint64_t)memory_mb << 20) % d->page_size) == 0)
        return 0;
    uint64_t kb = d->page_size >> 10;
    return vcr_error_make(err, 0,
                          "VM `%s`: memory_mb %" PRIu32 " is not a whole number of huge pages "
                          "of %" PRIu64 " kB (ram_dir `%s` is hugetlbfs); allowed: a multiple "
                          "of %" PRIu64 " MB",
                          vm, memory_mb, kb, d->path, kb >= 1024 ? kb >> 10 : 1);
}

int ram_dir_check_free(const struct ram_dir *d, const char *vm, uint32_t memory_mb,
                       uint64_t free_pages, vcr_error_t *err)
{
    uint64_t need = ram_dir_pages_needed(d, memory_mb);
    if (need <= free_pages)
        return 0;
    return vcr_error_make(err, ENOMEM,
                          "VM `%s`: needs %" PRIu64 " pages of %" PRIu64 " kB (memory_mb %" PRIu32
                          "), %" PRIu64 " free in `%s`; allowed: at most the free huge pages "
                          "(raise /proc/sys/vm/nr_hugepages or lower memory_mb)",
                          vm, need, d->page_size >> 10, memory_mb, free_pages, d->path);
}

static int read_count(const char *path, uint64_t *out, vcr_error_t *err)
{
    cleanup_file FILE *f = fopen(path, "re");
    if (f == NULL)
        return vcr_error_errno(err, "huge page pool `%s`", path);
    if (fscanf(f, "%" SCNu64, out) != 1)
        return vcr_error_make(err, EIO, "huge page pool `%s`: not a number", path);
    return 0;
}

int ram_dir_free_pages(const struct ram_dir *d, const char *sysfs_dir, uint64_t limit_pages,
                       uint64_t *out, vcr_error_t *err)
{
    char path[512];
    uint64_t free_pages, resv;
    unsigned long long kb = (unsigned long long)(d->page_size >> 10);
    snprintf(path, sizeof(path), "%s/hugepages-%llukB/free_hugepages", sysfs_dir, kb);
    if (read_count(path, &free_pages, err) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/hugepages-%llukB/resv_hugepages", sysfs_dir, kb);
    if (read_count(path, &resv, err) < 0)
        return -1;
    /* Reserved pages are still counted free until they are touched. */
    *out = free_pages > resv ? free_pages - resv : 0;
    if (limit_pages > 0 && limit_pages < *out)
        *out = limit_pages;
    return 0;
}

int ram_dir_reserve(const struct ram_dir *d, const char *vm, const char *ram_path,
                    uint32_t memory_mb, uint64_t *reserved, vcr_error_t *err)
{
    *reserved = 0;
    if (d->backing != RAM_BACKING_HUGETLBFS)
        return 0;
    if (ram_dir_check_size(d, vm, memory_mb, err) < 0)
        return -1;
    /* A mount with size= has its own limit: statfs reports it (0 without one). */
    struct statfs st;
    uint64_t limit = statfs(d->path, &st) == 0 && st.f_blocks > 0 ? (uint64_t)st.f_bavail : 0;
    uint64_t free_pages;
    if (ram_dir_free_pages(d, RAM_DIR_HUGEPAGES_SYSFS, limit, &free_pages, err) < 0 ||
        ram_dir_check_free(d, vm, memory_mb, free_pages, err) < 0)
        return -1;
    size_t size = (size_t)memory_mb << 20;
    cleanup_close int fd = open(ram_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return vcr_error_errno(err, "VM `%s`: create RAM file `%s`", vm, ram_path);
    /* The reservation: a shared mapping reserves every page of the range for
     * the file, and the reservation stays with the file after munmap. */
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        unlink(ram_path);
        /* Someone took the pages between the count and the mapping. */
        if (e == ENOMEM &&
            ram_dir_free_pages(d, RAM_DIR_HUGEPAGES_SYSFS, limit, &free_pages, NULL) == 0 &&
            ram_dir_check_free(d, vm, memory_mb, free_pages, err) < 0)
            return -1;
        errno = e;
        return vcr_error_errno(err, "VM `%s`: reserve %" PRIu64 " huge pages for `%s`", vm,
                               ram_dir_pages_needed(d, memory_mb), ram_path);
    }
    munmap(p, size);
    *reserved = ram_dir_pages_needed(d, memory_mb);
    return 0;
}

int ram_dir_own_file(const char *vm, const char *ram_path, bool create, vcr_error_t *err)
{
    cleanup_close int fd =
        open(ram_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0 && create && errno == EEXIST)
        return vcr_error_make(err, EEXIST,
                              "VM `%s`: RAM file `%s` appeared after the agent removed it: "
                              "someone else made it; refused",
                              vm, ram_path);
    if (fd < 0 && errno == ELOOP)
        return vcr_error_make(err, EPERM, "VM `%s`: RAM file `%s` is a symbolic link; refused", vm,
                              ram_path);
    if (fd < 0)
        return vcr_error_errno(err, "VM `%s`: RAM file `%s`", vm, ram_path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "VM `%s`: stat RAM file `%s`", vm, ram_path);
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1 || (st.st_mode & 0077))
        return vcr_error_make(err, EPERM,
                              "VM `%s`: RAM file `%s` is not this agent's own (%s, owner uid %u, "
                              "mode %04o, %u links; expected a regular file of uid %u, mode 0600, "
                              "one link): refused",
                              vm, ram_path, S_ISREG(st.st_mode) ? "a regular file" : "not a file",
                              (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                              (unsigned)st.st_nlink, (unsigned)geteuid());
    return 0;
}
