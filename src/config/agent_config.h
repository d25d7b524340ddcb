/* The vcr-agent configuration file (YAML, docs/config-vm.md), loaded through a
 * libcyaml schema and validated into a plain struct: every bad field is
 * reported with its path ("vms[1].mac"), its value and what is allowed. */
#ifndef VCR_CONFIG_AGENT_CONFIG_H
#define VCR_CONFIG_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "config/vm_spec.h"

#define VCR_SAMPLE_INTERVAL_MS_MIN 100
#define VCR_SAMPLE_INTERVAL_MS_MAX 60000
#define VCR_SAMPLE_INTERVAL_MS_DEF 1000
#define VCR_PROBE_DEADLINE_MS_MIN  1000
#define VCR_PROBE_DEADLINE_MS_MAX  600000
#define VCR_PROBE_DEADLINE_MS_DEF  20000
#define VCR_QEMU_DEF               "/usr/bin/qemu-system-x86_64"
#define VCR_QEMU_IMG_DEF           "/usr/bin/qemu-img"
#define VCR_GENISOIMAGE_DEF        "/usr/bin/genisoimage"
#define VCR_VMS_MAX                256
#define VCR_QEMU_ALLOWED_MAX       64
/* Servers an agent may know (`server:` as a list, docs/ha.md). */
#define AGENT_SERVERS_MAX 16
#define VCR_RAM_DIR_DEF   "/dev/shm"
/* The user QEMU runs as by default (`qemu_user`); the package and the lab make it. */
#define VCR_QEMU_USER_DEF "vcr-qemu"

/* Self-fencing (docs/fencing.md): 0 turns it off. */
#define VCR_FENCE_TIMEOUT_MS_MIN 1000
#define VCR_FENCE_TIMEOUT_MS_MAX 600000
#define VCR_FENCE_TIMEOUT_MS_DEF 10000

enum vcr_accel_mode {
    VCR_ACCEL_AUTO,
    VCR_ACCEL_KVM,
    VCR_ACCEL_TCG,
};

const char *vcr_accel_mode_name(enum vcr_accel_mode mode);

struct vcr_agent_config {
    char *path; /* the file it was loaded from */
    char *host;
    /* "HOST:PORT", or several joined by commas (`server:` as a list: redundant
     * servers, docs/ha.md). */
    char *server;
    char *state_dir;
    /* Directory of the VMs' RAM files: on tmpfs or hugetlbfs (checked at agent
     * start, src/agent/host/ram_dir.h). */
    char *ram_dir;
    enum vcr_accel_mode accel;
    char *qemu;
    /* `qemu_user`: QEMU drops to this user (`-runas`) once it has opened its
     * files; "root": it stays root.  Its ids (0 for root, or without VMs). */
    char *qemu_user;
    uid_t qemu_uid;
    gid_t qemu_gid;
    /* `qemu_allowed`: the only QEMU binaries a warm restart may run (absolute,
     * checked executable); none: the agent's default (src/agent/host/qemu_allow.h). */
    char **qemu_allowed;
    size_t n_qemu_allowed;
    /* Only when a VM has a disk (qemu_img) or a NoCloud seed (genisoimage): NULL otherwise. */
    char *qemu_img;
    char *genisoimage;
    uint32_t sample_interval_ms;
    /* Probe guest for accel auto; all NULL/0 when not configured. */
    char *probe_kernel;
    char *probe_initrd;
    uint32_t probe_deadline_ms;
    char *agent_key_file; /* NULL when not configured */
    /* The server link's TLS (docs/security.md): all three set unless insecure. */
    char *tls_ca_file;
    char *tls_cert_file;
    char *tls_key_file;
    char *tls_server_name; /* the name the server's certificate must show; NULL: server's host */
    bool insecure;         /* `insecure: true`: plain TCP, a warning at every start */
    /* Kill this host's VMs after this long without server contact; 0: off. */
    uint32_t fence_timeout_ms;
    struct vcr_vm_spec *vms;
    size_t n_vms;
    /* `libvirt: {uri, domains}` (the libvirt role, docs/agent.md): NULL/0 when absent. */
    char *libvirt_uri;
    char **libvirt_domains;
    size_t n_libvirt_domains;
};

/* Relative paths in the file are taken from the file's directory. */
struct vcr_agent_config *vcr_agent_config_load(const char *path, vcr_error_t *err);
/* The same from memory: path names the text in messages and is kept as
 * cfg->path; relative paths are taken from base_dir. */
struct vcr_agent_config *vcr_agent_config_parse(const char *yaml, size_t len, const char *path,
                                                const char *base_dir, vcr_error_t *err);
void vcr_agent_config_free(struct vcr_agent_config *cfg);

#endif
