/* One `vms:` entry: its libcyaml schema and its validation into struct vcr_vm_spec. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "config/config_internal.h"
#include "config/vm_spec.h"

static const cyaml_schema_field_t image_fields[] = {
    CYAML_FIELD_STRING_PTR("kernel", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_image,
                           kernel, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("initrd", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_image,
                           initrd, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("disk", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_image, disk,
                           0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("format", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_image,
                           format, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("root", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_image, root,
                           0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t identity_fields[] = {
    CYAML_FIELD_STRING_PTR("ca", CYAML_FLAG_POINTER, struct raw_identity, ca, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("cert", CYAML_FLAG_POINTER, struct raw_identity, cert, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("key", CYAML_FLAG_POINTER, struct raw_identity, key, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t vm_fields[] = {
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER, struct raw_vm, name, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("memory_mb", CYAML_FLAG_POINTER, struct raw_vm, memory_mb, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("vcpus", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm, vcpus,
                           0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("image", CYAML_FLAG_POINTER, struct raw_vm, image, image_fields),
    CYAML_FIELD_STRING_PTR("mac", CYAML_FLAG_POINTER, struct raw_vm, mac, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("tap", CYAML_FLAG_POINTER, struct raw_vm, tap, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("address", CYAML_FLAG_POINTER, struct raw_vm, address, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("gateway", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm,
                           gateway, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("kernel_args", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm,
                           kernel_args, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("autostart", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm,
                           autostart, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("network", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm,
                           network, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("user_data", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_vm,
                           user_data, 0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("agent_identity", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct raw_vm, agent_identity, identity_fields),
    CYAML_FIELD_SEQUENCE("volumes", CYAML_FLAG_POINTER_NULL | CYAML_FLAG_OPTIONAL, struct raw_vm,
                         volumes, &volume_raw_schema, 0, VCR_VOLUMES_MAX),
    CYAML_FIELD_END,
};

const cyaml_schema_value_t vm_spec_raw_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_vm, vm_fields),
};

void vcr_vm_spec_clear(struct vcr_vm_spec *spec)
{
    free(spec->name);
    free(spec->kernel);
    free(spec->initrd);
    free(spec->disk);
    free(spec->root);
    free(spec->user_data);
    free(spec->mac);
    free(spec->tap);
    free(spec->address);
    free(spec->ip);
    free(spec->gateway);
    free(spec->kernel_args);
    free(spec->identity_ca);
    free(spec->identity_cert);
    free(spec->identity_key);
    for (size_t i = 0; i < spec->n_volumes; i++)
        vcr_volume_spec_clear(&spec->volumes[i]);
    free(spec->volumes);
    memset(spec, 0, sizeof(*spec));
}

bool vcr_name_is_valid(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strlen(s);
    if (n == 0 || n > VCR_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

bool vcr_mac_parse(const char *s, uint8_t out[6])
{
    if (s == NULL || strlen(s) != 17)
        return false;
    for (int i = 0; i < 6; i++) {
        const char *p = s + 3 * i;
        if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]))
            return false;
        if (i < 5 && p[2] != ':')
            return false;
        char hex[3] = {p[0], p[1], '\0'};
        out[i] = (uint8_t)strtoul(hex, NULL, 16);
    }
    return true;
}

uint32_t vcr_ipv4_prefix_mask(unsigned prefix)
{
    return prefix >= 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
}

bool vcr_ipv4_parse(const char *s, uint32_t *out)
{
    struct in_addr a;
    /* inet_pton accepts only the four-part dotted decimal form, which is what we want. */
    if (s == NULL || inet_pton(AF_INET, s, &a) != 1)
        return false;
    *out = ntohl(a.s_addr);
    return true;
}

static bool tap_name_is_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VCR_TAP_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

static bool check_mac(struct config_report *r, const char *path, const char *value, char **out)
{
    uint8_t b[6];
    if (!vcr_mac_parse(value, b)) {
        config_report_add(r, path,
                          "`%s` is not a MAC address; allowed: six hex octets separated by "
                          "colons, e.g. 52:54:00:77:00:11",
                          value);
        return false;
    }
    if (b[0] & 1) {
        config_report_add(r, path,
                          "`%s` is a multicast address; allowed: a unicast MAC (even first "
                          "octet), e.g. 52:54:00:77:00:11",
                          value);
        return false;
    }
    char norm[18];
    snprintf(norm, sizeof(norm), "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4],
             b[5]);
    *out = strdup(norm);
    return *out != NULL;
}

