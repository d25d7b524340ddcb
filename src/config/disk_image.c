/* Header checks of disk images (disk_image.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "config/disk_image.h"

/* QEMU docs/interop/qcow2.txt: big-endian fields of the header. */
#define QCOW2_MAGIC            0x514649fbu /* "QFI\xfb" */
#define QCOW2_HEADER_V2_LEN    72
#define QCOW2_BACKING_NAME_MAX 1023 /* QEMU refuses longer names */

const char *vcr_disk_format_name(enum vcr_disk_format f)
{
    switch (f) {
    case VCR_DISK_RAW:
        return "raw";
    case VCR_DISK_QCOW2:
        return "qcow2";
    case VCR_DISK_AUTO:
        break;
    }
    return NULL;
}

enum vcr_disk_format vcr_disk_format_parse(const char *s)
{
    if (s && strcmp(s, "raw") == 0)
        return VCR_DISK_RAW;
    if (s && strcmp(s, "qcow2") == 0)
        return VCR_DISK_QCOW2;
    return VCR_DISK_AUTO;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Formats QEMU knows that we do not take, by their signatures. */
static const char *other_format(const unsigned char *h, size_t n)
{
    static const struct {
        const char *name;
        size_t offset;
        const char *magic;
        size_t len;
    } sigs[] = {
        {"vmdk", 0, "KDMV", 4},
        {"vmdk (descriptor)", 0, "# Disk DescriptorFile", 21},
        {"vhdx", 0, "vhdxfile", 8},
        {"vpc (vhd)", 0, "conectix", 8},
        {"qed", 0, "QED\0", 4},
        {"luks", 0, "LUKS\xba\xbe", 6},
        {"vdi", 0x40, "\x7f\x10\xda\xbe", 4},
    };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (n >= sigs[i].offset + sigs[i].len &&
            memcmp(h + sigs[i].offset, sigs[i].magic, sigs[i].len) == 0)
            return sigs[i].name;
    return NULL;
}

struct header {
    unsigned char b[512];
    size_t n;
    off_t size;
};

static int read_header(const char *path, struct header *h, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return vcr_error_errno(err, "disk image `%s`", path);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return vcr_error_make(err, EINVAL, "disk image `%s` is not a regular file or block device",
                              path);
    ssize_t n = pread(fd, h->b, sizeof(h->b), 0);
    if (n < 0)
        return vcr_error_errno(err, "disk image `%s`: read", path);
    h->n = (size_t)n;
    h->size = st.st_size;
    return 0;
}

/* The qcow2 header's sanity and its backing file name; out "" when none. */
static int qcow2_parse(const char *path, const struct header *h, char *out, size_t size,
                       vcr_error_t *err)
{
    if (h->n < QCOW2_HEADER_V2_LEN)
        return vcr_error_make(err, EBADMSG,
                              "disk image `%s`: qcow2 header truncated (%zu bytes); the image "
                              "is corrupt",
                              path, h->n);
    uint32_t version = be32(h->b + 4);
    if (version != 2 && version != 3)
        return vcr_error_make(err, EBADMSG,
                              "disk image `%s`: qcow2 version %u; allowed: 2 or 3 (the image is "
                              "corrupt or from an unknown QEMU)",
                              path, version);
    uint64_t off = be64(h->b + 8);
    uint32_t len = be32(h->b + 16);
    out[0] = '\0';
    if (off == 0)
        return 0;
    if (len == 0 || len > QCOW2_BACKING_NAME_MAX || len >= size || off + len > (uint64_t)h->size)
        return vcr_error_make(err, EBADMSG,
                              "disk image `%s`: qcow2 backing file name (offset %llu, %u bytes) "
                              "is out of bounds; the image is corrupt",
                              path, (unsigned long long)off, len);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || pread(fd, out, len, (off_t)off) != (ssize_t)len)
        return vcr_error_errno(err, "disk image `%s`: read the backing file name", path);
    out[len] = '\0';
    if (memchr(out, '\0', len) != NULL)
        return vcr_error_make(err, EBADMSG,
                              "disk image `%s`: qcow2 backing file name holds a NUL byte; the "
                              "image is corrupt",
                              path);
    return 0;
}

int vcr_qcow2_backing(const char *path, char *out, size_t size, vcr_error_t *err)
{
    struct header h;
    if (read_header(path, &h, err) < 0)
        return -1;
    if (h.n < 4 || be32(h.b) != QCOW2_MAGIC)
        return vcr_error_make(err, EINVAL, "disk image `%s` is not a qcow2 image", path);
    return qcow2_parse(path, &h, out, size, err);
}

/* A backing name relative to the directory of the image that holds it. */
static char *backing_path(const char *image, const char *name)
{
    if (name[0] == '/')
        return strdup(name);
    const char *slash = strrchr(image, '/');
    int dir_len = slash ? (int)(slash - image) : 1;
    char *out = NULL;
    if (asprintf(&out, "%.*s/%s", dir_len, slash ? image : ".", name) < 0)
        return NULL;
    return out;
}

int vcr_disk_probe(const char *path, enum vcr_disk_format *fmt, vcr_error_t *err)
{
    cleanup_free char *cur = strdup(path);
    if (cur == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    for (int depth = 0;; depth++) {
        if (depth > VCR_DISK_CHAIN_MAX)
            return vcr_error_make(err, ELOOP,
                                  "disk image `%s`: more than %d backing files (a loop?); "
                                  "allowed: a chain of at most %d",
                                  path, VCR_DISK_CHAIN_MAX, VCR_DISK_CHAIN_MAX);
        struct header h;
        if (read_header(cur, &h, err) < 0)
            return -1;
        bool qcow2 = h.n >= 4 && be32(h.b) == QCOW2_MAGIC;
        if (depth == 0) {
            const char *other = qcow2 ? NULL : other_format(h.b, h.n);
            if (*fmt == VCR_DISK_AUTO && other)
                return vcr_error_make(err, EPROTONOSUPPORT,
                                      "disk image `%s` is in %s format; allowed: raw or qcow2 "
                                      "(convert it with qemu-img convert -O qcow2)",
                                      path, other);
            if (*fmt == VCR_DISK_RAW && qcow2)
                return vcr_error_make(err, EINVAL,
                                      "disk image `%s` is a qcow2 image but format raw is "
                                      "configured; allowed: format qcow2, or none (detected)",
                                      path);
            if (*fmt == VCR_DISK_QCOW2 && !qcow2)
                return vcr_error_make(err, EINVAL,
                                      "disk image `%s` is not a qcow2 image (no qcow2 header) but "
                                      "format qcow2 is configured; allowed: format raw, or none",
                                      path);
            if (h.size == 0 && !qcow2)
                return vcr_error_make(err, EINVAL, "disk image `%s` is empty", path);
            *fmt = qcow2 ? VCR_DISK_QCOW2 : VCR_DISK_RAW;
        }
        if (!qcow2)
            return 0;
        char name[QCOW2_BACKING_NAME_MAX + 1];
        if (qcow2_parse(cur, &h, name, sizeof(name), err) < 0)
            return -1;
        if (name[0] == '\0')
            return 0;
        char *next = backing_path(cur, name);
        if (next == NULL)
            return vcr_error_make(err, ENOMEM, "out of memory");
        if (access(next, F_OK) < 0) {
            int e = errno;
            vcr_error_make(err, e,
                           "disk image `%s`: backing file `%s` (named `%s` in `%s`): %s; the "
                           "chain of backing files must be whole",
                           path, next, name, cur, strerror(e));
            free(next);
            return -1;
        }
        free(cur);
        cur = next;
    }
}
