/* Disk-image VMs (docs/config-vm.md, "Disk-image VMs"): each runs on a qcow2
 * overlay of its own over a read-only base, made by qemu-img; a VM with
 * `network: nocloud` gets a cloud-init NoCloud seed (an ISO 9660 volume
 * labelled `cidata`, as cloud images expect: cloud-init's NoCloud datasource)
 * written by genisoimage.  Both tools run as children of the agent with a
 * deadline; their output goes to the VM's log. */
#ifndef VCR_AGENT_HOST_DISK_H
#define VCR_AGENT_HOST_DISK_H

#include "agent/host/vm.h"
#include "common/err.h"
#include "config/vm_spec.h"

struct host_disk_env {
    const char *qemu_img;    /* NULL when no VM has a disk */
    const char *genisoimage; /* NULL when no VM has a seed */
    const char *host;
    const char *state_dir;
};

/* How long qemu-img or genisoimage may take. */
#define HOST_DISK_TOOL_MS 30000

/* Before a cold start of a disk-image VM (nothing for other VMs):
 * - the base is checked again (it may have gone or changed since the
 *   configuration was loaded: disk_image.h);
 * - the overlay paths->disk is created over it when absent (through a
 *   temporary file, renamed), or, when present, must be a qcow2 whose backing
 *   file is this base (EEXIST otherwise: the agent never throws a VM's disk
 *   away; the message says which file to remove to start anew);
 * - network nocloud: the seed paths->seed is written anew.
 * Nothing is left half-made on failure. */
int host_disk_prepare(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                      const struct vm_paths *paths, vcr_error_t *err);
/* Before the new QEMU of a warm restart: the overlay (and seed) the running
 * QEMU uses must be there; nothing is made. */
int host_disk_check(const struct vcr_vm_spec *spec, const struct vm_paths *paths, vcr_error_t *err);

/* The seed's files (allocated, NUL-terminated): meta-data (an instance-id
 * stable for this host, state directory and VM, and the VM's name as
 * hostname) and network-config (version 2: the NIC matched by its MAC, named
 * eth0, the static address, the gateway as default route). */
int host_disk_seed_meta_data(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                             char **out);
int host_disk_seed_network_config(const struct vcr_vm_spec *spec, char **out);

#endif
