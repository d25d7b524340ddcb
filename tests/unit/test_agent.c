/* Unit tests for the host agent (src/agent/): QEMU command line, /proc
 * parsing and CPU percent, the VM state machine, the accelerator probe (with
 * a stand-in QEMU), the server connection against an in-process server, and
 * real QEMU supervision (start, kill -9, stop, adoption) when QEMU is
 * installed and we may create a network namespace.  Every wait is on an event
 * with a deadline, never a fixed sleep. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/agent.h"
#include "agent/host/accel.h"
#include "agent/agent_conn.h"
#include "agent/host/fence_watchdog.h"
#include "agent/host/host_fence.h"
#include "agent/host/host_reboot.h"
#include "agent/host/host_sampler.h"
#include "agent/host/host_vm.h"
#include "agent/host/host_volume.h"
#include "agent/proc.h"
#include "agent/host/qemu_allow.h"
#include "agent/host/ram_dir.h"
#include "agent/standby_job.h"
#include "agent/host/tap_fd.h"
#include "agent/host/pause_boost.h"
#include "proto/proto_code.h"
#include "agent/host/vm.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "page_cache.h"
#include "proto/proto.h"

static const char *data_dir(void)
{
    const char *d = getenv("VCR_TEST_DATA");
    return d ? d : "tests/unit/data";
}

/* --- waiting: run the loop until a condition holds or a deadline passes --- */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

static bool run_until(struct event_base *base, bool (*done)(void *), void *arg, int timeout_ms)
{
    bool expired = false;
    struct event *t = evtimer_new(base, on_deadline, &expired);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!done(arg) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return done(arg);
}

static char **find_opt(char **argv, const char *opt)
{
    for (char **a = argv; *a; a++)
        if (strcmp(*a, opt) == 0 && a[1])
            return a + 1;
    return NULL;
}

/* Whether argv holds opt immediately followed by value. */
static bool has_opt(char **argv, const char *opt, const char *value)
{
    for (char **a = argv; *a && a[1]; a++)
        if (strcmp(a[0], opt) == 0 && strcmp(a[1], value) == 0)
            return true;
    return false;
}

static bool has_arg(char **argv, const char *arg)
{
    for (char **a = argv; *a; a++)
        if (strcmp(*a, arg) == 0)
            return true;
    return false;
}

static struct vcr_vm_spec web1_spec(void)
{
    struct vcr_vm_spec s = {
        .name = "web1",
        .memory_mb = 256,
        .vcpus = 1,
        .kernel = "/lab/vmlinuz",
        .initrd = "/lab/initrd.img",
        .mac = "52:54:00:77:00:11",
        .tap = "tap0",
        .address = "10.77.0.11/24",
        .ip = "10.77.0.11",
        .prefix = 24,
        .gateway = "10.77.0.1",
        .kernel_args = "vcr.dns=10.77.0.1",
        .autostart = true,
    };
    return s;
}

/* --- QEMU command line ----------------------------------------------------- */

/* Two agents with the same host name (labs in two network namespaces) must not
 * share a RAM file: the state directory is part of its name. */
/* An unknown --role is refused as not a role (it once said "not implemented"),
 * listing the roles this binary has; the host role is in every build. */
static void test_unknown_role(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    assert_int_equal(agent_role_check("host", &err), 0);
    assert_null(err);
    assert_int_equal(agent_role_check("nosuch", &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "--role `nosuch`: not a role; the roles are: host"));
    vcr_error_release(&err);
    struct agent_options opts = {.role = "primary", .server = "127.0.0.1:1", .name = "x"};
    assert_int_equal(agent_config_test(&opts, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "`primary`: not a role"));
    vcr_error_release(&err);
}

static void test_ram_file_differs_by_state_dir(void **state)
{
    (void)state;
    struct vm_paths a, b;
    assert_int_equal(vm_paths_init(&a, VM_SHM_DIR, "/run/lab1/agent-host1", "host1", "web1", NULL),
                     0);
    assert_int_equal(vm_paths_init(&b, VM_SHM_DIR, "/run/lab2/agent-host1", "host1", "web1", NULL),
                     0);
    assert_string_not_equal(a.ram, b.ram);
    vm_paths_clear(&a);
    vm_paths_clear(&b);
}

/* The state file's checksum: sealed, verified, and a flipped byte is caught. */
static void test_warm_state_checksum(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-warm-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char tmp[64], st[64], sum[64];
    snprintf(tmp, sizeof(tmp), "%s/web1.state.tmp", dir);
    snprintf(st, sizeof(st), "%s/web1.state", dir);
    snprintf(sum, sizeof(sum), "%s/web1.state.sha256", dir);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    for (int i = 0; i < 100000; i++)
        fputc(i % 251, f);
    fclose(f);
    uint64_t bytes = 0;
    long unsynced = unsynced_pages(tmp);
    assert_int_equal(warm_state_seal(tmp, st, sum, &bytes, NULL), 0);
    assert_int_equal(bytes, 100000);
    assert_int_equal(access(tmp, F_OK), -1); /* renamed */
    if (unsynced >= 0) {                     /* on disk before they were renamed (cachestat(2)) */
        assert_true(unsynced > 0);
        assert_int_equal(unsynced_pages(st), 0);
        assert_int_equal(unsynced_pages(sum), 0);
    }
    assert_int_equal(warm_state_verify(st, sum, NULL), 0);

#if VCR_TEST_FAULTS
    assert_int_equal(warm_state_corrupt(st, NULL), 0);
#else /* the hook is compiled out of this build: the same flip, by hand */
    FILE *w = fopen(st, "r+");
    assert_non_null(w);
    assert_int_equal(fseek(w, 50000, SEEK_SET), 0);
    fputc(~(50000 % 251) & 0xff, w);
    assert_int_equal(fclose(w), 0);
#endif
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(warm_state_verify(st, sum, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "fails its checksum"));
    vcr_error_release(&err);
    /* A missing checksum file is an error too, never a pass. */
    unlink(sum);
    assert_int_equal(warm_state_verify(st, sum, &err), -1);
    unlink(st);
    rmdir(dir);
}

/* The journal of a warm restart: written whole, read back, bad ones refused. */
static void test_warm_journal(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-journal-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], tmp[80];
    snprintf(path, sizeof(path), "%s/web1.warm", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    struct warm_journal j = {.started_ms = 1764561600123LL, .old_pid = 4242, .new_pid = 4343}, r;
    snprintf(j.qemu, sizeof(j.qemu), "/opt/qemu-9/bin/qemu-system-x86_64");
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(warm_journal_read(path, &r, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT); /* none: not an error to report */
    vcr_error_release(&err);
    assert_int_equal(warm_journal_write(path, &j, NULL), 0);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_true(unsynced_pages(path) <= 0); /* fsync'd before the rename */
    assert_int_equal(warm_journal_read(path, &r, NULL), 0);
    assert_string_equal(r.qemu, j.qemu);
    assert_true(r.started_ms == j.started_ms);
    assert_int_equal(r.old_pid, 4242);
    assert_int_equal(r.new_pid, 4343);
    /* One written before the new QEMU was started first has no new_pid. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"qemu\": \"/usr/bin/qemu\", \"started_ms\": 1, \"old_pid\": 2}", f);
    fclose(f);
    assert_int_equal(warm_journal_read(path, &r, NULL), 0);
    assert_int_equal(r.old_pid, 2);
    assert_int_equal(r.new_pid, 0);
    /* A torn or foreign file is refused with the file named. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"qemu\": \"relative\", \"started_ms\": 1, \"old_pid\": 2}", f);
    fclose(f);
    assert_int_equal(warm_journal_read(path, &r, &err), -1);
    assert_int_equal(vcr_error_status(err), EBADMSG);
    assert_non_null(strstr(vcr_error_msg(err), path));
    vcr_error_release(&err);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"qemu\": \"/usr/bin/q", f);
    fclose(f);
    assert_int_equal(warm_journal_read(path, &r, &err), -1);
    assert_int_equal(vcr_error_status(err), EBADMSG);
    unlink(path);
    rmdir(dir);
}

/* What an agent does with a warm restart an earlier agent left unfinished.  The
 * new QEMU is started before the old one is paused, and the old one is killed
 * only once the state is sealed: whenever the old one lives it holds the guest. */
static void test_warm_recovery_decide(void **state)
{
    (void)state;
    const int64_t win = HOST_VM_WARM_RECOVER_WINDOW_MS;
    /* Sealed state but no RAM file (the host restarted: its tmpfs is gone, the fsync'd
     * state files are not): never load that state into an empty RAM file. */
    assert_int_equal(warm_recovery_decide(true, false, 10, win, false, false, true, false),
                     WARM_RECOVER_COLD);
    /* journal, fenced, age, window, old alive, new alive, sealed */
    assert_int_equal(warm_recovery_decide(false, false, 10, win, true, false, true, true),
                     WARM_RECOVER_NONE);
    /* The old QEMU alone (the agent died before the new one was spawned, or after
     * it was killed): cont it, whether it was paused or saved. */
    assert_int_equal(warm_recovery_decide(true, false, 10, win, true, false, false, true),
                     WARM_RECOVER_ROLLBACK);
    assert_int_equal(warm_recovery_decide(true, false, 10, win, true, false, true, true),
                     WARM_RECOVER_ROLLBACK);
    /* Both: the new one pre-launched (before `stop`, or while the old one was saved,
     * or with the state sealed but the old one not killed yet): the old one wins and
     * the new one is killed. */
    for (int sealed = 0; sealed < 2; sealed++) {
        enum warm_recovery r = warm_recovery_decide(true, false, 10, win, true, true, sealed, true);
        assert_int_equal(r, WARM_RECOVER_ROLLBACK);
        assert_true(warm_recovery_kills_new(r, true, true));
    }
    assert_false(warm_recovery_kills_new(WARM_RECOVER_ROLLBACK, true, false));
    /* Only the new one: keep it if it runs the guest, else load the state again. */
    assert_int_equal(warm_recovery_decide(true, false, 10, win, false, true, true, true),
                     WARM_RECOVER_CHECK);
    assert_int_equal(warm_recovery_decide(true, false, 10, win, false, true, false, true),
                     WARM_RECOVER_CHECK);
    assert_false(warm_recovery_kills_new(WARM_RECOVER_CHECK, false, true));
    /* No QEMU: the sealed state is the guest's devices; without it, boot cold. */
    assert_int_equal(warm_recovery_decide(true, false, 10, win, false, false, true, true),
                     WARM_RECOVER_REDO);
    assert_int_equal(warm_recovery_decide(true, false, 10, win, false, false, false, true),
                     WARM_RECOVER_COLD);
    /* Past the window (or a clock gone backwards) the server decides: the QEMU found
     * is adopted as it is, the old one if both run (the new one beside it goes). */
    assert_int_equal(warm_recovery_decide(true, false, win + 1, win, true, false, true, true),
                     WARM_RECOVER_ADOPT);
    assert_int_equal(warm_recovery_decide(true, false, win + 1, win, true, true, true, true),
                     WARM_RECOVER_ADOPT);
    assert_true(warm_recovery_kills_new(WARM_RECOVER_ADOPT, true, true));
    assert_int_equal(warm_recovery_decide(true, false, win + 1, win, false, true, true, true),
                     WARM_RECOVER_ADOPT);
    assert_false(warm_recovery_kills_new(WARM_RECOVER_ADOPT, false, true));
    assert_int_equal(warm_recovery_decide(true, false, win + 1, win, false, false, true, true),
                     WARM_RECOVER_ENDED);
    assert_int_equal(warm_recovery_decide(true, false, -5, win, false, false, true, true),
                     WARM_RECOVER_ENDED);
    /* Self-fenced meanwhile (the watchdog killed the QEMU it knew): nothing is
     * started, however far the restart got; a new QEMU found is killed, an old one
     * is adopted as it is. */
    for (int old_alive = 0; old_alive < 2; old_alive++)
        for (int sealed = 0; sealed < 2; sealed++) {
            enum warm_recovery r =
                warm_recovery_decide(true, true, 10, win, old_alive, true, sealed, true);
            assert_int_equal(r, WARM_RECOVER_FENCED);
            assert_true(warm_recovery_kills_new(r, old_alive, true));
            assert_int_equal(
                warm_recovery_decide(true, true, 10, win, old_alive, false, sealed, true),
                WARM_RECOVER_FENCED);
        }
    assert_false(warm_recovery_kills_new(WARM_RECOVER_FENCED, true, false));
    assert_int_equal(warm_recovery_decide(false, true, 10, win, true, false, true, true),
                     WARM_RECOVER_NONE);
    assert_string_equal(warm_recovery_name(WARM_RECOVER_REDO), "redo");
    /* The test-fault exit points the agent accepts. */
    assert_true(host_vm_warm_exit_point_valid("launched"));
    assert_true(host_vm_warm_exit_point_valid("stopped"));
    assert_true(host_vm_warm_exit_point_valid("migrated"));
    assert_true(host_vm_warm_exit_point_valid("handed"));
    assert_false(host_vm_warm_exit_point_valid("sealed")); /* the state file is gone */
    assert_false(host_vm_warm_exit_point_valid("spawned"));
    assert_false(host_vm_warm_exit_point_valid("later"));
    assert_false(host_vm_warm_exit_point_valid(NULL));
}

/* Standby jobs: the work runs in a child; its result (or its death) comes back
 * on the loop, and the loop runs meanwhile. */
struct job_test {
    struct event_base *base;
    int done;
    char error[STANDBY_JOB_ERROR_MAX + 64];
    bool had_error;
    int status; /* standby_job_error_status */
};

static int job_ok(void *arg, vcr_error_t *err)
{
    (void)err;
    /* The child's memory is its own: the parent never sees this write. */
    *(int *)arg = 42;
    return 0;
}

static int job_fails(void *arg, vcr_error_t *err)
{
    (void)arg;
    return vcr_error_make(err, EEXIST, "container `x` already exists");
}

static int job_dies(void *arg, vcr_error_t *err)
{
    (void)arg;
    (void)err;
    raise(SIGKILL);
    return 0;
}

static void job_cb(struct standby_job *job, const char *error, void *opaque)
{
    (void)job;
    struct job_test *t = opaque;
    t->done++;
    t->had_error = error != NULL;
    t->status = error ? standby_job_error_status(job) : 0;
    snprintf(t->error, sizeof(t->error), "%s", error ? error : "");
    event_base_loopbreak(t->base);
}

static void job_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg); /* the job never ended: done stays 0, the test fails */
}

