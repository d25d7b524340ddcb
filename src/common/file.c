/* Durable file replacement (see file.h). */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"

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

int vcr_file_replace(const char *path, const void *data, size_t len, vcr_error_t *err)
{
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    {
        cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0)
            return vcr_error_errno(err, "create `%s`", tmp);
        for (size_t done = 0; done < len;) {
            ssize_t n = write(fd, (const char *)data + done, len - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                vcr_error_errno(err, "write `%s`", tmp);
                unlink(tmp);
                return -1;
            }
            done += (size_t)n;
        }
        if (fsync(fd) < 0) {
            vcr_error_errno(err, "fsync `%s`", tmp);
            unlink(tmp);
            return -1;
        }
    }
    if (rename(tmp, path) < 0) {
        vcr_error_errno(err, "rename `%s` to `%s`", tmp, path);
        unlink(tmp);
        return -1;
    }
    return fsync_dir_of(path, err);
}
