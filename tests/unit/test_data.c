/* Unit tests for a service's data copies (src/agent/data_image.c,
 * standby_data.c; docs/data.md): pack and unpack with the SHA-256 and the
 * holes, chunks assembled on the standby side through the orders' members,
 * a checksum mismatch refused at the last chunk and at the install (the last
 * complete copy stays), when a copy was taken, and the owner a copy takes
 * in the container. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/agent_role.h"
#include "agent/data_image.h"
#include "agent/host/host_data.h"
#include "agent/host/host_vm_priv.h"
#include "agent/standby/standby_data.h"
#include "agent/standby_migrate.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"

#define IMAGE_BYTES (3 * 1024 * 1024 + 512) /* not a multiple of the hole size */

static char *make_dir(void)
{
    char tmpl[] = "/tmp/vcr-test-data-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void rm_rf(const char *path)
{
    vcr_error_t err = NULL;
    assert_int_equal(standby_remove_tree(path, &err), 0);
}

/* Mostly zeros, like a fresh ext4 image: a few blocks of data here and there. */
static char *make_image(const char *dir)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/vol.img", dir) > 0);
    unsigned char *buf = calloc(1, IMAGE_BYTES);
    assert_non_null(buf);
    for (size_t off = 1024; off < IMAGE_BYTES; off += 700000)
        for (size_t i = 0; i < 5000 && off + i < IMAGE_BYTES; i++)
            buf[off + i] = (unsigned char)(i * 7 + off);
    buf[IMAGE_BYTES - 1] = 0x5a;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, IMAGE_BYTES, f), IMAGE_BYTES);
    fclose(f);
    free(buf);
    return path;
}

static bool same_file(const char *a, const char *b)
{
    char sa[65], sb[65];
    uint64_t na = 0, nb = 0;
    vcr_error_t err = NULL;
    assert_int_equal(warm_state_digest(a, sa, &na, &err), 0);
    assert_int_equal(warm_state_digest(b, sb, &nb, &err), 0);
    return na == nb && strcmp(sa, sb) == 0;
}

static void test_pack_and_unpack(void **state)
{
    (void)state;
    cleanup_free char *dir = make_dir();
    cleanup_free char *img = make_image(dir);
    char gz[512], out[512];
    snprintf(gz, sizeof(gz), "%s/vol.img.snap.gz", dir);
    snprintf(out, sizeof(out), "%s/data.img", dir);
    vcr_error_t err = NULL;
    struct data_packed p;
    assert_int_equal(data_pack(img, gz, &p, &err), 0);
    assert_int_equal(p.raw_bytes, IMAGE_BYTES);
    assert_true(p.bytes > 0 && p.bytes < IMAGE_BYTES / 20); /* zeros compress */
    char sum[65];
    uint64_t size = 0;
    assert_int_equal(warm_state_digest(gz, sum, &size, &err), 0);
    assert_string_equal(sum, p.sha256);
    assert_int_equal(size, p.bytes);

    uint64_t raw = 0;
    assert_int_equal(data_unpack(gz, p.sha256, out, &raw, &err), 0);
    assert_int_equal(raw, IMAGE_BYTES);
    assert_true(same_file(img, out));
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 < IMAGE_BYTES / 2); /* zeros left as holes */

    /* A wrong digest is refused before anything is written: the old copy stays. */
    const char *bad = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(data_unpack(gz, bad, out, &raw, &err), -1);
    assert_int_equal(vcr_error_status(err), EIO);
    assert_non_null(strstr(vcr_error_msg(err), "the sender said 0000"));
    vcr_error_release(&err);
    assert_true(same_file(img, out));

    /* Not gzip: named, and no temp file left. */
    assert_int_equal(data_unpack(img, NULL, out, &raw, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "not a gzip stream"));
    vcr_error_release(&err);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", out);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_true(same_file(img, out));
    rm_rf(dir);
}

