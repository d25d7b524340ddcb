/* Container images in a standby VM (docs/agent.md, "Container images"):
 * download from the server's image listener, SHA-256 check, unpack once into
 * the cache.  Pure file and socket work, without liblxc, so that the unit
 * tests drive it; it blocks, so the role runs it in a standby_job child. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/standby/standby.h"
#include "agent/standby_migrate.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/durable.h"
#include "common/clock.h"
#include "proto/proto_code.h"

/* Connecting to the server, then any wait for its next bytes: a TCG guest is
 * slow, never this silent. */
#define FETCH_CONNECT_MS 10000
#define FETCH_IDLE_MS    60000
#define FETCH_HEADER_MAX 16384

/* Runs argv (PATH lookup) and waits; on failure *err quotes its stderr. */
int standby_run_program(char *const argv[], vcr_error_t *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return vcr_error_errno(err, "pipe");
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return vcr_error_errno(err, "fork");
    }
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
        }
        execvp(argv[0], argv);
        dprintf(STDERR_FILENO, "exec %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    char out[512];
    size_t used = 0;
    for (;;) {
        char chunk[256];
        ssize_t n = read(fds[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t keep = (size_t)n < sizeof(out) - 1 - used ? (size_t)n : sizeof(out) - 1 - used;
        memcpy(out + used, chunk, keep);
        used += keep;
    }
    close(fds[0]);
    out[used] = '\0';
    while (used > 0 && (out[used - 1] == '\n' || out[used - 1] == ' '))
        out[--used] = '\0';
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return vcr_error_errno(err, "waitpid %s", argv[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
    if (WIFSIGNALED(status))
        return vcr_error_make(err, EIO, "%s killed by signal %d", argv[0], WTERMSIG(status));
    return vcr_error_make(err, EIO, "%s exited with %d: %s", argv[0], WEXITSTATUS(status),
                          out[0] ? out : "(no message)");
}

int standby_url_parse(const char *url, char *host, size_t host_size, uint16_t *port, char *path,
                      size_t path_size, vcr_error_t *err)
{
#define URL_ALLOWED "allowed: http://A.B.C.D:PORT/PATH (plain HTTP to an IPv4 address)"
    if (strncmp(url, "http://", 7) != 0)
        return vcr_error_make(err, EINVAL, "`%.200s` is not an http:// URL; " URL_ALLOWED, url);
    const char *h = url + 7;
    size_t hn = strcspn(h, ":/");
    if (hn == 0 || hn >= host_size || hn > 63)
        return vcr_error_make(err, EINVAL, "`%.200s`: no host, or a host too long; " URL_ALLOWED,
                              url);
    memcpy(host, h, hn);
    host[hn] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return vcr_error_make(err, EINVAL, "`%.200s`: `%s` is not an IPv4 address; " URL_ALLOWED,
                              url, host);
    const char *rest = h + hn;
    *port = 80;
    if (*rest == ':') {
        size_t pn = strspn(rest + 1, "0123456789");
        unsigned long p = pn && pn <= 5 ? strtoul(rest + 1, NULL, 10) : 0;
        if (p < 1 || p > 65535 || (rest[1 + pn] != '/' && rest[1 + pn] != '\0'))
            return vcr_error_make(err, EINVAL, "`%.200s`: the port must be 1..65535; " URL_ALLOWED,
                                  url);
        *port = (uint16_t)p;
        rest += 1 + pn;
    }
    if (*rest != '/' || strlen(rest) >= path_size || strpbrk(rest, " \r\n\t"))
        return vcr_error_make(err, EINVAL, "`%.200s`: no path, or a bad one; " URL_ALLOWED, url);
    snprintf(path, path_size, "%s", rest);
    return 0;
#undef URL_ALLOWED
}

/* Waits for fd to become ready for events within ms; 0, or -1 with *err. */
static int wait_fd(int fd, short events, int ms, const char *what, vcr_error_t *err)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return vcr_error_make(err, ETIMEDOUT, "%s: nothing for %d ms", what, ms);
        if (errno != EINTR)
            return vcr_error_errno(err, "%s: poll", what);
    }
}

static int connect_to(const char *host, uint16_t port, const char *url, vcr_error_t *err)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
        return vcr_error_make(err, EINVAL, "GET %s: `%s` is not an IPv4 address", url, host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return vcr_error_errno(err, "GET %s: socket", url);
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
    int e = rc == 0 ? 0 : errno;
    if (rc < 0 && e == EINPROGRESS) {
        socklen_t len = sizeof(e);
        if (wait_fd(fd, POLLOUT, FETCH_CONNECT_MS, "connect", err) < 0) {
            close(fd);
            return vcr_error_wrap(err, "GET %s", url);
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
    }
    if (e != 0) {
        close(fd);
        return vcr_error_make(err, e, "GET %s: connect: %s", url, strerror(e));
    }
    return fd;
}

static int send_all(int fd, const char *buf, size_t len, vcr_error_t *err)
{
    while (len > 0) {
        if (wait_fd(fd, POLLOUT, FETCH_IDLE_MS, "send", err) < 0)
            return -1;
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return vcr_error_errno(err, "send");
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One read of at most size bytes, after waiting for some; 0 at the end. */
static ssize_t recv_some(int fd, char *buf, size_t size, vcr_error_t *err)
{
    for (;;) {
        if (wait_fd(fd, POLLIN, FETCH_IDLE_MS, "receive", err) < 0)
            return -1;
        ssize_t n = recv(fd, buf, size, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return vcr_error_errno(err, "receive");
        return n;
    }
}

/* The value of header name (case-insensitive) in the header block, or NULL. */
static const char *header_value(const char *headers, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    for (const char *l = strstr(headers, "\r\n"); l; l = strstr(l, "\r\n")) {
        l += 2;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1;
            v += strspn(v, " \t");
            size_t vn = strcspn(v, "\r\n");
            if (vn >= size)
                vn = size - 1;
            memcpy(out, v, vn);
            out[vn] = '\0';
            return out;
        }
    }
    return NULL;
}

int standby_http_parse_head(const char *head, struct standby_http_head *h, vcr_error_t *err)
{
    int status = 0, used = 0;
    if (sscanf(head, "HTTP/1.%*1[01] %3d%n", &status, &used) != 1 || used != 12 || status < 100 ||
        (head[used] != ' ' && head[used] != '\r' && head[used] != '\0'))
        return vcr_error_make(err, EPROTO, "`%.80s` is not an HTTP/1.x status line", head);
    long long length = -1;
    char value[32];
    if (header_value(head, "Content-Length", value, sizeof(value))) {
        size_t digits = strspn(value, "0123456789");
        if (digits == 0 || digits > 15 || value[digits] != '\0')
            return vcr_error_make(err, EPROTO, "Content-Length `%s` is not a size", value);
        length = strtoll(value, NULL, 10);
    }
    h->status = status;
    h->length = length;
    return 0;
}

static int fetch_body(int sock, int out, const char *url, const char *path, uint64_t *bytes,
                      vcr_error_t *err)
{
    static char buf[1 << 16];
    size_t used = 0;
    char *end = NULL;
    /* The status line and headers, then whatever body came with them. */
    while (end == NULL) {
        if (used >= FETCH_HEADER_MAX)
            return vcr_error_make(err, EPROTO, "GET %s: no end of headers in %d bytes", url,
                                  FETCH_HEADER_MAX);
        ssize_t n = recv_some(sock, buf + used, FETCH_HEADER_MAX - used, err);
        if (n < 0)
            return vcr_error_wrap(err, "GET %s", url);
        if (n == 0)
            return vcr_error_make(err, EPROTO, "GET %s: the server closed before its headers", url);
        used += (size_t)n;
        buf[used] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    *end = '\0';
    struct standby_http_head head;
    if (standby_http_parse_head(buf, &head, err) < 0)
        return vcr_error_wrap(err, "GET %s", url);
    char *body = end + 4;
    size_t have = used - (size_t)(body - buf);
    if (head.status != 200) {
        body[have < 200 ? have : 200] = '\0';
        body[strcspn(body, "\r\n")] = '\0';
        return vcr_error_make(err, head.status == 404 ? ENOENT : EIO, "GET %s: HTTP %d: %s", url,
                              head.status, body[0] ? body : "(no message)");
    }
    uint64_t total = 0;
    for (;;) {
        if (head.length >= 0 && total + have > (uint64_t)head.length)
            return vcr_error_make(err, EPROTO, "GET %s: more bytes than the %lld announced", url,
                                  head.length);
        if (have && vcr_write_all(out, body, have, path, err) < 0)
            return -1;
        total += have;
        if (head.length >= 0 && total == (uint64_t)head.length)
            break;
        ssize_t n = recv_some(sock, buf, sizeof(buf), err);
        if (n < 0)
            return vcr_error_wrap(err, "GET %s: after %llu bytes", url, (unsigned long long)total);
        if (n == 0)
            break;
        body = buf;
        have = (size_t)n;
    }
    if (head.length >= 0 && total != (uint64_t)head.length)
        return vcr_error_make(err, EPROTO, "GET %s: %llu bytes of the %lld announced", url,
                              (unsigned long long)total, head.length);
    *bytes = total;
    return 0;
}

int standby_http_fetch(const char *url, const char *path, uint64_t *bytes, vcr_error_t *err)
{
    char host[64], upath[256];
    uint16_t port;
    if (standby_url_parse(url, host, sizeof(host), &port, upath, sizeof(upath), err) < 0)
        return -1;
    cleanup_close int sock = connect_to(host, port, url, err);
    if (sock < 0)
        return -1;
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: %s:%u\r\nUser-Agent: vcr-agent\r\n"
                     "Connection: close\r\n\r\n",
                     upath, host, port);
    if (send_all(sock, req, (size_t)n, err) < 0)
        return vcr_error_wrap(err, "GET %s", url);
    /* Made anew, never through a link left where it goes (docs/security.md). */
    if (unlink(path) < 0 && errno != ENOENT)
        return vcr_error_errno(err, "remove `%s`", path);
    cleanup_close int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
        return vcr_error_errno(err, "create `%s`", path);
    if (fetch_body(sock, out, url, path, bytes, err) < 0)
        return -1;
    if (fsync(out) < 0)
        return vcr_error_errno(err, "fsync `%s`", path);
    return 0;
}

int standby_image_init_script(const char *cmd, char *out, size_t size)
{
    /* exec: the command itself is PID 1, gets LXC's signals and its exit
     * stops the container. */
    int n =
        snprintf(out, size, "#!/bin/sh\n# written by vcr-agent: the image's cmd\nexec %s\n", cmd);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int standby_image_rootfs(const char *images_dir, const char *sha256, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s.rootfs", images_dir, sha256);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int make_dirs(const char *path, vcr_error_t *err)
{
    char buf[300];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return vcr_error_errno(err, "mkdir `%s`", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", buf);
    return 0;
}

/* 0 if path hashes to img->sha256; -1 with PROTO_STATUS_IMAGE_CHECKSUM (the
 * file removed) or the read error. */
static int verify(const char *path, const struct standby_image_ref *img, const char *from,
                  struct standby_image_result *res, vcr_error_t *err)
{
    char sum[WARM_STATE_HEX_LEN + 1];
    int64_t t0 = vcr_mono_ms();
    int rc = warm_state_digest(path, sum, &res->bytes, err);
    res->verify_ms = vcr_mono_ms() - t0;
    if (rc < 0)
        return vcr_error_wrap(err, "image `%s`", img->name);
    if (strcmp(sum, img->sha256) == 0)
        return 0;
    unlink(path);
    return vcr_error_make(err, PROTO_STATUS_IMAGE_CHECKSUM,
                          "image `%s`: checksum mismatch: expected SHA-256 %s, got %s (%llu bytes "
                          "from %s); the file is removed and nothing was started",
                          img->name, img->sha256, sum, (unsigned long long)res->bytes, from);
}

int standby_image_ensure(const char *images_dir, const struct standby_image_ref *img,
                         struct standby_image_result *res, vcr_error_t *err)
{
    *res = (struct standby_image_result){0};
    char rootfs[300], tmp_root[320], tarball[300], tmp_tar[320], lock[300];
    if (standby_image_rootfs(images_dir, img->sha256, rootfs, sizeof(rootfs)) < 0 ||
        snprintf(tarball, sizeof(tarball), "%s/%s.tar.gz", images_dir, img->sha256) >=
            (int)sizeof(tarball))
        return vcr_error_make(err, ENAMETOOLONG, "image `%s`: `%s`: path too long", img->name,
                              images_dir);
    snprintf(tmp_root, sizeof(tmp_root), "%s.tmp", rootfs);
    snprintf(tmp_tar, sizeof(tmp_tar), "%s.tmp", tarball);
    snprintf(lock, sizeof(lock), "%s/%s.lock", images_dir, img->sha256);
    if (make_dirs(images_dir, err) < 0)
        return vcr_error_wrap(err, "image `%s`", img->name);
    /* Two containers of one image created at once: the second waits, then
     * finds the rootfs made.  The lock goes with this process. */
    cleanup_close int lfd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lfd < 0)
        return vcr_error_errno(err, "image `%s`: open `%s`", img->name, lock);
    while (flock(lfd, LOCK_EX) < 0)
        if (errno != EINTR)
            return vcr_error_errno(err, "image `%s`: lock `%s`", img->name, lock);
    if (is_dir(rootfs)) {
        struct stat st;
        res->cached = true;
        res->bytes = stat(tarball, &st) == 0 ? (uint64_t)st.st_size : 0;
        return 0;
    }
    /* A tarball in the cache was verified before its rename; it is checked
     * again (cheap next to tar) because unpacking a damaged one would leave a
     * rootfs nobody checks again. */
    if (access(tarball, F_OK) == 0) {
        cleanup_error vcr_error_t stale = NULL;
        if (verify(tarball, img, tarball, res, &stale) < 0 &&
            vcr_error_status(stale) != PROTO_STATUS_IMAGE_CHECKSUM)
            return vcr_error_make(err, vcr_error_status(stale), "%s", vcr_error_msg(stale));
    }
    if (access(tarball, F_OK) < 0) {
        int64_t t0 = vcr_mono_ms();
        uint64_t bytes = 0;
        if (standby_http_fetch(img->url, tmp_tar, &bytes, err) < 0) {
            unlink(tmp_tar);
            return vcr_error_wrap(err, "image `%s`", img->name);
        }
        res->download_ms = vcr_mono_ms() - t0;
        res->fetched = true;
        if (verify(tmp_tar, img, img->url, res, err) < 0)
            return -1;
        if (rename(tmp_tar, tarball) < 0) {
            unlink(tmp_tar);
            return vcr_error_errno(err, "image `%s`: rename `%s`", img->name, tmp_tar);
        }
    }
    int64_t t0 = vcr_mono_ms();
    if (standby_remove_tree(tmp_root, err) < 0)
        return vcr_error_wrap(err, "image `%s`", img->name);
    if (mkdir(tmp_root, 0755) < 0)
        return vcr_error_errno(err, "image `%s`: mkdir `%s`", img->name, tmp_root);
    /* --numeric-owner: the rootfs's owners are its own, not this VM's names. */
    char *argv[] = {STANDBY_TAR, "--numeric-owner", "-xzf", tarball, "-C", (char *)tmp_root, NULL};
    if (standby_run_program(argv, err) < 0) {
        cleanup_error vcr_error_t ignored = NULL;
        standby_remove_tree(tmp_root, &ignored);
        return vcr_error_wrap(err, "image `%s`: unpack `%s`", img->name, tarball);
    }
    if (rename(tmp_root, rootfs) < 0) {
        int e = errno;
        cleanup_error vcr_error_t ignored = NULL;
        standby_remove_tree(tmp_root, &ignored);
        return vcr_error_make(err, e, "image `%s`: rename `%s`: %s", img->name, tmp_root,
                              strerror(e));
    }
    res->unpack_ms = vcr_mono_ms() - t0;
    return 0;
}

/* The suffixes an image's files have after its SHA-256 (standby_image_ensure). */
static const char *const image_suffixes[] = {".tar.gz", ".tar.gz.tmp", ".rootfs", ".rootfs.tmp",
                                             ".lock"};

/* The image's SHA-256 (lower-case hex) when name is one of its files. */
static bool image_file_sha(const char *name, char sha[WARM_STATE_HEX_LEN + 1])
{
    if (strspn(name, "0123456789abcdef") != WARM_STATE_HEX_LEN)
        return false;
    for (size_t i = 0; i < sizeof(image_suffixes) / sizeof(image_suffixes[0]); i++)
        if (strcmp(name + WARM_STATE_HEX_LEN, image_suffixes[i]) == 0) {
            memcpy(sha, name, WARM_STATE_HEX_LEN);
            sha[WARM_STATE_HEX_LEN] = '\0';
            return true;
        }
    return false;
}

/* The whole of a small text file (NUL-terminated; NULL when unreadable). */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    char buf[4096];
    size_t n;
    while (out && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, out);
    fclose(f);
    if (out)
        fclose(out);
    return text;
}

/* When dir is a whole path in the options of a mountinfo line (an overlay's
 * lowerdir=), why it is kept: "used by container NAME" for a mount point
 * LXCPATH/NAME/rootfs (standby_ct_create's), else "mounted at POINT". */
static bool mounted_lower(const char *mountinfo, const char *dir, char *why, size_t size)
{
    size_t n = strlen(dir);
    for (const char *p = mountinfo ? strstr(mountinfo, dir) : NULL; p; p = strstr(p + 1, dir)) {
        char after = p[n];
        if ((p == mountinfo || (p[-1] != '=' && p[-1] != ':')) ||
            (after != ',' && after != ':' && after != ' ' && after != '\n' && after != '\0'))
            continue;
        const char *line = p;
        while (line > mountinfo && line[-1] != '\n')
            line--;
        /* ID PARENT MAJ:MIN ROOT MOUNT_POINT ...: the fifth field. */
        const char *point = line;
        for (int field = 0; field < 4 && point; field++) {
            point = strchr(point, ' ');
            point = point ? point + 1 : NULL;
        }
        size_t len = point ? strcspn(point, " \n") : 0;
        const char *name = NULL;
        size_t name_len = 0;
        if (len > 7 && strncmp(point + len - 7, "/rootfs", 7) == 0) {
            name = point + len - 7;
            while (name > point && name[-1] != '/')
                name--;
            name_len = (size_t)(point + len - 7 - name);
        }
        if (name_len > 0)
            snprintf(why, size, "used by container %.*s", (int)name_len, name);
        else
            snprintf(why, size, "mounted at %.*s", (int)(len < 200 ? len : 200),
                     point ? point : "?");
        return true;
    }
    return false;
}

/* The image's copy for unprivileged containers: LIB/shifted/images/SHA256.rootfs
 * beside IMAGES_DIR = LIB/images (standby_ct_paths). */
static void shifted_rootfs(const char *images_dir, const char *sha, char *out, size_t size)
{
    const char *slash = strrchr(images_dir, '/');
    int lib = slash ? (int)(slash - images_dir) : 0;
    snprintf(out, size, "%.*s/%s/%s/%s.rootfs", lib, images_dir, STANDBY_SHIFTED_SUB,
             STANDBY_IMAGES_SUB, sha);
}

static int remove_image(const char *images_dir, const char *sha, vcr_error_t *err)
{
    char shifted[400], shifted_lock[420];
    shifted_rootfs(images_dir, sha, shifted, sizeof(shifted));
    snprintf(shifted_lock, sizeof(shifted_lock), "%s.lock", shifted);
    if (standby_remove_tree(shifted, err) < 0)
        return -1;
    if (unlink(shifted_lock) < 0 && errno != ENOENT)
        return vcr_error_errno(err, "unlink `%s`", shifted_lock);
    for (size_t i = 0; i < sizeof(image_suffixes) / sizeof(image_suffixes[0]); i++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s%s", images_dir, sha, image_suffixes[i]);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (standby_remove_tree(path, err) < 0)
                return -1;
        } else if (unlink(path) < 0 && errno != ENOENT) {
            return vcr_error_errno(err, "unlink `%s`", path);
        }
    }
    return 0;
}

json_t *standby_image_prune(const char *images_dir, const struct standby_image_keep *keep, size_t n,
                            const char *mountinfo, vcr_error_t *err)
{
    cleanup_json json_t *removed = json_array();
    cleanup_json json_t *kept = json_array();
    cleanup_json json_t *seen = json_object();
    if (removed == NULL || kept == NULL || seen == NULL) {
        vcr_error_make(err, ENOMEM, "out of memory");
        return NULL;
    }
    DIR *d = opendir(images_dir);
    if (d == NULL && errno == ENOENT) /* nothing was ever cached */
        return json_pack("{s:O, s:O, s:I}", "removed", removed, "kept", kept, "freed_bytes",
                         (json_int_t)0);
    if (d == NULL) {
        vcr_error_errno(err, "image cache `%s`", images_dir);
        return NULL;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sha[WARM_STATE_HEX_LEN + 1];
        if (image_file_sha(e->d_name, sha))
            json_object_set_new(seen, sha, json_true());
    }
    closedir(d);
    cleanup_free char *mounts = mountinfo ? read_text(mountinfo) : NULL;
    uint64_t freed = 0;
    const char *sha;
    json_t *unused;
    json_object_foreach(seen, sha, unused)
    {
        const char *why = NULL;
        for (size_t i = 0; i < n && why == NULL; i++)
            if (strcmp(keep[i].sha256, sha) == 0)
                why = keep[i].why;
        char rootfs[300], tarball[300], lock[300];
        standby_image_rootfs(images_dir, sha, rootfs, sizeof(rootfs));
        snprintf(tarball, sizeof(tarball), "%s/%s.tar.gz", images_dir, sha);
        snprintf(lock, sizeof(lock), "%s/%s.lock", images_dir, sha);
        char mounted[300], shifted[400];
        shifted_rootfs(images_dir, sha, shifted, sizeof(shifted));
        if (why == NULL && (mounted_lower(mounts, rootfs, mounted, sizeof(mounted)) ||
                            mounted_lower(mounts, shifted, mounted, sizeof(mounted))))
            why = mounted;
        /* Held while its lock is: a download or unpack under way waits for
         * the removal, then finds nothing and fetches again. */
        cleanup_close int lfd = why ? -1 : open(lock, O_RDWR | O_CLOEXEC);
        if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) < 0)
            why = "busy (a download or unpack under way)";
        /* Only a lock left (a download refused for its checksum leaves
         * one): no image to report; a free one is removed. */
        bool content = false;
        for (size_t i = 0; i < sizeof(image_suffixes) / sizeof(image_suffixes[0]); i++) {
            char path[400];
            snprintf(path, sizeof(path), "%s/%s%s", images_dir, sha, image_suffixes[i]);
            content =
                content || (strcmp(image_suffixes[i], ".lock") != 0 && access(path, F_OK) == 0);
        }
        if (why && (content || lfd >= 0)) {
            json_array_append_new(kept, json_pack("{s:s, s:s}", "sha256", sha, "why", why));
            continue;
        }
        if (why)
            continue;
        struct stat st;
        uint64_t bytes = stat(tarball, &st) == 0 ? (uint64_t)st.st_size : 0;
        if (remove_image(images_dir, sha, err) < 0) {
            vcr_error_wrap(err, "image cache: remove image %s", sha);
            return NULL;
        }
        if (!content)
            continue;
        freed += bytes;
        json_array_append_new(removed,
                              json_pack("{s:s, s:I}", "sha256", sha, "bytes", (json_int_t)bytes));
    }
    return json_pack("{s:O, s:O, s:I}", "removed", removed, "kept", kept, "freed_bytes",
                     (json_int_t)freed);
}
