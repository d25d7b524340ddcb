/* QEMU command line and VM state machine (see vm.h). */
#include "agent/host/vm.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/host/host_volume.h"
#include "common/cleanup.h"
#include "common/log.h"

const char *vm_state_name(enum vm_state s)
{
    const char *name = proto_vm_state_name((int)s);
    return name ? name : "?";
}

bool vm_state_is_live(enum vm_state s)
{
    return s == VM_STATE_STARTING || s == VM_STATE_RUNNING || s == VM_STATE_PAUSED ||
           s == VM_STATE_RESTARTING;
}

uint32_t vm_state_dir_hash(const char *state_dir)
{
    /* Two agents may use the same host name on one machine (labs in separate
     * network namespaces); the state directory tells their RAM files apart. */
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *c = state_dir; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    return h;
}

static bool pid_file_names_live_process(const char *state_dir, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.pid", state_dir, name);
    cleanup_file FILE *f = fopen(path, "re");
    long pid = 0;
    return f && fscanf(f, "%ld", &pid) == 1 && pid > 0 &&
           (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

int vm_remove_orphan_ram(const char *ram_dir, const char *state_dir, const char *host,
                         const char *const *configured, size_t n_configured)
{
    char prefix[128], suffix[32];
    snprintf(prefix, sizeof(prefix), "vcr-%s-", host);
    snprintf(suffix, sizeof(suffix), "-%08x.ram", vm_state_dir_hash(state_dir));
    size_t plen = strlen(prefix), slen = strlen(suffix);
    DIR *d = opendir(ram_dir);
    if (d == NULL)
        return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= plen + slen || strncmp(e->d_name, prefix, plen) != 0 ||
            strcmp(e->d_name + len - slen, suffix) != 0)
            continue;
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(len - plen - slen), e->d_name + plen);
        bool wanted = false;
        for (size_t i = 0; i < n_configured && !wanted; i++)
            wanted = strcmp(configured[i], name) == 0;
        if (wanted)
            continue;
        /* A QEMU of a VM dropped from the configuration may still run on it. */
        if (pid_file_names_live_process(state_dir, name)) {
            log_warn("RAM file %s/%s: VM `%s` is not configured but its QEMU still runs; kept",
                     ram_dir, e->d_name, name);
            continue;
        }
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
            log_info("RAM file %s/%s: removed (VM `%s` is no longer configured)", ram_dir,
                     e->d_name, name);
            removed++;
        }
    }
    closedir(d);
    return removed;
}

int vm_paths_init(struct vm_paths *p, const char *ram_dir, const char *state_dir, const char *host,
                  const char *name, vcr_error_t *err)
{
    memset(p, 0, sizeof(*p));
    uint32_t hash = vm_state_dir_hash(state_dir);
    if (asprintf(&p->ram, "%s/vcr-%s-%s-%08x.ram", ram_dir, host, name, hash) < 0 ||
        asprintf(&p->shm_base, "%s/vcr-%s-%s-%08x", VM_SHM_DIR, host, name, hash) < 0 ||
        asprintf(&p->qmp, "%s/%s.qmp", state_dir, name) < 0 ||
        asprintf(&p->serial, "%s/%s.serial", state_dir, name) < 0 ||
        asprintf(&p->log, "%s/%s.log", state_dir, name) < 0 ||
        asprintf(&p->pid, "%s/%s.pid", state_dir, name) < 0 ||
        asprintf(&p->qemu_dir, VM_QEMU_RUN_ROOT "/%s-%08x", host, hash) < 0 ||
        asprintf(&p->mig, "%s/%s.mig", p->qemu_dir, name) < 0 ||
        asprintf(&p->state, "%s/%s.state", state_dir, name) < 0 ||
        asprintf(&p->state_tmp, "%s/%s.state.tmp", state_dir, name) < 0 ||
        asprintf(&p->state_sum, "%s/%s.state.sha256", state_dir, name) < 0 ||
        asprintf(&p->journal, "%s/%s.warm", state_dir, name) < 0 ||
        asprintf(&p->old_qmp, "%s/%s.old.qmp", state_dir, name) < 0 ||
        asprintf(&p->old_pid, "%s/%s.old.pid", state_dir, name) < 0 ||
        asprintf(&p->disk, "%s/%s.qcow2", state_dir, name) < 0 ||
        asprintf(&p->seed, "%s/%s.seed.iso", state_dir, name) < 0) {
        vm_paths_clear(p);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", name);
    }
    return 0;
}