static void test_taken_time(void **state)
{
    (void)state;
    cleanup_free char *dir = make_dir();
    vcr_error_t err = NULL;
    int64_t taken = 0;
    assert_int_equal(data_taken_read(dir, &taken, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);
    assert_int_equal(data_taken_write(dir, 1765000000123, 1765000000999, 42, &err), 0);
    assert_int_equal(data_taken_read(dir, &taken, &err), 0);
    assert_int_equal(taken, 1765000000123);
    rm_rf(dir);
}

/* The packed file sent as the server sends it: chunks of `chunk` bytes, the
 * last with the size and the digest (sha NULL: the real one). */
static int send_chunks(const char *base, const char *gz, size_t chunk, const char *sha,
                       vcr_error_t *err)
{
    FILE *f = fopen(gz, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    char real[65];
    uint64_t n = 0;
    assert_int_equal(warm_state_digest(gz, real, &n, err), 0);
    int rc = 0;
    for (long off = 0; off < size && rc == 0; off += (long)chunk) {
        size_t len = (size_t)(size - off) < chunk ? (size_t)(size - off) : chunk;
        bool last = off + (long)len >= size;
        char *b64 = standby_base64_encode(buf + off, len);
        json_t *msg = json_pack("{s:s, s:s, s:I, s:s, s:b}", "name", "web1-c", "service", "web1",
                                "offset", (json_int_t)off, "data", b64, "last", last);
        free(b64);
        if (last) {
            json_object_set_new(msg, "bytes", json_integer(size));
            json_object_set_new(msg, "sha256", json_string(sha ? sha : real));
        }
        json_t *r = standby_data_loop_order(base, "data_write", msg, err);
        if (r == NULL)
            rc = -1;
        else
            assert_int_equal(json_integer_value(json_object_get(r, "bytes")), off + (long)len);
        json_decref(r);
        json_decref(msg);
    }
    free(buf);
    return rc;
}

static void test_chunks_assembled_and_checked(void **state)
{
    (void)state;
    cleanup_free char *dir = make_dir();
    cleanup_free char *img = make_image(dir);
    char gz[512], base[512], got[600], incoming[600];
    snprintf(gz, sizeof(gz), "%s/vol.img.snap.gz", dir);
    snprintf(base, sizeof(base), "%s/data", dir);
    snprintf(got, sizeof(got), "%s/web1/data.img", base);
    snprintf(incoming, sizeof(incoming), "%s/web1/incoming.gz", base);
    vcr_error_t err = NULL;
    struct data_packed p;
    assert_int_equal(data_pack(img, gz, &p, &err), 0);

    /* A mismatch at the last chunk is refused, naming both digests. */
    const char *bad = "1111111111111111111111111111111111111111111111111111111111111111";
    assert_int_equal(send_chunks(base, gz, 4096, bad, &err), -1);
    assert_int_equal(vcr_error_status(err), EIO);
    assert_non_null(strstr(vcr_error_msg(err), "the sender said 1111"));
    assert_non_null(strstr(vcr_error_msg(err), p.sha256));
    vcr_error_release(&err);

    /* Sent again in odd-sized chunks: assembled, installed with its time. */
    assert_int_equal(send_chunks(base, gz, 3001, NULL, &err), 0);
    assert_true(same_file(gz, incoming));
    json_t *order = json_pack("{s:s, s:s, s:I, s:s}", "name", "web1-c", "service", "web1",
                              "taken_ms", (json_int_t)1765000000000, "sha256", p.sha256);
    assert_int_equal(standby_data_install(base, order, &err), 0);
    json_decref(order);
    assert_true(same_file(img, got));
    assert_int_equal(access(incoming, F_OK), -1);
    char sdir[600];
    snprintf(sdir, sizeof(sdir), "%s/web1", base);
    int64_t taken = 0;
    assert_int_equal(data_taken_read(sdir, &taken, &err), 0);
    assert_int_equal(taken, 1765000000000);

    /* An install whose incoming copy does not match: refused, the last copy kept. */
    assert_int_equal(send_chunks(base, gz, 65536, NULL, &err), 0);
    order = json_pack("{s:s, s:I, s:s}", "service", "web1", "taken_ms", (json_int_t)1765000009999,
                      "sha256", bad);
    assert_int_equal(standby_data_install(base, order, &err), -1);
    assert_int_equal(vcr_error_status(err), EIO);
    vcr_error_release(&err);
    json_decref(order);
    assert_true(same_file(img, got));
    assert_int_equal(data_taken_read(sdir, &taken, &err), 0);
    assert_int_equal(taken, 1765000000000);

    /* Members checked: a bad service name, a missing taken_ms. */
    order = json_pack("{s:s, s:s, s:I, s:b}", "service", "../x", "data", "", "offset",
                      (json_int_t)0, "last", 0);
    assert_null(standby_data_loop_order(base, "data_write", order, &err));
    if (strstr(vcr_error_msg(err), "not a name") == NULL)
        fail_msg("%s", vcr_error_msg(err));
    vcr_error_release(&err);
    json_decref(order);
    order = json_pack("{s:s}", "service", "web1");
    assert_int_equal(standby_data_install(base, order, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "taken_ms"));
    vcr_error_release(&err);
    json_decref(order);
    /* Nothing to read back before an export. */
    order = json_pack("{s:s, s:I, s:I}", "service", "web1", "offset", (json_int_t)0, "length",
                      (json_int_t)10);
    assert_null(standby_data_loop_order(base, "data_read", order, &err));
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);
    json_decref(order);
    rm_rf(dir);
}

/* As root with loop devices (the standby VM's case): the installed copy is
 * loop-mounted read-write, a file written there is in the copy packed for
 * failback once unmounted.  Skipped elsewhere. */
static void test_mount_and_export(void **state)
{
    (void)state;
    if (geteuid() != 0 || access("/dev/loop-control", W_OK) < 0) {
        skip();
        return;
    }
    cleanup_free char *dir = make_dir();
    char base[256], img[320], cmd[1400], mnt[400], file[500], gz[320], back[320];
    snprintf(base, sizeof(base), "%s/data", dir);
    snprintf(img, sizeof(img), "%s/web1/data.img", base);
    snprintf(gz, sizeof(gz), "%s/web1/outgoing.gz", base);
    snprintf(back, sizeof(back), "%s/back.img", dir);
    vcr_error_t err = NULL;
    assert_int_equal(mkdir(base, 0700), 0);
    snprintf(cmd, sizeof(cmd), "%s/web1", base);
    assert_int_equal(mkdir(cmd, 0700), 0);
    snprintf(cmd, sizeof(cmd), "truncate -s 16M %s && /usr/sbin/mkfs.ext4 -q -F -b 4096 %s", img,
             img);
    assert_int_equal(system(cmd), 0);
    int64_t taken = 0;
    /* No taken.json yet: an install writes it. */
    assert_int_equal(standby_data_mount(base, "web1", mnt, sizeof(mnt), &taken, &err), -1);
    vcr_error_release(&err);
    char sdir[600];
    snprintf(sdir, sizeof(sdir), "%s/web1", base);
    assert_int_equal(data_taken_write(sdir, 1765000000000, 1765000000001, 16 << 20, &err), 0);
    if (standby_data_mount(base, "web1", mnt, sizeof(mnt), &taken, &err) < 0) {
        /* A container without the rights to mount: not this test's subject. */
        print_message("skipped: %s\n", vcr_error_msg(err));
        vcr_error_release(&err);
        rm_rf(dir);
        skip();
        return;
    }
    assert_int_equal(taken, 1765000000000);
    assert_true(standby_data_mounted(mnt));
    /* Mounting again is a no-op. */
    assert_int_equal(standby_data_mount(base, "web1", mnt, sizeof(mnt), &taken, &err), 0);
    snprintf(file, sizeof(file), "%s/hello", mnt);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("written while attached\n", f);
    fclose(f);
    assert_int_equal(standby_data_export(base, "web1", &err), 0);
    assert_false(standby_data_mounted(mnt));
    uint64_t raw = 0;
    assert_int_equal(data_unpack(gz, NULL, back, &raw, &err), 0);
    assert_int_equal(raw, 16 << 20);
    snprintf(cmd, sizeof(cmd),
             "/usr/sbin/debugfs -R 'cat /hello' %s 2>/dev/null | grep -q 'written while attached'",
             back);
    assert_int_equal(system(cmd), 0);
    rm_rf(dir);
}

/* As root: the copy takes the owner of the directory it covers in the
 * container's image (Redis's data dir: redis is 101:103 in the primary VM
 * and 100:101 in the ct-redis image); files of other owners keep theirs; an
 * image without that directory, or with the copy's owner, changes nothing. */
static void test_copy_takes_the_owner_of_the_image_dir(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip();
        return;
    }
    cleanup_free char *dir = make_dir();
    char copy[300], sub[400], file[500], other[400], link[400], image[300], gone[300];
    snprintf(copy, sizeof(copy), "%s/mnt", dir);
    snprintf(sub, sizeof(sub), "%s/appendonlydir", copy);
    snprintf(file, sizeof(file), "%s/appendonly.aof.1.incr.aof", sub);
    snprintf(other, sizeof(other), "%s/lost+found", copy);
    snprintf(link, sizeof(link), "%s/latest", copy);
    snprintf(image, sizeof(image), "%s/image-redis", dir);
    snprintf(gone, sizeof(gone), "%s/no-such-dir", dir);
    assert_int_equal(mkdir(copy, 0755), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(mkdir(other, 0700), 0);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(symlink("appendonlydir", link), 0);
    assert_int_equal(mkdir(image, 0750), 0);
    assert_int_equal(chown(image, 100, 101), 0);
    const char *primary_owned[] = {copy, sub, file};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(chown(primary_owned[i], 101, 103), 0);
    assert_int_equal(lchown(link, 101, 103), 0);
    assert_int_equal(chown(other, 0, 0), 0);

    vcr_error_t err = NULL;
    unsigned long changed = 99;
    assert_int_equal(standby_data_take_owner(copy, gone, &changed, &err), 0);
    assert_int_equal(changed, 0);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_uid, 101);

    assert_int_equal(standby_data_take_owner(copy, image, &changed, &err), 0);
    assert_int_equal(changed, 4);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(stat(primary_owned[i], &st), 0);
        assert_int_equal(st.st_uid, 100);
        assert_int_equal(st.st_gid, 101);
    }
    assert_int_equal(lstat(link, &st), 0);
    assert_int_equal(st.st_uid, 100);
    assert_int_equal(stat(other, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_gid, 0);
    /* Again: the copy already has the image's owner. */
    assert_int_equal(standby_data_take_owner(copy, image, &changed, &err), 0);
    assert_int_equal(changed, 0);
    rm_rf(dir);
}

