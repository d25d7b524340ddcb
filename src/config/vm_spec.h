/* A primary VM as the host agent runs it: the validated form of one `vms:`
 * entry of the agent configuration (docs/config-vm.md). */
#ifndef VCR_CONFIG_VM_SPEC_H
#define VCR_CONFIG_VM_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/volume_spec.h"

#define VCR_NAME_MAX         32
#define VCR_VM_MEMORY_MB_MIN 64
#define VCR_VM_MEMORY_MB_MAX 65536
#define VCR_VM_VCPUS_MIN     1
#define VCR_VM_VCPUS_MAX     64
#define VCR_TAP_NAME_MAX     15 /* IFNAMSIZ - 1 */
#define VCR_KERNEL_ARGS_MAX  1024
#define VCR_VM_AUTOSTART_DEF true

struct vcr_vm_spec {
    char *name;
    uint32_t memory_mb;
    uint32_t vcpus;
    /* Absolute paths.  A spec without a kernel boots into the firmware and
     * stays there: enough to supervise the process (used by tests). */
    char *kernel;
    char *initrd;
    char *mac; /* lower case, "52:54:00:77:00:11" */
    char *tap;
    char *address; /* "10.77.0.11/24" as configured */
    char *ip;      /* "10.77.0.11" */
    unsigned prefix;
    char *gateway;     /* NULL when not configured */
    char *kernel_args; /* NULL when not configured */
    bool autostart;
    struct vcr_volume_spec *volumes; /* docs/warm-cache.md */
    size_t n_volumes;
};

/* Frees the members (not the struct). */
void vcr_vm_spec_clear(struct vcr_vm_spec *spec);

/* Syntax checks shared with other components that name VMs and hosts. */
bool vcr_name_is_valid(const char *s);
/* "xx:xx:xx:xx:xx:xx" (hex, either case) -> 6 bytes; false when malformed. */
bool vcr_mac_parse(const char *s, uint8_t out[6]);
/* Dotted-quad IPv4 -> host-order address; false when malformed. */
bool vcr_ipv4_parse(const char *s, uint32_t *out);

#endif
