/* Disk-image VMs (src/config/disk_image.c, the `image.disk` keys of
 * vm_spec.c, src/agent/host/host_disk.c, the QEMU argv of vm.c): formats found
 * from headers, bad images refused with the file named, overlays made by
 * the real qemu-img and never thrown away, the NoCloud seed's contents and
 * a real genisoimage run. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/host/host_disk.h"
#include "agent/host/vm.h"
#include "common/cleanup.h"
#include "config/agent_config.h"
#include "config/disk_image.h"

static char dir[] = "/tmp/vcr-test-disk-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *path_of(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* A qcow2 header (no clusters behind it: enough for the header checks) with
 * an optional backing file name at offset 512. */
static void write_qcow2(const char *path, uint32_t version, const char *backing)
{
    unsigned char b[1024] = {0};
    put_be32(b, 0x514649fb);
    put_be32(b + 4, version);
    if (backing) {
        put_be32(b + 8 + 4, 512); /* backing_file_offset (u64): low half */
        put_be32(b + 16, (uint32_t)strlen(backing));
        memcpy(b + 512, backing, strlen(backing));
    }
    write_bytes(path, b, sizeof(b));
}

static void expect_probe_error(const char *path, enum vcr_disk_format fmt, int status,
                               const char *needle)
{
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(vcr_disk_probe(path, &fmt, &err), -1);
    if (strstr(vcr_error_msg(err), needle) == NULL)
        fail_msg("message lacks `%s`: %s", needle, vcr_error_msg(err));
    assert_non_null(strstr(vcr_error_msg(err), path));
    assert_int_equal(vcr_error_status(err), status);
}

static void test_probe_formats(void **state)
{
    (void)state;
    cleanup_free char *raw = path_of("root.raw"), *q = path_of("root.qcow2");
    char sector[512] = "just a file system";
    write_bytes(raw, sector, sizeof(sector));
    write_qcow2(q, 3, NULL);
    enum vcr_disk_format fmt = VCR_DISK_AUTO;
    assert_int_equal(vcr_disk_probe(raw, &fmt, NULL), 0);
    assert_int_equal(fmt, VCR_DISK_RAW);
    fmt = VCR_DISK_AUTO;
    assert_int_equal(vcr_disk_probe(q, &fmt, NULL), 0);
    assert_int_equal(fmt, VCR_DISK_QCOW2);
    /* A configured format must be what the header says. */
    expect_probe_error(q, VCR_DISK_RAW, EINVAL, "is a qcow2 image but format raw");
    expect_probe_error(raw, VCR_DISK_QCOW2, EINVAL, "is not a qcow2 image");
}

static void test_probe_refuses_bad_images(void **state)
{
    (void)state;
    cleanup_free char *missing = path_of("nothing-here.qcow2"), *empty = path_of("empty.raw"),
                      *vmdk = path_of("disk.vmdk"), *v9 = path_of("v9.qcow2"),
                      *trunc = path_of("trunc.qcow2"), *orphan = path_of("orphan.qcow2"),
                      *mid = path_of("mid.qcow2"), *top = path_of("top.qcow2");
    expect_probe_error(missing, VCR_DISK_AUTO, ENOENT, "No such file");
    write_bytes(empty, "", 0);
    expect_probe_error(empty, VCR_DISK_AUTO, EINVAL, "is empty");
    write_bytes(vmdk, "KDMV\1\0\0\0", 8);
    expect_probe_error(vmdk, VCR_DISK_AUTO, EPROTONOSUPPORT, "vmdk format; allowed: raw or qcow2");
    write_qcow2(v9, 9, NULL);
    expect_probe_error(v9, VCR_DISK_AUTO, EBADMSG, "qcow2 version 9");
    write_bytes(trunc, "QFI\xfb\0\0\0\3", 8);
    expect_probe_error(trunc, VCR_DISK_AUTO, EBADMSG, "header truncated");
    /* A chain: top -> mid (relative name) -> base that is gone. */
    write_qcow2(orphan, 3, "gone.raw");
    expect_probe_error(orphan, VCR_DISK_AUTO, ENOENT, "backing file");
    write_qcow2(mid, 3, "gone.raw");
    write_qcow2(top, 3, "mid.qcow2");
    cleanup_error vcr_error_t err = NULL;
    enum vcr_disk_format fmt = VCR_DISK_AUTO;
    assert_int_equal(vcr_disk_probe(top, &fmt, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "gone.raw"));
    assert_non_null(strstr(vcr_error_msg(err), mid)); /* who names it */
    /* The chain made whole: accepted. */
    cleanup_free char *gone = path_of("gone.raw");
    write_bytes(gone, "x", 1);
    fmt = VCR_DISK_AUTO;
    assert_int_equal(vcr_disk_probe(top, &fmt, NULL), 0);
    char backing[256];
    assert_int_equal(vcr_qcow2_backing(top, backing, sizeof(backing), NULL), 0);
    assert_string_equal(backing, "mid.qcow2");
}

