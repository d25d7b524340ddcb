/* Disk images of VMs (docs/config-vm.md, "Disk-image VMs"): what format an
 * image file is, and whether a qcow2's chain of backing files is whole.
 * Read from the files' headers (the qcow2 layout is QEMU's docs/interop/qcow2.txt),
 * so that a bad image is a clear error at load and at start, before QEMU runs. */
#ifndef VCR_CONFIG_DISK_IMAGE_H
#define VCR_CONFIG_DISK_IMAGE_H

#include <stddef.h>

#include "common/err.h"

enum vcr_disk_format {
    VCR_DISK_AUTO = 0, /* not configured: detected from the header */
    VCR_DISK_RAW,
    VCR_DISK_QCOW2,
};

/* "raw", "qcow2"; NULL for VCR_DISK_AUTO. */
const char *vcr_disk_format_name(enum vcr_disk_format f);
/* "raw" / "qcow2" -> the format; VCR_DISK_AUTO for anything else. */
enum vcr_disk_format vcr_disk_format_parse(const char *s);

/* Backing chains deeper than this are refused (QEMU allows more; an
 * operator's base image is one or two levels). */
#define VCR_DISK_CHAIN_MAX 16

/* Checks the image at path (absolute) as a VM's read-only base:
 * - *fmt VCR_DISK_AUTO: qcow2 when the header says so, raw otherwise; a
 *   header of another known format (vmdk, vdi, vhdx, vpc, qed, luks) is
 *   refused (EPROTONOSUPPORT) with what is allowed;
 * - a configured format must match the header (EINVAL);
 * - a qcow2 of version 2 or 3 with a sane header (EBADMSG otherwise), each of
 *   its backing files present (ENOENT, naming the one that is missing and
 *   who refers to it) and itself sound, down the chain;
 * - an empty file is refused (EINVAL).
 * On success *fmt is the format found.  Messages name the file. */
int vcr_disk_probe(const char *path, enum vcr_disk_format *fmt, vcr_error_t *err);

/* The backing file recorded in the qcow2 at path, as written there (maybe
 * relative to the image's directory); "" when it has none.  -1 with err when
 * the file is not a readable qcow2. */
int vcr_qcow2_backing(const char *path, char *out, size_t size, vcr_error_t *err);

#endif
