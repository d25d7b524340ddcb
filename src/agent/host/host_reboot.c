/* Orders on data volumes and guest reboots (docs/warm-cache.md):
 *   vm_flush {volume?}  fsync the warm-cache volume image(s) now; the reply
 *                       comes once the fsync is done (host_volume_flush).
 *   vm_reboot {cold?}   warm (default): QMP system_reset in the same QEMU, so
 *                       the pmem images stay mapped; cold: quit QEMU and
 *                       start a new one, which maps the images again.
 * A reboot is answered when the guest's console shows host_reboot_ready_marker()
 * again (the lab guest's marker once its services are up, a disk-image VM's
 * login prompt), with the times. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/agent_role.h"
#include "agent/host/host_reboot.h"
#include "agent/host/host_vm_priv.h"
#include "agent/host/host_volume.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

#define READY_POLL_MS 20

struct reboot {
    struct agent *agent;
    struct host_vm *vm;
    json_t *id;
    bool cold;
    bool started; /* cold: the new QEMU runs */
    double t0_ms;
    double reset_ms; /* order -> reset done (warm) or new QEMU spawned (cold) */
    off_t serial_from;
    struct event *timer;
    struct reboot *next;
};

/* Reboots under way: one per VM at a time. */
static struct reboot *active;

static void on_action_restored(struct qmp_client *c, json_t *result, const char *error,
                               void *opaque);

/* Back to -no-reboot's behaviour: a reboot from inside the guest ends QEMU. */
static void restore_reboot_action(struct host_vm *vm)
{
    cleanup_error vcr_error_t err = NULL;
    if (vm->proc == NULL || !vm->qmp_ready)
        return;
    json_t *args = json_pack("{s:s}", "reboot", "shutdown"); /* stolen by the client */
    if (qmp_client_command(vm->qmp, "set-action", args, on_action_restored, NULL, &err) < 0)
        log_warn("VM %s: set-action: %s", vm->spec->name, vcr_error_msg(err));
}

static void reboot_end(struct reboot *rb, bool ok, const char *error)
{
    double ready = vcr_mono_ms_f() - rb->t0_ms;
    for (struct reboot **p = &active; *p; p = &(*p)->next)
        if (*p == rb) {
            *p = rb->next;
            break;
        }
    if (!rb->cold)
        restore_reboot_action(rb->vm);
    json_t *members = json_pack("{s:s, s:b, s:f, s:f}", "vm", rb->vm->spec->name, "cold", rb->cold,
                                "reset_ms", rb->reset_ms, "ready_ms", ok ? ready : -1.0);
    log_info("VM %s: %s reboot %s: reset %.0f ms, ready %.0f ms", rb->vm->spec->name,
             rb->cold ? "cold" : "warm", ok ? "done" : "failed", rb->reset_ms, ready);
    agent_reply_with(rb->agent, rb->id, ok, error, members);
    json_decref(rb->id);
    event_free(rb->timer);
    free(rb);
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

const char *host_reboot_ready_marker(const struct vcr_vm_spec *spec)
{
    return spec->disk ? HOST_REBOOT_DISK_READY_MARKER : HOST_REBOOT_READY_MARKER;
}

/* Whether the serial log holds the marker after rb->serial_from. */
static bool serial_ready(struct reboot *rb)
{
    cleanup_close int fd = open(rb->vm->paths.serial, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[65536 + 1];
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < rb->serial_from)
        rb->serial_from = 0; /* a new QEMU truncated it */
    /* Only the tail matters: the marker is printed last. */
    off_t from = end - rb->serial_from > 65536 ? end - 65536 : rb->serial_from;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *marker = host_reboot_ready_marker(rb->vm->spec);
    return memmem(buf, (size_t)n, marker, strlen(marker)) != NULL;
}

static void on_reboot_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct reboot *rb = arg;
    struct host_vm *vm = rb->vm;
    if (vcr_mono_ms_f() - rb->t0_ms > HOST_REBOOT_DEADLINE_MS) {
        reboot_end(rb, false, "the guest did not report ready within the deadline");
        return;
    }
    if (rb->cold && !rb->started) {
        if (vm->proc)
            goto again; /* waiting for the old QEMU's exit */
        /* The new QEMU truncates the console log too, but only once it runs:
         * the old boot's marker must not count. */
        if (truncate(vm->paths.serial, 0) < 0 && errno != ENOENT)
            log_warn("VM %s: truncate `%s`: %s", vm->spec->name, vm->paths.serial, strerror(errno));
        cleanup_error vcr_error_t err = NULL;
        if (host_vm_start(vm, "cold reboot on order", &err) < 0) {
            reboot_end(rb, false, vcr_error_msg(err));
            return;
        }
        rb->started = true;
        rb->serial_from = 0;
        rb->reset_ms = vcr_mono_ms_f() - rb->t0_ms;
    } else if (!vm->proc && !vm->prep) { /* its disks prepared first: host_vm_prep.c */
        reboot_end(rb, false, vm->sm.cause);
        return;
    }
    if (rb->reset_ms > 0 && serial_ready(rb)) {
        reboot_end(rb, true, NULL);
        return;
    }
again:;
    struct timeval tv = {.tv_sec = 0, .tv_usec = READY_POLL_MS * 1000};
    evtimer_add(rb->timer, &tv);
}

