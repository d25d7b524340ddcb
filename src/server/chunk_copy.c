/* Chunked copies between agents (see chunk_copy.h). */
#include "server/chunk_copy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/proto.h"
#include "proto/proto_code.h"
#include "server/agents.h"

struct chunk_copy {
    struct agents *agents;
    char src_host[65], src_vm[65], read_action[32];
    char dst_host[65], dst_vm[65], write_action[32];
    json_t *read_members, *write_members, *stream_members;
    struct chunk_copy_stats *out;
    bool streaming;
    int64_t bytes, offset, t0, chunk_bytes, order_ms;
    char sha256[65];
    chunk_copy_done_cb done;
    void *opaque;
};

static void finish(struct chunk_copy *cc, const char *error)
{
    int64_t ms = vcr_mono_ms() - cc->t0;
    if (cc->out) {
        snprintf(cc->out->method, sizeof(cc->out->method), "%s",
                 cc->streaming ? "stream" : "server");
        cc->out->mb_s = ms > 0 ? (double)cc->offset / 1e6 / ((double)ms / 1000.0) : 0.0;
    }
    cc->done(error, cc->offset, ms, cc->opaque);
    json_decref(cc->read_members);
    json_decref(cc->write_members);
    json_decref(cc->stream_members);
    free(cc);
}

static const char *outcome_text(enum order_outcome outcome)
{
    return outcome == ORDER_REFUSED   ? "refused"
           : outcome == ORDER_TIMEOUT ? "no reply in time"
                                      : "host unreachable";
}

int64_t chunk_copy_b64_len(const char *data)
{
    size_t len = strlen(data);
    return (int64_t)(len / 4 * 3) - (len && data[len - 1] == '=') -
           (len > 1 && data[len - 2] == '=');
}

int64_t chunk_copy_stream_ms(int64_t bytes)
{
    int64_t cap = PROTO_STREAM_DEADLINE_MAX_MS;
    return bytes >= (cap - 60000) * 2000 ? cap : 60000 + bytes / 2000;
}

static void read_next(struct chunk_copy *cc);

static void on_write(enum order_outcome outcome, const char *message, json_t *reply, void *opaque)
{
    (void)reply;
    struct chunk_copy *cc = opaque;
    if (outcome != ORDER_DONE) {
        char text[600];
        snprintf(text, sizeof(text), "%s on %s: %s%s%s", cc->write_action, cc->dst_host,
                 outcome_text(outcome), message ? ": " : "", message ? message : "");
        finish(cc, text);
        return;
    }
    if (cc->offset < cc->bytes)
        read_next(cc);
    else
        finish(cc, NULL);
}

static void on_read(enum order_outcome outcome, const char *message, json_t *reply, void *opaque)
{
    struct chunk_copy *cc = opaque;
    char text[600];
    if (outcome != ORDER_DONE) {
        snprintf(text, sizeof(text), "%s on %s: %s%s%s", cc->read_action, cc->src_host,
                 outcome_text(outcome), message ? ": " : "", message ? message : "");
        finish(cc, text);
        return;
    }
    const char *data = json_string_value(json_object_get(reply, "data"));
    json_t *bytes = json_object_get(reply, "bytes");
    int64_t raw = data ? chunk_copy_b64_len(data) : 0;
    if (data == NULL || (json_is_integer(bytes) && json_integer_value(bytes) != cc->bytes) ||
        raw <= 0) {
        snprintf(text, sizeof(text), "%s on %s at offset %lld: no data, or the file changed size",
                 cc->read_action, cc->src_host, (long long)cc->offset);
        finish(cc, text);
        return;
    }
    bool last = cc->offset + raw >= cc->bytes;
    cleanup_json json_t *members = json_deep_copy(cc->write_members);
    json_object_set_new(members, "offset", json_integer(cc->offset));
    json_object_set_new(members, "data", json_string(data));
    json_object_set_new(members, "last", json_boolean(last));
    if (last) {
        json_object_set_new(members, "bytes", json_integer(cc->bytes));
        json_object_set_new(members, "sha256", json_string(cc->sha256));
    }
    cc->offset += raw;
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(cc->agents, cc->dst_host, cc->write_action, cc->dst_vm, members,
                               cc->order_ms, on_write, cc, &err) < 0) {
        snprintf(text, sizeof(text), "%s on %s: %s", cc->write_action, cc->dst_host,
                 vcr_error_msg(err));
        finish(cc, text);
    }
}

