/* The `standby` role (docs/agent.md): LXC containers inside a standby VM.
 *
 * Split so that the pure parts build and test without liblxc:
 * - standby_spec.c: a container order's members -> struct standby_ct_spec,
 *   and the LXC configuration items built for it (unit tested);
 * - standby_load.c: /proc/stat, /proc/meminfo and cgroup v1 file parsing;
 * - standby_containers.c, standby_role.c, standby_work.c (the orders' work in
 *   a child process): liblxc calls and the role ops, built
 *   only when Meson finds liblxc (`dependency('lxc')`). */
#ifndef VCR_AGENT_STANDBY_H
#define VCR_AGENT_STANDBY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define STANDBY_LXCPATH "/var/lib/lxc"
/* A container's read-only lower dir lives under LIB_DIR (this, or a test's):
 * a template baked into the standby image at LIB_DIR/templates/NAME, or an
 * image the server delivered, unpacked at LIB_DIR/images/SHA256.rootfs
 * (standby_image.c). */
#define STANDBY_LIB_DIR "/var/lib/vcr"
/* CRIU's options for the agent's CRIU runs (CRIU_CONFIG_FILE; standby_role.c):
 * on tmpfs, as CRIU's own kernel feature cache, for this boot's kernel. */
#define STANDBY_CRIU_CONF     "/run/vcr-criu.conf"
#define STANDBY_TEMPLATES_SUB "templates"
#define STANDBY_IMAGES_SUB    "images"
#define STANDBY_TEMPLATE_DEF  "busybox"
/* PID 1 of every container: the template's start script, which serves the
 * service name (from VCR_SERVICE) on port 80 (lab/build-image sb_template). */
#define STANDBY_INIT_CMD "/start"
/* PID 1 of a container made from an image with a `cmd`: a script the agent
 * writes into the container's own overlay layer, `exec CMD` under the image's
 * /bin/sh.  LXC splits lxc.init.cmd at spaces without quoting, while image
 * commands are shell lines (`nginx -g 'daemon off;'`); a file in the upper
 * dir also survives stop/start, agent restarts and CRIU migration (delta/). */
#define STANDBY_IMAGE_INIT "/.vcr-init"

/* Unprivileged containers (the default, `privileged: false`, docs/security.md "Standby
 * containers"): uids and gids 0..65535 of the container are the VM's
 * STANDBY_IDMAP_BASE.. (lxc.idmap), its lower dir is a copy of the template or
 * image with every owner moved up by that much, made once under
 * LIB_DIR/STANDBY_SHIFTED_SUB (the 6.1 kernel cannot idmap-mount the busybox
 * VM's tmpfs, and LXC maps only what is on disk), these capabilities are
 * dropped and LXC's own deny list (kexec_load, open_by_handle_at,
 * init_module, finit_module, delete_module) is its seccomp filter. */
#define STANDBY_IDMAP_BASE      100000u
#define STANDBY_IDMAP_COUNT     65536u
#define STANDBY_SHIFTED_SUB     "shifted"
#define STANDBY_CAP_DROP        "mac_admin mac_override sys_admin sys_boot sys_module sys_rawio sys_time"
#define STANDBY_SECCOMP_PROFILE "/usr/share/lxc/config/common.seccomp"

/* A container image (docs/protocol.md, container orders' `image`). */
struct standby_image_ref {
    char name[65];   /* for messages */
    char sha256[65]; /* lower-case hex: the cache's key, and what the bytes must hash to */
    char url[256];   /* http://HOST:PORT/PATH (plain HTTP, the server's image listener) */
    char cmd[256];   /* PID 1, a shell command line (STANDBY_IMAGE_INIT); "": STANDBY_INIT_CMD */
};

struct standby_ct_spec {
    char name[65];     /* container name: 1..64 of letters, digits, . _ - */
    char service[65];  /* the protected service; VCR_SERVICE in the container */
    char address[16];  /* dotted quad */
    int prefix;        /* 1..32 */
    char gateway[16];  /* dotted quad, or "" for none */
    char address6[46]; /* an IPv6 address too, or "" for none */
    int prefix6;       /* 1..128 */
    char template[65]; /* a directory name under LIB_DIR/templates (no image) */
    bool has_image;    /* made from image, not from template */
    struct standby_image_ref image;
    bool unprivileged; /* `privileged: false`: user namespace, caps dropped, seccomp */
};

/* From a container_create order (borrowed): name (or vm), service, address
 * ("A.B.C.D" or "A.B.C.D/NN"), prefix?, gateway?, template? or image?
 * ({name, sha256, url, cmd?}), privileged? (false when absent:
 * unprivileged).  *err names
 * the bad member and value. */
int standby_ct_spec_from_json(json_t *msg, struct standby_ct_spec *spec, vcr_error_t *err);
bool standby_valid_name(const char *s);

