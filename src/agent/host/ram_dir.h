/* Where the host agent puts its VMs' RAM files (`ram_dir`, docs/config-vm.md):
 * tmpfs (default /dev/shm) or hugetlbfs.  The file outlives QEMU, which is
 * what a warm restart needs (docs/warm-restart.md).
 *
 * On hugetlbfs the agent checks, before QEMU is spawned, that the VM's memory
 * is a whole number of huge pages and that enough of them are free, and then
 * reserves them itself: it creates the RAM file, sizes it and maps it shared
 * once.  The kernel keeps a shared mapping's reservation with the file (until
 * it is truncated or removed), so QEMU's own mapping finds its pages waiting,
 * and two VMs started back to back cannot both count the same free pages.
 *
 * The pure parts (classification of a statfs answer, alignment, page counts,
 * error texts) are unit-tested; ram_dir_probe and ram_dir_reserve touch the
 * system. */
#ifndef VCR_AGENT_RAM_DIR_H
#define VCR_AGENT_RAM_DIR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* <linux/magic.h> */
#define RAM_DIR_TMPFS_MAGIC     0x01021994
#define RAM_DIR_HUGETLBFS_MAGIC 0x958458f6

/* Where the kernel lists its huge page pools: hugepages-<size>kB/{free,resv}_hugepages. */
#define RAM_DIR_HUGEPAGES_SYSFS "/sys/kernel/mm/hugepages"

enum ram_backing {
    RAM_BACKING_TMPFS,
    RAM_BACKING_HUGETLBFS,
};

const char *ram_backing_name(enum ram_backing b);

struct ram_dir {
    const char *path; /* borrowed: the configured ram_dir */
    enum ram_backing backing;
    uint64_t page_size; /* bytes: the huge page size on hugetlbfs (statfs f_bsize) */
};

/* What statfs said about path, turned into a ram_dir; anything but tmpfs or
 * hugetlbfs is refused, the error naming `ram_dir`, the path and its type. */
int ram_dir_from_statfs(const char *path, int64_t f_type, uint64_t f_bsize, struct ram_dir *out,
                        vcr_error_t *err);
/* statfs(path) and ram_dir_from_statfs: called once at agent start. */
int ram_dir_probe(const char *path, struct ram_dir *out, vcr_error_t *err);

/* Huge pages a VM of memory_mb needs (rounded up; 0 on tmpfs). */
uint64_t ram_dir_pages_needed(const struct ram_dir *d, uint32_t memory_mb);
/* On hugetlbfs memory_mb must be a whole number of pages (QEMU refuses the
 * backend otherwise); the error names the VM, memory_mb and the page size. */
int ram_dir_check_size(const struct ram_dir *d, const char *vm, uint32_t memory_mb,
                       vcr_error_t *err);
/* free_pages: pages of d's size nobody has taken or reserved.  The error
 * reads "VM `big`: needs 512 pages of 2048 kB, 200 free in `/dev/hugepages`". */
int ram_dir_check_free(const struct ram_dir *d, const char *vm, uint32_t memory_mb,
                       uint64_t free_pages, vcr_error_t *err);
/* Free pages of d's size: free_hugepages - resv_hugepages of the pool under
 * sysfs_dir (RAM_DIR_HUGEPAGES_SYSFS; a parameter for the tests), and no more
 * than the mount's own limit when it has one (f_bavail, limit_pages > 0). */
int ram_dir_free_pages(const struct ram_dir *d, const char *sysfs_dir, uint64_t limit_pages,
                       uint64_t *out, vcr_error_t *err);

/* Before QEMU starts a VM whose RAM file is ram_path (the caller has removed
 * any old one).  tmpfs: nothing to do.  hugetlbfs: checks the size and the
 * free pages, then creates ram_path with its pages reserved; on failure no
 * file is left.  *reserved is the number of pages reserved. */
int ram_dir_reserve(const struct ram_dir *d, const char *vm, const char *ram_path,
                    uint32_t memory_mb, uint64_t *reserved, vcr_error_t *err);

/* The VM's RAM file as this agent's own (docs/security.md, "Root actions"):
 * with create, made here (O_CREAT | O_EXCL | O_NOFOLLOW, 0600) before QEMU
 * opens it, so that QEMU never maps a file someone else prepared; without,
 * an existing one (a warm restart's) must be a regular file of this user with
 * one link and no access for group or others.  EPERM/EEXIST otherwise. */
int ram_dir_own_file(const char *vm, const char *ram_path, bool create, vcr_error_t *err);

#endif
