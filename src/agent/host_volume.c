/* Data volumes: images, memory files and write-back (see host_volume.h). */
#include "agent/host_volume.h"
#include "agent/host_vm_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

extern char **environ;

#define COPY_CHUNK (1024 * 1024)

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
#define HOLE_BLOCK 4096

static ssize_t default_write(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite(fd, buf, n, off);
}

ssize_t (*host_volume_write_hook)(int fd, const void *buf, size_t n, off_t off) = default_write;

char *host_volume_mem_path(const char *shm_base, const char *vol)
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

static int fsync_dir_of(const char *path, vcr_error_t *err)
{
    cleanup_free char *copy = strdup(path);
    if (copy == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    const char *dir = dirname(copy);
    cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        return vcr_error_errno(err, "fsync directory `%s`", dir);
    return 0;
}

int host_volume_build_image(const char *path, uint64_t size, const char *source_dir,
                            vcr_error_t *err)
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
    char *argv[] = {(char *)HOST_VOLUME_MKFS, "-F",        "-q", "-b", "4096", "-d",
                    (char *)source_dir,       (char *)tmp, NULL};
    if (source_dir == NULL) {
        argv[5] = tmp;
        argv[6] = NULL;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, HOST_VOLUME_MKFS, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        errno = rc;
        vcr_error_errno(err, "run `%s`", HOST_VOLUME_MKFS);
        unlink(tmp);
        return -1;
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
    return fsync_dir_of(path, err);
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
    return fsync_dir_of(dst, err);
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

int host_volume_prepare(const struct vcr_volume_spec *v, const char *mem, vcr_error_t *err)
{
    uint64_t size = (uint64_t)v->size_mb << 20;
    if (v->warm_cache && access(mem, F_OK) == 0) {
        /* Warm: the data of the last run is here, newer than the image. */
        if (host_volume_check_image(mem, size, err) < 0)
            return vcr_error_wrap(err, "volume `%s`: memory file", v->name);
        return 0;
    }
    if (access(v->image, F_OK) < 0) {
        if (host_volume_build_image(v->image, size, v->source_dir, err) < 0)
            return vcr_error_wrap(err, "volume `%s`: build the image", v->name);
        log_info("volume %s: built `%s` (%u MB) from %s", v->name, v->image, v->size_mb,
                 v->source_dir ? v->source_dir : "nothing (empty filesystem)");
    }
    if (host_volume_check_image(v->image, size, err) < 0)
        return vcr_error_wrap(err, "volume `%s`", v->name);
    if (!v->warm_cache)
        return 0;
    int64_t t0 = vcr_mono_ms();
    if (host_volume_copy_atomic(v->image, mem, err) < 0)
        return vcr_error_wrap(err, "volume `%s`: load the memory file", v->name);
    log_info("volume %s: loaded `%s` into `%s` in %lld ms", v->name, v->image, mem,
             (long long)(vcr_mono_ms() - t0));
    return 0;
}

/* --- per VM --- */

struct vol_state {
    struct host_vm *vm;
    const struct vcr_volume_spec *spec;
    char *mem;
    struct event *timer;
};

struct flush_job {
    char *vol; /* NULL: all warm volumes */
    host_volume_flush_cb cb;
    void *opaque;
    bool paused; /* we sent `stop`: send `cont` after the copy */
    int64_t t0_us;
};

struct host_volumes {
    size_t n;
    struct vol_state *v;
    struct flush_job *job;
};

static void on_writeback_timer(evutil_socket_t fd, short what, void *arg);

static struct host_volumes *volumes_of(struct host_vm *vm)
{
    if (vm->volumes || vm->spec->n_volumes == 0)
        return vm->volumes;
    struct host_volumes *hv = calloc(1, sizeof(*hv));
    if (hv == NULL || (hv->v = calloc(vm->spec->n_volumes, sizeof(*hv->v))) == NULL) {
        free(hv);
        return NULL;
    }
    for (size_t i = 0; i < vm->spec->n_volumes; i++) {
        struct vol_state *s = &hv->v[hv->n++];
        s->vm = vm;
        s->spec = &vm->spec->volumes[i];
        s->mem = host_volume_mem_path(vm->paths.shm_base, s->spec->name);
        s->timer = evtimer_new(vm->env.base, on_writeback_timer, s);
        if (s->mem == NULL || s->timer == NULL) {
            vm->volumes = hv;
            host_volumes_free(vm);
            return NULL;
        }
    }
    vm->volumes = hv;
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
        if (host_volume_prepare(hv->v[i].spec, hv->v[i].mem, err) < 0)
            return -1;
    return 0;
}

static void arm(struct vol_state *s)
{
    if (!s->spec->warm_cache || s->spec->writeback_interval_s == 0)
        return;
    struct timeval tv = {.tv_sec = s->spec->writeback_interval_s, .tv_usec = 0};
    evtimer_add(s->timer, &tv);
}

void host_volumes_running(struct host_vm *vm)
{
    struct host_volumes *hv = volumes_of(vm);
    for (size_t i = 0; hv && i < hv->n; i++)
        if (!evtimer_pending(hv->v[i].timer, NULL))
            arm(&hv->v[i]);
}

/* Copies the selected warm volumes; phase 2 (fsync, rename) after `cont`. */
static int writeback(struct host_vm *vm, const char *vol, bool *resume, uint64_t *bytes,
                     vcr_error_t *err)
{
    struct host_volumes *hv = volumes_of(vm);
    int fds[VCR_VOLUMES_MAX];
    char *tmps[VCR_VOLUMES_MAX] = {0};
    size_t idx[VCR_VOLUMES_MAX];
    size_t n = 0;
    int rc = 0;
    *bytes = 0;
    for (size_t i = 0; hv && i < hv->n && rc == 0; i++) {
        struct vol_state *s = &hv->v[i];
        if (!s->spec->warm_cache || (vol && strcmp(vol, s->spec->name) != 0))
            continue;
        if (access(s->mem, F_OK) < 0)
            continue; /* never started, or dropped: the image is current */
        uint64_t b = 0;
        if (asprintf(&tmps[n], "%s.tmp", s->spec->image) < 0) {
            rc = vcr_error_make(err, ENOMEM, "out of memory");
            break;
        }
        fds[n] = copy_to_tmp(s->mem, tmps[n], &b, err);
        if (fds[n] < 0) {
            rc = vcr_error_wrap(err, "write back volume `%s`", s->spec->name);
            free(tmps[n]);
            tmps[n] = NULL;
            break;
        }
        *bytes += b;
        idx[n++] = i;
    }
    if (*resume) {
        cleanup_error vcr_error_t qerr = NULL;
        if (!vm->qmp_ready || qmp_client_command(vm->qmp, "cont", NULL, NULL, NULL, &qerr) < 0)
            log_warn("VM %s: cont after write-back: %s", vm->spec->name,
                     qerr ? vcr_error_msg(qerr) : "QMP not ready");
        *resume = false;
    }
    for (size_t k = 0; k < n; k++) {
        struct vol_state *s = &hv->v[idx[k]];
        if (rc == 0 && commit_tmp(fds[k], tmps[k], s->spec->image, err) < 0)
            rc = vcr_error_wrap(err, "write back volume `%s`", s->spec->name);
        else if (rc < 0 && fds[k] >= 0) {
            close(fds[k]);
            unlink(tmps[k]);
        }
        free(tmps[k]);
    }
    if (vol && rc == 0) {
        bool found = false;
        for (size_t i = 0; hv && i < hv->n; i++)
            found = found || (hv->v[i].spec->warm_cache && strcmp(vol, hv->v[i].spec->name) == 0);
        if (!found)
            return vcr_error_make(err, ENOENT, "VM `%s` has no warm-cache volume `%s`",
                                  vm->spec->name, vol);
    }
    return rc;
}

static void finish_job(struct host_vm *vm)
{
    struct host_volumes *hv = vm->volumes;
    struct flush_job *job = hv->job;
    bool resume = job->paused;
    uint64_t bytes = 0;
    cleanup_error vcr_error_t err = NULL;
    int rc = writeback(vm, job->vol, &resume, &bytes, &err);
    double ms = (double)(mono_us() - job->t0_us) / 1000.0;
    hv->job = NULL;
    if (rc == 0)
        log_info("VM %s: wrote back %s (%llu bytes) in %.1f ms", vm->spec->name,
                 job->vol ? job->vol : "all warm volumes", (unsigned long long)bytes, ms);
    else
        log_error("VM %s: %s", vm->spec->name, vcr_error_msg(err));
    if (job->cb)
        job->cb(vm, rc == 0, rc == 0 ? NULL : vcr_error_msg(err), ms, bytes, job->opaque);
    free(job->vol);
    free(job);
}

static void on_stopped(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_vm *vm = opaque;
    if (vm->volumes == NULL || vm->volumes->job == NULL)
        return;
    if (error)
        log_warn("VM %s: stop before write-back: %s", vm->spec->name, error);
    /* A stop that failed because QEMU is gone needs no resume either. */
    vm->volumes->job->paused = error == NULL;
    finish_job(vm);
}

int host_volume_flush(struct host_vm *vm, const char *vol, host_volume_flush_cb cb, void *opaque,
                      vcr_error_t *err)
{
    struct host_volumes *hv = volumes_of(vm);
    if (hv == NULL)
        return vcr_error_make(err, ENOENT, "VM `%s` has no volumes", vm->spec->name);
    if (hv->job)
        return vcr_error_make(err, EBUSY, "VM `%s`: a write-back is under way", vm->spec->name);
    struct flush_job *job = calloc(1, sizeof(*job));
    if (job == NULL || (vol && (job->vol = strdup(vol)) == NULL)) {
        free(job);
        return vcr_error_make(err, ENOMEM, "out of memory");
    }
    job->cb = cb;
    job->opaque = opaque;
    job->t0_us = mono_us();
    hv->job = job;
    /* A consistent copy: the guest's vCPUs do not run while it is taken. */
    if (vm->proc && vm->qmp_ready && vm->sm.state == VM_STATE_RUNNING && !vm->warm) {
        cleanup_error vcr_error_t qerr = NULL;
        if (qmp_client_command(vm->qmp, "stop", NULL, on_stopped, vm, &qerr) == 0)
            return 0;
        hv->job = NULL;
        free(job->vol);
        free(job);
        return vcr_error_make(err, EIO, "VM `%s`: pause for write-back: %s", vm->spec->name,
                              vcr_error_msg(qerr));
    }
    if (vm->proc && vm->sm.state != VM_STATE_PAUSED) {
        hv->job = NULL;
        free(job->vol);
        free(job);
        return vcr_error_make(err, EAGAIN, "VM `%s` is %s: cannot pause it for a write-back",
                              vm->spec->name, vm_state_name(vm->sm.state));
    }
    finish_job(vm);
    return 0;
}

static void on_writeback_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vol_state *s = arg;
    cleanup_error vcr_error_t err = NULL;
    if (s->vm->proc == NULL)
        return;
    if (host_volume_flush(s->vm, s->spec->name, NULL, NULL, &err) < 0)
        log_warn("VM %s: periodic write-back of %s: %s", s->vm->spec->name, s->spec->name,
                 vcr_error_msg(err));
    arm(s);
}

void host_volumes_exited(struct host_vm *vm)
{
    struct host_volumes *hv = vm->volumes;
    if (hv == NULL)
        return;
    for (size_t i = 0; i < hv->n; i++)
        evtimer_del(hv->v[i].timer);
    if (hv->job) {
        finish_job(vm); /* QEMU is gone: the copy is consistent now */
        return;
    }
    bool resume = false;
    uint64_t bytes = 0;
    cleanup_error vcr_error_t err = NULL;
    int64_t t0 = vcr_mono_ms();
    if (writeback(vm, NULL, &resume, &bytes, &err) < 0)
        log_error("VM %s: write-back at exit: %s", vm->spec->name, vcr_error_msg(err));
    else if (bytes)
        log_info("VM %s: wrote back %llu bytes of warm volumes at exit in %lld ms", vm->spec->name,
                 (unsigned long long)bytes, (long long)(vcr_mono_ms() - t0));
}

void host_volumes_drop(struct host_vm *vm)
{
    struct host_volumes *hv = volumes_of(vm);
    for (size_t i = 0; hv && i < hv->n; i++)
        if (hv->v[i].spec->warm_cache && unlink(hv->v[i].mem) < 0 && errno != ENOENT)
            log_warn("VM %s: remove `%s`: %s", vm->spec->name, hv->v[i].mem, strerror(errno));
}

void host_volumes_free(struct host_vm *vm)
{
    struct host_volumes *hv = vm->volumes;
    if (hv == NULL)
        return;
    for (size_t i = 0; i < hv->n; i++) {
        free(hv->v[i].mem);
        if (hv->v[i].timer)
            event_free(hv->v[i].timer);
    }
    if (hv->job) {
        free(hv->job->vol);
        free(hv->job);
    }
    free(hv->v);
    free(hv);
    vm->volumes = NULL;
}
