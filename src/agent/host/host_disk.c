/* Overlays and NoCloud seeds of disk-image VMs (host_disk.h). */
#include "agent/host/host_disk.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/host/host_vm_priv.h"
#include "agent/proc.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/durable.h"
#include "common/log.h"
#include "config/disk_image.h"

/* Runs argv (argv[0] absolute) to its end within HOST_DISK_TOOL_MS, output
 * appended to log_path; 0 when it exited 0.  Synchronous: both tools take
 * tens of milliseconds (a qcow2 header, an ISO of three small files). */
static int run_tool(char *const argv[], const char *log_path, const char *vm, vcr_error_t *err)
{
    pid_t pid = proc_spawn_tool(argv, log_path, err);
    if (pid < 0)
        return vcr_error_wrap(err, "VM `%s`: run %s", vm, argv[0]);
    int64_t deadline = vcr_mono_ms() + HOST_DISK_TOOL_MS;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return vcr_error_errno(err, "VM `%s`: wait for %s", vm, argv[0]);
        if (vcr_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return vcr_error_make(err, ETIMEDOUT, "VM `%s`: %s did not finish within %d ms", vm,
                                  argv[0], HOST_DISK_TOOL_MS);
        }
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    char last[256] = "";
    host_vm_log_last_line(log_path, last, sizeof(last));
    return vcr_error_make(err, EIO, "VM `%s`: %s %s %d (%s; see `%s`)", vm, argv[0],
                          WIFEXITED(status) ? "exited" : "was killed by signal",
                          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                          last[0] ? last : "no output", log_path);
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* What identifies the base's contents: a base rebuilt and renamed into place
 * keeps its path but not its inode, size or mtime. */
static int base_identity(const char *base, char *out, size_t size, vcr_error_t *err)
{
    struct stat st;
    if (stat(base, &st) < 0)
        return vcr_error_errno(err, "disk image `%s`", base);
    snprintf(out, size, "dev %llu ino %llu size %lld mtime %lld.%09ld\n",
             (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (long long)st.st_size,
             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    return 0;
}

static char *identity_path(const char *overlay)
{
    char *p = NULL;
    return asprintf(&p, "%s.base", overlay) < 0 ? NULL : p;
}

/* An existing overlay must be over this base, and the base unchanged since the
 * overlay was made (NAME.qcow2.base): over another or a rebuilt base, the old
 * overlay's clusters would hand the guest a corrupt disk. */
static int check_overlay(const struct vcr_vm_spec *spec, const char *overlay, vcr_error_t *err)
{
    char backing[PATH_MAX];
    if (vcr_qcow2_backing(overlay, backing, sizeof(backing), err) < 0)
        return vcr_error_wrap(err, "VM `%s`: its overlay", spec->name);
    if (backing[0] == '/' && same_file(backing, spec->disk)) {
        char now[256], then[256] = "";
        cleanup_free char *id_path = identity_path(overlay);
        if (id_path == NULL)
            return vcr_error_make(err, ENOMEM, "out of memory");
        if (base_identity(spec->disk, now, sizeof(now), err) < 0)
            return -1;
        FILE *f = fopen(id_path, "re");
        if (f == NULL) /* an overlay from before the identity was kept: keep it from now */
            return vcr_file_replace(id_path, now, strlen(now), err);
        bool read = fgets(then, sizeof(then), f) != NULL;
        fclose(f);
        if (read && strcmp(then, now) == 0)
            return 0;
        return vcr_error_make(err, EEXIST,
                              "VM `%s`: its base `%s` changed since its overlay `%s` was made "
                              "over it (then: %.*s; now: %.*s); remove the overlay to start the "
                              "VM anew from this base (its disk is kept until then)",
                              spec->name, spec->disk, overlay, (int)strcspn(then, "\n"), then,
                              (int)strcspn(now, "\n"), now);
    }
    return vcr_error_make(err, EEXIST,
                          "VM `%s`: its overlay `%s` is over `%s`, not over the configured base "
                          "`%s`; remove the overlay to start the VM anew from this base (its "
                          "disk is kept until then)",
                          spec->name, overlay, backing[0] ? backing : "no backing file",
                          spec->disk);
}

static int make_overlay(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                        const struct vm_paths *paths, vcr_error_t *err)
{
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", paths->disk) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    unlink(tmp);
    char *argv[] = {(char *)env->qemu_img,
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    (char *)vcr_disk_format_name(spec->disk_format),
                    "-b",
                    spec->disk,
                    tmp,
                    NULL};
    char id[256];
    cleanup_free char *id_path = identity_path(paths->disk);
    if (id_path == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    if (run_tool(argv, paths->log, spec->name, err) < 0 ||
        base_identity(spec->disk, id, sizeof(id), err) < 0 ||
        vcr_file_replace(id_path, id, strlen(id), err) < 0 ||
        vcr_rename_durable(tmp, paths->disk, err) < 0) {
        unlink(tmp);
        return vcr_error_wrap(err, "VM `%s`: create its overlay `%s` over `%s`", spec->name,
                              paths->disk, spec->disk);
    }
    log_info("VM %s: disk `%s`, a new qcow2 overlay over `%s` (%s)", spec->name, paths->disk,
             spec->disk, vcr_disk_format_name(spec->disk_format));
    return 0;
}

int host_disk_seed_meta_data(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                             char **out)
{
    if (asprintf(out, "instance-id: vcr-%s-%s-%08x\nlocal-hostname: %s\n", env->host, spec->name,
                 vm_state_dir_hash(env->state_dir), spec->name) < 0)
        return *out = NULL, -1;
    return 0;
}

int host_disk_seed_network_config(const struct vcr_vm_spec *spec, char **out)
{
    cleanup_free char *routes = NULL;
    if (asprintf(&routes, "    routes:\n      - to: 0.0.0.0/0\n        via: %s\n",
                 spec->gateway ? spec->gateway : "") < 0)
        return *out = NULL, -1;
    if (asprintf(out,
                 "version: 2\n"
                 "ethernets:\n"
                 "  eth0:\n"
                 "    match:\n"
                 "      macaddress: \"%s\"\n"
                 "    set-name: eth0\n"
                 "    addresses:\n"
                 "      - %s\n"
                 "%s",
                 spec->mac, spec->address, spec->gateway ? routes : "") < 0)
        return *out = NULL, -1;
    return 0;
}

static const char default_user_data[] = "#cloud-config\n{}\n";

/* The three files in a fresh directory next to the seed, genisoimage over
 * them into SEED.tmp, renamed; the directory removed either way. */
static int write_seed(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                      const struct vm_paths *paths, vcr_error_t *err)
{
    cleanup_free char *dir = NULL, *tmp = NULL, *meta = NULL, *net = NULL, *p_meta = NULL,
                      *p_net = NULL, *p_user = NULL;
    if (asprintf(&dir, "%s.d", paths->seed) < 0 || asprintf(&tmp, "%s.tmp", paths->seed) < 0 ||
        asprintf(&p_meta, "%s/meta-data", dir) < 0 ||
        asprintf(&p_net, "%s/network-config", dir) < 0 ||
        asprintf(&p_user, "%s/user-data", dir) < 0 ||
        host_disk_seed_meta_data(env, spec, &meta) < 0 ||
        host_disk_seed_network_config(spec, &net) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cleanup_free char *user = NULL;
    size_t user_len = sizeof(default_user_data) - 1;
    if (spec->user_data) {
        FILE *f = fopen(spec->user_data, "re");
        if (f == NULL)
            return vcr_error_errno(err, "VM `%s`: user_data `%s`", spec->name, spec->user_data);
        user = malloc(64 * 1024);
        user_len = user ? fread(user, 1, 64 * 1024, f) : 0;
        bool too_big = user && user_len == 64 * 1024 && fgetc(f) != EOF;
        fclose(f);
        if (user == NULL)
            return vcr_error_make(err, ENOMEM, "out of memory");
        if (too_big)
            return vcr_error_make(err, EFBIG,
                                  "VM `%s`: user_data `%s` is over 64 KiB; allowed: up to 64 KiB",
                                  spec->name, spec->user_data);
    }
    unlink(p_meta), unlink(p_net), unlink(p_user), rmdir(dir), unlink(tmp);
    int rc = -1;
    if (mkdir(dir, 0700) < 0) {
        vcr_error_errno(err, "VM `%s`: mkdir `%s`", spec->name, dir);
        goto out;
    }
    if (vcr_file_replace(p_meta, meta, strlen(meta), err) < 0 ||
        vcr_file_replace(p_net, net, strlen(net), err) < 0 ||
        vcr_file_replace(p_user, user ? user : default_user_data, user_len, err) < 0)
        goto out;
    char *argv[] = {(char *)env->genisoimage,
                    "-quiet",
                    "-output",
                    tmp,
                    "-volid",
                    "cidata",
                    "-joliet",
                    "-rock",
                    p_user,
                    p_meta,
                    p_net,
                    NULL};
    if (run_tool(argv, paths->log, spec->name, err) < 0 ||
        vcr_rename_durable(tmp, paths->seed, err) < 0)
        goto out;
    rc = 0;
out:
    unlink(p_meta), unlink(p_net), unlink(p_user), rmdir(dir);
    if (rc < 0) {
        unlink(tmp);
        vcr_error_wrap(err, "VM `%s`: write its cloud-init seed `%s`", spec->name, paths->seed);
    }
    return rc;
}

int host_disk_prepare(const struct host_disk_env *env, const struct vcr_vm_spec *spec,
                      const struct vm_paths *paths, vcr_error_t *err)
{
    if (spec->disk == NULL)
        return 0;
    enum vcr_disk_format fmt = spec->disk_format;
    if (vcr_disk_probe(spec->disk, &fmt, err) < 0)
        return vcr_error_wrap(err, "VM `%s`: its base image", spec->name);
    if (access(paths->disk, F_OK) == 0) {
        if (check_overlay(spec, paths->disk, err) < 0)
            return -1;
    } else if (make_overlay(env, spec, paths, err) < 0) {
        return -1;
    }
    if (spec->network == VCR_NET_NOCLOUD && write_seed(env, spec, paths, err) < 0)
        return -1;
    return 0;
}

int host_disk_check(const struct vcr_vm_spec *spec, const struct vm_paths *paths, vcr_error_t *err)
{
    if (spec->disk == NULL)
        return 0;
    if (access(paths->disk, R_OK | W_OK) < 0)
        return vcr_error_errno(err, "VM `%s`: its overlay `%s`", spec->name, paths->disk);
    if (spec->network == VCR_NET_NOCLOUD && access(paths->seed, R_OK) < 0)
        return vcr_error_errno(err, "VM `%s`: its seed `%s`", spec->name, paths->seed);
    return 0;
}
