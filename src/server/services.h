/* Protected services and the DNS settings of the recovery engine: the model
 * of the `dns:`, `fence_timeout_ms` and `services:` keys of the server's
 * configuration (docs/server.md, docs/recovery.md), and their validation.
 *
 * server_config.c reads the YAML with libcyaml into the raw structs below
 * (every scalar a string, as for the other keys) and calls
 * services_config_convert(), which checks every field and reports each bad
 * one by its path (`services[1].check.timeout_ms`), its value and what is
 * allowed. */
#ifndef VCR_SERVER_SERVICES_H
#define VCR_SERVER_SERVICES_H

#include <cyaml/cyaml.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SERVICES_DEFAULT_TTL         5
#define SERVICES_DEFAULT_INTERVAL_MS 1000
#define SERVICES_DEFAULT_TIMEOUT_MS  500
#define SERVICES_DEFAULT_FAILURES    3
/* A primary that has not answered since its start is booting, until this long
 * after its first unanswered probe; then its failures count (0: wait forever). */
#define SERVICES_DEFAULT_BOOT_GRACE_MS 300000
#define SERVICES_MAX_BOOT_GRACE_MS     3600000
#define SERVICES_DEFAULT_PREFIX        24
#define SERVICES_FENCE_TIMEOUT_MAX_MS  600000
/* 10,000 VMs and services on one server is the goal of make bench-scale
 * (bench/results/scale.md); room above it. */
#define SERVICES_MAX 16384
/* data.interval_s: at most a day; below 10 s a copy of a volume through the
 * server (about 1 MB/s compressed) would hardly end before the next begins. */
#define SERVICES_DATA_INTERVAL_MIN_S 10
#define SERVICES_DATA_INTERVAL_MAX_S 86400
/* failback: auto (docs/recovery.md, "Automatic failback"). */
#define SERVICES_FAILBACK_AFTER_S        60
#define SERVICES_FAILBACK_MIN_INTERVAL_S 600
#define SERVICES_DATA_PATH_MAX           128

/* The server waits fence_timeout_ms after a host is lost before switching a
 * service off it; the host's agent self-fences at welcome's fence_after_ms,
 * agents_fence_after_ms(host_timeout + fence_timeout) after its last contact.
 * The default equals the host timeout (the least allowed): the agent then
 * fences at least half a host timeout after the server declared the host
 * lost (an agent never kills its VMs over a silence the server does not call a
 * host loss, nor over one heartbeat late), and a quarter of host + fence
 * timeout (at most 1000 ms) before the server switches (docs/fencing.md, "The
 * margins with the defaults"; tests/unit/test_recovery.c checks these). */
static inline uint32_t services_default_fence_timeout_ms(uint32_t host_timeout_ms)
{
    return host_timeout_ms;
}

/* A health check's protocol: one of check.h's check_protocols (tcp, http,
 * redis, ...), found by name when the configuration is read. */
struct check_ops;

/* What stands by for a service (`standby.mode`): one of the recovery engine's
 * standby modes (src/server/recovery/standby_mode.h), found by name. */
struct standby_mode_ops;

/* How a recovery moves a service's clients to its container (`takeover:`,
 * docs/recovery.md "Address takeover"): bits, each one way of switch.h. */
#define SERVICES_TAKEOVER_DNS     1u /* the name's A (and AAAA) record to the container's */
#define SERVICES_TAKEOVER_ADDRESS 2u /* the primary's address onto the container (same L2) */

const char *check_type_name(const struct check_ops *t);
/* "dns", "address" or "both". */
const char *services_takeover_name(unsigned takeover);