/* An agent config with one disk-image VM whose image mapping and extra keys
 * are given; loaded from a file in dir. */
static struct vcr_agent_config *load_disk_vm(const char *image, const char *extra, vcr_error_t *err)
{
    cleanup_free char *cfg_path = path_of("agent.yaml");
    FILE *f = fopen(cfg_path, "w");
    assert_non_null(f);
    fprintf(f,
            "host: h1\nserver: 127.0.0.1:7070\nstate_dir: %s/state\naccel: tcg\n"
            "qemu: /bin/true\nqemu_img: /bin/true\ngenisoimage: /bin/true\nvms:\n"
            "  - name: deb1\n    memory_mb: 512\n    image: %s\n"
            "    mac: \"52:54:00:77:00:21\"\n    tap: tap9\n    address: 10.77.0.21/24\n"
            "    gateway: 10.77.0.1\n%s",
            dir, image, extra);
    assert_int_equal(fclose(f), 0);
    return vcr_agent_config_load(cfg_path, err);
}

static void expect_config_error(const char *image, const char *extra, const char *needle)
{
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_disk_vm(image, extra, &err);
    if (cfg) {
        vcr_agent_config_free(cfg);
        fail_msg("accepted: image %s %s", image, extra);
    }
    if (strstr(vcr_error_msg(err), needle) == NULL)
        fail_msg("message lacks `%s`: %s", needle, vcr_error_msg(err));
}

