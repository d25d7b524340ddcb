/* The server configuration's scalars (server_config.c reads every one as a
 * string): what each key accepts, and the strict conversions of addresses,
 * durations, counts, booleans and paths, after redis's config.c. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "config/config_internal.h"
#include "config/server_config_priv.h"

/* What each key accepts, for messages; same keys as raw_fields. */
static const struct {
    const char *key;
    const char *allowed;
} allowed_values[] = {
    {"listen", ADDRESS_ALLOWED},
    {"api", ADDRESS_ALLOWED},
    {"journal", "a file path"},
    {"heartbeat_ms", "an integer 100..60000"},
    {"host_timeout_ms", "an integer from 2 x heartbeat_ms to 600000"},
    {"agent_key_file", "the path of a file holding a key of 16..4096 bytes"},
    {"tls_ca_file", "the path of the CA certificate (PEM, `vcr pki init`)"},
    {"tls_cert_file", "the path of the server's certificate (PEM, `vcr pki issue --server`)"},
    {"tls_key_file", "the path of the server certificate's key (PEM)"},
    {"insecure", "true, false"},
    {"standby_insecure_listen", ADDRESS_ALLOWED},
    {"fence_timeout_ms", "an integer from host_timeout_ms to 600000"},
    {"provision_warm", "true, false"},
    {"port_timeout_ms", "an integer 1000..3600000"},
    {"confirm_timeout_ms", "an integer 1000..3600000"},
    {"agent_connections_max", "an integer 16..65536"},
    {"api_tokens_file", "the path of the API's tokens file (`vcr pki token`)"},
    {"api_insecure", "true, false"},
    {"api_tls_cert_file", "the path of the API's certificate (PEM; default tls_cert_file)"},
    {"api_tls_key_file", "the path of its key (PEM; default tls_key_file)"},
    {"api_names", "a list of up to 16 host names the API is reached by"},
    {"api_connections_max", "an integer 16..65536"},
    {"api_rate_per_s", "an integer 1..100000"},
    {"api_rate_burst", "an integer 1..100000"},
    {"images_listen", "ADDR:PORT with an IPv4 address of this machine that the standby VMs "
                      "reach (not 0.0.0.0: it goes into the images' URLs), e.g. 10.77.0.1:7071"},
    {"images", "a list of images {name, file, sha256, cmd} (docs/server.md)"},
    {"dns", "a mapping {server, zone, key_file}"},
    {"services", "a list of services (docs/server.md)"},
    {"migration", "a mapping {cpu_pct, samples, targets}"},
    {"ha", "a mapping {etcd, lease_ttl_s, name, advertise, advertise_api} (docs/ha.md)"},
};

const char *sc_allowed_for(const char *key)
{
    for (size_t i = 0; i < sizeof(allowed_values) / sizeof(allowed_values[0]); i++)
        if (strcmp(allowed_values[i].key, key) == 0)
            return allowed_values[i].allowed;
    return "a value";
}

void sc_take_address(struct config_report *r, const char *key, const char *value, char **host,
                     uint16_t *port)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *h = NULL;
    if (vcr_parse_host_port(value, &h, port, &err) < 0) {
        const char *msg = vcr_error_msg(err);
        if (strstr(msg, "allowed:"))
            report_add(r, "`%s`: %s", key, msg);
        else
            report_add(r, "`%s`: %s; allowed: %s", key, msg, ADDRESS_ALLOWED);
        return;
    }
    if (vcr_ip_family(h) == 0) {
        report_add(r,
                   "`%s`: `%s`: `%s` is a name; allowed: an IPv4 or IPv6 address of this "
                   "machine, e.g. 127.0.0.1 or [::1], or 0.0.0.0 or [::] for all",
                   key, value, h);
        return;
    }
    free(*host);
    *host = steal_pointer(&h);
}

void sc_take_ms(struct config_report *r, const char *key, const char *value, uint32_t min,
                uint32_t max, uint32_t *out)
{
    size_t n = strspn(value, "0123456789");
    if (n == 0 || value[n] != '\0' || n > 9) {
        report_add(r, "`%s`: `%s` is not an integer number of milliseconds; allowed: %u..%u", key,
                   value, min, max);
        return;
    }
    unsigned long v = strtoul(value, NULL, 10);
    if (v < min || v > max) {
        report_add(r, "`%s`: `%s` is out of range; allowed: %u..%u", key, value, min, max);
        return;
    }
    *out = (uint32_t)v;
}

/* Only the two YAML 1.2 core spellings: `yes`, `on` or `1` are YAML 1.1 habits
 * that other readers of the same file may take differently. */
void sc_take_bool(struct config_report *r, const char *key, const char *value, bool *out)
{
    if (strcmp(value, "true") == 0)
        *out = true;
    else if (strcmp(value, "false") == 0)
        *out = false;
    else
        report_add(r, "`%s`: `%s` is not a boolean; allowed: %s", key, value, sc_allowed_for(key));
}

/* Relative paths are taken from the directory of the config file. */
static char *resolve_path(const char *base_dir, const char *value)
{
    char *out = NULL;
    if (value[0] == '/' || base_dir == NULL)
        return strdup(value);
    size_t n = strlen(base_dir);
    if (asprintf(&out, "%s%s%s", base_dir, n && base_dir[n - 1] == '/' ? "" : "/", value) < 0)
        return NULL;
    return out;
}

void sc_take_path(struct config_report *r, const char *key, const char *value, const char *base_dir,
                  char **out)
{
    if (value[0] == '\0') {
        report_add(r, "`%s`: empty; allowed: %s", key, sc_allowed_for(key));
        return;
    }
    char *resolved = resolve_path(base_dir, value);
    if (resolved == NULL) {
        report_add(r, "`%s`: out of memory", key);
        return;
    }
    free(*out);
    *out = resolved;
}

void sc_take_count(struct config_report *r, const char *key, const char *value, uint32_t min,
                   uint32_t max, uint32_t *out)
{
    size_t n = strspn(value, "0123456789");
    unsigned long v = n && value[n] == '\0' && n <= 9 ? strtoul(value, NULL, 10) : 0;
    if (n == 0 || value[n] != '\0' || n > 9 || v < min || v > max) {
        report_add(r, "`%s`: `%s` is not allowed; allowed: an integer %u..%u", key, value, min,
                   max);
        return;
    }
    *out = (uint32_t)v;
}

bool sc_valid_host_name(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}
