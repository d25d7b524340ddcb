/* Data volumes: images, their preparation and flushes (see host_volume.h). */
#include "agent/host/host_volume.h"
#include "agent/host/host_vm_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/proc.h"
#include "agent/standby_job.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/durable.h"
#include "common/log.h"

#define COPY_CHUNK (1024 * 1024)

#define HOLE_BLOCK 4096

static ssize_t default_write(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

ssize_t (*host_volume_write_hook)(int fd, const void *buf, size_t n, off_t off) = default_write;

char *host_volume_legacy_mem_path(const char *shm_base, const char *vol)
{
    char *s = NULL;
    if (asprintf(&s, "%s-%s.pmem", shm_base, vol) < 0)
        return NULL;
    return s;
}

int host_volume_check_image(const char *path, uint64_t size, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return vcr_error_errno(err, "volume image `%s`", path);
    if (!S_ISREG(st.st_mode))
        return vcr_error_make(err, 0, "volume image `%s` is not a regular file", path);
    if ((uint64_t)st.st_size != size)
        return vcr_error_make(err, 0,
                              "volume image `%s` is %lld bytes; expected %llu (size_mb %llu): "
                              "a truncated or foreign file",
                              path, (long long)st.st_size, (unsigned long long)size,
                              (unsigned long long)(size >> 20));
    uint8_t magic[2];
    ssize_t n = pread(fd, magic, sizeof(magic), HOST_VOLUME_EXT4_MAGIC_OFFSET);
    if (n < 0)
        return vcr_error_errno(err, "volume image `%s`: read the ext4 superblock", path);
    unsigned found = n == 2 ? (unsigned)(magic[0] | magic[1] << 8) : 0;
    if (found != HOST_VOLUME_EXT4_MAGIC)
        return vcr_error_make(err, 0,
                              "volume image `%s` is not ext4: magic 0x%04X at offset %d; "
                              "expected 0x%04X",
                              path, found, HOST_VOLUME_EXT4_MAGIC_OFFSET, HOST_VOLUME_EXT4_MAGIC);
    return 0;
}

int host_volume_build_image(const char *path, uint64_t size, const char *source_dir,
                            const char *label, vcr_error_t *err)
{
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    unlink(tmp);
    {
        cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
            vcr_error_errno(err, "create volume image `%s`", tmp);
            unlink(tmp);
            return -1;
        }
    }
    /* 4 KiB blocks: DAX needs the block size to equal the page size. */
    /* The label (the volume's name, at most 16 bytes: ext4's limit) lets a
     * guest that carries no code of ours mount it from its fstab (LABEL=). */
    char label16[17];
    snprintf(label16, sizeof(label16), "%s", label);
    char *argv[] = {(char *)HOST_VOLUME_MKFS, "-F",        "-q", "-b", "4096", "-L", label16, "-d",
                    (char *)source_dir,       (char *)tmp, NULL};
    if (source_dir == NULL) {
        argv[7] = tmp;
        argv[8] = NULL;
    }
    /* Dies with its caller: a cancelled preparation's mkfs does not go on. */
    pid_t pid = proc_spawn_tool(argv, NULL, err);
    if (pid < 0) {
        unlink(tmp);
        return vcr_error_wrap(err, "run `%s`", HOST_VOLUME_MKFS);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        unlink(tmp);
        return vcr_error_make(err, 0, "`%s -F -q -b 4096%s%s %s` failed (status 0x%x)",
                              HOST_VOLUME_MKFS, source_dir ? " -d " : "",
                              source_dir ? source_dir : "", tmp, (unsigned)status);
    }
    cleanup_close int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
        vcr_error_errno(err, "volume image `%s`", path);
        unlink(tmp);
        return -1;
    }
    return vcr_fsync_parent_dir(path, err);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Phase 1 of an atomic copy: src into a new dst.tmp (returned open), not yet
 * fsync'd.  Zero blocks stay holes: the files are mostly empty filesystems. */
