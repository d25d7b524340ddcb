/* Frame codec and incremental decoder (docs/protocol.md). */
#include "proto/proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"

#define HEADER_LEN 4

struct proto_decoder {
    unsigned char header[HEADER_LEN];
    size_t header_got;
    uint32_t payload_len; /* valid once header_got == HEADER_LEN */
    char *payload;        /* only for a payload split across feeds */
    size_t payload_got;
    bool dead;
};

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* The checks every message passes, in both directions. */
static int check_envelope(json_t *msg, vcr_error_t *err)
{
    if (!json_is_object(msg))
        return vcr_error_make(err, EPROTO, "message is %s, not an object", json_type_name(msg));
    json_t *v = json_object_get(msg, "v");
    if (v == NULL)
        return vcr_error_make(err, EPROTO, "message lacks \"v\"; expected \"v\": %d",
                              PROTO_VERSION);
    if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION) {
        cleanup_free char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        return vcr_error_make(err, EPROTO, "message has \"v\": %s; this side speaks version %d",
                              text ? text : "?", PROTO_VERSION);
    }
    json_t *type = json_object_get(msg, "type");
    if (!json_is_string(type))
        return vcr_error_make(err, EPROTO, "message lacks a string \"type\"");
    return 0;
}

int proto_encode(json_t *msg, char **frame, size_t *frame_len, vcr_error_t *err)
{
    if (msg == NULL)
        return vcr_error_make(err, EINVAL, "encode: no message");
    if (check_envelope(msg, err) < 0)
        return vcr_error_wrap(err, "encode");
    size_t n = json_dumpb(msg, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return vcr_error_make(err, EINVAL, "encode `%s`: cannot serialise the message",
                              proto_msg_type(msg));
    if (n > PROTO_MAX_FRAME)
        return vcr_error_make(err, EMSGSIZE,
                              "encode `%s`: message is %zu bytes; the frame limit is %u",
                              proto_msg_type(msg), n, PROTO_MAX_FRAME);
    cleanup_free char *buf = malloc(HEADER_LEN + n);
    if (buf == NULL)
        return vcr_error_errno(err, "encode `%s`", proto_msg_type(msg));
    if (json_dumpb(msg, buf + HEADER_LEN, n, JSON_COMPACT) != n)
        return vcr_error_make(err, EINVAL, "encode `%s`: message changed while serialising",
                              proto_msg_type(msg));
    uint32_t be = htonl((uint32_t)n);
    memcpy(buf, &be, HEADER_LEN);
    *frame_len = HEADER_LEN + n;
    *frame = steal_pointer(&buf);
    return (int)*frame_len;
}

struct proto_decoder *proto_decoder_new(void)
{
    return calloc(1, sizeof(struct proto_decoder));
}

void proto_decoder_free(struct proto_decoder *d)
{
    if (d == NULL)
        return;
    free(d->payload);
    free(d);
}

static json_t *parse_payload(const char *buf, size_t len, vcr_error_t *err)
{
    json_error_t jerr;
    /* JSON_DECODE_ANY so that a scalar payload gets the clearer "not an object". */
    cleanup_json json_t *msg =
        json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (msg == NULL) {
        vcr_error_make(err, EPROTO, "frame payload is not valid JSON: %s (byte %d)", jerr.text,
                       jerr.position);
        return NULL;
    }
    if (check_envelope(msg, err) < 0)
        return NULL;
    return steal_pointer(&msg);
}

static int fail(struct proto_decoder *d)
{
    d->dead = true;
    free(d->payload);
    d->payload = NULL;
    return -1;
}

/* Hands one frame to cb.  Returns 0 to go on, 1 if cb stopped the feed, -1 on error. */
static int deliver(struct proto_decoder *d, const char *buf, size_t len, proto_msg_cb cb,
                   void *opaque, vcr_error_t *err)
{
    json_t *msg = parse_payload(buf, len, err);
    if (msg == NULL)
        return fail(d);
    int r = cb(msg, opaque);
    json_decref(msg);
    if (r != 0) {
        d->dead = true;
        return 1;
    }
    return 0;
}

int proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len, proto_msg_cb cb,
                       void *opaque, vcr_error_t *err)
{
    if (d->dead)
        return vcr_error_make(err, EPROTO, "the stream already failed");
    const char *p = data;
    while (len > 0) {
        if (d->header_got < HEADER_LEN) {
            size_t n = HEADER_LEN - d->header_got;
            if (n > len)
                n = len;
            memcpy(d->header + d->header_got, p, n);
            d->header_got += n;
            p += n;
            len -= n;
            if (d->header_got < HEADER_LEN)
                break;
            uint32_t be;
            memcpy(&be, d->header, HEADER_LEN);
            d->payload_len = ntohl(be);
            d->payload_got = 0;
            if (d->payload_len == 0 || d->payload_len > PROTO_MAX_FRAME) {
                vcr_error_make(err, EPROTO, "frame length %u is out of range; allowed: 1..%u",
                               d->payload_len, PROTO_MAX_FRAME);
                return fail(d);
            }
            continue;
        }
        int r;
        if (d->payload == NULL && len >= d->payload_len) {
            /* The whole payload is in this buffer: parse it in place, no copy. */
            size_t n = d->payload_len;
            d->header_got = 0;
            r = deliver(d, p, n, cb, opaque, err);
            p += n;
            len -= n;
        } else {
            if (d->payload == NULL) {
                d->payload = malloc(d->payload_len);
                if (d->payload == NULL) {
                    vcr_error_errno(err, "frame of %u bytes", d->payload_len);
                    return fail(d);
                }
            }
            size_t n = d->payload_len - d->payload_got;
            if (n > len)
                n = len;
            memcpy(d->payload + d->payload_got, p, n);
            d->payload_got += n;
            p += n;
            len -= n;
            if (d->payload_got < d->payload_len)
                break;
            cleanup_free char *payload = steal_pointer(&d->payload);
            d->header_got = 0;
            r = deliver(d, payload, d->payload_len, cb, opaque, err);
        }
        if (r < 0)
            return -1;
        if (r > 0)
            return 0;
    }
    return 0;
}

json_t *proto_msg_new(const char *type, json_t *body)
{
    cleanup_json json_t *members = body;
    if (members != NULL && !json_is_object(members))
        return NULL;
    cleanup_json json_t *msg = json_object();
    cleanup_json json_t *type_str = json_string(type);
    if (msg == NULL || type_str == NULL)
        return NULL;
    /* "v" and "type" first, so frames read well in a packet dump; set again
     * after the members so that theirs cannot override them. */
    if (json_object_set_new(msg, "v", json_integer(PROTO_VERSION)) < 0 ||
        json_object_set(msg, "type", type_str) < 0 ||
        (members != NULL && json_object_update(msg, members) < 0) ||
        json_object_set_new(msg, "v", json_integer(PROTO_VERSION)) < 0 ||
        json_object_set(msg, "type", type_str) < 0)
        return NULL;
    return steal_pointer(&msg);
}

const char *proto_msg_type(json_t *msg)
{
    return json_string_value(json_object_get(msg, "type"));
}