/* --- the host's volume copy: QMP replies matched to their request --- */

/* A fake QEMU's end of the monitor socket: what the agent sent, and the
 * descriptors that came with it (SCM_RIGHTS). */
struct fake_monitor {
    struct event_base *base;
    int fd;
    char in[8192];
    size_t len;
    int fds_received;
};

/* The next command from the agent (its loop run meanwhile): new reference. */
static json_t *monitor_next(struct fake_monitor *m)
{
    int64_t deadline = vcr_mono_ms() + 5000;
    for (;;) {
        json_error_t jerr;
        json_t *cmd = m->len ? json_loadb(m->in, m->len, JSON_DISABLE_EOF_CHECK, &jerr) : NULL;
        if (cmd) {
            size_t used = (size_t)jerr.position;
            memmove(m->in, m->in + used, m->len - used);
            m->len -= used;
            return cmd;
        }
        if (vcr_mono_ms() > deadline)
            fail_msg("no command from the agent within 5 s (have: %.*s)", (int)m->len, m->in);
        event_base_loop(m->base, EVLOOP_NONBLOCK);
        char cbuf[CMSG_SPACE(sizeof(int) * 4)];
        struct iovec iov = {.iov_base = m->in + m->len, .iov_len = sizeof(m->in) - m->len};
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t n = recvmsg(m->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n > 0) {
            m->len += (size_t)n;
            for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
                if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
                    for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int fd;
                        memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(fd));
                        close(fd);
                        m->fds_received++;
                    }
        }
    }
}

