/* Tar archive checks before unpacking (standby_archive.h).  The layout read
 * here is POSIX ustar (IEEE Std 1003.1, "pax" format) with GNU tar's long
 * name members ('L', 'K') and pax extended headers ('x'), which is what
 * GNU tar writes for the migration archives (`--xattrs` adds pax records). */
#include "agent/standby/standby_archive.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"

#define BLOCK        512
#define NAME_MAX_LEN 4096

static const char *const pre_tops[] = {"pre", NULL};
static const char *const final_tops[] = {"final", "delta", "config", NULL};

const struct standby_archive_policy standby_archive_pre = {.tops = pre_tops};
const struct standby_archive_policy standby_archive_final = {
    .tops = final_tops,
    .links_under = "delta",
    .link_name = "final/parent",
    .link_target = "../pre",
};

/* An octal field (spaces or NULs around the digits), or GNU's base-256 (the
 * first byte's high bit set); -1 when it is neither or does not fit. */
static int64_t parse_number(const unsigned char *f, size_t n)
{
    if (f[0] & 0x80) {
        if (f[0] != 0x80) /* negative, or more than 2^56 */
            return -1;
        uint64_t v = 0;
        for (size_t i = 1; i < n; i++) {
            if (v >> 55)
                return -1;
            v = v << 8 | f[i];
        }
        return v > INT64_MAX ? -1 : (int64_t)v;
    }
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    int64_t v = 0;
    size_t digits = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v > (INT64_MAX >> 3))
            return -1;
        v = v * 8 + (f[i] - '0');
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return -1;
    return digits ? v : -1;
}

static bool checksum_ok(const unsigned char *h)
{
    int64_t want = parse_number(h + 148, 8);
    uint64_t u = 0;
    int64_t s = 0;
    for (size_t i = 0; i < BLOCK; i++) {
        unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];
        u += c;
        s += (signed char)c;
    }
    return want >= 0 && ((uint64_t)want == u || want == s);
}

static bool all_zero(const unsigned char *h)
{
    for (size_t i = 0; i < BLOCK; i++)
        if (h[i])
            return false;
    return true;
}

/* A fixed-size header field as a string (it need not end with a NUL). */
static void field_string(const unsigned char *f, size_t n, char *out)
{
    size_t len = strnlen((const char *)f, n);
    memcpy(out, f, len);
    out[len] = '\0';
}

/* A long name's bytes: no NUL inside except at the end, at most
 * NAME_MAX_LEN; false otherwise. */
static bool copy_long(const unsigned char *data, size_t len, char *out)
{
    while (len > 0 && data[len - 1] == '\0')
        len--;
    if (len == 0 || len > NAME_MAX_LEN || memchr(data, '\0', len))
        return false;
    memcpy(out, data, len);
    out[len] = '\0';
    return true;
}

/* pax records "LEN KEY=VALUE\n": path, linkpath and size are taken. */
static int parse_pax(const unsigned char *d, size_t len, char *path, char *link, int64_t *size,
                     vcr_error_t *err)
{
    size_t off = 0;
    while (off < len) {
        if (d[off] == '\0') /* padding after the last record */
            break;
        size_t rec = 0, i = off;
        while (i < len && d[i] >= '0' && d[i] <= '9' && rec < len)
            rec = rec * 10 + (size_t)(d[i++] - '0');
        if (i == off || i >= len || d[i] != ' ' || rec <= i - off + 1 || rec > len - off ||
            d[off + rec - 1] != '\n')
            return vcr_error_make(err, EINVAL, "a bad pax record at byte %zu of its header", off);
        const unsigned char *kv = d + i + 1, *end = d + off + rec - 1;
        const unsigned char *eq = memchr(kv, '=', (size_t)(end - kv));
        if (eq == NULL)
            return vcr_error_make(err, EINVAL, "a pax record without `=`");
        size_t klen = (size_t)(eq - kv), vlen = (size_t)(end - eq - 1);
        const unsigned char *v = eq + 1;
        if (klen == 4 && memcmp(kv, "path", 4) == 0) {
            if (!copy_long(v, vlen, path))
                return vcr_error_make(err, EINVAL,
                                      "a pax path that is empty, too long or holds "
                                      "a NUL");
        } else if (klen == 8 && memcmp(kv, "linkpath", 8) == 0) {
            if (!copy_long(v, vlen, link))
                return vcr_error_make(err, EINVAL,
                                      "a pax linkpath that is empty, too long or "
                                      "holds a NUL");
        } else if (klen == 4 && memcmp(kv, "size", 4) == 0) {
            int64_t s = 0;
            size_t k = 0;
            for (; k < vlen && v[k] >= '0' && v[k] <= '9' && s < INT64_MAX / 10 - 10; k++)
                s = s * 10 + (v[k] - '0');
            if (k == 0 || k != vlen)
                return vcr_error_make(err, EINVAL, "a pax size that is not a number");
            *size = s;
        }
        off += rec;
    }
    return 0;
}

