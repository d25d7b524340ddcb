/* The lower dir of an unprivileged container: a copy of a template or image
 * with every owner moved into the container's idmap range (standby.h,
 * STANDBY_IDMAP_BASE). */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/standby/standby.h"
#include "agent/standby_migrate.h"
#include "common/cleanup.h"

/* nftw() passes no context: the walk runs in one job child at a time. */
static struct {
    unsigned from, to, count;
    int error;
    char where[300];
} shift;

static unsigned shifted_id(unsigned id)
{
    return id >= shift.from && id - shift.from < shift.count ? id - shift.from + shift.to : id;
}

static int shift_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)type;
    (void)ftw;
    /* An owner outside the range stays as it is: the container sees it as
     * nobody, as it would any unmapped id. */
    uid_t uid = shifted_id(st->st_uid);
    gid_t gid = shifted_id(st->st_gid);
    if (uid == st->st_uid && gid == st->st_gid)
        return 0;
    if (lchown(path, uid, gid) < 0) {
        shift.error = errno;
        snprintf(shift.where, sizeof(shift.where), "chown `%.250s`", path);
        return 1;
    }
    /* chown clears set-user-ID and set-group-ID: put them back. */
    if (!S_ISLNK(st->st_mode) && (st->st_mode & (S_ISUID | S_ISGID)) &&
        chmod(path, st->st_mode & 07777) < 0) {
        shift.error = errno;
        snprintf(shift.where, sizeof(shift.where), "chmod `%.250s`", path);
        return 1;
    }
    return 0;
}

int standby_map_owners(const char *dir, unsigned from, unsigned to, unsigned count,
                       vcr_error_t *err)
{
    shift.from = from;
    shift.to = to;
    shift.count = count;
    shift.error = 0;
    if (nftw(dir, shift_one, 32, FTW_PHYS | FTW_MOUNT) != 0) {
        int e = shift.error ? shift.error : errno;
        return vcr_error_make(err, e, "%s: %s", shift.error ? shift.where : "walk", strerror(e));
    }
    return 0;
}

int standby_images_each(int dfd, const char *images, const char *kind,
                        int (*fn)(int dfd, const char *images, const char *name, vcr_error_t *err),
                        vcr_error_t *err)
{
    int fd = dup(dfd);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        vcr_error_errno(err, "read `%s`", images);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t k = strlen(kind);
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (rc == 0 && (errno = 0, e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, kind, k) == 0 && e->d_name[k] == '-' && n > k + 5 &&
            strcmp(e->d_name + n - 4, ".img") == 0)
            rc = fn(dfd, images, e->d_name, err);
    }
    if (rc == 0 && errno != 0)
        rc = vcr_error_errno(err, "read `%s`", images);
    closedir(dir);
    return rc;
}

static int timens_readable(int dfd, const char *images, const char *name, vcr_error_t *err)
{
    /* Only a regular file of its own: a link would chmod what it names. */
    cleanup_close int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return vcr_error_make(err, fd < 0 ? errno : EINVAL, "`%s/%s`: not a regular file", images,
                              name);
    if (fchmod(fd, (st.st_mode & 07777) | S_IRUSR | S_IRGRP | S_IROTH) < 0)
        return vcr_error_errno(err, "chmod `%s/%s`", images, name);
    return 0;
}

int standby_images_for_userns(const char *images, vcr_error_t *err)
{
    cleanup_close int dfd = open(images, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0)
        return vcr_error_errno(err, "open `%s`", images);
    if (fchmod(dfd, (st.st_mode & 07777) | S_IXOTH) < 0)
        return vcr_error_errno(err, "chmod `%s`", images);
    return standby_images_each(dfd, images, "timens", timens_readable, err);
}

int standby_shift_tree(const char *source, const char *shifted, unsigned base, unsigned count,
                       vcr_error_t *err)
{
    struct stat st;
    if (stat(source, &st) < 0 || !S_ISDIR(st.st_mode))
        return vcr_error_make(err, ENOENT, "lower dir `%s` (template or image): no such directory",
                              source);
    char parent[300], tmp[300], lock[300];
    int n = snprintf(parent, sizeof(parent), "%s", shifted);
    if (n < 0 || (size_t)n >= sizeof(parent) ||
        snprintf(tmp, sizeof(tmp), "%s.tmp", shifted) >= (int)sizeof(tmp) ||
        snprintf(lock, sizeof(lock), "%s.lock", shifted) >= (int)sizeof(lock))
        return vcr_error_make(err, ENAMETOOLONG, "`%s`: path too long", shifted);
    /* mkdir -p of its parent (root's, 0755: the overlay's lower dir). */
    for (char *s = strchr(parent + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(parent, 0755) < 0 && errno != EEXIST)
            return vcr_error_errno(err, "mkdir `%s`", parent);
        *s = '/';
    }
    /* Two containers of one template made at once: the second waits, then
     * finds the copy made. */
    cleanup_close int lfd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX) < 0)
        return vcr_error_errno(err, "lock `%s`", lock);
    if (lstat(shifted, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    char *cp[] = {"cp", "-a", (char *)source, tmp, NULL};
    if (standby_remove_tree(tmp, err) < 0 || standby_run_program(cp, err) < 0)
        return vcr_error_wrap(err, "copy `%s` to `%s`", source, tmp);
    if (standby_map_owners(tmp, 0, base, count, err) < 0) {
        cleanup_error vcr_error_t undo = NULL;
        standby_remove_tree(tmp, &undo);
        return -1;
    }
    if (rename(tmp, shifted) < 0)
        return vcr_error_errno(err, "rename `%s` to `%s`", tmp, shifted);
    return 0;
}
