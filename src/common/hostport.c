/* HOST:PORT as the configuration and the command line give it (see
 * hostport.h). */
#include "common/hostport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"

static bool all_digits_and_dots(const char *s)
{
    for (; *s; s++)
        if (*s != '.' && (*s < '0' || *s > '9'))
            return false;
    return true;
}

static bool valid_hostname(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    for (const char *c = s; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '-' || *c == '.';
        if (!ok)
            return false;
    }
    return true;
}

int vcr_parse_host_port(const char *s, char **host, uint16_t *port, vcr_error_t *err)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (colon == NULL)
        return vcr_error_make(
            err, EINVAL, "`%s`: expected HOST:PORT, e.g. 127.0.0.1:7070 or [::1]:7070", s ? s : "");
    cleanup_free char *h = NULL;
    if (*s == '[') {
        /* RFC 3986's IP-literal: the only way a port can follow an IPv6 address. */
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return vcr_error_make(err, EINVAL, "`%s`: expected [IPV6]:PORT, e.g. [::1]:7070", s);
        if ((h = strndup(s + 1, (size_t)(close - s - 1))) == NULL)
            return vcr_error_errno(err, "`%s`", s);
        struct in6_addr a6;
        if (inet_pton(AF_INET6, h, &a6) != 1)
            return vcr_error_make(err, EINVAL, "`%s`: `%s` is not a valid IPv6 address", s, h);
        colon = close + 1;
    } else {
        if ((h = strndup(s, (size_t)(colon - s))) == NULL)
            return vcr_error_errno(err, "`%s`", s);
        if (*h == '\0')
            return vcr_error_make(err, EINVAL, "`%s`: the host is empty; expected HOST:PORT", s);
        if (strchr(h, ':') != NULL)
            return vcr_error_make(err, EINVAL,
                                  "`%s`: an IPv6 address takes brackets before the port, e.g. "
                                  "[::1]:7070",
                                  s);
        struct in_addr addr;
        if (inet_pton(AF_INET, h, &addr) != 1) {
            if (all_digits_and_dots(h))
                return vcr_error_make(err, EINVAL, "`%s`: `%s` is not a valid IPv4 address", s, h);
            if (!valid_hostname(h))
                return vcr_error_make(
                    err, EINVAL, "`%s`: `%s` is not a host name (letters, digits, '-', '.')", s, h);
        }
    }
    const char *p = colon + 1;
    unsigned long value = 0;
    bool digits = *p != '\0';
    for (const char *c = p; digits && *c; c++) {
        if (*c < '0' || *c > '9')
            digits = false;
        else if (value <= 65535)
            value = value * 10 + (unsigned long)(*c - '0');
    }
    if (!digits)
        return vcr_error_make(err, EINVAL, "`%s`: port `%s` is not a number; allowed: 1..65535", s,
                              p);
    if (value < 1 || value > 65535)
        return vcr_error_make(err, EINVAL, "`%s`: port `%s` is out of range; allowed: 1..65535", s,
                              p);
    *port = (uint16_t)value;
    *host = steal_pointer(&h);
    return 0;
}

bool vcr_cert_name_is_valid(const char *name)
{
    if (name == NULL || *name == '\0' || strlen(name) > 253)
        return false;
    if (vcr_ip_family(name) != 0)
        return true;
    const char *label = name;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t len = (size_t)(p - label);
            if (len == 0 || len > 63 || label[0] == '-' || p[-1] == '-')
                return false;
            if (*p == '\0')
                return true;
            label = p + 1;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            return false;
        }
    }
}

int vcr_ip_family(const char *s)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (s == NULL)
        return 0;
    if (inet_pton(AF_INET, s, &a4) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, s, &a6) == 1)
        return AF_INET6;
    return 0;
}

int vcr_sockaddr_of(const char *address, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (address && inet_pton(AF_INET, address, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof(*sin);
        return 0;
    }
    if (address && inet_pton(AF_INET6, address, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof(*sin6);
        return 0;
    }
    return -1;
}

const char *vcr_host_port_format(const char *host, uint16_t port, char *buf, size_t size)
{
    bool v6 = host && strchr(host, ':') != NULL;
    snprintf(buf, size, v6 ? "[%s]:%u" : "%s:%u", host ? host : "", (unsigned)port);
    return buf;
}
