/* Agent <-> server protocol: versioned, length-bounded frames carrying JSON.
 *
 * Frame = 4-byte big-endian payload length + payload (UTF-8 JSON object).
 * The length must be 1 .. PROTO_MAX_FRAME.  Every payload is an object with
 *   "v": PROTO_VERSION (integer), "type": string, and type-specific members.
 * Messages (see docs/protocol.md for each member):
 *   agent -> server: hello, heartbeat, vm_event, sample, reply, self_fence
 *   server -> agent: challenge, welcome, order, error
 * The decoder is incremental and never trusts a length or a member type. */
#ifndef VCR_PROTO_H
#define VCR_PROTO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define PROTO_VERSION   1
#define PROTO_MAX_FRAME (256u * 1024u)
/* The longest deadline_ms a stream_receive or stream_send may carry: agents
 * refuse more (EINVAL), the server never asks more (chunk_copy.h). */
#define PROTO_STREAM_DEADLINE_MAX_MS 3600000

/* Encode msg (borrowed) into a newly allocated frame; returns its length or -1.
 * msg must itself pass the checks the decoder makes (object, "v": 1, string
 * "type") and fit in PROTO_MAX_FRAME, so that nothing is sent the peer would
 * reject. */
int proto_encode(json_t *msg, char **frame, size_t *frame_len, vcr_error_t *err);

struct proto_decoder;
/* NULL only when out of memory. */
struct proto_decoder *proto_decoder_new(void);
void proto_decoder_free(struct proto_decoder *d);
/* Feed bytes.  For each complete, valid frame calls cb with the decoded object
 * (owned by the decoder; incref to keep).  Returns 0 or -1 with *err on a bad
 * frame: length 0 or over the limit, invalid JSON, not an object, missing or
 * wrong "v", missing "type".  After an error the stream is dead.
 * cb returns 0 to go on; any other value stops the feed at once: feed returns 0,
 * the rest of data is dropped and the stream is dead too (the caller is
 * abandoning it).  Feeding a dead stream is an error. */
typedef int (*proto_msg_cb)(json_t *msg, void *opaque);
int proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len, proto_msg_cb cb,
                       void *opaque, vcr_error_t *err);

/* Build a message {"v":1,"type":type} plus the members of body (stolen, may be
 * NULL; "v" and "type" in body are overridden).  NULL if body is not an object
 * or memory runs out. */
json_t *proto_msg_new(const char *type, json_t *body);
/* The "type" of msg, or NULL if it has none. */
const char *proto_msg_type(json_t *msg);

/* --- a framed connection on a libevent loop (used by both agent and server) ---
 *
 * Callbacks run from the event loop, never from inside a proto_conn_* call.
 * Messages are borrowed for the duration of the callback.  proto_conn_free()
 * may be called from any callback of the conn it frees; no callback of that
 * conn runs afterwards.  After `closed` the conn is inert (send fails) and the
 * owner must still free it.  The process must ignore SIGPIPE: libevent writes
 * with writev(), and a peer that vanished would otherwise kill us. */
struct event_base;
struct proto_conn;
struct proto_tls;

struct proto_conn_ops {
    void (*message)(struct proto_conn *c, json_t *msg, void *opaque);
    /* Outgoing connect done (TCP established).  Not called for proto_conn_from_fd. */
    void (*connected)(struct proto_conn *c, void *opaque);
    /* Reported once: connect failed, peer closed, socket error, bad frame from the
     * peer (reason names the protocol error), or the end of proto_conn_close(). */
    void (*closed)(struct proto_conn *c, const char *reason, void *opaque);
};

/* Wrap an accepted, connected fd (ownership of fd passes to the conn, also on
 * failure).  Sets TCP_NODELAY.  tls (borrowed, must outlive the conn; NULL:
 * plain TCP): the conn runs the server side of a TLS handshake, and a peer
 * without a certificate signed by the CA is closed before any frame is read. */
struct proto_conn *proto_conn_from_fd(struct event_base *base, int fd, const struct proto_tls *tls,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err);
/* Outgoing TCP connect to "HOST:PORT", non-blocking (names are resolved with
 * evdns, also asynchronously).  Success or failure is reported later through
 * `connected` or `closed`; -1 here only for a bad address or no resources.
 * Messages sent before `connected` are queued.  tls (borrowed; NULL: plain
 * TCP): `connected` comes only after a handshake in which the server showed a
 * certificate signed by the CA naming server_name (NULL: HOST). */
struct proto_conn *proto_conn_connect(struct event_base *base, const char *host_port,
                                      const struct proto_tls *tls, const char *server_name,
                                      const struct proto_conn_ops *ops, void *opaque,
                                      vcr_error_t *err);
/* Queue msg (borrowed) for sending.  Fails on a closed or closing conn, or with
 * ENOBUFS when PROTO_CONN_MAX_QUEUED bytes already wait for a peer that does not
 * read. */
#define PROTO_CONN_MAX_QUEUED (16u * PROTO_MAX_FRAME)
int proto_conn_send(struct proto_conn *c, json_t *msg, vcr_error_t *err);
/* Graceful close: stop reading, write what is queued (e.g. an `error` message),
 * then close the socket and report `closed` with reason.  No-op if already
 * closed or closing. */
void proto_conn_close(struct proto_conn *c, const char *reason);
/* "ADDR:PORT" of the peer (for an outgoing conn: the HOST:PORT asked for). */
const char *proto_conn_peer(const struct proto_conn *c);
/* Whether the conn runs over TLS. */
bool proto_conn_is_tls(const struct proto_conn *c);
/* Whether the peer showed a verified certificate that names `name`
 * (proto_tls_cert_names); false on a plain conn. */
bool proto_conn_peer_names(const struct proto_conn *c, const char *name);
/* Drops queued output; see the rules above for calling it from a callback. */
void proto_conn_free(struct proto_conn *c);

/* --- authentication (docs/protocol.md "Authentication") --- */
#define PROTO_NONCE_HEX_LEN 32 /* 16 random bytes */
#define PROTO_AUTH_HEX_LEN  64 /* HMAC-SHA256 */
#define PROTO_KEY_MIN_LEN   16
#define PROTO_KEY_MAX_LEN   4096

/* out_hex (PROTO_AUTH_HEX_LEN + 1 bytes) = lowercase hex(HMAC-SHA256(key, nonce)),
 * the `auth` member of `hello`.  Returns 0, or -1 (out_hex = "") only if OpenSSL
 * fails, which means it ran out of memory. */
int proto_auth_compute(const void *key, size_t key_len, const char *nonce, char *out_hex);
/* Whether auth_hex (may be NULL) is the right answer to nonce, compared in
 * constant time; upper- or lowercase hex both accepted. */
bool proto_auth_verify(const void *key, size_t key_len, const char *nonce, const char *auth_hex);
/* out (PROTO_NONCE_HEX_LEN + 1 bytes) = a fresh random nonce in lowercase hex. */
int proto_auth_new_nonce(char *out, vcr_error_t *err);
/* Read a shared key file the way both sides must: its bytes, minus trailing
 * newlines, carriage returns, spaces and tabs; PROTO_KEY_MIN_LEN .. PROTO_KEY_MAX_LEN
 * bytes remain.  *key is allocated (not NUL-terminated data; a NUL is appended). */
int proto_auth_load_key(const char *path, char **key, size_t *key_len, vcr_error_t *err);

#endif
