/* The work of the standby role's orders that run in a child process
 * (standby_job.c), one function per kind of order; standby_role.c starts them
 * on the loop and answers when the child has ended. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lxc/lxccontainer.h>

#include "agent/agent_role.h"
#include "agent/standby/standby_address.h"
#include "agent/standby/standby.h"
#include "agent/standby/standby_ct.h"
#include "agent/standby/standby_data.h"
#include "agent/standby/standby_role_priv.h"
#include "agent/data_image.h"
#include "agent/standby_job.h"
#include "agent/standby_migrate.h"
#include "agent/standby_stream.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* In the child: the reply's extra members travel as JSON text. */
static int checkpoint_work(struct standby_pending *p, vcr_error_t *err)
{
    struct standby_checkpoint_result res;
    if (standby_ct_checkpoint(p->ct, p->r->migrate_dir, p->phase, &res, err) < 0)
        return -1;
    cleanup_json json_t *members =
        json_pack("{s:s, s:I, s:s, s:I, s:I, s:b}", "phase", standby_phase_name(p->phase), "bytes",
                  (json_int_t)res.bytes, "sha256", res.sha256, "dump_ms", (json_int_t)res.dump_ms,
                  "pack_ms", (json_int_t)res.pack_ms, "incremental", res.incremental);
    cleanup_free char *text = members ? json_dumps(members, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

/* In the child: pre.tar unpacked ahead of the final dump (standby_ct.h). */
static int unpack_pre_work(struct standby_pending *p, vcr_error_t *err)
{
    if (p->phase != STANDBY_PHASE_PRE)
        return vcr_error_make(err, EINVAL,
                              "phase: only `pre` is unpacked ahead; a restore unpacks `final`");
    int64_t ms = 0;
    if (standby_ct_unpack_pre(p->r->migrate_dir, p->name, &ms, err) < 0)
        return -1;
    cleanup_json json_t *members = json_pack("{s:I}", "unpack_ms", (json_int_t)ms);
    cleanup_free char *text = members ? json_dumps(members, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

/* In the child, before a container is made from an image: the image's
 * rootfs in the cache (standby_image.c), and what that took, for the reply. */
static json_t *image_work(struct standby_pending *p, vcr_error_t *err)
{
    if (!p->spec.has_image)
        return json_object();
    struct standby_image_result res;
    if (standby_image_ensure(p->r->images_dir, &p->spec.image, &res, err) < 0)
        return NULL;
    log_info("container %s: image %s: %s (%llu bytes; download %lld ms, verify %lld ms, unpack "
             "%lld ms)",
             p->name, p->spec.image.name,
             res.cached    ? "cached"
             : res.fetched ? "downloaded and unpacked"
                           : "unpacked from the cache",
             (unsigned long long)res.bytes, (long long)res.download_ms, (long long)res.verify_ms,
             (long long)res.unpack_ms);
    json_t *image =
        json_pack("{s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I}", "name", p->spec.image.name, "sha256",
                  p->spec.image.sha256, "cached", res.cached, "fetched", res.fetched, "bytes",
                  (json_int_t)res.bytes, "download_ms", (json_int_t)res.download_ms, "verify_ms",
                  (json_int_t)res.verify_ms, "unpack_ms", (json_int_t)res.unpack_ms);
    json_t *members = image ? json_pack("{s:o}", "image", image) : NULL;
    if (members == NULL)
        vcr_error_make(err, ENOMEM, "out of memory");
    return members;
}

static int set_result(json_t *members, vcr_error_t *err)
{
    cleanup_free char *text = json_dumps(members, JSON_COMPACT);
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

static int create_work(struct standby_pending *p, vcr_error_t *err)
{
    cleanup_json json_t *members = image_work(p, err);
    if (members == NULL)
        return -1;
    int64_t t0 = vcr_mono_ms();
    struct standby_ct *ct = standby_ct_create(p->r->lxcpath, p->r->lib_dir, &p->spec, err);
    if (ct == NULL)
        return -1;
    int rc = p->start && standby_ct_start(ct, err) < 0
                 ? vcr_error_wrap(err, "created, but not started")
                 : 0;
    standby_ct_free(ct);
    if (rc < 0)
        return -1;
    json_object_set_new(members, "create_start_ms", json_integer(vcr_mono_ms() - t0));
    return set_result(members, err);
}

/* A data order's `path`: where the container sees the data. */
static const char *data_mount_point(json_t *members, vcr_error_t *err)
{
    const char *path = json_string_value(json_object_get(members, "path"));
    if (path == NULL || path[0] != '/' || strchr(path, ' '))
        return vcr_error_make(err, EINVAL,
                              "path: `%.80s` is not a mount point; expected an absolute path",
                              path ? path : "(missing)"),
               NULL;
    return path;
}

/* A service's data mounted at mnt, for an unprivileged container: its root
 * is the VM's STANDBY_IDMAP_BASE, so the copy's owners move into its range
 * (a second attach finds them there and changes nothing; data_export moves
 * them back), and the way to mnt opens (0711: the bind is made as the
 * container's root, and CRIU's restore opens the files there as it). */
static int data_for_unprivileged(const char *base, const char *service, const char *mnt,
                                 vcr_error_t *err)
{
    if (standby_map_owners(mnt, 0, STANDBY_IDMAP_BASE, STANDBY_IDMAP_COUNT, err) < 0)
        return vcr_error_wrap(err, "service `%s`: its data into the container's id range", service);
    char svc_dir[400];
    snprintf(svc_dir, sizeof(svc_dir), "%s/%s", base, service);
    if (chmod(base, 0711) < 0 || chmod(svc_dir, 0711) < 0)
        return vcr_error_errno(err, "service `%s`: chmod the way to its data", service);
    return 0;
}

static int restore_work(struct standby_pending *p, vcr_error_t *err)
{
    cleanup_json json_t *image = image_work(p, err);
    if (image == NULL)
        return -1;
    /* A service's data carried by the migration (installed by data_install just
     * before): mounted here, at the path it had where the container was dumped. */
    char mnt[400] = "";
    const char *path = NULL;
    int64_t taken_ms = 0, t0 = vcr_mono_ms();
    if (p->restore_data) {
        const char *service = json_string_value(json_object_get(p->restore_data, "service"));
        if (service == NULL)
            return vcr_error_make(err, EINVAL, "data.service is missing; expected a service name");
        if ((path = data_mount_point(p->restore_data, err)) == NULL)
            return vcr_error_wrap(err, "data");
        if (standby_data_mount(p->r->data_dir, service, mnt, sizeof(mnt), &taken_ms, err) < 0)
            return -1;
        /* The source's data_export moved the copy's owners back out of its
         * container's range: an unprivileged restore needs them in it again,
         * and the way open, as data_attach does.  CRIU otherwise failed with
         * EACCES at mount-v2's open_tree of mnt, then at the reopen of
         * Redis's AOF (docs/security.md "Standby containers"). */
        if (p->spec.unprivileged && data_for_unprivileged(p->r->data_dir, service, mnt, err) < 0) {
            umount2(mnt, MNT_DETACH);
            return -1;
        }
    }
    int64_t mount_ms = vcr_mono_ms() - t0;
    struct standby_restore_result res;
    struct standby_ct *ct = standby_ct_restore(p->r->lxcpath, p->r->lib_dir, p->r->migrate_dir,
                                               &p->spec, mnt[0] ? mnt : NULL, path, &res, err);
    if (ct == NULL) {
        if (mnt[0])
            umount2(mnt, MNT_DETACH);
        return -1;
    }
    standby_ct_free(ct);
    cleanup_json json_t *members = json_pack("{s:I, s:I}", "unpack_ms", (json_int_t)res.unpack_ms,
                                             "restore_ms", (json_int_t)res.restore_ms);
    if (members && mnt[0])
        json_object_set_new(members, "data",
                            json_pack("{s:s, s:I, s:I}", "path", path, "taken_ms",
                                      (json_int_t)taken_ms, "mount_ms", (json_int_t)mount_ms));
    if (members && res.arp_error[0])
        json_object_set_new(members, "arp_error", json_string(res.arp_error));
    if (members)
        json_object_update(members, image);
    cleanup_free char *text = members ? json_dumps(members, JSON_COMPACT) : NULL;
    if (text == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    standby_job_set_result(text);
    return 0;
}

/* In the child: a service's data (docs/data.md).  data_attach loop-mounts the
 * latest copy, binds it at `path` in the container and (re)starts it;
 * data_export stops the container and packs its data for the way back. */
static int data_work(struct standby_pending *p, vcr_error_t *err)
{
    const char *base = p->r->data_dir;
    if (strcmp(p->action, "data_install") == 0)
        return standby_data_install(base, p->order, err);
    const char *service = json_string_value(json_object_get(p->order, "service"));
    if (service == NULL)
        return vcr_error_make(err, EINVAL, "`service` is missing; expected a service name");
    if (strcmp(p->action, "data_export") == 0) {
        if (p->ct && standby_ct_stop(p->ct, STANDBY_STOP_TIMEOUT_S, err) < 0)
            return -1;
        /* Back to the primary with the ids it had, not the container's. */
        char mnt[400];
        if (p->ct && standby_ct_spec_of(p->ct)->unprivileged &&
            snprintf(mnt, sizeof(mnt), "%s/%s/mnt", base, service) < (int)sizeof(mnt) &&
            standby_data_mounted(mnt) &&
            standby_map_owners(mnt, STANDBY_IDMAP_BASE, 0, STANDBY_IDMAP_COUNT, err) < 0)
            return vcr_error_wrap(err, "service `%s`: its data back out of the container's ids",
                                  service);
        return standby_data_export(base, service, err);
    }
    const char *path = data_mount_point(p->order, err);
    if (path == NULL)
        return -1;
    char mnt[400], text[200];
    int64_t taken_ms = 0, t0 = vcr_mono_ms();
    if (standby_data_mount(base, service, mnt, sizeof(mnt), &taken_ms, err) < 0)
        return -1;
    /* The container's own root filesystem (our overlay over its image, mounted
     * from its creation on): a container adopted from its LXC configuration
     * (every one made by a child job) knows no lower dir. */
    char image_dir[700];
    unsigned long owner_changed = 0;
    snprintf(image_dir, sizeof(image_dir), "%s%s", standby_ct_paths_of(p->ct)->rootfs, path);
    if (standby_data_take_owner(mnt, image_dir, &owner_changed, err) < 0)
        return vcr_error_wrap(err, "service `%s`", service);
    if (standby_ct_spec_of(p->ct)->unprivileged &&
        data_for_unprivileged(base, service, mnt, err) < 0)
        return -1;
    bool restarted = false;
    if (standby_ct_bind_dir(p->ct, mnt, path, &restarted, err) < 0)
        return -1;
    snprintf(text, sizeof(text),
             "{\"taken_ms\": %lld, \"attach_ms\": %lld, \"restarted\": %s, \"owner_changed\": %lu}",
             (long long)taken_ms, (long long)(vcr_mono_ms() - t0), restarted ? "true" : "false",
             owner_changed);
    standby_job_set_result(text);
    return 0;
}

/* In the child: image_prune {keep: [{sha256, service}]}, the server's
 * configured images; the containers' images are found by their mounted
 * overlays (an adopted container's spec does not name its image). */
static int prune_work(struct standby_pending *p, vcr_error_t *err)
{
    struct standby_role *r = p->r;
    json_t *keep = json_object_get(p->order, "keep");
    size_t n = json_array_size(keep), used = 0;
    cleanup_free struct standby_image_keep *k = calloc(n ? n : 1, sizeof(*k));
    if (k == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    size_t i;
    json_t *v;
    json_array_foreach(keep, i, v)
    {
        const char *sha = json_string_value(json_object_get(v, "sha256"));
        const char *service = json_string_value(json_object_get(v, "service"));
        if (sha == NULL || strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64)
            return vcr_error_make(err, EINVAL,
                                  "keep[%zu].sha256: `%.80s` is not a SHA-256; allowed: 64 "
                                  "lower-case hex digits",
                                  i, sha ? sha : "(missing)");
        struct standby_image_keep *e = &k[used++];
        snprintf(e->sha256, sizeof(e->sha256), "%s", sha);
        snprintf(e->why, sizeof(e->why), "configured for service %.64s", service ? service : "?");
    }
    cleanup_json json_t *res =
        standby_image_prune(r->images_dir, k, used, "/proc/self/mountinfo", err);
    if (res == NULL)
        return -1;
    return set_result(res, err);
}

/* In the child: container_address {name, address, address6?, take}
 * (docs/recovery.md, "Address takeover"): the primary's addresses added to the
 * container's eth0 and announced (a gratuitous ARP, an unsolicited neighbour
 * advertisement), or removed.  A container that does not run holds no
 * address: releasing succeeds, taking does not. */
static int address_work(struct standby_pending *p, vcr_error_t *err)
{
    const char *address = json_string_value(json_object_get(p->order, "address"));
    json_t *address6_v = json_object_get(p->order, "address6");
    const char *address6 = json_string_value(address6_v);
    json_t *take_v = json_object_get(p->order, "take");
    struct in_addr a4;
    struct in6_addr a6;
    if (address == NULL || inet_pton(AF_INET, address, &a4) != 1 ||
        (address6_v && (address6 == NULL || inet_pton(AF_INET6, address6, &a6) != 1)) ||
        !json_is_boolean(take_v))
        return vcr_error_make(err, EINVAL,
                              "container_address needs `address` (A.B.C.D), `address6` (an IPv6 "
                              "address) or none, and `take` (true: add them, false: remove "
                              "them)");
    bool take = json_is_true(take_v);
    struct lxc_container *c = standby_ct_lxc(p->ct);
    int pid = c->is_running(c) ? c->init_pid(c) : -1;
    cleanup_json json_t *members = json_pack("{s:s, s:b}", "address", address, "running", pid > 0);
    if (members == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    if (address6)
        json_object_set_new(members, "address6", json_string(address6));
    if (pid <= 0 && !take)
        return set_result(members, err);
    if (standby_address_apply(pid, "eth0", address, take, err) < 0 ||
        (address6 && standby_address_apply(pid, "eth0", address6, take, err) < 0))
        return vcr_error_wrap(err, "container `%s`", p->name);
    if (take) {
        cleanup_error vcr_error_t arp_err = NULL;
        if (standby_send_garp(pid, "eth0", address, &arp_err) < 0 ||
            (address6 && standby_send_unsolicited_na(pid, "eth0", address6, &arp_err) < 0))
            return vcr_error_make(err, vcr_error_status(arp_err), "container `%s`: %s", p->name,
                                  vcr_error_msg(arp_err));
        log_info("container %s: took address %s%s%s (gratuitous ARP%s sent)", p->name, address,
                 address6 ? " and " : "", address6 ? address6 : "",
                 address6 ? ", unsolicited neighbour advertisement" : "");
    } else {
        log_info("container %s: released address %s%s%s", p->name, address, address6 ? " and " : "",
                 address6 ? address6 : "");
    }
    return set_result(members, err);
}

/* In the child: a stream's end (standby_stream.h).  The reply's members:
 * {bytes, ms, mb_s}. */
static int stream_work(struct standby_pending *p, vcr_error_t *err)
{
    struct standby_stream_order o;
    struct standby_stream_stats st = {0};
    bool send = strcmp(p->action, "stream_send") == 0;
    if (standby_stream_order_from_json(p->order, send, &o, err) < 0)
        return -1;
    char path[400], text[160];
    if (send) {
        struct standby_migrate_paths mp;
        if (o.data) {
            if (data_path(p->r->data_dir, o.service, "outgoing.gz", path, sizeof(path), err) < 0)
                return -1;
        } else if (standby_migrate_paths(p->r->migrate_dir, o.name,
                                         strcmp(o.phase, "pre") == 0 ? STANDBY_PHASE_PRE
                                                                     : STANDBY_PHASE_FINAL,
                                         &mp, err) < 0)
            return -1;
        else
            snprintf(path, sizeof(path), "%s", mp.tar);
        if (standby_stream_send(path, &o, &st, err) < 0)
            return -1;
    } else {
        char file[16];
        snprintf(file, sizeof(file), "%s", o.data ? "incoming.gz" : o.phase);
        if (!o.data)
            strcat(file, ".tar");
        snprintf(path, sizeof(path), "%s/%s/%s", o.data ? p->r->data_dir : p->r->migrate_dir,
                 o.data ? o.service : o.name, file);
        int rc =
            standby_stream_receive(p->stream_listen_fd, p->stream_dir_fd, file, path, &o, &st, err);
        close(p->stream_dir_fd);
        if (rc < 0)
            return -1;
    }
    standby_stream_result_text(&st, text, sizeof(text));
    standby_job_set_result(text);
    return 0;
}

/* In the child. */
int job_work(void *arg, vcr_error_t *err)
{
    struct standby_pending *p = arg;
    if (VCR_TEST_FAULTS && p->hold_ms > 0) {
        struct timespec ts = {.tv_sec = p->hold_ms / 1000,
                              .tv_nsec = (p->hold_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (strcmp(p->action, "container_create") == 0)
        return create_work(p, err);
    if (strcmp(p->action, "image_prune") == 0)
        return prune_work(p, err);
    if (strcmp(p->action, "container_address") == 0)
        return address_work(p, err);
    if (strncmp(p->action, "stream_", 7) == 0)
        return stream_work(p, err);
    if (p->order)
        return data_work(p, err);
    if (strcmp(p->action, "container_checkpoint") == 0)
        return checkpoint_work(p, err);
    if (strcmp(p->action, "container_image_unpack") == 0)
        return unpack_pre_work(p, err);
    if (strcmp(p->action, "container_restore") == 0)
        return restore_work(p, err);
    if (strcmp(p->action, "container_start") == 0)
        return standby_ct_start(p->ct, err);
    if (strcmp(p->action, "container_stop") == 0)
        return standby_ct_stop(p->ct, STANDBY_STOP_TIMEOUT_S, err);
    return standby_ct_destroy(p->ct, err);
}