/* Where a container lives under lxcpath: DIR/NAME/{config,rootfs,delta,work}. */
struct standby_ct_paths {
    char dir[256];
    char rootfs[272];
    char delta[272];
    char work[272];
    char lower[272];  /* the overlay's read-only lower dir: source, or its shifted copy */
    char source[272]; /* the template or image as shared by every privileged container */
};
/* lib_dir: STANDBY_LIB_DIR (or a test's), where the lower dirs are. */
int standby_ct_paths(const char *lxcpath, const char *lib_dir, const struct standby_ct_spec *spec,
                     struct standby_ct_paths *p, vcr_error_t *err);

/* One LXC configuration item (lxc_container::set_config_item). */
struct standby_cfg_item {
    const char *key;
    char value[300];
};
#define STANDBY_CFG_MAX 32

/* The items that make spec a container: its own overlay rootfs directory
 * (mounted by us: LXC 5.0.2 cannot restore an `overlay:` rootfs), a veth on
 * br0 with a MAC derived from the address, the static address and gateway,
 * lxc.init.cmd (lxc-start semantics, checkpointable), VCR_SERVICE.  Returns
 * the number of items written to items[STANDBY_CFG_MAX]. */
/* The STANDBY_IMAGE_INIT script for cmd: "#!/bin/sh\nexec CMD\n". */
int standby_image_init_script(const char *cmd, char *out, size_t size);
size_t standby_ct_config(const struct standby_ct_spec *spec, const struct standby_ct_paths *paths,
                         struct standby_cfg_item *items);
/* 02:00 followed by the address's four bytes: stable across re-creations, so
 * that the lab's ARP caches stay right when a container comes back. */
void standby_mac_for(const char *address, char mac[18]);

/* --- container images (standby_image.c; docs/agent.md "Container images") --- */

/* What standby_image_ensure did, for the order's reply. */
struct standby_image_result {
    bool cached;         /* the unpacked rootfs was there: nothing fetched, nothing unpacked */
    bool fetched;        /* downloaded now (else a cached, verified tarball was used) */
    uint64_t bytes;      /* the tarball's size */
    int64_t download_ms; /* HTTP GET into the cache's temporary file */
    int64_t verify_ms;   /* its SHA-256 */
    int64_t unpack_ms;   /* tar -xzf */
};
/* Makes IMAGES_DIR/SHA256.rootfs, the image's unpacked rootfs, once:
 * - there already: nothing to do (cached);
 * - else IMAGES_DIR/SHA256.tar.gz (kept once verified) or, if absent, a
 *   download of img->url through SHA256.tar.gz.tmp, checked against
 *   img->sha256 and renamed; a mismatch removes the file and fails with status
 *   PROTO_STATUS_IMAGE_CHECKSUM (proto_code.h), naming the image and both sums;
 * - then GNU tar unpacks it into SHA256.rootfs.tmp, renamed when complete.
 * Blocking (seconds to minutes): run it in a standby_job child.  Jobs for the
 * same image wait for each other (flock of SHA256.lock). */
int standby_image_ensure(const char *images_dir, const struct standby_image_ref *img,
                         struct standby_image_result *res, vcr_error_t *err);
/* An image the cache keeps when pruned, and why (for the reply). */
struct standby_image_keep {
    char sha256[65];
    char why[96]; /* "configured for service S" (the server's list) */
};
/* Prunes the image cache (docs/agent.md, "Container images"): removes every
 * image of images_dir (SHA256.tar.gz, SHA256.rootfs, their .tmp leftovers,
 * SHA256.lock) whose SHA-256 is not in keep[0..n), whose rootfs is not the
 * lower dir of an overlay listed in mountinfo (a container made from it: its
 * overlay stays mounted from create to destroy, also across agent restarts),
 * and whose lock is free (a download under way); its copy for unprivileged
 * containers (IMAGES_DIR/../shifted/images/SHA256.rootfs) counts as its rootfs
 * and goes with it.
 * Other files are left alone.  Returns {removed: [{sha256, bytes}], kept:
 * [{sha256, why}], freed_bytes} (bytes: the tarball's), or NULL with *err. */
json_t *standby_image_prune(const char *images_dir, const struct standby_image_keep *keep, size_t n,
                            const char *mountinfo, vcr_error_t *err);
/* IMAGES_DIR/SHA256.rootfs into out. */
int standby_image_rootfs(const char *images_dir, const char *sha256, char *out, size_t size);
/* http://A.B.C.D[:PORT]/PATH: host (an IPv4 address: the server sends its
 * images_listen address; no resolver is needed in the VM), port (80 when
 * absent), path (starting with '/'). */
int standby_url_parse(const char *url, char *host, size_t host_size, uint16_t *port, char *path,
                      size_t path_size, vcr_error_t *err);
/* An HTTP/1.x response's status line and headers (head: NUL-terminated, up
 * to the blank line): its status (100..999) and Content-Length (-1 when
 * absent).  Untrusted input: tests/fuzz/fuzz_http_head.c. */
struct standby_http_head {
    int status;
    long long length;
};
int standby_http_parse_head(const char *head, struct standby_http_head *h, vcr_error_t *err);
/* GET url (HTTP/1.0, blocking, bounded by timeouts) into a new file at path;
 * *bytes: the body's size.  A status other than 200 fails, quoting the
 * server's answer (404: ENOENT). */