static void test_config_disk_vm(void **state)
{
    (void)state;
    cleanup_free char *raw = path_of("cfg.raw"), *kernel = path_of("vmlinuz");
    write_bytes(raw, "rootfs", 6);
    write_bytes(kernel, "k", 1);
    cleanup_free char *img = NULL;
    assert_true(asprintf(&img, "{disk: cfg.raw, kernel: vmlinuz}") > 0);
    cleanup_error vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = load_disk_vm(img, "    network: kernel\n", &err);
    if (cfg == NULL)
        fail_msg("%s", vcr_error_msg(err));
    assert_string_equal(cfg->vms[0].disk, raw);
    assert_int_equal(cfg->vms[0].disk_format, VCR_DISK_RAW);
    assert_string_equal(cfg->vms[0].root, "/dev/vda");
    assert_int_equal(cfg->vms[0].network, VCR_NET_KERNEL);
    assert_null(cfg->vms[0].initrd);
    assert_string_equal(cfg->qemu_img, "/bin/true");
    vcr_agent_config_free(cfg);
    /* Firmware boot: the default network is a NoCloud seed. */
    cfg = load_disk_vm("{disk: cfg.raw, format: raw}", "", &err);
    assert_non_null(cfg);
    assert_int_equal(cfg->vms[0].network, VCR_NET_NOCLOUD);
    assert_null(cfg->vms[0].kernel);
    vcr_agent_config_free(cfg);

    expect_config_error("{disk: nope.qcow2}", "", "vms[0].image.disk: `");
    expect_config_error("{disk: cfg.raw, format: vmdk}", "",
                        "vms[0].image.format: `vmdk` is not a disk format; allowed: raw, qcow2");
    expect_config_error("{disk: cfg.raw, format: qcow2}", "", "is not a qcow2 image");
    expect_config_error("{disk: cfg.raw}", "    network: kernel\n",
                        "vms[0].network: `kernel` needs image.kernel");
    expect_config_error("{disk: cfg.raw}", "    network: dhcp\n",
                        "vms[0].network: `dhcp` is not a way to configure");
    expect_config_error("{disk: cfg.raw, initrd: vmlinuz}", "",
                        "vms[0].image.initrd: given without image.kernel");
    expect_config_error("{disk: cfg.raw, kernel: vmlinuz, root: sda1}", "",
                        "vms[0].image.root: `sda1` is not a root device");
    expect_config_error("{disk: cfg.raw}", "    network: image\n    user_data: vmlinuz\n",
                        "vms[0].user_data: is for network: nocloud only");
    expect_config_error("{kernel: vmlinuz, initrd: vmlinuz, format: raw}", "",
                        "vms[0].image.disk: required with image.format");
    expect_config_error("{kernel: vmlinuz, initrd: vmlinuz}", "    network: kernel\n",
                        "vms[0].network: `kernel` is for disk-image VMs only");
    /* A base among the VMs' overlays (state_dir) would be written by a VM. */
    cleanup_free char *state_dir = path_of("state"), *in_state = path_of("state/x.raw");
    mkdir(state_dir, 0700);
    write_bytes(in_state, "x", 1);
    expect_config_error("{disk: state/x.raw}", "",
                        "is inside state_dir"); /* relative to the config's directory */
}

static struct vcr_vm_spec disk_spec(const char *base, enum vcr_guest_network net)
{
    return (struct vcr_vm_spec){.name = "deb1",
                                .memory_mb = 512,
                                .vcpus = 1,
                                .disk = (char *)base,
                                .disk_format = VCR_DISK_RAW,
                                .root = "/dev/vda",
                                .kernel = "/boot/vmlinuz",
                                .initrd = "/boot/initrd.img",
                                .network = net,
                                .mac = "52:54:00:77:00:21",
                                .tap = "tap9",
                                .address = "10.77.0.21/24",
                                .ip = "10.77.0.21",
                                .prefix = 24,
                                .gateway = "10.77.0.1"};
}

static bool argv_has(char **argv, const char *needle)
{
    for (char **a = argv; *a; a++)
        if (strstr(*a, needle))
            return true;
    return false;
}

