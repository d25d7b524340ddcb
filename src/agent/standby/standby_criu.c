/* Live migration of a container through liblxc's migrate() (CRIU): the
 * checkpoint and restore halves, and the gratuitous ARP that tells the lab
 * LAN the container's address moved to this VM's port.  Runs in a standby_job
 * child (standby_role.c): everything here may block for seconds. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lxc/lxccontainer.h>

#include "agent/standby/standby_address.h"
#include "agent/standby/standby_archive.h"
#include "agent/standby/standby_ct.h"
#include "agent/warm_state.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

/* The log's text, NUL-terminated, to free(): all of it up to 8 MiB, else its
 * first and last 4 MiB (the first Error, the cause, comes early in a restore
 * that fails in its namespaces, mounts or files, before a long tail of
 * tasks' lines), or NULL. */
static char *read_criu_log(const char *path)
{
    enum { HALF = 4 << 20 };
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0)
        return NULL;
    size_t size = (size_t)st.st_size;
    bool whole = size <= 2 * (size_t)HALF;
    size_t head = whole ? size : HALF, tail = whole ? 0 : HALF;
    char *text = malloc(head + 1 + tail + 1);
    if (text == NULL)
        return NULL;
    ssize_t a = pread(fd, text, head, 0);
    ssize_t b = tail ? pread(fd, text + (a > 0 ? a : 0) + 1, tail, (off_t)(size - tail)) : 0;
    if (a <= 0 || b < 0) {
        free(text);
        return NULL;
    }
    size_t used = (size_t)a;
    if (tail) {
        text[used++] = '\n';
        used += (size_t)b;
    }
    text[used] = '\0';
    return text;
}

/* The log's last lines into ours (the VM's journal and console): the log
 * stays in the VM, under a directory the next attempt replaces, and a cause
 * CRIU wrote in no Error line (a task that died without one) is there. */
static void log_criu_tail(const char *name, const char *path, const char *text)
{
    enum { LINES = 40 };
    const char *from = text + strlen(text);
    for (int n = 0; from > text && n < LINES;) {
        from--;
        if (*from == '\n' && from[1] != '\0')
            n++;
    }
    if (from > text)
        from++;
    log_warn("container %s: the last %d lines of %s:", name, LINES, path);
    for (const char *line = from; *line;) {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        if (len > 0)
            log_warn("container %s: criu: %.*s", name, len, line);
        line = nl ? nl + 1 : line + len;
    }
}

/* The reason CRIU gave in DIR/ACTION.log, else liblxc's. */
static int criu_failure(vcr_error_t *err, struct lxc_container *c, const char *dir,
                        const char *action)
{
    char path[320], reason[1200];
    snprintf(path, sizeof(path), "%s/%s.log", dir, action);
    cleanup_free char *text = read_criu_log(path);
    if (text) {
        standby_criu_log_reason(text, reason, sizeof(reason));
        log_criu_tail(c->name, path, text);
        return vcr_error_make(err, EIO, "criu %s failed: %s (%s)", action, reason, path);
    }
    if (c->error_string)
        return vcr_error_make(err, EIO, "criu %s failed: %s", action, c->error_string);
    return vcr_error_make(err, EIO, "criu %s failed, and left no log at `%s` (see %s/%s/lxc.log)",
                          action, path, c->config_path, c->name);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int make_dir(const char *path, mode_t mode, vcr_error_t *err)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", path);
    return 0;
}