int standby_http_fetch(const char *url, const char *path, uint64_t *bytes, vcr_error_t *err);
/* Makes shifted, a copy of source (cp -a) whose owners in 0..count are moved
 * up by base (set-ID bits kept), once: an existing shifted is taken as it is;
 * jobs for the same copy wait for each other (flock of SHIFTED.lock).
 * Blocking: run it in a standby_job child (standby_shift.c). */
int standby_shift_tree(const char *source, const char *shifted, unsigned base, unsigned count,
                       vcr_error_t *err);
/* In place, below dir (one file system, links not followed): owners (uid and
 * gid each) in from..from+count-1 become to..to+count-1; others are left. */
int standby_map_owners(const char *dir, unsigned from, unsigned to, unsigned count,
                       vcr_error_t *err);
/* The CRIU images an unprivileged container is restored from (images: the
 * unpacked final/, its owners already the container's root's): final/
 * searchable (o+x) and every timens-N.img readable (o+r) by anyone.  CRIU's
 * root task reads timens-N.img as soon as it is in the new user namespace,
 * before its parent has written the uid map (cr-restore.c,
 * restore_task_with_children): then it still has init's uid 0 and no
 * capability over a file of an unmapped owner, and the restore failed with
 * "Unable to open timens-0.img: Permission denied" when it won that race.
 * The tree above final/ stays 0700, root's: nothing else reaches them. */
int standby_images_for_userns(const char *images, vcr_error_t *err);
/* fn on every KIND-N.img entry of the images dir open as dfd (N: one
 * character or more), until one fails (its result); standby_shift.c. */
int standby_images_each(int dfd, const char *images, const char *kind,
                        int (*fn)(int dfd, const char *images, const char *name, vcr_error_t *err),
                        vcr_error_t *err);
/* standby_nft.c: CRIU 3.17's nftables lock tables (`table inet CRIU-PID {`
 * .. `}`) out of the ruleset text (returns the new length; text is edited in
 * place), and out of every nftables-N.img of an unpacked images dir, before
 * a restore (see the file). */
size_t standby_nft_drop_lock_tables(char *text, size_t len);
int standby_images_drop_nft_lock(const char *images, vcr_error_t *err);
/* Runs argv (PATH lookup) and waits; on failure *err quotes its stderr. */
int standby_run_program(char *const argv[], vcr_error_t *err);
/* GNU tar: the standby image has it at /bin/tar (lab/build-image), where
 * Debian has it too; busybox's applet, which a PATH lookup could find first,
 * lacks --xattrs. */
#define STANDBY_TAR "/bin/tar"
/* The migration archives' options, packing and unpacking: xattrs (the
 * overlay's upper dir marks opaque directories with trusted.overlay.opaque),
 * owners as numbers (they are the container's, not this VM's names). */
#define STANDBY_TAR_OPTIONS "--xattrs", "--xattrs-include=*", "--numeric-owner"

/* --- load (standby_load.c) --- */

struct standby_cpu_times {
    uint64_t total; /* jiffies, every field of the `cpu` line */
    uint64_t idle;  /* idle + iowait */
};
/* The aggregate `cpu` line of /proc/stat; *ncpus counts the cpuN lines. */
int standby_parse_proc_stat(const char *text, struct standby_cpu_times *t, int *ncpus,
                            vcr_error_t *err);
/* What a container's init runs with, as the VM sees it (/proc/PID). */
struct standby_isolation {
    char uid_map[64]; /* uid_map's first line, "0 100000 65536" ("0 0 4294967295": the VM's root) */
    char cap_eff[17]; /* CapEff of status, hex */
    int seccomp;      /* Seccomp of status: 0 off, 2 a filter */
};
/* From the text of /proc/PID/status and /proc/PID/uid_map. */
int standby_parse_isolation(const char *status, const char *uid_map, struct standby_isolation *iso,
                            vcr_error_t *err);
/* MemTotal and MemAvailable of /proc/meminfo, in kB. */
int standby_parse_meminfo(const char *text, int64_t *total_kb, int64_t *avail_kb, vcr_error_t *err);
/* A cgroup v1 counter file (cpuacct.usage, memory.usage_in_bytes): one
 * unsigned decimal, optional trailing newline. */
int standby_parse_counter(const char *text, uint64_t *value, vcr_error_t *err);
/* Busy share of all CPUs between two /proc/stat readings, 0..100. */
double standby_vm_cpu_pct(const struct standby_cpu_times *prev,
                          const struct standby_cpu_times *cur);
/* Percent of one CPU used by a cgroup whose cpuacct.usage went from prev_ns
 * to cur_ns over wall_ns nanoseconds (a counter that went back gives 0). */
double standby_ct_cpu_pct(uint64_t prev_ns, uint64_t cur_ns, uint64_t wall_ns);
/* Reads a small file (/proc, cgroup) into buf, NUL-terminated. */
int standby_read_file(const char *path, char *buf, size_t size, vcr_error_t *err);

#endif