static bool check_address(struct config_report *r, const char *path, const char *value,
                          struct vcr_vm_spec *out)
{
    const char *slash = strchr(value, '/');
    char ip[INET_ADDRSTRLEN + 1];
    uint32_t addr;
    char *end = NULL;
    long prefix = slash ? strtol(slash + 1, &end, 10) : -1;
    size_t ip_len = slash ? (size_t)(slash - value) : 0;
    if (slash == NULL || ip_len >= sizeof(ip) || end == slash + 1 || *end != '\0' || prefix < 1 ||
        prefix > 32 || (memcpy(ip, value, ip_len), ip[ip_len] = '\0', !vcr_ipv4_parse(ip, &addr))) {
        config_report_add(r, path,
                          "`%s` is not an IPv4 address with a prefix length; allowed: "
                          "A.B.C.D/N with N in 1..32, e.g. 10.77.0.11/24",
                          value);
        return false;
    }
    out->address = strdup(value);
    out->ip = strdup(ip);
    out->prefix = (unsigned)prefix;
    return out->address && out->ip;
}

static bool check_gateway(struct config_report *r, const char *path, const char *value,
                          const struct vcr_vm_spec *vm)
{
    uint32_t gw, addr;
    if (!vcr_ipv4_parse(value, &gw)) {
        config_report_add(r, path, "`%s` is not an IPv4 address; allowed: A.B.C.D, e.g. 10.77.0.1",
                          value);
        return false;
    }
    if (vm->ip == NULL || !vcr_ipv4_parse(vm->ip, &addr))
        return true; /* the address itself is reported */
    uint32_t mask = vcr_ipv4_prefix_mask(vm->prefix);
    if ((gw & mask) != (addr & mask)) {
        config_report_add(r, path, "`%s` is not in the VM's subnet; allowed: an address in %s",
                          value, vm->address);
        return false;
    }
    if (gw == addr) {
        config_report_add(r, path, "`%s` is the VM's own address; allowed: another host in %s",
                          value, vm->address);
        return false;
    }
    return true;
}

static bool check_kernel_args(struct config_report *r, const char *path, const char *value)
{
    size_t n = strlen(value);
    for (size_t i = 0; i < n; i++)
        if (iscntrl((unsigned char)value[i])) {
            config_report_add(r, path,
                              "`%s` contains a control character at offset %zu; allowed: "
                              "printable text up to %d bytes",
                              value, i, VCR_KERNEL_ARGS_MAX);
            return false;
        }
    if (n > VCR_KERNEL_ARGS_MAX) {
        config_report_add(r, path, "%zu bytes is too long; allowed: up to %d bytes", n,
                          VCR_KERNEL_ARGS_MAX);
        return false;
    }
    return true;
}

static const char *const network_names[] = {
    [VCR_NET_LAB] = "lab",
    [VCR_NET_NOCLOUD] = "nocloud",
    [VCR_NET_KERNEL] = "kernel",
    [VCR_NET_IMAGE] = "image",
};

const char *vcr_guest_network_name(enum vcr_guest_network n)
{
    return (size_t)n < sizeof(network_names) / sizeof(network_names[0]) ? network_names[n] : "?";
}

/* root= of a disk-image VM: a device or a LABEL=/UUID=/PARTUUID= reference. */
static bool root_is_valid(const char *s)
{
    static const char *const prefixes[] = {"/dev/", "LABEL=", "UUID=", "PARTUUID="};
    size_t n = strlen(s);
    if (n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)s[i]))
            return false;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0 && n > strlen(prefixes[i]))
            return true;
    return false;
}

/* The disk of a disk-image VM: present, of a format we take, its backing
 * chain whole (disk_image.h). */