int standby_ct_checkpoint(struct standby_ct *ct, const char *base, enum standby_phase phase,
                          struct standby_checkpoint_result *res, vcr_error_t *err)
{
    struct lxc_container *c = standby_ct_lxc(ct);
    const char *name = standby_ct_name(ct);
    struct standby_migrate_paths p;
    if (standby_migrate_paths(base, name, phase, &p, err) < 0)
        return -1;
    if (!c->is_running(c))
        return vcr_error_make(err, EINVAL,
                              "container `%s` is %s: only a running one can be "
                              "checkpointed",
                              name, standby_ct_state(ct));
    if (make_dir(base, 0700, err) < 0 || make_dir(p.dir, 0700, err) < 0 ||
        standby_remove_tree(p.images, err) < 0 || standby_remove_tree(p.tar, err) < 0 ||
        make_dir(p.images, 0700, err) < 0)
        return -1;
    *res = (struct standby_checkpoint_result){0};
    struct migrate_opts opts = {.directory = p.images};
    unsigned int cmd = MIGRATE_PRE_DUMP;
    if (phase == STANDBY_PHASE_FINAL) {
        cmd = MIGRATE_DUMP;
        opts.stop = true;
        /* A pre-dump leaves its inventory; CRIU resolves --prev-images-dir
         * from the images dir (a `parent` symlink in final/), so it must be
         * relative for the pair to survive the copy to another VM. */
        char inventory[300];
        snprintf(inventory, sizeof(inventory), "%s/inventory.img", p.pre);
        if (exists(inventory)) {
            opts.predump_dir = "../pre";
            res->incremental = true;
        }
    }
    int64_t t0 = vcr_mono_ms();
    if (c->migrate(c, cmd, &opts, sizeof(opts)) != 0) {
        if (phase == STANDBY_PHASE_FINAL)
            return criu_failure(err, c, p.images, "dump");
        /* A half-written pre-dump must not become the final dump's parent:
         * it moves aside, with its log, to pre.failed/. */
        char failed[300];
        snprintf(failed, sizeof(failed), "%s/pre.failed", p.dir);
        cleanup_error vcr_error_t rm_err = NULL;
        if (standby_remove_tree(failed, &rm_err) == 0 && rename(p.images, failed) == 0)
            return criu_failure(err, c, failed, "pre-dump");
        standby_remove_tree(p.images, &rm_err);
        return criu_failure(err, c, p.images, "pre-dump");
    }
    int64_t t1 = vcr_mono_ms();
    res->dump_ms = t1 - t0;
    const char *phase_name = standby_phase_name(phase);
    const struct standby_ct_paths *cp = standby_ct_paths_of(ct);
    /* GNU tar (busybox's has no --xattrs).  xattrs: the overlay's upper dir
     * marks opaque directories with trusted.overlay.opaque; whiteouts are
     * 0:0 character devices, which tar keeps as they are. */
    char *pre_argv[] = {STANDBY_TAR, STANDBY_TAR_OPTIONS, "-cf", p.tar, "-C",
                        p.dir,       (char *)phase_name,  NULL};
    char *final_argv[] = {STANDBY_TAR, STANDBY_TAR_OPTIONS, "-cf",   p.tar,    "-C", p.dir, "final",
                          "-C",        (char *)cp->dir,     "delta", "config", NULL};
    int rc = standby_run_program(phase == STANDBY_PHASE_PRE ? pre_argv : final_argv, err);
    if (rc < 0) {
        unlink(p.tar);
        return vcr_error_wrap(err, "pack `%s`", p.tar);
    }
    if (warm_state_digest(p.tar, res->sha256, &res->bytes, err) < 0)
        return -1;
    res->pack_ms = vcr_mono_ms() - t1;
    return 0;
}

/* rename, or a copy when from and to are on different filesystems. */
static int move_tree(const char *from, const char *to, vcr_error_t *err)
{
    if (rename(from, to) == 0)
        return 0;
    if (errno != EXDEV)
        return vcr_error_errno(err, "rename `%s` to `%s`", from, to);
    char *argv[] = {"cp", "-a", (char *)from, (char *)to, NULL};
    if (standby_run_program(argv, err) < 0)
        return -1;
    return standby_remove_tree(from, err);
}