struct service_config {
    char *name;
    char *dns_name;
    uint32_t ttl;
    unsigned takeover; /* SERVICES_TAKEOVER_* bits; DNS only by default */
    struct {
        char *host;
        char *vm;
        char *address;
        char *address6; /* the AAAA record's address; NULL: none (then so is standby's) */
        uint16_t port;
    } primary;
    struct {
        const struct check_ops *type;
        char *path; /* http only; "/" by default */
        uint32_t interval_ms;
        uint32_t timeout_ms;
        uint32_t failures;
        uint32_t boot_grace_ms;
        bool ipv6; /* `family: ipv6`: the primary is probed at primary.address6 */
    } check;
    struct {
        const struct standby_mode_ops *mode;
        char *host;      /* the standby VM's agent (it says hello with its VM name) */
        char *container; /* the container modes (standby_mode.h `container`); else NULL */
        char *vm;        /* the VM modes: the standby VM, one of `host`'s VMs; else NULL */
        char *address;
        char *address6; /* the AAAA record after a recovery; NULL: none */
        uint32_t prefix;
        char *gateway;  /* NULL: none */
        char *template; /* NULL: the agent's default */
        char *image;    /* an `images:` name (server_config.c checks it); NULL: none */
        /* Where the container is created cold when `host` cannot take the
         * recovery (lost, or not running the warm container); NULL: none. */
        char *fallback_host;
        /* false (the default): the container is unprivileged (user namespace, capabilities
         * dropped, seccomp; docs/security.md "Standby containers"). */
        bool privileged;
    } standby;
    /* The service's file data (docs/data.md): a volume of the primary VM,
     * copied to the standby side and attached to the container at `path`.
     * volume NULL: the service declares no data. */
    struct {
        char *volume;        /* a volume of primary.vm (the host agent checks it) */
        char *path;          /* where the container sees it */
        uint32_t interval_s; /* warm copies while the primary is healthy; 0: at recovery only */
    } data;
    /* Failback policy: manual (the operator's `vcr failback`), or auto: once
     * the service is recovered and the primary's host has been connected for
     * after_s, at most once per min_interval_s; a service that fails again
     * within min_interval_s of an automatic failback is not failed back
     * automatically again until the operator acts (flapping). */
    struct {
        bool automatic;
        uint32_t after_s;
        uint32_t min_interval_s;
    } failback;
    /* `hook:` (docs/recovery.md, "Switch hook"): the operator's program, run
     * without a shell as the switch's last way (recovery/switch_hook.c), and
     * again at failback.  argv NULL: none. */
    struct {
        char **argv; /* NULL-terminated; argv[0] an absolute path */
        uint32_t timeout_ms;
    } hook;
};

#define SERVICES_HOOK_TIMEOUT_MS 10000u
#define SERVICES_HOOK_ARGS_MAX   32

struct dns_settings {
    char *server; /* dotted quad */
    uint16_t port;
    char *zone;
    char *key_file;
    char *key_name;
    char *key_secret;
    const char *key_algorithm; /* static: "hmac-sha256" or "hmac-sha512" */
};

/* --- raw YAML (strings), shared with server_config.c's libcyaml schema --- */

struct services_raw_primary {
    char *host, *vm, *address, *address6, *port;
};
struct services_raw_check {
    char *type, *path, *interval_ms, *timeout_ms, *failures, *boot_grace_ms, *family;
};
struct services_raw_standby {
    char *mode, *host, *container, *vm, *address, *address6, *prefix, *gateway, *template, *image,
        *fallback_host, *privileged;
};
struct services_raw_data {
    char *volume, *path, *interval_s;
};
struct services_raw_failback {
    char *mode, *after_s, *min_interval_s;
};
struct services_raw_hook {
    char **run;
    unsigned run_count;
    char *timeout_ms;
};
struct services_raw_service {
    char *name, *dns_name, *ttl, *takeover;
    struct services_raw_primary *primary;
    struct services_raw_check *check;
    struct services_raw_standby *standby;
    struct services_raw_data *data;
    struct services_raw_failback *failback;
    struct services_raw_hook *hook;
};
struct services_raw_dns {
    char *server, *zone, *key_file;
};

extern const cyaml_schema_field_t services_raw_dns_fields[];
extern const cyaml_schema_value_t services_raw_service_schema;

/* One message per bad field, without the `config FILE: ` prefix. */
typedef void (*services_report_fn)(void *ctx, const char *line);

/* A configuration being converted: each problem becomes one report line, and
 * is counted (shared by services.c and images.c). */
struct services_conv {
    services_report_fn report;
    void *ctx;
    unsigned problems;
};
void services_conv_bad(struct services_conv *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Converts and validates; base_dir resolves a relative key_file (may be NULL).
 * *dns is NULL when raw_dns is; services is an array of n.  The TSIG key is
 * read here, so that --config-test catches a missing or bad key file.
 * Returns the number of problems reported. */
unsigned services_config_convert(const struct services_raw_dns *raw_dns,
                                 const struct services_raw_service *raw, size_t n,
                                 const char *base_dir, struct dns_settings **dns,
                                 struct service_config **services, size_t *n_services,
                                 services_report_fn report, void *ctx);

void dns_settings_free(struct dns_settings *dns);
void services_free(struct service_config *services, size_t n);

#endif