static void on_action_restored(struct qmp_client *c, json_t *result, const char *error,
                               void *opaque)
{
    (void)c;
    (void)result;
    (void)opaque;
    if (error)
        log_warn("set-action reboot=shutdown: %s", error);
}

static void on_reset(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct reboot *rb = opaque;
    if (error) {
        reboot_end(rb, false, error);
        return;
    }
    /* The reboot action stays `reset` until the guest is up: the firmware
     * resets the machine once more on its way (SeaBIOS after a warm reset). */
    rb->reset_ms = vcr_mono_ms_f() - rb->t0_ms;
    on_reboot_timer(-1, 0, rb);
}

static void on_action_set(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)result;
    struct reboot *rb = opaque;
    cleanup_error vcr_error_t err = NULL;
    if (error) {
        reboot_end(rb, false, error);
        return;
    }
    rb->serial_from = file_size(rb->vm->paths.serial);
    if (qmp_client_command(c, "system_reset", NULL, on_reset, rb, &err) < 0)
        reboot_end(rb, false, vcr_error_msg(err));
}

static void order_reboot(struct agent *a, struct host_vm *vm, json_t *id, bool cold)
{
    char msg[256];
    if (vm->proc == NULL || !vm->qmp_ready || vm->warm ||
        (vm->sm.state != VM_STATE_RUNNING && vm->sm.state != VM_STATE_PAUSED)) {
        snprintf(msg, sizeof(msg), "VM `%s` is %s: only a running VM can be rebooted",
                 vm->spec->name, vm_state_name(vm->sm.state));
        agent_reply(a, id, false, msg);
        return;
    }
    for (struct reboot *o = active; o; o = o->next)
        if (o->vm == vm) {
            snprintf(msg, sizeof(msg), "VM `%s` is already rebooting", vm->spec->name);
            agent_reply(a, id, false, msg);
            return;
        }
    struct reboot *rb = calloc(1, sizeof(*rb));
    if (rb == NULL || (rb->timer = evtimer_new(vm->env.base, on_reboot_timer, rb)) == NULL) {
        free(rb);
        agent_reply(a, id, false, "out of memory");
        return;
    }
    rb->agent = a;
    rb->vm = vm;
    rb->id = json_incref(id);
    rb->cold = cold;
    rb->t0_ms = vcr_mono_ms_f();
    rb->next = active;
    active = rb;
    cleanup_error vcr_error_t err = NULL;
    if (cold) {
        /* quit at once, as a power cycle would: what the guest did not sync
         * is in the host page cache all the same (the images are mapped
         * shared), so the new QEMU sees it. */
        if (host_vm_stop(vm, 0, &err) < 0) {
            reboot_end(rb, false, vcr_error_msg(err));
            return;
        }
        on_reboot_timer(-1, 0, rb);
        return;
    }
    /* QEMU runs with -no-reboot (a reset ends it); this one reset must not. */
    json_t *args = json_pack("{s:s}", "reboot", "reset");
    int rc = qmp_client_command(vm->qmp, "set-action", args, on_action_set, rb, &err);
    if (rc < 0)
        reboot_end(rb, false, vcr_error_msg(err));
}

struct flush_order {
    struct agent *agent;
    json_t *id;
};

static void on_flushed(struct host_vm *vm, bool ok, const char *error, double elapsed_ms,
                       uint64_t bytes, void *opaque)
{
    struct flush_order *fo = opaque;
    json_t *members = json_pack("{s:s, s:f, s:I}", "vm", vm->spec->name, "elapsed_ms", elapsed_ms,
                                "bytes", (json_int_t)bytes);
    agent_reply_with(fo->agent, fo->id, ok, error, members);
    json_decref(fo->id);
    free(fo);
}

void host_volume_order(struct agent *a, struct host_vm *vm, json_t *id, const char *action,
                       json_t *order)
{
    if (strcmp(action, "vm_reboot") == 0) {
        order_reboot(a, vm, id, json_is_true(json_object_get(order, "cold")));
        return;
    }
    json_t *vol = json_object_get(order, "volume");
    if (vol && !json_is_string(vol)) {
        agent_reply(a, id, false, "`volume` must be a volume name");
        return;
    }
    struct flush_order *fo = calloc(1, sizeof(*fo));
    if (fo == NULL) {
        agent_reply(a, id, false, "out of memory");
        return;
    }
    fo->agent = a;
    fo->id = json_incref(id);
    cleanup_error vcr_error_t err = NULL;
    if (host_volume_flush(vm, json_string_value(vol), on_flushed, fo, &err) < 0) {
        agent_reply(a, id, false, vcr_error_msg(err));
        json_decref(fo->id);
        free(fo);
    }
}