/* The next command is `execute`: its id (args: its arguments, new reference, or NULL). */
static json_int_t monitor_expect(struct fake_monitor *m, const char *execute, json_t **args)
{
    json_t *cmd = monitor_next(m);
    const char *got = json_string_value(json_object_get(cmd, "execute"));
    if (got == NULL || strcmp(got, execute) != 0)
        fail_msg("expected %s, the agent sent %s", execute, json_dumps(cmd, JSON_COMPACT));
    json_int_t id = json_integer_value(json_object_get(cmd, "id"));
    if (args)
        *args = json_incref(json_object_get(cmd, "arguments"));
    json_decref(cmd);
    return id;
}

static void monitor_reply(struct fake_monitor *m, json_int_t id, const char *result)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "{\"return\": %s, \"id\": %" JSON_INTEGER_FORMAT "}\r\n",
                     result, id);
    assert_int_equal(write(m->fd, text, (size_t)n), n);
}

static void snapshot_order(struct agent *a, struct host_vm *vm, int id)
{
    json_t *jid = json_integer(id);
    json_t *order = json_pack("{s:s}", "volume", "data");
    host_data_order(a, vm, jid, "volume_snapshot", order);
    json_decref(order);
    json_decref(jid);
}

/* The drive-backup's request ends before its job started (the 300 s deadline
 * does the same: a refusal that drops the request's fd set, if known). */
static void snapshot_abandoned(struct host_vm *vm)
{
    json_t *ev = json_pack("{s:s}", "device", "vcr-snap-blk0");
    host_data_qmp_event(vm, "BLOCK_JOB_CANCELLED", ev);
    json_decref(ev);
}