static void run_job(struct job_test *t, standby_job_fn fn, void *arg)
{
    t->done = 0;
    cleanup_error vcr_error_t err = NULL;
    struct standby_job *job = standby_job_run(t->base, fn, arg, job_cb, t, &err);
    assert_non_null(job);
    assert_true(standby_job_pid(job) > 0);
    struct event *guard = event_new(t->base, -1, 0, job_guard, t->base);
    struct timeval tv = {.tv_sec = 10};
    evtimer_add(guard, &tv);
    event_base_dispatch(t->base);
    event_free(guard);
    assert_int_equal(t->done, 1);
}

static void test_standby_job(void **state)
{
    (void)state;
    struct job_test t = {.base = event_base_new()};
    assert_non_null(t.base);
    int value = 0;
    run_job(&t, job_ok, &value);
    assert_false(t.had_error);
    assert_int_equal(value, 0);
    run_job(&t, job_fails, NULL);
    assert_true(t.had_error);
    assert_string_equal(t.error, "container `x` already exists");
    /* The status crosses the pipe too: the reply's `code` comes from it. */
    assert_int_equal(t.status, EEXIST);
    assert_string_equal(proto_code_name(proto_code_from_errno(t.status)), "exists");
    run_job(&t, job_dies, NULL);
    assert_true(t.had_error);
    assert_string_equal(t.error, "the worker process was killed by signal 9");
    assert_int_equal(t.status, 0);
    event_base_free(t.base);
}

/* During a warm restart the old QEMU's STOP, SHUTDOWN and exit are expected. */
static void test_sm_restarting_exit_is_not_crash(void **state)
{
    (void)state;
    struct vm_sm sm;
    vm_sm_init(&sm, "not started");
    vm_sm_starting(&sm, "autostart");
    vm_sm_qmp_status(&sm, "running");
    assert_true(vm_sm_restarting(&sm, "warm restart"));
    assert_int_equal(sm.state, VM_STATE_RESTARTING);
    assert_string_equal(vm_state_name(sm.state), "restarting");
    assert_true(vm_state_is_live(sm.state));
    assert_false(vm_sm_qmp_event(&sm, "STOP", NULL));
    json_t *quit = json_pack("{s:b, s:s}", "guest", 0, "reason", "host-qmp-quit");
    assert_false(vm_sm_qmp_event(&sm, "SHUTDOWN", quit));
    json_decref(quit);
    assert_false(vm_sm_exited(&sm, true, W_EXITCODE(0, 0), NULL));
    assert_int_equal(sm.state, VM_STATE_RESTARTING); /* not crashed */
    assert_false(vm_sm_qmp_event(&sm, "RESUME", NULL));
    assert_true(vm_sm_restarted(&sm, "warm restart done"));
    assert_int_equal(sm.state, VM_STATE_RUNNING);
    /* Afterwards a death is a crash again. */
    assert_true(vm_sm_exited(&sm, true, SIGKILL, NULL));
    assert_int_equal(sm.state, VM_STATE_CRASHED);
}

static void touch(const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static bool exists_in(const char *dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* RAM files of VMs that left the configuration are removed at agent start; those
 * of configured VMs, of VMs whose QEMU still runs, and of other agents stay. */
static void test_orphan_ram_files_removed(void **state)
{
    (void)state;
    char ram_dir[] = "/tmp/vcr-test-ram-XXXXXX", state_dir[] = "/tmp/vcr-test-state-XXXXXX";
    assert_non_null(mkdtemp(ram_dir));
    assert_non_null(mkdtemp(state_dir));
    char ours[16], other[16];
    snprintf(ours, sizeof(ours), "%08x", vm_state_dir_hash(state_dir));
    snprintf(other, sizeof(other), "%08x", vm_state_dir_hash("/elsewhere"));
    char names[5][96];
    snprintf(names[0], sizeof(names[0]), "vcr-host1-web1-%s.ram", ours);   /* configured */
    snprintf(names[1], sizeof(names[1]), "vcr-host1-old-vm-%s.ram", ours); /* orphan */
    snprintf(names[2], sizeof(names[2]), "vcr-host1-live-%s.ram", ours);   /* QEMU runs */
    snprintf(names[3], sizeof(names[3]), "vcr-host1-gone-%s.ram", other);  /* other agent */
    snprintf(names[4], sizeof(names[4]), "vcr-host2-x-%s.ram", ours);      /* other host */
    for (int i = 0; i < 5; i++)
        touch(ram_dir, names[i]);
    char pid_path[PATH_MAX];
    snprintf(pid_path, sizeof(pid_path), "%s/live.pid", state_dir);
    FILE *f = fopen(pid_path, "w");
    assert_non_null(f);
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);

    const char *configured[] = {"web1"};
    assert_int_equal(vm_remove_orphan_ram(ram_dir, state_dir, "host1", configured, 1), 1);
    assert_true(exists_in(ram_dir, names[0]));
    assert_false(exists_in(ram_dir, names[1]));
    for (int i = 2; i < 5; i++)
        assert_true(exists_in(ram_dir, names[i]));

    for (int i = 0; i < 5; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", ram_dir, names[i]);
        unlink(path);
    }
    unlink(pid_path);
    assert_int_equal(rmdir(ram_dir), 0);
    assert_int_equal(rmdir(state_dir), 0);
}

/* --- RAM files on tmpfs or hugetlbfs (ram_dir.h) ------------------------------ */

static const struct ram_dir shm_ram_dir = {
    .path = VM_SHM_DIR, .backing = RAM_BACKING_TMPFS, .page_size = 4096};
static const struct ram_dir huge_2m = {
    .path = "/dev/hugepages", .backing = RAM_BACKING_HUGETLBFS, .page_size = 2 << 20};
static const struct ram_dir huge_1g = {
    .path = "/mnt/huge1g", .backing = RAM_BACKING_HUGETLBFS, .page_size = 1 << 30};

/* tmpfs and hugetlbfs are taken; anything else is refused naming the key, the
 * path and the type. */
static void test_ram_dir_filesystem_types(void **state)
{
    (void)state;
    struct ram_dir d;
    assert_int_equal(ram_dir_from_statfs("/dev/shm", RAM_DIR_TMPFS_MAGIC, 4096, &d, NULL), 0);
    assert_int_equal(d.backing, RAM_BACKING_TMPFS);
    assert_string_equal(ram_backing_name(d.backing), "tmpfs");
    assert_int_equal(
        ram_dir_from_statfs("/dev/hugepages", RAM_DIR_HUGETLBFS_MAGIC, 2 << 20, &d, NULL), 0);
    assert_int_equal(d.backing, RAM_BACKING_HUGETLBFS);
    assert_int_equal(d.page_size, 2 << 20);
    assert_string_equal(d.path, "/dev/hugepages");
    assert_string_equal(ram_backing_name(d.backing), "hugetlbfs");

    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(ram_dir_from_statfs("/var/lib/vcr", 0xEF53, 4096, &d, &err), -1);
    assert_string_equal(vcr_error_msg(err),
                        "ram_dir: `/var/lib/vcr` is on a filesystem of type 0xef53 (ext2/3/4); "
                        "allowed: a directory on tmpfs (e.g. /dev/shm) or hugetlbfs (e.g. "
                        "/dev/hugepages)");
    vcr_error_release(&err);
    assert_int_equal(ram_dir_from_statfs("/x", 0x12345678, 4096, &d, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "type 0x12345678 (unknown)"));
    vcr_error_release(&err);
    /* The probe itself: /dev/shm is tmpfs; a missing directory is named. */
    assert_int_equal(ram_dir_probe("/dev/shm", &d, NULL), 0);
    assert_int_equal(d.backing, RAM_BACKING_TMPFS);
    assert_int_equal(ram_dir_probe("/no/such/dir", &d, &err), -1);
    assert_string_equal(vcr_error_msg(err), "ram_dir: `/no/such/dir`: No such file or directory");
}

/* A VM's memory in whole huge pages, and how many it takes. */
static void test_ram_dir_page_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(ram_dir_pages_needed(&shm_ram_dir, 256), 0);
    assert_int_equal(ram_dir_pages_needed(&huge_2m, 256), 128);
    assert_int_equal(ram_dir_pages_needed(&huge_2m, 65), 33);
    assert_int_equal(ram_dir_pages_needed(&huge_1g, 2048), 2);
    assert_int_equal(ram_dir_pages_needed(&huge_1g, 1536), 2);
    assert_int_equal(ram_dir_pages_needed(&huge_2m, 65536), 32768);

    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(ram_dir_check_size(&shm_ram_dir, "web1", 65, NULL), 0);
    assert_int_equal(ram_dir_check_size(&huge_2m, "web1", 256, NULL), 0);
    assert_int_equal(ram_dir_check_size(&huge_1g, "web1", 3072, NULL), 0);
    assert_int_equal(ram_dir_check_size(&huge_2m, "web1", 65, &err), -1);
    assert_string_equal(vcr_error_msg(err),
                        "VM `web1`: memory_mb 65 is not a whole number of huge pages of 2048 kB "
                        "(ram_dir `/dev/hugepages` is hugetlbfs); allowed: a multiple of 2 MB");
    vcr_error_release(&err);
    assert_int_equal(ram_dir_check_size(&huge_1g, "db", 1536, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "memory_mb 1536 is not a whole number of huge "
                                               "pages of 1048576 kB"));
    assert_non_null(strstr(vcr_error_msg(err), "allowed: a multiple of 1024 MB"));
    vcr_error_release(&err);

    assert_int_equal(ram_dir_check_free(&shm_ram_dir, "web1", 256, 0, NULL), 0);
    assert_int_equal(ram_dir_check_free(&huge_2m, "web1", 256, 128, NULL), 0);
    assert_int_equal(ram_dir_check_free(&huge_2m, "big", 1024, 200, &err), -1);
    assert_string_equal(vcr_error_msg(err),
                        "VM `big`: needs 512 pages of 2048 kB (memory_mb 1024), 200 free in "
                        "`/dev/hugepages`; allowed: at most the free huge pages (raise "
                        "/proc/sys/vm/nr_hugepages or lower memory_mb)");
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Free pages: the pool's free minus its reserved (reserved pages are counted
 * free until touched), capped by a mount's own size limit. */
static void test_ram_dir_free_pages(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-hugepages-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pool[128];
    snprintf(pool, sizeof(pool), "%s/hugepages-2048kB", dir);
    assert_int_equal(mkdir(pool, 0755), 0);
    write_file(pool, "free_hugepages", "300\n");
    write_file(pool, "resv_hugepages", "100\n");
    uint64_t n = 0;
    assert_int_equal(ram_dir_free_pages(&huge_2m, dir, 0, &n, NULL), 0);
    assert_int_equal(n, 200);
    assert_int_equal(ram_dir_free_pages(&huge_2m, dir, 50, &n, NULL), 0);
    assert_int_equal(n, 50);
    write_file(pool, "resv_hugepages", "400\n");
    assert_int_equal(ram_dir_free_pages(&huge_2m, dir, 0, &n, NULL), 0);
    assert_int_equal(n, 0);
    /* No pool of that size: the error names the file. */
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(ram_dir_free_pages(&huge_1g, dir, 0, &n, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "hugepages-1048576kB/free_hugepages`"));
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/free_hugepages", pool);
    unlink(path);
    snprintf(path, sizeof(path), "%s/resv_hugepages", pool);
    unlink(path);
    assert_int_equal(rmdir(pool), 0);
    assert_int_equal(rmdir(dir), 0);

    /* On tmpfs nothing is reserved and no file is made. */
    assert_int_equal(ram_dir_reserve(&shm_ram_dir, "web1", "/dev/shm/none", 256, &n, NULL), 0);
    assert_int_equal(n, 0);
    assert_int_equal(access("/dev/shm/none", F_OK), -1);
}

