#include "proto/proto_code.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

static const char *const names[] = {
    [PROTO_CODE_NONE] = "none",
    [PROTO_CODE_EXISTS] = "exists",
    [PROTO_CODE_ABSENT] = "absent",
    [PROTO_CODE_BUSY] = "busy",
    [PROTO_CODE_INVALID] = "invalid",
    [PROTO_CODE_STOPPED] = "stopped",
    [PROTO_CODE_FAILED] = "failed",
    [PROTO_CODE_IMAGE_CHECKSUM] = "image_checksum",
    [PROTO_CODE_STALE_TERM] = "stale_term",
    [PROTO_CODE_NOT_LEADER] = "not_leader",
    [PROTO_CODE_UNSUPPORTED] = "unsupported",
    [PROTO_CODE_TIMEOUT] = "timeout",
    [PROTO_CODE_UNKNOWN_ORDER] = "unknown_order",
};

const char *proto_code_name(enum proto_code code)
{
    return (unsigned)code < sizeof(names) / sizeof(names[0]) ? names[code] : "failed";
}

enum proto_code proto_code_parse(const char *name)
{
    for (size_t i = 1; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i], name) == 0)
            return (enum proto_code)i;
    return PROTO_CODE_NONE;
}

enum proto_code proto_code_from_errno(int status)
{
    switch (status) {
    case EEXIST:
        return PROTO_CODE_EXISTS;
    case ENOENT:
        return PROTO_CODE_ABSENT;
    case ENOTSUP:
        return PROTO_CODE_UNSUPPORTED;
    case ETIMEDOUT:
        return PROTO_CODE_TIMEOUT;
    case EBUSY:
    case EAGAIN:
        return PROTO_CODE_BUSY;
    case EINVAL:
    case EPROTO:
        return PROTO_CODE_INVALID;
    case ESRCH:
        return PROTO_CODE_STOPPED;
    case PROTO_STATUS_IMAGE_CHECKSUM:
        return PROTO_CODE_IMAGE_CHECKSUM;
    case PROTO_STATUS_STALE_TERM:
        return PROTO_CODE_STALE_TERM;
    case PROTO_STATUS_UNKNOWN_ORDER:
        return PROTO_CODE_UNKNOWN_ORDER;
    default:
        return PROTO_CODE_FAILED;
    }
}
