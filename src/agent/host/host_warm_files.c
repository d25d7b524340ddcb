/* The files of a warm restart (docs/warm-restart.md): the sealed state and its
 * checksum, the journal, and the old QEMU's pid file and QMP socket, moved
 * aside while the new QEMU takes their names. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/host/host_warm_priv.h"
#include "common/log.h"

void warm_unlink_quiet(const struct host_vm *vm, const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("VM %s: cannot remove `%s`: %s", vm->spec->name, path, strerror(errno));
}

void warm_remove_state_files(struct host_vm *vm)
{
    const char *files[] = {vm->paths.mig, vm->paths.state, vm->paths.state_tmp, vm->paths.state_sum,
                           vm->paths.journal};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        warm_unlink_quiet(vm, files[i]);
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", files[i]);
        unlink(tmp);
    }
}

bool warm_state_sealed(const struct host_vm *vm)
{
    return access(vm->paths.state, F_OK) == 0 && access(vm->paths.state_sum, F_OK) == 0;
}

/* The old QEMU's pid file and QMP socket make room for the new one's. */
int warm_move_aside(struct host_vm *vm, vcr_error_t *err)
{
    const char *from[] = {vm->paths.pid, vm->paths.qmp};
    const char *to[] = {vm->paths.old_pid, vm->paths.old_qmp};
    for (size_t i = 0; i < 2; i++)
        if (rename(from[i], to[i]) < 0 && errno != ENOENT)
            return vcr_error_errno(err, "rename `%s` to `%s`", from[i], to[i]);
    vm->warm->aside = true;
    return 0;
}

/* The old QEMU's pid file and QMP socket go back to NAME.pid / NAME.qmp if
 * they were moved aside (the new QEMU's, if it got that far, are removed). */
void warm_names_back(struct host_vm *vm)
{
    const char *from[] = {vm->paths.old_pid, vm->paths.old_qmp};
    const char *to[] = {vm->paths.pid, vm->paths.qmp};
    for (size_t i = 0; i < 2; i++) {
        if (access(from[i], F_OK) < 0)
            continue;
        warm_unlink_quiet(vm, to[i]);
        if (rename(from[i], to[i]) < 0)
            log_warn("VM %s: rename `%s` to `%s`: %s", vm->spec->name, from[i], to[i],
                     strerror(errno));
    }
}