static void test_qemu_argv(void **state)
{
    (void)state;
    struct vcr_vm_spec spec = web1_spec();
    struct vm_paths paths;
    assert_int_equal(
        vm_paths_init(&paths, VM_SHM_DIR, "/run/vcrlab/agent-host1", "host1", "web1", NULL), 0);
    struct vm_launch l = {
        .qemu = "/usr/bin/qemu-system-x86_64", .accel = "tcg", .spec = &spec, .paths = &paths};
    char **argv = vm_qemu_argv(&l, NULL);
    assert_non_null(argv);
    assert_string_equal(argv[0], "/usr/bin/qemu-system-x86_64");
    assert_true(has_opt(argv, "-accel", "tcg"));
    assert_true(has_opt(argv, "-machine", "pc,memory-backend=mem"));
    assert_true(has_opt(argv, "-m", "256M"));
    assert_true(strncmp(paths.ram, "/dev/shm/vcr-host1-web1-", 24) == 0);
    cleanup_free char *backend = NULL;
    assert_true(asprintf(&backend, "memory-backend-file,id=mem,size=256M,mem-path=%s,share=on",
                         paths.ram) > 0);
    assert_true(has_opt(argv, "-object", backend));
    assert_true(has_opt(argv, "-smp", "1"));
    assert_true(has_opt(argv, "-kernel", "/lab/vmlinuz"));
    assert_true(has_opt(argv, "-initrd", "/lab/initrd.img"));
    assert_true(has_opt(argv, "-append",
                        "console=ttyS0 vcr.name=web1 vcr.ip=10.77.0.11/24 vcr.gw=10.77.0.1 "
                        "vcr.dns=10.77.0.1"));
    assert_true(has_opt(argv, "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"));
    assert_true(has_opt(argv, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:11"));
    assert_true(has_opt(argv, "-vga", "none"));
    assert_true(has_opt(argv, "-display", "none"));
    assert_true(has_arg(argv, "-nodefaults"));
    assert_true(has_arg(argv, "-no-reboot"));
    /* The console log is appended to: a new QEMU opens it while the old one writes. */
    assert_true(has_opt(argv, "-chardev",
                        "file,id=serial0,path=/run/vcrlab/agent-host1/web1.serial,append=on"));
    assert_true(has_opt(argv, "-serial", "chardev:serial0"));
    assert_true(has_opt(argv, "-qmp", "unix:/run/vcrlab/agent-host1/web1.qmp,server=on,wait=off"));
    assert_true(has_opt(argv, "-pidfile", "/run/vcrlab/agent-host1/web1.pid"));
    /* As root: QEMU's filter denies set*id calls too. */
    assert_true(
        has_opt(argv, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"));
    assert_null(find_opt(argv, "-runas"));
    vm_argv_free(argv);

    /* -runas: QEMU 7.2 would be killed at its own setgid() if the filter denied
     * it (the filter is in place before the drop), so it allows them. */
    l.runas = "vcr-qemu";
    argv = vm_qemu_argv(&l, NULL);
    assert_true(has_opt(argv, "-runas", "vcr-qemu"));
    assert_true(has_opt(argv, "-sandbox", "on,obsolete=deny,resourcecontrol=deny"));
    vm_argv_free(argv);
    l.runas = NULL;
    /* The migration socket is in the directory of QEMU's user. */
    cleanup_free char *mig = NULL;
    assert_true(asprintf(&mig, "/run/vcr-qemu/host1-%08x/web1.mig",
                         vm_state_dir_hash("/run/vcrlab/agent-host1")) > 0);
    assert_string_equal(paths.mig, mig);

    /* The new QEMU of a warm restart: -incoming, the old one's tap inherited. */
    l.incoming = true;
    l.tap_fd = 7;
    argv = vm_qemu_argv(&l, NULL);
    assert_true(has_opt(argv, "-netdev", "tap,id=n0,fd=7"));
    assert_true(has_opt(argv, "-incoming", "defer"));
    assert_true(has_opt(argv, "-qmp", "unix:/run/vcrlab/agent-host1/web1.qmp,server=on,wait=off"));
    assert_true(has_opt(argv, "-pidfile", "/run/vcrlab/agent-host1/web1.pid"));
    vm_argv_free(argv);
    l.incoming = false;
    l.tap_fd = 0;
    assert_string_equal(paths.old_pid, "/run/vcrlab/agent-host1/web1.old.pid");
    assert_string_equal(paths.old_qmp, "/run/vcrlab/agent-host1/web1.old.qmp");

    /* SMP under TCG runs one thread per vCPU; KVM is passed as is. */
    spec.vcpus = 2;
    spec.gateway = NULL;
    spec.kernel_args = NULL;
    argv = vm_qemu_argv(&l, NULL);
    assert_true(has_opt(argv, "-accel", "tcg,thread=multi"));
    assert_true(has_opt(argv, "-smp", "2"));
    assert_true(has_opt(argv, "-append", "console=ttyS0 vcr.name=web1 vcr.ip=10.77.0.11/24"));
    vm_argv_free(argv);
    l.accel = "kvm";
    argv = vm_qemu_argv(&l, NULL);
    assert_true(has_opt(argv, "-accel", "kvm"));
    vm_argv_free(argv);

    /* Without a kernel the VM sits in firmware: no -kernel, -initrd, -append. */
    spec.kernel = spec.initrd = NULL;
    argv = vm_qemu_argv(&l, NULL);
    assert_null(find_opt(argv, "-kernel"));
    assert_null(find_opt(argv, "-append"));
    vm_argv_free(argv);
    vm_paths_clear(&paths);

    /* QEMU splits options on commas: a comma in a path is doubled.  A RAM file
     * on hugetlbfs is passed the same way, shared. */
    assert_int_equal(vm_paths_init(&paths, "/dev/hugepages", "/tmp/a,b", "h", "v", NULL), 0);
    argv = vm_qemu_argv(&l, NULL);
    assert_true(has_opt(argv, "-qmp", "unix:/tmp/a,,b/v.qmp,server=on,wait=off"));
    free(backend);
    backend = NULL;
    assert_true(asprintf(&backend,
                         "memory-backend-file,id=mem,size=256M,mem-path=/dev/hugepages/"
                         "vcr-h-v-%08x.ram,share=on",
                         vm_state_dir_hash("/tmp/a,b")) > 0);
    assert_true(has_opt(argv, "-object", backend));
    vm_argv_free(argv);
    vm_paths_clear(&paths);
}

/* Whether pid still runs (a zombie waiting for its reaper has ended). */
static bool still_runs(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *end = strrchr(buf, ')');
    return end != NULL && end[1] == ' ' && end[2] != 'Z' && end[2] != 'X';
}

/* A disk preparation's tool (qemu-img, mkfs.ext4) dies with the preparation:
 * a cancelled VM start SIGKILLs the preparation, whose tool went on writing
 * beside the next start's (proc_spawn's own session kept it out of reach). */
static void test_spawned_tool_dies_with_its_caller(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        char *argv[] = {"/bin/sleep", "60", NULL};
        pid_t tool = proc_spawn_tool(argv, NULL, NULL);
        if (write(p[1], &tool, sizeof(tool)) != (ssize_t)sizeof(tool) || tool < 0)
            _exit(1);
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t tool = -1;
    ssize_t n = read(p[0], &tool, sizeof(tool));
    close(p[0]);
    kill(mid, SIGKILL); /* the caller dies; its tool must follow */
    assert_int_equal(waitpid(mid, NULL, 0), mid);
    assert_int_equal(n, (ssize_t)sizeof(tool));
    assert_true(tool > 0);
    int64_t deadline = vcr_mono_ms() + 5000;
    while (still_runs(tool) && vcr_mono_ms() < deadline)
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    bool survived = still_runs(tool);
    if (survived)
        kill(tool, SIGKILL);
    assert_false(survived);

    /* An exec failure is reported to the caller; no log path: its own output. */
    char *missing[] = {"/nonexistent/tool", NULL};
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proc_spawn_tool(missing, NULL, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
}

/* --- /proc parsing ----------------------------------------------------------- */

/* The pieces of the tap hand-over of a warm restart (tap_fd.h): a descriptor
 * kept across exec by one child only, copied out of a running process, the
 * `iff:` line that names a tun file's tap, and the vnet header size. */
static void test_tap_handover(void **state)
{
    (void)state;
    assert_true(
        tap_fdinfo_is("pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t104\niff:\ttap0\n", "tap0"));
    assert_false(tap_fdinfo_is("pos:\t0\niff:\ttap01\n", "tap0"));
    assert_false(tap_fdinfo_is("pos:\t0\niff:\ttap1\n", "tap0"));
    assert_false(tap_fdinfo_is("pos:\t0\nflags:\t02\n", "tap0"));
    assert_true(tap_fdinfo_is("iff: tap0", "tap0"));

    /* The kept descriptor crosses exec, another one does not. */
    int keep[2], other[2];
    assert_int_equal(pipe2(keep, O_CLOEXEC), 0);
    assert_int_equal(pipe2(other, O_CLOEXEC), 0);
    char script[128];
    snprintf(script, sizeof(script), "test -e /proc/self/fd/%d && ! test -e /proc/self/fd/%d",
             keep[1], other[1]);
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    pid_t pid = proc_spawn_keep(argv, "/dev/null", keep[1], NULL);
    assert_true(pid > 0);
    int status = -1;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* A copy of a running process's descriptor is the same open file. */
    char *sleeper[] = {"/bin/sleep", "30", NULL};
    pid = proc_spawn_keep(sleeper, "/dev/null", keep[1], NULL);
    assert_true(pid > 0);
    int copy = proc_getfd(pid, keep[1], NULL);
    assert_true(copy >= 0);
    assert_int_equal(write(copy, "x", 1), 1);
    char c = 0;
    assert_int_equal(read(keep[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    close(copy);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proc_getfd(pid, 999, &err), -1);
    assert_int_equal(vcr_error_status(err), EBADF);
    vcr_error_release(&err);
    /* Killed and waited for (and reaped: it was our child). */
    assert_int_equal(proc_kill_wait(pid, 2000, NULL), 0);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(proc_kill_wait(pid, 2000, NULL), 0); /* gone: nothing to do */
    close(keep[0]);
    close(keep[1]);
    close(other[0]);
    close(other[1]);

    /* A real tap (needs CAP_NET_ADMIN; the rest of the test does not). */
    int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "vcrut%%d");
    if (tun < 0 || ioctl(tun, TUNSETIFF, &ifr) < 0) {
        if (tun >= 0)
            close(tun);
        return;
    }
    assert_int_equal(tap_fd_of_process(getpid(), ifr.ifr_name, NULL), tun);
    assert_int_equal(tap_fd_of_process(getpid(), "vcr-no-such-tap", &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);
    int copy2 = tap_fd_take(getpid(), ifr.ifr_name, NULL);
    assert_true(copy2 >= 0 && copy2 != tun);
    int len = 0;
    assert_int_equal(tap_vnet_hdr_set(copy2, 12, NULL), 0);
    assert_int_equal(tap_vnet_hdr_get(tun, &len, NULL), 0); /* one open file, one tap */
    assert_int_equal(len, 12);
    close(copy2);
    close(tun);
}

/* --- the scheduling boost of a warm restart's pause (pause_boost.h) ---------- */

static void *boost_thread_blocks(void *arg)
{
    char c;
    (void)!read(*(int *)arg, &c, 1);
    return NULL;
}

/* Every thread of pid has policy at priority; the number of threads. */
static int threads_with_policy(pid_t pid, int policy, int priority)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    assert_non_null(dir);
    int n = 0;
    struct dirent *d;
    while ((d = readdir(dir)) != NULL) {
        if (d->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)atoi(d->d_name);
        struct sched_param param;
        assert_int_equal(sched_getscheduler(tid), policy);
        assert_int_equal(sched_getparam(tid, &param), 0);
        assert_int_equal(param.sched_priority, priority);
        n++;
    }
    closedir(dir);
    return n;
}

/* A process of three threads (each blocked on a pipe) and the calling thread
 * go SCHED_FIFO for the pause and back to SCHED_OTHER after, every thread, not
 * only the main one; a process gone meanwhile is left, not an error. */
static void test_pause_boost(void **state)
{
    (void)state;
    struct sched_param param = {.sched_priority = PAUSE_BOOST_PRIORITY};
    if (sched_setscheduler(0, SCHED_FIFO, &param) < 0)
        skip(); /* no CAP_SYS_NICE */
    param.sched_priority = 0;
    assert_int_equal(sched_setscheduler(0, SCHED_OTHER, &param), 0);

    int ready[2], hold[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(hold[1]); /* the parent's end: its close lets the threads return */
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&t[i], NULL, boost_thread_blocks, &hold[0]) != 0)
                _exit(1);
        (void)!write(ready[1], "r", 1);
        boost_thread_blocks(&hold[0]);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(threads_with_policy(pid, SCHED_OTHER, 0), 3);

    struct pause_boost b;
    pause_boost_begin(&b, pid, 0);
    assert_int_equal(b.pid[0], pid);
    assert_int_equal(b.pid[1], 0);
    assert_int_equal(threads_with_policy(pid, SCHED_FIFO, PAUSE_BOOST_PRIORITY), 3);
    assert_int_equal(sched_getscheduler(0) & ~SCHED_RESET_ON_FORK, SCHED_FIFO);
    /* What the boosted agent forks meanwhile (a cold boot's QEMU, a job) is not
     * real-time: nothing would ever put it back. */
    pid_t forked = fork();
    assert_true(forked >= 0);
    if (forked == 0)
        _exit(sched_getscheduler(0) == SCHED_OTHER ? 0 : 1);
    int fstatus = -1;
    assert_int_equal(waitpid(forked, &fstatus, 0), forked);
    assert_true(WIFEXITED(fstatus) && WEXITSTATUS(fstatus) == 0);
    pause_boost_end_pid(&b, pid);
    assert_int_equal(b.pid[0], 0);
    assert_int_equal(threads_with_policy(pid, SCHED_OTHER, 0), 3);
    assert_int_equal(sched_getscheduler(0) & ~SCHED_RESET_ON_FORK, SCHED_FIFO); /* until the end */
    pause_boost_end(&b);
    assert_int_equal(sched_getscheduler(0), SCHED_OTHER);

    /* Left boosted by an agent that died in the pause: the next one, adopting
     * the QEMU, puts back the boost's threads only (another priority is not its). */
    assert_int_equal(proc_set_policy(pid, SCHED_FIFO, PAUSE_BOOST_PRIORITY, NULL), 3);
    assert_int_equal(pause_boost_undo_left(pid), 3);
    assert_int_equal(threads_with_policy(pid, SCHED_OTHER, 0), 3);
    assert_int_equal(pause_boost_undo_left(pid), 0);
    assert_int_equal(proc_set_policy(pid, SCHED_FIFO, PAUSE_BOOST_PRIORITY + 1, NULL), 3);
    assert_int_equal(pause_boost_undo_left(pid), 0);
    assert_int_equal(threads_with_policy(pid, SCHED_FIFO, PAUSE_BOOST_PRIORITY + 1), 3);
    assert_int_equal(proc_set_policy(pid, SCHED_OTHER, 0, NULL), 3);

    /* Boosted, then gone before the end (the old QEMU, killed): no error. */
    pause_boost_begin(&b, pid, 0);
    close(hold[1]); /* the threads return, the child exits */
    int status = -1;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pause_boost_end(&b);
    assert_int_equal(b.pid[0], 0);
    assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proc_set_policy(pid, SCHED_FIFO, 1, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    /* A pid that is no process is not boosted (and nothing is to be undone). */
    pause_boost_begin(&b, pid, 0);
    assert_int_equal(b.pid[0], 0);
    pause_boost_end(&b);
    assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
    close(ready[0]);
    close(ready[1]);
    close(hold[0]);
}

static void test_proc_stat_parsing(void **state)
{
    (void)state;
    /* As the kernel writes it; utime 1234 and stime 567 are fields 14 and 15. */
    const char *stat = "4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 52141 0 3 0 1234 567 "
                       "0 0 20 0 5 0 123456 1400000000 54000 18446744073709551615 1 1 0 0 0 0 "
                       "0 4096 17475 0 0 0 17 1 0 0 0 0 0\n";
    uint64_t ticks = 0;
    assert_true(sampler_parse_stat(stat, &ticks));
    assert_int_equal(ticks, 1234 + 567);
    /* A command name may hold spaces and parentheses. */
    const char *odd = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 1 1\n";
    assert_true(sampler_parse_stat(odd, &ticks));
    assert_int_equal(ticks, 30);
    assert_false(sampler_parse_stat("garbage", &ticks));
    assert_false(sampler_parse_stat("1 (x) S 1 2", &ticks));

    uint64_t pages = 0;
    assert_true(sampler_parse_statm("70000 54000 1200 900 0 60000 0\n", &pages));
    assert_int_equal(pages, 54000);
    assert_false(sampler_parse_statm("x", &pages));
}

static void test_cpu_percent(void **state)
{
    (void)state;
    struct cpu_meter m = {0};
    assert_true(cpu_meter_update(&m, 1000, 10000, 100) < 0); /* first reading: no interval */
    /* 50 ticks at 100 ticks/s in 1000 ms: half a CPU. */
    assert_float_equal(cpu_meter_update(&m, 1050, 11000, 100), 50.0, 1e-9);
    /* Two vCPU threads busy for 500 ms: 200 % of one CPU. */
    assert_float_equal(cpu_meter_update(&m, 1150, 11500, 100), 200.0, 1e-9);
    assert_true(cpu_meter_update(&m, 1150, 11500, 100) < 0); /* no time passed */
}

static void test_sample_own_process(void **state)
{
    (void)state;
    uint64_t ticks, rss_kb;
    assert_true(sampler_read_proc(getpid(), &ticks, &rss_kb));
    assert_true(rss_kb > 0);
    assert_false(sampler_read_proc(0x7ffffff0, &ticks, &rss_kb));
}

/* --- state machine -------------------------------------------------------------- */

static void running_sm(struct vm_sm *sm)
{
    vm_sm_init(sm, "not started");
    assert_int_equal(sm->state, VM_STATE_STOPPED);
    assert_true(vm_sm_starting(sm, "autostart"));
    assert_int_equal(sm->state, VM_STATE_STARTING);
    assert_true(vm_sm_qmp_status(sm, "running"));
    assert_int_equal(sm->state, VM_STATE_RUNNING);
}

static json_t *shutdown_data(bool guest, const char *reason)
{
    return json_pack("{s:b, s:s}", "guest", guest, "reason", reason);
}

static void test_sm_guest_poweroff_is_shutdown(void **state)
{
    (void)state;
    struct vm_sm sm;
    running_sm(&sm);
    cleanup_json json_t *data = shutdown_data(true, "guest-shutdown");
    assert_false(vm_sm_qmp_event(&sm, "SHUTDOWN", data)); /* the exit decides */
    assert_int_equal(sm.state, VM_STATE_RUNNING);
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(0, 0), NULL));
    assert_int_equal(sm.state, VM_STATE_SHUTDOWN);
    assert_string_equal(vm_state_name(sm.state), "shutdown");
    assert_string_equal(sm.cause, "qmp SHUTDOWN (guest)");
}

static void test_sm_kill9_is_crash(void **state)
{
    (void)state;
    struct vm_sm sm;
    running_sm(&sm);
    assert_true(vm_sm_exited(&sm, true, SIGKILL, NULL));
    assert_int_equal(sm.state, VM_STATE_CRASHED);
    assert_string_equal(sm.cause, "qemu killed by signal 9");

    running_sm(&sm);
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(1, 0), NULL));
    assert_string_equal(sm.cause, "qemu exited with status 1");

    /* SIGTERM to QEMU: a host-side SHUTDOWN, then exit 0, is no guest shutdown. */
    running_sm(&sm);
    cleanup_json json_t *data = shutdown_data(false, "host-signal");
    vm_sm_qmp_event(&sm, "SHUTDOWN", data);
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(0, 0), NULL));
    assert_int_equal(sm.state, VM_STATE_CRASHED);
    assert_string_equal(sm.cause, "qemu exited with status 0 after qmp SHUTDOWN (host-signal)");

    /* A QEMU adopted from an earlier agent: no status to be had. */
    running_sm(&sm);
    assert_true(vm_sm_exited(&sm, false, 0, NULL));
    assert_int_equal(sm.state, VM_STATE_CRASHED);
    assert_string_equal(sm.cause, "qemu exited (status unknown: not our child)");
}

