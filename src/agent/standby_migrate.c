/* Migration orders' members, image chunks and paths (see standby_migrate.h). */
#include "agent/standby_migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/warm_state.h"
#include "common/cleanup.h"

const char *standby_phase_name(enum standby_phase phase)
{
    return phase == STANDBY_PHASE_PRE ? "pre" : "final";
}

int standby_migrate_paths(const char *base, const char *name, enum standby_phase phase,
                          struct standby_migrate_paths *p, vcr_error_t *err)
{
    if (!standby_valid_name(name))
        return vcr_error_make(err, EINVAL, "`%.80s` is not a container name", name);
    int n = snprintf(p->dir, sizeof(p->dir), "%s/%s", base, name);
    if (n < 0 || (size_t)n >= sizeof(p->dir))
        return vcr_error_make(err, ENAMETOOLONG, "container `%s`: migration path too long", name);
    snprintf(p->images, sizeof(p->images), "%s/%s", p->dir, standby_phase_name(phase));
    snprintf(p->tar, sizeof(p->tar), "%s/%s.tar", p->dir, standby_phase_name(phase));
    snprintf(p->pre, sizeof(p->pre), "%s/pre", p->dir);
    return 0;
}

static int get_name(json_t *msg, char out[65], vcr_error_t *err)
{
    json_t *v = json_object_get(msg, "name");
    if (v == NULL || json_is_null(v))
        return vcr_error_make(err, EINVAL, "`name` is missing; expected a container name");
    if (!json_is_string(v) || !standby_valid_name(json_string_value(v)))
        return vcr_error_make(err, EINVAL,
                              "name: `%.80s` is not a name; allowed: 1..64 of letters, digits, "
                              "'.', '_', '-'",
                              json_is_string(v) ? json_string_value(v) : "(not a string)");
    snprintf(out, 65, "%s", json_string_value(v));
    return 0;
}

static int get_phase(json_t *msg, enum standby_phase *phase, vcr_error_t *err)
{
    json_t *v = json_object_get(msg, "phase");
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (s && strcmp(s, "pre") == 0)
        *phase = STANDBY_PHASE_PRE;
    else if (s && strcmp(s, "final") == 0)
        *phase = STANDBY_PHASE_FINAL;
    else
        return vcr_error_make(err, EINVAL, "phase: `%.40s` is not a phase; allowed: pre, final",
                              v == NULL ? "(missing)"
                              : s       ? s
                                        : "(not a string)");
    return 0;
}