/* name without empty and `.` components, into out; false for an absolute
 * name, a `..` component or nothing left. */
static bool normalize(const char *name, char *out, size_t size)
{
    if (name[0] == '/')
        return false;
    size_t used = 0;
    const char *p = name;
    while (*p) {
        size_t n = strcspn(p, "/");
        if ((n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (used + n + 2 > size)
                return false;
            if (used)
                out[used++] = '/';
            memcpy(out + used, p, n);
            used += n;
        }
        p += n;
        p += *p == '/';
    }
    out[used] = '\0';
    return used > 0;
}

static bool under(const char *name, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(name, dir, n) == 0 && name[n] == '/';
}

static bool top_allowed(const char *name, const char *const *tops)
{
    for (const char *const *t = tops; *t; t++)
        if (strcmp(name, *t) == 0 || under(name, *t))
            return true;
    return false;
}

/* The symbolic links seen so far: no later member may lie below one. */
struct links {
    char **names;
    size_t n, cap;
};

static void links_free(struct links *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

static int links_add(struct links *l, const char *name, vcr_error_t *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **names = realloc(l->names, cap * sizeof(*names));
        if (names == NULL)
            return vcr_error_make(err, ENOMEM, "out of memory");
        l->names = names;
        l->cap = cap;
    }
    if ((l->names[l->n] = strdup(name)) == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    l->n++;
    return 0;
}

static const char *below_link(const struct links *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (under(name, l->names[i]))
            return l->names[i];
    return NULL;
}

static const char *type_name(char t)
{
    switch (t) {
    case '1':
        return "a hard link";
    case '2':
        return "a symbolic link";
    case '3':
        return "a character device";
    case '4':
        return "a block device";
    case '6':
        return "a FIFO";
    default:
        return "a member of an unsupported type";
    }
}

/* One member (header h already checked): EPERM when policy refuses it. */
static int check_member(const struct standby_archive_policy *pol, struct links *links,
                        const unsigned char *h, const char *raw_name, const char *link,
                        int64_t size, vcr_error_t *err)
{
    char name[NAME_MAX_LEN + 2];
    char type = (char)h[156];
    if (!normalize(raw_name, name, sizeof(name)))
        return vcr_error_make(err, EPERM,
                              "member `%.200s`: an absolute name, a `..` component or no name "
                              "at all; refused",
                              raw_name);
    if (!top_allowed(name, pol->tops)) {
        char tops[100] = "";
        size_t used = 0;
        for (const char *const *t = pol->tops; *t && used < sizeof(tops); t++)
            used +=
                (size_t)snprintf(tops + used, sizeof(tops) - used, "%s%s/", used ? ", " : "", *t);
        return vcr_error_make(err, EPERM, "member `%.200s` is outside %s; refused", name, tops);
    }
    const char *link_dir = below_link(links, name);
    if (link_dir)
        return vcr_error_make(err, EPERM,
                              "member `%.200s` lies below the symbolic link `%.200s`; refused",
                              name, link_dir);
    if (type == '0' || type == '\0' || type == '7' || type == '5')
        return 0;
    if (size != 0)
        return vcr_error_make(err, EPERM, "member `%.200s`: %s with %lld bytes of data; refused",
                              name, type_name(type), (long long)size);
    bool in_links_dir = pol->links_under && under(name, pol->links_under);
    if (type == '2') {
        bool the_one = pol->link_name && strcmp(name, pol->link_name) == 0 &&
                       strcmp(link, pol->link_target) == 0;
        if (!the_one && !in_links_dir)
            return vcr_error_make(err, EPERM,
                                  "member `%.200s` is a symbolic link (to `%.200s`); refused", name,
                                  link);
        return links_add(links, name, err);
    }
    if (type == '6' && in_links_dir)
        return 0;
    if (type == '3' && in_links_dir && parse_number(h + 329, 8) == 0 &&
        parse_number(h + 337, 8) == 0)
        return 0;
    if (type == '1')
        return vcr_error_make(err, EPERM, "member `%.200s` is a hard link (to `%.200s`); refused",
                              name, link);
    return vcr_error_make(err, EPERM, "member `%.200s` is %s (type `%c`); refused", name,
                          type_name(type), type >= 0x20 && type < 0x7f ? type : '?');
}

int standby_archive_check_mem(const unsigned char *buf, size_t len,
                              const struct standby_archive_policy *pol, vcr_error_t *err)
{
    /* What a long-name or pax header says about the next member. */
    cleanup_free char *long_name = malloc(NAME_MAX_LEN + 1);
    cleanup_free char *long_link = malloc(NAME_MAX_LEN + 1);
    if (long_name == NULL || long_link == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    long_name[0] = long_link[0] = '\0';
    int64_t pax_size = -1;
    struct links links = {0};
    size_t off = 0;
    int rc = 0, members = 0;
    for (;;) {
        if (len - off < BLOCK) {
            rc = vcr_error_make(err, EINVAL, "the archive ends without its end blocks (%zu bytes)",
                                len);
            break;
        }
        const unsigned char *h = buf + off;
        if (all_zero(h))
            break;
        if (!checksum_ok(h)) {
            rc = vcr_error_make(err, EINVAL, "a header with a bad checksum at byte %zu", off);
            break;
        }
        int64_t size = parse_number(h + 124, 12);
        char type = (char)h[156];
        if (pax_size >= 0 && type != 'x' && type != 'L' && type != 'K')
            size = pax_size;
        if (size < 0) {
            rc = vcr_error_make(err, EINVAL, "a header with a bad size at byte %zu", off);
            break;
        }
        off += BLOCK;
        uint64_t padded = ((uint64_t)size + BLOCK - 1) / BLOCK * BLOCK;
        if (padded > len - off) {
            rc = vcr_error_make(err, EINVAL, "a member of %lld bytes past the archive's end",
                                (long long)size);
            break;
        }
        const unsigned char *data = buf + off;
        off += (size_t)padded;
        if (type == 'L' || type == 'K') {
            if (!copy_long(data, (size_t)size, type == 'L' ? long_name : long_link)) {
                rc = vcr_error_make(err, EINVAL,
                                    "a long name that is empty, too long or holds "
                                    "a NUL");
                break;
            }
            continue;
        }
        if (type == 'x') {
            if (parse_pax(data, (size_t)size, long_name, long_link, &pax_size, err) < 0) {
                rc = -1;
                break;
            }
            continue;
        }
        char name[NAME_MAX_LEN + 1], link[NAME_MAX_LEN + 1];
        if (long_name[0]) {
            memcpy(name, long_name, strlen(long_name) + 1);
        } else {
            char base[101], prefix[156];
            field_string(h, 100, base);
            /* The prefix field only in POSIX ustar ("ustar\0"), not GNU's. */
            field_string(memcmp(h + 257, "ustar\0", 6) == 0 ? h + 345 : (const unsigned char *)"",
                         memcmp(h + 257, "ustar\0", 6) == 0 ? 155 : 1, prefix);
            snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] ? "/" : "", base);
        }
        if (long_link[0])
            memcpy(link, long_link, strlen(long_link) + 1);
        else
            field_string(h + 157, 100, link);
        if (check_member(pol, &links, h, name, link, size, err) < 0) {
            rc = -1;
            break;
        }
        members++;
        long_name[0] = long_link[0] = '\0';
        pax_size = -1;
    }
    links_free(&links);
    if (rc == 0 && members == 0)
        rc = vcr_error_make(err, EINVAL, "the archive holds no member");
    return rc;
}

int standby_archive_check_file(const char *path, const struct standby_archive_policy *policy,
                               vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "stat `%s`", path);
    if (!S_ISREG(st.st_mode))
        return vcr_error_make(err, EPERM, "`%s` is not a regular file", path);
    if (st.st_size == 0)
        return vcr_error_make(err, EINVAL, "`%s` is empty", path);
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        return vcr_error_errno(err, "mmap `%s`", path);
    int rc = standby_archive_check_mem(map, (size_t)st.st_size, policy, err);
    munmap(map, (size_t)st.st_size);
    return rc < 0 ? vcr_error_wrap(err, "`%s`", path) : 0;
}
