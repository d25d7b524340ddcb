/* Container orders -> specs -> LXC configuration items (pure: no liblxc, so
 * the unit tests check every line a container gets). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby/standby.h"

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

static bool is_sha256(const char *s)
{
    return s && strlen(s) == 64 && strspn(s, "0123456789abcdefABCDEF") == 64;
}

/* image: {name, sha256, url, cmd?} (docs/protocol.md). */
static int get_image(json_t *v, struct standby_image_ref *img, vcr_error_t *err)
{
    if (!json_is_object(v))
        return vcr_error_make(err, EINVAL,
                              "image: not an object; expected {name, sha256, url, cmd?}");
    json_t *name = json_object_get(v, "name");
    if (!json_is_string(name) || !standby_valid_name(json_string_value(name)))
        return vcr_error_make(err, EINVAL,
                              "image.name: `%.80s` is not a name; allowed: 1..64 of letters, "
                              "digits, '.', '_', '-'",
                              json_is_string(name) ? json_string_value(name) : "(missing)");
    snprintf(img->name, sizeof(img->name), "%s", json_string_value(name));
    const char *sum = json_string_value(json_object_get(v, "sha256"));
    if (!is_sha256(sum))
        return vcr_error_make(err, EINVAL,
                              "image.sha256: `%.80s` is not a SHA-256; allowed: 64 hex digits",
                              sum ? sum : "(missing)");
    for (size_t i = 0; i < 64; i++)
        img->sha256[i] = (char)(sum[i] | 0x20); /* lower case */
    img->sha256[64] = '\0';
    const char *url = json_string_value(json_object_get(v, "url"));
    char host[64], path[256];
    uint16_t port;
    if (url == NULL)
        return vcr_error_make(err, EINVAL, "image.url: missing; expected http://HOST:PORT/PATH");
    if (strlen(url) >= sizeof(img->url))
        return vcr_error_make(err, EINVAL, "image.url: `%.80s...` is longer than %zu characters",
                              url, sizeof(img->url) - 1);
    if (standby_url_parse(url, host, sizeof(host), &port, path, sizeof(path), err) < 0)
        return vcr_error_wrap(err, "image.url");
    snprintf(img->url, sizeof(img->url), "%s", url);
    json_t *cmd = json_object_get(v, "cmd");
    img->cmd[0] = '\0';
    if (cmd && !json_is_null(cmd)) {
        const char *c = json_string_value(cmd);
        bool ok = c && c[0] && strlen(c) < sizeof(img->cmd);
        for (const char *k = c; ok && *k; k++)
            ok = (unsigned char)*k >= 0x20 && *k != 0x7f;
        if (!ok)
            return vcr_error_make(err, EINVAL,
                                  "image.cmd: `%.80s` is not a command; allowed: one shell command "
                                  "line of 1..%zu characters, no control characters",
                                  c ? c : "(not a string)", sizeof(img->cmd) - 1);
        snprintf(img->cmd, sizeof(img->cmd), "%s", c);
    }
    return 0;
}

int standby_ct_spec_from_json(json_t *msg, struct standby_ct_spec *spec, vcr_error_t *err)
{
    struct standby_ct_spec s = {.prefix = 24, .prefix6 = 64};
    const char *name_key = json_object_get(msg, "name") ? "name" : "vm";
    if (get_name(msg, name_key, true, NULL, s.name, sizeof(s.name), err) < 0 ||
        get_name(msg, "service", false, s.name, s.service, sizeof(s.service), err) < 0 ||
        get_name(msg, "template", false, STANDBY_TEMPLATE_DEF, s.template, sizeof(s.template),
                 err) < 0)
        return -1;
    json_t *image = json_object_get(msg, "image");
    if (image && !json_is_null(image)) {
        json_t *tpl = json_object_get(msg, "template");
        if (tpl && !json_is_null(tpl))
            return vcr_error_make(err, EINVAL,
                                  "template: `%.80s` is given with `image`; allowed: one of them",
                                  json_is_string(tpl) ? json_string_value(tpl) : "(not a string)");
        if (get_image(image, &s.image, err) < 0)
            return -1;
        s.has_image = true;
    }
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
    json_t *addr6 = json_object_get(msg, "address6");
    if (addr6 && !json_is_null(addr6)) {
        char buf6[64];
        struct in6_addr a6;
        snprintf(buf6, sizeof(buf6), "%s", json_is_string(addr6) ? json_string_value(addr6) : "");
        char *slash6 = strchr(buf6, '/');
        if (slash6) {
            *slash6 = '\0';
            char *end;
            long p = strtol(slash6 + 1, &end, 10);
            if (slash6[1] == '\0' || *end != '\0' || p < 1 || p > 128)
                return vcr_error_make(err, EINVAL, "address6: `%.60s`: the prefix must be 1..128",
                                      json_string_value(addr6));
            s.prefix6 = (int)p;
        }
        if (strlen(buf6) >= sizeof(s.address6) || inet_pton(AF_INET6, buf6, &a6) != 1)
            return vcr_error_make(err, EINVAL, "address6: `%.60s` is not an IPv6 address",
                                  json_is_string(addr6) ? json_string_value(addr6)
                                                        : "(not a string)");
        snprintf(s.address6, sizeof(s.address6), "%s", buf6);
    }
    /* Unprivileged unless the order says `privileged: true` (docs/security.md). */
    s.unprivileged = true;
    json_t *priv = json_object_get(msg, "privileged");
    if (priv && !json_is_null(priv)) {
        if (!json_is_boolean(priv))
            return vcr_error_make(err, EINVAL, "privileged: expected true or false");
        s.unprivileged = !json_is_true(priv);
    }
    *spec = s;
    return 0;
}