static void test_sm_guest_panic(void **state)
{
    (void)state;
    struct vm_sm sm;
    running_sm(&sm);
    cleanup_json json_t *panic = json_pack("{s:s}", "action", "pause");
    assert_true(vm_sm_qmp_event(&sm, "GUEST_PANICKED", panic));
    assert_int_equal(sm.state, VM_STATE_PANICKED);
    assert_string_equal(sm.cause, "qmp GUEST_PANICKED pause");
    /* Later events do not move it; the exit is reported, still panicked. */
    assert_false(vm_sm_qmp_event(&sm, "RESUME", NULL));
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(0, 0), NULL));
    assert_int_equal(sm.state, VM_STATE_PANICKED);
    assert_string_equal(sm.cause, "qmp GUEST_PANICKED pause, then qemu exited with status 0");

    /* Fencing a panicked VM ends in stopped. */
    running_sm(&sm);
    vm_sm_qmp_event(&sm, "GUEST_PANICKED", panic);
    vm_sm_stop_ordered(&sm);
    assert_true(vm_sm_exited(&sm, true, SIGKILL, NULL));
    assert_int_equal(sm.state, VM_STATE_STOPPED);
}

static void test_sm_pause_reset_stop_and_failed_start(void **state)
{
    (void)state;
    struct vm_sm sm;
    running_sm(&sm);
    assert_true(vm_sm_qmp_event(&sm, "STOP", NULL));
    assert_int_equal(sm.state, VM_STATE_PAUSED);
    assert_true(vm_sm_qmp_event(&sm, "RESUME", NULL));
    assert_int_equal(sm.state, VM_STATE_RUNNING);
    cleanup_json json_t *reset = json_pack("{s:b}", "guest", true);
    assert_true(vm_sm_qmp_event(&sm, "RESET", reset)); /* reported, state kept */
    assert_int_equal(sm.state, VM_STATE_RUNNING);
    assert_string_equal(sm.cause, "qmp RESET (guest)");
    assert_false(vm_sm_qmp_event(&sm, "NIC_RX_FILTER_CHANGED", NULL));

    vm_sm_stop_ordered(&sm);
    cleanup_json json_t *data = shutdown_data(true, "guest-shutdown");
    vm_sm_qmp_event(&sm, "SHUTDOWN", data);
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(0, 0), NULL));
    assert_int_equal(sm.state, VM_STATE_STOPPED);
    assert_string_equal(sm.cause,
                        "stopped on order (guest powered off, qemu exited with status 0)");

    /* QEMU that dies before QMP answers never ran: failed, with QEMU's reason. */
    vm_sm_starting(&sm, "autostart");
    assert_false(sm.stop_ordered);
    assert_true(vm_sm_exited(&sm, true, W_EXITCODE(1, 0), "could not open kernel file"));
    assert_int_equal(sm.state, VM_STATE_FAILED);
    assert_string_equal(
        sm.cause, "qemu exited with status 1 before QMP was ready: could not open kernel file");
    assert_false(vm_state_is_live(sm.state));
    /* Paused at start (e.g. an incoming migration) is reported as such. */
    vm_sm_starting(&sm, "adopted");
    assert_true(vm_sm_qmp_status(&sm, "inmigrate"));
    assert_int_equal(sm.state, VM_STATE_PAUSED);
}

/* --- accelerator probe ------------------------------------------------------ */

struct accel_result {
    bool done;
    struct accel_choice choice;
};

static void on_accel(const struct accel_choice *choice, void *opaque)
{
    struct accel_result *r = opaque;
    r->done = true;
    r->choice = *choice;
}

static bool accel_done(void *arg)
{
    return ((struct accel_result *)arg)->done;
}

static struct accel_result resolve(struct event_base *base, struct vcr_agent_config *cfg)
{
    struct accel_result r = {0};
    struct accel_probe *p = accel_resolve(base, cfg, on_accel, &r, NULL);
    assert_non_null(p);
    assert_true(run_until(base, accel_done, &r, 10000));
    accel_probe_free(p);
    proc_reap_children();
    return r;
}

static void test_accel_fixed_and_probe(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    char dir[] = "/tmp/vcr-test-accel-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char qemu[4096], kernel[4200], initrd[4096], cache[4200];
    snprintf(qemu, sizeof(qemu), "%s/fake-qemu-probe", data_dir());
    snprintf(initrd, sizeof(initrd), "%s/initrd-test", data_dir());
    /* A kernel of our own, so that touching it invalidates the cache. */
    snprintf(kernel, sizeof(kernel), "%s/vmlinuz", dir);
    snprintf(cache, sizeof(cache), "%s/accel.json", dir);
    FILE *f = fopen(kernel, "w");
    fputs("kernel\n", f);
    fclose(f);
    struct vcr_agent_config cfg = {.state_dir = dir,
                                   .qemu = qemu,
                                   .accel = VCR_ACCEL_TCG,
                                   .probe_kernel = kernel,
                                   .probe_initrd = initrd,
                                   .probe_deadline_ms = 1000};

    struct accel_result r = resolve(base, &cfg);
    assert_string_equal(r.choice.accel, "tcg");
    assert_non_null(strstr(r.choice.reason, "configured"));

    cfg.accel = VCR_ACCEL_AUTO;
    if (access("/dev/kvm", R_OK | W_OK) < 0) {
        r = resolve(base, &cfg);
        assert_string_equal(r.choice.accel, "tcg");
        assert_non_null(strstr(r.choice.reason, "/dev/kvm"));
    } else {
        /* The guest prints the marker: KVM works, and the verdict is cached. */
        setenv("FAKE_QEMU_MODE", "ok", 1);
        r = resolve(base, &cfg);
        assert_string_equal(r.choice.accel, "kvm");
        assert_non_null(strstr(r.choice.reason, ACCEL_PROBE_MARKER));
        assert_int_equal(access(cache, R_OK), 0);
        /* A hanging QEMU is not even started: the cache answers. */
        setenv("FAKE_QEMU_MODE", "hang", 1);
        r = resolve(base, &cfg);
        assert_string_equal(r.choice.accel, "kvm");
        assert_non_null(strstr(r.choice.reason, "cached"));
        /* A new probe kernel (mtime) invalidates it: now the deadline hits. */
        struct timespec later[2] = {{.tv_sec = 1, .tv_nsec = 0}, {.tv_sec = 1, .tv_nsec = 0}};
        assert_int_equal(utimensat(AT_FDCWD, kernel, later, 0), 0);
        r = resolve(base, &cfg);
        assert_string_equal(r.choice.accel, "tcg");
        assert_non_null(strstr(r.choice.reason, "within 1000 ms"));
        unsetenv("FAKE_QEMU_MODE");
    }
    static const char *const leftovers[] = {"accel.json", "accel-probe.serial", "accel-probe.log",
                                            "vmlinuz"};
    for (size_t i = 0; i < sizeof(leftovers) / sizeof(leftovers[0]); i++) {
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", dir, leftovers[i]);
        unlink(path);
    }
    rmdir(dir);
    event_base_free(base);
}

/* --- server connection against an in-process server --------------------------- */

struct fake_server {
    struct event_base *base;
    int listen_fd;
    struct event *accept_ev;
    struct proto_conn *conn;
    json_t *received; /* every message, in order */
    bool challenge;   /* send a challenge first and check auth */
    bool auth_ok;
    int connections;
    int64_t term;         /* redundant servers: the term of welcome and echoes; 0: none */
    const char *redirect; /* a follower: answer hello with not_leader naming this */
    int hellos;
};

static void srv_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct fake_server *s = opaque;
    json_array_append(s->received, msg);
    if (strcmp(proto_msg_type(msg), "hello") == 0 && s->redirect) {
        s->hellos++;
        json_t *e = proto_msg_new("error", json_pack("{s:s, s:s, s:s, s:I}", "message",
                                                     "not the leader", "code", "not_leader",
                                                     "leader", s->redirect, "term", (json_int_t)0));
        proto_conn_send(c, e, NULL);
        json_decref(e);
        proto_conn_close(c, "not the leader");
        return;
    }
    if (strcmp(proto_msg_type(msg), "heartbeat") == 0 && s->term) {
        json_t *echo =
            proto_msg_new("heartbeat", json_pack("{s:O, s:I}", "seq", json_object_get(msg, "seq"),
                                                 "term", (json_int_t)s->term));
        proto_conn_send(c, echo, NULL);
        json_decref(echo);
    }
    if (strcmp(proto_msg_type(msg), "hello") == 0) {
        s->hellos++;
        if (s->challenge)
            s->auth_ok =
                proto_auth_verify("0123456789abcdef-key", 20, "00112233445566778899aabbccddeeff",
                                  json_string_value(json_object_get(msg, "auth")));
        json_t *welcome = proto_msg_new(
            "welcome", json_pack("{s:i, s:s}", "heartbeat_ms", 50, "server_version", "test"));
        if (s->term)
            json_object_set_new(welcome, "term", json_integer(s->term));
        proto_conn_send(c, welcome, NULL);
        json_decref(welcome);
    }
}

static void srv_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct fake_server *s = opaque;
    log_debug("test server: connection closed: %s", reason ? reason : "EOF");
    if (s->conn == c) {
        proto_conn_free(c);
        s->conn = NULL;
    }
}

static const struct proto_conn_ops srv_ops = {.message = srv_message, .closed = srv_closed};

static void srv_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_server *s = arg;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    log_debug("test server: accepted a connection");
    if (s->conn)
        proto_conn_free(s->conn);
    s->conn = proto_conn_from_fd(s->base, c, NULL, &srv_ops, s, NULL);
    s->connections++;
    if (s->challenge) {
        json_t *ch = proto_msg_new("challenge",
                                   json_pack("{s:s}", "nonce", "00112233445566778899aabbccddeeff"));
        proto_conn_send(s->conn, ch, NULL);
        json_decref(ch);
    }
}