/* A volume_snapshot of a running VM hands QEMU its copy in an fd set
 * (add-fd).  Its add-fd answered only after the request ended, while a new
 * volume_snapshot's own add-fd is in flight: the late set is removed (else
 * QEMU keeps the unlinked copy open) and the new request goes on with its
 * own set, never the old one.  Then a request whose VM's data is freed with
 * its add-fd in flight: the reply failed by the client's end touches no
 * freed memory (ASan). */
static void test_snapshot_late_add_fd_reply(void **state)
{
    (void)state;
    char *dir = make_dir();
    char *image = make_image(dir);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    char sock[96];
    snprintf(sock, sizeof(sock), "%.80s/qmp.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 1), 0);

    struct qmp_client_ops no_ops = {0};
    struct qmp_client *qmp = qmp_client_new(base, &no_ops, NULL);
    assert_non_null(qmp);
    vcr_error_t err = NULL;
    assert_int_equal(qmp_client_connect(qmp, sock, &err), 0);
    struct fake_monitor m = {.base = base, .fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)};
    assert_true(m.fd >= 0);
    const char *greeting = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                           "\"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n";
    assert_int_equal(write(m.fd, greeting, strlen(greeting)), (ssize_t)strlen(greeting));
    monitor_reply(&m, monitor_expect(&m, "qmp_capabilities", NULL), "{}");
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!qmp_client_is_ready(qmp) && vcr_mono_ms() < deadline)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_true(qmp_client_is_ready(qmp));

    struct vcr_volume_spec vol = {.name = "data", .image = image};
    struct vcr_vm_spec spec = {.name = "web1", .volumes = &vol, .n_volumes = 1};
    struct agent a = {.base = base}; /* no server connection: answers are dropped */
    struct host_vm vm = {.spec = &spec, .qmp = qmp, .qmp_ready = true};
    vm.env.base = base;
    /* A VM with a process (host_vm_has_process reads only this pointer). */
    vm.proc = (struct proc_watch *)&vm;

    snapshot_order(&a, &vm, 1);
    json_int_t late = monitor_expect(&m, "add-fd", NULL);
    assert_int_equal(m.fds_received, 1);
    snapshot_abandoned(&vm);
    snapshot_order(&a, &vm, 2);
    json_int_t second = monitor_expect(&m, "add-fd", NULL);
    assert_int_equal(m.fds_received, 2);

    /* The first request's set (0) comes now: removed, not adopted. */
    monitor_reply(&m, late, "{\"fdset-id\": 0, \"fd\": 20}");
    json_t *args = NULL;
    monitor_reply(&m, monitor_expect(&m, "remove-fd", &args), "{}");
    assert_int_equal(json_integer_value(json_object_get(args, "fdset-id")), 0);
    json_decref(args);
    /* The second request's own set (1): its read-only descriptor goes there,
     * and the copy targets it. */
    monitor_reply(&m, second, "{\"fdset-id\": 1, \"fd\": 21}");
    json_int_t ro = monitor_expect(&m, "add-fd", &args);
    assert_int_equal(json_integer_value(json_object_get(args, "fdset-id")), 1);
    json_decref(args);
    monitor_reply(&m, ro, "{\"fdset-id\": 1, \"fd\": 22}");
    json_int_t backup = monitor_expect(&m, "drive-backup", &args);
    assert_string_equal(json_string_value(json_object_get(args, "target")), "/dev/fdset/1");
    json_decref(args);
    monitor_reply(&m, backup, "{}");
    monitor_reply(&m, monitor_expect(&m, "remove-fd", &args), "{}");
    assert_int_equal(json_integer_value(json_object_get(args, "fdset-id")), 1);
    json_decref(args);
    snapshot_abandoned(&vm);

    /* Freed with an add-fd in flight, then the client's end fails it. */
    snapshot_order(&a, &vm, 3);
    monitor_expect(&m, "add-fd", NULL);
    host_data_free(&vm);
    assert_null(vm.data);
    qmp_client_free(qmp);

    close(m.fd);
    close(lfd);
    event_base_free(base);
    free(image);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_and_unpack),
        cmocka_unit_test(test_taken_time),
        cmocka_unit_test(test_chunks_assembled_and_checked),
        cmocka_unit_test(test_mount_and_export),
        cmocka_unit_test(test_snapshot_late_add_fd_reply),
        cmocka_unit_test(test_copy_takes_the_owner_of_the_image_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
