/* Data volumes of a VM (`vms[].volumes:`, docs/warm-cache.md): an ext4
 * filesystem built from a host directory, kept in a durable disk image, and
 * attached either as virtio-pmem over that image mapped shared (warm cache:
 * the guest mounts it with DAX, so its data outlives guest reboots in the
 * host page cache) or as a plain virtio-blk disk over the image. */
#ifndef VCR_CONFIG_VOLUME_SPEC_H
#define VCR_CONFIG_VOLUME_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#define VCR_VOLUMES_MAX           4
#define VCR_VOLUME_SIZE_MB_MIN    16
#define VCR_VOLUME_SIZE_MB_MAX    65536
#define VCR_VOLUME_MOUNT_MAX      128
#define VCR_VOLUME_WARM_CACHE_DEF false

enum vcr_volume_cache {
    VCR_VOLUME_CACHE_NONE,      /* virtio-blk cache=none (O_DIRECT on the image) */
    VCR_VOLUME_CACHE_WRITEBACK, /* virtio-blk cache=writeback (host page cache) */
};

struct vcr_volume_spec {
    char *name;
    uint32_t size_mb;
    char *source_dir; /* absolute; NULL: an empty filesystem */
    char *image;      /* absolute path of the durable disk image */
    char *mount;      /* guest mount point, absolute */
    bool warm_cache;
    enum vcr_volume_cache cache; /* virtio-blk only (warm_cache false) */
};

void vcr_volume_spec_clear(struct vcr_volume_spec *v);
const char *vcr_volume_cache_name(enum vcr_volume_cache c);

#endif