static void test_qemu_argv_of_disk_vm(void **state)
{
    (void)state;
    struct vm_paths paths;
    assert_int_equal(vm_paths_init(&paths, "/dev/shm", "/run/s", "h1", "deb1", NULL), 0);
    struct vcr_vm_spec spec = disk_spec("/img/base.raw", VCR_NET_KERNEL);
    struct vm_launch l = {.qemu = "/usr/bin/qemu", .accel = "tcg", .spec = &spec, .paths = &paths};
    char **argv = vm_qemu_argv(&l, NULL);
    assert_non_null(argv);
    assert_true(argv_has(argv, "file=/run/s/deb1.qcow2,if=none,id=disk0,format=qcow2"));
    /* Opened read-write once, never reopened by name (under -runas that open
     * would be qemu_user's, who cannot reach the state directory: the warm
     * restart's migration failed; vm.c, DRIVE_KEEP_FD). */
    assert_true(argv_has(argv, ",file.auto-read-only=off"));
    assert_true(argv_has(argv, "root=/dev/vda rw console=ttyS0 net.ifnames=0 "
                               "ip=10.77.0.21::10.77.0.1:255.255.255.0:deb1:eth0:off"));
    assert_false(argv_has(argv, "vcr.ip="));       /* the guest has no code of ours */
    assert_false(argv_has(argv, "base.raw"));      /* only the overlay, never the base */
    assert_false(argv_has(argv, "deb1.seed.iso")); /* network: kernel has no seed */
    vm_argv_free(argv);
    spec = disk_spec("/img/base.raw", VCR_NET_NOCLOUD);
    spec.kernel = spec.initrd = NULL; /* firmware boot */
    argv = vm_qemu_argv(&l, NULL);
    assert_true(argv_has(argv, "file=/run/s/deb1.seed.iso,if=none,id=seed,format=raw,readonly=on"));
    vm_argv_free(argv);
    /* With a data volume the root disk's device still comes first (/dev/vda):
     * an if=virtio root drive was created after every -device, so the guest
     * saw the volume as vda and its root= found no init. */
    struct vcr_volume_spec vol = {.name = "vcrdata",
                                  .size_mb = 32,
                                  .image = "/img/vcrdata.img",
                                  .mount = "/srv/data",
                                  .cache = VCR_VOLUME_CACHE_NONE};
    spec.volumes = &vol;
    spec.n_volumes = 1;
    argv = vm_qemu_argv(&l, NULL);
    int root_at = -1, volume_at = -1, seed_at = -1;
    for (int i = 0; argv[i]; i++) {
        if (strcmp(argv[i], "virtio-blk-pci,drive=disk0") == 0)
            root_at = i;
        else if (strncmp(argv[i], "virtio-blk-pci,drive=blk0", 25) == 0)
            volume_at = i;
        else if (strcmp(argv[i], "virtio-blk-pci,drive=seed") == 0)
            seed_at = i;
    }
    assert_true(root_at > 0 && volume_at > root_at && seed_at > volume_at);
    assert_false(argv_has(argv, "-kernel"));
    assert_false(argv_has(argv, "-append"));
    vm_argv_free(argv);
    vm_paths_clear(&paths);
}

static void test_seed_contents(void **state)
{
    (void)state;
    struct vcr_vm_spec spec = disk_spec("/img/base.raw", VCR_NET_NOCLOUD);
    struct host_disk_env env = {.host = "h1", .state_dir = "/run/s"};
    cleanup_free char *meta = NULL, *net = NULL;
    assert_int_equal(host_disk_seed_meta_data(&env, &spec, &meta), 0);
    assert_int_equal(host_disk_seed_network_config(&spec, &net), 0);
    assert_non_null(strstr(meta, "instance-id: vcr-h1-deb1-"));
    assert_non_null(strstr(meta, "local-hostname: deb1\n"));
    assert_non_null(strstr(net, "macaddress: \"52:54:00:77:00:21\""));
    assert_non_null(strstr(net, "- 10.77.0.21/24\n"));
    assert_non_null(strstr(net, "via: 10.77.0.1\n"));
    /* The same VM on the same host gets the same instance (cloud-init runs
     * its once-per-instance steps once). */
    cleanup_free char *again = NULL;
    assert_int_equal(host_disk_seed_meta_data(&env, &spec, &again), 0);
    assert_string_equal(meta, again);
}

