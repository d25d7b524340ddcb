/* Data volumes of a host's VMs (docs/warm-cache.md).  A warm-cache volume is
 * its durable disk image itself, mapped shared by QEMU (memory-backend-file,
 * mem-path=IMAGE, share=on) and attached as virtio-pmem; the guest mounts it
 * with DAX, so its reads are served from the host page cache, which outlives
 * guest reboots, QEMU restarts and agent restarts.  A guest's flush (fsync,
 * sync) becomes QEMU's fsync of the image: what the guest synced is on disk.
 * A volume without warm_cache is a virtio-blk disk over the image. */
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

/* Where an agent before the image-backed design kept a warm-cache volume:
 * the memory file SHM_BASE-VOL.pmem in /dev/shm, SHM_BASE being the VM's
 * vm_paths.shm_base.  Its data may be newer than the image: prepare moves it
 * into the image. */
char *host_volume_legacy_mem_path(const char *shm_base, const char *vol);
/* An image (or a legacy memory file) is usable if it is a regular file of exactly
 * size bytes holding an ext4 superblock magic.  The error names the file,
 * what was found and what is expected. */
int host_volume_check_image(const char *path, uint64_t size, vcr_error_t *err);
/* truncate -s SIZE PATH.tmp; mkfs.ext4 -F -q -b 4096 -L LABEL [-d SOURCE_DIR]; rename.
 * LABEL: the first 16 bytes of label (ext4's limit). */
int host_volume_build_image(const char *path, uint64_t size, const char *source_dir,
                            const char *label, vcr_error_t *err);
/* Copies src over dst atomically: dst.tmp is written (zero blocks left as
 * holes), fsync'd, renamed over dst, and the directory fsync'd.  On any
 * failure dst is untouched and dst.tmp removed. */
int host_volume_copy_atomic(const char *src, const char *dst, vcr_error_t *err);
/* Test hook: every data write of host_volume_copy_atomic goes through this. */
extern ssize_t (*host_volume_write_hook)(int fd, const void *buf, size_t n, off_t off);

/* Before QEMU starts: a legacy memory file (legacy: its path, or NULL) is
 * checked, copied into the image (host_volume_copy_atomic) and removed; the
 * image is built if missing and checked; a warm-cache image gets all its
 * blocks allocated (fallocate), so that a guest write into a hole cannot fail
 * QEMU with SIGBUS when the host filesystem is full.  Fails, naming the
 * volume, with nothing started. */
int host_volume_prepare(const struct vcr_volume_spec *v, const char *legacy, vcr_error_t *err);

/* --- per VM, called by host_vm.c and host_reboot.c --- */

/* Prepares every volume of the VM (host_volume_prepare). */
int host_volumes_prepare(struct host_vm *vm, vcr_error_t *err);

/* Flush: fsync(2) of the images of the VM's warm-cache volumes (vol NULL:
 * all), in a child process (standby_job.h) so the event loop goes on; the
 * guest runs on.  cb runs once, from the loop; ok false with error when an
 * fsync failed; bytes: the size of the images synced.  What the guest had
 * synced is on disk already (its flush was QEMU's fsync); this adds what
 * had reached the device unsynced before the order (DAX file data at once,
 * ext4 metadata at the guest's journal commit). */
typedef void (*host_volume_flush_cb)(struct host_vm *vm, bool ok, const char *error,
                                     double elapsed_ms, uint64_t bytes, void *opaque);
int host_volume_flush(struct host_vm *vm, const char *vol, host_volume_flush_cb cb, void *opaque,
                      vcr_error_t *err);
/* Forgets a flush under way without calling its cb (agent exit). */
void host_volumes_free(struct host_vm *vm);

#endif
