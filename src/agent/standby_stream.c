/* Agent-to-agent transfer of a migration's files (see standby_stream.h). */
#include "agent/standby_stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "agent/standby/standby.h"
#include "agent/standby_migrate.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define STREAM_BUF (256 * 1024)
/* Connections waiting to be accepted: scanners or squatters queued ahead of
 * the sender must not fill the queue and get the sender refused. */
#define STREAM_BACKLOG 16

static int64_t or_default(int64_t ms, int64_t def)
{
    return ms > 0 ? ms : def;
}

static int get_text(json_t *msg, const char *key, char *out, size_t size, vcr_error_t *err)
{
    const char *s = json_string_value(json_object_get(msg, key));
    if (s == NULL || strlen(s) == 0 || strlen(s) >= size)
        return vcr_error_make(err, EINVAL, "`%s` is missing or too long", key);
    snprintf(out, size, "%s", s);
    return 0;
}

static int get_int(json_t *msg, const char *key, int64_t min, int64_t max, int64_t *out,
                   vcr_error_t *err)
{
    json_t *v = json_object_get(msg, key);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return vcr_error_make(err, EINVAL, "`%s`: expected an integer %lld..%lld", key,
                              (long long)min, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

int standby_stream_token_parse(const char *hex, unsigned char token[STANDBY_STREAM_TOKEN_BYTES],
                               vcr_error_t *err)
{
    if (hex == NULL || strlen(hex) != 2 * STANDBY_STREAM_TOKEN_BYTES)
        return vcr_error_make(err, EINVAL, "token: expected %d hex digits",
                              2 * STANDBY_STREAM_TOKEN_BYTES);
    for (int i = 0; i < STANDBY_STREAM_TOKEN_BYTES; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                return vcr_error_make(err, EINVAL, "token: expected %d hex digits",
                                      2 * STANDBY_STREAM_TOKEN_BYTES);
            v = v * 16 + (unsigned)d;
        }
        token[i] = (unsigned char)v;
    }
    return 0;
}

bool standby_stream_token_equal(const unsigned char *a, const unsigned char *b)
{
    return CRYPTO_memcmp(a, b, STANDBY_STREAM_TOKEN_BYTES) == 0;
}

int standby_stream_order_from_json(json_t *msg, bool send, struct standby_stream_order *o,
                                   vcr_error_t *err)
{
    struct standby_stream_order c = {0};
    const char *kind = json_string_value(json_object_get(msg, "kind"));
    int64_t bytes = 0, deadline = 0, port = 0;
    if (kind == NULL || (strcmp(kind, "image") != 0 && strcmp(kind, "data") != 0))
        return vcr_error_make(err, EINVAL, "kind: expected `image` or `data`");
    c.data = strcmp(kind, "data") == 0;
    if (get_text(msg, "name", c.name, sizeof(c.name), err) < 0)
        return -1;
    if (!standby_valid_name(c.name))
        return vcr_error_make(err, EINVAL, "name: `%.80s` is not a container name", c.name);
    if (c.data ? get_text(msg, "service", c.service, sizeof(c.service), err) < 0
               : get_text(msg, "phase", c.phase, sizeof(c.phase), err) < 0)
        return -1;
    if (!c.data && strcmp(c.phase, "pre") != 0 && strcmp(c.phase, "final") != 0)
        return vcr_error_make(err, EINVAL, "phase: `%s` is not a phase; allowed: pre, final",
                              c.phase);
    if (get_int(msg, "bytes", 1, INT64_MAX, &bytes, err) < 0 ||
        get_int(msg, "deadline_ms", 1, STANDBY_STREAM_DEADLINE_MAX_MS, &deadline, err) < 0 ||
        standby_stream_token_parse(json_string_value(json_object_get(msg, "token")), c.token, err) <
            0)
        return -1;
    c.bytes = (uint64_t)bytes;
    c.deadline_ms = deadline;
    if (send) {
        if (get_text(msg, "address", c.address, sizeof(c.address), err) < 0 ||
            get_int(msg, "port", 1, 65535, &port, err) < 0)
            return -1;
        c.port = (uint16_t)port;
    } else {
        const char *sum = json_string_value(json_object_get(msg, "sha256"));
        if (sum == NULL || strlen(sum) != 64 || strspn(sum, "0123456789abcdefABCDEF") != 64)
            return vcr_error_make(err, EINVAL, "sha256: expected 64 hex digits");
        for (int i = 0; i < 64; i++)
            c.sha256[i] = (char)(sum[i] | 0x20);
    }
    *o = c;
    return 0;
}

int standby_stream_listen(uint16_t *port, vcr_error_t *err)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    int one = 1, zero = 0;
    cleanup_close int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        /* Both families on one socket: the target's address may be either. */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_any;
        len = sizeof(*sin6);
    } else {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return vcr_error_errno(err, "socket");
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        len = sizeof(*sin);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, STREAM_BACKLOG) < 0)
        return vcr_error_errno(err, "listen for the stream");
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return vcr_error_errno(err, "getsockname");
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return steal_fd(&fd);
}

