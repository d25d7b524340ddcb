/* A service's data on the standby side (standby_data.h, docs/data.md). */
#include "agent/standby/standby_data.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "agent/data_image.h"
#include "agent/standby_job.h"
#include "agent/standby_migrate.h"
#include "common/cleanup.h"
#include "common/clock.h"

static int get_service(json_t *msg, char out[65], vcr_error_t *err)
{
    const char *s = json_string_value(json_object_get(msg, "service"));
    if (s == NULL || strlen(s) > 64)
        return vcr_error_make(err, EINVAL, "`service` is missing; expected a service name");
    snprintf(out, 65, "%s", s);
    return 0;
}

static int make_dir(const char *path, vcr_error_t *err)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", path);
    return 0;
}

/* BASE and BASE/SERVICE (BASE's parent, /var/lib/vcr, exists in the image). */
static int service_dir(const char *base, const char *service, char *dir, size_t size,
                       vcr_error_t *err)
{
    if (data_path(base, service, NULL, dir, size, err) < 0 || make_dir(base, err) < 0 ||
        make_dir(dir, err) < 0)
        return -1;
    return 0;
}

int standby_data_dir_open(const char *base, const char *service, char *dir, size_t size,
                          vcr_error_t *err)
{
    char own[320];
    if (dir == NULL) {
        dir = own;
        size = sizeof(own);
    }
    if (service_dir(base, service, dir, size, err) < 0)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", dir);
    return fd;
}

/* data_space: what a migration needs to know before it stops anything
 * (docs/migration.md "Data"): whether the copy is attached (mounted: a
 * container uses it), its size and the blocks it holds, and the room left. */
static json_t *data_space(const char *dir, vcr_error_t *err)
{
    char img[400], mnt[400];
    snprintf(img, sizeof(img), "%s/data.img", dir);
    snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
    struct statvfs fs;
    if (statvfs(dir, &fs) < 0)
        return vcr_error_errno(err, "statvfs `%s`", dir), NULL;
    struct stat st = {0};
    bool have = stat(img, &st) == 0;
    if (!have && errno != ENOENT)
        return vcr_error_errno(err, "stat `%s`", img), NULL;
    return json_pack("{s:b, s:b, s:I, s:I, s:I}", "copy", have, "mounted",
                     have && standby_data_mounted(mnt), "raw_bytes", (json_int_t)st.st_size,
                     "alloc_bytes", (json_int_t)st.st_blocks * 512, "free_bytes",
                     (json_int_t)((uint64_t)fs.f_bavail * fs.f_frsize));
}

json_t *standby_data_loop_order(const char *base, const char *action, json_t *msg, vcr_error_t *err)
{
    char service[65], dir[320], path[400];
    if (get_service(msg, service, err) < 0 || service_dir(base, service, dir, sizeof(dir), err) < 0)
        return NULL;
    if (strcmp(action, "data_space") == 0)
        return data_space(dir, err);
    if (strcmp(action, "data_read") == 0) {
        uint64_t offset = 0;
        size_t length = 0;
        snprintf(path, sizeof(path), "%s/outgoing.gz", dir);
        if (standby_chunk_range_from_json(msg, &offset, &length, err) < 0)
            return NULL;
        if (access(path, F_OK) < 0)
            return vcr_error_make(err, ENOENT,
                                  "service `%s`: no packed copy (`%s`): data_export "
                                  "it first",
                                  service, path),
                   NULL;
        return standby_chunk_read(path, offset, length, err);
    }
    snprintf(path, sizeof(path), "%s/incoming.gz", dir);
    struct standby_image_write w = {0};
    if (standby_chunk_from_json(msg, &w, err) < 0)
        return NULL;
    json_t *m = standby_chunk_write(path, &w, err);
    standby_image_write_release(&w);
    return m;
}

bool standby_data_mounted(const char *path)
{
    cleanup_file FILE *f = fopen("/proc/self/mounts", "re");
    char line[1024];
    size_t n = strlen(path);
    while (f && fgets(line, sizeof(line), f)) {
        const char *mnt = strchr(line, ' ');
        if (mnt && strncmp(mnt + 1, path, n) == 0 && mnt[1 + n] == ' ')
            return true;
    }
    return false;
}

