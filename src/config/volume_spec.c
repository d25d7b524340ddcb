/* `vms[].volumes:` entries: their libcyaml schema and their validation into
 * struct vcr_volume_spec (docs/warm-cache.md). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "config/config_internal.h"
#include "config/volume_spec.h"

#define OPTIONAL_STRING(key)                                                                       \
    CYAML_FIELD_STRING_PTR(#key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_volume, key, \
                           0, CYAML_UNLIMITED)

/* Every key is optional for libcyaml: missing required ones are reported here,
 * with what they take (`image` means something else in a VM entry). */
static const cyaml_schema_field_t volume_fields[] = {
    OPTIONAL_STRING(name),
    OPTIONAL_STRING(size_mb),
    OPTIONAL_STRING(source_dir),
    OPTIONAL_STRING(image),
    OPTIONAL_STRING(mount),
    OPTIONAL_STRING(warm_cache),
    OPTIONAL_STRING(writeback_interval_s),
    OPTIONAL_STRING(cache),
    CYAML_FIELD_END,
};

const cyaml_schema_value_t volume_raw_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_volume, volume_fields),
};

static const char *const cache_names[] = {
    [VCR_VOLUME_CACHE_NONE] = "none",
    [VCR_VOLUME_CACHE_WRITEBACK] = "writeback",
};

const char *vcr_volume_cache_name(enum vcr_volume_cache c)
{
    return (unsigned)c < sizeof(cache_names) / sizeof(cache_names[0]) ? cache_names[c] : "?";
}

void vcr_volume_spec_clear(struct vcr_volume_spec *v)
{
    free(v->name);
    free(v->source_dir);
    free(v->image);
    free(v->mount);
    memset(v, 0, sizeof(*v));
}

static char *join(const char *dir, const char *file)
{
    char *s = NULL;
    if (file[0] == '/')
        return strdup(file);
    if (asprintf(&s, "%s/%s", dir, file) < 0)
        return NULL;
    return s;
}

static bool missing(struct config_report *r, const char *path, const char *value,
                    const char *allowed)
{
    if (value && *value)
        return false;
    config_report_add(r, path, "%s; required: %s", value ? "empty" : "missing", allowed);
    return true;
}

static bool check_source_dir(struct config_report *r, const char *path, const char *value,
                             const char *base_dir, char **out)
{
    cleanup_free char *full = join(base_dir, value);
    struct stat st;
    if (full == NULL) {
        config_report_add(r, path, "out of memory");
        return false;
    }
    if (stat(full, &st) < 0 || access(full, R_OK | X_OK) < 0) {
        config_report_add(r, path, "`%s`: %s; allowed: a readable directory", full,
                          strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        config_report_add(r, path, "`%s` is not a directory; allowed: a readable directory", full);
        return false;
    }
    *out = realpath(full, NULL);
    return *out != NULL;
}

/* The image may not exist yet (built from source_dir at the first start), but
 * its directory must, and an existing image must be a regular file. */
static bool check_image(struct config_report *r, const char *path, const char *value,
                        const char *base_dir, char **out)
{
    cleanup_free char *full = join(base_dir, value);
    cleanup_free char *dir_copy = full ? strdup(full) : NULL;
    struct stat st;
    if (full == NULL || dir_copy == NULL) {
        config_report_add(r, path, "out of memory");
        return false;
    }
    const char *dir = dirname(dir_copy);
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) < 0) {
        config_report_add(r, path,
                          "`%s`: directory `%s` is missing or not writable; allowed: a file "
                          "path in a writable directory",
                          full, dir);
        return false;
    }
    if (stat(full, &st) == 0 && !S_ISREG(st.st_mode)) {
        config_report_add(r, path,
                          "`%s` exists and is not a regular file; allowed: a disk image file "
                          "(created when missing)",
                          full);
        return false;
    }
    *out = steal_pointer(&full);
    return true;
}

/* Passed on the kernel command line (`vcr.pmem0=/data`): no blanks, no commas
 * or colons (vcr.blkN=DEV:MOUNT), no `..`. */
static bool check_mount(struct config_report *r, const char *path, const char *value)
{
    size_t n = strlen(value);
    bool ok = value[0] == '/' && n >= 2 && n <= VCR_VOLUME_MOUNT_MAX && value[n - 1] != '/' &&
              strstr(value, "..") == NULL && strstr(value, "//") == NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = (value[i] >= 'a' && value[i] <= 'z') || (value[i] >= 'A' && value[i] <= 'Z') ||
             (value[i] >= '0' && value[i] <= '9') || strchr("/_.-", value[i]) != NULL;
    if (!ok)
        config_report_add(r, path,
                          "`%s` is not a usable mount point; allowed: an absolute path other "
                          "than / of up to %d characters of A-Z a-z 0-9 / _ . - (no `..`), e.g. "
                          "/data",
                          value, VCR_VOLUME_MOUNT_MAX);
    return ok;
}

static bool parse_cache(struct config_report *r, const char *path, const char *value,
                        enum vcr_volume_cache *out)
{
    for (unsigned i = 0; i < sizeof(cache_names) / sizeof(cache_names[0]); i++)
        if (strcmp(value, cache_names[i]) == 0) {
            *out = (enum vcr_volume_cache)i;
            return true;
        }
    config_report_add(r, path, "`%s` is not valid; allowed: none, writeback", value);
    return false;
}

