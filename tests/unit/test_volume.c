/* Unit tests for data volumes (docs/warm-cache.md): the `volumes:` schema and
 * its validation (src/config/volume_spec.c), the image checks, the atomic
 * copy (an earlier agent's memory file into the image), prepare, the flush
 * (an fsync of the images, in a child) and the QEMU arguments
 * (src/agent/host/host_volume.c, vm.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/host/host_vm_priv.h"
#include "agent/host/host_volume.h"
#include "agent/host/ram_dir.h"
#include "agent/host/vm.h"
#include "common/cleanup.h"
#include "config/agent_config.h"
#include "page_cache.h"

static char tmpdir[64];

static const char *data_dir(void)
{
    const char *d = getenv("VCR_TEST_DATA");
    return d ? d : "tests/unit/data";
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vcr-test-volume-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *tmp_path(const char *name)
{
    char *s = NULL;
    assert_true(asprintf(&s, "%s/%s", tmpdir, name) > 0);
    return s;
}

/* An agent config with one VM whose `volumes:` are the given YAML lines. */
static struct vcr_agent_config *load_volumes(const char *volumes, vcr_error_t *err)
{
    char abs_data[4096];
    assert_non_null(realpath(data_dir(), abs_data));
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "host: host1\nserver: 10.77.0.1:7070\nstate_dir: %s/state\naccel: tcg\n"
                         "qemu: %s/fake-qemu\nvms:\n  - name: web1\n    memory_mb: 256\n"
                         "    image: {kernel: %s/vmlinuz-test, initrd: %s/initrd-test}\n"
                         "    mac: \"52:54:00:77:00:11\"\n    tap: tap0\n"
                         "    address: 10.77.0.11/24\n    volumes:\n%s",
                         tmpdir, abs_data, abs_data, abs_data, volumes) > 0);
    cleanup_free char *path = tmp_path("agent.yaml");
    cleanup_file FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(steal_pointer(&f));
    return vcr_agent_config_load(path, err);
}

static void expect_rejected(const char *volumes, ...)
{
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_volumes(volumes, &err);
    if (cfg) {
        vcr_agent_config_free(cfg);
        fail_msg("accepted: %s", volumes);
    }
    va_list ap;
    va_start(ap, volumes);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (strstr(vcr_error_msg(err), needle) == NULL)
            fail_msg("message lacks `%s`: %s", needle, vcr_error_msg(err));
    va_end(ap);
}

static void test_volumes_load(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg =
        load_volumes("      - {name: data, size_mb: 64, image: data.img, mount: /data,\n"
                     "         warm_cache: true, source_dir: .}\n"
                     "      - {name: cold, size_mb: 32, image: cold.img, mount: /cold,\n"
                     "         cache: writeback}\n",
                     &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(cfg->vms[0].n_volumes, 2);
    const struct vcr_volume_spec *v = &cfg->vms[0].volumes[0];
    assert_string_equal(v->name, "data");
    assert_int_equal(v->size_mb, 64);
    assert_true(v->warm_cache);
    cleanup_free char *img = tmp_path("data.img");
    assert_string_equal(v->image, img);
    assert_string_equal(v->source_dir, tmpdir);
    v = &cfg->vms[0].volumes[1];
    assert_false(v->warm_cache);
    assert_int_equal(v->cache, VCR_VOLUME_CACHE_WRITEBACK);
    assert_null(v->source_dir);
    vcr_agent_config_free(cfg);
}

static void test_volumes_rejected(void **state)
{
    (void)state;
    expect_rejected("      - {name: data, size_mb: 8, image: d.img, mount: /data}\n",
                    "vms[0].volumes[0].size_mb", "8 is out of range", "16..65536", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /data}\n"
                    "      - {name: Bad_Name, size_mb: 64x, image: e.img, mount: data}\n",
                    "vms[0].volumes[1].name", "vms[0].volumes[1].size_mb",
                    "vms[0].volumes[1].mount", "`data` is not a usable mount point", NULL);
    expect_rejected("      - {name: data, size_mb: 64, mount: /data}\n",
                    "vms[0].volumes[0].image: missing", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /data,"
                    " warm_cache: yes}\n",
                    "vms[0].volumes[0].warm_cache", "`yes`", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /data,"
                    " warm_cache: true, cache: writeback}\n",
                    "vms[0].volumes[0].cache", "only to virtio-blk", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /data, cache: x}\n",
                    "vms[0].volumes[0].cache", "allowed: none, writeback", NULL);
    /* Gone with the /dev/shm copy: refused by name, not silently ignored. */
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /data,"
                    " warm_cache: true, writeback_interval_s: 0}\n",
                    "vms[0].volumes[0].writeback_interval_s", "no longer exists", "remove the key",
                    NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: /nonexistent/d.img, mount: /d}\n",
                    "vms[0].volumes[0].image", "/nonexistent", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /d,"
                    " source_dir: nowhere}\n",
                    "vms[0].volumes[0].source_dir", "a readable directory", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /d}\n"
                    "      - {name: data, size_mb: 64, image: e.img, mount: /e}\n",
                    "vms[0].volumes[1].name", "already used by volumes[0]", NULL);
    expect_rejected("      - {name: data, size_mb: 64, image: d.img, mount: /d/../x}\n",
                    "vms[0].volumes[0].mount", NULL);
}