int standby_data_install(const char *base, json_t *msg, vcr_error_t *err)
{
    char service[65], dir[320], gz[400], img[400], mnt[400];
    if (get_service(msg, service, err) < 0 || service_dir(base, service, dir, sizeof(dir), err) < 0)
        return -1;
    json_t *taken = json_object_get(msg, "taken_ms");
    const char *sum = json_string_value(json_object_get(msg, "sha256"));
    if (!json_is_integer(taken) || json_integer_value(taken) < 0)
        return vcr_error_make(err, EINVAL,
                              "`taken_ms` is missing; expected when the copy was "
                              "taken (ms since the epoch)");
    snprintf(gz, sizeof(gz), "%s/incoming.gz", dir);
    snprintf(img, sizeof(img), "%s/data.img", dir);
    snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
    /* Left attached by a recovery that was cleared (the primary serves again, and
     * the server copies only then or before an attach): detached here, the
     * container keeps the old copy until its next data_attach. */
    if (standby_data_mounted(mnt) && umount2(mnt, MNT_DETACH) < 0)
        return vcr_error_errno(err, "service `%s`: umount `%s`", service, mnt);
    int64_t t0 = vcr_mono_ms();
    uint64_t raw = 0;
    if (data_unpack(gz, sum, img, &raw, err) < 0 ||
        data_taken_write(dir, json_integer_value(taken), vcr_wall_ms(), raw, err) < 0)
        return -1;
    unlink(gz);
    char text[160];
    snprintf(text, sizeof(text), "{\"raw_bytes\": %llu, \"unpack_ms\": %lld, \"taken_ms\": %lld}",
             (unsigned long long)raw, (long long)(vcr_mono_ms() - t0),
             (long long)json_integer_value(taken));
    standby_job_set_result(text);
    return 0;
}

/* losetup -f --show IMG (read-write, autoclear: the device goes with its
 * last user, the mount).  Returns the device's descriptor, to be held until
 * the mount is made: with autoclear, its last close before the mount would
 * detach the file (and the mount would find a device of 0 bytes). */
static int loop_attach(const char *img, char *dev, size_t size, vcr_error_t *err)
{
    cleanup_close int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return vcr_error_errno(err, "open `/dev/loop-control` (is the loop module loaded?)");
    cleanup_close int file = open(img, O_RDWR | O_CLOEXEC);
    if (file < 0)
        return vcr_error_errno(err, "open `%s`", img);
    for (int attempt = 0; attempt < 8; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return vcr_error_errno(err, "LOOP_CTL_GET_FREE");
        snprintf(dev, size, "/dev/loop%d", n);
        cleanup_close int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return vcr_error_errno(err, "open `%s`", dev);
        struct loop_config cfg = {.fd = (unsigned)file};
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        /* A name for losetup -l; the kernel keeps 63 bytes of it. */
        size_t len = strnlen(img, sizeof(cfg.info.lo_file_name) - 1);
        memcpy(cfg.info.lo_file_name, img, len);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
            return steal_fd(&fd);
        if (errno != EBUSY) /* EBUSY: taken meanwhile by someone else: the next one */
            return vcr_error_errno(err, "LOOP_CONFIGURE `%s` on `%s`", img, dev);
    }
    return vcr_error_make(err, EBUSY, "no free loop device for `%s`", img);
}

int standby_data_mount(const char *base, const char *service, char *mnt, size_t size,
                       int64_t *taken_ms, vcr_error_t *err)
{
    char dir[320], img[400];
    if (service_dir(base, service, dir, sizeof(dir), err) < 0)
        return -1;
    snprintf(img, sizeof(img), "%s/data.img", dir);
    snprintf(mnt, size, "%s/mnt", dir);
    if (access(img, F_OK) < 0)
        return vcr_error_make(err, ENOENT,
                              "service `%s`: no data copy has reached this standby (`%s`)", service,
                              img);
    if (data_taken_read(dir, taken_ms, err) < 0 || make_dir(mnt, err) < 0)
        return -1;
    if (standby_data_mounted(mnt))
        return 0;
    char dev[32];
    cleanup_close int loop = loop_attach(img, dev, sizeof(dev), err);
    if (loop < 0)
        return vcr_error_wrap(err, "service `%s`", service);
    if (mount(dev, mnt, "ext4", MS_NOATIME, NULL) < 0) {
        int e = errno;
        ioctl(loop, LOOP_CLR_FD, 0);
        errno = e;
        return vcr_error_errno(err, "service `%s`: mount `%s` (%s) on `%s`", service, img, dev,
                               mnt);
    }
    return 0;
}