static int srv_start(struct fake_server *s, struct event_base *base)
{
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->received = json_array();
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &len), 0);
    s->accept_ev = event_new(base, s->listen_fd, EV_READ | EV_PERSIST, srv_accept, s);
    event_add(s->accept_ev, NULL);
    return ntohs(a.sin_port);
}

static void srv_stop(struct fake_server *s)
{
    if (s->conn)
        proto_conn_free(s->conn);
    event_free(s->accept_ev);
    close(s->listen_fd);
    json_decref(s->received);
}

/* The index of the first message of type (and, if vm, for that VM) from index from; -1 if none. */
static int srv_find(const struct fake_server *s, size_t from, const char *type, const char *vm)
{
    for (size_t i = from; i < json_array_size(s->received); i++) {
        json_t *m = json_array_get(s->received, i);
        const char *m_vm = json_string_value(json_object_get(m, "vm"));
        if (strcmp(proto_msg_type(m), type) == 0 && (vm == NULL || (m_vm && strcmp(m_vm, vm) == 0)))
            return (int)i;
    }
    return -1;
}

struct conn_test {
    struct fake_server srv;
    struct agent_conn *conn;
    int orders;
    size_t from;
    const char *want_type;
    const char *want_vm;
};

static json_t *fake_vm_list(void *opaque)
{
    (void)opaque;
    return json_pack("[{s:s, s:s, s:i}]", "name", "web1", "state", "running", "pid", 4242);
}

static void fake_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    (void)msg;
    struct conn_test *t = opaque;
    t->orders++;
    bool ok = strcmp(action, "vm_kill") == 0 && strcmp(vm, "web1") == 0;
    agent_conn_reply(t->conn, id, ok, ok ? NULL : "no such VM");
}

static const struct agent_conn_ops fake_conn_ops = {.vm_list = fake_vm_list, .order = fake_order};

static bool received(void *arg)
{
    struct conn_test *t = arg;
    return srv_find(&t->srv, t->from, t->want_type, t->want_vm) >= 0;
}

static json_t *wait_msg(struct event_base *base, struct conn_test *t, const char *type,
                        const char *vm)
{
    t->want_type = type;
    t->want_vm = vm;
    if (!run_until(base, received, t, 5000))
        fail_msg("no `%s` message within 5 s", type);
    int i = srv_find(&t->srv, t->from, type, vm);
    t->from = (size_t)i + 1;
    return json_array_get(t->srv.received, (size_t)i);
}

static bool agent_saw_close(void *arg)
{
    return !agent_conn_is_up(((struct conn_test *)arg)->conn);
}

static void test_server_connection(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct conn_test t = {0};
    int port = srv_start(&t.srv, base);
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%d", port);
    struct agent_conn_params p = {
        .server = server, .host = "host1", .role = "host", .accel = "tcg"};
    t.conn = agent_conn_new(base, &p, &fake_conn_ops, &t, NULL);
    assert_non_null(t.conn);
    agent_conn_start(t.conn);

    json_t *hello = wait_msg(base, &t, "hello", NULL);
    assert_string_equal(json_string_value(json_object_get(hello, "host")), "host1");
    assert_string_equal(json_string_value(json_object_get(hello, "role")), "host");
    assert_string_equal(json_string_value(json_object_get(hello, "accel")), "tcg");
    assert_int_equal(json_integer_value(json_object_get(hello, "pid")), getpid());
    assert_int_equal(json_array_size(json_object_get(hello, "vms")), 1);
    assert_null(json_object_get(hello, "auth"));
    json_t *hb = wait_msg(base, &t, "heartbeat", NULL);
    assert_true(json_integer_value(json_object_get(hb, "seq")) >= 1);
    assert_true(agent_conn_is_up(t.conn));

    /* An order is handed to the role and its reply sent back. */
    json_t *order = proto_msg_new(
        "order", json_pack("{s:i, s:s, s:s}", "id", 7, "action", "vm_kill", "vm", "web1"));
    proto_conn_send(t.srv.conn, order, NULL);
    json_decref(order);
    json_t *reply = wait_msg(base, &t, "reply", NULL);
    assert_int_equal(json_integer_value(json_object_get(reply, "id")), 7);
    assert_true(json_is_true(json_object_get(reply, "ok")));
    assert_int_equal(t.orders, 1);

    agent_conn_send_event(t.conn,
                          json_pack("{s:s, s:s, s:s, s:I}", "vm", "web1", "state", "crashed",
                                    "cause", "qemu killed by signal 9", "ts_ms", (json_int_t)1));
    json_t *ev = wait_msg(base, &t, "vm_event", "web1");
    assert_string_equal(json_string_value(json_object_get(ev, "state")), "crashed");

    /* The server drops us: events meanwhile are queued and follow the next hello.
     * (One sent before the agent sees the EOF is lost with the connection; the
     * next hello's VM list re-syncs the server.) */
    proto_conn_free(t.srv.conn);
    t.srv.conn = NULL;
    assert_true(run_until(base, agent_saw_close, &t, 1000));
    size_t before = json_array_size(t.srv.received);
    agent_conn_send_event(t.conn,
                          json_pack("{s:s, s:s, s:s, s:I}", "vm", "web2", "state", "running",
                                    "cause", "qmp ready", "ts_ms", (json_int_t)2));
    t.from = before;
    wait_msg(base, &t, "vm_event", "web2");
    int hello2 = srv_find(&t.srv, before, "hello", NULL);
    int queued = srv_find(&t.srv, before, "vm_event", "web2");
    assert_true(hello2 >= 0 && queued > hello2);
    assert_int_equal(t.srv.connections, 2);

    agent_conn_free(t.conn);
    srv_stop(&t.srv);
    event_base_free(base);
}

/* Redundant servers (docs/ha.md): a follower's not_leader sends the agent to the
 * leader it names; an order of an older term than the newest seen is refused
 * with code stale_term; a deposed leader's welcome is no contact and the agent
 * moves on. */
struct term_test {
    struct conn_test t;
    int heard, heard_mark;
    struct fake_server *follower;
};

static void term_heard(int64_t evidence_ms, void *opaque)
{
    (void)evidence_ms;
    ((struct term_test *)opaque)->heard++;
}

static void term_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    fake_order(id, action, vm, msg, &((struct term_test *)opaque)->t);
}

static json_t *term_vm_list(void *opaque)
{
    return fake_vm_list(opaque);
}

static const struct agent_conn_ops term_conn_ops = {
    .vm_list = term_vm_list, .order = term_order, .heard = term_heard};

static bool leader_welcomed(void *arg)
{
    struct term_test *tt = arg;
    return tt->heard > tt->heard_mark;
}

/* The follower had its second hello and the agent left it. */
static bool follower_left(void *arg)
{
    struct term_test *tt = arg;
    return tt->follower->hellos >= 2 && tt->follower->conn == NULL;
}

static json_t *reply_to(struct event_base *base, struct fake_server *srv, struct conn_test *t,
                        int id, int64_t term)
{
    json_t *order =
        proto_msg_new("order", json_pack("{s:i, s:s, s:s, s:I}", "id", id, "action", "vm_kill",
                                         "vm", "web1", "term", (json_int_t)term));
    proto_conn_send(srv->conn, order, NULL);
    json_decref(order);
    return wait_msg(base, t, "reply", NULL);
}

static void test_server_terms_and_redirect(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct term_test tt = {0};
    struct fake_server follower;
    int lport = srv_start(&tt.t.srv, base); /* the leader: its messages are tt.t's */
    int fport = srv_start(&follower, base);
    char leader_addr[32], servers[80];
    snprintf(leader_addr, sizeof(leader_addr), "127.0.0.1:%d", lport);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d, %s", fport, leader_addr);
    tt.t.srv.term = 5;
    follower.redirect = leader_addr;
    struct agent_conn_params p = {
        .server = servers, .host = "host1", .role = "host", .accel = "tcg"};
    tt.t.conn = agent_conn_new(base, &p, &term_conn_ops, &tt, NULL);
    assert_non_null(tt.t.conn);
    agent_conn_start(tt.t.conn);

    /* The follower first (first in the list), which names the leader. */
    assert_true(run_until(base, leader_welcomed, &tt, 5000));
    assert_int_equal(follower.hellos, 1);
    assert_int_equal(tt.t.srv.hellos, 1);
    wait_msg(base, &tt.t, "hello", NULL);

    /* Orders of the current term are carried out; an older term's are refused. */
    json_t *ok = reply_to(base, &tt.t.srv, &tt.t, 1, 5);
    assert_true(json_is_true(json_object_get(ok, "ok")));
    assert_int_equal(tt.t.orders, 1);
    tt.t.srv.term = 6; /* a newer term seen in an order raises the bar */
    json_t *newer = reply_to(base, &tt.t.srv, &tt.t, 2, 6);
    assert_true(json_is_true(json_object_get(newer, "ok")));
    json_t *stale = reply_to(base, &tt.t.srv, &tt.t, 3, 5);
    assert_false(json_is_true(json_object_get(stale, "ok")));
    assert_string_equal(json_string_value(json_object_get(stale, "code")), "stale_term");
    assert_int_equal(json_integer_value(json_object_get(stale, "term")), 6);
    assert_int_equal(tt.t.orders, 2);

    /* The follower turns into a deposed leader still believing in term 4: its
     * welcome is refused and is no contact; the agent goes back to the leader. */
    follower.redirect = NULL;
    follower.term = 4;
    proto_conn_free(tt.t.srv.conn);
    tt.t.srv.conn = NULL;
    assert_true(run_until(base, agent_saw_close, &tt.t, 1000));
    tt.follower = &follower;
    tt.heard_mark = tt.heard;
    assert_true(run_until(base, follower_left, &tt, 5000));
    assert_int_equal(tt.heard, tt.heard_mark); /* its welcome was no contact */
    assert_int_equal(srv_find(&follower, 0, "heartbeat", NULL), -1);
    assert_true(run_until(base, leader_welcomed, &tt, 5000));
    assert_int_equal(tt.t.srv.hellos, 2);

    agent_conn_free(tt.t.conn);
    srv_stop(&tt.t.srv);
    srv_stop(&follower);
    event_base_free(base);
}

static void test_server_challenge(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct conn_test t = {0};
    int port = srv_start(&t.srv, base);
    t.srv.challenge = true;
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%d", port);
    struct agent_conn_params p = {.server = server,
                                  .host = "host1",
                                  .role = "host",
                                  .accel = "kvm",
                                  .key = "0123456789abcdef-key",
                                  .key_len = 20};
    t.conn = agent_conn_new(base, &p, &fake_conn_ops, &t, NULL);
    agent_conn_start(t.conn);
    json_t *hello = wait_msg(base, &t, "hello", NULL);
    assert_non_null(json_object_get(hello, "auth"));
    assert_true(t.srv.auth_ok);
    agent_conn_free(t.conn);
    srv_stop(&t.srv);
    event_base_free(base);
}

/* --- real QEMU ------------------------------------------------------------------ */

#define QEMU "/usr/bin/qemu-system-x86_64"

struct vm_test {
    struct event_base *base;
    char dir[64];
    char host[32];
    struct vcr_vm_spec spec;
    struct host_vm_env env;
    struct host_vm *vm;
    enum vm_state seen[32];
    char causes[32][VM_CAUSE_MAX];
    int n_seen;
    int64_t last_ts;
};

static void on_vm_changed(struct host_vm *vm, int64_t ts_ms, void *opaque)
{
    struct vm_test *t = opaque;
    if (t->n_seen < 32) {
        t->seen[t->n_seen] = host_vm_state(vm);
        snprintf(t->causes[t->n_seen], VM_CAUSE_MAX, "%s", host_vm_cause(vm));
        t->n_seen++;
    }
    t->last_ts = ts_ms;
}

static enum vm_state want_state;
static bool vm_in_state(void *arg)
{
    struct vm_test *t = arg;
    return t->n_seen > 0 && t->seen[t->n_seen - 1] == want_state;
}

static void wait_state(struct vm_test *t, enum vm_state s, int timeout_ms)
{
    want_state = s;
    if (!run_until(t->base, vm_in_state, t, timeout_ms))
        fail_msg("VM not %s within %d ms; last: %s (%s)", vm_state_name(s), timeout_ms,
                 t->n_seen ? vm_state_name(t->seen[t->n_seen - 1]) : "none",
                 t->n_seen ? t->causes[t->n_seen - 1] : "");
}

/* lo is down in a fresh network namespace; the connection tests need it. */
static void bring_lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
}

static bool qemu_usable;

/* QEMU creates the VM's tap itself when it may; in a private network
 * namespace it may, without touching the host's interfaces. */
static int setup_qemu(void **state)
{
    (void)state;
    if (access(QEMU, X_OK) == 0 && unshare(CLONE_NEWNET) == 0) {
        bring_lo_up();
        qemu_usable = true;
    }
    return 0;
}