static void write_file(const char *path, const void *data, size_t n)
{
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
}

static char *slurp(const char *path, size_t *n)
{
    cleanup_file FILE *f = fopen(path, "r");
    assert_non_null(f);
    struct stat st;
    assert_int_equal(fstat(fileno(f), &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    *n = fread(buf, 1, (size_t)st.st_size, f);
    return buf;
}

static void test_image_checks(void **state)
{
    (void)state;
    cleanup_free char *src = tmp_path("src");
    cleanup_free char *hello = tmp_path("src/hello.txt");
    cleanup_free char *img = tmp_path("good.img");
    assert_int_equal(mkdir(src, 0700), 0);
    write_file(hello, "hello\n", 6);
    cleanup_error vcr_error_t err = NULL;
    if (host_volume_build_image(img, 16 << 20, src, "data", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(host_volume_check_image(img, 16 << 20, &err), 0);
    /* Labelled with the volume's name (s_volume_name, superblock + 120): a guest
     * without our code mounts it by LABEL= from its fstab. */
    {
        FILE *f = fopen(img, "r");
        char label[17] = {0};
        assert_non_null(f);
        assert_int_equal(fseek(f, 1024 + 120, SEEK_SET), 0);
        assert_int_equal(fread(label, 1, 16, f), 16);
        fclose(f);
        assert_string_equal(label, "data");
    }

    /* Size mismatch: the configured size_mb changed, or a truncated copy. */
    assert_int_equal(host_volume_check_image(img, 32 << 20, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "expected 33554432"));
    vcr_error_release(&err);
    assert_int_equal(truncate(img, 1 << 20), 0);
    assert_int_equal(host_volume_check_image(img, 16 << 20, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "is 1048576 bytes"));
    vcr_error_release(&err);

    /* Right size, wrong magic. */
    cleanup_free char *junk = tmp_path("junk.img");
    cleanup_free char *zeros = calloc(1, 1 << 20);
    memset(zeros, 'x', 1 << 20);
    write_file(junk, zeros, 1 << 20);
    assert_int_equal(host_volume_check_image(junk, 1 << 20, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "is not ext4: magic 0x7878 at offset 1080"));
    vcr_error_release(&err);
    cleanup_free char *none = tmp_path("none.img");
    assert_int_equal(host_volume_check_image(none, 1 << 20, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
}

static int fail_after;
static ssize_t failing_write(int fd, const void *buf, size_t n, off_t off)
{
    if (fail_after-- <= 0) {
        errno = EIO;
        return -1;
    }
    return pwrite(fd, buf, n, off);
}

static void test_copy_atomic(void **state)
{
    (void)state;
    cleanup_free char *src = tmp_path("mem");
    cleanup_free char *dst = tmp_path("image");
    cleanup_free char *tmp = tmp_path("image.tmp");
    size_t size = 3 << 20;
    cleanup_free char *a = calloc(1, size);
    cleanup_free char *b = calloc(1, size);
    memset(a, 'a', size);
    /* b: data, a hole-sized run of zeros, data again. */
    memset(b, 'b', 4096);
    memset(b + (2 << 20), 'c', 5000);
    write_file(dst, a, size);
    write_file(src, b, size);

    /* A write failing midway (a crash while writing back) leaves the old image. */
    cleanup_error vcr_error_t err = NULL;
    fail_after = 1;
    host_volume_write_hook = failing_write;
    assert_int_equal(host_volume_copy_atomic(src, dst, &err), -1);
    host_volume_write_hook = pwrite;
    assert_non_null(strstr(vcr_error_msg(err), "Input/output error"));
    vcr_error_release(&err);
    size_t n;
    cleanup_free char *got = slurp(dst, &n);
    assert_int_equal(n, size);
    assert_memory_equal(got, a, size);
    assert_int_equal(access(tmp, F_OK), -1);

    host_volume_write_hook = pwrite;
    assert_int_equal(host_volume_copy_atomic(src, dst, &err), 0);
    cleanup_free char *got2 = slurp(dst, &n);
    assert_int_equal(n, size);
    assert_memory_equal(got2, b, size);
    assert_int_equal(access(tmp, F_OK), -1);
    /* Zero runs stay holes. */
    struct stat st;
    assert_int_equal(stat(dst, &st), 0);
    assert_true((size_t)st.st_blocks * 512 < size);
}

static void test_prepare(void **state)
{
    (void)state;
    cleanup_free char *img = tmp_path("vol.img");
    cleanup_free char *legacy = tmp_path("vol.pmem");
    struct vcr_volume_spec v = {.name = "data", .size_mb = 16, .image = img, .warm_cache = true};
    cleanup_error vcr_error_t err = NULL;
    /* No image: built empty, checked, and every block allocated. */
    if (host_volume_prepare(&v, legacy, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(host_volume_check_image(img, 16 << 20, &err), 0);
    struct stat st;
    assert_int_equal(stat(img, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= 16u << 20);
    assert_int_equal(access(legacy, F_OK), -1);

    /* An earlier agent's memory file holds newer data: it goes into the image
     * and is removed. */
    size_t n;
    cleanup_free char *newer = slurp(img, &n);
    memset(newer + (8 << 20), 'n', 4096);
    write_file(legacy, newer, n);
    if (host_volume_prepare(&v, legacy, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    cleanup_free char *got = slurp(img, &n);
    assert_int_equal(n, 16 << 20);
    assert_memory_equal(got, newer, n);
    assert_int_equal(access(legacy, F_OK), -1);

    /* One that is not a volume is refused and kept; the image is untouched. */
    write_file(legacy, "junk", 4);
    assert_int_equal(host_volume_prepare(&v, legacy, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "memory file of an earlier agent"));
    vcr_error_release(&err);
    assert_int_equal(access(legacy, F_OK), 0);
    cleanup_free char *same = slurp(img, &n);
    assert_memory_equal(same, newer, n);
    assert_int_equal(unlink(legacy), 0);

    /* One this agent did not make (another owner; writable by others) is
     * ignored and left: its data never reaches the image. */
    cleanup_free char *planted = malloc(n);
    assert_non_null(planted);
    memcpy(planted, newer, n);
    memset(planted + (8 << 20), 'p', 4096);
    write_file(legacy, planted, n);
    for (int i = 0; i < 2; i++) {
        if (i == 0 && geteuid() == 0)
            assert_int_equal(chown(legacy, 65534, 65534), 0);
        else
            assert_int_equal(chmod(legacy, 0666), 0);
        if (host_volume_prepare(&v, legacy, &err) < 0)
            fail_msg("%s", vcr_error_msg(err));
        assert_int_equal(access(legacy, F_OK), 0);
        cleanup_free char *kept = slurp(img, &n);
        assert_memory_equal(kept, same, n);
        if (i == 0 && geteuid() == 0)
            assert_int_equal(chown(legacy, 0, 0), 0);
    }
    assert_int_equal(unlink(legacy), 0);

    /* A corrupt image: refused. */
    cleanup_close int fd = open(img, O_WRONLY);
    assert_int_equal(pwrite(fd, "\0\0", 2, HOST_VOLUME_EXT4_MAGIC_OFFSET), 2);
    assert_int_equal(host_volume_prepare(&v, legacy, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "volume `data`"));
    assert_non_null(strstr(vcr_error_msg(err), "is not ext4"));
}

struct flush_result {
    int calls;
    bool ok;
    char error[512];
    uint64_t bytes;
};

static void on_flush(struct host_vm *vm, bool ok, const char *error, double elapsed_ms,
                     uint64_t bytes, void *opaque)
{
    (void)vm;
    (void)elapsed_ms;
    struct flush_result *r = opaque;
    r->calls++;
    r->ok = ok;
    snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
    r->bytes = bytes;
}

static void flush_and_wait(struct host_vm *vm, const char *vol, struct flush_result *r)
{
    cleanup_error vcr_error_t err = NULL;
    memset(r, 0, sizeof(*r));
    if (host_volume_flush(vm, vol, on_flush, r, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    /* Answered from the loop, once the child has done the fsync. */
    assert_int_equal(r->calls, 0);
    while (r->calls == 0)
        event_base_loop(vm->env.base, EVLOOP_ONCE);
    assert_int_equal(r->calls, 1);
}

/* A flush is an fsync of the warm-cache images: what was written into the
 * shared mapping (as QEMU's guest writes are) is no longer dirty afterwards. */
static void test_flush_is_fsync_of_the_images(void **state)
{
    (void)state;
    cleanup_free char *img = tmp_path("flush.img");
    cleanup_free char *cold = tmp_path("flush-cold.img");
    cleanup_free char *state_dir = tmp_path("flush-state");
    assert_int_equal(mkdir(state_dir, 0700), 0);
    struct vcr_volume_spec vols[] = {
        {.name = "data", .size_mb = 16, .image = img, .mount = "/data", .warm_cache = true},
        {.name = "cold", .size_mb = 16, .image = cold, .mount = "/cold"},
    };
    struct vcr_vm_spec spec = {.name = "web1", .volumes = vols, .n_volumes = 2};
    static const struct ram_dir ram = {
        .path = VM_SHM_DIR, .backing = RAM_BACKING_TMPFS, .page_size = 4096};
    struct event_base *base = event_base_new();
    struct host_vm_env env = {.base = base, .host = "host1", .state_dir = state_dir, .ram = &ram};
    cleanup_error vcr_error_t err = NULL;
    struct host_vm *vm = host_vm_new(&env, &spec, NULL, NULL, &err);
    assert_non_null(vm);
    if (host_volumes_prepare(vm, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));

    int fd = open(img, O_RDWR);
    assert_true(fd >= 0);
    uint8_t *map = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    memset(map + (4 << 20), 'g', 1 << 20);
    long before = unsynced_pages(img);
    struct flush_result r;
    flush_and_wait(vm, NULL, &r);
    assert_true(r.ok);
    assert_int_equal(r.bytes, 16 << 20); /* the warm-cache image only */
    if (before >= 0) {
        assert_true(before > 0);
        assert_int_equal(unsynced_pages(img), 0);
    }
    munmap(map, 16 << 20);
    close(fd);

    /* By name; a virtio-blk volume or an unknown one is no warm-cache volume. */
    flush_and_wait(vm, "data", &r);
    assert_true(r.ok);
    assert_int_equal(host_volume_flush(vm, "cold", on_flush, &r, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    assert_non_null(strstr(vcr_error_msg(err), "no warm-cache volume `cold`"));
    vcr_error_release(&err);

    /* An fsync that fails is reported with the image's name. */
    assert_int_equal(rename(img, cold), 0);
    flush_and_wait(vm, NULL, &r);
    assert_false(r.ok);
    assert_non_null(strstr(r.error, img));

    /* An earlier agent's memory file: the image is not what QEMU maps. */
    cleanup_free char *legacy = host_volume_legacy_mem_path(vm->paths.shm_base, "data");
    write_file(legacy, "x", 1);
    assert_int_equal(host_volume_flush(vm, NULL, on_flush, &r, &err), -1);
    assert_int_equal(vcr_error_status(err), EAGAIN);
    assert_non_null(strstr(vcr_error_msg(err), legacy));
    assert_int_equal(unlink(legacy), 0);

    host_vm_free(vm);
    event_base_free(base);
}

static void test_qemu_argv(void **state)
{
    (void)state;
    struct vcr_volume_spec vols[] = {
        {.name = "data", .size_mb = 128, .image = "/i/d.img", .mount = "/data", .warm_cache = true},
        {.name = "cold",
         .size_mb = 64,
         .image = "/i/c,d.img",
         .mount = "/cold",
         .cache = VCR_VOLUME_CACHE_WRITEBACK},
    };
    struct vcr_vm_spec spec = {.name = "web1",
                               .memory_mb = 256,
                               .vcpus = 1,
                               .kernel = "/k",
                               .initrd = "/i",
                               .mac = "52:54:00:77:00:11",
                               .tap = "tap0",
                               .address = "10.77.0.11/24",
                               .ip = "10.77.0.11",
                               .volumes = vols,
                               .n_volumes = 2};
    struct vm_paths paths;
    cleanup_error vcr_error_t err = NULL;
    /* RAM on hugetlbfs: where an earlier agent kept the volume stays /dev/shm. */
    assert_int_equal(vm_paths_init(&paths, "/dev/hugepages", "/run/s", "host1", "web1", &err), 0);
    struct vm_launch l = {.qemu = "/q", .accel = "tcg", .spec = &spec, .paths = &paths};
    char **argv = vm_qemu_argv(&l, &err);
    assert_non_null(argv);
    char all[8192] = "";
    for (char **a = argv; *a; a++) {
        strcat(all, *a);
        strcat(all, " ");
    }
    cleanup_free char *legacy = host_volume_legacy_mem_path(paths.shm_base, "data");
    char want_legacy[128];
    snprintf(want_legacy, sizeof(want_legacy), "/dev/shm/vcr-host1-web1-%08x-data.pmem",
             vm_state_dir_hash("/run/s"));
    assert_string_equal(legacy, want_legacy);
    assert_true(strncmp(paths.ram, "/dev/hugepages/vcr-host1-web1-", 30) == 0);
    char want[512];
    assert_non_null(strstr(all, "-m 256M,slots=1,maxmem=384M "));
    /* The image itself backs the device: no copy in /dev/shm. */
    snprintf(want, sizeof(want),
             "-object memory-backend-file,id=pm0,share=on,mem-path=/i/d.img,size=128M "
             "-device virtio-pmem-pci,memdev=pm0,id=pmem0 ");
    assert_non_null(strstr(all, want));
    assert_null(strstr(all, "/dev/shm"));
    assert_non_null(strstr(all, "-drive file=/i/c,,d.img,format=raw,if=none,id=blk0,"
                                "cache=writeback,file.auto-read-only=off "
                                "-device virtio-blk-pci,drive=blk0,serial=cold "));
    assert_non_null(strstr(all, " vcr.pmem0=/data vcr.blk0=/dev/vda:/cold"));
    vm_argv_free(argv);
    vm_paths_clear(&paths);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_volumes_load), cmocka_unit_test(test_volumes_rejected),
        cmocka_unit_test(test_image_checks), cmocka_unit_test(test_copy_atomic),
        cmocka_unit_test(test_prepare),      cmocka_unit_test(test_flush_is_fsync_of_the_images),
        cmocka_unit_test(test_qemu_argv),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
