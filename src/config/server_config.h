/* vcr-server configuration: one YAML mapping, every key optional
 * (docs/server.md has the reference). */
#ifndef VCR_SERVER_CONFIG_H
#define VCR_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "server/images.h"
#include "server/services.h"

/* The default heartbeat, 250 ms, with the host timeout below (1250 ms): a lost
 * host is declared within 1.35 s (the 100 ms liveness tick); the heartbeat gaps
 * measured under load that justify it: docs/server.md, "Choosing the timeouts". */
#define SERVER_DEFAULT_LISTEN       "127.0.0.1:7070"
#define SERVER_DEFAULT_API          "127.0.0.1:7080"
#define SERVER_DEFAULT_JOURNAL      "/var/lib/vcr-server/journal.db"
#define SERVER_DEFAULT_HEARTBEAT_MS 250
#define SERVER_HEARTBEAT_MIN_MS     100
#define SERVER_HEARTBEAT_MAX_MS     60000
#define SERVER_HOST_TIMEOUT_MAX_MS  600000

/* A host is lost after this much silence, unless host_timeout_ms says otherwise:
 * three missed heartbeats plus slack for a loaded machine (with the default
 * heartbeat: five heartbeat periods, 1250 ms). */
static inline uint32_t server_default_host_timeout_ms(uint32_t heartbeat_ms)
{
    return 3 * heartbeat_ms + 500;
}

#define SERVER_DEFAULT_PORT_TIMEOUT_MS    60000
#define SERVER_DEFAULT_CONFIRM_TIMEOUT_MS 15000
#define SERVER_DEFAULT_AGENT_CONNECTIONS  1024
#define SERVER_DEFAULT_API_CONNECTIONS    256
#define SERVER_DEFAULT_API_RATE_PER_S     50
#define SERVER_DEFAULT_API_RATE_BURST     100

/* Validated values.  Files cannot set port 0, but code (tests) may, to get an
 * ephemeral port. */
struct proto_tls;
struct api_token;

struct server_config {
    char *listen_host;
    uint16_t listen_port;
    char *api_host;
    uint16_t api_port;
    char *journal;
    uint32_t heartbeat_ms;
    uint32_t host_timeout_ms;
    char *agent_key_file; /* NULL: agents are not authenticated */
    char *agent_key;      /* the key read from agent_key_file */
    size_t agent_key_len;
    /* The agent port's TLS (docs/security.md): from tls_ca_file, tls_cert_file,
     * tls_key_file; NULL only with `insecure: true` (plain TCP) or for a config
     * made in code (tests). */
    struct proto_tls *tls;
    bool insecure;
    /* standby_insecure_listen: a plain-TCP port for standby agents only; NULL: none. */
    char *standby_insecure_host;
    uint16_t standby_insecure_port;
    /* Recovery (docs/recovery.md); dns is NULL when the file has no `dns:`. */
    uint32_t fence_timeout_ms;
    /* Create or start the container of every warm service on its standby host
     * while the primary serves it (docs/recovery.md, "Provisioning"). */
    bool provision_warm;
    /* How long a recovery waits for the container's port, and for the switched
     * name to answer as a client sees it, before it fails (docs/recovery.md). */
    uint32_t port_timeout_ms;
    uint32_t confirm_timeout_ms;
    /* Agent-port connections held at once; more are closed at accept (the
     * server keeps descriptors for its probes, docs/server.md). */
    uint32_t agent_connections_max;
    /* The HTTP API (docs/security.md, "The HTTP API"): bearer tokens (their
     * hashes, from api_tokens_file) over TLS (api_tls), or, with `api_insecure:
     * true`, plain HTTP without authentication.  Both NULL and api_insecure
     * false only for a config made in code (tests): vcr-server refuses it. */
    char *api_tokens_file;
    struct api_token *api_tokens;
    size_t n_api_tokens;
    struct proto_tls *api_tls;
    bool api_insecure;
    char **api_names; /* more names of the API for the Host check */
    size_t n_api_names;
    uint32_t api_connections_max; /* connections held at once */
    uint32_t api_rate_per_s;      /* requests per second per client ... */
    uint32_t api_rate_burst;      /* ... and the burst above it */
    struct dns_settings *dns;
    /* Container images (docs/server.md, "Container images") and the listener
     * standby agents download them from: images_host is NULL when the file
     * has no `images_listen` (then it has no `images` either). */
    struct image_config *images;
    size_t n_images;
    char *images_host;
    uint16_t images_port;
    struct service_config *services;
    size_t n_services;
    /* Migration policy (docs/migration.md): cpu_pct 0 when the file has none. */
    struct {
        uint32_t cpu_pct; /* a standby VM at or above this ... */
        uint32_t samples; /* ... for this many samples in a row ... */
        char **targets;   /* ... has its busiest container moved to one of these */
        size_t n_targets;
    } migration;
    /* Redundant servers on etcd (docs/ha.md): enabled false without `ha:`,
     * the embedded single-server default. */
    struct {
        bool enabled;
        char **etcd; /* http://ADDR:PORT client URLs */
        size_t n_etcd;
        uint32_t lease_ttl_s;
        char *name;
        char *advertise;     /* HOST:PORT agents reach this server's agent port at */
        char *advertise_api; /* HOST:PORT of its HTTP API */
    } ha;
};

/* 1 s: a takeover within 2 s (etcd's lease expiry, checked every 500 ms, plus
 * one poll); etcd must run with --election-timeout <= 600 ms, else it rounds
 * the lease up to 1.5 election timeouts (docs/ha.md). */
#define SERVER_HA_LEASE_TTL_DEF_S 1
#define SERVER_HA_LEASE_TTL_MAX_S 60
#define SERVER_HA_ETCD_MAX        16
/* Every key of the servers lives under it (docs/ha.md). */
#define SERVER_HA_PREFIX "/vcr/"

#define SERVER_MIGRATION_SAMPLES_DEF 5
#define SERVER_MIGRATION_TARGETS_MAX 16

/* The built-in defaults, as if from an empty file. */
struct server_config *server_config_defaults(vcr_error_t *err);
/* Load and validate a file; every bad field is named in *err, one per line. */
struct server_config *server_config_load(const char *path, vcr_error_t *err);
/* Same from memory; origin names the text in messages. */
struct server_config *server_config_parse(const char *yaml, size_t len, const char *origin,
                                          vcr_error_t *err);
/* The image a service's container is made from (standby.image), or NULL. */
const struct image_config *server_config_service_image(const struct server_config *cfg,
                                                       const struct service_config *s);
/* A container order's `image` member: {name, sha256, url, cmd?} (docs/protocol.md). */
json_t *server_config_image_json(const struct server_config *cfg, const struct image_config *img);
void server_config_free(struct server_config *cfg);

#endif