static void check_disk(struct config_report *r, const char *path, const char *p_format,
                       const struct raw_image *img, const char *base_dir, struct vcr_vm_spec *out)
{
    enum vcr_disk_format fmt = VCR_DISK_AUTO;
    if (img->format) {
        fmt = vcr_disk_format_parse(img->format);
        if (fmt == VCR_DISK_AUTO) {
            config_report_add(r, p_format, "`%s` is not a disk format; allowed: raw, qcow2",
                              img->format);
            return;
        }
    }
    cleanup_free char *disk = NULL;
    if (!config_check_file(r, path, img->disk, base_dir, false, &disk))
        return;
    vcr_error_t e = NULL;
    if (vcr_disk_probe(disk, &fmt, &e) < 0) {
        config_report_add(r, path, "%s", vcr_error_msg(e));
        vcr_error_release(&e);
        return;
    }
    out->disk = steal_pointer(&disk);
    out->disk_format = fmt;
}

/* agent_identity: the TLS files of the agent inside the VM (a standby VM),
 * handed to the guest through QEMU fw_cfg (docs/security.md). */
static void identity_from_raw(const struct raw_identity *id, unsigned index, const char *base_dir,
                              struct config_report *r, struct vcr_vm_spec *out)
{
    struct {
        const char *key, *value;
        char **out;
    } files[] = {
        {"ca", id->ca, &out->identity_ca},
        {"cert", id->cert, &out->identity_cert},
        {"key", id->key, &out->identity_key},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        cleanup_free char *p = config_path("vms[%u].agent_identity.%s", index, files[i].key);
        if (files[i].value && strchr(files[i].value, ',')) {
            /* QEMU's -fw_cfg takes name=...,file=...: a comma would split it. */
            config_report_add(r, p, "`%s` has a comma; allowed: a path without commas",
                              files[i].value);
            continue;
        }
        config_check_file(r, p, files[i].value, base_dir, false, files[i].out);
    }
}

/* image: {kernel, initrd} (the lab's initramfs guests) or {disk, format,
 * kernel, initrd, root} (docs/config-vm.md); with it `network` and `user_data`. */
static void image_from_raw(const struct raw_vm *raw, unsigned index, const char *base_dir,
                           struct config_report *r, struct vcr_vm_spec *out)
{
    const struct raw_image *img = raw->image;
#define FIELD(var, key) cleanup_free char *var = config_path("vms[%u]." key, index)
    FIELD(p_image_kernel, "image.kernel");
    FIELD(p_image_initrd, "image.initrd");
    FIELD(p_image_disk, "image.disk");
    FIELD(p_image_format, "image.format");
    FIELD(p_image_root, "image.root");
    FIELD(p_network, "network");
    FIELD(p_user_data, "user_data");
#undef FIELD
    if (img->disk == NULL) {
        static const char missing[] = "missing; allowed: a readable regular file (the lab's "
                                      "guests: image.kernel and image.initrd; a disk-image VM: "
                                      "image.disk)";
        if (img->kernel == NULL)
            config_report_add(r, p_image_kernel, "%s", missing);
        else
            config_check_file(r, p_image_kernel, img->kernel, base_dir, false, &out->kernel);
        if (img->initrd == NULL)
            config_report_add(r, p_image_initrd, "%s", missing);
        else
            config_check_file(r, p_image_initrd, img->initrd, base_dir, false, &out->initrd);
        const char *only_disk = img->format ? "format" : img->root ? "root" : NULL;
        if (only_disk)
            config_report_add(r, p_image_disk,
                              "required with image.%s; allowed: image.disk (a raw or qcow2 "
                              "image) with it, or image.kernel and image.initrd alone",
                              only_disk);
        if (raw->network)
            config_report_add(r, p_network,
                              "`%s` is for disk-image VMs only (image.disk); the lab's initramfs "
                              "guests take vcr.ip",
                              raw->network);
        if (raw->user_data)
            config_report_add(r, p_user_data, "is for disk-image VMs only (image.disk)");
        out->network = VCR_NET_LAB;
        return;
    }
    check_disk(r, p_image_disk, p_image_format, img, base_dir, out);
    if (img->kernel)
        config_check_file(r, p_image_kernel, img->kernel, base_dir, false, &out->kernel);
    if (img->initrd && img->kernel == NULL)
        config_report_add(r, p_image_initrd,
                          "given without image.kernel; allowed: an initrd with a kernel, or "
                          "neither (the firmware boots the disk's own bootloader)");
    else if (img->initrd)
        config_check_file(r, p_image_initrd, img->initrd, base_dir, false, &out->initrd);
    if (img->root && img->kernel == NULL)
        config_report_add(r, p_image_root,
                          "given without image.kernel; allowed: root= with a kernel boot only "
                          "(the disk's bootloader has its own)");
    else if (img->root && !root_is_valid(img->root))
        config_report_add(r, p_image_root,
                          "`%s` is not a root device; allowed: /dev/NAME, LABEL=, UUID= or "
                          "PARTUUID=, up to 128 characters without spaces",
                          img->root);
    else
        out->root = strdup(img->root ? img->root : VCR_VM_ROOT_DEF);
    out->network = VCR_NET_NOCLOUD;
    if (raw->network) {
        if (strcmp(raw->network, "nocloud") == 0)
            out->network = VCR_NET_NOCLOUD;
        else if (strcmp(raw->network, "kernel") == 0)
            out->network = VCR_NET_KERNEL;
        else if (strcmp(raw->network, "image") == 0)
            out->network = VCR_NET_IMAGE;
        else
            config_report_add(r, p_network,
                              "`%s` is not a way to configure the guest's network; allowed: "
                              "nocloud (a cloud-init seed), kernel (ip= on the kernel command "
                              "line), image (the image's own settings)",
                              raw->network);
    }
    if (out->network == VCR_NET_KERNEL && img->kernel == NULL)
        config_report_add(r, p_network,
                          "`kernel` needs image.kernel (ip= goes on the kernel command line); "
                          "allowed with a firmware boot: nocloud, image");
    if (raw->user_data && out->network != VCR_NET_NOCLOUD)
        config_report_add(r, p_user_data, "is for network: nocloud only (the seed's user-data)");
    else if (raw->user_data)
        config_check_file(r, p_user_data, raw->user_data, base_dir, false, &out->user_data);
}

