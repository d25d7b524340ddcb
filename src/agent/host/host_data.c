/* A service's data on the primary's host (docs/data.md): point-in-time copies
 * of a VM's volume image, read out in chunks by the server, and the way back
 * at failback.  Orders (docs/protocol.md):
 *   volume_snapshot {volume}            copy + gzip -1 + SHA-256 into IMAGE.snap.gz
 *   volume_snapshot_read {volume, offset, length}     a chunk of it (on the loop)
 *   volume_restore_write {volume, offset, data, last, bytes?, sha256?}
 *                                       a chunk of IMAGE.restore.gz (on the loop)
 *   volume_restore {volume}             IMAGE.restore.gz unpacked over IMAGE
 * The copy: a VM without a process cannot write its image, so the image is the
 * copy (taken when the order came).  A running VM's virtio-blk volume is copied
 * by QEMU itself: drive-backup (sync full, raw) to IMAGE.snap.raw, a
 * point-in-time copy as of the command (QEMU copies a block before the guest
 * overwrites it), i.e. what a power cut at that instant would have left:
 * crash-consistent, which ext4's journal is made for.  QEMU runs as its
 * unprivileged user (-runas, docs/security.md "Least privilege") and never
 * opens the target by name: the agent creates it (O_CREAT | O_EXCL |
 * O_NOFOLLOW, 0600, root's, sized like the image), hands QEMU a read-write
 * and a read-only descriptor of it in one fd set (QMP add-fd over the monitor
 * socket, SCM_RIGHTS) and names it /dev/fdset/N with mode `existing`.  A descriptor rather than a
 * file the user may open in its own directory (/run/vcr-qemu/HOST-HASH): every VM's QEMU is that
 * user, and a name there could be swapped by another VM's QEMU between its creation and the open; a
 * descriptor names this one file only, and the pack reads it back through the agent's own
 * descriptor, not by name.  The packing (and the unpacking at a restore) reads megabytes: it runs
 * in a child process (standby_job.h) so that the loop goes on. */
#include "agent/host/host_data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/agent_role.h"
#include "agent/data_image.h"
#include "agent/host/host_vm_priv.h"
#include "agent/standby_job.h"
#include "agent/standby_migrate.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* A drive-backup of a few hundred MB under TCG; past this the copy is given up. */
#define HOST_DATA_BACKUP_MS 300000

struct host_data {
    struct agent *agent;
    struct host_vm *vm;
    json_t *id; /* the order being answered, NULL when idle */
    char action[24];
    const struct vcr_volume_spec *vol;
    char job_id[32];    /* drive-backup's job */
    unsigned blk;       /* its device: blkN */
    char *gz, *raw;     /* IMAGE.snap.gz (or IMAGE.restore.gz), IMAGE.snap.raw */
    const char *source; /* what is packed: the image, or raw */
    const char *method; /* "file" or "drive-backup" */
    int raw_fd;         /* the agent's descriptor of raw, -1 when none */
    char raw_self[40];  /* /proc/self/fd/RAW_FD: what the pack child reads */
    json_int_t fdset;   /* QEMU's fd set holding raw, -1 when none */
    int64_t taken_ms, t0, backup_ms;
    struct standby_job *job;
    struct event *deadline;
    /* The request's generation: a QMP reply of an earlier one (after its
     * deadline or refusal, maybe during a newer request) is told apart. */
    uint64_t gen;
    unsigned calls; /* QMP commands with a reply still to come */
    bool freed;     /* host_data_free came first: the last reply frees it */
};

/* The opaque of one QMP command of a request. */
struct data_call {
    struct host_data *d;
    uint64_t gen;
    bool names_set; /* an add-fd into the request's own fd set (not a new set) */
};

static const struct vcr_volume_spec *find_volume(const struct host_vm *vm, const char *name,
                                                 unsigned *blk)
{
    unsigned b = 0;
    for (size_t i = 0; i < vm->spec->n_volumes; i++) {
        const struct vcr_volume_spec *v = &vm->spec->volumes[i];
        if (strcmp(v->name, name) == 0) {
            *blk = b;
            return v;
        }
        b += !v->warm_cache; /* blkN counts virtio-blk volumes only (vm.c) */
    }
    return NULL;
}

static void data_idle(struct host_data *d)
{
    d->gen++; /* replies to the request's commands still to come are stale */
    json_decref(d->id);
    d->id = NULL;
    d->job = NULL;
    if (d->deadline)
        event_del(d->deadline);
    free(d->gz);
    free(d->raw);
    d->gz = d->raw = NULL;
    if (d->raw_fd >= 0)
        close(d->raw_fd);
    d->raw_fd = -1;
}