/* Waits until fd is ready for events, or the deadline (monotonic ms) passes,
 * or idle_ms (> 0; 0: no such bound) passes from now: a peer that moves no
 * byte for that long is taken as gone (its VM may have died: no FIN, no RST). */
static int wait_fd(int fd, short events, int64_t deadline, int64_t idle_ms, vcr_error_t *err)
{
    int64_t idle_by = idle_ms > 0 ? vcr_mono_ms() + idle_ms : deadline;
    bool idle = idle_by < deadline;
    if (idle)
        deadline = idle_by;
    for (;;) {
        int64_t left = deadline - vcr_mono_ms();
        if (left <= 0 && idle)
            return vcr_error_make(err, ETIMEDOUT, "stream: no byte moved for %lld ms",
                                  (long long)idle_ms);
        if (left <= 0)
            return vcr_error_make(err, ETIMEDOUT, "stream: no progress before the deadline");
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vcr_error_errno(err, "poll");
        if (n > 0)
            return 0;
    }
}

static int read_full(int fd, void *buf, size_t len, int64_t deadline, int64_t idle_ms,
                     vcr_error_t *err)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0)
            return vcr_error_make(err, EPIPE, "stream: the peer closed after %zu of %zu bytes", got,
                                  len);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return vcr_error_errno(err, "stream: read");
        if (wait_fd(fd, POLLIN, deadline, idle_ms, err) < 0)
            return -1;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len, int64_t deadline, int64_t idle_ms,
                      vcr_error_t *err)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
        if (n >= 0) {
            done += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return vcr_error_errno(err, "stream: send");
        if (wait_fd(fd, POLLOUT, deadline, idle_ms, err) < 0)
            return -1;
    }
    return 0;
}

/* A peer whose VM died answers nothing: unacknowledged bytes fail the socket
 * after idle_ms (TCP_USER_TIMEOUT), and keepalive probes catch it while this
 * end only waits (the sender for the verdict).  Best effort: the polls'
 * idle bound holds anyway. */
static void set_dead_peer_timeouts(int fd, int64_t idle_ms)
{
    unsigned user_timeout = (unsigned)idle_ms;
    int one = 1, idle_s = idle_ms >= 4000 ? (int)(idle_ms / 4000) : 1, interval = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
}

