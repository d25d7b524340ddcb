/* The services model: libcyaml schema of the raw strings, strict conversion
 * and validation (after server_config.c: every bad field is named with its
 * path, value and what is allowed, and all of them are reported at once). */
#include "server/services.h"

#include "server/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "dns/dns_update.h"
#include "proto/proto.h"
#include "server/inventory.h"
#include "server/recovery/standby_mode.h"

#define RAW_STR(key, type, member)                                                                 \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, type, member, 0,         \
                           CYAML_UNLIMITED)

static const cyaml_schema_field_t primary_fields[] = {
    RAW_STR("host", struct services_raw_primary, host),
    RAW_STR("vm", struct services_raw_primary, vm),
    RAW_STR("address", struct services_raw_primary, address),
    RAW_STR("address6", struct services_raw_primary, address6),
    RAW_STR("port", struct services_raw_primary, port),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t check_fields[] = {
    RAW_STR("type", struct services_raw_check, type),
    RAW_STR("path", struct services_raw_check, path),
    RAW_STR("interval_ms", struct services_raw_check, interval_ms),
    RAW_STR("timeout_ms", struct services_raw_check, timeout_ms),
    RAW_STR("failures", struct services_raw_check, failures),
    RAW_STR("boot_grace_ms", struct services_raw_check, boot_grace_ms),
    RAW_STR("family", struct services_raw_check, family),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t standby_fields[] = {
    RAW_STR("mode", struct services_raw_standby, mode),
    RAW_STR("host", struct services_raw_standby, host),
    RAW_STR("container", struct services_raw_standby, container),
    RAW_STR("vm", struct services_raw_standby, vm),
    RAW_STR("address", struct services_raw_standby, address),
    RAW_STR("address6", struct services_raw_standby, address6),
    RAW_STR("prefix", struct services_raw_standby, prefix),
    RAW_STR("gateway", struct services_raw_standby, gateway),
    RAW_STR("template", struct services_raw_standby, template),
    RAW_STR("image", struct services_raw_standby, image),
    RAW_STR("fallback_host", struct services_raw_standby, fallback_host),
    RAW_STR("privileged", struct services_raw_standby, privileged),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t data_fields[] = {
    RAW_STR("volume", struct services_raw_data, volume),
    RAW_STR("path", struct services_raw_data, path),
    RAW_STR("interval_s", struct services_raw_data, interval_s),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t failback_fields[] = {
    RAW_STR("mode", struct services_raw_failback, mode),
    RAW_STR("after_s", struct services_raw_failback, after_s),
    RAW_STR("min_interval_s", struct services_raw_failback, min_interval_s),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t hook_arg_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t hook_fields[] = {
    CYAML_FIELD_SEQUENCE("run", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, struct services_raw_hook,
                         run, &hook_arg_schema, 0, CYAML_UNLIMITED),
    RAW_STR("timeout_ms", struct services_raw_hook, timeout_ms),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t service_fields[] = {
    RAW_STR("name", struct services_raw_service, name),
    RAW_STR("dns_name", struct services_raw_service, dns_name),
    RAW_STR("ttl", struct services_raw_service, ttl),
    RAW_STR("takeover", struct services_raw_service, takeover),
    CYAML_FIELD_MAPPING_PTR("primary", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, primary, primary_fields),
    CYAML_FIELD_MAPPING_PTR("check", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, check, check_fields),
    CYAML_FIELD_MAPPING_PTR("standby", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, standby, standby_fields),
    CYAML_FIELD_MAPPING_PTR("data", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, data, data_fields),
    CYAML_FIELD_MAPPING_PTR("failback", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, failback, failback_fields),
    CYAML_FIELD_MAPPING_PTR("hook", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                            struct services_raw_service, hook, hook_fields),
    CYAML_FIELD_END,
};

const cyaml_schema_value_t services_raw_service_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct services_raw_service, service_fields),
};

const cyaml_schema_field_t services_raw_dns_fields[] = {
    RAW_STR("server", struct services_raw_dns, server),
    RAW_STR("zone", struct services_raw_dns, zone),
    RAW_STR("key_file", struct services_raw_dns, key_file),
    CYAML_FIELD_END,
};

const char *services_takeover_name(unsigned takeover)
{
    if (takeover == (SERVICES_TAKEOVER_DNS | SERVICES_TAKEOVER_ADDRESS))
        return "both";
    return takeover == SERVICES_TAKEOVER_ADDRESS ? "address" : "dns";
}

/* `takeover: address|both` moves the primary's address onto the container:
 * that works only on the primary's L2 segment, which the configuration can
 * tell only by the container's subnet (standby.address/prefix) holding the
 * primary's address. */
static void convert_takeover(struct services_conv *c, const char *path, const char *value,
                             struct service_config *s)
{
    s->takeover = SERVICES_TAKEOVER_DNS;
    if (value == NULL)
        return;
    if (strcmp(value, "dns") == 0)
        return;
    if (strcmp(value, "address") == 0)
        s->takeover = SERVICES_TAKEOVER_ADDRESS;
    else if (strcmp(value, "both") == 0)
        s->takeover = SERVICES_TAKEOVER_DNS | SERVICES_TAKEOVER_ADDRESS;
    else {
        services_conv_bad(c, "`%s`: `%s` is not a takeover; allowed: dns, address, both", path,
                          value);
        return;
    }
    struct in_addr p, sb;
    if (s->primary.address == NULL || s->standby.address == NULL ||
        inet_pton(AF_INET, s->primary.address, &p) != 1 ||
        inet_pton(AF_INET, s->standby.address, &sb) != 1)
        return; /* reported already */
    uint32_t mask = s->standby.prefix ? htonl(~0u << (32 - s->standby.prefix)) : 0;
    if ((p.s_addr & mask) != (sb.s_addr & mask))
        services_conv_bad(c,
                          "`%s`: `%s` needs the container on the primary's network: primary "
                          "address %s is not in standby.address %s/%u; allowed: dns, or a "
                          "container in the primary's subnet",
                          path, value, s->primary.address, s->standby.address, s->standby.prefix);
    /* The primary's address6 moves too: the container's is a /64 of the link. */
    struct in6_addr p6, sb6;
    if (s->primary.address6 && s->standby.address6 &&
        inet_pton(AF_INET6, s->primary.address6, &p6) == 1 &&
        inet_pton(AF_INET6, s->standby.address6, &sb6) == 1 && memcmp(&p6, &sb6, 8) != 0)
        services_conv_bad(c,
                          "`%s`: `%s` needs the container on the primary's network: primary "
                          "address6 %s is not in standby.address6 %s/64; allowed: dns, or a "
                          "container in the primary's /64",
                          path, value, s->primary.address6, s->standby.address6);
}

const char *check_type_name(const struct check_ops *t)
{
    return t ? t->name : check_tcp_ops.name;
}

void services_conv_bad(struct services_conv *c, const char *fmt, ...)
{
    cleanup_free char *line = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    c->problems++;
    c->report(c->ctx, n >= 0 ? line : "out of memory");
}

static bool is_ipv4(const char *s)
{
    struct in_addr a;
    return s && inet_pton(AF_INET, s, &a) == 1;
}

/* A service's IPv6 address (the AAAA record): optional, a bare address, no prefix. */
static void take_ipv6(struct services_conv *c, const char *path, const char *value, char **out)
{
    if (value == NULL)
        return;
    if (vcr_ip_family(value) != AF_INET6) {
        services_conv_bad(c, "`%s`: `%s` is not an IPv6 address; allowed: e.g. fd77::31", path,
                          value);
        return;
    }
    *out = strdup(value);
}

static void need_name(struct services_conv *c, const char *path, const char *value, char **out)
{
    if (value == NULL) {
        services_conv_bad(
            c, "`%s`: missing; allowed: a name of 1..64 letters, digits, '.', '_', '-'", path);
        return;
    }
    if (!inventory_valid_name(value)) {
        services_conv_bad(c,
                          "`%s`: `%s` is not a name; allowed: 1..64 letters, digits, '.', '_', '-'",
                          path, value);
        return;
    }
    *out = strdup(value);
}

static void need_ipv4(struct services_conv *c, const char *path, const char *value, bool required,
                      char **out)
{
    if (value == NULL) {
        if (required)
            services_conv_bad(c, "`%s`: missing; allowed: an IPv4 address A.B.C.D", path);
        return;
    }
    if (!is_ipv4(value)) {
        services_conv_bad(c, "`%s`: `%s` is not an IPv4 address; allowed: A.B.C.D, e.g. 10.77.0.31",
                          path, value);
        return;
    }
    *out = strdup(value);
}

static void take_uint(struct services_conv *c, const char *path, const char *value, uint32_t min,
                      uint32_t max, uint32_t *out)
{
    if (value == NULL)
        return;
    size_t n = strspn(value, "0123456789");
    if (n == 0 || value[n] != '\0' || n > 9) {
        services_conv_bad(c, "`%s`: `%s` is not an integer; allowed: %u..%u", path, value, min,
                          max);
        return;
    }
    unsigned long v = strtoul(value, NULL, 10);
    if (v < min || v > max) {
        services_conv_bad(c, "`%s`: `%s` is out of range; allowed: %u..%u", path, value, min, max);
        return;
    }
    *out = (uint32_t)v;
}

static char *resolve_path(const char *base_dir, const char *value)
{
    char *out = NULL;
    if (value[0] == '/' || base_dir == NULL)
        return strdup(value);
    if (asprintf(&out, "%s/%s", base_dir, value) < 0)
        return NULL;
    return out;
}

static bool inside_zone(const char *name, const char *zone)
{
    size_t n = strlen(name), z = strlen(zone);
    return n > z + 1 && name[n - z - 1] == '.' && strcasecmp(name + n - z, zone) == 0;
}

static struct dns_settings *convert_dns(struct services_conv *c, const struct services_raw_dns *raw,
                                        const char *base_dir)
{
    struct dns_settings *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        services_conv_bad(c, "`dns`: out of memory");
        return NULL;
    }
    if (raw->server == NULL) {
        services_conv_bad(
            c, "`dns.server`: missing; allowed: A.B.C.D or A.B.C.D:PORT of the zone's primary");
    } else {
        cleanup_error vcr_error_t err = NULL;
        char *host = NULL;
        uint16_t port = 53;
        if (strchr(raw->server, ':') == NULL || vcr_ip_family(raw->server) == AF_INET6) {
            host = strdup(raw->server);
        } else if (vcr_parse_host_port(raw->server, &host, &port, &err) < 0) {
            services_conv_bad(c,
                              "`dns.server`: `%s`: %s; allowed: A.B.C.D, A.B.C.D:PORT, IPV6 or "
                              "[IPV6]:PORT",
                              raw->server, vcr_error_msg(err));
        }
        if (host && vcr_ip_family(host) == 0) {
            services_conv_bad(c,
                              "`dns.server`: `%s` is not an IPv4 or IPv6 address; allowed: "
                              "A.B.C.D, A.B.C.D:PORT, IPV6 or [IPV6]:PORT",
                              raw->server);
            free(host);
            host = NULL;
        }
        d->server = host;
        d->port = port;
    }
    if (raw->zone == NULL)
        services_conv_bad(
            c, "`dns.zone`: missing; allowed: the zone the service names live in, e.g. vcr.lab");
    else if (raw->zone[0] == '\0' || raw->zone[0] == '.' || strlen(raw->zone) > 253)
        services_conv_bad(c, "`dns.zone`: `%s` is not a zone name; allowed: e.g. vcr.lab",
                          raw->zone);
    else
        d->zone = strdup(raw->zone);
    size_t zl = d->zone ? strlen(d->zone) : 0;
    if (zl && d->zone[zl - 1] == '.')
        d->zone[zl - 1] = '\0';
    if (raw->key_file == NULL) {
        services_conv_bad(c, "`dns.key_file`: missing; allowed: a TSIG key file as `tsig-keygen -a "
                             "hmac-sha256` (or hmac-sha512) writes it");
    } else {
        d->key_file = resolve_path(base_dir, raw->key_file);
        struct dns_tsig_key key = {0};
        cleanup_error vcr_error_t err = NULL;
        if (d->key_file && dns_tsig_key_load(d->key_file, &key, &err) < 0) {
            services_conv_bad(c, "`dns.key_file`: %s", vcr_error_msg(err));
        } else {
            d->key_name = steal_pointer(&key.name);
            d->key_secret = steal_pointer(&key.secret);
            d->key_algorithm = key.algorithm;
        }
        dns_tsig_key_clear(&key);
    }
    return d;
}

/* A volume name as the host agent's `vms[].volumes[].name` (1..32 of a-z 0-9 -). */
static bool is_volume_name(const char *v)
{
    size_t n = strlen(v);
    return n >= 1 && n <= 32 && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* The container's mount point goes into lxc.mount.entry (blank-separated):
 * an absolute path other than /, no blanks, no `..`. */
static bool is_data_path(const char *v)
{
    size_t n = strlen(v);
    bool ok = v[0] == '/' && n >= 2 && n <= SERVICES_DATA_PATH_MAX && v[n - 1] != '/' &&
              strstr(v, "..") == NULL && strstr(v, "//") == NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
             (v[i] >= '0' && v[i] <= '9') || strchr("/_.-", v[i]) != NULL;
    return ok;
}

/* `hook.run`: argv, no shell: an absolute path to an executable file, then its arguments. */
static void convert_hook(struct services_conv *c, const struct services_raw_hook *h, size_t i,
                         struct service_config *s)
{
    char p[96];
#define PATH(field) (snprintf(p, sizeof(p), "services[%zu].hook.%s", i, field), p)
    s->hook.timeout_ms = SERVICES_HOOK_TIMEOUT_MS;
    take_uint(c, PATH("timeout_ms"), h->timeout_ms, 100, 600000, &s->hook.timeout_ms);
    if (h->run_count == 0 || h->run_count > SERVICES_HOOK_ARGS_MAX) {
        services_conv_bad(c,
                          "`%s`: %u item(s); allowed: 1..%d, the program's absolute path and its "
                          "arguments (run without a shell)",
                          PATH("run"), h->run_count, SERVICES_HOOK_ARGS_MAX);
        return;
    }
    const char *prog = h->run[0];
    if (prog[0] != '/') {
        services_conv_bad(c, "`%s[0]`: `%s` is not an absolute path; allowed: /PATH/TO/PROGRAM",
                          PATH("run"), prog);
        return;
    }
    struct stat st;
    errno = 0;
    if (stat(prog, &st) < 0 || !S_ISREG(st.st_mode) || access(prog, X_OK) < 0) {
        services_conv_bad(c,
                          "`%s[0]`: `%s` is not an executable file (%s); allowed: a program "
                          "the server may run",
                          PATH("run"), prog, errno ? strerror(errno) : "not a regular file");
        return;
    }
#undef PATH
    s->hook.argv = calloc(h->run_count + 1, sizeof(char *));
    for (unsigned k = 0; s->hook.argv && k < h->run_count; k++)
        s->hook.argv[k] = strdup(h->run[k]);
}

static void convert_data(struct services_conv *c, const struct services_raw_data *d, size_t i,
                         struct service_config *s)
{
    char p[96];
#define PATH(field) (snprintf(p, sizeof(p), "services[%zu].data.%s", i, field), p)
    if (d->volume == NULL)
        services_conv_bad(
            c, "`%s`: missing; allowed: the name of a volume of the primary VM (`vms[].volumes`)",
            PATH("volume"));
    else if (!is_volume_name(d->volume))
        services_conv_bad(c, "`%s`: `%s` is not a volume name; allowed: 1..32 of a-z 0-9 -",
                          PATH("volume"), d->volume);
    else
        s->data.volume = strdup(d->volume);
    if (d->path == NULL)
        services_conv_bad(
            c, "`%s`: missing; allowed: where the container sees the data, e.g. /srv/data",
            PATH("path"));
    else if (!is_data_path(d->path))
        services_conv_bad(
            c,
            "`%s`: `%s` is not a usable mount point; allowed: an absolute path other than / of "
            "up to %d characters of A-Z a-z 0-9 / _ . - (no `..`), e.g. /srv/data",
            PATH("path"), d->path, SERVICES_DATA_PATH_MAX);
    else
        s->data.path = strdup(d->path);
    if (d->interval_s) {
        size_t n = strspn(d->interval_s, "0123456789");
        unsigned long v =
            n && d->interval_s[n] == '\0' && n <= 9 ? strtoul(d->interval_s, NULL, 10) : ULONG_MAX;
        if (v != 0 && (v < SERVICES_DATA_INTERVAL_MIN_S || v > SERVICES_DATA_INTERVAL_MAX_S))
            services_conv_bad(
                c, "`%s`: `%s` is not an interval; allowed: 0 (copy at recovery only), or %u..%u",
                PATH("interval_s"), d->interval_s, SERVICES_DATA_INTERVAL_MIN_S,
                SERVICES_DATA_INTERVAL_MAX_S);
        else
            s->data.interval_s = (uint32_t)v;
    }
    if (s->data.interval_s && !s->standby.mode->provisioned)
        services_conv_bad(
            c,
            "`%s`: `%s` with a %s standby; allowed: 0 (a %s service has no container to "
            "copy to before its recovery)",
            PATH("interval_s"), d->interval_s, s->standby.mode->name, s->standby.mode->name);
#undef PATH
}

/* A VM standby mode (standby_mode.h): the VM `standby.vm` of host agent
 * `standby.host` serves the service itself at standby.address; nothing of a
 * container applies. */
static void convert_vm_standby(struct services_conv *c, const struct services_raw_standby *sb,
                               size_t i, struct service_config *s)
{
    char p[96];
#define PATH(field) (snprintf(p, sizeof(p), "services[%zu].%s", i, field), p)
    need_name(c, PATH("standby.vm"), sb->vm, &s->standby.vm);
    need_ipv4(c, PATH("standby.address"), sb->address, true, &s->standby.address);
    const struct {
        const char *field, *value;
    } container_only[] = {
        {"standby.container", sb->container},   {"standby.prefix", sb->prefix},
        {"standby.gateway", sb->gateway},       {"standby.template", sb->template},
        {"standby.image", sb->image},           {"standby.fallback_host", sb->fallback_host},
        {"standby.privileged", sb->privileged},
    };
    char modes[120];
    for (size_t k = 0; k < sizeof(container_only) / sizeof(container_only[0]); k++)
        if (container_only[k].value)
            services_conv_bad(c,
                              "`%s`: `%s` is given for standby mode `%s`; allowed: only with a "
                              "container standby mode (%s)",
                              PATH(container_only[k].field), container_only[k].value,
                              s->standby.mode->name,
                              standby_modes_allowed(modes, sizeof(modes), STANDBY_MODES_CONTAINER));
#undef PATH
}

static void convert_service(struct services_conv *c, const struct services_raw_service *raw,
                            size_t i, const struct dns_settings *dns, struct service_config *s)
{
    char p[96];
#define PATH(field) (snprintf(p, sizeof(p), "services[%zu].%s", i, field), p)
    need_name(c, PATH("name"), raw->name, &s->name);
    if (raw->dns_name == NULL) {
        services_conv_bad(c, "`%s`: missing; allowed: a name inside the zone of `dns.zone`",
                          PATH("dns_name"));
    } else if (dns && dns->zone && !inside_zone(raw->dns_name, dns->zone)) {
        services_conv_bad(c, "`%s`: `%s` is not inside zone `%s`; allowed: NAME.%s",
                          PATH("dns_name"), raw->dns_name, dns->zone, dns->zone);
    } else {
        s->dns_name = strdup(raw->dns_name);
    }
    s->ttl = SERVICES_DEFAULT_TTL;
    take_uint(c, PATH("ttl"), raw->ttl, 0, DNS_UPDATE_MAX_TTL, &s->ttl);

    if (raw->primary == NULL) {
        services_conv_bad(c, "`%s`: missing; allowed: a mapping {host, vm, address, port}",
                          PATH("primary"));
    } else {
        need_name(c, PATH("primary.host"), raw->primary->host, &s->primary.host);
        need_name(c, PATH("primary.vm"), raw->primary->vm, &s->primary.vm);
        need_ipv4(c, PATH("primary.address"), raw->primary->address, true, &s->primary.address);
        take_ipv6(c, PATH("primary.address6"), raw->primary->address6, &s->primary.address6);
        uint32_t port = 0;
        if (raw->primary->port == NULL)
            services_conv_bad(c, "`%s`: missing; allowed: 1..65535", PATH("primary.port"));
        take_uint(c, PATH("primary.port"), raw->primary->port, 1, 65535, &port);
        s->primary.port = (uint16_t)port;
    }

    s->check.type = &check_tcp_ops;
    s->check.interval_ms = SERVICES_DEFAULT_INTERVAL_MS;
    s->check.timeout_ms = SERVICES_DEFAULT_TIMEOUT_MS;
    s->check.failures = SERVICES_DEFAULT_FAILURES;
    s->check.boot_grace_ms = SERVICES_DEFAULT_BOOT_GRACE_MS;
    const struct services_raw_check *ck = raw->check;
    if (ck) {
        const struct check_ops *type = ck->type ? check_protocol(ck->type) : &check_tcp_ops;
        char allowed[200];
        if (type)
            s->check.type = type;
        else
            services_conv_bad(c, "`%s`: `%s` is not a check type; allowed: %s", PATH("check.type"),
                              ck->type, check_protocols_allowed(allowed, sizeof(allowed)));
        if (ck->path && !s->check.type->takes_path)
            services_conv_bad(
                c,
                "`%s`: `%s` is given for a %s check; allowed: only with a check that takes a "
                "path (`type: http`)",
                PATH("check.path"), ck->path, s->check.type->name);
        else if (ck->path && (ck->path[0] != '/' || strpbrk(ck->path, " \r\n\t")))
            services_conv_bad(c, "`%s`: `%s` is not a URL path; allowed: /PATH without spaces",
                              PATH("check.path"), ck->path);
        else if (ck->path)
            s->check.path = strdup(ck->path);
        take_uint(c, PATH("check.interval_ms"), ck->interval_ms, 100, 60000, &s->check.interval_ms);
        take_uint(c, PATH("check.failures"), ck->failures, 1, 100, &s->check.failures);
        take_uint(c, PATH("check.boot_grace_ms"), ck->boot_grace_ms, 0, SERVICES_MAX_BOOT_GRACE_MS,
                  &s->check.boot_grace_ms);
        if (ck->family && strcmp(ck->family, "ipv6") == 0)
            s->check.ipv6 = true;
        else if (ck->family && strcmp(ck->family, "ipv4") != 0)
            services_conv_bad(c, "`%s`: `%s` is not an address family; allowed: ipv4, ipv6",
                              PATH("check.family"), ck->family);
        /* A probe outliving its interval would overlap the next one. */
        take_uint(c, PATH("check.timeout_ms"), ck->timeout_ms, 10, s->check.interval_ms,
                  &s->check.timeout_ms);
    }
    if (s->check.timeout_ms > s->check.interval_ms)
        s->check.timeout_ms = s->check.interval_ms;
    if (s->check.type->takes_path && s->check.path == NULL)
        s->check.path = strdup("/");

    const struct services_raw_standby *sb = raw->standby;
    if (sb == NULL) {
        services_conv_bad(c,
                          "`%s`: missing; allowed: a mapping {mode, host, container, address, ...}",
                          PATH("standby"));
        return;
    }
    char modes[120];
    standby_modes_allowed(modes, sizeof(modes), STANDBY_MODES_ALL);
    s->standby.mode = &standby_warm_ops;
    if (sb->mode == NULL)
        services_conv_bad(c, "`%s`: missing; allowed: %s", PATH("standby.mode"), modes);
    else if ((s->standby.mode = standby_mode_find(sb->mode)) == NULL) {
        s->standby.mode = &standby_warm_ops;
        services_conv_bad(c, "`%s`: `%s` is not a standby mode; allowed: %s", PATH("standby.mode"),
                          sb->mode, modes);
    }
    need_name(c, PATH("standby.host"), sb->host, &s->standby.host);
    take_ipv6(c, PATH("standby.address6"), sb->address6, &s->standby.address6);
    if (!s->standby.mode->container) {
        convert_vm_standby(c, sb, i, s);
    } else {
        if (sb->vm)
            services_conv_bad(c,
                              "`%s`: `%s` is given for standby mode `%s`; allowed: only with a "
                              "VM standby mode (%s)",
                              PATH("standby.vm"), sb->vm, s->standby.mode->name,
                              standby_modes_allowed(modes, sizeof(modes), STANDBY_MODES_VM));
        need_name(c, PATH("standby.container"), sb->container, &s->standby.container);
        need_ipv4(c, PATH("standby.address"), sb->address, true, &s->standby.address);
        s->standby.prefix = SERVICES_DEFAULT_PREFIX;
        take_uint(c, PATH("standby.prefix"), sb->prefix, 1, 32, &s->standby.prefix);
        need_ipv4(c, PATH("standby.gateway"), sb->gateway, false, &s->standby.gateway);
        if (sb->template && sb->image)
            services_conv_bad(
                c,
                "`%s`: `%s` and `standby.template` `%s` are both given; allowed: one of them (an "
                "image from `images:`, or a template directory baked into the standby VM)",
                PATH("standby.image"), sb->image, sb->template);
        else if (sb->template)
            need_name(c, PATH("standby.template"), sb->template, &s->standby.template);
        else if (sb->image)
            need_name(c, PATH("standby.image"), sb->image, &s->standby.image);
        s->standby.privileged = false;
        if (sb->privileged && strcmp(sb->privileged, "true") != 0 &&
            strcmp(sb->privileged, "false") != 0)
            services_conv_bad(c, "`%s`: `%s` is not a boolean; allowed: true, false",
                              PATH("standby.privileged"), sb->privileged);
        else if (sb->privileged)
            s->standby.privileged = strcmp(sb->privileged, "true") == 0;
        if (sb->fallback_host) {
            need_name(c, PATH("standby.fallback_host"), sb->fallback_host,
                      &s->standby.fallback_host);
            if (sb->host && strcmp(sb->fallback_host, sb->host) == 0)
                services_conv_bad(
                    c, "`%s`: `%s` is `standby.host` too; allowed: another standby VM's agent",
                    PATH("standby.fallback_host"), sb->fallback_host);
        }
    }
    if (s->standby.address && s->primary.address &&
        strcmp(s->standby.address, s->primary.address) == 0)
        services_conv_bad(
            c, "`%s`: `%s` is the primary's address too; allowed: the container's own address",
            PATH("standby.address"), sb->address);
    /* The switch replaces the AAAA RRset only when both sides have an IPv6 address:
     * one alone would leave clients of that family on the failed primary, or send
     * them to a container that does not listen there. */
    if ((raw->primary && raw->primary->address6 != NULL) != (sb->address6 != NULL))
        services_conv_bad(c,
                          "`%s`: given on one side only; allowed: both `primary.address6` and "
                          "`standby.address6` (the AAAA record switches too), or neither",
                          sb->address6 ? PATH("standby.address6") : PATH("primary.address6"));
    if (s->check.ipv6 && raw->primary && raw->primary->address6 == NULL)
        services_conv_bad(c,
                          "`%s`: `ipv6` without `primary.address6`; allowed: ipv4, or ipv6 with "
                          "the primary's IPv6 address given",
                          PATH("check.family"));
    if (s->standby.address6 && s->primary.address6 &&
        strcmp(s->standby.address6, s->primary.address6) == 0)
        services_conv_bad(
            c, "`%s`: `%s` is the primary's address6 too; allowed: the container's own address",
            PATH("standby.address6"), sb->address6);
    convert_takeover(c, PATH("takeover"), raw->takeover, s);
    if (!s->standby.mode->container && (s->takeover & SERVICES_TAKEOVER_ADDRESS))
        services_conv_bad(c,
                          "`%s`: `%s` with standby mode `%s`; allowed: dns (the address moves "
                          "onto a standby container only)",
                          PATH("takeover"), raw->takeover, s->standby.mode->name);
    if (raw->data && !s->standby.mode->container)
        services_conv_bad(c,
                          "`%s`: given with standby mode `%s`; allowed: no `data` (a service's "
                          "data is copied to and attached to a standby container only)",
                          PATH("data"), s->standby.mode->name);
    else if (raw->data)
        convert_data(c, raw->data, i, s);
    s->failback.after_s = SERVICES_FAILBACK_AFTER_S;
    s->failback.min_interval_s = SERVICES_FAILBACK_MIN_INTERVAL_S;
    const struct services_raw_failback *fb = raw->failback;
    if (fb && fb->mode && strcmp(fb->mode, "auto") == 0)
        s->failback.automatic = true;
    else if (fb && fb->mode && strcmp(fb->mode, "manual") != 0)
        services_conv_bad(c, "`%s`: `%s` is not a failback mode; allowed: manual, auto",
                          PATH("failback.mode"), fb->mode);
    if (fb) {
        take_uint(c, PATH("failback.after_s"), fb->after_s, 1, 86400, &s->failback.after_s);
        take_uint(c, PATH("failback.min_interval_s"), fb->min_interval_s, 0, 604800,
                  &s->failback.min_interval_s);
    }
    if (raw->hook)
        convert_hook(c, raw->hook, i, s);
#undef PATH
}

unsigned services_config_convert(const struct services_raw_dns *raw_dns,
                                 const struct services_raw_service *raw, size_t n,
                                 const char *base_dir, struct dns_settings **dns,
                                 struct service_config **services, size_t *n_services,
                                 services_report_fn report, void *ctx)
{
    struct services_conv c = {.report = report, .ctx = ctx};
    if (raw_dns)
        *dns = convert_dns(&c, raw_dns, base_dir);
    if (n == 0)
        return c.problems;
    if (*dns == NULL)
        services_conv_bad(
            &c,
            "`services`: %zu service(s) but no `dns`; allowed: add dns: {server, zone, "
            "key_file} so that recoveries can switch names",
            n);
    struct service_config *s = calloc(n, sizeof(*s));
    if (s == NULL) {
        services_conv_bad(&c, "`services`: out of memory");
        return c.problems;
    }
    for (size_t i = 0; i < n; i++) {
        convert_service(&c, &raw[i], i, *dns, &s[i]);
        for (size_t j = 0; j < i; j++) {
            if (s[i].name && s[j].name && strcmp(s[i].name, s[j].name) == 0)
                services_conv_bad(
                    &c,
                    "`services[%zu].name`: `%s` is also services[%zu]'s; allowed: a unique name", i,
                    s[i].name, j);
            if (s[i].dns_name && s[j].dns_name && strcasecmp(s[i].dns_name, s[j].dns_name) == 0)
                services_conv_bad(
                    &c,
                    "`services[%zu].dns_name`: `%s` is also services[%zu]'s; allowed: a unique "
                    "name",
                    i, s[i].dns_name, j);
            if (s[i].standby.address && s[j].standby.address &&
                strcmp(s[i].standby.address, s[j].standby.address) == 0)
                services_conv_bad(
                    &c,
                    "`services[%zu].standby.address`: `%s` is also services[%zu]'s; allowed: one "
                    "address per container",
                    i, s[i].standby.address, j);
        }
    }
    *services = s;
    *n_services = n;
    return c.problems;
}

void dns_settings_free(struct dns_settings *dns)
{
    if (dns == NULL)
        return;
    free(dns->server);
    free(dns->zone);
    free(dns->key_file);
    free(dns->key_name);
    if (dns->key_secret)
        explicit_bzero(dns->key_secret, strlen(dns->key_secret));
    free(dns->key_secret);
    free(dns);
}

void services_free(struct service_config *services, size_t n)
{
    for (size_t i = 0; services && i < n; i++) {
        struct service_config *s = &services[i];
        free(s->name);
        free(s->dns_name);
        free(s->primary.host);
        free(s->primary.vm);
        free(s->primary.address);
        free(s->primary.address6);
        free(s->check.path);
        free(s->standby.host);
        free(s->standby.container);
        free(s->standby.vm);
        free(s->standby.address);
        free(s->standby.address6);
        free(s->standby.gateway);
        free(s->standby.template);
        free(s->standby.image);
        free(s->standby.fallback_host);
        free(s->data.volume);
        free(s->data.path);
        for (size_t k = 0; s->hook.argv && s->hook.argv[k]; k++)
            free(s->hook.argv[k]);
        free(s->hook.argv);
    }
    free(services);
}