/* A command of the current request, cb(c, result, error, call) called
 * once; args stolen, fd >= 0 passed along. */
static int data_command(struct host_data *d, const char *command, json_t *args, int fd,
                        bool names_set, qmp_reply_cb cb, vcr_error_t *err)
{
    struct data_call *call = malloc(sizeof(*call));
    if (call == NULL) {
        json_decref(args);
        return vcr_error_make(err, ENOMEM, "out of memory");
    }
    *call = (struct data_call){.d = d, .gen = d->gen, .names_set = names_set};
    int rc = fd >= 0 ? qmp_client_command_fd(d->vm->qmp, command, args, fd, cb, call, err)
                     : qmp_client_command(d->vm->qmp, command, args, cb, call, err);
    if (rc < 0) {
        free(call);
        return -1;
    }
    d->calls++;
    return 0;
}

/* A reply's request, or NULL when it has ended since the command (or its
 * VM's data is gone); call is released. */
static struct host_data *call_reply(struct data_call *call)
{
    struct host_data *d = call->d;
    bool current = call->gen == d->gen;
    free(call);
    d->calls--;
    if (d->freed) {
        if (d->calls == 0)
            free(d);
        return NULL;
    }
    return current ? d : NULL;
}

/* QEMU's copy of the descriptor goes (its block node keeps its own dup while
 * the job runs: remove-fd closes only the set's). */
static void drop_fdset(struct host_data *d)
{
    if (d->fdset < 0)
        return;
    if (d->vm->qmp_ready) {
        json_t *args = json_pack("{s:I}", "fdset-id", d->fdset);
        qmp_client_command(d->vm->qmp, "remove-fd", args, NULL, NULL, NULL);
    }
    d->fdset = -1;
}

static void data_refuse(struct host_data *d, int status, const char *error)
{
    log_warn("VM %s: %s: %s", d->vm->spec->name, d->action, error);
    agent_refuse(d->agent, d->id, status, error);
    drop_fdset(d);
    if (d->raw)
        unlink(d->raw);
    data_idle(d);
}

