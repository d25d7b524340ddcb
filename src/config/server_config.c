/* vcr-server configuration, after redis's config.c: one table names every key
 * and what it accepts, and a bad file is refused with every offending key named.
 *
 * The libcyaml schema takes each scalar as a string and this file converts it:
 * libcyaml 1.3 reads `heartbeat_ms: 1.5` or `1e3` as the integer 1 without a
 * word, and a monitoring timeout silently off by a factor of 1000 is worse
 * than a strict parser (the table of what each key accepts and those
 * conversions: server_config_fields.c). */
#include "config/server_config.h"

#include <arpa/inet.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "proto/proto.h"
#include "proto/proto_tls.h"
#include "config/config_internal.h"
#include "config/server_config_priv.h"
#include "server/api_auth.h"

/* Room for SERVICES_MAX services (about 250 bytes each in flow style, 400 in
 * block style): 10,000 VMs and their services make 2.5 MB (make bench-scale). */
#define CONFIG_MAX_BYTES (16 * 1024 * 1024)

struct raw_migration {
    char *cpu_pct;
    char *samples;
    char **targets;
    unsigned targets_count;
};

static const cyaml_schema_value_t raw_string_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t raw_migration_fields[] = {
    CYAML_FIELD_STRING_PTR("cpu_pct", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           struct raw_migration, cpu_pct, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("samples", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                           struct raw_migration, samples, 0, CYAML_UNLIMITED),
    CYAML_FIELD_SEQUENCE("targets", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_migration,
                         targets, &raw_string_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

struct raw_ha {
    char **etcd;
    unsigned etcd_count;
    char *lease_ttl_s;
    char *name;
    char *advertise;
    char *advertise_api;
};

static const cyaml_schema_field_t raw_ha_fields[] = {
    CYAML_FIELD_SEQUENCE("etcd", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_ha, etcd,
                         &raw_string_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("lease_ttl_s", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_ha,
                           lease_ttl_s, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("name", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_ha, name, 0,
                           CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("advertise", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_ha,
                           advertise, 0, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("advertise_api", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_ha,
                           advertise_api, 0, CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

struct raw_config {
    char *listen;
    char *api;
    char *journal;
    char *heartbeat_ms;
    char *host_timeout_ms;
    char *agent_key_file;
    char *tls_ca_file;
    char *tls_cert_file;
    char *tls_key_file;
    char *insecure;
    char *standby_insecure_listen;
    char *fence_timeout_ms;
    char *provision_warm;
    char *port_timeout_ms;
    char *confirm_timeout_ms;
    char *agent_connections_max;
    char *api_tokens_file;
    char *api_insecure;
    char *api_tls_cert_file;
    char *api_tls_key_file;
    char **api_names;
    unsigned api_names_count;
    char *api_connections_max;
    char *api_rate_per_s;
    char *api_rate_burst;
    char *images_listen;
    struct images_raw_image *images;
    unsigned images_count;
    struct services_raw_dns *dns;
    struct services_raw_service *services;
    unsigned services_count;
    struct raw_migration *migration;
    struct raw_ha *ha;
};

#define RAW_STRING(key, member)                                                                    \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config,       \
                           member, 0, CYAML_UNLIMITED)

static const cyaml_schema_field_t raw_fields[] = {
    RAW_STRING("listen", listen),
    RAW_STRING("api", api),
    RAW_STRING("journal", journal),
    RAW_STRING("heartbeat_ms", heartbeat_ms),
    RAW_STRING("host_timeout_ms", host_timeout_ms),
    RAW_STRING("agent_key_file", agent_key_file),
    RAW_STRING("tls_ca_file", tls_ca_file),
    RAW_STRING("tls_cert_file", tls_cert_file),
    RAW_STRING("tls_key_file", tls_key_file),
    RAW_STRING("insecure", insecure),
    RAW_STRING("standby_insecure_listen", standby_insecure_listen),
    RAW_STRING("fence_timeout_ms", fence_timeout_ms),
    RAW_STRING("provision_warm", provision_warm),
    RAW_STRING("port_timeout_ms", port_timeout_ms),
    RAW_STRING("confirm_timeout_ms", confirm_timeout_ms),
    RAW_STRING("agent_connections_max", agent_connections_max),
    RAW_STRING("api_tokens_file", api_tokens_file),
    RAW_STRING("api_insecure", api_insecure),
    RAW_STRING("api_tls_cert_file", api_tls_cert_file),
    RAW_STRING("api_tls_key_file", api_tls_key_file),
    CYAML_FIELD_SEQUENCE("api_names", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config,
                         api_names, &raw_string_schema, 0, 16),
    RAW_STRING("api_connections_max", api_connections_max),
    RAW_STRING("api_rate_per_s", api_rate_per_s),
    RAW_STRING("api_rate_burst", api_rate_burst),
    RAW_STRING("images_listen", images_listen),
    CYAML_FIELD_SEQUENCE("images", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config,
                         images, &images_raw_image_schema, 0, CYAML_UNLIMITED),
    CYAML_FIELD_MAPPING_PTR("dns", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config, dns,
                            services_raw_dns_fields),
    CYAML_FIELD_SEQUENCE("services", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config,
                         services, &services_raw_service_schema, 0, SERVICES_MAX),
    CYAML_FIELD_MAPPING_PTR("migration", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct raw_config, migration, raw_migration_fields),
    CYAML_FIELD_MAPPING_PTR("ha", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct raw_config, ha,
                            raw_ha_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t raw_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_config, raw_fields),
};

static const char *node_noun(const char *event)
{
    if (strncmp(event, "SEQUENCE", 8) == 0)
        return "a list";
    if (strncmp(event, "MAPPING", 7) == 0)
        return "a mapping";
    return "a single value";
}

/* libcyaml logs "Load: <message>", "Load: Backtrace:", then "in mapping field
 * 'KEY' (line: N, column: M)" frames; this reads those back.  Their wording is
 * libcyaml's, so anything unrecognised is passed on as it is. */
static void report_cyaml_failure(struct config_report *r, cyaml_err_t status)
{
    cleanup_free char *log = r->cyaml_log ? strdup(r->cyaml_log) : NULL;
    char *message = NULL;
    struct config_frame frames[CONFIG_MAX_FRAMES];
    int n = log ? config_cyaml_frames(log, &message, frames) : 0;
    /* The key at fault is the innermost field named; the line, the innermost known. */
    char field[128] = "";
    int line = 0;
    for (int i = 0; i < n && field[0] == '\0'; i++)
        if (frames[i].kind == CONFIG_FRAME_FIELD)
            snprintf(field, sizeof(field), "%s", frames[i].name);
    for (int i = 0; i < n && line == 0; i++)
        line = frames[i].line;
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof(where), "line %d: ", line);
    if (message == NULL) {
        report_add(r, "%s%s", where, cyaml_strerror(status));
    } else if (strncmp(message, "Unexpected key: ", 16) == 0 && field[0] != '\0') {
        report_add(r, "%s`%s` inside `%s`: unknown key; allowed: see docs/server.md", where,
                   message + 16, field);
    } else if (strncmp(message, "Unexpected key: ", 16) == 0) {
        char keys[256] = "";
        for (const cyaml_schema_field_t *f = raw_fields; f->key; f++)
            snprintf(keys + strlen(keys), sizeof(keys) - strlen(keys), "%s%s",
                     f == raw_fields ? "" : ", ", f->key);
        report_add(r, "`%s`: unknown key; allowed keys: %s", message + 16, keys);
    } else if (strncmp(message, "Mapping field already seen: ", 28) == 0) {
        report_add(r, "%s`%s` is given twice", where, message + 28);
    } else if (strncmp(message, "Expecting MAPPING", 17) == 0 && field[0] == '\0') {
        const char *got = strstr(message, "got event: ");
        report_add(r,
                   "the file holds %s; expected a mapping of keys to values, e.g. "
                   "`heartbeat_ms: 1000`",
                   got ? node_noun(got + 11) : "something else");
    } else if (strncmp(message, "Expecting ", 10) == 0 && field[0] != '\0') {
        const char *got = strstr(message, "got event: ");
        report_add(r, "%s`%s`: got %s; allowed: %s", where, field,
                   got ? node_noun(got + 11) : "something else", sc_allowed_for(field));
    } else if (strncmp(message, "libyaml: ", 9) == 0) {
        report_add(r, "%sYAML syntax error: %s", where, message + 9);
    } else {
        report_add(r, "%s%s%s%s", where, field[0] ? field : "", field[0] ? ": " : "", message);
    }
}

static int apply_defaults(struct server_config *cfg)
{
    cfg->heartbeat_ms = SERVER_DEFAULT_HEARTBEAT_MS;
    cfg->host_timeout_ms = server_default_host_timeout_ms(cfg->heartbeat_ms);
    cfg->fence_timeout_ms = services_default_fence_timeout_ms(cfg->host_timeout_ms);
    cfg->provision_warm = true;
    cfg->port_timeout_ms = SERVER_DEFAULT_PORT_TIMEOUT_MS;
    cfg->confirm_timeout_ms = SERVER_DEFAULT_CONFIRM_TIMEOUT_MS;
    cfg->agent_connections_max = SERVER_DEFAULT_AGENT_CONNECTIONS;
    cfg->api_connections_max = SERVER_DEFAULT_API_CONNECTIONS;
    cfg->api_rate_per_s = SERVER_DEFAULT_API_RATE_PER_S;
    cfg->api_rate_burst = SERVER_DEFAULT_API_RATE_BURST;
    cfg->journal = strdup(SERVER_DEFAULT_JOURNAL);
    vcr_error_t ignored = NULL;
    if (cfg->journal == NULL ||
        vcr_parse_host_port(SERVER_DEFAULT_LISTEN, &cfg->listen_host, &cfg->listen_port, &ignored) <
            0 ||
        vcr_parse_host_port(SERVER_DEFAULT_API, &cfg->api_host, &cfg->api_port, &ignored) < 0) {
        vcr_error_release(&ignored);
        return -1;
    }
    return 0;
}

struct server_config *server_config_defaults(vcr_error_t *err)
{
    struct server_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || apply_defaults(cfg) < 0) {
        server_config_free(cfg);
        vcr_error_make(err, ENOMEM, "configuration defaults: out of memory");
        return NULL;
    }
    return cfg;
}

static void convert_migration(struct config_report *r, const struct raw_migration *m,
                              struct server_config *cfg)
{
    uint32_t pct = 0;
    if (m->cpu_pct == NULL)
        report_add(r, "`migration.cpu_pct`: missing; allowed: an integer 1..100 (percent of the "
                      "standby VM's CPUs)");
    else
        sc_take_count(r, "migration.cpu_pct", m->cpu_pct, 1, 100, &pct);
    cfg->migration.samples = SERVER_MIGRATION_SAMPLES_DEF;
    if (m->samples)
        sc_take_count(r, "migration.samples", m->samples, 1, 100, &cfg->migration.samples);
    if (m->targets_count == 0 || m->targets_count > SERVER_MIGRATION_TARGETS_MAX) {
        report_add(r, "`migration.targets`: %u given; allowed: 1..%d standby host names",
                   m->targets_count, SERVER_MIGRATION_TARGETS_MAX);
        return;
    }
    cfg->migration.targets = calloc(m->targets_count, sizeof(char *));
    if (cfg->migration.targets == NULL) {
        report_add(r, "`migration.targets`: out of memory");
        return;
    }
    for (unsigned i = 0; i < m->targets_count; i++) {
        if (!sc_valid_host_name(m->targets[i])) {
            report_add(r,
                       "`migration.targets[%u]`: `%s` is not a host name; allowed: 1..64 of "
                       "letters, digits, . _ -",
                       i, m->targets[i]);
            continue;
        }
        cfg->migration.targets[cfg->migration.n_targets++] = strdup(m->targets[i]);
    }
    cfg->migration.cpu_pct = pct;
}

/* `ha:` (docs/ha.md); after listen and api, whose addresses it defaults to. */
static void convert_ha(struct config_report *r, const struct raw_ha *h, struct server_config *cfg)
{
    cfg->ha.lease_ttl_s = SERVER_HA_LEASE_TTL_DEF_S;
    if (h->lease_ttl_s)
        sc_take_count(r, "ha.lease_ttl_s", h->lease_ttl_s, 1, SERVER_HA_LEASE_TTL_MAX_S,
                      &cfg->ha.lease_ttl_s);
    if (h->etcd_count == 0 || h->etcd_count > SERVER_HA_ETCD_MAX) {
        report_add(r, "`ha.etcd`: %u given; allowed: 1..%d etcd client URLs http://ADDR:PORT",
                   h->etcd_count, SERVER_HA_ETCD_MAX);
        return;
    }
    if (h->name == NULL || !sc_valid_host_name(h->name)) {
        report_add(r,
                   "`ha.name`: %s%s%s; allowed: this server's name among its peers, 1..64 of "
                   "letters, digits, . _ -",
                   h->name ? "`" : "missing", h->name ? h->name : "",
                   h->name ? "` is not a name" : "");
        return;
    }
    cfg->ha.etcd = calloc(h->etcd_count, sizeof(char *));
    if (cfg->ha.etcd == NULL || (cfg->ha.name = strdup(h->name)) == NULL) {
        report_add(r, "`ha`: out of memory");
        return;
    }
    for (unsigned i = 0; i < h->etcd_count; i++) {
        cleanup_free char *host = NULL;
        cleanup_error vcr_error_t err = NULL;
        uint16_t port;
        const char *u = h->etcd[i];
        if (strncmp(u, "http://", 7) != 0 || vcr_parse_host_port(u + 7, &host, &port, &err) < 0) {
            report_add(r,
                       "`ha.etcd[%u]`: `%s` is not an etcd client URL; allowed: http://ADDR:PORT",
                       i, u);
            continue;
        }
        cfg->ha.etcd[cfg->ha.n_etcd++] = strdup(u);
    }
    /* What the leader publishes for agents and clients to reach it: the listen
     * address unless it is 0.0.0.0, which nobody can connect to. */
    const char *adv = h->advertise, *adv_api = h->advertise_api;
    char listen[64], api[64];
    snprintf(listen, sizeof(listen), "%s:%u", cfg->listen_host, cfg->listen_port);
    snprintf(api, sizeof(api), "%s:%u", cfg->api_host, cfg->api_port);
    if (adv == NULL && strcmp(cfg->listen_host, "0.0.0.0") != 0)
        adv = listen;
    if (adv_api == NULL && strcmp(cfg->api_host, "0.0.0.0") != 0)
        adv_api = api;
    if (adv == NULL)
        report_add(r, "`ha.advertise`: missing while `listen` is 0.0.0.0; allowed: %s",
                   ADDRESS_ALLOWED);
    else if ((cfg->ha.advertise = strdup(adv)) == NULL)
        report_add(r, "`ha`: out of memory");
    if (adv_api == NULL)
        report_add(r, "`ha.advertise_api`: missing while `api` is 0.0.0.0; allowed: %s",
                   ADDRESS_ALLOWED);
    else if ((cfg->ha.advertise_api = strdup(adv_api)) == NULL)
        report_add(r, "`ha`: out of memory");
    cfg->ha.enabled = true;
}

static void report_line(void *ctx, const char *line)
{
    report_add(ctx, "%s", line);
}

/* `images`, `images_listen`, and every service's `standby.image` against them. */
static void convert_images(struct config_report *r, const struct raw_config *raw,
                           const char *base_dir, struct server_config *cfg)
{
    images_config_convert(raw->images, raw->images_count, base_dir, &cfg->images, &cfg->n_images,
                          report_line, r);
    if (raw->images_listen) {
        sc_take_address(r, "images_listen", raw->images_listen, &cfg->images_host,
                        &cfg->images_port);
        if (cfg->images_host && strcmp(cfg->images_host, "0.0.0.0") == 0) {
            report_add(r,
                       "`images_listen`: `%s`: standby agents fetch from this address, so it "
                       "cannot be 0.0.0.0; allowed: %s",
                       raw->images_listen, sc_allowed_for("images_listen"));
            free(cfg->images_host);
            cfg->images_host = NULL;
        }
    } else if (raw->images_count) {
        report_add(r, "`images_listen`: missing while %u image(s) are configured; allowed: %s",
                   raw->images_count, sc_allowed_for("images_listen"));
    }
    for (size_t i = 0; i < cfg->n_services; i++) {
        const char *name = cfg->services[i].standby.image;
        if (name == NULL || images_find(cfg->images, cfg->n_images, name))
            continue;
        char names[256] = "";
        for (size_t j = 0; j < cfg->n_images && strlen(names) < sizeof(names) - 70; j++)
            if (cfg->images[j].name)
                snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                         names[0] ? ", " : "", cfg->images[j].name);
        report_add(r, "`services[%zu].standby.image`: `%s` is not in `images`; allowed: %s", i,
                   name, names[0] ? names : "(no image is configured: add it to `images:`)");
    }
}

/* TLS is required unless the file says `insecure: true` (docs/security.md). */
static void convert_tls(struct config_report *r, const struct raw_config *raw, const char *base_dir,
                        struct server_config *cfg)
{
    if (raw->insecure)
        sc_take_bool(r, "insecure", raw->insecure, &cfg->insecure);
    if (raw->standby_insecure_listen) {
        sc_take_address(r, "standby_insecure_listen", raw->standby_insecure_listen,
                        &cfg->standby_insecure_host, &cfg->standby_insecure_port);
        if (cfg->insecure)
            report_add(r, "`standby_insecure_listen`: set while `insecure` is true (the agent "
                          "port is then plain TCP for every agent); remove one of them");
    }
    if (cfg->insecure) {
        if (raw->tls_ca_file || raw->tls_cert_file || raw->tls_key_file)
            report_add(r, "`insecure`: true while tls_* keys are set; allowed: either TLS "
                          "(tls_ca_file, tls_cert_file, tls_key_file) or `insecure: true`");
        return;
    }
    /* None of them: cfg->tls stays NULL and vcr-server refuses to start
     * (server_main.c); configs made for tests need no certificates. */
    if (!raw->tls_ca_file && !raw->tls_cert_file && !raw->tls_key_file)
        return;
    cleanup_free char *ca = NULL, *cert = NULL, *key = NULL;
    if (raw->tls_ca_file)
        sc_take_path(r, "tls_ca_file", raw->tls_ca_file, base_dir, &ca);
    if (raw->tls_cert_file)
        sc_take_path(r, "tls_cert_file", raw->tls_cert_file, base_dir, &cert);
    if (raw->tls_key_file)
        sc_take_path(r, "tls_key_file", raw->tls_key_file, base_dir, &key);
    cleanup_error vcr_error_t err = NULL;
    struct proto_tls_files files = {.ca = ca, .cert = cert, .key = key};
    cfg->tls = proto_tls_new(PROTO_TLS_SERVER, &files, &err);
    if (cfg->tls == NULL)
        report_add(r, "%s", vcr_error_msg(err));
}

/* The HTTP API: TLS and tokens, or `api_insecure: true` (docs/security.md). */
static void convert_api(struct config_report *r, const struct raw_config *raw, const char *base_dir,
                        struct server_config *cfg)
{
    if (raw->api_insecure)
        sc_take_bool(r, "api_insecure", raw->api_insecure, &cfg->api_insecure);
    if (raw->api_connections_max)
        sc_take_count(r, "api_connections_max", raw->api_connections_max, 16, 65536,
                      &cfg->api_connections_max);
    if (raw->api_rate_per_s)
        sc_take_count(r, "api_rate_per_s", raw->api_rate_per_s, 1, 100000, &cfg->api_rate_per_s);
    if (raw->api_rate_burst)
        sc_take_count(r, "api_rate_burst", raw->api_rate_burst, 1, 100000, &cfg->api_rate_burst);
    for (unsigned i = 0; i < raw->api_names_count; i++) {
        char host[256];
        if (api_host_of(raw->api_names[i], host, sizeof(host)) < 0 ||
            strcmp(host, raw->api_names[i]) != 0) {
            report_add(r, "`api_names[%u]`: `%s` is not a host name; allowed: %s", i,
                       raw->api_names[i], sc_allowed_for("api_names"));
            continue;
        }
        char **grown = realloc(cfg->api_names, (cfg->n_api_names + 1) * sizeof(char *));
        if (grown == NULL || (grown[cfg->n_api_names] = strdup(host)) == NULL) {
            if (grown)
                cfg->api_names = grown;
            report_add(r, "`api_names`: out of memory");
            return;
        }
        cfg->api_names = grown;
        cfg->n_api_names++;
    }
    if (cfg->api_insecure) {
        if (raw->api_tokens_file || raw->api_tls_cert_file || raw->api_tls_key_file)
            report_add(r, "`api_insecure`: true while api_tokens_file or api_tls_* is set; "
                          "allowed: either tokens over TLS or `api_insecure: true`");
        return;
    }
    /* Neither: cfg->api_tls stays NULL and vcr-server refuses to start
     * (server_main.c); configs made for tests need no tokens. */
    if (raw->api_tokens_file == NULL) {
        if (raw->api_tls_cert_file || raw->api_tls_key_file)
            report_add(r, "`api_tokens_file`: missing while api_tls_* is set; allowed: %s",
                       sc_allowed_for("api_tokens_file"));
        return;
    }
    sc_take_path(r, "api_tokens_file", raw->api_tokens_file, base_dir, &cfg->api_tokens_file);
    cleanup_error vcr_error_t err = NULL;
    if (cfg->api_tokens_file &&
        api_tokens_load(cfg->api_tokens_file, &cfg->api_tokens, &cfg->n_api_tokens, &err) < 0) {
        report_add(r, "`api_tokens_file`: %s", vcr_error_msg(err));
        return;
    }
    if ((raw->api_tls_cert_file == NULL) != (raw->api_tls_key_file == NULL)) {
        report_add(r,
                   "`%s`: missing; allowed: both api_tls_cert_file and api_tls_key_file, or "
                   "neither (then the agent port's tls_cert_file and tls_key_file)",
                   raw->api_tls_cert_file ? "api_tls_key_file" : "api_tls_cert_file");
        return;
    }
    cleanup_free char *cert = NULL, *key = NULL, *ca = NULL;
    if (raw->api_tls_cert_file) {
        sc_take_path(r, "api_tls_cert_file", raw->api_tls_cert_file, base_dir, &cert);
        sc_take_path(r, "api_tls_key_file", raw->api_tls_key_file, base_dir, &key);
    } else if (raw->tls_cert_file && raw->tls_key_file) {
        sc_take_path(r, "tls_cert_file", raw->tls_cert_file, base_dir, &cert);
        sc_take_path(r, "tls_key_file", raw->tls_key_file, base_dir, &key);
        if (raw->tls_ca_file)
            sc_take_path(r, "tls_ca_file", raw->tls_ca_file, base_dir, &ca);
    } else {
        report_add(r, "`api_tokens_file`: tokens need TLS: set api_tls_cert_file and "
                      "api_tls_key_file, or the agent port's tls_* keys (its certificate serves "
                      "the API too)");
        return;
    }
    if (cert == NULL || key == NULL)
        return;
    struct proto_tls_files files = {.ca = ca, .cert = cert, .key = key};
    cfg->api_tls = proto_tls_new(PROTO_TLS_API_SERVER, &files, &err);
    if (cfg->api_tls == NULL)
        report_add(r, "API TLS: %s", vcr_error_msg(err));
}

static void convert(struct config_report *r, const struct raw_config *raw, const char *base_dir,
                    struct server_config *cfg)
{
    if (raw->listen)
        sc_take_address(r, "listen", raw->listen, &cfg->listen_host, &cfg->listen_port);
    if (raw->api)
        sc_take_address(r, "api", raw->api, &cfg->api_host, &cfg->api_port);
    if (raw->journal)
        sc_take_path(r, "journal", raw->journal, base_dir, &cfg->journal);
    if (raw->heartbeat_ms)
        sc_take_ms(r, "heartbeat_ms", raw->heartbeat_ms, SERVER_HEARTBEAT_MIN_MS,
                   SERVER_HEARTBEAT_MAX_MS, &cfg->heartbeat_ms);
    cfg->host_timeout_ms = server_default_host_timeout_ms(cfg->heartbeat_ms);
    /* Below two heartbeats, one late heartbeat on a busy host would declare it lost. */
    if (raw->host_timeout_ms)
        sc_take_ms(r, "host_timeout_ms", raw->host_timeout_ms, 2 * cfg->heartbeat_ms,
                   SERVER_HOST_TIMEOUT_MAX_MS, &cfg->host_timeout_ms);
    if (raw->agent_key_file) {
        sc_take_path(r, "agent_key_file", raw->agent_key_file, base_dir, &cfg->agent_key_file);
        cleanup_error vcr_error_t err = NULL;
        if (cfg->agent_key_file && proto_auth_load_key(cfg->agent_key_file, &cfg->agent_key,
                                                       &cfg->agent_key_len, &err) < 0)
            report_add(r, "`agent_key_file`: %s", vcr_error_msg(err));
    }
    convert_tls(r, raw, base_dir, cfg);
    convert_api(r, raw, base_dir, cfg);
    cfg->fence_timeout_ms = services_default_fence_timeout_ms(cfg->host_timeout_ms);
    /* Shorter than the host timeout, an agent would kill its VMs before the
     * server even calls its host lost. */
    if (raw->fence_timeout_ms)
        sc_take_ms(r, "fence_timeout_ms", raw->fence_timeout_ms, cfg->host_timeout_ms,
                   SERVICES_FENCE_TIMEOUT_MAX_MS, &cfg->fence_timeout_ms);
    if (raw->provision_warm)
        sc_take_bool(r, "provision_warm", raw->provision_warm, &cfg->provision_warm);
    if (raw->port_timeout_ms)
        sc_take_ms(r, "port_timeout_ms", raw->port_timeout_ms, 1000, 3600000,
                   &cfg->port_timeout_ms);
    if (raw->confirm_timeout_ms)
        sc_take_ms(r, "confirm_timeout_ms", raw->confirm_timeout_ms, 1000, 3600000,
                   &cfg->confirm_timeout_ms);
    if (raw->agent_connections_max)
        sc_take_count(r, "agent_connections_max", raw->agent_connections_max, 16, 65536,
                      &cfg->agent_connections_max);
    services_config_convert(raw->dns, raw->services, raw->services_count, base_dir, &cfg->dns,
                            &cfg->services, &cfg->n_services, report_line, r);
    if (raw->migration)
        convert_migration(r, raw->migration, cfg);
    if (raw->ha)
        convert_ha(r, raw->ha, cfg);
    convert_images(r, raw, base_dir, cfg);
}

static struct server_config *parse(const char *yaml, size_t len, const char *origin,
                                   const char *base_dir, vcr_error_t *err)
{
    struct config_report r = {.schema = &raw_schema};
    const cyaml_config_t cyaml_cfg = {
        .log_fn = config_cyaml_log,
        .log_ctx = &r,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT,
    };
    struct server_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || apply_defaults(cfg) < 0) {
        report_add(&r, "out of memory");
        config_report_finish_each(&r, origin, err);
        config_report_release(&r);
        server_config_free(cfg);
        return NULL;
    }
    struct raw_config *raw = NULL;
    cyaml_err_t status = cyaml_load_data((const uint8_t *)yaml, len, &cyaml_cfg, &raw_schema,
                                         (cyaml_data_t **)&raw, NULL);
    if (status != CYAML_OK)
        report_cyaml_failure(&r, status);
    else if (raw != NULL)
        convert(&r, raw, base_dir, cfg);
    cyaml_free(&cyaml_cfg, &raw_schema, raw, 0);
    int ret = config_report_finish_each(&r, origin, err);
    config_report_release(&r);
    if (ret < 0) {
        server_config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct server_config *server_config_parse(const char *yaml, size_t len, const char *origin,
                                          vcr_error_t *err)
{
    return parse(yaml, len, origin, NULL, err);
}

struct server_config *server_config_load(const char *path, vcr_error_t *err)
{
    cleanup_file FILE *f = fopen(path, "re");
    if (f == NULL) {
        vcr_error_errno(err, "config `%s`", path);
        return NULL;
    }
    cleanup_free char *buf = malloc(CONFIG_MAX_BYTES + 1);
    if (buf == NULL) {
        vcr_error_errno(err, "config `%s`", path);
        return NULL;
    }
    size_t len = fread(buf, 1, CONFIG_MAX_BYTES + 1, f);
    if (ferror(f)) {
        vcr_error_errno(err, "config `%s`", path);
        return NULL;
    }
    if (len > CONFIG_MAX_BYTES) {
        vcr_error_make(err, EFBIG, "config `%s`: larger than %d bytes", path, CONFIG_MAX_BYTES);
        return NULL;
    }
    cleanup_free char *dir = strdup(path);
    if (dir == NULL) {
        vcr_error_errno(err, "config `%s`", path);
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    return parse(buf, len, path, slash ? dir : NULL, err);
}

const struct image_config *server_config_service_image(const struct server_config *cfg,
                                                       const struct service_config *s)
{
    return s->standby.image ? images_find(cfg->images, cfg->n_images, s->standby.image) : NULL;
}

json_t *server_config_image_json(const struct server_config *cfg, const struct image_config *img)
{
    char url[512];
    if (cfg->images_host == NULL ||
        images_url(cfg->images_host, cfg->images_port, img->name, url, sizeof(url)) < 0)
        return NULL;
    return json_pack("{s:s, s:s, s:s, s:s*}", "name", img->name, "sha256", img->sha256, "url", url,
                     "cmd", img->cmd);
}

void server_config_free(struct server_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->listen_host);
    free(cfg->api_host);
    free(cfg->journal);
    free(cfg->agent_key_file);
    free(cfg->agent_key);
    proto_tls_free(cfg->tls);
    free(cfg->api_tokens_file);
    free(cfg->api_tokens);
    proto_tls_free(cfg->api_tls);
    for (size_t i = 0; i < cfg->n_api_names; i++)
        free(cfg->api_names[i]);
    free(cfg->api_names);
    free(cfg->standby_insecure_host);
    dns_settings_free(cfg->dns);
    images_free(cfg->images, cfg->n_images);
    free(cfg->images_host);
    services_free(cfg->services, cfg->n_services);
    for (size_t i = 0; i < cfg->migration.n_targets; i++)
        free(cfg->migration.targets[i]);
    free(cfg->migration.targets);
    for (size_t i = 0; i < cfg->ha.n_etcd; i++)
        free(cfg->ha.etcd[i]);
    free(cfg->ha.etcd);
    free(cfg->ha.name);
    free(cfg->ha.advertise);
    free(cfg->ha.advertise_api);
    free(cfg);
}