/* The real tools: qemu-img makes the overlay, genisoimage the seed. */
static void test_prepare_with_real_tools(void **state)
{
    (void)state;
    if (access("/usr/bin/qemu-img", X_OK) < 0 || access("/usr/bin/genisoimage", X_OK) < 0)
        skip();
    cleanup_free char *state_dir = path_of("run"), *base = path_of("base.raw"),
                      *other = path_of("other.raw");
    mkdir(state_dir, 0700);
    char block[4096] = {0};
    write_bytes(base, block, sizeof(block));
    write_bytes(other, block, sizeof(block));
    struct vm_paths paths;
    assert_int_equal(vm_paths_init(&paths, "/dev/shm", state_dir, "h1", "deb1", NULL), 0);
    struct host_disk_env env = {.qemu_img = "/usr/bin/qemu-img",
                                .genisoimage = "/usr/bin/genisoimage",
                                .host = "h1",
                                .state_dir = state_dir};
    struct vcr_vm_spec spec = disk_spec(base, VCR_NET_NOCLOUD);
    cleanup_error vcr_error_t err = NULL;
    if (host_disk_prepare(&env, &spec, &paths, &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    char backing[4096];
    assert_int_equal(vcr_qcow2_backing(paths.disk, backing, sizeof(backing), NULL), 0);
    assert_string_equal(backing, base);
    struct stat st;
    assert_int_equal(stat(paths.seed, &st), 0);
    assert_true(st.st_size > 0);
    /* An ISO 9660 primary volume descriptor labelled cidata (cloud-init's NoCloud). */
    FILE *f = fopen(paths.seed, "r");
    char pvd[64];
    assert_int_equal(fseek(f, 16 * 2048, SEEK_SET), 0);
    assert_int_equal(fread(pvd, 1, sizeof(pvd), f), sizeof(pvd));
    fclose(f);
    assert_memory_equal(pvd + 1, "CD001", 5);
    assert_memory_equal(pvd + 40, "cidata", 6);
    /* The VM's disk survives its next start: written data stays. */
    struct stat before;
    assert_int_equal(stat(paths.disk, &before), 0);
    assert_int_equal(host_disk_prepare(&env, &spec, &paths, NULL), 0);
    assert_int_equal(stat(paths.disk, &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    assert_int_equal(host_disk_check(&spec, &paths, NULL), 0);
    /* The base rebuilt in place (a new file renamed over it): refused, the
     * disk kept; the identity file names what changed. */
    cleanup_free char *rebuilt = path_of("rebuilt.raw");
    write_bytes(rebuilt, block, sizeof(block) / 2);
    assert_int_equal(rename(rebuilt, base), 0);
    assert_int_equal(host_disk_prepare(&env, &spec, &paths, &err), -1);
    assert_int_equal(vcr_error_status(err), EEXIST);
    assert_non_null(strstr(vcr_error_msg(err), "changed since its overlay"));
    assert_int_equal(stat(paths.disk, &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    vcr_error_release(&err);
    /* Another base: refused, the old disk kept and named. */
    spec.disk = other;
    assert_int_equal(host_disk_prepare(&env, &spec, &paths, &err), -1);
    assert_int_equal(vcr_error_status(err), EEXIST);
    assert_non_null(strstr(vcr_error_msg(err), "remove the overlay"));
    assert_int_equal(stat(paths.disk, &st), 0);
    assert_int_equal(st.st_ino, before.st_ino);
    vcr_error_release(&err);
    /* The base gone since the configuration was loaded: refused, nothing made. */
    spec.disk = base;
    unlink(paths.disk);
    unlink(base);
    assert_int_equal(host_disk_prepare(&env, &spec, &paths, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), base));
    assert_int_equal(access(paths.disk, F_OK), -1);
    vcr_error_release(&err);
    /* A tool that fails: its exit named, no overlay left behind. */
    write_bytes(base, block, sizeof(block));
    env.qemu_img = "/bin/false";
    assert_int_equal(host_disk_prepare(&env, &spec, &paths, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "/bin/false exited 1"));
    assert_int_equal(access(paths.disk, F_OK), -1);
    vm_paths_clear(&paths);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_formats),  cmocka_unit_test(test_probe_refuses_bad_images),
        cmocka_unit_test(test_config_disk_vm), cmocka_unit_test(test_qemu_argv_of_disk_vm),
        cmocka_unit_test(test_seed_contents),  cmocka_unit_test(test_prepare_with_real_tools),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