static int copy_to_tmp(const char *src, const char *tmp, uint64_t *bytes, vcr_error_t *err)
{
    cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0)
        return vcr_error_errno(err, "open `%s`", src);
    unlink(tmp);
    int out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        return vcr_error_errno(err, "create `%s`", tmp);
    cleanup_free uint8_t *buf = malloc(COPY_CHUNK);
    if (buf == NULL || ftruncate(out, st.st_size) < 0) {
        if (buf == NULL)
            errno = ENOMEM;
        goto fail;
    }
    for (off_t off = 0; off < st.st_size;) {
        ssize_t n = pread(in, buf, COPY_CHUNK, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* shrank under us */
            goto fail;
        }
        for (ssize_t b = 0; b < n; b += HOLE_BLOCK) {
            size_t len = (size_t)(n - b) < HOLE_BLOCK ? (size_t)(n - b) : HOLE_BLOCK;
            if (all_zero(buf + b, len))
                continue;
            /* Runs of data blocks in one write. */
            ssize_t e = b + (ssize_t)len;
            while (e < n &&
                   !all_zero(buf + e, (size_t)(n - e) < HOLE_BLOCK ? (size_t)(n - e) : HOLE_BLOCK))
                e += (n - e) < HOLE_BLOCK ? (n - e) : HOLE_BLOCK;
            for (ssize_t done = b; done < e;) {
                ssize_t w = host_volume_write_hook(out, buf + done, (size_t)(e - done), off + done);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    if (w == 0)
                        errno = ENOSPC;
                    goto fail;
                }
                done += w;
            }
            b = e - HOLE_BLOCK;
        }
        off += n;
    }
    *bytes = (uint64_t)st.st_size;
    return out;
fail:
    vcr_error_errno(err, "write `%s`", tmp);
    close(out);
    unlink(tmp);
    return -1;
}

/* Phase 2: fsync dst.tmp, rename it over dst, fsync the directory. */
static int commit_tmp(int fd, const char *tmp, const char *dst, vcr_error_t *err)
{
    if (fsync(fd) < 0) {
        vcr_error_errno(err, "fsync `%s`", tmp);
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, dst) < 0) {
        vcr_error_errno(err, "rename `%s` to `%s`", tmp, dst);
        unlink(tmp);
        return -1;
    }
    return vcr_fsync_parent_dir(dst, err);
}

