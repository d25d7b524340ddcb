/* The migration's archives unpacked on the target (standby_ct.h): after their
 * checks (standby_archive.h), with GNU tar.  No liblxc here: the unit tests
 * drive it. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/standby/standby_archive.h"
#include "agent/standby/standby_ct.h"
#include "common/cleanup.h"
#include "common/clock.h"

int standby_migrate_unpack(const char *dir, const char *tar,
                           const struct standby_archive_policy *policy, vcr_error_t *err)
{
    if (standby_archive_check_file(tar, policy, err) < 0)
        return vcr_error_wrap(err, "unpack");
    char *argv[] = {STANDBY_TAR, STANDBY_TAR_OPTIONS, "-C", (char *)dir, "-xf", (char *)tar, NULL};
    if (standby_run_program(argv, err) < 0)
        return vcr_error_wrap(err, "unpack `%s`", tar);
    return 0;
}

void standby_pre_ahead_dir(const struct standby_migrate_paths *p, char *out, size_t size)
{
    snprintf(out, size, "%s/pre.unpacked", p->dir);
}

int standby_ct_unpack_pre(const char *base, const char *name, int64_t *unpack_ms, vcr_error_t *err)
{
    struct standby_migrate_paths pre;
    if (standby_migrate_paths(base, name, STANDBY_PHASE_PRE, &pre, err) < 0)
        return -1;
    struct stat st;
    if (lstat(pre.tar, &st) < 0)
        return vcr_error_make(
            err, ENOENT, "container `%s`: no `%s`: container_image_write it first", name, pre.tar);
    char ahead[300];
    standby_pre_ahead_dir(&pre, ahead, sizeof(ahead));
    int64_t t0 = vcr_mono_ms();
    if (standby_remove_tree(ahead, err) < 0)
        return -1;
    if (mkdir(ahead, 0700) < 0)
        return vcr_error_errno(err, "mkdir `%s`", ahead);
    if (standby_migrate_unpack(ahead, pre.tar, &standby_archive_pre, err) < 0) {
        cleanup_error vcr_error_t rm_err = NULL;
        standby_remove_tree(ahead, &rm_err);
        return -1;
    }
    /* Checked and unpacked: a restore takes this tree while no newer pre.tar
     * has come (standby_ct_restore). */
    if (unlink(pre.tar) < 0)
        return vcr_error_errno(err, "unlink `%s`", pre.tar);
    *unpack_ms = vcr_mono_ms() - t0;
    return 0;
}
