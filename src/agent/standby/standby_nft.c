/* CRIU 3.17's nftables network lock, made to survive a migration.
 *
 * CRIU locks a container's network for the dump in a table of its own,
 * `inet CRIU-PID` (PID: the dumped root's pid in the source VM), and dumps
 * the network namespace's ruleset (`nft list ruleset`, nftables-N.img) while
 * that table is in it.  The restore recreates the ruleset, lock table
 * included, then locks and unlocks under a table named after the restored
 * root's pid, which differs: the dumped lock would stay and drop every packet
 * of the restored container (fixed in later CRIUs, which record the name).
 * The target drops the dumped lock tables from the ruleset image before the
 * restore.  The images are untrusted (another VM's): only top-level blocks
 * that open with exactly `table inet CRIU-DIGITS {` are removed, up to the
 * first line that is exactly `}`. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/standby/standby.h"
#include "common/cleanup.h"

/* The most a ruleset image may hold here (a container's own rules). */
#define NFT_IMAGE_MAX (16u << 20)

static bool is_lock_table_line(const char *line, size_t n)
{
    static const char head[] = "table inet CRIU-";
    size_t h = sizeof(head) - 1;
    if (n < h + 3 || memcmp(line, head, h) != 0 || memcmp(line + n - 2, " {", 2) != 0)
        return false;
    for (size_t i = h; i < n - 2; i++)
        if (line[i] < '0' || line[i] > '9')
            return false;
    return true;
}

size_t standby_nft_drop_lock_tables(char *text, size_t len)
{
    size_t out = 0, pos = 0;
    bool skipping = false;
    while (pos < len) {
        char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        size_t with_nl = nl ? n + 1 : n;
        if (!skipping && is_lock_table_line(text + pos, n))
            skipping = true;
        else if (skipping && n == 1 && text[pos] == '}')
            skipping = false;
        else if (!skipping) {
            memmove(text + out, text + pos, with_nl);
            out += with_nl;
        }
        pos += with_nl;
    }
    return out;
}

static int drop_in_file(int dfd, const char *images, const char *name, vcr_error_t *err)
{
    cleanup_close int fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s/%s`", images, name);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "stat `%s/%s`", images, name);
    if (!S_ISREG(st.st_mode) || st.st_size > NFT_IMAGE_MAX)
        return vcr_error_make(err, EINVAL, "`%s/%s`: not a regular file of at most %u bytes",
                              images, name, NFT_IMAGE_MAX);
    size_t len = (size_t)st.st_size;
    cleanup_free char *text = malloc(len + 1);
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, text + got, len - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return vcr_error_make(err, r < 0 ? errno : EIO, "read `%s/%s`", images, name);
        got += (size_t)r;
    }
    size_t kept = standby_nft_drop_lock_tables(text, len);
    if (kept == len)
        return 0;
    /* In place: the unpacked tree is this restore's alone and thrown away
     * after it, so no copy, no fsync inside the downtime. */
    for (size_t done = 0; done < kept;) {
        ssize_t w = pwrite(fd, text + done, kept - done, (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return vcr_error_make(err, w < 0 ? errno : EIO, "write `%s/%s`", images, name);
        done += (size_t)w;
    }
    if (ftruncate(fd, (off_t)kept) < 0)
        return vcr_error_errno(err, "truncate `%s/%s`", images, name);
    return 0;
}

int standby_images_drop_nft_lock(const char *images, vcr_error_t *err)
{
    cleanup_close int dfd = open(images, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return vcr_error_errno(err, "open `%s`", images);
    return standby_images_each(dfd, images, "nftables", drop_in_file, err);
}