/* In the child: pack the source, drop drive-backup's raw copy. */
static int pack_work(void *arg, vcr_error_t *err)
{
    struct host_data *d = arg;
    struct data_packed p;
    int rc = data_pack(d->source, d->gz, &p, err);
    if (d->raw)
        unlink(d->raw);
    if (rc < 0)
        return -1;
    cleanup_json json_t *m =
        json_pack("{s:I, s:I, s:s, s:I}", "bytes", (json_int_t)p.bytes, "raw_bytes",
                  (json_int_t)p.raw_bytes, "sha256", p.sha256, "pack_ms", (json_int_t)p.pack_ms);
    cleanup_free char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

/* In the child: a restore replaces the image (the VM has no process). */
static int restore_work(void *arg, vcr_error_t *err)
{
    struct host_data *d = arg;
    uint64_t raw = 0;
    int64_t t0 = vcr_mono_ms();
    if (data_unpack(d->gz, NULL, d->vol->image, &raw, err) < 0)
        return -1;
    unlink(d->gz);
    char text[128];
    snprintf(text, sizeof(text), "{\"raw_bytes\": %llu, \"unpack_ms\": %lld}",
             (unsigned long long)raw, (long long)(vcr_mono_ms() - t0));
    standby_job_set_result(text);
    return 0;
}

static void on_job_done(struct standby_job *job, const char *error, void *opaque)
{
    struct host_data *d = opaque;
    if (error) {
        agent_refuse(d->agent, d->id, standby_job_error_status(job), error);
        log_warn("VM %s: %s of volume %s: %s", d->vm->spec->name, d->action, d->vol->name, error);
        data_idle(d);
        return;
    }
    json_t *m = json_loads(standby_job_result(job), 0, NULL);
    if (m == NULL)
        m = json_object();
    json_object_set_new(m, "vm", json_string(d->vm->spec->name));
    json_object_set_new(m, "volume", json_string(d->vol->name));
    json_object_set_new(m, "ms", json_integer(vcr_mono_ms() - d->t0));
    if (strcmp(d->action, "volume_snapshot") == 0) {
        json_object_set_new(m, "taken_ms", json_integer(d->taken_ms));
        json_object_set_new(m, "method", json_string(d->method));
        json_object_set_new(m, "backup_ms", json_integer(d->backup_ms));
    }
    log_info("VM %s: %s of volume %s done in %lld ms", d->vm->spec->name, d->action, d->vol->name,
             (long long)(vcr_mono_ms() - d->t0));
    agent_reply_with(d->agent, d->id, true, NULL, m);
    data_idle(d);
}

static void run_job(struct host_data *d, standby_job_fn fn)
{
    cleanup_error vcr_error_t err = NULL;
    d->job = standby_job_run(d->vm->env.base, fn, d, on_job_done, d, &err);
    if (d->job == NULL)
        data_refuse(d, vcr_error_status(err), vcr_error_msg(err));
}

static void on_backup_started(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct host_data *d = call_reply(opaque);
    if (d == NULL || d->id == NULL || d->job)
        return;
    if (error) {
        char text[400];
        snprintf(text, sizeof(text), "volume `%s`: drive-backup: %s", d->vol->name, error);
        data_refuse(d, EIO, text);
        return;
    }
    drop_fdset(d);
}

static void on_fd_added(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    bool names_set = ((struct data_call *)opaque)->names_set;
    struct host_data *d = call_reply(opaque);
    json_t *set = json_object_get(result, "fdset-id");
    if (d == NULL) {
        /* Late: its request has ended without knowing this set (a second
         * add-fd names the set its request removed already), which would keep
         * the unlinked copy open in QEMU: removed. */
        if (!error && json_is_integer(set) && !names_set) {
            log_warn("add-fd answered after its volume_snapshot ended: fd set %lld removed",
                     (long long)json_integer_value(set));
            qmp_client_command(c, "remove-fd",
                               json_pack("{s:I}", "fdset-id", json_integer_value(set)), NULL, NULL,
                               NULL);
        }
        return;
    }
    if (d->id == NULL || d->job || d->raw_fd < 0)
        return;
    char text[400];
    cleanup_error vcr_error_t err = NULL;
    if (error || !json_is_integer(set)) {
        snprintf(text, sizeof(text), "volume `%s`: add-fd: %s", d->vol->name,
                 error ? error : "no fdset-id in the reply");
        data_refuse(d, EIO, text);
        return;
    }
    if (d->fdset < 0) {
        /* The set's read-only descriptor: QEMU's file node reopens the target
         * read-only while nothing writes it yet (a new dup of a descriptor of
         * the set with that access mode; without one: "Could not dup FD for
         * /dev/fdset/0 flags 4000: Permission denied"), then read-write. */
        d->fdset = json_integer_value(set);
        cleanup_close int ro = open(d->raw_self, O_RDONLY | O_CLOEXEC);
        json_t *args = json_pack("{s:I}", "fdset-id", d->fdset);
        if (ro < 0) {
            snprintf(text, sizeof(text), "volume `%s`: reopen `%s` read-only: %s", d->vol->name,
                     d->raw, strerror(errno));
            json_decref(args);
            data_refuse(d, EIO, text);
        } else if (data_command(d, "add-fd", args, ro, true, on_fd_added, &err) < 0) {
            snprintf(text, sizeof(text), "volume `%s`: %s", d->vol->name, vcr_error_msg(err));
            data_refuse(d, EIO, text);
        }
        return;
    }
    char target[48];
    snprintf(target, sizeof(target), "/dev/fdset/%lld", (long long)d->fdset);
    char device[16];
    snprintf(device, sizeof(device), "blk%u", d->blk);
    json_t *args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "job-id", d->job_id, "device",
                             device, "target", target, "mode", "existing", "sync", "full", "format",
                             "raw", "auto-dismiss", 1);
    if (data_command(d, "drive-backup", args, -1, false, on_backup_started, &err) < 0) {
        snprintf(text, sizeof(text), "volume `%s`: %s", d->vol->name, vcr_error_msg(err));
        data_refuse(d, EIO, text);
    }
}

void host_data_qmp_event(struct host_vm *vm, const char *name, json_t *data)
{
    struct host_data *d = vm->data;
    if (d == NULL || d->id == NULL || d->job || d->raw == NULL)
        return;
    bool completed = strcmp(name, "BLOCK_JOB_COMPLETED") == 0;
    if (!completed && strcmp(name, "BLOCK_JOB_CANCELLED") != 0)
        return;
    const char *dev = json_string_value(json_object_get(data, "device"));
    if (dev == NULL || strcmp(dev, d->job_id) != 0)
        return;
    const char *error = json_string_value(json_object_get(data, "error"));
    if (!completed || error) {
        char text[400];
        snprintf(text, sizeof(text), "volume `%s`: drive-backup %s: %s", d->vol->name,
                 completed ? "failed" : "was cancelled", error ? error : "no reason given");
        data_refuse(d, EIO, text);
        return;
    }
    d->backup_ms = vcr_mono_ms() - d->t0;
    run_job(d, pack_work);
}

