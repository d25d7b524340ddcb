/* Shared by the config loaders: the libcyaml-facing ("raw") structures, and a
 * report that collects every bad field of a file so that one run of
 * `--config-test` shows all of them, not only the first. */
#ifndef VCR_CONFIG_INTERNAL_H
#define VCR_CONFIG_INTERNAL_H

#include <cyaml/cyaml.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/vm_spec.h"

/* What libcyaml fills.  Numbers and booleans are kept as text and parsed by
 * config_parse_int/_bool (strict, with our messages); NULL means absent. */
struct raw_image {
    char *kernel;
    char *initrd;
    char *disk;
    char *format;
    char *root;
};

struct raw_volume {
    char *name;
    char *size_mb;
    char *source_dir;
    char *image;
    char *mount;
    char *warm_cache;
    char *writeback_interval_s; /* refused by name (volume_spec.c) */
    char *cache;
};

struct raw_identity {
    char *ca;
    char *cert;
    char *key;
};

struct raw_vm {
    char *name;
    char *memory_mb;
    char *vcpus;
    struct raw_image *image;
    char *mac;
    char *tap;
    char *address;
    char *gateway;
    char *kernel_args;
    char *autostart;
    char *network;
    char *user_data;
    struct raw_identity *agent_identity;
    struct raw_volume *volumes;
    unsigned volumes_count;
};

extern const cyaml_schema_value_t vm_spec_raw_schema;
extern const cyaml_schema_value_t volume_raw_schema;

/* Describes, for messages, what a key accepts ("an integer 64..65536"). */
struct config_allowed {
    const char *key;
    const char *allowed;
};

struct config_report {
    char *text; /* "path: problem\n" lines */
    size_t len;
    unsigned count;
    char *cyaml_log; /* what libcyaml logged during the load */
    size_t cyaml_log_len;
    const struct config_allowed *allowed; /* NULL-key terminated */
    const cyaml_schema_value_t *schema;   /* to list the keys a mapping accepts */
};

void config_report_add(struct config_report *r, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* One frame of libcyaml's backtrace, innermost first. */
struct config_frame {
    enum { CONFIG_FRAME_FIELD, CONFIG_FRAME_ENTRY, CONFIG_FRAME_MAPPING } kind;
    char name[128]; /* field name, or entry number (libcyaml counts from 1) */
    int line;
};

#define CONFIG_MAX_FRAMES 16

/* Reads back what libcyaml logged for a failed load (log is cut up in place):
 * *message is its message (NULL if none), frames[] its backtrace, innermost
 * first; returns how many frames (at most CONFIG_MAX_FRAMES). */
int config_cyaml_frames(char *log, char **message, struct config_frame *frames);

/* libcyaml log_fn: ctx is the report. */
void config_cyaml_log(cyaml_log_t level, void *ctx, const char *fmt, va_list args);
/* Turns what libcyaml logged for a failed load into one report line that names
 * the field path, the value and what is allowed. */
void config_report_cyaml_failure(struct config_report *r, cyaml_err_t status);
/* 0 if nothing was reported, else -1 with *err listing every line, prefixed by origin. */
int config_report_finish(struct config_report *r, const char *origin, vcr_error_t *err);
/* The same with vcr-server's form (docs/server.md): every line as
 * "config `origin`: line", one per line, no count. */
int config_report_finish_each(struct config_report *r, const char *origin, vcr_error_t *err);
void config_report_release(struct config_report *r);

/* Field checks: each reports under path and returns false when the value is bad. */
bool config_check_range(struct config_report *r, const char *path, int64_t value, int64_t min,
                        int64_t max);
/* Strict decimal integer within min..max. */
bool config_parse_int(struct config_report *r, const char *path, const char *text, int64_t min,
                      int64_t max, int64_t *out);
/* "true" or "false". */
bool config_parse_bool(struct config_report *r, const char *path, const char *text, bool *out);
/* value must be a readable regular file; relative values are taken from base_dir.
 * On success *resolved is the absolute path (allocated). */
bool config_check_file(struct config_report *r, const char *path, const char *value,
                       const char *base_dir, bool executable, char **resolved);
/* The "[a-z0-9-]{1,32}" names of hosts and VMs. */
bool config_check_name(struct config_report *r, const char *path, const char *value);
/* Allocating: NULL when out of memory. */
char *config_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Converts one validated raw VM; index names it in messages ("vms[1].mac").
 * Returns false if any field was bad (all of them are reported). */
bool vm_spec_from_raw(const struct raw_vm *raw, unsigned index, const char *base_dir,
                      struct config_report *r, struct vcr_vm_spec *out);

/* The `volumes:` of vms[index] (volume_spec.c); false if any field was bad. */
bool volumes_from_raw(const struct raw_vm *raw, unsigned index, const char *base_dir,
                      struct config_report *r, struct vcr_vm_spec *out);
/* Two VMs of a host must not share a volume image. */
void volumes_check_unique(struct config_report *r, const struct vcr_vm_spec *vms, size_t n_vms);

#endif