void vm_paths_clear(struct vm_paths *p)
{
    free(p->ram);
    free(p->shm_base);
    free(p->qmp);
    free(p->serial);
    free(p->log);
    free(p->pid);
    free(p->mig);
    free(p->qemu_dir);
    free(p->state);
    free(p->state_tmp);
    free(p->state_sum);
    free(p->journal);
    free(p->old_qmp);
    free(p->old_pid);
    free(p->disk);
    free(p->seed);
    memset(p, 0, sizeof(*p));
}

/* QEMU's option parser splits on commas; a literal comma is written twice. */
static char *qemu_escape(const char *s)
{
    size_t n = strlen(s), commas = 0;
    for (size_t i = 0; i < n; i++)
        commas += s[i] == ',';
    char *out = malloc(n + commas + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        *o++ = s[i];
        if (s[i] == ',')
            *o++ = ',';
    }
    *o = '\0';
    return out;
}

char *vm_qmp_option(const struct vm_paths *p)
{
    cleanup_free char *qmp = qemu_escape(p->qmp);
    char *s = NULL;
    if (qmp == NULL || asprintf(&s, "unix:%s,server=on,wait=off", qmp) < 0)
        return NULL;
    return s;
}

/* " vcr.pmemN=MOUNT" per warm-cache volume, " vcr.blkN=/dev/vdX:MOUNT" per
 * virtio-blk volume, in the order of their devices (docs/warm-cache.md). */
static char *volume_cmdline(const struct vcr_vm_spec *spec)
{
    char *s = strdup("");
    unsigned pmem = 0, blk = 0;
    for (size_t i = 0; s && i < spec->n_volumes; i++) {
        const struct vcr_volume_spec *v = &spec->volumes[i];
        char *t = NULL;
        int rc = v->warm_cache
                     ? asprintf(&t, "%s vcr.pmem%u=%s", s, pmem++, v->mount)
                     : asprintf(&t, "%s vcr.blk%u=/dev/vd%c:%s", s, blk, 'a' + blk, v->mount);
        blk += !v->warm_cache;
        free(s);
        s = rc < 0 ? NULL : t;
    }
    return s;
}

/* "console=ttyS0 vcr.name=NAME vcr.ip=ADDR [vcr.gw=GW] [VOLUMES] [ARGS]": what lab/guest/init
 * reads. */
static char *kernel_cmdline(const struct vcr_vm_spec *spec)
{
    cleanup_free char *volumes = volume_cmdline(spec);
    if (volumes == NULL)
        return NULL;
    char *s = NULL;
    if (asprintf(&s, "console=ttyS0 vcr.name=%s vcr.ip=%s%s%s%s%s%s", spec->name, spec->address,
                 spec->gateway ? " vcr.gw=" : "", spec->gateway ? spec->gateway : "", volumes,
                 spec->kernel_args ? " " : "", spec->kernel_args ? spec->kernel_args : "") < 0)
        return NULL;
    return s;
}

/* ip= of the kernel's nfsroot syntax, which initramfs-tools and dracut read:
 * ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off */
static char *kernel_ip_arg(const struct vcr_vm_spec *spec)
{
    uint32_t mask = vcr_ipv4_prefix_mask(spec->prefix);
    char *s = NULL;
    if (asprintf(&s, " ip=%s::%s:%u.%u.%u.%u:%s:eth0:off", spec->ip,
                 spec->gateway ? spec->gateway : "", mask >> 24, (mask >> 16) & 0xff,
                 (mask >> 8) & 0xff, mask & 0xff, spec->name) < 0)
        return NULL;
    return s;
}

/* A disk-image VM booted by its kernel: "root=ROOT rw console=ttyS0
 * net.ifnames=0 [ip=...] [ARGS]"; nothing of the lab's vcr.* (the guest
 * carries no code of ours).  net.ifnames=0: the NIC is eth0, which ip= and
 * the NoCloud network-config name. */
static char *disk_kernel_cmdline(const struct vcr_vm_spec *spec)
{
    cleanup_free char *ip = spec->network == VCR_NET_KERNEL ? kernel_ip_arg(spec) : strdup("");
    if (ip == NULL)
        return NULL;
    char *s = NULL;
    if (asprintf(&s, "root=%s rw console=ttyS0 net.ifnames=0%s%s%s", spec->root, ip,
                 spec->kernel_args ? " " : "", spec->kernel_args ? spec->kernel_args : "") < 0)
        return NULL;
    return s;
}