void host_data_vm_changed(struct host_vm *vm)
{
    struct host_data *d = vm->data;
    if (d == NULL || d->id == NULL || d->job || d->raw == NULL || host_vm_has_process(vm))
        return;
    char text[300];
    snprintf(text, sizeof(text), "volume `%s`: VM `%s` ended during its drive-backup (%.120s)",
             d->vol->name, vm->spec->name, vm->sm.cause);
    data_refuse(d, EIO, text);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct host_data *d = arg;
    if (d->id == NULL || d->job)
        return;
    char text[200];
    snprintf(text, sizeof(text), "volume `%s`: drive-backup did not end within %d ms", d->vol->name,
             HOST_DATA_BACKUP_MS);
    if (d->vm->qmp_ready) {
        json_t *args = json_pack("{s:s, s:b}", "device", d->job_id, "force", 1);
        qmp_client_command(d->vm->qmp, "block-job-cancel", args, NULL, NULL, NULL);
    }
    data_refuse(d, ETIMEDOUT, text);
}

static int snapshot_start(struct host_data *d, unsigned blk, vcr_error_t *err)
{
    struct host_vm *vm = d->vm;
    if (asprintf(&d->gz, "%s.snap.gz", d->vol->image) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    d->taken_ms = vcr_wall_ms();
    if (host_vm_preparing(vm))
        return vcr_error_make(err, EBUSY, "VM `%s` is starting: its disks are being prepared",
                              vm->spec->name);
    if (!host_vm_has_process(vm)) {
        /* Nothing writes the image: it is the copy, as the VM left it. */
        d->method = "file";
        d->source = d->vol->image;
        run_job(d, pack_work);
        return 0;
    }
    if (d->vol->warm_cache)
        return vcr_error_make(err, ENOTSUP,
                              "volume `%s` is virtio-pmem (warm_cache) and VM `%s` runs: QEMU has "
                              "no block job for it; a copy needs the VM stopped",
                              d->vol->name, vm->spec->name);
    if (!vm->qmp_ready)
        return vcr_error_make(err, EAGAIN, "VM `%s` runs but its QMP is not ready yet",
                              vm->spec->name);
    if (asprintf(&d->raw, "%s.snap.raw", d->vol->image) < 0)
        return vcr_error_make(err, ENOMEM, "out of memory");
    /* Whatever had the name goes (a link: the link); the copy is a new file. */
    unlink(d->raw);
    struct stat st;
    if (stat(d->vol->image, &st) < 0)
        return vcr_error_errno(err, "volume `%s`: `%s`", d->vol->name, d->vol->image);
    d->raw_fd = open(d->raw, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (d->raw_fd < 0)
        return vcr_error_errno(err, "volume `%s`: create `%s`", d->vol->name, d->raw);
    /* drive-backup wants a target of the source's size (raw: the file's). */
    if (ftruncate(d->raw_fd, st.st_size) < 0)
        return vcr_error_errno(err, "volume `%s`: size `%s`", d->vol->name, d->raw);
    snprintf(d->raw_self, sizeof(d->raw_self), "/proc/self/fd/%d", d->raw_fd);
    snprintf(d->job_id, sizeof(d->job_id), "vcr-snap-blk%u", blk);
    d->blk = blk;
    d->method = "drive-backup";
    d->source = d->raw_self;
    if (data_command(d, "add-fd", NULL, d->raw_fd, false, on_fd_added, err) < 0)
        return -1;
    if (d->deadline == NULL)
        d->deadline = evtimer_new(vm->env.base, on_deadline, d);
    struct timeval tv = {HOST_DATA_BACKUP_MS / 1000, 0};
    if (d->deadline)
        evtimer_add(d->deadline, &tv);
    return 0;
}

static json_t *chunk_order(struct host_data *d, const char *action, json_t *order, vcr_error_t *err)
{
    cleanup_free char *path = NULL;
    bool read = strcmp(action, "volume_snapshot_read") == 0;
    if (asprintf(&path, "%s.%s", d->vol->image, read ? "snap.gz" : "restore.gz") < 0)
        return vcr_error_make(err, ENOMEM, "out of memory"), NULL;
    if (read) {
        uint64_t offset = 0;
        size_t length = 0;
        if (standby_chunk_range_from_json(order, &offset, &length, err) < 0)
            return NULL;
        if (access(path, F_OK) < 0)
            return vcr_error_make(err, ENOENT,
                                  "volume `%s`: no copy (`%s`): volume_snapshot it first",
                                  d->vol->name, path),
                   NULL;
        return standby_chunk_read(path, offset, length, err);
    }
    if (host_vm_has_process(d->vm) || host_vm_preparing(d->vm))
        return vcr_error_make(err, EBUSY,
                              "VM `%s` runs: its volume `%s` can be restored only while it is "
                              "down",
                              d->vm->spec->name, d->vol->name),
               NULL;
    struct standby_image_write w = {0};
    if (standby_chunk_from_json(order, &w, err) < 0)
        return NULL;
    json_t *m = standby_chunk_write(path, &w, err);
    standby_image_write_release(&w);
    return m;
}

void host_data_order(struct agent *a, struct host_vm *vm, json_t *id, const char *action,
                     json_t *order)
{
    struct host_data *d = vm->data;
    if (d == NULL) {
        d = vm->data = calloc(1, sizeof(*d));
        if (d == NULL) {
            agent_refuse(a, id, ENOMEM, "out of memory");
            return;
        }
        d->agent = a;
        d->vm = vm;
        d->raw_fd = -1;
        d->fdset = -1;
    }
    const char *name = json_string_value(json_object_get(order, "volume"));
    unsigned blk = 0;
    const struct vcr_volume_spec *vol = name ? find_volume(vm, name, &blk) : NULL;
    char text[300];
    if (vol == NULL) {
        size_t used = (size_t)snprintf(text, sizeof(text),
                                       "volume: `%.40s` is not a volume of VM `%s`; allowed:",
                                       name ? name : "(missing)", vm->spec->name);
        for (size_t i = 0; i < vm->spec->n_volumes && used < sizeof(text); i++)
            used += (size_t)snprintf(text + used, sizeof(text) - used, "%s %s", i ? "," : "",
                                     vm->spec->volumes[i].name);
        agent_refuse(a, id, ENOENT, text);
        return;
    }
    cleanup_error vcr_error_t err = NULL;
    bool chunk =
        strcmp(action, "volume_snapshot_read") == 0 || strcmp(action, "volume_restore_write") == 0;
    if (d->id && !chunk) {
        snprintf(text, sizeof(text), "VM `%s`: volume `%s` is busy with an earlier %s order",
                 vm->spec->name, d->vol->name, d->action);
        agent_refuse(a, id, EBUSY, text);
        return;
    }
    if (chunk) {
        struct host_data tmp = {.vm = vm, .vol = vol};
        json_t *m = chunk_order(&tmp, action, order, &err);
        if (m == NULL)
            agent_refuse(a, id, vcr_error_status(err), vcr_error_msg(err));
        else
            agent_reply_with(a, id, true, NULL, m);
        return;
    }
    d->id = json_incref(id);
    d->vol = vol;
    d->t0 = vcr_mono_ms();
    d->backup_ms = 0;
    snprintf(d->action, sizeof(d->action), "%s", action);
    int rc = 0;
    if (strcmp(action, "volume_snapshot") == 0) {
        rc = snapshot_start(d, blk, &err);
    } else if (host_vm_has_process(vm) || host_vm_preparing(vm)) {
        rc = vcr_error_make(&err, EBUSY,
                            "VM `%s` runs: its volume `%s` can be restored only while it is down",
                            vm->spec->name, vol->name);
    } else if (asprintf(&d->gz, "%s.restore.gz", vol->image) < 0) {
        rc = vcr_error_make(&err, ENOMEM, "out of memory");
    } else {
        run_job(d, restore_work);
    }
    if (rc < 0)
        data_refuse(d, vcr_error_status(err), vcr_error_msg(err));
}

void host_data_free(struct host_vm *vm)
{
    struct host_data *d = vm->data;
    if (d == NULL)
        return;
    if (d->job)
        standby_job_free(d->job);
    d->job = NULL;
    data_idle(d);
    if (d->deadline)
        event_free(d->deadline);
    vm->data = NULL;
    if (d->calls) {
        d->freed = true; /* its QMP client fails the replies still to come */
        return;
    }
    free(d);
}