static void vm_test_init(struct vm_test *t)
{
    memset(t, 0, sizeof(*t));
    t->base = event_base_new();
    snprintf(t->dir, sizeof(t->dir), "/tmp/vcr-test-vm-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->host, sizeof(t->host), "utest%d", (int)getpid());
    t->spec = web1_spec();
    t->spec.memory_mb = 128;
    t->spec.tap = "vcrtest0";
    /* The lab kernel when it has been built, else a diskless VM in firmware:
     * either way a QEMU process with QMP, all the supervision needs. */
    static char kernel[4200], initrd[4200];
    snprintf(kernel, sizeof(kernel), "%s/../../../build/lab-cache/vmlinuz", data_dir());
    snprintf(initrd, sizeof(initrd), "%s/../../../build/lab-cache/initrd.img", data_dir());
    bool lab = access(kernel, R_OK) == 0 && access(initrd, R_OK) == 0;
    t->spec.kernel = lab ? kernel : NULL;
    t->spec.initrd = lab ? initrd : NULL;
    t->env = (struct host_vm_env){
        .base = t->base,
        .qemu = QEMU,
        .host = t->host,
        .state_dir = t->dir,
        .accel = "tcg",
        .ram = &shm_ram_dir,
    };
    t->vm = host_vm_new(&t->env, &t->spec, on_vm_changed, t, NULL);
    assert_non_null(t->vm);
}

static void ram_path_of(struct vm_test *t, char *out, size_t size)
{
    struct vm_paths p;
    assert_int_equal(vm_paths_init(&p, VM_SHM_DIR, t->dir, t->host, "web1", NULL), 0);
    snprintf(out, size, "%s", p.ram);
    vm_paths_clear(&p);
}

static void vm_test_fini(struct vm_test *t)
{
    host_vm_free(t->vm);
    static const char *const files[] = {"web1.serial", "web1.log", "web1.qmp", "web1.pid"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", t->dir, files[i]);
        unlink(path);
    }
    rmdir(t->dir);
    event_base_free(t->base);
    proc_reap_children();
}

static void test_real_qemu_kill9_is_crash(void **state)
{
    (void)state;
    if (!qemu_usable)
        skip();
    struct vm_test t;
    vm_test_init(&t);
    cleanup_error vcr_error_t err = NULL;
    if (host_vm_start(t.vm, "test", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(t.seen[0], VM_STATE_STARTING);
    wait_state(&t, VM_STATE_RUNNING, 20000);
    pid_t pid = host_vm_pid(t.vm);
    assert_true(pid > 0);
    char ram[128];
    ram_path_of(&t, ram, sizeof(ram));
    assert_int_equal(access(ram, F_OK), 0);

    /* Someone else kills QEMU, as `kill -9` would. */
    int64_t killed = vcr_wall_ms();
    assert_int_equal(kill(pid, SIGKILL), 0);
    wait_state(&t, VM_STATE_CRASHED, 10000);
    assert_string_equal(host_vm_cause(t.vm), "qemu killed by signal 9");
    assert_true(t.last_ts >= killed);
    assert_false(host_vm_has_process(t.vm));
    /* Nothing left behind in /dev/shm, and no stale socket or pid file. */
    assert_int_equal(access(ram, F_OK), -1);
    char qmp[128];
    snprintf(qmp, sizeof(qmp), "%s/web1.qmp", t.dir);
    assert_int_equal(access(qmp, F_OK), -1);
    vm_test_fini(&t);
}

static void test_real_qemu_stop_adopt_and_kill_on_order(void **state)
{
    (void)state;
    if (!qemu_usable)
        skip();
    struct vm_test t;
    vm_test_init(&t);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(host_vm_start(t.vm, "test", &err), 0);
    wait_state(&t, VM_STATE_RUNNING, 20000);
    assert_int_equal(host_vm_start(t.vm, "again", &err), -1); /* already running */
    vcr_error_release(&err);

    /* Graceful stop: powerdown, then quit when the guest ignores it. */
    assert_int_equal(host_vm_stop(t.vm, 300, &err), 0);
    wait_state(&t, VM_STATE_STOPPED, 10000);
    assert_non_null(strstr(host_vm_cause(t.vm), "stopped on order"));

    /* An agent restart: the supervisor goes, QEMU stays, the next one adopts it. */
    assert_int_equal(host_vm_start(t.vm, "test", &err), 0);
    wait_state(&t, VM_STATE_RUNNING, 20000);
    pid_t pid = host_vm_pid(t.vm);
    host_vm_free(t.vm);
    assert_int_equal(kill(pid, 0), 0);
    t.n_seen = 0;
    t.vm = host_vm_new(&t.env, &t.spec, on_vm_changed, &t, NULL);
    assert_true(host_vm_adopt(t.vm));
    assert_int_equal(host_vm_pid(t.vm), pid);
    wait_state(&t, VM_STATE_RUNNING, 10000);

    /* Fencing: SIGKILL through the pidfd. */
    assert_int_equal(host_vm_kill(t.vm, &err), 0);
    wait_state(&t, VM_STATE_STOPPED, 10000);
    assert_string_equal(host_vm_cause(t.vm), "stopped on order (qemu killed by signal 9)");
    assert_int_equal(host_vm_kill(t.vm, &err), -1);
    assert_int_equal(vcr_error_status(err), ESRCH);
    vm_test_fini(&t);
}

static void test_real_qemu_death_without_agent_is_not_restarted(void **state)
{
    (void)state;
    if (!qemu_usable)
        skip();
    struct vm_test t;
    vm_test_init(&t);
    assert_int_equal(host_vm_start(t.vm, "test", NULL), 0);
    wait_state(&t, VM_STATE_RUNNING, 20000);
    pid_t pid = host_vm_pid(t.vm);
    /* The agent goes; its QEMU dies before the next agent comes. */
    host_vm_free(t.vm);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    t.n_seen = 0;
    t.vm = host_vm_new(&t.env, &t.spec, on_vm_changed, &t, NULL);
    assert_false(host_vm_adopt(t.vm));
    assert_true(host_vm_found_ended(t.vm));
    assert_int_equal(host_vm_state(t.vm), VM_STATE_CRASHED);
    assert_non_null(strstr(host_vm_cause(t.vm), "earlier agent"));
    char ram[128];
    ram_path_of(&t, ram, sizeof(ram));
    assert_int_equal(access(ram, F_OK), -1);
    /* Cleaned up: a later agent start finds nothing, and autostart applies. */
    assert_false(host_vm_found_ended(t.vm));
    vm_test_fini(&t);
}

static void test_qmp_never_ready_fails_the_start(void **state)
{
    (void)state;
    struct vm_test t;
    vm_test_init(&t);
    /* A "QEMU" that runs but never opens its QMP socket. */
    static char fake[4200];
    snprintf(fake, sizeof(fake), "%s/fake-qemu-probe", data_dir());
    t.env.qemu = fake;
    host_vm_free(t.vm);
    t.vm = host_vm_new(&t.env, &t.spec, on_vm_changed, &t, NULL);
    setenv("FAKE_QEMU_MODE", "hang", 1);
    assert_int_equal(host_vm_start(t.vm, "test", NULL), 0);
    unsetenv("FAKE_QEMU_MODE");
    wait_state(&t, VM_STATE_FAILED, HOST_VM_QMP_CONNECT_MS + 5000);
    assert_non_null(strstr(host_vm_cause(t.vm), "qemu killed by signal 9 before QMP was ready"));
    assert_non_null(strstr(host_vm_cause(t.vm), "QMP not ready within"));
    vm_test_fini(&t);
}

static void test_real_qemu_bad_kernel_fails_with_reason(void **state)
{
    (void)state;
    if (!qemu_usable)
        skip();
    struct vm_test t;
    vm_test_init(&t);
    t.spec.kernel = "/nonexistent/vmlinuz";
    t.spec.initrd = "/nonexistent/initrd";
    assert_int_equal(host_vm_start(t.vm, "test", NULL), 0);
    wait_state(&t, VM_STATE_FAILED, 10000);
    assert_non_null(strstr(host_vm_cause(t.vm), "before QMP was ready"));
    assert_non_null(strstr(host_vm_cause(t.vm), "/nonexistent/vmlinuz"));
    vm_test_fini(&t);
}

/* The copy's writes in the disk preparation's child: each waits until the
 * test writes a byte to prep_gate[1] (10 s at most, then the copy fails). */
static int prep_gate[2] = {-1, -1};

static ssize_t gated_write(int fd, const void *buf, size_t n, off_t off)
{
    struct pollfd p = {.fd = prep_gate[0], .events = POLLIN};
    if (poll(&p, 1, 10000) != 1) {
        errno = ETIMEDOUT;
        return -1;
    }
    return pwrite(fd, buf, n, off);
}

/* A VM's disks (here: an earlier agent's memory file of a warm-cache volume
 * to move into its image) are made in a child: the start answers at once and
 * the loop goes on (heartbeats: a loop held up past the fence watchdog's limit
 * had every VM of the host killed).  A kill meanwhile cancels the start; a
 * failed preparation fails the VM with its cause. */
static void test_vm_start_prepares_its_disks_off_the_loop(void **state)
{
    (void)state;
    if (!qemu_usable)
        skip();
    struct vm_test t;
    vm_test_init(&t);
    char img[300];
    snprintf(img, sizeof(img), "%s/data.img", t.dir);
    struct vcr_volume_spec vol = {
        .name = "data", .size_mb = 16, .image = img, .mount = "/data", .warm_cache = true};
    t.spec.volumes = &vol;
    t.spec.n_volumes = 1;
    host_vm_free(t.vm);
    t.vm = host_vm_new(&t.env, &t.spec, on_vm_changed, &t, NULL);
    struct vm_paths p;
    assert_int_equal(vm_paths_init(&p, VM_SHM_DIR, t.dir, t.host, "web1", NULL), 0);
    cleanup_free char *legacy = host_volume_legacy_mem_path(p.shm_base, "data");
    vm_paths_clear(&p);
    cleanup_error vcr_error_t err = NULL;
    if (host_volume_build_image(legacy, 16 << 20, NULL, "data", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_int_equal(chmod(legacy, 0600), 0);
    assert_int_equal(pipe2(prep_gate, O_CLOEXEC), 0);
    host_volume_write_hook = gated_write;

    /* Held up in the copy: the start has answered, no QEMU yet. */
    if (host_vm_start(t.vm, "test", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    assert_true(host_vm_preparing(t.vm));
    assert_false(host_vm_has_process(t.vm));
    assert_int_equal(host_vm_state(t.vm), VM_STATE_STARTING);
    assert_non_null(strstr(host_vm_cause(t.vm), "preparing its disks"));
    assert_int_equal(host_vm_start(t.vm, "again", &err), -1);
    assert_int_equal(vcr_error_status(err), EBUSY);
    vcr_error_release(&err);
    /* A kill cancels it: stopped, and no QEMU ever started. */
    assert_int_equal(host_vm_kill(t.vm, &err), 0);
    assert_false(host_vm_preparing(t.vm));
    assert_int_equal(host_vm_state(t.vm), VM_STATE_STOPPED);
    assert_non_null(strstr(host_vm_cause(t.vm), "before its qemu started"));
    assert_int_equal(host_vm_pid(t.vm), 0);
    assert_int_equal(access(legacy, F_OK), 0); /* not moved: the copy did not end */

    /* The gate open: the copy ends in the child, then QEMU starts. */
    assert_int_equal(write(prep_gate[1], "x", 1), 1);
    if (host_vm_start(t.vm, "test", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    wait_state(&t, VM_STATE_RUNNING, 20000);
    host_volume_write_hook = pwrite;
    assert_true(host_vm_pid(t.vm) > 0);
    assert_int_equal(access(legacy, F_OK), -1);
    assert_int_equal(host_volume_check_image(img, 16 << 20, &err), 0);
    assert_int_equal(host_vm_kill(t.vm, &err), 0);
    wait_state(&t, VM_STATE_STOPPED, 10000);

    /* A preparation that fails: the VM is failed, with the volume's cause. */
    vol.image = "/nonexistent-vcr-dir/data.img";
    if (host_vm_start(t.vm, "test", &err) < 0)
        fail_msg("%s", vcr_error_msg(err));
    wait_state(&t, VM_STATE_FAILED, 10000);
    assert_non_null(strstr(host_vm_cause(t.vm), "volume `data`"));
    close(prep_gate[0]);
    close(prep_gate[1]);
    unlink(img);
    vm_test_fini(&t);
}

/* --- self-fencing (docs/fencing.md) --- */

struct kill_log {
    int n;
    pid_t pids[8];
};

static void record_kill(const struct fence_wd_vm *vm, void *opaque)
{
    struct kill_log *k = opaque;
    if (k->n < 8)
        k->pids[k->n++] = vm->pid;
}

/* The watchdog's decision, on an explicit clock: no sleeping. */
static void test_fence_timeout_capped_by_server(void **state)
{
    (void)state;
    /* The server switches fence_after_ms after the last contact: the watchdog
     * must not wait longer; a shorter configured timeout stays; off stays off. */
    assert_int_equal(host_fence_effective_timeout(10000, 8000), 8000);
    assert_int_equal(host_fence_effective_timeout(5000, 8000), 5000);
    assert_int_equal(host_fence_effective_timeout(0, 8000), 0);
    assert_int_equal(host_fence_effective_timeout(10000, 0), 10000);
    assert_int_equal(host_fence_effective_timeout(10000, 10), FENCE_WD_TIMEOUT_MIN);
}

static void test_fence_wd_decisions(void **state)
{
    (void)state;
    struct fence_wd *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    struct kill_log k = {0};
    char reply[256];
    fence_wd_init(w, 1000, 5000);
    assert_int_equal(
        fence_wd_handle_line(w, "vms web1=4242 web2=4343", 5000, false, reply, sizeof(reply), NULL),
        0);
    assert_int_equal(w->n_vms, 2);
    /* Fed: no kill before the timeout counted from the last contact. */
    assert_int_equal(fence_wd_handle_line(w, "feed 5600", 5700, false, reply, sizeof(reply), NULL),
                     0);
    assert_int_equal(fence_wd_check(w, 6599, record_kill, &k), -1);
    assert_int_equal(k.n, 0);
    /* Evidence from the future is clamped to now; older evidence changes nothing. */
    fence_wd_feed(w, 99999, 6000);
    assert_int_equal(fence_wd_deadline(w), 7000);
    fence_wd_feed(w, 5800, 6100);
    assert_int_equal(fence_wd_deadline(w), 7000);
    /* The pid list is replaced: only web3 is listed now. */
    assert_int_equal(
        fence_wd_handle_line(w, "vms web3=5151", 6200, false, reply, sizeof(reply), NULL), 0);
    /* Silence: at the deadline the listed VMs are killed, once. */
    assert_int_equal(fence_wd_check(w, 7000, record_kill, &k), 1);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.pids[0], 5151);
    assert_true(w->fired);
    assert_int_equal(w->n_vms, 0);
    assert_int_equal(fence_wd_check(w, 7100, record_kill, &k), 0);
    assert_int_equal(k.n, 1);
    /* A new feed re-arms it; a VM listed later is protected until the new deadline. */
    fence_wd_feed(w, 7200, 7200);
    assert_false(w->fired);
    assert_int_equal(fence_wd_set_vms(w, "web1=6000", false, NULL), 0);
    assert_int_equal(fence_wd_check(w, 8199, record_kill, &k), -1);
    /* A pause holds the kill off until its end, and no longer. */
    assert_int_equal(fence_wd_handle_line(w, "pause 3000", 8000, false, reply, sizeof(reply), NULL),
                     0);
    assert_string_equal(reply, "ok\n");
    assert_int_equal(fence_wd_check(w, 10999, record_kill, &k), -1);
    assert_int_equal(fence_wd_check(w, 11000, record_kill, &k), 1);
    assert_int_equal(k.pids[1], 6000);
    /* status, a new timeout, and bad lines (named, with what is allowed). */
    assert_int_equal(fence_wd_handle_line(w, "status", 11000, false, reply, sizeof(reply), NULL),
                     0);
    assert_non_null(strstr(reply, "\"fired\": true"));
    /* A longer timeout waits for server contact: an agent restarted while cut
     * off sends its configured one, and the server counts on the shorter one
     * its welcome had set (the host must be fenced by then). */
    assert_int_equal(
        fence_wd_handle_line(w, "timeout 2000", 11000, false, reply, sizeof(reply), NULL), 0);
    assert_int_equal(w->timeout_ms, 1000);
    fence_wd_feed(w, 11000, 11000);
    assert_int_equal(w->timeout_ms, 2000);
    /* A shorter one applies at once and drops a longer one still waiting. */
    assert_int_equal(
        fence_wd_handle_line(w, "timeout 9000", 11000, false, reply, sizeof(reply), NULL), 0);
    assert_int_equal(
        fence_wd_handle_line(w, "timeout 1500", 11000, false, reply, sizeof(reply), NULL), 0);
    assert_int_equal(w->timeout_ms, 1500);
    fence_wd_feed(w, 11100, 11100);
    assert_int_equal(w->timeout_ms, 1500);
    static const char *const bad[] = {"timeout 10", "pause 700000",    "feed x", "vms web1",
                                      "vms web1=1", "vms bad/name=77", "bark"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cleanup_error vcr_error_t err = NULL;
        assert_int_equal(fence_wd_handle_line(w, bad[i], 11000, false, reply, sizeof(reply), &err),
                         -1);
        assert_non_null(vcr_error_msg(err));
    }
    assert_int_equal(fence_wd_set_vms(w, "a=100 b=200", false, NULL), 0);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(fence_wd_set_vms(w, "a=100 c=x", false, &err), -1);
    assert_int_equal(w->n_vms, 2); /* unchanged by a bad list */
    fence_wd_clear(w);
    free(w);
}

/* Past the deadline nothing read from the agent takes the kill back: not a
 * feed whose contact came after the deadline, nor one that waited in the socket
 * while the watchdog could not run (the deadline is checked before it). */
static void test_fence_wd_overdue_kill_is_not_cancelled(void **state)
{
    (void)state;
    struct fence_wd *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    struct kill_log k = {0};
    char reply[256];
    fence_wd_init(w, 1000, 0);
    assert_int_equal(fence_wd_set_vms(w, "web1=4242", false, NULL), 0);
    /* Contact came back at 1400, 400 ms past the deadline: killed all the same. */
    assert_int_equal(fence_wd_handle_line(w, "feed 1400", 1500, false, reply, sizeof(reply), NULL),
                     0);
    assert_int_equal(fence_wd_check(w, 1500, record_kill, &k), 1);
    assert_int_equal(k.pids[0], 4242);
    /* The feed counts from then on: re-armed, the next deadline from 1400. */
    assert_false(w->fired);
    assert_int_equal(fence_wd_deadline(w), 2400);
    /* Stopped from 2300 to 3000 with a feed of 2350 queued (contact before the
     * deadline): read on waking, it still comes after the check. */
    assert_int_equal(fence_wd_set_vms(w, "web2=5151", false, NULL), 0);
    assert_int_equal(fence_wd_handle_line(w, "feed 2350", 3000, false, reply, sizeof(reply), NULL),
                     0);
    assert_int_equal(fence_wd_check(w, 3000, record_kill, &k), 1);
    assert_int_equal(k.pids[1], 5151);
    assert_int_equal(fence_wd_deadline(w), 3350);
    /* Before the deadline a feed simply moves it. */
    assert_int_equal(fence_wd_handle_line(w, "feed 3100", 3200, false, reply, sizeof(reply), NULL),
                     0);
    assert_int_equal(fence_wd_deadline(w), 4100);
    assert_int_equal(fence_wd_check(w, 3200, record_kill, &k), -1);
    fence_wd_clear(w);
    free(w);
}

/* A respawned watchdog goes on from the contact and pause its predecessor kept. */
static void test_fence_wd_resume(void **state)
{
    (void)state;
    struct fence_wd *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    fence_wd_init(w, 1000, 9000);
    fence_wd_resume(w, 8600, 0, 0, 9000);
    assert_int_equal(fence_wd_deadline(w), 9600);
    fence_wd_resume(w, 8600, 12000, 0, 9000);
    assert_int_equal(fence_wd_deadline(w), 12000);
    fence_wd_resume(w, 99999, 0, 0, 9000); /* from the future: taken as now */
    assert_int_equal(fence_wd_deadline(w), 10000);
    /* Its predecessor had been lowered (the server's fence_after_ms) below this
     * one's --timeout-ms: the lower one counts until the server is heard from. */
    fence_wd_init(w, 10000, 9000);
    fence_wd_resume(w, 8600, 0, 1875, 9000);
    assert_int_equal(fence_wd_deadline(w), 8600 + 1875);
    fence_wd_feed(w, 9100, 9100);
    assert_int_equal(fence_wd_deadline(w), 9100 + 10000);
    /* A longer timeout kept is not taken. */
    fence_wd_init(w, 1000, 9000);
    fence_wd_resume(w, 8600, 0, 5000, 9000);
    assert_int_equal(fence_wd_deadline(w), 9600);
    free(w);
}

static int wd_connect(const char *dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, FENCE_WD_SOCKET);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void wd_say(int fd, const char *fmt, ...)
{
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    assert_int_equal(send(fd, line, (size_t)n, MSG_NOSIGNAL), n);
}

/* Asks for the watchdog's status and waits for the answer: what was sent
 * before has been read. */
static void wd_status(int fd)
{
    wd_say(fd, "status\n");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    char buf[512];
    assert_true(recv(fd, buf, sizeof(buf), 0) > 0);
}

/* Whether pidfd becomes readable (the process ended) within ms. */
static bool ended_within(int pidfd, int ms)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int64_t deadline = vcr_mono_ms() + ms;
    for (;;) {
        int left = (int)(deadline - vcr_mono_ms());
        int r = poll(&p, 1, left > 0 ? left : 0);
        if (r == 1)
            return true;
        if (r == 0 || (r < 0 && errno != EINTR))
            return false;
    }
}

/* A `sleep 60` child and a pidfd on it. */
static pid_t spawn_sleeper(int *pidfd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execlp("sleep", "sleep", "60", (char *)NULL);
        _exit(127);
    }
    *pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    assert_true(*pidfd >= 0);
    return pid;
}

/* The watchdog process on dir (its socket made here, as the agent does). */
static pid_t spawn_watchdog(const char *dir, int timeout_ms)
{
    int lfd = fence_wd_listen(dir, NULL);
    assert_true(lfd >= 0);
    pid_t wd = fork();
    assert_true(wd >= 0);
    if (wd == 0)
        _exit(fence_watchdog_main(dir, timeout_ms, lfd));
    close(lfd);
    return wd;
}

/* A watchdog (its own state dir) guarding a `sleep 60`, with an agent's
 * connection to it: the list is sent and taken. */
struct wd_rig {
    char dir[32];
    pid_t sleeper, wd;
    int sleeper_fd, fd;
};

static void wd_status(int fd);

static void wd_rig_open(struct wd_rig *r, int timeout_ms)
{
    snprintf(r->dir, sizeof(r->dir), "/tmp/vcr-test-fence-XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    r->sleeper = spawn_sleeper(&r->sleeper_fd);
    r->wd = spawn_watchdog(r->dir, timeout_ms);
    r->fd = wd_connect(r->dir);
    wd_say(r->fd, "vms sleeper=%d\n", (int)r->sleeper);
    wd_status(r->fd);
}

static void remove_fence_dir(const char *dir)
{
    /* The .tmp of a countdown write that a SIGKILL cut short, too. */
    static const char *const names[] = {FENCE_WD_FENCED_FILE, FENCE_WD_SOCKET,
                                        FENCE_WD_CONTACT_FILE, FENCE_WD_CONTACT_FILE ".tmp"};
    char path[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void reap(pid_t pid, int sig)
{
    if (sig)
        kill(pid, sig);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
}

/* The real process: a watchdog with a 500 ms timeout fences a `sleep 60`
 * once it is no longer fed, and writes fenced.json. */
static void test_fence_watchdog_kills_when_not_fed(void **state)
{
    (void)state;
    struct wd_rig r;
    wd_rig_open(&r, 500);
    const char *dir = r.dir;
    int sleeper_fd = r.sleeper_fd, fd = r.fd;
    pid_t sleeper = r.sleeper, wd = r.wd;
    /* Fed twice 300 ms apart: alive 600 ms after the first feed. */
    wd_say(fd, "feed %lld\n", (long long)fence_wd_now_ms());
    assert_false(ended_within(sleeper_fd, 300));
    wd_say(fd, "feed %lld\n", (long long)fence_wd_now_ms());
    int64_t last_feed = vcr_mono_ms();
    assert_false(ended_within(sleeper_fd, 300));
    /* Silence: killed about 500 ms after the last feed. */
    assert_true(ended_within(sleeper_fd, 5000));
    int64_t fenced_after = vcr_mono_ms() - last_feed;
    print_message("sleep killed %lld ms after the last feed (timeout 500 ms)\n",
                  (long long)fenced_after);
    assert_true(fenced_after >= 450 && fenced_after < 3000);
    int st = 0;
    assert_int_equal(waitpid(sleeper, &st, 0), sleeper);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(sleeper_fd);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, FENCE_WD_FENCED_FILE);
    cleanup_json json_t *doc = json_load_file(path, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(doc, "pids"), 0)), sleeper);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "reason")), "no server contact"));
    assert_true(json_integer_value(json_object_get(doc, "ts_ms")) > 0);
    /* Its agent gone and nothing left to fence, the watchdog exits. */
    close(fd);
    int wd_fd = (int)syscall(SYS_pidfd_open, wd, 0);
    assert_true(wd_fd >= 0);
    assert_true(ended_within(wd_fd, 5000));
    close(wd_fd);
    assert_int_equal(waitpid(wd, &st, 0), wd);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    remove_fence_dir(dir);
}

/* The watchdog itself stopped (SIGSTOP) past its deadline while the agent
 * went on feeding it: on SIGCONT the kill comes first, the queued feeds after. */
static void test_fence_watchdog_stopped_past_its_deadline_kills(void **state)
{
    (void)state;
    struct wd_rig r;
    wd_rig_open(&r, 500);
    const char *dir = r.dir;
    int sleeper_fd = r.sleeper_fd, fd = r.fd;
    pid_t sleeper = r.sleeper, wd = r.wd;
    wd_say(fd, "feed %lld\n", (long long)fence_wd_now_ms());
    wd_status(fd); /* taken before the stop */
    assert_int_equal(kill(wd, SIGSTOP), 0);
    /* Fed every 100 ms all along: 900 ms stopped, then 600 ms more running. */
    for (int i = 0; i < 15; i++) {
        if (i == 9)
            assert_int_equal(kill(wd, SIGCONT), 0);
        wd_say(fd, "feed %lld\n", (long long)fence_wd_now_ms());
        if (ended_within(sleeper_fd, 100))
            break;
    }
    assert_true(ended_within(sleeper_fd, 0));
    reap(sleeper, 0);
    close(sleeper_fd);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, FENCE_WD_FENCED_FILE);
    cleanup_json json_t *doc = json_load_file(path, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(doc, "pids"), 0)), sleeper);
    close(fd);
    reap(wd, 0);
    remove_fence_dir(dir);
}