struct standby_ct *standby_ct_restore(const char *lxcpath, const char *lib_dir, const char *base,
                                      const struct standby_ct_spec *spec, const char *bind_src,
                                      const char *bind_path, struct standby_restore_result *res,
                                      vcr_error_t *err)
{
    *res = (struct standby_restore_result){0};
    struct standby_migrate_paths p, pre;
    struct standby_ct_paths cp;
    if (standby_migrate_paths(base, spec->name, STANDBY_PHASE_FINAL, &p, err) < 0 ||
        standby_migrate_paths(base, spec->name, STANDBY_PHASE_PRE, &pre, err) < 0 ||
        standby_ct_paths(lxcpath, lib_dir, spec, &cp, err) < 0)
        return NULL;
    if (!exists(p.tar))
        return vcr_error_make(err, ENOENT,
                              "container `%s`: no `%s`: container_image_write it "
                              "first",
                              spec->name, p.tar),
               NULL;
    /* Unpacked into a directory made fresh here, never beside the archives:
     * nothing in them can replace pre.tar or final.tar (or anything else). */
    char fresh[300], images[320], delta[320];
    snprintf(fresh, sizeof(fresh), "%s/unpacked", p.dir);
    snprintf(images, sizeof(images), "%s/final", fresh);
    snprintf(delta, sizeof(delta), "%s/delta", fresh);
    int64_t t0 = vcr_mono_ms();
    /* What an earlier attempt unpacked goes first: the archives are the truth. */
    if (standby_remove_tree(fresh, err) < 0 || standby_remove_tree(p.images, err) < 0 ||
        standby_remove_tree(pre.images, err) < 0)
        return NULL;
    if (mkdir(fresh, 0700) < 0)
        return vcr_error_errno(err, "mkdir `%s`", fresh), NULL;
    /* The pre-dump's tree: from pre.tar when one is here (an archive copied
     * after the last container_image_unpack wins), else as that order left
     * it, checked and unpacked while the container still ran on the source. */
    char ahead[300], ahead_pre[320], fresh_pre[320];
    standby_pre_ahead_dir(&p, ahead, sizeof(ahead));
    snprintf(ahead_pre, sizeof(ahead_pre), "%s/pre", ahead);
    snprintf(fresh_pre, sizeof(fresh_pre), "%s/pre", fresh);
    if (exists(pre.tar)) {
        if (standby_remove_tree(ahead, err) < 0 ||
            standby_migrate_unpack(fresh, pre.tar, &standby_archive_pre, err) < 0)
            return NULL;
    } else if (exists(ahead_pre)) {
        if (rename(ahead_pre, fresh_pre) < 0)
            return vcr_error_errno(err, "rename `%s` to `%s`", ahead_pre, fresh_pre), NULL;
        if (standby_remove_tree(ahead, err) < 0)
            return NULL;
    }
    if (standby_migrate_unpack(fresh, p.tar, &standby_archive_final, err) < 0 ||
        standby_images_drop_nft_lock(images, err) < 0)
        return NULL;
    if (!exists(delta))
        return vcr_error_make(err, EINVAL, "`%s` holds no delta/ (the overlay's upper dir)", p.tar),
               NULL;
    /* The upper dir must hold the container's files before the overlay is
     * mounted on it: overlayfs does not see changes made below it later. */
    char ct_config[300];
    snprintf(ct_config, sizeof(ct_config), "%s/config", cp.dir);
    if (exists(ct_config))
        return vcr_error_make(err, EEXIST, "container `%s` already exists", spec->name), NULL;
    /* An overlay an earlier attempt left mounted would hide the new delta. */
    if (exists(cp.rootfs) && umount2(cp.rootfs, MNT_DETACH) < 0 && errno != EINVAL)
        return vcr_error_errno(err, "umount `%s`", cp.rootfs), NULL;
    if (make_dir(cp.dir, 0750, err) < 0 || standby_remove_tree(cp.delta, err) < 0 ||
        standby_remove_tree(cp.work, err) < 0 || move_tree(delta, cp.delta, err) < 0)
        return NULL;
    res->unpack_ms = vcr_mono_ms() - t0;
    struct standby_ct *ct = standby_ct_create(lxcpath, lib_dir, spec, err);
    if (ct == NULL)
        return NULL;
    struct lxc_container *c = standby_ct_lxc(ct);
    /* The dump named the bind as an external mount (liblxc's --ext-mount-map for
     * every lxc.mount.entry bind); the restore maps it to the same entry here. */
    if (bind_src && standby_ct_add_bind(ct, bind_src, bind_path, err) < 0) {
        cleanup_error vcr_error_t undo = NULL;
        if (standby_ct_destroy(ct, &undo) < 0)
            log_warn("container %s: after the failed bind: %s", spec->name, vcr_error_msg(undo));
        standby_ct_free(ct);
        return NULL;
    }
    /* An unprivileged container's tasks read their images themselves once in
     * its user namespace (netns-N.img first): the unpacked tree becomes its
     * root's, else "Unable to open netns-N.img: Permission denied" (the agent
     * made it 0700, root's; its parent stays so, CRIU opens it as root);
     * and timens-N.img readable before its uid map is written
     * (standby_images_for_userns). */
    if (spec->unprivileged &&
        (standby_map_owners(fresh, 0, STANDBY_IDMAP_BASE, STANDBY_IDMAP_COUNT, err) < 0 ||
         standby_images_for_userns(images, err) < 0)) {
        vcr_error_wrap(err, "container `%s`: its images to the container's root", spec->name);
        cleanup_error vcr_error_t undo = NULL;
        if (standby_ct_destroy(ct, &undo) < 0)
            log_warn("container %s: after the failed chown: %s", spec->name, vcr_error_msg(undo));
        standby_ct_free(ct);
        return NULL;
    }
    c->want_daemonize(c, true);
    struct migrate_opts opts = {.directory = images};
    int64_t t1 = vcr_mono_ms();
    if (c->migrate(c, MIGRATE_RESTORE, &opts, sizeof(opts)) != 0 || !c->is_running(c)) {
        criu_failure(err, c, images, "restore");
        cleanup_error vcr_error_t undo = NULL;
        if (standby_ct_destroy(ct, &undo) < 0)
            log_warn("container %s: after the failed restore: %s", spec->name, vcr_error_msg(undo));
        standby_ct_free(ct);
        return NULL;
    }
    res->restore_ms = vcr_mono_ms() - t1;
    cleanup_error vcr_error_t arp_err = NULL;
    if (standby_send_garp(c->init_pid(c), "eth0", spec->address, &arp_err) < 0)
        snprintf(res->arp_error, sizeof(res->arp_error), "%s", vcr_error_msg(arp_err));
    return ct;
}

