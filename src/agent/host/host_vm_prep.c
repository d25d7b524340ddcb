/* A VM's disk image and volumes are made before its QEMU starts: an overlay
 * (qemu-img), a cloud-init seed (genisoimage), a new volume's filesystem
 * (mkfs.ext4 -d of its source_dir), a memory file an earlier agent left moved
 * into its image.  Seconds for a large volume: in a child (standby_job.h), so
 * that the agent's loop goes on meanwhile.  A loop held up past the server's
 * host timeout got the host declared lost, and past the fence watchdog's
 * limit (1875 ms with the defaults) had every VM of the host killed. */
#include "agent/host/host_vm_priv.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "agent/host/host_disk.h"
#include "agent/host/host_volume.h"
#include "agent/standby_job.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

bool host_vm_needs_prep(const struct host_vm *vm)
{
    return vm->spec->disk != NULL || vm->spec->n_volumes > 0;
}

/* In the child: what it makes is on disk; its memory is lost with it.  It
 * dies with the agent (a kill -9 included): a next agent's preparation must not
 * race it on the same temporary files. */
static int prepare(void *arg, vcr_error_t *err)
{
    struct host_vm *vm = arg;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != vm->prep_parent)
        return vcr_error_make(err, ESRCH, "the agent is gone");
#if VCR_TEST_FAULTS
    /* Tests only (--test-faults): held while STATE_DIR/NAME.prep-hold exists
     * (60 s at most), so that a test can send orders during a preparation. */
    if (vm->env.test_faults) {
        char hold[4200];
        snprintf(hold, sizeof(hold), "%s/%s.prep-hold", vm->env.state_dir, vm->spec->name);
        for (int i = 0; i < 3000 && access(hold, F_OK) == 0; i++)
            nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    }
#endif
    if (host_disk_prepare(&vm->env.disk, vm->spec, &vm->paths, err) < 0 ||
        host_volumes_prepare(vm, err) < 0)
        return -1;
    return 0;
}

static void on_prepared(struct standby_job *job, const char *error, void *opaque)
{
    (void)job;
    struct host_vm *vm = opaque;
    vm->prep = NULL; /* freed after this returns */
    log_info("VM %s: disks prepared in %lld ms%s%s", vm->spec->name,
             (long long)(vcr_mono_ms() - vm->prep_started_ms), error ? ": " : "",
             error ? error : "");
    if (error) {
        char cause[VM_CAUSE_MAX];
        snprintf(cause, sizeof(cause), "start VM `%.64s`: %.400s", vm->spec->name, error);
        vm_sm_failed(&vm->sm, cause);
        host_vm_changed(vm, vcr_wall_ms());
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    if (host_vm_launch(vm, vm->prep_why, &err) < 0)
        log_warn("VM %s: %s", vm->spec->name, vcr_error_msg(err));
}

int host_vm_prep_start(struct host_vm *vm, const char *why, vcr_error_t *err)
{
    snprintf(vm->prep_why, sizeof(vm->prep_why), "%s", why);
    vm->prep_started_ms = vcr_mono_ms();
    vm->prep_parent = getpid();
    vm->prep = standby_job_run(vm->env.base, prepare, vm, on_prepared, vm, err);
    if (vm->prep == NULL) {
        vm_sm_failed(&vm->sm, vcr_error_msg(err ? *err : NULL));
        host_vm_changed(vm, vcr_wall_ms());
        return vcr_error_wrap(err, "start VM `%s`: prepare its disks", vm->spec->name);
    }
    char cause[VM_CAUSE_MAX];
    snprintf(cause, sizeof(cause), "%.200s: preparing its disks (child pid %d)", why,
             (int)standby_job_pid(vm->prep));
    vm_sm_preparing(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
    return 0;
}

void host_vm_prep_cancel(struct host_vm *vm, const char *cause)
{
    if (vm->prep == NULL)
        return;
    pid_t pid = standby_job_pid(vm->prep);
    /* The child is reaped by the agent's SIGCHLD handling (proc.c); what it
     * left half made is made again by the next start. */
    standby_job_signal(vm->prep, SIGKILL);
    standby_job_free(vm->prep);
    vm->prep = NULL;
    log_info("VM %s: %s: its disk preparation (pid %d) killed", vm->spec->name, cause, (int)pid);
    vm_sm_unstarted(&vm->sm, cause);
    host_vm_changed(vm, vcr_wall_ms());
}

void host_vm_prep_free(struct host_vm *vm)
{
    if (vm->prep == NULL)
        return;
    /* What it left half made is made again by the next start. */
    standby_job_signal(vm->prep, SIGKILL);
    standby_job_free(vm->prep);
    vm->prep = NULL;
}
