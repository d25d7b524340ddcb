/* A migration's files carried agent to agent over one TCP connection
 * (docs/migration.md, "The stream"), not through the server: the target
 * listens on an ephemeral port, the source connects and sends.
 *
 * The wire, source -> target: the 32-byte token, the file's size (8 bytes,
 * big endian), then the file's bytes; target -> source: one status byte once
 * the file is checked and in place (or refused).  The server makes the token
 * (RAND_bytes) and gives it to both agents inside orders on their mutually
 * authenticated TLS links (docs/security.md); the target compares it in
 * constant time and keeps accepting, one connection at a time with a short
 * header deadline, until a connection brings the right token: only then does
 * it close its listener (a port scan or a squatter cannot take the sender's
 * place).  The file arrives in a temporary file (O_EXCL | O_NOFOLLOW, a name
 * of its own per receive) beside its final name, is fsynced and renamed into
 * place only after its size and SHA-256 are the order's.  Both sides run in a
 * child process (standby_job.h) with a deadline, and give up when no byte
 * moves for STANDBY_STREAM_IDLE_MS (a dead peer). */
#ifndef VCR_AGENT_STANDBY_STREAM_H
#define VCR_AGENT_STANDBY_STREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define STANDBY_STREAM_TOKEN_BYTES 32
/* A receive's or send's deadline: at most this long (the order's deadline_ms). */
#include "proto/proto.h"
#define STANDBY_STREAM_DEADLINE_MAX_MS PROTO_STREAM_DEADLINE_MAX_MS
/* The target waits at most this long for the sender to connect: the server
 * orders the send as soon as the receive answers, so a sender that has not
 * come by then will not (an agent without the stream, refused as an unknown
 * order: the server copies in chunks and the listener must not linger). */
#define STANDBY_STREAM_ACCEPT_MS 20000
/* A connection must bring its 40-byte header within this long, or the target
 * hangs up on it and accepts the next one. */
#define STANDBY_STREAM_HEADER_MS 2000
/* Either end gives up (ETIMEDOUT) when no byte moved for this long: a peer
 * whose VM died sends no FIN nor RST.  Also the sockets' TCP_USER_TIMEOUT. */
#define STANDBY_STREAM_IDLE_MS 10000

/* The target's verdict, the one byte it answers. */
enum standby_stream_status {
    STANDBY_STREAM_OK = 0,
    STANDBY_STREAM_BAD_TOKEN = 1,
    STANDBY_STREAM_BAD_SIZE = 2,
    STANDBY_STREAM_BAD_SHA256 = 3,
    STANDBY_STREAM_IO = 4,
};

/* Which file an order names: a migration's image (kind "image": name, phase:
 * BASE/NAME/PHASE.tar) or a service's packed data (kind "data": service:
 * DATA/SERVICE/outgoing.gz on the source, incoming.gz on the target). */
struct standby_stream_order {
    bool data;
    char name[65];
    char phase[8];
    char service[65];
    uint64_t bytes;
    char sha256[65]; /* stream_receive: lower-case hex */
    unsigned char token[STANDBY_STREAM_TOKEN_BYTES];
    char address[64]; /* stream_send: the target's address */
    uint16_t port;    /* stream_send */
    int64_t deadline_ms;
    /* Not order members: 0 means STANDBY_STREAM_ACCEPT_MS, _HEADER_MS, _IDLE_MS. */
    int64_t accept_ms, header_ms, idle_ms;
};
/* stream_receive {kind, name, phase | service, bytes, sha256, token (64 hex
 * digits), deadline_ms} (send false) or stream_send {kind, name, phase |
 * service, bytes, address, port, token, deadline_ms} (send true). */
int standby_stream_order_from_json(json_t *msg, bool send, struct standby_stream_order *o,
                                   vcr_error_t *err);
/* 64 hex digits into 32 bytes; EINVAL otherwise. */
int standby_stream_token_parse(const char *hex, unsigned char token[STANDBY_STREAM_TOKEN_BYTES],
                               vcr_error_t *err);
/* Constant time (CRYPTO_memcmp): a wrong token takes as long at any byte. */
bool standby_stream_token_equal(const unsigned char *a, const unsigned char *b);

/* A TCP listener on an ephemeral port of every address (the agent does not
 * know which of its addresses the sender will use: the server names the one it
 * sees the agent connect from, which NAT may change): its fd and *port, or -1
 * and *err. */
int standby_stream_listen(uint16_t *port, vcr_error_t *err);

/* How a transfer went (both sides). */
struct standby_stream_stats {
    uint64_t bytes;
    int64_t ms;
};

/* Target: accepts connections on listen_fd (closed here, whatever happens)
 * until one brings the right token within its header deadline, or
 * STANDBY_STREAM_ACCEPT_MS passed (then ETIMEDOUT, or EACCES if a wrong
 * token came); a connection that sends nothing, too little or a wrong token
 * is closed and the next one accepted.  Receives o->bytes into .FILE.PID.part in
 * dir_fd, checks size and SHA-256, fsyncs it, renames it to file and fsyncs
 * dir_fd; answers the status byte.  A wrong size or digest: nothing renamed
 * into place, EIO, the temporary file removed; no byte for the idle time:
 * ETIMEDOUT. */
int standby_stream_receive(int listen_fd, int dir_fd, const char *file, const char *shown,
                           const struct standby_stream_order *o, struct standby_stream_stats *st,
                           vcr_error_t *err);
/* Source: sends path (a regular file of o->bytes bytes, not followed through
 * a symbolic link) to o->address:o->port with the token; waits for the
 * target's status byte.  EACCES when the target refused the token, EIO for
 * its other refusals, ETIMEDOUT at the deadline or when no byte moved for the
 * idle time.  The process must ignore
 * SIGPIPE (the agent does, agent.c): a target that hangs up is an error here. */
int standby_stream_send(const char *path, const struct standby_stream_order *o,
                        struct standby_stream_stats *st, vcr_error_t *err);

/* The job result text of a transfer: {"bytes", "ms", "mb_s"}. */
void standby_stream_result_text(const struct standby_stream_stats *st, char *out, size_t size);

#endif
