/* The agent configuration: top-level schema, cross-VM checks (unique names,
 * MACs, taps, addresses) and conversion to struct vcr_agent_config. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "config/agent_config.h"
#include "config/config_internal.h"

struct raw_probe {
    char *kernel;
    char *initrd;
    char *deadline_ms;
};

struct raw_libvirt {
    char *uri;
    char **domains;
    unsigned domains_count;
};

struct raw_agent {
    char *host;
    char *server;
    /* `server:` as a list (redundant servers, docs/ha.md): agent_list_schema. */
    char **servers;
    unsigned servers_count;
    char *state_dir;
    char *ram_dir;
    char *accel;
    char *qemu;
    char *qemu_user;
    char **qemu_allowed;
    unsigned qemu_allowed_count;
    char *qemu_img;
    char *genisoimage;
    char *sample_interval_ms;
    struct raw_probe *probe;
    char *agent_key_file;
    char *tls_ca_file;
    char *tls_cert_file;
    char *tls_key_file;
    char *tls_server_name;
    char *insecure;
    char *fence_timeout_ms;
    struct raw_vm *vms;
    unsigned vms_count;
    struct raw_libvirt *libvirt;
};

static const cyaml_schema_field_t probe_fields[] = {
    CYAML_FIELD_STRING_PTR("kernel", CYAML_FLAG_POINTER, struct raw_probe, kernel, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("initrd", CYAML_FLAG_POINTER, struct raw_probe, initrd, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("deadline_ms", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           struct raw_probe, deadline_ms, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t path_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t libvirt_fields[] = {
    CYAML_FIELD_STRING_PTR("uri", CYAML_FLAG_POINTER, struct raw_libvirt, uri, 1, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("domains", CYAML_FLAG_POINTER, struct raw_libvirt, domains, &path_schema,
                         1, VCR_VMS_MAX),
    CYAML_FIELD_END,
};
#define LIBVIRT_FIELD                                                                              \
    CYAML_FIELD_MAPPING_PTR("libvirt", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_agent, \
                            libvirt, libvirt_fields)

#define OPTIONAL_STRING(key)                                                                       \
    CYAML_FIELD_STRING_PTR(#key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_agent, key,  \
                           0, CYAML_UNLIMITED)
#define REQUIRED_STRING(key)                                                                       \
    CYAML_FIELD_STRING_PTR(#key, CYAML_FLAG_POINTER, struct raw_agent, key, 0, CYAML_UNLIMITED)

static const cyaml_schema_value_t server_entry_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

/* The fields of both schemas, which differ only in `server`: libcyaml has no "a string or a list",
 * so a file is read with the first and, when that fails, with the second. */
#define AGENT_FIELDS(server_field)                                                                 \
    REQUIRED_STRING(host), server_field, REQUIRED_STRING(state_dir), OPTIONAL_STRING(ram_dir),     \
        OPTIONAL_STRING(accel), OPTIONAL_STRING(qemu), OPTIONAL_STRING(qemu_user),                 \
        CYAML_FIELD_SEQUENCE("qemu_allowed", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,             \
                             struct raw_agent, qemu_allowed, &path_schema, 1,                      \
                             VCR_QEMU_ALLOWED_MAX),                                                \
        OPTIONAL_STRING(qemu_img), OPTIONAL_STRING(genisoimage),                                   \
        OPTIONAL_STRING(sample_interval_ms),                                                       \
        CYAML_FIELD_MAPPING_PTR("probe", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,                 \
                                struct raw_agent, probe, probe_fields),                            \
        OPTIONAL_STRING(agent_key_file), OPTIONAL_STRING(tls_ca_file),                             \
        OPTIONAL_STRING(tls_cert_file), OPTIONAL_STRING(tls_key_file),                             \
        OPTIONAL_STRING(tls_server_name), OPTIONAL_STRING(insecure),                               \
        OPTIONAL_STRING(fence_timeout_ms),                                                         \
        CYAML_FIELD_SEQUENCE("vms", CYAML_FLAG_POINTER_NULL | CYAML_FLAG_OPTIONAL,                 \
                             struct raw_agent, vms, &vm_spec_raw_schema, 0, VCR_VMS_MAX),          \
        LIBVIRT_FIELD, CYAML_FIELD_END

static const cyaml_schema_field_t agent_list_fields[] = {
    AGENT_FIELDS(CYAML_FIELD_SEQUENCE("server", CYAML_FLAG_POINTER, struct raw_agent, servers,
                                      &server_entry_schema, 1, AGENT_SERVERS_MAX)),
};

static const cyaml_schema_value_t agent_list_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_agent, agent_list_fields),
};

/* POINTER_NULL on `vms`: a bare "vms:" (no entries) is an empty list, not an error. */
static const cyaml_schema_field_t agent_fields[] = {
    AGENT_FIELDS(REQUIRED_STRING(server)),
};

static const cyaml_schema_value_t agent_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_agent, agent_fields),
};

#define STR(x)  #x
#define XSTR(x) STR(x)
/* For "missing" messages: what each required key takes. */
static const struct config_allowed agent_allowed[] = {
    {"host", "a name of 1 to 32 characters of a-z, 0-9, -"},
    {"server", "HOST:PORT, e.g. 10.77.0.1:7070, or a list of them (redundant servers)"},
    {"state_dir", "an absolute directory path"},
    {"name", "a name of 1 to 32 characters of a-z, 0-9, -"},
    {"memory_mb", "an integer " XSTR(VCR_VM_MEMORY_MB_MIN) ".." XSTR(VCR_VM_MEMORY_MB_MAX)},
    {"image", "a mapping {kernel: PATH, initrd: PATH} or {disk: PATH[, format, kernel, initrd, "
              "root]}"},
    {"kernel", "a path to a readable file"},
    {"initrd", "a path to a readable file"},
    {"disk", "a path to a raw or qcow2 disk image"},
    {"format", "raw or qcow2"},
    {"network", "nocloud, kernel or image"},
    {"mac", "a unicast MAC, e.g. 52:54:00:77:00:11"},
    {"tap", "a network interface name, e.g. tap0"},
    {"address", "IPv4/prefix, e.g. 10.77.0.11/24"},
    {NULL, NULL},
};

static const char *const accel_names[] = {
    [VCR_ACCEL_AUTO] = "auto",
    [VCR_ACCEL_KVM] = "kvm",
    [VCR_ACCEL_TCG] = "tcg",
};

const char *vcr_accel_mode_name(enum vcr_accel_mode mode)
{
    return (unsigned)mode < sizeof(accel_names) / sizeof(accel_names[0]) ? accel_names[mode] : "?";
}

void vcr_agent_config_free(struct vcr_agent_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_vms; i++)
        vcr_vm_spec_clear(&cfg->vms[i]);
    free(cfg->vms);
    for (size_t i = 0; i < cfg->n_libvirt_domains; i++)
        free(cfg->libvirt_domains[i]);
    free(cfg->libvirt_domains);
    free(cfg->libvirt_uri);
    free(cfg->path);
    free(cfg->host);
    free(cfg->server);
    free(cfg->state_dir);
    free(cfg->ram_dir);
    free(cfg->qemu);
    free(cfg->qemu_user);
    for (size_t i = 0; i < cfg->n_qemu_allowed; i++)
        free(cfg->qemu_allowed[i]);
    free(cfg->qemu_allowed);
    free(cfg->qemu_img);
    free(cfg->genisoimage);
    free(cfg->probe_kernel);
    free(cfg->probe_initrd);
    free(cfg->agent_key_file);
    free(cfg->tls_ca_file);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    free(cfg->tls_server_name);
    free(cfg);
}

/* TLS is required unless the file says `insecure: true` (docs/security.md);
 * the files' contents are checked when the agent builds its TLS context. */
static void convert_tls(struct config_report *r, const struct raw_agent *raw, const char *base_dir,
                        struct vcr_agent_config *cfg)
{
    if (raw->insecure)
        config_parse_bool(r, "insecure", raw->insecure, &cfg->insecure);
    if (cfg->insecure) {
        if (raw->tls_ca_file || raw->tls_cert_file || raw->tls_key_file || raw->tls_server_name)
            config_report_add(r, "insecure",
                              "true while tls_* keys are set; allowed: either TLS (tls_ca_file, "
                              "tls_cert_file, tls_key_file) or `insecure: true`");
        return;
    }
    /* None of them: the agent refuses to start (agent.c load_tls), which
     * --config-test reports too; configs made for tests need no certificates. */
    if (!raw->tls_ca_file && !raw->tls_cert_file && !raw->tls_key_file)
        return;
    static const char *const missing =
        "missing; the server link needs TLS: tls_ca_file, tls_cert_file, tls_key_file (`vcr "
        "pki`), or `insecure: true`";
    struct {
        const char *key, *value;
        char **out;
    } files[] = {
        {"tls_ca_file", raw->tls_ca_file, &cfg->tls_ca_file},
        {"tls_cert_file", raw->tls_cert_file, &cfg->tls_cert_file},
        {"tls_key_file", raw->tls_key_file, &cfg->tls_key_file},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if (files[i].value)
            config_check_file(r, files[i].key, files[i].value, base_dir, false, files[i].out);
        else
            config_report_add(r, files[i].key, "%s", missing);
    }
    if (raw->tls_server_name && !vcr_cert_name_is_valid(raw->tls_server_name))
        config_report_add(r, "tls_server_name",
                          "`%s` is not valid; allowed: a DNS name of a-z, 0-9, '-' and '.', or "
                          "an IPv4 address",
                          raw->tls_server_name);
    else if (raw->tls_server_name)
        cfg->tls_server_name = strdup(raw->tls_server_name);
}

static bool check_server(struct config_report *r, const char *value)
{
    cleanup_free char *host = NULL;
    cleanup_error vcr_error_t err = NULL;
    uint16_t port;
    if (vcr_parse_host_port(value, &host, &port, &err) == 0)
        return true;
    config_report_add(r, "server",
                      "`%s` is not valid (%s); allowed: HOST:PORT with an IPv4 address or host "
                      "name, or [IPV6]:PORT, and a port 1..65535, e.g. 10.77.0.1:7070 or "
                      "[fd77::1]:7070",
                      value, vcr_error_msg(err));
    return false;
}

static bool parse_accel(struct config_report *r, const char *value, enum vcr_accel_mode *out)
{
    for (unsigned i = 0; i < sizeof(accel_names) / sizeof(accel_names[0]); i++)
        if (strcmp(value, accel_names[i]) == 0) {
            *out = (enum vcr_accel_mode)i;
            return true;
        }
    config_report_add(r, "accel", "`%s` is not valid; allowed: auto, kvm, tcg", value);
    return false;
}

/* Two VMs sharing a name, MAC, tap or address would fight over the same
 * resource at run time; catch it here, naming both entries. */
static void check_unique(struct config_report *r, const struct vcr_agent_config *cfg)
{
    static const struct {
        const char *key;
        size_t offset;
    } keys[] = {
        {"name", offsetof(struct vcr_vm_spec, name)},
        {"mac", offsetof(struct vcr_vm_spec, mac)},
        {"tap", offsetof(struct vcr_vm_spec, tap)},
        {"address", offsetof(struct vcr_vm_spec, ip)},
    };
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        for (size_t i = 1; i < cfg->n_vms; i++) {
            const char *vi = *(char *const *)((const char *)&cfg->vms[i] + keys[k].offset);
            for (size_t j = 0; vi && j < i; j++) {
                const char *vj = *(char *const *)((const char *)&cfg->vms[j] + keys[k].offset);
                if (vj && strcmp(vi, vj) == 0) {
                    cleanup_free char *path = config_path("vms[%zu].%s", i, keys[k].key);
                    config_report_add(r, path,
                                      "`%s` is already used by vms[%zu]; allowed: a value unique "
                                      "among the VMs of this host",
                                      vi, j);
                    break;
                }
            }
        }
}

/* ram_dir: an absolute path to an existing directory.  Its filesystem (tmpfs
 * or hugetlbfs) is checked when a host agent starts, not here: --config-test
 * may run elsewhere. */
static void check_ram_dir(struct config_report *r, const char *value, char **out)
{
    struct stat st;
    const char *problem = NULL;
    if (value[0] != '/')
        problem = "is not an absolute path";
    else if (strlen(value) >= 256)
        problem = "is longer than 255 bytes";
    else if (stat(value, &st) < 0)
        problem = errno == ENOENT ? "does not exist" : "cannot be examined";
    else if (!S_ISDIR(st.st_mode))
        problem = "is not a directory";
    if (problem == NULL) {
        *out = strdup(value);
        return;
    }
    config_report_add(r, "ram_dir",
                      "`%s` %s; allowed: an absolute path of an existing directory on tmpfs "
                      "(default " VCR_RAM_DIR_DEF ") or hugetlbfs, e.g. /dev/hugepages",
                      value, problem);
}

/* fence_timeout_ms: 0 (off) or VCR_FENCE_TIMEOUT_MS_MIN..MAX. */
static void check_fence_timeout(struct config_report *r, const char *text, uint32_t *out)
{
    const char *p = text;
    while (*p >= '0' && *p <= '9')
        p++;
    long long v = *p == '\0' && p != text && p - text < 12 ? strtoll(text, NULL, 10) : -1;
    if (v >= VCR_FENCE_TIMEOUT_MS_MIN && v <= VCR_FENCE_TIMEOUT_MS_MAX) {
        *out = (uint32_t)v;
        return;
    }
    config_report_add(r, "fence_timeout_ms",
                      "`%s` is not valid; allowed: 0 (self-fencing off) or an integer " XSTR(
                          VCR_FENCE_TIMEOUT_MS_MIN) ".." XSTR(VCR_FENCE_TIMEOUT_MS_MAX),
                      text);
}

/* Disk-image VMs (docs/config-vm.md): qemu-img makes their overlays and
 * genisoimage their cloud-init seeds; checked only when some VM needs them.
 * A base inside state_dir would be where the agent keeps VMs' writable
 * overlays: a disk one VM writes cannot be another's read-only base. */
static void check_disk_tools(struct config_report *r, const struct raw_agent *raw,
                             const char *base_dir, struct vcr_agent_config *cfg)
{
    bool disks = false, seeds = false;
    size_t dir_len = cfg->state_dir ? strlen(cfg->state_dir) : 0;
    for (size_t i = 0; i < cfg->n_vms; i++) {
        const struct vcr_vm_spec *vm = &cfg->vms[i];
        if (vm->disk == NULL)
            continue;
        disks = true;
        seeds |= vm->network == VCR_NET_NOCLOUD;
        if (dir_len && strncmp(vm->disk, cfg->state_dir, dir_len) == 0 &&
            vm->disk[dir_len] == '/') {
            cleanup_free char *p = config_path("vms[%zu].image.disk", i);
            config_report_add(r, p,
                              "`%s` is inside state_dir `%s`, where the VMs' writable overlays "
                              "live; allowed: a read-only base image outside it",
                              vm->disk, cfg->state_dir);
        }
    }
    if (disks)
        config_check_file(r, "qemu_img", raw->qemu_img ? raw->qemu_img : VCR_QEMU_IMG_DEF, base_dir,
                          true, &cfg->qemu_img);
    if (seeds)
        config_check_file(r, "genisoimage",
                          raw->genisoimage ? raw->genisoimage : VCR_GENISOIMAGE_DEF, base_dir, true,
                          &cfg->genisoimage);
}

/* The libvirt role's domains are the wire's VM names (docs/agent.md): the same
 * rule as `vms[].name`, each once, and no `vms` of our own QEMU beside them. */
static void convert_libvirt(struct config_report *r, const struct raw_libvirt *lv,
                            struct vcr_agent_config *cfg)
{
    cfg->libvirt_uri = strdup(lv->uri);
    cfg->libvirt_domains = calloc(lv->domains_count, sizeof(char *));
    if (cfg->libvirt_uri == NULL || cfg->libvirt_domains == NULL) {
        config_report_add(r, "libvirt", "out of memory");
        return;
    }
    for (unsigned i = 0; i < lv->domains_count; i++) {
        cleanup_free char *path = config_path("libvirt.domains[%u]", i);
        if (!config_check_name(r, path, lv->domains[i]))
            continue;
        bool dup = false;
        for (size_t j = 0; j < cfg->n_libvirt_domains && !dup; j++)
            dup = strcmp(cfg->libvirt_domains[j], lv->domains[i]) == 0;
        if (dup)
            config_report_add(r, path, "`%s` is listed twice; allowed: each domain once",
                              lv->domains[i]);
        else
            cfg->libvirt_domains[cfg->n_libvirt_domains++] = strdup(lv->domains[i]);
    }
    if (cfg->n_vms > 0)
        config_report_add(r, "libvirt",
                          "given beside `vms`; allowed: one of them (`vms`: QEMU run by the host "
                          "role; `libvirt`: domains of a libvirt daemon, the libvirt role)");
}

/* The user QEMU runs as (`-runas`, docs/security.md, "Least privilege"):
 * checked only when there are VMs to run.  `root` keeps QEMU as root. */
static void check_qemu_user(struct config_report *r, const struct raw_agent *raw,
                            struct vcr_agent_config *cfg)
{
    const char *name = raw->qemu_user ? raw->qemu_user : VCR_QEMU_USER_DEF;
    cfg->qemu_user = strdup(name);
    if (cfg->qemu_user == NULL) {
        config_report_add(r, "qemu_user", "out of memory");
        return;
    }
    if (cfg->n_vms == 0 || strcmp(name, "root") == 0)
        return;
    struct passwd pw, *found = NULL;
    char buf[4096];
    int rc = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
    if (found == NULL)
        config_report_add(r, "qemu_user",
                          "`%s`: %s; create it (useradd --system --no-create-home --shell "
                          "/usr/sbin/nologin %s), or `root` to keep QEMU as root",
                          name, rc ? strerror(rc) : "no such user", name);
    else if (pw.pw_uid == 0)
        config_report_add(r, "qemu_user",
                          "`%s` has uid 0; allowed: an unprivileged user, or `root`", name);
    else {
        cfg->qemu_uid = pw.pw_uid;
        cfg->qemu_gid = pw.pw_gid;
    }
}

static void convert(const struct raw_agent *raw, const char *base_dir, struct config_report *r,
                    struct vcr_agent_config *cfg)
{
    if (config_check_name(r, "host", raw->host))
        cfg->host = strdup(raw->host);
    if (raw->server && check_server(r, raw->server)) {
        cfg->server = strdup(raw->server);
    } else if (raw->servers) {
        /* Joined by commas, as --server takes them (agent_conn splits them). */
        size_t len = 1;
        bool ok = true;
        for (unsigned i = 0; i < raw->servers_count; i++) {
            ok = check_server(r, raw->servers[i]) && ok;
            len += strlen(raw->servers[i]) + 1;
        }
        if (ok && (cfg->server = calloc(1, len)) != NULL)
            for (unsigned i = 0; i < raw->servers_count; i++) {
                if (i)
                    strcat(cfg->server, ",");
                strcat(cfg->server, raw->servers[i]);
            }
    }
    if (raw->state_dir[0] == '/')
        cfg->state_dir = strdup(raw->state_dir);
    else
        config_report_add(r, "state_dir", "`%s` is not an absolute path; allowed: %s",
                          raw->state_dir, "an absolute directory path, e.g. /run/vcr/agent");

    /* The default is not checked here: a standby agent in a guest image may lack /dev/shm. */
    if (raw->ram_dir)
        check_ram_dir(r, raw->ram_dir, &cfg->ram_dir);
    else
        cfg->ram_dir = strdup(VCR_RAM_DIR_DEF);

    cfg->accel = VCR_ACCEL_AUTO;
    if (raw->accel)
        parse_accel(r, raw->accel, &cfg->accel);
    config_check_file(r, "qemu", raw->qemu ? raw->qemu : VCR_QEMU_DEF, base_dir, true, &cfg->qemu);
    /* The QEMU binaries an order may name (docs/security.md, "Root actions"). */
    cfg->qemu_allowed = calloc(raw->qemu_allowed_count + 1, sizeof(char *));
    for (unsigned i = 0; cfg->qemu_allowed && i < raw->qemu_allowed_count; i++) {
        char key[32];
        snprintf(key, sizeof(key), "qemu_allowed[%u]", i);
        char *resolved = NULL;
        if (config_check_file(r, key, raw->qemu_allowed[i], base_dir, true, &resolved))
            cfg->qemu_allowed[cfg->n_qemu_allowed++] = resolved;
    }

    int64_t v;
    cfg->sample_interval_ms = VCR_SAMPLE_INTERVAL_MS_DEF;
    if (raw->sample_interval_ms &&
        config_parse_int(r, "sample_interval_ms", raw->sample_interval_ms,
                         VCR_SAMPLE_INTERVAL_MS_MIN, VCR_SAMPLE_INTERVAL_MS_MAX, &v))
        cfg->sample_interval_ms = (uint32_t)v;

    if (raw->probe) {
        config_check_file(r, "probe.kernel", raw->probe->kernel, base_dir, false,
                          &cfg->probe_kernel);
        config_check_file(r, "probe.initrd", raw->probe->initrd, base_dir, false,
                          &cfg->probe_initrd);
        cfg->probe_deadline_ms = VCR_PROBE_DEADLINE_MS_DEF;
        if (raw->probe->deadline_ms &&
            config_parse_int(r, "probe.deadline_ms", raw->probe->deadline_ms,
                             VCR_PROBE_DEADLINE_MS_MIN, VCR_PROBE_DEADLINE_MS_MAX, &v))
            cfg->probe_deadline_ms = (uint32_t)v;
    } else if (cfg->accel == VCR_ACCEL_AUTO && raw->libvirt == NULL) {
        config_report_add(r, "probe",
                          "missing; required when accel is auto: {kernel: PATH, initrd: PATH}");
    }
    if (raw->agent_key_file)
        config_check_file(r, "agent_key_file", raw->agent_key_file, base_dir, false,
                          &cfg->agent_key_file);
    convert_tls(r, raw, base_dir, cfg);
    cfg->fence_timeout_ms = VCR_FENCE_TIMEOUT_MS_DEF;
    if (raw->fence_timeout_ms && strcmp(raw->fence_timeout_ms, "0") == 0)
        cfg->fence_timeout_ms = 0;
    else if (raw->fence_timeout_ms)
        check_fence_timeout(r, raw->fence_timeout_ms, &cfg->fence_timeout_ms);

    cfg->vms = calloc(raw->vms_count ? raw->vms_count : 1, sizeof(*cfg->vms));
    if (cfg->vms == NULL) {
        config_report_add(r, "vms", "out of memory");
        return;
    }
    for (unsigned i = 0; i < raw->vms_count; i++)
        vm_spec_from_raw(&raw->vms[i], i, base_dir, r, &cfg->vms[cfg->n_vms++]);
    check_unique(r, cfg);
    volumes_check_unique(r, cfg->vms, cfg->n_vms);
    check_disk_tools(r, raw, base_dir, cfg);
    if (raw->libvirt)
        convert_libvirt(r, raw->libvirt, cfg);
    check_qemu_user(r, raw, cfg);
}

/* Larger than any configuration; the fuzz harness parses from memory too. */
#define AGENT_CONFIG_MAX_BYTES (1024 * 1024)

/* path: as the caller named the file (messages); real: the path kept in cfg->path. */
static struct vcr_agent_config *parse(const char *yaml, size_t len, const char *path,
                                      const char *real, const char *base_dir, vcr_error_t *err)
{
    struct config_report report = {.allowed = agent_allowed, .schema = &agent_schema};
    const cyaml_config_t cyaml_cfg = {
        .log_fn = config_cyaml_log,
        .log_ctx = &report,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };
    struct raw_agent *raw = NULL;
    const cyaml_schema_value_t *schema = &agent_schema;
    cyaml_err_t status = cyaml_load_data((const uint8_t *)yaml, len, &cyaml_cfg, schema,
                                         (cyaml_data_t **)&raw, NULL);
    if (status != CYAML_OK) {
        /* `server:` may be a list; the first reading's errors stand if not. */
        struct config_report quiet = {.allowed = agent_allowed, .schema = &agent_list_schema};
        cyaml_config_t list_cfg = cyaml_cfg;
        list_cfg.log_ctx = &quiet;
        struct raw_agent *listed = NULL;
        if (cyaml_load_data((const uint8_t *)yaml, len, &list_cfg, &agent_list_schema,
                            (cyaml_data_t **)&listed, NULL) == CYAML_OK) {
            config_report_release(&report);
            report = quiet;
            report.schema = &agent_schema;
            raw = listed;
            schema = &agent_list_schema;
            status = CYAML_OK;
        } else {
            config_report_release(&quiet);
        }
    }
    struct vcr_agent_config *cfg = NULL;
    if (status != CYAML_OK) {
        config_report_cyaml_failure(&report, status);
    } else if (raw == NULL) {
        config_report_add(&report, NULL, "empty file; required: host, server, state_dir");
    } else {
        cfg = calloc(1, sizeof(*cfg));
        if (cfg == NULL)
            config_report_add(&report, NULL, "out of memory");
        else
            convert(raw, base_dir, &report, cfg);
    }
    if (raw)
        cyaml_free(&cyaml_cfg, schema, raw, 0);
    if (cfg)
        cfg->path = strdup(real);
    if (config_report_finish(&report, path, err) < 0 || cfg == NULL || cfg->path == NULL) {
        vcr_agent_config_free(cfg);
        config_report_release(&report);
        if (err && *err == NULL)
            vcr_error_make(err, ENOMEM, "config `%s`: out of memory", path);
        return NULL;
    }
    config_report_release(&report);
    return cfg;
}

struct vcr_agent_config *vcr_agent_config_parse(const char *yaml, size_t len, const char *path,
                                                const char *base_dir, vcr_error_t *err)
{
    return parse(yaml, len, path, path, base_dir, err);
}

struct vcr_agent_config *vcr_agent_config_load(const char *path, vcr_error_t *err)
{
    char real[PATH_MAX];
    if (realpath(path, real) == NULL)
        return vcr_error_errno(err, "config `%s`", path), NULL;
    char dir_buf[PATH_MAX];
    memcpy(dir_buf, real, sizeof(dir_buf));
    const char *base_dir = dirname(dir_buf);

    cleanup_file FILE *f = fopen(real, "re");
    if (f == NULL)
        return vcr_error_errno(err, "config `%s`", path), NULL;
    cleanup_free char *buf = malloc(AGENT_CONFIG_MAX_BYTES + 1);
    if (buf == NULL)
        return vcr_error_errno(err, "config `%s`", path), NULL;
    size_t len = fread(buf, 1, AGENT_CONFIG_MAX_BYTES + 1, f);
    if (ferror(f))
        return vcr_error_errno(err, "config `%s`", path), NULL;
    if (len > AGENT_CONFIG_MAX_BYTES)
        return vcr_error_make(err, EFBIG, "config `%s`: larger than %d bytes", path,
                              AGENT_CONFIG_MAX_BYTES),
               NULL;
    return parse(buf, len, path, real, base_dir, err);
}
