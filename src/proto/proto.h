/* Agent <-> server protocol: versioned, length-bounded frames carrying JSON.
 *
 * Frame = 4-byte big-endian payload length + payload (UTF-8 JSON object).
 * The length must be 1 .. PROTO_MAX_FRAME.  Every payload is an object with
 *   "v": PROTO_VERSION (integer), "type": string, and type-specific members.
 * Messages (see docs/protocol.md for each member):
 *   agent -> server: hello, heartbeat, vm_event, sample, reply
 *   server -> agent: welcome, order
 * The decoder is incremental and never trusts a length or a member type. */
#ifndef VCR_PROTO_H
#define VCR_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PROTO_VERSION   1
#define PROTO_MAX_FRAME (256u * 1024u)

/* Encode msg (borrowed) into a newly allocated frame; returns its length or -1. */
int proto_encode(json_t *msg, char **frame, size_t *frame_len, vcr_error_t *err);

struct proto_decoder;
struct proto_decoder *proto_decoder_new(void);
void proto_decoder_free(struct proto_decoder *d);
/* Feed bytes.  For each complete, valid frame calls cb with the decoded object
 * (owned by the decoder; incref to keep).  Returns 0 or -1 with *err on a bad
 * frame: length 0 or over the limit, invalid JSON, not an object, missing or
 * wrong "v", missing "type".  After an error the stream is dead. */
typedef int (*proto_msg_cb)(json_t *msg, void *opaque);
int proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len, proto_msg_cb cb,
                       void *opaque, vcr_error_t *err);

/* Build a message {"v":1,"type":type} plus the members of body (stolen, may be NULL). */
json_t *proto_msg_new(const char *type, json_t *body);
const char *proto_msg_type(json_t *msg);

/* --- a framed connection on a libevent loop (used by both agent and server) --- */
struct event_base;
struct proto_conn;

struct proto_conn_ops {
    void (*message)(struct proto_conn *c, json_t *msg, void *opaque);
    void (*connected)(struct proto_conn *c, void *opaque); /* outgoing connect done */
    void (*closed)(struct proto_conn *c, const char *reason, void *opaque);
};

/* Wrap an accepted, connected fd (ownership of fd passes to the conn). */
struct proto_conn *proto_conn_from_fd(struct event_base *base, int fd,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err);
/* Outgoing TCP connect to "HOST:PORT". */
struct proto_conn *proto_conn_connect(struct event_base *base, const char *host_port,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err);
/* Queue msg (borrowed) for sending. */
int proto_conn_send(struct proto_conn *c, json_t *msg, vcr_error_t *err);
const char *proto_conn_peer(const struct proto_conn *c);
void proto_conn_free(struct proto_conn *c);

/* Parse "HOST:PORT" (IPv4 dotted quad or name, port 1..65535). */
int proto_parse_host_port(const char *s, char **host, uint16_t *port, vcr_error_t *err);

#endif