static void put_be64(unsigned char out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_be64(const unsigned char in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

static void answer(int fd, enum standby_stream_status status, int64_t deadline, int64_t idle_ms)
{
    unsigned char b = (unsigned char)status;
    cleanup_error vcr_error_t ignored = NULL;
    write_full(fd, &b, 1, deadline, idle_ms, &ignored);
}

/* A connection's header (token, size) by header_by; *status: the byte to
 * answer (STANDBY_STREAM_IO: none came, nothing to answer). */
static int check_header(int fd, const struct standby_stream_order *o, const char *shown,
                        int64_t header_by, enum standby_stream_status *status, vcr_error_t *err)
{
    unsigned char head[STANDBY_STREAM_TOKEN_BYTES + 8];
    *status = STANDBY_STREAM_IO;
    if (read_full(fd, head, sizeof(head), header_by, 0, err) < 0)
        return -1;
    if (!standby_stream_token_equal(head, o->token)) {
        *status = STANDBY_STREAM_BAD_TOKEN;
        return vcr_error_make(err, EACCES, "stream for `%s`: the sender's token is wrong; refused",
                              shown);
    }
    uint64_t size = get_be64(head + STANDBY_STREAM_TOKEN_BYTES);
    if (size != o->bytes) {
        *status = STANDBY_STREAM_BAD_SIZE;
        return vcr_error_make(err, EIO,
                              "stream for `%s`: the sender sends %llu bytes, the order "
                              "said %llu",
                              shown, (unsigned long long)size, (unsigned long long)o->bytes);
    }
    return 0;
}

/* The body of a receive once a connection brought the right header; *status:
 * the byte to answer. */
static int receive_file(int fd, int dir_fd, const char *part, const char *file, const char *shown,
                        const struct standby_stream_order *o, int64_t deadline, int64_t idle_ms,
                        enum standby_stream_status *status, uint64_t *got, vcr_error_t *err)
{
    uint64_t size = o->bytes;
    *status = STANDBY_STREAM_IO;
    if (unlinkat(dir_fd, part, 0) < 0 && errno != ENOENT)
        return vcr_error_errno(err, "remove `%s.part`", shown);
    cleanup_close int out =
        openat(dir_fd, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
        return vcr_error_errno(err, "create `%s.part`", shown);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return vcr_error_make(err, ENOMEM, "sha256: cannot start a digest");
    }
    cleanup_free unsigned char *buf = malloc(STREAM_BUF);
    int rc = buf ? 0 : vcr_error_make(err, ENOMEM, "out of memory");
    while (rc == 0 && *got < size) {
        size_t want = size - *got < STREAM_BUF ? (size_t)(size - *got) : STREAM_BUF;
        ssize_t n = read(fd, buf, want);
        if (n == 0) {
            rc = vcr_error_make(err, EPIPE,
                                "stream for `%s`: the sender closed after %llu of "
                                "%llu bytes",
                                shown, (unsigned long long)*got, (unsigned long long)size);
        } else if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                rc = vcr_error_errno(err, "stream for `%s`: read", shown);
            else
                rc = wait_fd(fd, POLLIN, deadline, idle_ms, err);
        } else {
            if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
                rc = vcr_error_make(err, EIO, "sha256: the digest failed");
                break;
            }
            for (ssize_t done = 0; rc == 0 && done < n;) {
                ssize_t w = write(out, buf + done, (size_t)(n - done));
                if (w < 0 && errno != EINTR)
                    rc = vcr_error_errno(err, "write `%s.part`", shown);
                else if (w > 0)
                    done += w;
            }
            *got += (uint64_t)n;
        }
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    int final_ok = rc == 0 && EVP_DigestFinal_ex(md, digest, &dlen) == 1 && dlen == 32;
    EVP_MD_CTX_free(md);
    if (rc < 0)
        return -1;
    if (!final_ok)
        return vcr_error_make(err, EIO, "sha256: the digest failed");
    char hex[65];
    for (unsigned i = 0; i < dlen && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (strcmp(hex, o->sha256) != 0) {
        *status = STANDBY_STREAM_BAD_SHA256;
        return vcr_error_make(err, EIO, "sha256: `%s` arrived with SHA-256 %s, the order said %s",
                              shown, hex, o->sha256);
    }
    /* On disk before it has its name, and the name on disk before the source
     * is told: the source may drop its copy once it has the verdict. */
    if (fsync(out) < 0)
        return vcr_error_errno(err, "fsync `%s.part`", shown);
    if (renameat(dir_fd, part, dir_fd, file) < 0)
        return vcr_error_errno(err, "rename `%s.part` into place", shown);
    if (fsync(dir_fd) < 0)
        return vcr_error_errno(err, "fsync the directory of `%s`", shown);
    *status = STANDBY_STREAM_OK;
    return 0;
}

int standby_stream_receive(int listen_fd, int dir_fd, const char *file, const char *shown,
                           const struct standby_stream_order *o, struct standby_stream_stats *st,
                           vcr_error_t *err)
{
    int64_t t0 = vcr_mono_ms(), deadline = t0 + o->deadline_ms;
    int64_t accept_by = t0 + or_default(o->accept_ms, STANDBY_STREAM_ACCEPT_MS);
    int64_t header_ms = or_default(o->header_ms, STANDBY_STREAM_HEADER_MS);
    int64_t idle_ms = or_default(o->idle_ms, STANDBY_STREAM_IDLE_MS);
    if (accept_by > deadline)
        accept_by = deadline;
    /* A name of this receive's own: an older receive for the same file that
     * gives up removes its part, never this one's. */
    char part[200];
    if (snprintf(part, sizeof(part), ".%s.%ld.part", file, (long)getpid()) >= (int)sizeof(part)) {
        close(listen_fd);
        return vcr_error_make(err, ENAMETOOLONG, "`%s`: name too long", shown);
    }
    fcntl(listen_fd, F_SETFL, O_NONBLOCK);
    /* One connection at a time, each with a short header deadline, until one
     * brings the token: a squatter costs header_ms, not the migration. */
    cleanup_close int conn = -1;
    bool wrong_token = false;
    enum standby_stream_status status = STANDBY_STREAM_IO;
    int rc = -1;
    while (conn < 0) {
        if (wait_fd(listen_fd, POLLIN, accept_by, 0, err) < 0) {
            close(listen_fd);
            if (!wrong_token)
                return vcr_error_wrap(err, "stream for `%s`: no sender connected", shown);
            vcr_error_release(err);
            return vcr_error_make(err, EACCES,
                                  "stream for `%s`: no sender with the right token connected "
                                  "(a wrong token came; refused)",
                                  shown);
        }
        cleanup_close int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0) {
            close(listen_fd);
            return vcr_error_errno(err, "stream for `%s`: accept", shown);
        }
        set_dead_peer_timeouts(fd, idle_ms);
        int64_t header_by = vcr_mono_ms() + header_ms;
        cleanup_error vcr_error_t why = NULL;
        if (check_header(fd, o, shown, header_by < deadline ? header_by : deadline, &status,
                         &why) == 0) {
            conn = steal_fd(&fd);
            break;
        }
        if (status == STANDBY_STREAM_BAD_TOKEN)
            wrong_token = true;
        if (status != STANDBY_STREAM_BAD_SIZE) {
            log_info("stream for `%s`: a connection without the header in %lld ms or with a "
                     "wrong token, hung up on (%s); accepting the next",
                     shown, (long long)header_ms, vcr_error_msg(why));
            if (status != STANDBY_STREAM_IO)
                answer(fd, status, deadline, header_ms);
            continue;
        }
        /* The right token with another size: the sender's file is not the
         * order's; the transfer is refused. */
        close(listen_fd);
        answer(fd, status, deadline, header_ms);
        return vcr_error_make(err, vcr_error_status(why), "%s", vcr_error_msg(why));
    }
    close(listen_fd); /* the sender came: nobody else is let in */
    int64_t t1 = vcr_mono_ms();
    uint64_t got = 0;
    rc = receive_file(conn, dir_fd, part, file, shown, o, deadline, idle_ms, &status, &got, err);
    if (rc < 0)
        unlinkat(dir_fd, part, 0);
    answer(conn, status, deadline, idle_ms);
    st->bytes = got;
    st->ms = vcr_mono_ms() - t1;
    return rc;
}

static int connect_to(const struct standby_stream_order *o, int64_t deadline, vcr_error_t *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)o->port);
    if (getaddrinfo(o->address, port, &hints, &ai) != 0 || ai == NULL)
        return vcr_error_make(err, EINVAL, "address: `%s` is not an IP address", o->address);
    int64_t idle_ms = or_default(o->idle_ms, STANDBY_STREAM_IDLE_MS);
    cleanup_close int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        set_dead_peer_timeouts(fd, idle_ms);
    int rc = fd < 0 ? -1 : connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (fd < 0)
        return vcr_error_errno(err, "socket");
    if (rc < 0 && errno != EINPROGRESS)
        return vcr_error_errno(err, "stream: connect to %s port %u", o->address, o->port);
    if (rc < 0) {
        if (wait_fd(fd, POLLOUT, deadline, idle_ms, err) < 0)
            return vcr_error_wrap(err, "stream: connect to %s port %u", o->address, o->port);
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
        if (soerr)
            return errno = soerr,
                   vcr_error_errno(err, "stream: connect to %s port %u", o->address, o->port);
    }
    return steal_fd(&fd);
}