/* A watchdog killed (-9) late in its countdown and started again (the agent
 * respawns it and re-sends its last contact): the new one fires at the old
 * deadline, from the contact its predecessor kept, not a timeout after its own
 * start. */
static void test_fence_watchdog_respawned_keeps_the_deadline(void **state)
{
    (void)state;
    struct wd_rig r;
    wd_rig_open(&r, 2000); /* it runs: its own start is before the contact */
    const char *dir = r.dir;
    int sleeper_fd = r.sleeper_fd, fd = r.fd;
    pid_t sleeper = r.sleeper, wd = r.wd;
    int64_t contact = fence_wd_now_ms();
    wd_say(fd, "feed %lld\n", (long long)contact);
    assert_false(ended_within(sleeper_fd, 1200));
    /* What it kept: this boot's contact. */
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, FENCE_WD_CONTACT_FILE);
    cleanup_json json_t *kept = json_load_file(path, 0, NULL);
    assert_non_null(kept);
    assert_int_equal(json_integer_value(json_object_get(kept, "contact_ms")), contact);
    assert_int_equal(json_integer_value(json_object_get(kept, "timeout_ms")), 2000);
    reap(wd, SIGKILL);
    close(fd);
    int64_t respawned = fence_wd_now_ms();
    wd = spawn_watchdog(dir, 2000);
    fd = wd_connect(dir);
    wd_say(fd, "vms sleeper=%d\n", (int)sleeper);
    wd_say(fd, "feed %lld\n", (long long)contact);
    /* Killed at contact + 2000 (about 750 ms from the respawn), well before the
     * respawn + 2000 a fresh countdown would give. */
    assert_true(ended_within(sleeper_fd, 1600));
    int64_t killed = fence_wd_now_ms();
    print_message("respawned at +%lld ms, killed at +%lld ms after the last contact (timeout "
                  "2000 ms)\n",
                  (long long)(respawned - contact), (long long)(killed - contact));
    assert_true(killed < respawned + 2000);
    assert_true(killed >= contact + 1950);
    reap(sleeper, 0);
    close(sleeper_fd);
    /* Its agent gone and nothing to fence, it exits and leaves no countdown. */
    close(fd);
    reap(wd, 0);
    assert_int_equal(access(path, F_OK), -1);
    remove_fence_dir(dir);
}

