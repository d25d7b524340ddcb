/* Challenge-response with a shared key (docs/protocol.md "Authentication"). */
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

static void to_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * n] = '\0';
}

int proto_auth_compute(const void *key, size_t key_len, const char *nonce, char *out_hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    out_hex[0] = '\0';
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)nonce, strlen(nonce), md,
             &md_len) == NULL ||
        md_len * 2 != PROTO_AUTH_HEX_LEN)
        return -1;
    to_hex(md, md_len, out_hex);
    return 0;
}

bool proto_auth_verify(const void *key, size_t key_len, const char *nonce, const char *auth_hex)
{
    if (auth_hex == NULL || strlen(auth_hex) != PROTO_AUTH_HEX_LEN)
        return false;
    char expected[PROTO_AUTH_HEX_LEN + 1];
    if (proto_auth_compute(key, key_len, nonce, expected) < 0)
        return false;
    char given[PROTO_AUTH_HEX_LEN + 1];
    for (size_t i = 0; i <= PROTO_AUTH_HEX_LEN; i++)
        given[i] =
            (auth_hex[i] >= 'A' && auth_hex[i] <= 'F') ? (char)(auth_hex[i] + 32) : auth_hex[i];
    /* Constant time, so that timing does not reveal how much of a guess was right. */
    return CRYPTO_memcmp(expected, given, PROTO_AUTH_HEX_LEN) == 0;
}

int proto_auth_new_nonce(char *out, vcr_error_t *err)
{
    unsigned char bytes[PROTO_NONCE_HEX_LEN / 2];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1)
        return vcr_error_make(err, EIO, "no random bytes for an authentication nonce");
    to_hex(bytes, sizeof(bytes), out);
    return 0;
}

int proto_auth_load_key(const char *path, char **key, size_t *key_len, vcr_error_t *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vcr_error_errno(err, "key file `%s`", path);
    /* Room for trailing blanks after a key of the maximum length: they are cut
     * before the length is checked. */
    size_t cap = PROTO_KEY_MAX_LEN + 64;
    cleanup_free char *buf = malloc(cap + 1);
    if (buf == NULL)
        return vcr_error_errno(err, "key file `%s`", path);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "key file `%s`", path);
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap)
            return vcr_error_make(err, EINVAL, "key file `%s`: longer than %u bytes", path,
                                  PROTO_KEY_MAX_LEN);
    }
    while (len > 0 && strchr("\n\r \t", buf[len - 1]) != NULL)
        len--;
    if (len < PROTO_KEY_MIN_LEN || len > PROTO_KEY_MAX_LEN)
        return vcr_error_make(err, EINVAL,
                              "key file `%s`: the key is %zu bytes; allowed: %u..%u bytes "
                              "(trailing newlines and blanks are not part of it)",
                              path, len, PROTO_KEY_MIN_LEN, PROTO_KEY_MAX_LEN);
    buf[len] = '\0';
    *key_len = len;
    *key = steal_pointer(&buf);
    return 0;
}