/* The first read is sent by chunk_copy_start: its callback comes from the loop. */
static int send_read(struct chunk_copy *cc, vcr_error_t *err)
{
    int64_t left = cc->bytes - cc->offset;
    cleanup_json json_t *members = json_deep_copy(cc->read_members);
    json_object_set_new(members, "offset", json_integer(cc->offset));
    json_object_set_new(members, "length",
                        json_integer(left < cc->chunk_bytes ? left : cc->chunk_bytes));
    return agents_send_order_with(cc->agents, cc->src_host, cc->read_action, cc->src_vm, members,
                                  cc->order_ms, on_read, cc, err) < 0
               ? -1
               : 0;
}

static void read_next(struct chunk_copy *cc)
{
    cleanup_error vcr_error_t err = NULL;
    if (send_read(cc, &err) < 0) {
        char text[600];
        snprintf(text, sizeof(text), "%s on %s: %s", cc->read_action, cc->src_host,
                 vcr_error_msg(err));
        finish(cc, text);
    }
}

/* --- the stream: stream_receive on the target, then stream_send on the source --- */

/* A refusal of stream_receive or stream_send as an unknown order (code
 * unknown_order, or unsupported): the chunks through the server instead, and
 * true.  Agents older than the stream are also older than unknown_order and
 * say invalid: taken as unknown too, but warned about, as an agent that knows
 * the stream and finds the order invalid says the same (the server's order is
 * then wrong: a deadline over the agents' maximum was once).  A target left
 * listening gives up at its accept deadline, having put nothing in place. */
static bool falls_back(struct chunk_copy *cc, const char *side, const char *message, json_t *reply)
{
    enum proto_code code = proto_code_parse(json_string_value(json_object_get(reply, "code")));
    if (code != PROTO_CODE_UNKNOWN_ORDER && code != PROTO_CODE_UNSUPPORTED &&
        code != PROTO_CODE_INVALID)
        return false;
    if (code == PROTO_CODE_INVALID)
        log_warn("copy from %s to %s: the %s refused the stream as invalid (%s): an agent older "
                 "than the stream, or a wrong order; through the server",
                 cc->src_host, cc->dst_host, side, message ? message : "refused");
    else
        log_info("copy from %s to %s: no stream on the %s (%s); through the server", cc->src_host,
                 cc->dst_host, side, message ? message : "refused");
    cc->streaming = false;
    cc->t0 = vcr_mono_ms();
    read_next(cc);
    return true;
}

static void on_stream_sent(enum order_outcome outcome, const char *message, json_t *reply,
                           void *opaque)
{
    struct chunk_copy *cc = opaque;
    char text[600];
    if (outcome == ORDER_REFUSED && falls_back(cc, "source", message, reply))
        return;
    if (outcome != ORDER_DONE) {
        snprintf(text, sizeof(text), "stream_send on %s: %s%s%s", cc->src_host,
                 outcome_text(outcome), message ? ": " : "", message ? message : "");
        finish(cc, text);
        return;
    }
    json_t *bytes = json_object_get(reply, "bytes");
    if (!json_is_integer(bytes) || json_integer_value(bytes) != cc->bytes) {
        snprintf(text, sizeof(text),
                 "stream_send on %s: the reply does not say the %lld bytes "
                 "were sent",
                 cc->src_host, (long long)cc->bytes);
        finish(cc, text);
        return;
    }
    cc->offset = cc->bytes;
    finish(cc, NULL);
}