/* A non-negative integer member within [min, max]. */
static int get_uint(json_t *msg, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                    vcr_error_t *err)
{
    json_t *v = json_object_get(msg, key);
    if (v == NULL || json_is_null(v))
        return vcr_error_make(err, EINVAL, "`%s` is missing; expected an integer %llu..%llu", key,
                              (unsigned long long)min, (unsigned long long)max);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max) {
        char shown[32];
        if (json_is_integer(v))
            snprintf(shown, sizeof(shown), "%lld", (long long)json_integer_value(v));
        else
            snprintf(shown, sizeof(shown), "(not an integer)");
        return vcr_error_make(err, EINVAL, "%s: `%s` is out of range; allowed: %llu..%llu", key,
                              shown, (unsigned long long)min, (unsigned long long)max);
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int standby_checkpoint_from_json(json_t *msg, struct standby_checkpoint_order *o, vcr_error_t *err)
{
    struct standby_checkpoint_order c = {0};
    if (get_name(msg, c.name, err) < 0 || get_phase(msg, &c.phase, err) < 0)
        return -1;
    *o = c;
    return 0;
}

int standby_image_read_from_json(json_t *msg, struct standby_image_read *rq, vcr_error_t *err)
{
    struct standby_image_read r = {0};
    uint64_t length = 0;
    if (get_name(msg, r.name, err) < 0 || get_phase(msg, &r.phase, err) < 0 ||
        get_uint(msg, "offset", 0, INT64_MAX, &r.offset, err) < 0 ||
        get_uint(msg, "length", 1, STANDBY_CHUNK_MAX, &length, err) < 0)
        return -1;
    r.length = (size_t)length;
    *rq = r;
    return 0;
}

json_t *standby_image_read(const char *base, const struct standby_image_read *rq, vcr_error_t *err)
{
    struct standby_migrate_paths p;
    if (standby_migrate_paths(base, rq->name, rq->phase, &p, err) < 0)
        return NULL;
    if (access(p.tar, F_OK) < 0 && errno == ENOENT)
        return vcr_error_make(err, ENOENT,
                              "container `%s`: no %s image (`%s`): container_checkpoint it first",
                              rq->name, standby_phase_name(rq->phase), p.tar),
               NULL;
    return standby_chunk_read(p.tar, rq->offset, rq->length, err);
}

int standby_chunk_range_from_json(json_t *msg, uint64_t *offset, size_t *length, vcr_error_t *err)
{
    uint64_t off = 0, len = 0;
    if (get_uint(msg, "offset", 0, INT64_MAX, &off, err) < 0 ||
        get_uint(msg, "length", 1, STANDBY_CHUNK_MAX, &len, err) < 0)
        return -1;
    *offset = off;
    *length = (size_t)len;
    return 0;
}

int standby_open_regular(const char *path, struct stat *st, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", path);
    if (fstat(fd, st) < 0)
        return vcr_error_errno(err, "stat `%s`", path);
    if (!S_ISREG(st->st_mode))
        return vcr_error_make(err, EPERM, "`%s` is not a regular file; refused", path);
    return steal_fd(&fd);
}

json_t *standby_chunk_read(const char *path, uint64_t offset, size_t length, vcr_error_t *err)
{
    /* Never read through a symbolic link: the file is sent to the server. */
    struct stat st;
    cleanup_close int fd = standby_open_regular(path, &st, err);
    if (fd < 0)
        return NULL;
    uint64_t size = (uint64_t)st.st_size;
    if (offset > size)
        return vcr_error_make(err, EINVAL, "offset: `%llu` is past the end of `%s` (%llu bytes)",
                              (unsigned long long)offset, path, (unsigned long long)size),
               NULL;
    cleanup_free unsigned char *buf = malloc(length);
    if (buf == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    size_t got = 0;
    while (got < length && offset + got < size) {
        ssize_t n = pread(fd, buf + got, length - got, (off_t)(offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "read `%s`", path), NULL;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    cleanup_free char *data = standby_base64_encode(buf, got);
    if (data == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    return json_pack("{s:s, s:b, s:I}", "data", data, "eof", offset + got >= size, "bytes",
                     (json_int_t)size);
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F')))
            return false;
    return true;
}

int standby_image_write_from_json(json_t *msg, struct standby_image_write *w, vcr_error_t *err)
{
    struct standby_image_write c = {0};
    if (get_name(msg, c.name, err) < 0 || get_phase(msg, &c.phase, err) < 0 ||
        standby_chunk_from_json(msg, &c, err) < 0)
        return -1;
    *w = c;
    return 0;
}

int standby_chunk_from_json(json_t *msg, struct standby_image_write *w, vcr_error_t *err)
{
    struct standby_image_write c = *w;
    if (get_uint(msg, "offset", 0, INT64_MAX, &c.offset, err) < 0)
        return -1;
    json_t *last = json_object_get(msg, "last");
    if (last && !json_is_boolean(last))
        return vcr_error_make(err, EINVAL, "last: expected true or false");
    c.last = json_is_true(last);
    if (c.last) {
        json_t *sum = json_object_get(msg, "sha256");
        if (get_uint(msg, "bytes", 0, INT64_MAX, &c.bytes, err) < 0)
            return vcr_error_wrap(err, "the last chunk needs the file's size");
        if (!json_is_string(sum) || !is_hex64(json_string_value(sum)))
            return vcr_error_make(err, EINVAL,
                                  "sha256: `%.80s` is not a SHA-256; the last chunk needs the "
                                  "file's digest, 64 hex digits",
                                  json_is_string(sum) ? json_string_value(sum)
                                  : sum               ? "(not a string)"
                                                      : "(missing)");
        for (int i = 0; i < 64; i++)
            c.sha256[i] = (char)(json_string_value(sum)[i] | 0x20); /* lower case */
        c.sha256[64] = '\0';
    }
    json_t *data = json_object_get(msg, "data");
    if (!json_is_string(data))
        return vcr_error_make(err, EINVAL, "`data` is missing; expected base64 text");
    if (json_string_length(data) > (STANDBY_CHUNK_MAX / 3 + 1) * 4)
        return vcr_error_make(err, EINVAL,
                              "data: %zu characters of base64; at most %d bytes a "
                              "chunk",
                              json_string_length(data), STANDBY_CHUNK_MAX);
    if (standby_base64_decode(json_string_value(data), &c.data, &c.len, err) < 0)
        return vcr_error_wrap(err, "data");
    if (c.len > STANDBY_CHUNK_MAX) {
        free(c.data);
        return vcr_error_make(err, EINVAL, "data: %zu bytes; at most %d bytes a chunk", c.len,
                              STANDBY_CHUNK_MAX);
    }
    *w = c;
    return 0;
}

void standby_image_write_release(struct standby_image_write *w)
{
    free(w->data);
    w->data = NULL;
    w->len = 0;
}

/* A directory of this agent's: made 0700 if missing, opened without
 * following a symbolic link, and refused unless it is a directory owned by
 * this user that nobody else may write to.  Its fd, or -1 with *err. */
static int private_dir_at(int at, const char *name, const char *shown, vcr_error_t *err)
{
    if (mkdirat(at, name, 0700) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", shown);
    cleanup_close int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", shown);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "stat `%s`", shown);
    if (st.st_uid != geteuid() || (st.st_mode & 022))
        return vcr_error_make(err, EPERM,
                              "`%s` is owned by uid %u with mode %04o: not a private directory "
                              "of this agent (uid %u, nobody else writing); refused",
                              shown, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                              (unsigned)geteuid());
    return steal_fd(&fd);
}

json_t *standby_image_write(const char *base, const struct standby_image_write *w, vcr_error_t *err)
{
    struct standby_migrate_paths p;
    if (standby_migrate_paths(base, w->name, w->phase, &p, err) < 0)
        return NULL;
    /* BASE's parents (/var/lib/vcr) exist in the image; BASE and NAME may not. */
    cleanup_close int base_fd = private_dir_at(AT_FDCWD, base, base, err);
    if (base_fd < 0)
        return NULL;
    cleanup_close int dir_fd = private_dir_at(base_fd, w->name, p.dir, err);
    if (dir_fd < 0)
        return NULL;
    return standby_chunk_write_at(dir_fd, strrchr(p.tar, '/') + 1, p.tar, w, err);
}

int standby_migrate_dir_open(const char *base, const char *name, vcr_error_t *err)
{
    struct standby_migrate_paths p;
    if (standby_migrate_paths(base, name, STANDBY_PHASE_PRE, &p, err) < 0)
        return -1;
    cleanup_close int base_fd = private_dir_at(AT_FDCWD, base, base, err);
    if (base_fd < 0)
        return -1;
    return private_dir_at(base_fd, name, p.dir, err);
}

/* The file a chunk goes to.  The first chunk makes it anew: whatever had its
 * name (a file, a symbolic link planted by an archive) is removed and the
 * file created with O_EXCL, never followed.  A later chunk reopens it without
 * following a link and only if it is still a regular file of this user with
 * one name, so that it cannot have become someone else's file. */
static int chunk_open(int dir_fd, const char *file, const char *path, bool first, vcr_error_t *err)
{
    int flags = O_WRONLY | O_NOFOLLOW | O_CLOEXEC;
    if (first) {
        if (unlinkat(dir_fd, file, 0) < 0 && errno != ENOENT)
            return vcr_error_errno(err, "remove `%s`", path);
        flags |= O_CREAT | O_EXCL;
    }
    cleanup_close int fd = openat(dir_fd, file, flags, 0600);
    if (fd < 0)
        return vcr_error_errno(err, "open `%s`", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "stat `%s`", path);
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1)
        return vcr_error_make(
            err, EPERM, "`%s` is not a regular file of this agent's with one name; refused", path);
    return steal_fd(&fd);
}

json_t *standby_chunk_write(const char *path, const struct standby_image_write *w, vcr_error_t *err)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    cleanup_close int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return vcr_error_errno(err, "open `%s`", dir), NULL;
    return standby_chunk_write_at(dir_fd, slash ? slash + 1 : path, path, w, err);
}

json_t *standby_chunk_write_at(int dir_fd, const char *file, const char *path,
                               const struct standby_image_write *w, vcr_error_t *err)
{
    cleanup_close int fd = chunk_open(dir_fd, file, path, w->offset == 0, err);
    if (fd < 0)
        return NULL;
    size_t done = 0;
    while (done < w->len) {
        ssize_t n = pwrite(fd, w->data + done, w->len - done, (off_t)(w->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "write `%s` at %llu", path,
                                   (unsigned long long)(w->offset + done)),
                   NULL;
        done += (size_t)n;
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return vcr_error_errno(err, "stat `%s`", path), NULL;
    if (w->last) {
        if ((uint64_t)st.st_size != w->bytes)
            return vcr_error_make(err, EIO, "bytes: `%s` has %llu bytes, the sender said %llu",
                                  path, (unsigned long long)st.st_size,
                                  (unsigned long long)w->bytes),
                   NULL;
        char sum[WARM_STATE_HEX_LEN + 1];
        uint64_t size = 0;
        if (warm_state_digest(path, sum, &size, err) < 0)
            return NULL;
        if (strcmp(sum, w->sha256) != 0)
            return vcr_error_make(err, EIO, "sha256: `%s` has SHA-256 %s, the sender said %s", path,
                                  sum, w->sha256),
                   NULL;
    }
    return json_pack("{s:I}", "bytes", (json_int_t)st.st_size);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    return rc < 0 && errno != ENOENT ? -1 : 0;
}

int standby_remove_tree(const char *path, vcr_error_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : vcr_error_errno(err, "stat `%s`", path);
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? vcr_error_errno(err, "remove `%s`", path) : 0;
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return vcr_error_errno(err, "remove `%s`", path);
    return 0;
}

int standby_migrate_cleanup(const char *base, const char *name, vcr_error_t *err)
{
    struct standby_migrate_paths p;
    if (standby_migrate_paths(base, name, STANDBY_PHASE_FINAL, &p, err) < 0)
        return -1;
    return standby_remove_tree(p.dir, err);
}

char *standby_base64_encode(const unsigned char *buf, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        return NULL;
    /* EVP_EncodeBlock takes an int: chunks are at most STANDBY_CHUNK_MAX. */
    EVP_EncodeBlock((unsigned char *)out, buf, (int)len);
    return out;
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int standby_base64_decode(const char *text, unsigned char **out, size_t *len, vcr_error_t *err)
{
    size_t n = strlen(text);
    *out = NULL;
    *len = 0;
    if (n % 4 != 0)
        return vcr_error_make(err, EINVAL, "%zu characters is not base64 (a multiple of 4)", n);
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_b64(text[i]) && pad == 0)
            continue;
        if (text[i] == '=' && i + 2 >= n) {
            pad++;
            continue;
        }
        return vcr_error_make(err, EINVAL, "character %zu (`%c`) is not base64", i,
                              text[i] >= 0x20 && text[i] < 0x7f ? text[i] : '?');
    }
    if (n == 0)
        return 0;
    /* One spelling per byte string: the bits the padding leaves over are 0
     * (RFC 4648 section 3.5), so "QR==" is not another "QQ==". */
    if (pad) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t v = (size_t)(strchr(alphabet, text[n - pad - 1]) - alphabet);
        if (v & (pad == 1 ? 0x3 : 0xf))
            return vcr_error_make(err, EINVAL,
                                  "character %zu (`%c`) leaves bits set beside the padding: not "
                                  "canonical base64",
                                  n - pad - 1, text[n - pad - 1]);
    }
    unsigned char *buf = malloc(n / 4 * 3);
    if (buf == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    int got = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
    if (got < 0 || (size_t)got < pad) {
        free(buf);
        return vcr_error_make(err, EINVAL, "not base64");
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    *len = (size_t)got - pad;
    *out = buf;
    return 0;
}

/* "(00.123456) Error (criu/cr-dump.c:1234): msg" -> "Error (criu/...): msg":
 * the timestamp (CRIU's -v4 and up; LXC's restores run without it) and, in a
 * restore's log, the task's "   PID: " after it or alone, blanks first. */
static const char *without_timestamp(const char *line)
{
    const char *end = line;
    if (line[0] == '(') {
        const char *close = strchr(line, ')');
        if (close != NULL)
            end = close + 1;
    }
    const char *text = end;
    while (*text == ' ' || *text == '\t')
        text++;
    size_t digits = strspn(text, "0123456789");
    if (digits > 0 && text[digits] == ':' && text[digits + 1] == ' ')
        return text + digits + 2;
    return end == line ? line : text;
}

void standby_criu_log_reason(const char *log_text, char *out, size_t size)
{
    /* The first Error is the cause (a restore's later ones are its
     * consequences: the root task's exit, "Restoring FAILED"); the last two
     * say where it ended. */
    enum { LAST = 2 };
    const char *first = NULL, *starts[LAST], *last = NULL;
    size_t first_len = 0, lens[LAST], n = 0, last_len = 0;
    out[0] = '\0';
    for (const char *line = log_text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *text = without_timestamp(line);
        size_t text_len = len - (size_t)(text - line);
        if (text_len > 0) {
            last = text;
            last_len = text_len;
            if (strncmp(text, "Error", 5) == 0 && first == NULL) {
                first = text;
                first_len = text_len;
            } else if (strncmp(text, "Error", 5) == 0) {
                if (n == LAST) {
                    starts[0] = starts[1];
                    lens[0] = lens[1];
                    n--;
                }
                starts[n] = text;
                lens[n] = text_len;
                n++;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    const char *parts[1 + LAST];
    size_t part_lens[1 + LAST], k = 0;
    if (first) {
        parts[k] = first;
        part_lens[k++] = first_len;
    } else if (last) {
        parts[k] = last;
        part_lens[k++] = last_len;
    }
    for (size_t i = 0; i < n; i++) {
        parts[k] = starts[i];
        part_lens[k++] = lens[i];
    }
    size_t used = 0;
    for (size_t i = 0; i < k && used + 1 < size; i++) {
        int w =
            snprintf(out + used, size - used, "%s%.*s", i ? "; " : "", (int)part_lens[i], parts[i]);
        if (w < 0)
            break;
        used += (size_t)w < size - used ? (size_t)w : size - used - 1;
    }
}

int standby_garp_frame(const unsigned char mac[6], const char *address,
                       unsigned char frame[STANDBY_GARP_LEN], vcr_error_t *err)
{
    struct in_addr ip;
    if (inet_pton(AF_INET, address, &ip) != 1)
        return vcr_error_make(err, EINVAL, "`%.40s` is not an IPv4 address", address);
    unsigned char *f = frame;
    memset(f, 0xff, 6); /* Ethernet: broadcast */
    memcpy(f + 6, mac, 6);
    f[12] = 0x08, f[13] = 0x06; /* ARP */
    unsigned char *a = f + 14;
    a[0] = 0x00, a[1] = 0x01; /* hardware: Ethernet */
    a[2] = 0x08, a[3] = 0x00; /* protocol: IPv4 */
    a[4] = 6, a[5] = 4;
    a[6] = 0x00, a[7] = 0x01; /* request */
    memcpy(a + 8, mac, 6);
    memcpy(a + 14, &ip.s_addr, 4);
    memset(a + 18, 0, 6); /* target MAC: unknown, as in a gratuitous request */
    memcpy(a + 24, &ip.s_addr, 4);
    return 0;
}
