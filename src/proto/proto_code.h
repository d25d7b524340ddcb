/* Why an order was refused, as a word on the wire (a reply's `code`,
 * docs/protocol.md).  The server decides on these, never on the text of
 * `error`, which is for people.  Agents derive the code from the errno-style
 * status of their vcr_error_t (proto_code_from_errno). */
#ifndef VCR_PROTO_CODE_H
#define VCR_PROTO_CODE_H

enum proto_code {
    PROTO_CODE_NONE,    /* no code (an older agent, or a success) */
    PROTO_CODE_EXISTS,  /* the thing to create is there already (EEXIST) */
    PROTO_CODE_ABSENT,  /* no such VM or container (ENOENT) */
    PROTO_CODE_BUSY,    /* another order for it is running (EBUSY, EAGAIN) */
    PROTO_CODE_INVALID, /* the order's members are wrong (EINVAL, EPROTO) */
    PROTO_CODE_STOPPED, /* it is not running (ESRCH) */
    PROTO_CODE_FAILED,  /* anything else */
    /* A container image's bytes do not have the order's SHA-256
     * (PROTO_STATUS_IMAGE_CHECKSUM); nothing was started. */
    PROTO_CODE_IMAGE_CHECKSUM,
    /* Redundant servers (docs/ha.md): the order's `term` is older than the
     * newest the agent has seen: a deposed leader's (PROTO_STATUS_STALE_TERM). */
    PROTO_CODE_STALE_TERM,
    /* In an `error` frame: the server is not the leader (its `leader` member
     * names the one that is, when known). */
    PROTO_CODE_NOT_LEADER,
    /* The agent's backend cannot do this (ENOTSUP): a libvirt host refuses a
     * warm restart (docs/agent.md, "The libvirt role"). */
    PROTO_CODE_UNSUPPORTED,
    /* The agent's backend did not answer in time (ETIMEDOUT): a libvirt host
     * whose libvirtd hangs; what the order asked may or may not have happened. */
    PROTO_CODE_TIMEOUT,
    /* The agent's role has no such action (PROTO_STATUS_UNKNOWN_ORDER): an
     * agent older than the order.  Agents before this code said `invalid`. */
    PROTO_CODE_UNKNOWN_ORDER,
};

/* errno-style statuses of our own, for failures no errno names: the kernel's
 * errno values end at 4095 (MAX_ERRNO), so these never collide with one.
 * Never passed to strerror. */
#define PROTO_STATUS_IMAGE_CHECKSUM 4096
#define PROTO_STATUS_STALE_TERM     4097
#define PROTO_STATUS_UNKNOWN_ORDER  4098

const char *proto_code_name(enum proto_code code);
/* PROTO_CODE_NONE for NULL or an unknown word. */
enum proto_code proto_code_parse(const char *name);
enum proto_code proto_code_from_errno(int status);

#endif