/* nftw has no argument for its callback: the walk runs in a child job, one
 * at a time. */
static struct {
    uid_t from_uid, to_uid;
    gid_t from_gid, to_gid;
    unsigned long changed;
    int errno_;
    char path[400];
} owner_walk;

static int take_owner_of(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type;
    (void)ftw;
    uid_t uid = st->st_uid == owner_walk.from_uid ? owner_walk.to_uid : st->st_uid;
    gid_t gid = st->st_gid == owner_walk.from_gid ? owner_walk.to_gid : st->st_gid;
    if (uid == st->st_uid && gid == st->st_gid)
        return 0;
    if (lchown(path, uid, gid) < 0) {
        owner_walk.errno_ = errno;
        snprintf(owner_walk.path, sizeof(owner_walk.path), "%s", path);
        return 1;
    }
    owner_walk.changed++;
    return 0;
}

int standby_data_take_owner(const char *mnt, const char *image_dir, unsigned long *changed,
                            vcr_error_t *err)
{
    struct stat want, have;
    *changed = 0;
    if (stat(image_dir, &want) < 0 || !S_ISDIR(want.st_mode))
        return 0;
    if (stat(mnt, &have) < 0)
        return vcr_error_errno(err, "stat `%s`", mnt);
    if (have.st_uid == want.st_uid && have.st_gid == want.st_gid)
        return 0;
    owner_walk.from_uid = have.st_uid;
    owner_walk.to_uid = want.st_uid;
    owner_walk.from_gid = have.st_gid;
    owner_walk.to_gid = want.st_gid;
    owner_walk.changed = 0;
    owner_walk.errno_ = 0;
    int r = nftw(mnt, take_owner_of, 16, FTW_PHYS | FTW_MOUNT);
    *changed = owner_walk.changed;
    if (r < 0)
        return vcr_error_errno(err, "walk `%s`", mnt);
    if (r > 0) {
        errno = owner_walk.errno_;
        return vcr_error_errno(err, "chown `%s` to %u:%u", owner_walk.path, (unsigned)want.st_uid,
                               (unsigned)want.st_gid);
    }
    return 0;
}

int standby_data_export(const char *base, const char *service, vcr_error_t *err)
{
    char dir[320], img[400], gz[400], mnt[400];
    if (service_dir(base, service, dir, sizeof(dir), err) < 0)
        return -1;
    snprintf(img, sizeof(img), "%s/data.img", dir);
    snprintf(gz, sizeof(gz), "%s/outgoing.gz", dir);
    snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
    /* Unmounted first: ext4 writes back everything, the image is complete. */
    if (standby_data_mounted(mnt) && umount(mnt) < 0)
        return vcr_error_errno(err, "service `%s`: umount `%s`", service, mnt);
    struct data_packed p;
    if (data_pack(img, gz, &p, err) < 0)
        return -1;
    char text[256];
    snprintf(text, sizeof(text),
             "{\"bytes\": %llu, \"raw_bytes\": %llu, \"sha256\": \"%s\", \"pack_ms\": %lld}",
             (unsigned long long)p.bytes, (unsigned long long)p.raw_bytes, p.sha256,
             (long long)p.pack_ms);
    standby_job_set_result(text);
    return 0;
}

void standby_data_forget_outgoing(const char *base, const char *service)
{
    char gz[400];
    cleanup_error vcr_error_t err = NULL;
    if (data_path(base, service, "outgoing.gz", gz, sizeof(gz), &err) == 0)
        unlink(gz);
}