/* Each check runs even after an earlier one failed, so one pass reports every bad field. */
bool vm_spec_from_raw(const struct raw_vm *raw, unsigned index, const char *base_dir,
                      struct config_report *r, struct vcr_vm_spec *out)
{
    unsigned before = r->count;
    memset(out, 0, sizeof(*out));
#define FIELD(key) cleanup_free char *p_##key = config_path("vms[%u]." #key, index)
    FIELD(name);
    FIELD(memory_mb);
    FIELD(vcpus);
    FIELD(mac);
    FIELD(tap);
    FIELD(address);
    FIELD(gateway);
    FIELD(kernel_args);
    FIELD(autostart);
#undef FIELD

    if (config_check_name(r, p_name, raw->name))
        out->name = strdup(raw->name);
    int64_t v;
    if (config_parse_int(r, p_memory_mb, raw->memory_mb, VCR_VM_MEMORY_MB_MIN, VCR_VM_MEMORY_MB_MAX,
                         &v))
        out->memory_mb = (uint32_t)v;
    out->vcpus = 1;
    if (raw->vcpus &&
        config_parse_int(r, p_vcpus, raw->vcpus, VCR_VM_VCPUS_MIN, VCR_VM_VCPUS_MAX, &v))
        out->vcpus = (uint32_t)v;
    image_from_raw(raw, index, base_dir, r, out);
    check_mac(r, p_mac, raw->mac, &out->mac);
    if (tap_name_is_valid(raw->tap))
        out->tap = strdup(raw->tap);
    else
        config_report_add(r, p_tap,
                          "`%s` is not a network interface name; allowed: 1 to %d characters "
                          "of A-Z, a-z, 0-9, -, _, .",
                          raw->tap, VCR_TAP_NAME_MAX);
    check_address(r, p_address, raw->address, out);
    if (raw->gateway && check_gateway(r, p_gateway, raw->gateway, out))
        out->gateway = strdup(raw->gateway);
    if (raw->kernel_args && check_kernel_args(r, p_kernel_args, raw->kernel_args))
        out->kernel_args = strdup(raw->kernel_args);
    out->autostart = VCR_VM_AUTOSTART_DEF;
    if (raw->autostart)
        config_parse_bool(r, p_autostart, raw->autostart, &out->autostart);
    if (raw->agent_identity)
        identity_from_raw(raw->agent_identity, index, base_dir, r, out);
    volumes_from_raw(raw, index, base_dir, r, out);
    return r->count == before;
}
