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
    json_t *value;      /* return value, error object, event data, or greeting (borrowed) */
    const char *event;  /* event name for QMP_MSG_EVENT */
    const char *eclass; /* error class for QMP_MSG_ERROR */
    const char *desc;   /* error description for QMP_MSG_ERROR */
    int64_t ts_us;      /* event timestamp (QEMU's clock) in microseconds, or 0 */
};

/* Largest single message accepted; QEMU's replies we use are far smaller. */
#define QMP_MAX_MESSAGE (1u << 20)

struct qmp_parser;
typedef void (*qmp_msg_cb)(const struct qmp_msg *msg, void *opaque);

struct qmp_parser *qmp_parser_new(size_t max_message);
void qmp_parser_free(struct qmp_parser *p);
/* Feed bytes; calls cb once per complete message, in order.  Returns 0, or -1
 * with *err set when the stream is malformed (invalid JSON, not an object, an
 * object of no known kind, or a message over the size limit).  After an error
 * the parser must not be fed again. */
int qmp_parser_feed(struct qmp_parser *p, const char *data, size_t len, qmp_msg_cb cb,
                    void *opaque, vcr_error_t *err);

/* Classify a parsed object; returns -1 with *err if it is no QMP message. */
int qmp_msg_classify(json_t *root, struct qmp_msg *out, vcr_error_t *err);

/* --- asynchronous client --- */
struct qmp_client;

struct qmp_client_ops {
    /* Capabilities negotiated: commands may be sent. */
    void (*ready)(struct qmp_client *c, void *opaque);
    /* An asynchronous event (SHUTDOWN, RESET, STOP, RESUME, GUEST_PANICKED, ...). */
    void (*event)(struct qmp_client *c, const char *name, json_t *data, int64_t ts_us,
                  void *opaque);
    /* The connection ended (EOF, error, protocol violation).  reason is
     * NULL on an orderly EOF.  Pending commands have already been failed. */
    void (*closed)(struct qmp_client *c, const char *reason, void *opaque);
};

/* Reply callback: exactly one of result / error is non-NULL (error is a
 * human message: "CLASS: desc", or "connection closed"). */
typedef void (*qmp_reply_cb)(struct qmp_client *c, json_t *result, const char *error,
                             void *opaque);

struct qmp_client *qmp_client_new(struct event_base *base, const struct qmp_client_ops *ops,
                                  void *opaque);
/* Start a non-blocking connect to a UNIX socket. */
int qmp_client_connect(struct qmp_client *c, const char *socket_path, vcr_error_t *err);
/* Send a command.  args may be NULL; it is stolen (decref'd by the client).
 * cb may be NULL.  Returns -1 if the client is not ready or closed. */
int qmp_client_command(struct qmp_client *c, const char *command, json_t *args,
                       qmp_reply_cb cb, void *opaque, vcr_error_t *err);
int qmp_client_is_ready(const struct qmp_client *c);
/* Closes the socket; pending reply callbacks are called with "connection closed";
 * the closed op is NOT called. */
void qmp_client_free(struct qmp_client *c);

#endif
