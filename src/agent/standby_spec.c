/* Container orders -> specs -> LXC configuration items (pure: no liblxc, so
 * the unit tests check every line a container gets). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby.h"

bool standby_valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    /* "." and ".." would name directories we must never touch. */
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static bool valid_quad(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

static int get_name(json_t *msg, const char *key, bool required, const char *def, char *out,
                    size_t size, vcr_error_t *err)
{
    json_t *v = json_object_get(msg, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            return vcr_error_make(err, EINVAL, "`%s` is missing; expected a name", key);
        snprintf(out, size, "%s", def);
        return 0;
    }
    if (!json_is_string(v) || !standby_valid_name(json_string_value(v)))
        return vcr_error_make(err, EINVAL,
                              "%s: `%.80s` is not a name; allowed: 1..64 of letters, digits, "
                              "'.', '_', '-'",
                              key, json_is_string(v) ? json_string_value(v) : "(not a string)");
    snprintf(out, size, "%s", json_string_value(v));
    return 0;
}

int standby_ct_spec_from_json(json_t *msg, struct standby_ct_spec *spec, vcr_error_t *err)
{
    struct standby_ct_spec s = {.prefix = 24};
    const char *name_key = json_object_get(msg, "name") ? "name" : "vm";
    if (get_name(msg, name_key, true, NULL, s.name, sizeof(s.name), err) < 0 ||
        get_name(msg, "service", false, s.name, s.service, sizeof(s.service), err) < 0 ||
        get_name(msg, "template", false, STANDBY_TEMPLATE_DEF, s.template, sizeof(s.template),
                 err) < 0)
        return -1;
    json_t *addr = json_object_get(msg, "address");
    if (!json_is_string(addr))
        return vcr_error_make(err, EINVAL, "`address` is missing; expected A.B.C.D or A.B.C.D/NN");
    char buf[32];
    snprintf(buf, sizeof(buf), "%s", json_string_value(addr));
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || p < 1 || p > 32)
            return vcr_error_make(err, EINVAL, "address: `%s`: the prefix must be 1..32",
                                  json_string_value(addr));
        s.prefix = (int)p;
    }
    if (strlen(buf) >= sizeof(s.address) || !valid_quad(buf))
        return vcr_error_make(err, EINVAL, "address: `%.40s` is not an IPv4 address (A.B.C.D)",
                              json_string_value(addr));
    memcpy(s.address, buf, strlen(buf) + 1);
    json_t *prefix = json_object_get(msg, "prefix");
    if (prefix && !json_is_null(prefix)) {
        if (!json_is_integer(prefix) || json_integer_value(prefix) < 1 ||
            json_integer_value(prefix) > 32)
            return vcr_error_make(err, EINVAL, "prefix: expected an integer 1..32");
        s.prefix = (int)json_integer_value(prefix);
    }
    json_t *gw = json_object_get(msg, "gateway");
    if (gw && !json_is_null(gw)) {
        if (!json_is_string(gw) || !valid_quad(json_string_value(gw)))
            return vcr_error_make(err, EINVAL, "gateway: `%.40s` is not an IPv4 address",
                                  json_is_string(gw) ? json_string_value(gw) : "(not a string)");
        snprintf(s.gateway, sizeof(s.gateway), "%s", json_string_value(gw));
    }
    *spec = s;
    return 0;
}

int standby_ct_paths(const char *lxcpath, const char *templates_dir,
                     const struct standby_ct_spec *spec, struct standby_ct_paths *p,
                     vcr_error_t *err)
{
    // cppcheck-suppress ctuuninitvar ; p is the output, filled here
    int n = snprintf(p->dir, sizeof(p->dir), "%s/%s", lxcpath, spec->name);
    if (n < 0 || (size_t)n >= sizeof(p->dir) ||
        strlen(templates_dir) + strlen(spec->template) + 2 > sizeof(p->lower))
        return vcr_error_make(err, ENAMETOOLONG, "container `%s`: path too long", spec->name);
    snprintf(p->rootfs, sizeof(p->rootfs), "%s/rootfs", p->dir);
    snprintf(p->delta, sizeof(p->delta), "%s/delta", p->dir);
    snprintf(p->work, sizeof(p->work), "%s/work", p->dir);
    snprintf(p->lower, sizeof(p->lower), "%s/%s", templates_dir, spec->template);
    return 0;
}

void standby_mac_for(const char *address, char mac[18])
{
    struct in_addr a = {0};
    inet_pton(AF_INET, address, &a);
    const unsigned char *b = (const unsigned char *)&a.s_addr;
    snprintf(mac, 18, "02:00:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]);
}

static void add(struct standby_cfg_item *items, size_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add(struct standby_cfg_item *items, size_t *n, const char *key, const char *fmt, ...)
{
    if (*n >= STANDBY_CFG_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    items[*n].key = key;
    vsnprintf(items[*n].value, sizeof(items[*n].value), fmt, ap);
    va_end(ap);
    (*n)++;
}

size_t standby_ct_config(const struct standby_ct_spec *spec, const struct standby_ct_paths *paths,
                         struct standby_cfg_item *items)
{
    size_t n = 0;
    char mac[18];
    standby_mac_for(spec->address, mac);
    add(items, &n, "lxc.uts.name", "%s", spec->name);
    add(items, &n, "lxc.rootfs.path", "%s", paths->rootfs);
    add(items, &n, "lxc.init.cmd", "%s", STANDBY_INIT_CMD);
    add(items, &n, "lxc.environment", "VCR_SERVICE=%s", spec->service);
    add(items, &n, "lxc.net.0.type", "veth");
    add(items, &n, "lxc.net.0.link", "br0");
    add(items, &n, "lxc.net.0.flags", "up");
    add(items, &n, "lxc.net.0.name", "eth0");
    add(items, &n, "lxc.net.0.hwaddr", "%s", mac);
    add(items, &n, "lxc.net.0.ipv4.address", "%s/%d", spec->address, spec->prefix);
    if (spec->gateway[0])
        add(items, &n, "lxc.net.0.ipv4.gateway", "%s", spec->gateway);
    add(items, &n, "lxc.mount.auto", "proc:mixed sys:ro");
    add(items, &n, "lxc.autodev", "1");
    add(items, &n, "lxc.tty.max", "0");
    add(items, &n, "lxc.pty.max", "16");
    add(items, &n, "lxc.console.path", "none");
    add(items, &n, "lxc.log.file", "%s/lxc.log", paths->dir);
    add(items, &n, "lxc.log.level", "WARN");
    return n;
}
