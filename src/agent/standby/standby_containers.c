/* Containers through liblxc: create (overlay + configuration), start, stop,
 * destroy, adopt, and their load from cgroup v1 counters. */
#include "agent/standby/standby_ct.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <lxc/lxccontainer.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "proto/proto_state.h"

struct standby_ct {
    struct lxc_container *c;
    struct standby_ct_spec spec;
    struct standby_ct_paths paths;
    bool have_cpu; /* cpu_ns/cpu_ts_ns hold an earlier reading */
    uint64_t cpu_ns;
    uint64_t cpu_ts_ns;
};

const char *standby_ct_name(const struct standby_ct *ct)
{
    return ct->spec.name;
}

static int lxc_failure(vcr_error_t *err, struct lxc_container *c, const char *what)
{
    if (c && c->error_string)
        return vcr_error_make(err, EIO, "%s: %s", what, c->error_string);
    return vcr_error_make(err, EIO, "%s failed (see %s/%s/lxc.log)", what,
                          c && c->config_path ? c->config_path : STANDBY_LXCPATH,
                          c && c->name ? c->name : "NAME");
}

static int make_dir(const char *path, mode_t mode, vcr_error_t *err)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return vcr_error_errno(err, "mkdir `%s`", path);
    return 0;
}

static bool is_mountpoint(const char *path)
{
    struct stat a, b;
    char parent[300];
    snprintf(parent, sizeof(parent), "%s/..", path);
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static int mount_overlay(const struct standby_ct_paths *p, vcr_error_t *err)
{
    struct stat st;
    if (stat(p->lower, &st) < 0 || !S_ISDIR(st.st_mode))
        return vcr_error_make(err, ENOENT, "lower dir `%s` (template or image): no such directory",
                              p->lower);
    if (make_dir(p->dir, 0750, err) < 0 || make_dir(p->delta, 0755, err) < 0 ||
        make_dir(p->work, 0700, err) < 0 || make_dir(p->rootfs, 0755, err) < 0)
        return -1;
    if (is_mountpoint(p->rootfs))
        return 0;
    char opts[1024];
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", p->lower, p->delta, p->work);
    if (mount("overlay", p->rootfs, "overlay", 0, opts) < 0)
        return vcr_error_errno(err, "mount overlay at `%s` (%s)", p->rootfs, opts);
    return 0;
}

/* STANDBY_IMAGE_INIT in the container's rootfs: through the overlay, so it
 * lands in the container's own upper dir, never in the shared image. */
static int write_image_init(struct standby_ct *ct, vcr_error_t *err)
{
    char script[512], path[300];
    snprintf(path, sizeof(path), "%s%s", ct->paths.rootfs, STANDBY_IMAGE_INIT);
    if (standby_image_init_script(ct->spec.image.cmd, script, sizeof(script)) < 0)
        return vcr_error_make(err, ENAMETOOLONG, "container `%s`: cmd too long", ct->spec.name);
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (fd < 0)
        return vcr_error_errno(err, "container `%s`: create `%s`", ct->spec.name, path);
    if (ct->spec.unprivileged && fchown(fd, STANDBY_IDMAP_BASE, STANDBY_IDMAP_BASE) < 0)
        return vcr_error_errno(err, "container `%s`: chown `%s`", ct->spec.name, path);
    size_t len = strlen(script);
    if (write(fd, script, len) != (ssize_t)len)
        return vcr_error_errno(err, "container `%s`: write `%s`", ct->spec.name, path);
    return 0;
}

/* An unprivileged container needs LXC's seccomp profile, its lower dir
 * shifted into its idmap range, and its directory open to its root on the
 * way to the rootfs (LXC mounts the rootfs as the container's root). */
static int prepare_unprivileged(const struct standby_ct_paths *p, vcr_error_t *err)
{
    if (access(STANDBY_SECCOMP_PROFILE, R_OK) < 0)
        return vcr_error_errno(err, "unprivileged container: seccomp profile `%s`",
                               STANDBY_SECCOMP_PROFILE);
    if (standby_shift_tree(p->source, p->lower, STANDBY_IDMAP_BASE, STANDBY_IDMAP_COUNT, err) < 0)
        return vcr_error_wrap(err, "unprivileged container: its lower dir");
    if (make_dir(p->dir, 0750, err) < 0)
        return -1;
    if (chmod(p->dir, 0755) < 0)
        return vcr_error_errno(err, "chmod `%s`", p->dir);
    return 0;
}

struct standby_ct *standby_ct_create(const char *lxcpath, const char *lib_dir,
                                     const struct standby_ct_spec *spec, vcr_error_t *err)
{
    struct standby_ct *ct = calloc(1, sizeof(*ct));
    if (ct == NULL) {
        vcr_error_make(err, ENOMEM, "out of memory");
        return NULL;
    }
    ct->spec = *spec;
    if (standby_ct_paths(lxcpath, lib_dir, spec, &ct->paths, err) < 0)
        goto fail;
    ct->c = lxc_container_new(spec->name, lxcpath);
    if (ct->c == NULL) {
        vcr_error_make(err, EIO, "lxc_container_new `%s` in `%s` failed", spec->name, lxcpath);
        goto fail;
    }
    if (ct->c->is_defined(ct->c)) {
        vcr_error_make(err, EEXIST, "container `%s` already exists", spec->name);
        goto fail;
    }
    if (spec->unprivileged && prepare_unprivileged(&ct->paths, err) < 0)
        goto fail;
    if (mount_overlay(&ct->paths, err) < 0)
        goto fail;
    /* The overlay's root takes its owner from the upper dir: the container's
     * root must own it (a restore's delta comes with it, the same). */
    if (spec->unprivileged && chown(ct->paths.delta, STANDBY_IDMAP_BASE, STANDBY_IDMAP_BASE) < 0) {
        vcr_error_errno(err, "chown `%s`", ct->paths.delta);
        goto undo;
    }
    if (spec->has_image && spec->image.cmd[0] && write_image_init(ct, err) < 0)
        goto undo;
    struct standby_cfg_item items[STANDBY_CFG_MAX];
    size_t n = standby_ct_config(spec, &ct->paths, items);
    for (size_t i = 0; i < n; i++) {
        if (!ct->c->set_config_item(ct->c, items[i].key, items[i].value)) {
            vcr_error_make(err, EINVAL, "lxc config `%s = %s` refused", items[i].key,
                           items[i].value);
            goto undo;
        }
    }
    if (!ct->c->save_config(ct->c, NULL)) {
        lxc_failure(err, ct->c, "save the configuration");
        goto undo;
    }
    return ct;
undo:
    umount2(ct->paths.rootfs, MNT_DETACH);
fail:
    standby_ct_free(ct);
    return NULL;
}

/* The value of a single configuration item, or "" (buf). */
static void config_item(struct lxc_container *c, const char *key, char *buf, size_t size)
{
    buf[0] = '\0';
    int n = c->get_config_item(c, key, buf, (int)size);
    if (n < 0 || (size_t)n >= size)
        buf[0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
}

struct standby_ct *standby_ct_adopt(const char *lxcpath, const char *name, vcr_error_t *err)
{
    struct standby_ct *ct = calloc(1, sizeof(*ct));
    if (ct == NULL) {
        vcr_error_make(err, ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(ct->spec.name, sizeof(ct->spec.name), "%s", name);
    ct->c = lxc_container_new(name, lxcpath);
    if (ct->c == NULL || !ct->c->is_defined(ct->c)) {
        vcr_error_make(err, ENOENT, "container `%s` is not defined in `%s`", name, lxcpath);
        standby_ct_free(ct);
        return NULL;
    }
    char buf[512];
    config_item(ct->c, "lxc.environment", buf, sizeof(buf));
    /* lxc.environment lists every variable, one a line; we set only VCR_SERVICE. */
    const char *svc = strstr(buf, "VCR_SERVICE=");
    snprintf(ct->spec.service, sizeof(ct->spec.service), "%.64s",
             svc ? svc + strlen("VCR_SERVICE=") : name);
    config_item(ct->c, "lxc.net.0.ipv4.address", buf, sizeof(buf));
    char *slash = strchr(buf, '/');
    ct->spec.prefix = slash ? atoi(slash + 1) : 0;
    if (slash)
        *slash = '\0';
    snprintf(ct->spec.address, sizeof(ct->spec.address), "%.15s", buf);
    config_item(ct->c, "lxc.net.0.ipv4.gateway", buf, sizeof(buf));
    snprintf(ct->spec.gateway, sizeof(ct->spec.gateway), "%.15s", buf);
    config_item(ct->c, "lxc.idmap", buf, sizeof(buf));
    ct->spec.unprivileged = buf[0] != '\0';
    snprintf(ct->spec.template, sizeof(ct->spec.template), "%s", STANDBY_TEMPLATE_DEF);
    snprintf(ct->paths.dir, sizeof(ct->paths.dir), "%s/%s", lxcpath, name);
    snprintf(ct->paths.rootfs, sizeof(ct->paths.rootfs), "%s/rootfs", ct->paths.dir);
    snprintf(ct->paths.delta, sizeof(ct->paths.delta), "%s/delta", ct->paths.dir);
    snprintf(ct->paths.work, sizeof(ct->paths.work), "%s/work", ct->paths.dir);
    return ct;
}

int standby_ct_start(struct standby_ct *ct, vcr_error_t *err)
{
    if (ct->c->is_running(ct->c))
        return 0;
    if (!is_mountpoint(ct->paths.rootfs))
        return vcr_error_make(err, ENOENT, "container `%s`: its overlay is not mounted at `%s`",
                              ct->spec.name, ct->paths.rootfs);
    ct->c->want_daemonize(ct->c, true);
    /* useinit 0, argv NULL: lxc.init.cmd is PID 1 (lxc-start semantics; a
     * container run through lxc-execute's init could not be checkpointed). */
    if (!ct->c->start(ct->c, 0, NULL))
        return lxc_failure(err, ct->c, "start");
    ct->have_cpu = false;
    return 0;
}

int standby_ct_stop(struct standby_ct *ct, int timeout_s, vcr_error_t *err)
{
    if (!ct->c->is_running(ct->c))
        return 0;
    if (ct->c->shutdown(ct->c, timeout_s))
        return 0;
    log_warn("container %s: no clean shutdown within %d s: killing it", ct->spec.name, timeout_s);
    if (!ct->c->stop(ct->c) && ct->c->is_running(ct->c))
        return lxc_failure(err, ct->c, "stop");
    return 0;
}

int standby_ct_destroy(struct standby_ct *ct, vcr_error_t *err)
{
    if (standby_ct_stop(ct, 2, err) < 0)
        return -1;
    /* Unmount first: liblxc's `dir` storage would otherwise empty the rootfs
     * through the overlay (whiteouts) before removing it. */
    if (is_mountpoint(ct->paths.rootfs) && umount2(ct->paths.rootfs, MNT_DETACH) < 0)
        return vcr_error_errno(err, "umount `%s`", ct->paths.rootfs);
    if (!ct->c->destroy(ct->c))
        return lxc_failure(err, ct->c, "destroy");
    return 0;
}

const char *standby_ct_state(struct standby_ct *ct)
{
    /* liblxc's names in upper case; the wire's in lower (proto_state.h). */
    static const struct {
        const char *lxc;
        enum proto_ct_state state;
    } map[] = {
        {"RUNNING", PROTO_CT_RUNNING},   {"STOPPED", PROTO_CT_STOPPED},
        {"STARTING", PROTO_CT_STARTING}, {"STOPPING", PROTO_CT_STOPPING},
        {"FROZEN", PROTO_CT_FROZEN},
    };
    const char *s = ct->c->state(ct->c);
    for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(s, map[i].lxc) == 0)
            return proto_ct_state_name(map[i].state);
    return proto_ct_state_name(PROTO_CT_UNKNOWN);
}

static bool cgroup_counter(struct standby_ct *ct, const char *item, uint64_t *v)
{
    char buf[64];
    int n = ct->c->get_cgroup_item(ct->c, item, buf, sizeof(buf));
    if (n <= 0 || (size_t)n >= sizeof(buf))
        return false;
    buf[n] = '\0';
    cleanup_error vcr_error_t err = NULL;
    return standby_parse_counter(buf, v, &err) == 0;
}

/* {uid_map, cap_eff, seccomp} of the container's init, read in the VM's
 * /proc: what the container really runs with (after a restore too), or null. */
static json_t *isolation_json(struct standby_ct *ct)
{
    pid_t pid = ct->c->init_pid(ct->c);
    char path[64], status[4096], uid_map[256];
    struct standby_isolation iso;
    cleanup_error vcr_error_t err = NULL;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (pid <= 0 || standby_read_file(path, status, sizeof(status), &err) < 0)
        return json_null();
    snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
    if (standby_read_file(path, uid_map, sizeof(uid_map), &err) < 0 ||
        standby_parse_isolation(status, uid_map, &iso, &err) < 0) {
        log_debug("container %s: %s", ct->spec.name, vcr_error_msg(err));
        return json_null();
    }
    return json_pack("{s:s, s:s, s:i}", "uid_map", iso.uid_map, "cap_eff", iso.cap_eff, "seccomp",
                     iso.seccomp);
}

json_t *standby_ct_json(struct standby_ct *ct, bool with_load, uint64_t now_ns)
{
    const char *state = standby_ct_state(ct);
    json_t *cpu = json_null(), *mem = json_null();
    if (with_load && strcmp(state, "running") == 0) {
        uint64_t usage, bytes;
        if (cgroup_counter(ct, "cpuacct.usage", &usage)) {
            if (ct->have_cpu) {
                json_decref(cpu);
                cpu = json_real(standby_ct_cpu_pct(ct->cpu_ns, usage, now_ns - ct->cpu_ts_ns));
            }
            ct->have_cpu = true;
            ct->cpu_ns = usage;
            ct->cpu_ts_ns = now_ns;
        }
        if (cgroup_counter(ct, "memory.usage_in_bytes", &bytes)) {
            json_decref(mem);
            mem = json_integer((json_int_t)(bytes / 1024));
        }
    }
    json_t *out = json_pack("{s:s, s:s, s:s, s:s?, s:o, s:o, s:b}", "name", ct->spec.name,
                            "service", ct->spec.service, "state", state, "address",
                            ct->spec.address[0] ? ct->spec.address : NULL, "cpu_pct", cpu, "mem_kb",
                            mem, "privileged", !ct->spec.unprivileged);
    if (out && strcmp(state, "running") == 0)
        json_object_set_new(out, "isolation", isolation_json(ct));
    return out;
}

void standby_ct_free(struct standby_ct *ct)
{
    if (ct == NULL)
        return;
    if (ct->c)
        lxc_container_put(ct->c);
    free(ct);
}

struct lxc_container *standby_ct_lxc(struct standby_ct *ct)
{
    return ct->c;
}

const struct standby_ct_paths *standby_ct_paths_of(const struct standby_ct *ct)
{
    return &ct->paths;
}

const struct standby_ct_spec *standby_ct_spec_of(const struct standby_ct *ct)
{
    return &ct->spec;
}

int standby_ct_add_bind(struct standby_ct *ct, const char *src, const char *path, vcr_error_t *err)
{
    char entry[600], all[8192];
    /* The target of lxc.mount.entry is relative to the rootfs. */
    snprintf(entry, sizeof(entry), "%s %s none bind,create=dir 0 0", src, path + 1);
    int n = ct->c->get_config_item(ct->c, "lxc.mount.entry", all, (int)sizeof(all));
    bool present = false;
    for (char *line = n > 0 && (size_t)n < sizeof(all) ? all : NULL; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        present = present || strcmp(line, entry) == 0;
        line = nl ? nl + 1 : NULL;
    }
    if (!present) {
        if (!ct->c->set_config_item(ct->c, "lxc.mount.entry", entry))
            return vcr_error_make(err, EINVAL, "lxc config `lxc.mount.entry = %s` refused", entry);
        if (!ct->c->save_config(ct->c, NULL))
            return lxc_failure(err, ct->c, "save the configuration");
    }
    return 0;
}

int standby_ct_bind_dir(struct standby_ct *ct, const char *src, const char *path, bool *restarted,
                        vcr_error_t *err)
{
    if (standby_ct_add_bind(ct, src, path, err) < 0)
        return -1;
    *restarted = ct->c->is_running(ct->c);
    if (*restarted) {
        if (!ct->c->stop(ct->c) && ct->c->is_running(ct->c))
            return lxc_failure(err, ct->c, "stop");
        ct->c->wait(ct->c, "STOPPED", 10);
    }
    return standby_ct_start(ct, err);
}