static void on_stream_listening(enum order_outcome outcome, const char *message, json_t *reply,
                                void *opaque)
{
    struct chunk_copy *cc = opaque;
    char text[600];
    if (outcome == ORDER_REFUSED && falls_back(cc, "target", message, reply))
        return;
    json_t *port = json_object_get(reply, "port");
    char address[64];
    if (outcome != ORDER_DONE || !json_is_integer(port)) {
        snprintf(text, sizeof(text), "stream_receive on %s: %s%s%s", cc->dst_host,
                 outcome == ORDER_DONE ? "no port in the reply" : outcome_text(outcome),
                 message ? ": " : "", message ? message : "");
        finish(cc, text);
        return;
    }
    if (agents_host_address(cc->agents, cc->dst_host, address, sizeof(address)) < 0) {
        snprintf(text, sizeof(text), "stream to %s: the host is not connected", cc->dst_host);
        finish(cc, text);
        return;
    }
    cleanup_json json_t *members = json_deep_copy(cc->stream_members);
    json_object_set_new(members, "address", json_string(address));
    json_object_set(members, "port", port);
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(cc->agents, cc->src_host, "stream_send", cc->src_vm, members,
                               json_integer_value(json_object_get(members, "deadline_ms")) + 10000,
                               on_stream_sent, cc, &err) < 0) {
        snprintf(text, sizeof(text), "stream_send on %s: %s", cc->src_host, vcr_error_msg(err));
        finish(cc, text);
    }
}

static int send_stream_receive(struct chunk_copy *cc, vcr_error_t *err)
{
    unsigned char raw[32];
    char token[65];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return vcr_error_make(err, EIO, "no random bytes for the stream's token");
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(token + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof(raw));
    /* Both orders carry the token, the size and the deadline; the target the digest. */
    json_object_set_new(cc->stream_members, "token", json_string(token));
    json_object_set_new(cc->stream_members, "bytes", json_integer(cc->bytes));
    json_object_set_new(cc->stream_members, "deadline_ms",
                        json_integer(chunk_copy_stream_ms(cc->bytes)));
    OPENSSL_cleanse(token, sizeof(token));
    cleanup_json json_t *members = json_deep_copy(cc->stream_members);
    json_object_set_new(members, "sha256", json_string(cc->sha256));
    cc->streaming = true;
    return agents_send_order_with(cc->agents, cc->dst_host, "stream_receive", cc->dst_vm, members,
                                  cc->order_ms, on_stream_listening, cc, err) < 0
               ? -1
               : 0;
}

int chunk_copy_start(struct agents *agents, const struct chunk_copy_spec *spec,
                     chunk_copy_done_cb done, void *opaque, vcr_error_t *err)
{
    if (spec->bytes <= 0 || spec->sha256 == NULL || strlen(spec->sha256) != 64)
        return vcr_error_make(err, EINVAL, "copy from %s: no size or SHA-256 to copy by",
                              spec->src_host);
    struct chunk_copy *cc = calloc(1, sizeof(*cc));
    if (cc == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    cc->agents = agents;
    snprintf(cc->src_host, sizeof(cc->src_host), "%s", spec->src_host);
    snprintf(cc->src_vm, sizeof(cc->src_vm), "%s", spec->src_vm);
    snprintf(cc->read_action, sizeof(cc->read_action), "%s", spec->read_action);
    snprintf(cc->dst_host, sizeof(cc->dst_host), "%s", spec->dst_host);
    snprintf(cc->dst_vm, sizeof(cc->dst_vm), "%s", spec->dst_vm);
    snprintf(cc->write_action, sizeof(cc->write_action), "%s", spec->write_action);
    snprintf(cc->sha256, sizeof(cc->sha256), "%s", spec->sha256);
    cc->read_members = spec->read_members ? json_deep_copy(spec->read_members) : json_object();
    cc->write_members = spec->write_members ? json_deep_copy(spec->write_members) : json_object();
    cc->bytes = spec->bytes;
    cc->chunk_bytes = spec->chunk_bytes > 0 ? spec->chunk_bytes : CHUNK_COPY_BYTES;
    cc->order_ms = spec->order_ms > 0 ? spec->order_ms : CHUNK_COPY_ORDER_MS;
    cc->t0 = vcr_mono_ms();
    cc->done = done;
    cc->opaque = opaque;
    cc->out = spec->out;
    if (spec->stream_members && !spec->no_stream)
        cc->stream_members = json_deep_copy(spec->stream_members);
    if (cc->stream_members ? send_stream_receive(cc, err) < 0 : send_read(cc, err) < 0) {
        json_decref(cc->read_members);
        json_decref(cc->write_members);
        json_decref(cc->stream_members);
        free(cc);
        return -1;
    }
    return 0;
}