int standby_stream_send(const char *path, const struct standby_stream_order *o,
                        struct standby_stream_stats *st, vcr_error_t *err)
{
    int64_t t0 = vcr_mono_ms(), deadline = t0 + o->deadline_ms;
    int64_t idle_ms = or_default(o->idle_ms, STANDBY_STREAM_IDLE_MS);
    struct stat s;
    cleanup_close int in = standby_open_regular(path, &s, err);
    if (in < 0)
        return -1;
    if ((uint64_t)s.st_size != o->bytes)
        return vcr_error_make(err, EIO, "`%s` has %llu bytes, the order said %llu", path,
                              (unsigned long long)s.st_size, (unsigned long long)o->bytes);
    cleanup_close int fd = connect_to(o, deadline, err);
    if (fd < 0)
        return -1;
    unsigned char head[STANDBY_STREAM_TOKEN_BYTES + 8];
    memcpy(head, o->token, STANDBY_STREAM_TOKEN_BYTES);
    put_be64(head + STANDBY_STREAM_TOKEN_BYTES, o->bytes);
    if (write_full(fd, head, sizeof(head), deadline, idle_ms, err) < 0)
        return -1;
    off_t off = 0;
    while ((uint64_t)off < o->bytes) {
        size_t left = (size_t)(o->bytes - (uint64_t)off);
        ssize_t n = sendfile(fd, in, &off, left < (1 << 20) ? left : (1 << 20));
        if (n > 0)
            continue;
        if (n == 0)
            return vcr_error_make(err, EIO, "`%s` ended at %lld of %llu bytes", path,
                                  (long long)off, (unsigned long long)o->bytes);
        if (errno == EINTR)
            continue;
        /* A target that refused the token closes: its status byte says why. */
        if (errno == EPIPE || errno == ECONNRESET)
            break;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return vcr_error_errno(err, "stream: send `%s`", path);
        if (wait_fd(fd, POLLOUT, deadline, idle_ms, err) < 0)
            return -1;
    }
    /* The target checks, fsyncs and renames before its verdict (longer than
     * idle_ms for a big file on a slow disk): the keepalive probes, not an
     * idle bound, catch a target that died meanwhile. */
    unsigned char status = STANDBY_STREAM_IO;
    cleanup_error vcr_error_t read_err = NULL;
    int rc = read_full(fd, &status, 1, deadline, 0, &read_err);
    st->bytes = (uint64_t)off;
    st->ms = vcr_mono_ms() - t0;
    if (rc < 0 && (uint64_t)off < o->bytes)
        return vcr_error_make(err, EPIPE,
                              "stream to %s port %u: the target closed after %lld "
                              "of %llu bytes",
                              o->address, o->port, (long long)off, (unsigned long long)o->bytes);
    if (rc < 0)
        return vcr_error_make(err, vcr_error_status(read_err),
                              "stream to %s port %u: no verdict: %s", o->address, o->port,
                              vcr_error_msg(read_err));
    switch (status) {
    case STANDBY_STREAM_OK:
        return 0;
    case STANDBY_STREAM_BAD_TOKEN:
        return vcr_error_make(err, EACCES, "stream to %s port %u: the target refused the token",
                              o->address, o->port);
    case STANDBY_STREAM_BAD_SIZE:
        return vcr_error_make(err, EIO, "stream to %s port %u: the target expected another size",
                              o->address, o->port);
    case STANDBY_STREAM_BAD_SHA256:
        return vcr_error_make(err, EIO,
                              "stream to %s port %u: the file arrived with another "
                              "SHA-256 than the order's; not put in place",
                              o->address, o->port);
    default:
        return vcr_error_make(err, EIO,
                              "stream to %s port %u: the target failed to store the file "
                              "(its log says why)",
                              o->address, o->port);
    }
}

void standby_stream_result_text(const struct standby_stream_stats *st, char *out, size_t size)
{
    double mb_s = st->ms > 0 ? (double)st->bytes / 1e6 / ((double)st->ms / 1000.0) : 0.0;
    snprintf(out, size, "{\"bytes\": %llu, \"ms\": %lld, \"mb_s\": %.2f}",
             (unsigned long long)st->bytes, (long long)st->ms, mb_s);
}
