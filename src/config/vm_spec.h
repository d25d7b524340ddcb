/* A primary VM as the host agent runs it: the validated form of one `vms:`
 * entry of the agent configuration (docs/config-vm.md). */
#ifndef VCR_CONFIG_VM_SPEC_H
#define VCR_CONFIG_VM_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/disk_image.h"
#include "config/volume_spec.h"

#define VCR_NAME_MAX         32
#define VCR_VM_MEMORY_MB_MIN 64
#define VCR_VM_MEMORY_MB_MAX 65536
#define VCR_VM_VCPUS_MIN     1
#define VCR_VM_VCPUS_MAX     64
#define VCR_TAP_NAME_MAX     15 /* IFNAMSIZ - 1 */
#define VCR_KERNEL_ARGS_MAX  1024
#define VCR_VM_AUTOSTART_DEF true
#define VCR_VM_ROOT_DEF      "/dev/vda" /* the disk is the first virtio-blk device */

/* How a VM learns its address. */
enum vcr_guest_network {
    VCR_NET_LAB = 0, /* the lab's initramfs guests: vcr.ip=, vcr.gw= (lab/guest/init) */
    VCR_NET_NOCLOUD, /* a cloud-init NoCloud seed written by the agent (disk images) */
    VCR_NET_KERNEL,  /* ip= on the kernel command line (initramfs-tools, dracut) */
    VCR_NET_IMAGE,   /* the image's own configuration: nothing is passed */
};

struct vcr_vm_spec {
    char *name;
    uint32_t memory_mb;
    uint32_t vcpus;
    /* Absolute paths.  A spec without a kernel (and no disk) boots into the
     * firmware and stays there: enough to supervise the process (used by tests). */
    char *kernel;
    char *initrd; /* NULL: none (a disk-image VM booted by its kernel alone) */
    /* A disk-image VM (docs/config-vm.md, "Disk-image VMs"): the read-only base
     * it runs on, through a qcow2 overlay of its own; NULL for the lab's
     * initramfs guests. */
    char *disk;
    enum vcr_disk_format disk_format; /* as found at load */
    char *root;                       /* root= of a disk-image VM booted by its kernel */
    enum vcr_guest_network network;
    char *user_data; /* nocloud: the seed's user-data file; NULL: an empty cloud-config */
    char *mac;       /* lower case, "52:54:00:77:00:11" */
    char *tap;
    char *address; /* "10.77.0.11/24" as configured */
    char *ip;      /* "10.77.0.11" */
    unsigned prefix;
    char *gateway;     /* NULL when not configured */
    char *kernel_args; /* NULL when not configured */
    /* agent_identity: CA, certificate and key of the agent in the guest, passed
     * as fw_cfg opt/vcr/{ca.crt,agent.crt,agent.key}; all NULL when not set. */
    char *identity_ca;
    char *identity_cert;
    char *identity_key;
    bool autostart;
    struct vcr_volume_spec *volumes; /* docs/warm-cache.md */
    size_t n_volumes;
};

/* The fw_cfg names the guest finds the agent_identity files under
 * (/sys/firmware/qemu_fw_cfg/by_name/NAME/raw). */
#define VCR_FWCFG_AGENT_CA   "opt/vcr/ca.crt"
#define VCR_FWCFG_AGENT_CERT "opt/vcr/agent.crt"
#define VCR_FWCFG_AGENT_KEY  "opt/vcr/agent.key"

/* Frees the members (not the struct). */
void vcr_vm_spec_clear(struct vcr_vm_spec *spec);

/* "lab", "nocloud", "kernel", "image". */
const char *vcr_guest_network_name(enum vcr_guest_network n);

/* Syntax checks shared with other components that name VMs and hosts. */
bool vcr_name_is_valid(const char *s);
/* "xx:xx:xx:xx:xx:xx" (hex, either case) -> 6 bytes; false when malformed. */
bool vcr_mac_parse(const char *s, uint8_t out[6]);
/* The host-order netmask of a prefix length 1..32 (24 -> 0xffffff00). */
uint32_t vcr_ipv4_prefix_mask(unsigned prefix);
/* Dotted-quad IPv4 -> host-order address; false when malformed. */
bool vcr_ipv4_parse(const char *s, uint32_t *out);

#endif
