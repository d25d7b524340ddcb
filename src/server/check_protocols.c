/* The health-check protocols a service's `check.type` may name.  A new one is
 * a check_NAME.c defining check_NAME_ops (check.h's struct check_ops), and its
 * entry here (declaration and table row); the configuration's messages and the
 * fuzz harness (tests/fuzz/fuzz_check.c) find it through the table. */
#include <stdio.h>
#include <string.h>

#include "server/check.h"

extern const struct check_ops check_redis_ops;

static const struct check_ops *const protocols[] = {
    &check_tcp_ops,
    &check_http_ops,
    &check_redis_ops,
};

const struct check_ops *check_protocol(const char *name)
{
    for (size_t i = 0; name && i < sizeof(protocols) / sizeof(protocols[0]); i++)
        if (strcmp(protocols[i]->name, name) == 0)
            return protocols[i];
    return NULL;
}

const struct check_ops *check_protocol_at(size_t i)
{
    return i < sizeof(protocols) / sizeof(protocols[0]) ? protocols[i] : NULL;
}

const char *check_protocols_allowed(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]) && used < size; i++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", protocols[i]->name);
    return buf;
}