struct fence_watch {
    struct host_fence *f;
    int changes;
};

static void on_fence_changed(void *opaque)
{
    ((struct fence_watch *)opaque)->changes++;
}

static const char *fence_watchdog_state(struct host_fence *f)
{
    static char state[16];
    cleanup_json json_t *r = host_fence_report(f);
    snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(r, "watchdog")));
    return state;
}

static bool fence_paused(void *arg)
{
    return strcmp(fence_watchdog_state(arg), "paused") == 0;
}

static bool fence_armed(void *arg)
{
    return strcmp(fence_watchdog_state(arg), "armed") == 0;
}

static bool fence_down(void *arg)
{
    return strcmp(fence_watchdog_state(arg), "down") == 0;
}

/* The host role's link to a watchdog in dir (5000 ms; "/bin/false" if it must
 * spawn one), reporting its changes into *seen. */
static struct host_fence *fence_for_test(struct event_base *base, const char *dir,
                                         struct fence_watch *seen)
{
    cleanup_error vcr_error_t err = NULL;
    struct host_fence *f =
        host_fence_new(base, dir, 5000, "/bin/false", on_fence_changed, seen, &err);
    assert_non_null(f);
    return f;
}

/* What the agent tells the server it may count on (docs/fencing.md,
 * "Reporting"): armed once attached; a pause asked of the watchdog directly
 * (`--fence-watchdog DIR --pause MS`) and its end; a watchdog gone. */
static void test_host_fence_reports_pause_and_down(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-fence-XXXXXX";
    assert_non_null(mkdtemp(dir));
    pid_t wd = spawn_watchdog(dir, 5000);
    struct event_base *base = event_base_new();
    struct fence_watch seen = {0};
    struct host_fence *f = fence_for_test(base, dir, &seen);
    assert_true(run_until(base, fence_armed, f, 2000));
    cleanup_json json_t *armed = host_fence_report(f);
    assert_int_equal(json_integer_value(json_object_get(armed, "timeout_ms")), 5000);
    assert_null(json_object_get(armed, "pause_ms"));
    int changes = seen.changes;
    assert_int_equal(fence_watchdog_pause(dir, 60000), 0);
    assert_true(run_until(base, fence_paused, f, 2000));
    assert_true(seen.changes > changes);
    cleanup_json json_t *paused = host_fence_report(f);
    json_int_t left = json_integer_value(json_object_get(paused, "pause_ms"));
    assert_true(left > 50000 && left <= 60000);
    assert_int_equal(fence_watchdog_pause(dir, 0), 0);
    assert_true(run_until(base, fence_armed, f, 2000));
    /* Lowered by the server's fence_after_ms: told too. */
    changes = seen.changes;
    host_fence_limit(f, 3000);
    assert_int_equal(seen.changes, changes + 1);
    cleanup_json json_t *lowered = host_fence_report(f);
    assert_int_equal(json_integer_value(json_object_get(lowered, "timeout_ms")), 3000);
    reap(wd, SIGKILL);
    assert_true(run_until(base, fence_down, f, 2000));
    host_fence_free(f);
    event_base_free(base);
    remove_fence_dir(dir);
}

/* A VM the watchdog killed is reported `self-fenced: REASON (its cause)`,
 * decided on its state and QEMU pid, not on the text of its cause: patching
 * the same object twice says it once; another pid, another VM or a VM that
 * is not crashed keeps its cause. */
static void test_host_fence_patch_typed(void **state)
{
    (void)state;
    char dir[] = "/tmp/vcr-test-fence-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, FENCE_WD_FENCED_FILE);
    cleanup_json json_t *doc =
        json_pack("{s:s, s:[{s:s, s:i}]}", "reason", "no server contact for 5000 ms", "vms", "name",
                  "web1", "pid", 4242);
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    struct event_base *base = event_base_new();
    struct fence_watch seen = {0};
    struct host_fence *f = fence_for_test(base, dir, &seen);
    const char *killed = "qemu killed by signal 9";
    const char *want = "self-fenced: no server contact for 5000 ms (qemu killed by signal 9)";
    cleanup_json json_t *obj = json_pack("{s:s}", "cause", killed);
    host_fence_patch(f, "web1", VM_STATE_CRASHED, killed, 4242, obj);
    assert_string_equal(json_string_value(json_object_get(obj, "cause")), want);
    host_fence_patch(f, "web1", VM_STATE_CRASHED, killed, 4242, obj);
    assert_string_equal(json_string_value(json_object_get(obj, "cause")), want);
    struct {
        const char *vm;
        enum vm_state state;
        pid_t pid;
    } kept[] = {{"web1", VM_STATE_RUNNING, 4242},
                {"web1", VM_STATE_CRASHED, 999},
                {"web2", VM_STATE_CRASHED, 4242}};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        cleanup_json json_t *o = json_pack("{s:s}", "cause", killed);
        host_fence_patch(f, kept[i].vm, kept[i].state, killed, kept[i].pid, o);
        assert_string_equal(json_string_value(json_object_get(o, "cause")), killed);
    }
    host_fence_free(f);
    event_base_free(base);
    remove_fence_dir(dir);
}

/* A reboot ends at the lab guest's marker, or at a disk-image guest's login
 * prompt (it runs no code of ours; Debian 12's serial getty prints
 * "HOSTNAME login: " on ttyS0). */
static void test_reboot_ready_marker(void **state)
{
    (void)state;
    struct vcr_vm_spec lab = {.name = "web1"};
    struct vcr_vm_spec disk = {.name = "deb1", .disk = "/var/lib/vcr/debian.qcow2"};
    assert_string_equal(host_reboot_ready_marker(&lab), "VCR-GUEST-READY");
    const char *console = "\nDebian GNU/Linux 12 deb2 ttyS0\n\ndeb2 login: ";
    assert_non_null(strstr(console, host_reboot_ready_marker(&disk)));
    assert_null(strstr(console, host_reboot_ready_marker(&lab)));
}

/* The QEMU allowlist (qemu_allow.h): real paths compared, anything else
 * refused naming the list. */
static void test_qemu_allowlist(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    char dir[] = "/tmp/vcr-test-qemu-XXXXXX", link[64], copy[64], real[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    snprintf(link, sizeof(link), "%s/link", dir);
    snprintf(copy, sizeof(copy), "%s/copy", dir);
    assert_int_equal(symlink("/bin/true", link), 0);
    int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL, 0755);
    assert_true(fd >= 0);
    close(fd);
    char *configured[] = {link};
    struct qemu_allow a;
    assert_int_equal(qemu_allow_init(&a, configured, 1, "/bin/sh", &err), 0);
    assert_int_equal(a.n, 1); /* configured: the default is not added */
    char want[PATH_MAX];
    assert_non_null(realpath("/bin/true", want));
    assert_string_equal(a.paths[0], want);
    /* The link and the binary itself are the same file. */
    assert_int_equal(qemu_allow_check(&a, link, real, sizeof(real), &err), 0);
    assert_string_equal(real, want);
    assert_int_equal(qemu_allow_check(&a, want, real, sizeof(real), &err), 0);
    /* Another executable, the default one, a missing one: refused. */
    assert_int_equal(qemu_allow_check(&a, copy, real, sizeof(real), &err), -1);
    assert_int_equal(vcr_error_status(err), EPERM);
    assert_non_null(strstr(vcr_error_msg(err), "is not an allowed QEMU binary; allowed: "));
    assert_non_null(strstr(vcr_error_msg(err), want));
    vcr_error_release(&err);
    assert_int_equal(qemu_allow_check(&a, "/bin/sh", real, sizeof(real), &err), -1);
    vcr_error_release(&err);
    assert_int_equal(qemu_allow_check(&a, "/nonexistent/qemu", real, sizeof(real), &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);
    qemu_allow_clear(&a);
    /* The default: the configured qemu (and the system's qemu-system-*). */
    assert_int_equal(qemu_allow_init(&a, NULL, 0, copy, &err), 0);
    assert_true(a.n >= 1);
    assert_int_equal(qemu_allow_check(&a, copy, real, sizeof(real), &err), 0);
    assert_int_equal(qemu_allow_check(&a, link, real, sizeof(real), &err), -1);
    vcr_error_release(&err);
    qemu_allow_clear(&a);
    /* A configured entry that does not exist stops the start. */
    char *missing[] = {"/nonexistent/qemu"};
    assert_int_equal(qemu_allow_init(&a, missing, 1, NULL, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "/nonexistent/qemu"));
    vcr_error_release(&err);
    unlink(link);
    unlink(copy);
    rmdir(dir);
}

/* RAM files (ram_dir_own_file): made by the agent 0600, never through a
 * link; an existing one must be its own. */
static void test_ram_file_is_the_agents_own(void **state)
{
    (void)state;
    vcr_error_t err = NULL;
    char dir[] = "/tmp/vcr-test-ram-XXXXXX", ram[64], other[64];
    assert_non_null(mkdtemp(dir));
    snprintf(ram, sizeof(ram), "%s/vm.ram", dir);
    snprintf(other, sizeof(other), "%s/link.ram", dir);
    assert_int_equal(ram_dir_own_file("web1", ram, true, &err), 0);
    struct stat st;
    assert_int_equal(lstat(ram, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    /* Made already (by someone else, between the removal and now): refused. */
    assert_int_equal(ram_dir_own_file("web1", ram, true, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "someone else made it"));
    vcr_error_release(&err);
    /* Reused (a warm restart): ours passes; group or other access, a second
     * link, a symbolic link, another owner do not. */
    assert_int_equal(ram_dir_own_file("web1", ram, false, &err), 0);
    assert_int_equal(chmod(ram, 0644), 0);
    assert_int_equal(ram_dir_own_file("web1", ram, false, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "mode 0644"));
    vcr_error_release(&err);
    assert_int_equal(chmod(ram, 0600), 0);
    assert_int_equal(link(ram, other), 0);
    assert_int_equal(ram_dir_own_file("web1", ram, false, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "2 links"));
    vcr_error_release(&err);
    assert_int_equal(unlink(other), 0);
    assert_int_equal(symlink(ram, other), 0);
    assert_int_equal(ram_dir_own_file("web1", other, false, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "symbolic link"));
    vcr_error_release(&err);
    assert_int_equal(ram_dir_own_file("web1", other, true, &err), -1);
    vcr_error_release(&err);
    if (geteuid() == 0) {
        assert_int_equal(chown(ram, 65534, 65534), 0);
        assert_int_equal(ram_dir_own_file("web1", ram, false, &err), -1);
        assert_non_null(strstr(vcr_error_msg(err), "owner uid 65534"));
        vcr_error_release(&err);
    }
    /* A ram_dir others may write to that is not sticky: refused at start. */
    struct ram_dir d;
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(ram_dir_probe(dir, &d, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "not sticky"));
    vcr_error_release(&err);
    assert_int_equal(chmod(dir, 01777), 0);
    vcr_error_release(&err);
    unlink(other);
    unlink(ram);
    rmdir(dir);
}

int main(void)
{
    vcr_log_init("test_agent", getenv("VCR_TEST_DEBUG") ? VCR_LOG_DEBUG : VCR_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_role),
        cmocka_unit_test(test_ram_dir_filesystem_types),
        cmocka_unit_test(test_ram_dir_page_arithmetic),
        cmocka_unit_test(test_ram_dir_free_pages),
        cmocka_unit_test(test_qemu_argv),
        cmocka_unit_test(test_reboot_ready_marker),
        cmocka_unit_test(test_warm_state_checksum),
        cmocka_unit_test(test_warm_journal),
        cmocka_unit_test(test_warm_recovery_decide),
        cmocka_unit_test(test_tap_handover),
        cmocka_unit_test(test_spawned_tool_dies_with_its_caller),
        cmocka_unit_test(test_pause_boost),
        cmocka_unit_test(test_standby_job),
        cmocka_unit_test(test_sm_restarting_exit_is_not_crash),
        cmocka_unit_test(test_ram_file_differs_by_state_dir),
        cmocka_unit_test(test_orphan_ram_files_removed),
        cmocka_unit_test(test_proc_stat_parsing),
        cmocka_unit_test(test_cpu_percent),
        cmocka_unit_test(test_sample_own_process),
        cmocka_unit_test(test_sm_guest_poweroff_is_shutdown),
        cmocka_unit_test(test_sm_kill9_is_crash),
        cmocka_unit_test(test_sm_guest_panic),
        cmocka_unit_test(test_sm_pause_reset_stop_and_failed_start),
        cmocka_unit_test(test_accel_fixed_and_probe),
        cmocka_unit_test(test_server_connection),
        cmocka_unit_test(test_server_terms_and_redirect),
        cmocka_unit_test(test_server_challenge),
        cmocka_unit_test(test_real_qemu_kill9_is_crash),
        cmocka_unit_test(test_real_qemu_stop_adopt_and_kill_on_order),
        cmocka_unit_test(test_real_qemu_death_without_agent_is_not_restarted),
        cmocka_unit_test(test_qmp_never_ready_fails_the_start),
        cmocka_unit_test(test_real_qemu_bad_kernel_fails_with_reason),
        cmocka_unit_test(test_vm_start_prepares_its_disks_off_the_loop),
        cmocka_unit_test(test_fence_wd_decisions),
        cmocka_unit_test(test_fence_timeout_capped_by_server),
        cmocka_unit_test(test_fence_watchdog_kills_when_not_fed),
        cmocka_unit_test(test_fence_wd_overdue_kill_is_not_cancelled),
        cmocka_unit_test(test_fence_wd_resume),
        cmocka_unit_test(test_fence_watchdog_stopped_past_its_deadline_kills),
        cmocka_unit_test(test_fence_watchdog_respawned_keeps_the_deadline),
        cmocka_unit_test(test_host_fence_reports_pause_and_down),
        cmocka_unit_test(test_host_fence_patch_typed),
        cmocka_unit_test(test_qemu_allowlist),
        cmocka_unit_test(test_ram_file_is_the_agents_own),
    };
    return cmocka_run_group_tests(tests, setup_qemu, NULL);
}
