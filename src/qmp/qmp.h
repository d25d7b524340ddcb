/* QMP (QEMU Machine Protocol) client: an incremental message parser and an
 * asynchronous client that runs on a libevent loop.
 *
 * Parser: QMP is a stream of JSON objects (QEMU ends each with "\r\n", but we
 * do not rely on it).  Bytes are fed as they arrive; every complete object is
 * classified and handed to a callback.  Split reads, several messages per read
 * and garbage are all handled; malformed input yields an error, never a crash.
 *
 * Client: connects to a QMP UNIX socket, waits for the greeting, sends
 * qmp_capabilities, then reports ready.  Commands carry a numeric "id" and
 * replies are matched by id, so events arriving between a command and its
 * reply are delivered as events.  Memory: the client owns every json_t it
 * receives; callbacks borrow them for the duration of the call. */
#ifndef VCR_QMP_H
#define VCR_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct event_base;

enum qmp_msg_kind {
    QMP_MSG_GREETING, /* {"QMP": {...}} */
    QMP_MSG_RETURN,   /* {"return": ..., "id": ...} */
    QMP_MSG_ERROR,    /* {"error": {"class": ..., "desc": ...}, "id": ...} */
    QMP_MSG_EVENT,    /* {"event": NAME, "data": {...}, "timestamp": {...}} */
};

struct qmp_msg {
    enum qmp_msg_kind kind;
    json_t *root;       /* the whole object (borrowed) */
    json_t *id;         /* "id" member or NULL (borrowed) */
    json_t *value;      /* return value, error object, event data (NULL if the event has
                         * none), or greeting (borrowed) */
    const char *event;  /* event name for QMP_MSG_EVENT */
    const char *eclass; /* error class for QMP_MSG_ERROR */
    const char *desc;   /* error description for QMP_MSG_ERROR */
    int64_t ts_us;      /* event timestamp (QEMU's clock) in microseconds, or 0 */
};

/* Largest single message accepted; QEMU's replies we use are far smaller. */
#define QMP_MAX_MESSAGE (1u << 20)

struct qmp_parser;
typedef void (*qmp_msg_cb)(const struct qmp_msg *msg, void *opaque);

/* max_message 0 means QMP_MAX_MESSAGE.  Returns NULL only when out of memory. */
struct qmp_parser *qmp_parser_new(size_t max_message);
void qmp_parser_free(struct qmp_parser *p);
/* Feed bytes; calls cb once per complete message, in order (cb must not free
 * the parser).  Returns 0, or -1 with *err set when the stream is malformed
 * (invalid JSON, not an object, an object of no known kind, or a message over
 * the size limit).  A broken object is reported once a '}' after the breakage
 * has arrived, or when it reaches the size limit.  After an error the parser
 * must not be fed again. */
int qmp_parser_feed(struct qmp_parser *p, const char *data, size_t len, qmp_msg_cb cb, void *opaque,
                    vcr_error_t *err);
/* Bytes of an incomplete message held (0 between messages): non-zero at EOF
 * means the peer stopped in the middle of a message. */
size_t qmp_parser_buffered(const struct qmp_parser *p);

/* Classify a parsed object; returns -1 with *err if it is no QMP message. */
int qmp_msg_classify(json_t *root, struct qmp_msg *out, vcr_error_t *err);

/* --- asynchronous client --- */
struct qmp_client;

struct qmp_client_ops {
    /* Capabilities negotiated: commands may be sent. */
    void (*ready)(struct qmp_client *c, void *opaque);
    /* An asynchronous event (SHUTDOWN, RESET, STOP, RESUME, GUEST_PANICKED, ...).
     * data is NULL for events without data (STOP, RESUME); ts_us is 0 if
     * QEMU's timestamp is missing or out of range. */
    void (*event)(struct qmp_client *c, const char *name, json_t *data, int64_t ts_us,
                  void *opaque);
    /* The connection ended (EOF, error, protocol violation), or
     * qmp_client_connect_retry gave up.  reason is NULL on an orderly EOF
     * between messages.  Pending commands have already been failed.  The
     * client may be freed here, or connected again. */
    void (*closed)(struct qmp_client *c, const char *reason, void *opaque);
};

/* Reply callback: exactly one of result / error is non-NULL (error is a
 * human message: "CLASS: desc", or "connection closed[: REASON]"). */
typedef void (*qmp_reply_cb)(struct qmp_client *c, json_t *result, const char *error, void *opaque);

/* ops is copied; any op may be NULL.  Returns NULL only when out of memory. */
struct qmp_client *qmp_client_new(struct event_base *base, const struct qmp_client_ops *ops,
                                  void *opaque);
/* Connect to a QMP UNIX socket without blocking: a UNIX-domain connect ends at
 * once, so this either returns 0 (connected; the greeting, capabilities
 * negotiation and ops->ready follow on the loop) or fails at once.  Worth
 * retrying (QEMU creates its socket a moment after it starts): ENOENT (not
 * created yet), ECONNREFUSED (not listening yet, or a stale socket file) and
 * EAGAIN (listen backlog full).  Allowed on a new client or after closed. */
int qmp_client_connect(struct qmp_client *c, const char *socket_path, vcr_error_t *err);
/* qmp_client_connect, retried on a timer while it fails with ENOENT,
 * ECONNREFUSED or EAGAIN, for up to timeout_ms.  Returns -1 only for an error
 * not worth retrying; otherwise 0, and the outcome comes from the loop:
 * ops->ready, or ops->closed with the last connect error once the time is up.
 * qmp_client_free cancels the retrying. */
int qmp_client_connect_retry(struct qmp_client *c, const char *socket_path, int timeout_ms,
                             vcr_error_t *err);
/* Send a command.  args may be NULL or an object; it is stolen (decref'd by
 * the client).  cb may be NULL; otherwise it is called exactly once: with the
 * reply, or with an error when the connection ends first.  Returns -1 if the
 * client is not ready or closed (cb is not called then). */
int qmp_client_command(struct qmp_client *c, const char *command, json_t *args, qmp_reply_cb cb,
                       void *opaque, vcr_error_t *err);
/* qmp_client_command with a descriptor passed along (SCM_RIGHTS), for the
 * commands that take one: add-fd, getfd.  fd is borrowed (the kernel gives
 * QEMU a copy).  Earlier commands still queued are written first; -1 with
 * EAGAIN if the socket would not take them now. */
int qmp_client_command_fd(struct qmp_client *c, const char *command, json_t *args, int fd,
                          qmp_reply_cb cb, void *opaque, vcr_error_t *err);
int qmp_client_is_ready(const struct qmp_client *c);
/* Who gets the events and the end of the connection from now on (a client
 * handed from one owner to another); pending reply callbacks are kept. */
void qmp_client_set_ops(struct qmp_client *c, const struct qmp_client_ops *ops, void *opaque);
/* Closes the socket; pending reply callbacks are called with "connection closed";
 * the closed op is NOT called.  Safe from any of the client's callbacks: the
 * memory is released when the callback returns, and no further callback but
 * those pending replies runs. */
void qmp_client_free(struct qmp_client *c);

#endif