static void volume_from_raw(const struct raw_volume *raw, unsigned vm, unsigned index,
                            const char *base_dir, struct config_report *r,
                            struct vcr_volume_spec *out)
{
#define FIELD(key) cleanup_free char *p_##key = config_path("vms[%u].volumes[%u]." #key, vm, index)
    FIELD(name);
    FIELD(size_mb);
    FIELD(source_dir);
    FIELD(image);
    FIELD(mount);
    FIELD(warm_cache);
    FIELD(writeback_interval_s);
    FIELD(cache);
#undef FIELD
    memset(out, 0, sizeof(*out));
    if (!missing(r, p_name, raw->name, "a name of 1 to 32 characters of a-z, 0-9, -") &&
        config_check_name(r, p_name, raw->name))
        out->name = strdup(raw->name);
    int64_t v;
    if (!missing(r, p_size_mb, raw->size_mb,
                 "an integer "
                 "16..65536 (megabytes)") &&
        config_parse_int(r, p_size_mb, raw->size_mb, VCR_VOLUME_SIZE_MB_MIN, VCR_VOLUME_SIZE_MB_MAX,
                         &v))
        out->size_mb = (uint32_t)v;
    if (raw->source_dir)
        check_source_dir(r, p_source_dir, raw->source_dir, base_dir, &out->source_dir);
    if (!missing(r, p_image, raw->image, "a disk image path (created when missing)"))
        check_image(r, p_image, raw->image, base_dir, &out->image);
    if (!missing(r, p_mount, raw->mount, "an absolute guest path, e.g. /data") &&
        check_mount(r, p_mount, raw->mount))
        out->mount = strdup(raw->mount);
    out->warm_cache = VCR_VOLUME_WARM_CACHE_DEF;
    if (raw->warm_cache)
        config_parse_bool(r, p_warm_cache, raw->warm_cache, &out->warm_cache);
    /* Parsed only to be refused by name: a config that still sets it expects
     * a write-back schedule that no longer exists (docs/warm-cache.md). */
    if (raw->writeback_interval_s)
        config_report_add(r, p_writeback_interval_s,
                          "no longer exists: a warm-cache volume is backed by its image itself, "
                          "so the guest's fsync reaches the disk at once; allowed: remove the key");
    out->cache = VCR_VOLUME_CACHE_NONE;
    if (raw->cache && parse_cache(r, p_cache, raw->cache, &out->cache) && out->warm_cache)
        config_report_add(r, p_cache,
                          "`%s` applies only to virtio-blk volumes; allowed: no `cache` with "
                          "warm_cache: true",
                          raw->cache);
}

bool volumes_from_raw(const struct raw_vm *raw, unsigned index, const char *base_dir,
                      struct config_report *r, struct vcr_vm_spec *out)
{
    unsigned before = r->count;
    if (raw->volumes_count == 0)
        return true;
    out->volumes = calloc(raw->volumes_count, sizeof(*out->volumes));
    if (out->volumes == NULL) {
        config_report_add(r, "vms", "out of memory");
        return false;
    }
    for (unsigned i = 0; i < raw->volumes_count; i++) {
        struct vcr_volume_spec *v = &out->volumes[out->n_volumes++];
        volume_from_raw(&raw->volumes[i], index, i, base_dir, r, v);
        for (unsigned j = 0; j < i; j++) {
            const struct vcr_volume_spec *w = &out->volumes[j];
            const char *key = NULL, *value = NULL;
            if (v->name && w->name && strcmp(v->name, w->name) == 0)
                key = "name", value = v->name;
            else if (v->mount && w->mount && strcmp(v->mount, w->mount) == 0)
                key = "mount", value = v->mount;
            else if (v->image && w->image && strcmp(v->image, w->image) == 0)
                key = "image", value = v->image;
            if (key) {
                cleanup_free char *path = config_path("vms[%u].volumes[%u].%s", index, i, key);
                config_report_add(r, path,
                                  "`%s` is already used by volumes[%u]; allowed: a value unique "
                                  "among the volumes of this VM",
                                  value, j);
                break;
            }
        }
    }
    return r->count == before;
}

void volumes_check_unique(struct config_report *r, const struct vcr_vm_spec *vms, size_t n_vms)
{
    for (size_t i = 1; i < n_vms; i++)
        for (size_t a = 0; a < vms[i].n_volumes; a++) {
            const char *img = vms[i].volumes[a].image;
            for (size_t j = 0; img && j < i; j++)
                for (size_t b = 0; b < vms[j].n_volumes; b++) {
                    const char *other = vms[j].volumes[b].image;
                    if (other && strcmp(img, other) == 0) {
                        cleanup_free char *path = config_path("vms[%zu].volumes[%zu].image", i, a);
                        config_report_add(r, path,
                                          "`%s` is already used by vms[%zu].volumes[%zu]; "
                                          "allowed: an image of its own for each volume",
                                          img, j, b);
                    }
                }
        }
}