struct argv_builder {
    char **v;
    size_t n, cap;
    bool oom;
};

static void add(struct argv_builder *b, char *s)
{
    if (s == NULL || b->oom) {
        b->oom = true;
        free(s);
        return;
    }
    if (b->n + 2 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char **v = realloc(b->v, cap * sizeof(*v));
        if (v == NULL) {
            b->oom = true;
            free(s);
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = s;
    b->v[b->n] = NULL;
}

__attribute__((format(printf, 2, 3))) static void addf(struct argv_builder *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    add(b, s);
}

static void add2(struct argv_builder *b, const char *opt, char *value)
{
    add(b, strdup(opt));
    add(b, value);
}

/* A writable -drive's file opened read-write once, at start, and kept so.
 * QEMU's default for -drive is auto-read-only=on: the file node is reopened
 * read-only when nothing writes it and read-write again when something does,
 * by name, with a new open(2).  A migration does both (the old QEMU makes its
 * images inactive as it completes, the new one makes them active), and under
 * -runas that open runs as qemu_user, who cannot reach STATE_DIR: the old
 * QEMU failed with "bdrv_inactivate_all() failed", the new one with "load of
 * migration failed: Input/output error" (docs/security.md, "Least
 * privilege").  Read-write from the start, the descriptor opened as root
 * serves both. */
#define DRIVE_KEEP_FD "file.auto-read-only=off"

/* Warm-cache volumes: virtio-pmem over their images mapped shared (a guest
 * flush is QEMU's fsync of the image), each in a memory hotplug slot;
 * others: virtio-blk over their images (LAB-NOTES "Warm cache"). */
static void add_volumes(struct argv_builder *b, const struct vm_launch *l)
{
    const struct vcr_vm_spec *s = l->spec;
    unsigned pmem = 0, blk = 0;
    for (size_t i = 0; i < s->n_volumes; i++) {
        const struct vcr_volume_spec *v = &s->volumes[i];
        if (v->warm_cache) {
            cleanup_free char *esc = qemu_escape(v->image);
            if (esc == NULL) {
                b->oom = true;
                return;
            }
            add(b, strdup("-object"));
            addf(b, "memory-backend-file,id=pm%u,share=on,mem-path=%s,size=%uM", pmem, esc,
                 v->size_mb);
            add(b, strdup("-device"));
            addf(b, "virtio-pmem-pci,memdev=pm%u,id=pmem%u", pmem, pmem);
            pmem++;
        } else {
            cleanup_free char *esc = qemu_escape(v->image);
            if (esc == NULL) {
                b->oom = true;
                return;
            }
            add(b, strdup("-drive"));
            addf(b, "file=%s,format=raw,if=none,id=blk%u,cache=%s," DRIVE_KEEP_FD, esc, blk,
                 vcr_volume_cache_name(v->cache));
            add(b, strdup("-device"));
            addf(b, "virtio-blk-pci,drive=blk%u,serial=%s", blk, v->name);
            blk++;
        }
    }
}

/* "-m" value: with virtio-pmem devices, room for them beside the RAM. */
static char *memory_option(const struct vcr_vm_spec *s)
{
    unsigned slots = 0, extra = 0;
    char *out = NULL;
    for (size_t i = 0; i < s->n_volumes; i++)
        if (s->volumes[i].warm_cache) {
            slots++;
            extra += s->volumes[i].size_mb;
        }
    if (slots == 0 ? asprintf(&out, "%uM", s->memory_mb) < 0
                   : asprintf(&out, "%uM,slots=%u,maxmem=%uM", s->memory_mb, slots,
                              s->memory_mb + extra) < 0)
        return NULL;
    return out;
}

char **vm_qemu_argv(const struct vm_launch *l, vcr_error_t *err)
{
    const struct vcr_vm_spec *s = l->spec;
    struct argv_builder b = {0};
    cleanup_free char *ram = qemu_escape(l->paths->ram);
    cleanup_free char *serial = qemu_escape(l->paths->serial);
    if (ram == NULL || serial == NULL)
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", s->name), NULL;

    add(&b, strdup(l->qemu));
    add2(&b, "-name", strdup(s->name));
    /* MTTCG only pays off with several vCPUs; single-threaded TCG is QEMU's default. */
    if (strcmp(l->accel, "tcg") == 0 && s->vcpus > 1)
        add2(&b, "-accel", strdup("tcg,thread=multi"));
    else
        add2(&b, "-accel", strdup(l->accel));
    /* All guest RAM in one shared file (and no VGA RAM outside it), so that a
     * warm restart can keep it: LAB-NOTES "Warm-VM restart". */
    add2(&b, "-machine", strdup("pc,memory-backend=mem"));
    add2(&b, "-m", memory_option(s));
    add(&b, strdup("-object"));
    addf(&b, "memory-backend-file,id=mem,size=%uM,mem-path=%s,share=on", s->memory_mb, ram);
    add(&b, strdup("-smp"));
    addf(&b, "%u", s->vcpus);
    if (s->disk) {
        /* The VM's own overlay, the first virtio disk: /dev/vda.  Its device is
         * named here, before the volumes' (QEMU creates -device devices in
         * command-line order, and an if=virtio drive only after all of them:
         * the root would come after the volumes).  The base below it is only
         * ever opened read-only by QEMU. */
        cleanup_free char *disk = qemu_escape(l->paths->disk);
        b.oom |= disk == NULL;
        add(&b, strdup("-drive"));
        addf(&b,
             "file=%s,if=none,id=disk0,format=qcow2,cache=writeback,discard=unmap," DRIVE_KEEP_FD,
             disk);
        add2(&b, "-device", strdup("virtio-blk-pci,drive=disk0"));
        if (s->kernel) {
            add2(&b, "-kernel", strdup(s->kernel));
            if (s->initrd)
                add2(&b, "-initrd", strdup(s->initrd));
            add2(&b, "-append", disk_kernel_cmdline(s));
        }
    } else if (s->kernel) {
        add2(&b, "-kernel", strdup(s->kernel));
        add2(&b, "-initrd", strdup(s->initrd));
        add2(&b, "-append", kernel_cmdline(s));
    }
    add_volumes(&b, l);
    if (s->disk && s->network == VCR_NET_NOCLOUD) {
        /* Last, so that data volumes keep their places after the root disk. */
        cleanup_free char *seed = qemu_escape(l->paths->seed);
        b.oom |= seed == NULL;
        add(&b, strdup("-drive"));
        addf(&b, "file=%s,if=none,id=seed,format=raw,readonly=on", seed);
        add2(&b, "-device", strdup("virtio-blk-pci,drive=seed"));
    }
    add(&b, strdup("-netdev"));
    if (l->tap_fd > 2)
        addf(&b, "tap,id=n0,fd=%d", l->tap_fd);
    else
        addf(&b, "tap,id=n0,ifname=%s,script=no,downscript=no", s->tap);
    add(&b, strdup("-device"));
    addf(&b, "virtio-net-pci,netdev=n0,mac=%s", s->mac);
    if (s->identity_ca) {
        /* The guest agent's TLS identity: files, not the kernel command line,
         * which any process in the guest can read (docs/security.md). */
        add(&b, strdup("-fw_cfg"));
        addf(&b, "name=" VCR_FWCFG_AGENT_CA ",file=%s", s->identity_ca);
        add(&b, strdup("-fw_cfg"));
        addf(&b, "name=" VCR_FWCFG_AGENT_CERT ",file=%s", s->identity_cert);
        add(&b, strdup("-fw_cfg"));
        addf(&b, "name=" VCR_FWCFG_AGENT_KEY ",file=%s", s->identity_key);
    }
    /* Lets a guest with the pvpanic driver report a panic (GUEST_PANICKED). */
    add2(&b, "-device", strdup("pvpanic"));
    add2(&b, "-vga", strdup("none"));
    add2(&b, "-display", strdup("none"));
    add(&b, strdup("-nodefaults"));
    add(&b, strdup("-no-user-config"));
    /* QEMU's own seccomp filter (docs/security.md, "Least privilege"): no
     * obsolete system calls, no set*uid/gid, no scheduler or affinity
     * changes.  Spawning stays allowed: a warm restart saves the state through
     * `migrate exec:cat > STATE` (docs/warm-restart.md). */
    if (l->runas) {
        /* QEMU 7.2 installs its filter before it drops to the user: with
         * elevateprivileges=deny its own setgid() is killed (SIGSYS).  Once
         * dropped it cannot become root again (every uid is the user's), and
         * the agent spawns it with no_new_privs (proc.h): nothing it execs
         * gains privileges either. */
        add2(&b, "-sandbox", strdup("on,obsolete=deny,resourcecontrol=deny"));
        add2(&b, "-runas", strdup(l->runas));
    } else {
        add2(&b, "-sandbox",
             strdup("on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"));
    }
    /* Appended to, never truncated by QEMU: during a warm restart the new
     * QEMU opens it while the old one still writes (a cold start empties it
     * first: host_vm_start). */
    add(&b, strdup("-chardev"));
    addf(&b, "file,id=serial0,path=%s,append=on", serial);
    add2(&b, "-serial", strdup("chardev:serial0"));
    add2(&b, "-qmp", vm_qmp_option(l->paths));
    /* A guest reboot ends the process: the agent, not QEMU, decides what happens next. */
    add(&b, strdup("-no-reboot"));
    add2(&b, "-pidfile", strdup(l->paths->pid));
    if (l->incoming)
        add2(&b, "-incoming", strdup("defer"));
    if (b.oom) {
        vm_argv_free(b.v);
        return vcr_error_make(err, ENOMEM, "VM `%s`: out of memory", s->name), NULL;
    }
    return b.v;
}

void vm_argv_free(char **argv)
{
    for (char **a = argv; a && *a; a++)
        free(*a);
    free(argv);
}

__attribute__((format(printf, 3, 4))) static bool set_state(struct vm_sm *sm, enum vm_state s,
                                                            const char *fmt, ...)
{
    sm->state = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sm->cause, sizeof(sm->cause), fmt, ap);
    va_end(ap);
    return true;
}

void vm_sm_init(struct vm_sm *sm, const char *cause)
{
    memset(sm, 0, sizeof(*sm));
    set_state(sm, VM_STATE_STOPPED, "%s", cause);
}

bool vm_sm_preparing(struct vm_sm *sm, const char *cause)
{
    sm->guest_shutdown = false;
    sm->stop_ordered = false;
    sm->shutdown_reason[0] = '\0';
    return set_state(sm, VM_STATE_STARTING, "%s", cause);
}

bool vm_sm_unstarted(struct vm_sm *sm, const char *cause)
{
    return set_state(sm, VM_STATE_STOPPED, "%s", cause);
}

bool vm_sm_starting(struct vm_sm *sm, const char *cause)
{
    sm->guest_shutdown = false;
    sm->stop_ordered = false;
    sm->shutdown_reason[0] = '\0';
    sm->boots++;
    return set_state(sm, VM_STATE_STARTING, "%s", cause);
}

bool vm_sm_qmp_status(struct vm_sm *sm, const char *status)
{
    if (sm->state != VM_STATE_STARTING)
        return false;
    if (strcmp(status, "running") == 0)
        return set_state(sm, VM_STATE_RUNNING, "qmp ready");
    if (strcmp(status, "guest-panicked") == 0)
        return set_state(sm, VM_STATE_PANICKED, "qmp status guest-panicked");
    return set_state(sm, VM_STATE_PAUSED, "qmp status %s", status);
}

bool vm_sm_qmp_event(struct vm_sm *sm, const char *name, json_t *data)
{
    /* During a warm restart STOP, SHUTDOWN (quit) and RESUME are ours. */
    if (!vm_state_is_live(sm->state) || sm->state == VM_STATE_RESTARTING)
        return false;
    if (strcmp(name, "SHUTDOWN") == 0) {
        /* Not a state change yet: the process exit decides (vm_sm_exited). */
        if (json_is_true(json_object_get(data, "guest")))
            sm->guest_shutdown = true;
        const char *reason = json_string_value(json_object_get(data, "reason"));
        snprintf(sm->shutdown_reason, sizeof(sm->shutdown_reason), "%s",
                 reason ? reason : (sm->guest_shutdown ? "guest" : "host"));
        return false;
    }
    if (strcmp(name, "GUEST_PANICKED") == 0) {
        const char *action = json_string_value(json_object_get(data, "action"));
        return set_state(sm, VM_STATE_PANICKED, "qmp GUEST_PANICKED%s%s", action ? " " : "",
                         action ? action : "");
    }
    if (strcmp(name, "RESET") == 0) {
        bool guest = json_is_true(json_object_get(data, "guest"));
        sm->boots++;
        return set_state(sm, sm->state, "qmp RESET (%s)", guest ? "guest" : "host");
    }
    if (strcmp(name, "STOP") == 0 && sm->state == VM_STATE_RUNNING)
        return set_state(sm, VM_STATE_PAUSED, "qmp STOP");
    if (strcmp(name, "RESUME") == 0 && sm->state != VM_STATE_RUNNING)
        return set_state(sm, VM_STATE_RUNNING, "qmp RESUME");
    return false;
}

void vm_sm_stop_ordered(struct vm_sm *sm)
{
    sm->stop_ordered = true;
}

void vm_exit_cause(bool have_status, int wstatus, char *out, size_t size)
{
    if (!have_status)
        snprintf(out, size, "qemu exited (status unknown: not our child)");
    else if (WIFSIGNALED(wstatus))
        snprintf(out, size, "qemu killed by signal %d", WTERMSIG(wstatus));
    else
        snprintf(out, size, "qemu exited with status %d", WEXITSTATUS(wstatus));
}

bool vm_sm_exited(struct vm_sm *sm, bool have_status, int wstatus, const char *detail)
{
    char how[128];
    vm_exit_cause(have_status, wstatus, how, sizeof(how));
    bool clean = !have_status || (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    switch (sm->state) {
    case VM_STATE_STARTING:
        if (sm->stop_ordered)
            return set_state(sm, VM_STATE_STOPPED, "stopped on order while starting (%s)", how);
        return set_state(sm, VM_STATE_FAILED, "%s before QMP was ready%s%s", how,
                         detail ? ": " : "", detail ? detail : "");
    case VM_STATE_RUNNING:
    case VM_STATE_PAUSED:
        break;
    case VM_STATE_PANICKED: {
        /* Reported too: an order to fence a panicked VM waits for this. */
        if (sm->stop_ordered)
            return set_state(sm, VM_STATE_STOPPED, "stopped on order after a guest panic (%s)",
                             how);
        char panic[VM_CAUSE_MAX / 2];
        snprintf(panic, sizeof(panic), "%.*s", (int)sizeof(panic) - 1, sm->cause);
        return set_state(sm, VM_STATE_PANICKED, "%s, then %s", panic, how);
    }
    case VM_STATE_RESTARTING:
        return false; /* the old QEMU leaves on purpose: not a crash */
    default:
        return false; /* no process in these states */
    }
    if (sm->stop_ordered)
        return set_state(sm, VM_STATE_STOPPED, "stopped on order (%s%s)",
                         sm->guest_shutdown ? "guest powered off, " : "", how);
    if (sm->guest_shutdown)
        return set_state(sm, VM_STATE_SHUTDOWN, "qmp SHUTDOWN (guest%s%s)%s%s",
                         strcmp(sm->shutdown_reason, "guest-shutdown") == 0 ? "" : ": ",
                         strcmp(sm->shutdown_reason, "guest-shutdown") == 0 ? ""
                                                                            : sm->shutdown_reason,
                         clean ? "" : ", then ", clean ? "" : how);
    if (sm->shutdown_reason[0])
        return set_state(sm, VM_STATE_CRASHED, "%s after qmp SHUTDOWN (%s)", how,
                         sm->shutdown_reason);
    return set_state(sm, VM_STATE_CRASHED, "%s", how);
}

bool vm_sm_ended_unobserved(struct vm_sm *sm, const char *cause)
{
    return set_state(sm, VM_STATE_CRASHED, "%s", cause);
}

bool vm_sm_failed(struct vm_sm *sm, const char *cause)
{
    return set_state(sm, VM_STATE_FAILED, "%s", cause);
}

bool vm_sm_restarting(struct vm_sm *sm, const char *cause)
{
    sm->guest_shutdown = false;
    sm->stop_ordered = false;
    sm->shutdown_reason[0] = '\0';
    return set_state(sm, VM_STATE_RESTARTING, "%s", cause);
}

bool vm_sm_restarted(struct vm_sm *sm, const char *cause)
{
    sm->guest_shutdown = false;
    sm->stop_ordered = false;
    sm->shutdown_reason[0] = '\0';
    return set_state(sm, VM_STATE_RUNNING, "%s", cause);
}
