/* HOST:PORT as the configuration and the command line give it (see
 * hostport.h). */
#include "common/hostport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
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
        return vcr_error_make(err, EINVAL, "`%s`: expected HOST:PORT, e.g. 127.0.0.1:7070",
                              s ? s : "");
    cleanup_free char *h = strndup(s, (size_t)(colon - s));
    if (h == NULL)
        return vcr_error_errno(err, "`%s`", s);
    if (*h == '\0')
        return vcr_error_make(err, EINVAL, "`%s`: the host is empty; expected HOST:PORT", s);
    if (strchr(h, ':') != NULL || *h == '[')
        return vcr_error_make(err, EINVAL, "`%s`: IPv6 addresses are not supported; use IPv4", s);
    struct in_addr addr;
    if (inet_pton(AF_INET, h, &addr) != 1) {
        if (all_digits_and_dots(h))
            return vcr_error_make(err, EINVAL, "`%s`: `%s` is not a valid IPv4 address", s, h);
        if (!valid_hostname(h))
            return vcr_error_make(
                err, EINVAL, "`%s`: `%s` is not a host name (letters, digits, '-', '.')", s, h);
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
    struct in_addr a;
    if (name == NULL || *name == '\0' || strlen(name) > 253)
        return false;
    if (inet_pton(AF_INET, name, &a) == 1)
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