int host_volume_copy_atomic(const char *src, const char *dst, vcr_error_t *err)
{
    cleanup_free char *tmp = NULL;
    uint64_t bytes;
    if (asprintf(&tmp, "%s.tmp", dst) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    int fd = copy_to_tmp(src, tmp, &bytes, err);
    if (fd < 0)
        return vcr_error_wrap(err, "copy `%s` to `%s`", src, dst);
    if (commit_tmp(fd, tmp, dst, err) < 0)
        return vcr_error_wrap(err, "copy `%s` to `%s`", src, dst);
    return 0;
}

/* All blocks of a warm-cache image allocated: QEMU maps the (sparse) image
 * shared, and a guest write into a hole that the host filesystem cannot
 * allocate is a SIGBUS in QEMU, not an error the guest sees. */
static int allocate_blocks(const struct vcr_volume_spec *v, uint64_t size, vcr_error_t *err)
{
    cleanup_close int fd = open(v->image, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "volume image `%s`", v->image);
    if (fallocate(fd, 0, 0, (off_t)size) == 0)
        return 0;
    if (errno == EOPNOTSUPP) {
        log_warn("volume %s: `%s`: the filesystem cannot preallocate (fallocate): a guest "
                 "write may fail QEMU when it fills up",
                 v->name, v->image);
        return 0;
    }
    return vcr_error_errno(err, "volume image `%s`: allocate its %llu MB (fallocate)", v->image,
                           (unsigned long long)(size >> 20));
}

int host_volume_prepare(const struct vcr_volume_spec *v, const char *legacy, vcr_error_t *err)
{
    uint64_t size = (uint64_t)v->size_mb << 20;
    /* Its name in /dev/shm is predictable: a file this agent's QEMU did not
     * make (another owner, writable by others, other links) is never copied
     * into the volume, only reported and left there.  (Those QEMUs made it
     * 0644: readable by others is what an earlier agent left.) */
    struct stat ls;
    if (v->warm_cache && legacy && lstat(legacy, &ls) == 0 &&
        (!S_ISREG(ls.st_mode) || ls.st_uid != geteuid() || ls.st_nlink != 1 ||
         (ls.st_mode & 0022))) {
        log_warn("volume %s: `%s` (owner uid %u, mode %04o) is not a memory file of this agent's: "
                 "ignored, left as it is",
                 v->name, legacy, (unsigned)ls.st_uid, (unsigned)(ls.st_mode & 07777));
        legacy = NULL;
    }
    if (v->warm_cache && legacy && access(legacy, F_OK) == 0) {
        /* Left by an agent that kept the volume in /dev/shm: newer than the
         * image.  Kept if it is not a volume, for the operator to look at. */
        if (host_volume_check_image(legacy, size, err) < 0)
            return vcr_error_wrap(err, "volume `%s`: memory file of an earlier agent", v->name);
        int64_t t0 = vcr_mono_ms();
        if (host_volume_copy_atomic(legacy, v->image, err) < 0)
            return vcr_error_wrap(err, "volume `%s`: move the memory file into the image", v->name);
        if (unlink(legacy) < 0)
            return vcr_error_errno(err, "volume `%s`: remove `%s`", v->name, legacy);
        log_info("volume %s: moved `%s` (left by an earlier agent) into `%s` in %lld ms", v->name,
                 legacy, v->image, (long long)(vcr_mono_ms() - t0));
    }
    if (access(v->image, F_OK) < 0) {
        if (host_volume_build_image(v->image, size, v->source_dir, v->name, err) < 0)
            return vcr_error_wrap(err, "volume `%s`: build the image", v->name);
        log_info("volume %s: built `%s` (%u MB) from %s", v->name, v->image, v->size_mb,
                 v->source_dir ? v->source_dir : "nothing (empty filesystem)");
    }
    if (host_volume_check_image(v->image, size, err) < 0)
        return vcr_error_wrap(err, "volume `%s`", v->name);
    if (v->warm_cache && allocate_blocks(v, size, err) < 0)
        return vcr_error_wrap(err, "volume `%s`", v->name);
    return 0;
}

/* --- per VM --- */

struct vol_state {
    const struct vcr_volume_spec *spec;
    char *legacy; /* host_volume_legacy_mem_path */
};

struct flush_job {
    struct host_vm *vm;
    host_volume_flush_cb cb;
    void *opaque;
    int64_t t0_us;
    uint64_t bytes;
    size_t n;
    const char *images[VCR_VOLUMES_MAX];
};

struct host_volumes {
    size_t n;
    struct vol_state *v;
    struct standby_job *job; /* a flush under way, or NULL */
    struct flush_job *flush;
};

static struct host_volumes *volumes_of(struct host_vm *vm)
{
    if (vm->volumes || vm->spec->n_volumes == 0)
        return vm->volumes;
    struct host_volumes *hv = calloc(1, sizeof(*hv));
    if (hv == NULL || (hv->v = calloc(vm->spec->n_volumes, sizeof(*hv->v))) == NULL) {
        free(hv);
        return NULL;
    }
    vm->volumes = hv;
    for (size_t i = 0; i < vm->spec->n_volumes; i++) {
        struct vol_state *s = &hv->v[hv->n++];
        s->spec = &vm->spec->volumes[i];
        s->legacy = host_volume_legacy_mem_path(vm->paths.shm_base, s->spec->name);
        if (s->legacy == NULL) {
            host_volumes_free(vm);
            return NULL;
        }
    }
    return hv;
}

int host_volumes_prepare(struct host_vm *vm, vcr_error_t *err)
{
    if (vm->spec->n_volumes == 0)
        return 0;
    struct host_volumes *hv = volumes_of(vm);
    if (hv == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: volumes: out of memory", vm->spec->name);
    for (size_t i = 0; i < hv->n; i++)
        if (host_volume_prepare(hv->v[i].spec, hv->v[i].legacy, err) < 0)
            return -1;
    return 0;
}

/* In the child: fsync every image of the job, stopping at the first failure. */
static int fsync_images(void *arg, vcr_error_t *err)
{
    struct flush_job *job = arg;
    for (size_t i = 0; i < job->n; i++)
        if (vcr_fsync_path(job->images[i], err) < 0)
            return -1;
    return 0;
}

static void on_flushed(struct standby_job *sj, const char *error, void *opaque)
{
    (void)sj;
    struct flush_job *job = opaque;
    struct host_vm *vm = job->vm;
    double ms = (double)(vcr_mono_us() - job->t0_us) / 1000.0;
    vm->volumes->job = NULL;
    vm->volumes->flush = NULL;
    if (error == NULL)
        log_info("VM %s: fsync'd %zu warm-cache image(s) (%llu bytes) in %.1f ms", vm->spec->name,
                 job->n, (unsigned long long)job->bytes, ms);
    else
        log_error("VM %s: flush: %s", vm->spec->name, error);
    if (job->cb)
        job->cb(vm, error == NULL, error, ms, job->bytes, job->opaque);
    free(job);
}

int host_volume_flush(struct host_vm *vm, const char *vol, host_volume_flush_cb cb, void *opaque,
                      vcr_error_t *err)
{
    struct host_volumes *hv = volumes_of(vm);
    if (hv == NULL)
        return vcr_error_make(err, ENOENT, "VM `%s` has no volumes", vm->spec->name);
    if (hv->job)
        return vcr_error_make(err, EBUSY, "VM `%s`: a flush is under way", vm->spec->name);
    struct flush_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < hv->n; i++) {
        const struct vol_state *s = &hv->v[i];
        if (!s->spec->warm_cache || (vol && strcmp(vol, s->spec->name) != 0))
            continue;
        if (access(s->legacy, F_OK) == 0) {
            /* An earlier agent's QEMU may still run on it: the image is not
             * its backing, and an fsync of it would promise nothing. */
            free(job);
            return vcr_error_make(err, EAGAIN,
                                  "VM `%s`: volume `%s` is still in `%s`, the memory file of an "
                                  "earlier agent: stop and start the VM to back it by its image",
                                  vm->spec->name, s->spec->name, s->legacy);
        }
        job->images[job->n++] = s->spec->image;
        job->bytes += (uint64_t)s->spec->size_mb << 20;
    }
    if (job->n == 0) {
        free(job);
        return vol ? vcr_error_make(err, ENOENT, "VM `%s` has no warm-cache volume `%s`",
                                    vm->spec->name, vol)
                   : vcr_error_make(err, ENOENT, "VM `%s` has no warm-cache volumes",
                                    vm->spec->name);
    }
    job->vm = vm;
    job->cb = cb;
    job->opaque = opaque;
    job->t0_us = vcr_mono_us();
    hv->job = standby_job_run(vm->env.base, fsync_images, job, on_flushed, job, err);
    if (hv->job == NULL) {
        free(job);
        return vcr_error_wrap(err, "VM `%s`: flush", vm->spec->name);
    }
    hv->flush = job;
    return 0;
}

void host_volumes_free(struct host_vm *vm)
{
    struct host_volumes *hv = vm->volumes;
    if (hv == NULL)
        return;
    for (size_t i = 0; i < hv->n; i++)
        free(hv->v[i].legacy);
    if (hv->job) {
        standby_job_free(hv->job);
        free(hv->flush);
    }
    free(hv->v);
    free(hv);
    vm->volumes = NULL;
}