int standby_ct_paths(const char *lxcpath, const char *lib_dir, const struct standby_ct_spec *spec,
                     struct standby_ct_paths *p, vcr_error_t *err)
{
    // cppcheck-suppress ctuuninitvar ; p is the output, filled here
    int n = snprintf(p->dir, sizeof(p->dir), "%s/%s", lxcpath, spec->name);
    int m = -1;
    char images[200];
    const char *sub = spec->has_image ? STANDBY_IMAGES_SUB : STANDBY_TEMPLATES_SUB;
    if (spec->has_image) {
        int k = snprintf(images, sizeof(images), "%s/%s", lib_dir, STANDBY_IMAGES_SUB);
        if (k > 0 && (size_t)k < sizeof(images))
            m = standby_image_rootfs(images, spec->image.sha256, p->source, sizeof(p->source));
    } else {
        int k = snprintf(p->source, sizeof(p->source), "%s/%s/%s", lib_dir, STANDBY_TEMPLATES_SUB,
                         spec->template);
        m = k > 0 && (size_t)k < sizeof(p->source) ? 0 : -1;
    }
    /* An unprivileged container's lower dir: the source's shifted copy,
     * LIB_DIR/shifted/{templates,images}/LEAF (standby_shift_tree). */
    const char *leaf = strrchr(p->source, '/');
    int k = spec->unprivileged ? snprintf(p->lower, sizeof(p->lower), "%s/%s/%s%s", lib_dir,
                                          STANDBY_SHIFTED_SUB, sub, leaf ? leaf : "")
                               : snprintf(p->lower, sizeof(p->lower), "%s", p->source);
    if (n < 0 || (size_t)n >= sizeof(p->dir) || m < 0 || k < 0 || (size_t)k >= sizeof(p->lower))
        return vcr_error_make(err, ENAMETOOLONG, "container `%s`: path too long", spec->name);
    snprintf(p->rootfs, sizeof(p->rootfs), "%s/rootfs", p->dir);
    snprintf(p->delta, sizeof(p->delta), "%s/delta", p->dir);
    snprintf(p->work, sizeof(p->work), "%s/work", p->dir);
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
    add(items, &n, "lxc.init.cmd", "%s",
        spec->has_image && spec->image.cmd[0] ? STANDBY_IMAGE_INIT : STANDBY_INIT_CMD);
    add(items, &n, "lxc.environment", "VCR_SERVICE=%s", spec->service);
    add(items, &n, "lxc.net.0.type", "veth");
    add(items, &n, "lxc.net.0.link", "br0");
    add(items, &n, "lxc.net.0.flags", "up");
    add(items, &n, "lxc.net.0.name", "eth0");
    add(items, &n, "lxc.net.0.hwaddr", "%s", mac);
    add(items, &n, "lxc.net.0.ipv4.address", "%s/%d", spec->address, spec->prefix);
    if (spec->gateway[0])
        add(items, &n, "lxc.net.0.ipv4.gateway", "%s", spec->gateway);
    if (spec->address6[0])
        add(items, &n, "lxc.net.0.ipv6.address", "%s/%d", spec->address6, spec->prefix6);
    add(items, &n, "lxc.mount.auto", "proc:mixed sys:ro");
    add(items, &n, "lxc.autodev", "1");
    add(items, &n, "lxc.tty.max", "0");
    add(items, &n, "lxc.pty.max", "16");
    add(items, &n, "lxc.console.path", "none");
    add(items, &n, "lxc.log.file", "%s/lxc.log", paths->dir);
    add(items, &n, "lxc.log.level", "WARN");
    if (spec->unprivileged) {
        add(items, &n, "lxc.idmap", "u 0 %u %u", STANDBY_IDMAP_BASE, STANDBY_IDMAP_COUNT);
        add(items, &n, "lxc.idmap", "g 0 %u %u", STANDBY_IDMAP_BASE, STANDBY_IDMAP_COUNT);
        add(items, &n, "lxc.cap.drop", "%s", STANDBY_CAP_DROP);
        add(items, &n, "lxc.seccomp.profile", "%s", STANDBY_SECCOMP_PROFILE);
    }
    return n;
}