int standby_send_garp(int pid, const char *ifname, const char *address, vcr_error_t *err)
{
    cleanup_close int self = standby_netns_enter(pid, err);
    if (self < 0)
        return -1;
    /* The socket belongs to the namespace it was made in. */
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
    int rc = 0;
    if (s < 0) {
        rc = vcr_error_errno(err, "AF_PACKET socket");
    } else {
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        unsigned char frame[STANDBY_GARP_LEN];
        if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
            rc = vcr_error_errno(err, "interface `%s`", ifname);
        } else {
            struct sockaddr_ll to = {.sll_family = AF_PACKET,
                                     .sll_protocol = htons(ETH_P_ARP),
                                     .sll_ifindex = ifr.ifr_ifindex,
                                     .sll_halen = 6};
            memset(to.sll_addr, 0xff, 6);
            if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
                rc = vcr_error_errno(err, "MAC of `%s`", ifname);
            else if (standby_garp_frame((unsigned char *)ifr.ifr_hwaddr.sa_data, address, frame,
                                        err) < 0)
                rc = -1;
            else if (sendto(s, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
                rc = vcr_error_errno(err, "send the gratuitous ARP on `%s`", ifname);
        }
        close(s);
    }
    if (setns(self, CLONE_NEWNET) < 0)
        log_warn("setns back to our network namespace: %s", strerror(errno));
    return rc;
}
