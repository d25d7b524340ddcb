/* fsync, rename, fsync of the directory (see durable.h). */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

/* vcr_error_errno with errno kept as the failing call left it. */
#define FAIL_ERRNO(err, ...)                                                                       \
    do {                                                                                           \
        int saved_ = errno;                                                                        \
        vcr_error_errno(err, __VA_ARGS__);                                                         \
        errno = saved_;                                                                            \
        return -1;                                                                                 \
    } while (0)

int vcr_fsync_path(const char *path, vcr_error_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        FAIL_ERRNO(err, "open `%s` to fsync it", path);
    if (fsync(fd) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        FAIL_ERRNO(err, "fsync `%s`", path);
    }
    close(fd);
    return 0;
}

int vcr_fsync_parent_dir(const char *path, vcr_error_t *err)
{
    char copy[4096];
    if (snprintf(copy, sizeof(copy), "%s", path) >= (int)sizeof(copy)) {
        errno = ENAMETOOLONG;
        FAIL_ERRNO(err, "fsync the directory of `%.100s...`", path);
    }
    return vcr_fsync_path(dirname(copy), err);
}

int vcr_rename_durable(const char *tmp, const char *path, vcr_error_t *err)
{
    if (vcr_fsync_path(tmp, err) < 0)
        return -1;
    if (rename(tmp, path) < 0)
        FAIL_ERRNO(err, "rename `%s` to `%s`", tmp, path);
    return vcr_fsync_parent_dir(path, err);
}

int vcr_write_all(int fd, const void *buf, size_t len, const char *path, vcr_error_t *err)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "write `%s`", path);
        done += (size_t)n;
    }
    return 0;
}

int vcr_file_replace(const char *path, const void *data, size_t len, vcr_error_t *err)
{
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    {
        cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0)
            return vcr_error_errno(err, "create `%s`", tmp);
        if (vcr_write_all(fd, data, len, tmp, err) < 0) {
            unlink(tmp);
            return -1;
        }
    }
    if (vcr_rename_durable(tmp, path, err) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}
