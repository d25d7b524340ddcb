/* Data copies: pack, check, unpack, and when they were taken (see data_image.h). */
#include "agent/data_image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "agent/standby/standby.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/durable.h"

#define DATA_BUF  (256 * 1024)
#define DATA_HOLE 4096

static void cleanup_md(EVP_MD_CTX **ctx)
{
    EVP_MD_CTX_free(*ctx);
}

static void hex(const unsigned char *md, unsigned len, char out[65])
{
    for (unsigned i = 0; i < len && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int data_path(const char *base, const char *service, const char *file, char *out, size_t size,
              vcr_error_t *err)
{
    if (!standby_valid_name(service))
        return vcr_error_make(err, EINVAL,
                              "service: `%.80s` is not a name; allowed: 1..64 of letters, "
                              "digits, '.', '_', '-'",
                              service);
    int n = file ? snprintf(out, size, "%s/%s/%s", base, service, file)
                 : snprintf(out, size, "%s/%s", base, service);
    if (n < 0 || (size_t)n >= size)
        return vcr_error_make(err, ENAMETOOLONG, "service `%s`: data path too long", service);
    return 0;
}

/* The whole of src through deflate into fd, hashing what is written. */
static int deflate_into(int in, const char *src, int out, const char *tmp, EVP_MD_CTX *md,
                        struct data_packed *res, vcr_error_t *err)
{
    cleanup_free unsigned char *ibuf = malloc(DATA_BUF);
    cleanup_free unsigned char *obuf = malloc(DATA_BUF);
    if (ibuf == NULL || obuf == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    z_stream z = {0};
    /* 15 + 16: a gzip stream (header and CRC), so `zcat` reads the file too. */
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return vcr_error_make(err, ENOMEM, "deflateInit2 failed");
    int rc = 0, flush = Z_NO_FLUSH;
    while (rc == 0 && flush != Z_FINISH) {
        ssize_t n = read(in, ibuf, DATA_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = vcr_error_errno(err, "read `%s`", src);
            break;
        }
        res->raw_bytes += (uint64_t)n;
        flush = n == 0 ? Z_FINISH : Z_NO_FLUSH;
        z.next_in = ibuf;
        z.avail_in = (uInt)n;
        do {
            z.next_out = obuf;
            z.avail_out = DATA_BUF;
            deflate(&z, flush);
            size_t have = DATA_BUF - z.avail_out;
            EVP_DigestUpdate(md, obuf, have);
            res->bytes += have;
            if (vcr_write_all(out, obuf, have, tmp, err) < 0) {
                rc = -1;
                break;
            }
        } while (z.avail_out == 0);
    }
    deflateEnd(&z);
    return rc;
}

int data_pack(const char *src, const char *dst, struct data_packed *out, vcr_error_t *err)
{
    int64_t t0 = vcr_mono_ms();
    struct data_packed res = {0};
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", dst) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return vcr_error_errno(err, "open `%s`", src);
    cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return vcr_error_errno(err, "create `%s`", tmp);
    __attribute__((cleanup(cleanup_md))) EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        return vcr_error_make(err, ENOMEM, "sha256: cannot start a digest");
    if (deflate_into(in, src, fd, tmp, md, &res, err) < 0 ||
        vcr_rename_durable(tmp, dst, err) < 0) {
        unlink(tmp);
        return vcr_error_wrap(err, "pack `%s`", src);
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(md, digest, &len);
    hex(digest, len, res.sha256);
    res.pack_ms = vcr_mono_ms() - t0;
    *out = res;
    return 0;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Writes len bytes at *pos, leaving 4 KiB blocks of zeros as holes. */
static int write_sparse(int fd, const unsigned char *buf, size_t len, uint64_t *pos,
                        const char *path, vcr_error_t *err)
{
    for (size_t off = 0; off < len;) {
        size_t n = len - off < DATA_HOLE ? len - off : DATA_HOLE;
        if (!all_zero(buf + off, n)) {
            size_t done = 0;
            while (done < n) {
                ssize_t w = pwrite(fd, buf + off + done, n - done, (off_t)(*pos + done));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0)
                    return vcr_error_errno(err, "write `%s`", path);
                done += (size_t)w;
            }
        }
        off += n;
        *pos += n;
    }
    return 0;
}

static int inflate_into(int in, const char *gz, int out, const char *tmp, uint64_t *raw,
                        vcr_error_t *err)
{
    cleanup_free unsigned char *ibuf = malloc(DATA_BUF);
    cleanup_free unsigned char *obuf = malloc(DATA_BUF);
    if (ibuf == NULL || obuf == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return vcr_error_make(err, ENOMEM, "inflateInit2 failed");
    int rc = 0, zr = Z_OK;
    uint64_t pos = 0;
    while (rc == 0 && zr != Z_STREAM_END) {
        ssize_t n = read(in, ibuf, DATA_BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = vcr_error_errno(err, "read `%s`", gz);
            break;
        }
        if (n == 0) {
            rc = vcr_error_make(err, EIO, "`%s` ends before its gzip stream does", gz);
            break;
        }
        z.next_in = ibuf;
        z.avail_in = (uInt)n;
        do {
            z.next_out = obuf;
            z.avail_out = DATA_BUF;
            zr = inflate(&z, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
                rc = vcr_error_make(err, EIO, "`%s` is not a gzip stream: %s", gz,
                                    z.msg ? z.msg : "inflate failed");
                break;
            }
            if (write_sparse(out, obuf, DATA_BUF - z.avail_out, &pos, tmp, err) < 0) {
                rc = -1;
                break;
            }
        } while (z.avail_out == 0 && zr != Z_STREAM_END);
    }
    inflateEnd(&z);
    if (rc == 0 && ftruncate(out, (off_t)pos) < 0)
        rc = vcr_error_errno(err, "truncate `%s`", tmp);
    *raw = pos;
    return rc;
}

int data_unpack(const char *gz, const char *sha256, const char *dst, uint64_t *raw_bytes,
                vcr_error_t *err)
{
    if (sha256) {
        char sum[WARM_STATE_HEX_LEN + 1];
        uint64_t size = 0;
        if (warm_state_digest(gz, sum, &size, err) < 0)
            return -1;
        if (strcasecmp(sum, sha256) != 0)
            return vcr_error_make(err, EIO, "sha256: `%s` has SHA-256 %s, the sender said %s", gz,
                                  sum, sha256);
    }
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", dst) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cleanup_close int in = open(gz, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return vcr_error_errno(err, "open `%s`", gz);
    cleanup_close int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return vcr_error_errno(err, "create `%s`", tmp);
    uint64_t raw = 0;
    if (inflate_into(in, gz, fd, tmp, &raw, err) < 0 || vcr_rename_durable(tmp, dst, err) < 0) {
        unlink(tmp);
        return vcr_error_wrap(err, "unpack `%s`", gz);
    }
    *raw_bytes = raw;
    return 0;
}

int data_taken_write(const char *dir, int64_t taken_ms, int64_t installed_ms, uint64_t bytes,
                     vcr_error_t *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/taken.json", dir);
    cleanup_json json_t *j =
        json_pack("{s:I, s:I, s:I}", "taken_ms", (json_int_t)taken_ms, "installed_ms",
                  (json_int_t)installed_ms, "bytes", (json_int_t)bytes);
    cleanup_free char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    return vcr_file_replace(path, text, strlen(text), err);
}

int data_taken_read(const char *dir, int64_t *taken_ms, vcr_error_t *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/taken.json", dir);
    json_error_t jerr;
    cleanup_json json_t *j = json_load_file(path, 0, &jerr);
    if (j == NULL) {
        if (access(path, F_OK) < 0)
            return vcr_error_make(err, ENOENT, "no data copy has reached this standby (`%s`)",
                                  path);
        return vcr_error_make(err, EIO, "`%s`: %s", path, jerr.text);
    }
    json_t *t = json_object_get(j, "taken_ms");
    if (!json_is_integer(t) || json_integer_value(t) < 0)
        return vcr_error_make(err, EIO, "`%s`: no taken_ms", path);
    *taken_ms = json_integer_value(t);
    return 0;
}
