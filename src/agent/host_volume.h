/* Data volumes of a host's VMs (docs/warm-cache.md).  A warm-cache volume
 * lives in a shared memory file in /dev/shm, attached to QEMU as virtio-pmem
 * and mounted with DAX by the guest: the file data stays in host memory across
 * guest reboots, QEMU restarts and agent restarts.  Its durable copy is a disk
 * image, written back atomically (IMAGE.tmp, fsync, rename, fsync of the
 * directory) on every QEMU exit, every writeback_interval_s and on a flush
 * order.  A volume without warm_cache is a virtio-blk disk over the image. */
#ifndef VCR_AGENT_HOST_VOLUME_H
#define VCR_AGENT_HOST_VOLUME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "config/volume_spec.h"

struct host_vm;

/* The ext4 superblock starts at byte 1024; its s_magic (le16) is at 56 in it. */
#define HOST_VOLUME_EXT4_MAGIC_OFFSET 1080
#define HOST_VOLUME_EXT4_MAGIC        0xEF53
#define HOST_VOLUME_MKFS              "/usr/sbin/mkfs.ext4"

/* --- pure file operations (unit-tested) --- */

/* The memory file of volume vol: SHM_BASE-VOL.pmem, SHM_BASE being the VM's
 * vm_paths.shm_base (/dev/shm/vcr-HOST-VM-HASH, also when its RAM is on
 * hugetlbfs: the agent write()s these files, which hugetlbfs does not allow). */
char *host_volume_mem_path(const char *shm_base, const char *vol);
/* An image (or memory file) is usable if it is a regular file of exactly
 * size bytes holding an ext4 superblock magic.  The error names the file,
 * what was found and what is expected. */
int host_volume_check_image(const char *path, uint64_t size, vcr_error_t *err);
/* truncate -s SIZE PATH.tmp; mkfs.ext4 -F -q -b 4096 [-d SOURCE_DIR]; rename. */
int host_volume_build_image(const char *path, uint64_t size, const char *source_dir,
                            vcr_error_t *err);
/* Copies src over dst atomically: dst.tmp is written (zero blocks left as
 * holes), fsync'd, renamed over dst, and the directory fsync'd.  On any
 * failure dst is untouched and dst.tmp removed. */
int host_volume_copy_atomic(const char *src, const char *dst, vcr_error_t *err);
/* Test hook: every data write of host_volume_copy_atomic goes through this. */
extern ssize_t (*host_volume_write_hook)(int fd, const void *buf, size_t n, off_t off);

/* Before QEMU starts: a warm volume whose memory file exists keeps it (after a
 * size and magic check); otherwise the image is built if missing, checked,
 * and copied into the memory file.  A virtio-blk volume's image is built if
 * missing and checked.  Fails, naming the volume, with nothing started. */
int host_volume_prepare(const struct vcr_volume_spec *v, const char *mem, vcr_error_t *err);

/* --- per VM, called by host_vm.c --- */

/* Prepares every volume of the VM (host_volume_prepare). */
int host_volumes_prepare(struct host_vm *vm, vcr_error_t *err);
/* QMP is ready with the guest running: arms the write-back timers. */
void host_volumes_running(struct host_vm *vm);
/* QEMU ended (clean shutdown, stop, crash): writes every warm volume back and
 * disarms the timers.  The memory files stay (warm for the next start). */
void host_volumes_exited(struct host_vm *vm);
/* Removes the memory files (a cold reboot: the next start loads the images). */
void host_volumes_drop(struct host_vm *vm);

/* Write-back now: pauses the guest (QMP stop) while the memory file is
 * copied, resumes it, then fsyncs and renames.  cb runs once, from the loop
 * or before this returns; ok false with error when the write-back failed.
 * vol NULL: every warm volume. */
typedef void (*host_volume_flush_cb)(struct host_vm *vm, bool ok, const char *error,
                                     double elapsed_ms, uint64_t bytes, void *opaque);
int host_volume_flush(struct host_vm *vm, const char *vol, host_volume_flush_cb cb, void *opaque,
                      vcr_error_t *err);
void host_volumes_free(struct host_vm *vm);

#endif
