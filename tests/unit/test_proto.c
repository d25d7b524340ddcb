/* Frame codec, decoder edge cases, HMAC known answer, and a proto_conn pair
 * talking over loopback TCP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "common/clock.h"
#include "proto/proto.h"
#include "proto/proto_code.h"
#include "proto/proto_state.h"

struct collected {
    json_t *msgs; /* array of the decoded messages */
    int stop_after;
};

static int collect(json_t *msg, void *opaque)
{
    struct collected *c = opaque;
    json_array_append(c->msgs, msg);
    return c->stop_after > 0 && (int)json_array_size(c->msgs) >= c->stop_after;
}

static char *frame_of(const char *json_text, size_t *len)
{
    size_t n = strlen(json_text);
    char *f = malloc(4 + n);
    uint32_t be = htonl((uint32_t)n);
    memcpy(f, &be, 4);
    memcpy(f + 4, json_text, n);
    *len = 4 + n;
    return f;
}

/* Feeds the whole buffer in one call; returns feed's result, the error in *err. */
static int feed_all(const void *buf, size_t len, struct collected *c, vcr_error_t *err)
{
    struct proto_decoder *d = proto_decoder_new();
    int r = proto_decoder_feed(d, buf, len, collect, c, err);
    proto_decoder_free(d);
    return r;
}

static void test_round_trip(void **state)
{
    (void)state;
    json_t *msg = proto_msg_new("vm_event", json_pack("{s:s, s:s, s:s, s:I}", "vm", "web1", "state",
                                                      "crashed", "cause", "qemu killed by signal 9",
                                                      "ts_ms", (json_int_t)1700000000123));
    assert_non_null(msg);
    assert_string_equal(proto_msg_type(msg), "vm_event");
    cleanup_free char *frame = NULL;
    size_t len = 0;
    cleanup_error vcr_error_t err = NULL;
    int n = proto_encode(msg, &frame, &len, &err);
    assert_int_equal(n, (int)len);
    uint32_t be;
    memcpy(&be, frame, 4);
    assert_int_equal(ntohl(be), len - 4);

    struct collected c = {.msgs = json_array()};
    assert_int_equal(feed_all(frame, len, &c, &err), 0);
    assert_int_equal(json_array_size(c.msgs), 1);
    assert_true(json_equal(json_array_get(c.msgs, 0), msg));
    json_decref(c.msgs);
    json_decref(msg);
}

static void test_msg_new_overrides_envelope(void **state)
{
    (void)state;
    json_t *msg =
        proto_msg_new("hello", json_pack("{s:i, s:s, s:s}", "v", 7, "type", "evil", "host", "h1"));
    assert_int_equal(json_integer_value(json_object_get(msg, "v")), PROTO_VERSION);
    assert_string_equal(proto_msg_type(msg), "hello");
    assert_string_equal(json_string_value(json_object_get(msg, "host")), "h1");
    json_decref(msg);
    assert_null(proto_msg_new("hello", json_array()));
    msg = proto_msg_new("heartbeat", NULL);
    assert_int_equal(json_object_size(msg), 2);
    json_decref(msg);
}

static void test_split_byte_by_byte(void **state)
{
    (void)state;
    size_t l1, l2;
    cleanup_free char *f1 = frame_of("{\"v\":1,\"type\":\"heartbeat\",\"seq\":1}", &l1);
    cleanup_free char *f2 = frame_of("{\"v\":1,\"type\":\"heartbeat\",\"seq\":2}", &l2);
    cleanup_free char *both = malloc(l1 + l2);
    memcpy(both, f1, l1);
    memcpy(both + l1, f2, l2);
    struct collected c = {.msgs = json_array()};
    struct proto_decoder *d = proto_decoder_new();
    cleanup_error vcr_error_t err = NULL;
    for (size_t i = 0; i < l1 + l2; i++) {
        assert_int_equal(proto_decoder_feed(d, both + i, 1, collect, &c, &err), 0);
        assert_int_equal(json_array_size(c.msgs), i + 1 < l1 ? 0 : (i + 1 < l1 + l2 ? 1 : 2));
    }
    assert_int_equal(json_integer_value(json_object_get(json_array_get(c.msgs, 1), "seq")), 2);
    proto_decoder_free(d);
    json_decref(c.msgs);
}

static void test_several_frames_in_one_read(void **state)
{
    (void)state;
    size_t len;
    cleanup_free char *one = frame_of("{\"v\":1,\"type\":\"sample\",\"vms\":[]}", &len);
    cleanup_free char *three = malloc(3 * len);
    for (int i = 0; i < 3; i++)
        memcpy(three + i * len, one, len);
    struct collected c = {.msgs = json_array()};
    cleanup_error vcr_error_t err = NULL;
    /* Also a partial fourth header: kept for the next feed, not an error. */
    struct proto_decoder *d = proto_decoder_new();
    assert_int_equal(proto_decoder_feed(d, three, 3 * len, collect, &c, &err), 0);
    assert_int_equal(proto_decoder_feed(d, one, 2, collect, &c, &err), 0);
    assert_int_equal(json_array_size(c.msgs), 3);
    assert_int_equal(proto_decoder_feed(d, one + 2, len - 2, collect, &c, &err), 0);
    assert_int_equal(json_array_size(c.msgs), 4);
    proto_decoder_free(d);
    json_decref(c.msgs);
}

static void test_callback_stops_feed(void **state)
{
    (void)state;
    size_t len;
    cleanup_free char *one = frame_of("{\"v\":1,\"type\":\"a\"}", &len);
    cleanup_free char *two = malloc(2 * len);
    memcpy(two, one, len);
    memcpy(two + len, one, len);
    struct collected c = {.msgs = json_array(), .stop_after = 1};
    struct proto_decoder *d = proto_decoder_new();
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proto_decoder_feed(d, two, 2 * len, collect, &c, &err), 0);
    assert_int_equal(json_array_size(c.msgs), 1);
    assert_int_equal(proto_decoder_feed(d, one, len, collect, &c, &err), -1);
    assert_non_null(err);
    proto_decoder_free(d);
    json_decref(c.msgs);
}

/* A bad frame is an error naming the problem, and the stream stays dead. */
static void expect_bad(const void *buf, size_t len, const char *needle)
{
    struct collected c = {.msgs = json_array()};
    struct proto_decoder *d = proto_decoder_new();
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proto_decoder_feed(d, buf, len, collect, &c, &err), -1);
    assert_non_null(err);
    if (strstr(vcr_error_msg(err), needle) == NULL)
        fail_msg("error `%s` does not mention `%s`", vcr_error_msg(err), needle);
    assert_int_equal(json_array_size(c.msgs), 0);
    vcr_error_release(&err);
    size_t l;
    cleanup_free char *good = frame_of("{\"v\":1,\"type\":\"heartbeat\"}", &l);
    assert_int_equal(proto_decoder_feed(d, good, l, collect, &c, &err), -1);
    assert_int_equal(json_array_size(c.msgs), 0);
    proto_decoder_free(d);
    json_decref(c.msgs);
}

static void expect_bad_json(const char *text, const char *needle)
{
    size_t len;
    cleanup_free char *f = frame_of(text, &len);
    expect_bad(f, len, needle);
}

static void test_length_zero(void **state)
{
    (void)state;
    expect_bad("\0\0\0\0", 4, "length 0");
}

static void test_length_over_limit(void **state)
{
    (void)state;
    uint32_t be = htonl(PROTO_MAX_FRAME + 1);
    expect_bad(&be, 4, "out of range");
    be = htonl(0xffffffffu);
    expect_bad(&be, 4, "out of range");
}

static void test_length_at_limit(void **state)
{
    (void)state;
    /* Exactly PROTO_MAX_FRAME bytes: accepted. */
    size_t n = PROTO_MAX_FRAME;
    cleanup_free char *f = malloc(4 + n);
    uint32_t be = htonl((uint32_t)n);
    memcpy(f, &be, 4);
    const char *head = "{\"v\":1,\"type\":\"pad\",\"p\":\"";
    memcpy(f + 4, head, strlen(head));
    memset(f + 4 + strlen(head), 'x', n - strlen(head) - 2);
    memcpy(f + 4 + n - 2, "\"}", 2);
    struct collected c = {.msgs = json_array()};
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(feed_all(f, 4 + n, &c, &err), 0);
    assert_int_equal(json_array_size(c.msgs), 1);
    /* The encoder refuses what the decoder would refuse. */
    char *pad = calloc(1, PROTO_MAX_FRAME + 1);
    memset(pad, 'y', PROTO_MAX_FRAME);
    json_object_set_new(json_array_get(c.msgs, 0), "p", json_string(pad));
    free(pad);
    cleanup_free char *out = NULL;
    size_t out_len;
    assert_int_equal(proto_encode(json_array_get(c.msgs, 0), &out, &out_len, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "frame limit"));
    json_decref(c.msgs);
}

static void test_invalid_json(void **state)
{
    (void)state;
    expect_bad_json("{\"v\":1,\"type\":", "not valid JSON");
    expect_bad_json("\xff\xfe{}", "not valid JSON");
    expect_bad_json("{\"v\":1,\"v\":1,\"type\":\"a\"}", "not valid JSON");
}

static void test_not_an_object(void **state)
{
    (void)state;
    expect_bad_json("[1,2]", "an array, not an object");
    expect_bad_json("42", "an integer, not an object");
    expect_bad_json("\"hello\"", "a string, not an object");
}

static void test_missing_or_wrong_version(void **state)
{
    (void)state;
    expect_bad_json("{\"type\":\"hello\"}", "lacks \"v\"");
    expect_bad_json("{\"v\":2,\"type\":\"hello\"}", "\"v\": 2");
    expect_bad_json("{\"v\":\"1\",\"type\":\"hello\"}", "\"v\": \"1\"");
    expect_bad_json("{\"v\":1.0,\"type\":\"hello\"}", "\"v\": 1.0");
}

static void test_missing_type(void **state)
{
    (void)state;
    expect_bad_json("{\"v\":1}", "string \"type\"");
    expect_bad_json("{\"v\":1,\"type\":3}", "string \"type\"");
}

static void test_encode_rejects_bad_envelope(void **state)
{
    (void)state;
    cleanup_free char *f = NULL;
    size_t len;
    cleanup_error vcr_error_t err = NULL;
    json_t *bad = json_pack("{s:s}", "type", "hello");
    assert_int_equal(proto_encode(bad, &f, &len, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "lacks \"v\""));
    json_decref(bad);
}

static void test_parse_host_port(void **state)
{
    (void)state;
    struct {
        const char *in;
        const char *host; /* NULL: expect an error containing `needle` */
        unsigned port;
        const char *needle;
    } cases[] = {
        {"127.0.0.1:7070", "127.0.0.1", 7070, NULL},
        {"server.lab:1", "server.lab", 1, NULL},
        {"0.0.0.0:65535", "0.0.0.0", 65535, NULL},
        {"127.0.0.1:0", NULL, 0, "out of range"},
        {"127.0.0.1:70000", NULL, 0, "out of range"},
        {"127.0.0.1:99999999999999999999", NULL, 0, "out of range"},
        {"127.0.0.1:", NULL, 0, "not a number"},
        {"127.0.0.1:7a", NULL, 0, "not a number"},
        {"127.0.0.1", NULL, 0, "expected HOST:PORT"},
        {":7070", NULL, 0, "host is empty"},
        {"300.1.2.3:7070", NULL, 0, "not a valid IPv4"},
        {"::1:7070", NULL, 0, "brackets before the port, e.g. [::1]:7070"},
        {"[::1]:7070", "::1", 7070, NULL},
        {"[::]:1", "::", 1, NULL},
        {"[fd77::1]:65535", "fd77::1", 65535, NULL},
        {"[fd77::1]", NULL, 0, "expected [IPV6]:PORT"},
        {"[fd77::1]7070", NULL, 0, "expected [IPV6]:PORT"},
        {"[10.77.0.1]:7070", NULL, 0, "`10.77.0.1` is not a valid IPv6 address"},
        {"[fd77::1::2]:7070", NULL, 0, "not a valid IPv6 address"},
        {"[::1]:0", NULL, 0, "out of range"},
        {"bad host:7070", NULL, 0, "not a host name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cleanup_free char *host = NULL;
        uint16_t port = 0;
        cleanup_error vcr_error_t err = NULL;
        int r = vcr_parse_host_port(cases[i].in, &host, &port, &err);
        if (cases[i].host) {
            assert_int_equal(r, 0);
            assert_string_equal(host, cases[i].host);
            assert_int_equal(port, cases[i].port);
        } else {
            assert_int_equal(r, -1);
            if (strstr(vcr_error_msg(err), cases[i].needle) == NULL)
                fail_msg("`%s`: error `%s` lacks `%s`", cases[i].in, vcr_error_msg(err),
                         cases[i].needle);
        }
    }
}

/* RFC 4231 test case 2, then a nonce as the protocol uses it. */
static void test_auth_known_answer(void **state)
{
    (void)state;
    char hex[PROTO_AUTH_HEX_LEN + 1];
    assert_int_equal(proto_auth_compute("Jefe", 4, "what do ya want for nothing?", hex), 0);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    assert_true(proto_auth_verify("Jefe", 4, "what do ya want for nothing?", hex));
    assert_true(
        proto_auth_verify("Jefe", 4, "what do ya want for nothing?",
                          "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"));
    hex[0] = '6';
    assert_false(proto_auth_verify("Jefe", 4, "what do ya want for nothing?", hex));
    assert_false(proto_auth_verify("Jefe", 4, "what do ya want for nothing?", "5bdc"));
    assert_false(proto_auth_verify("Jefe", 4, "what do ya want for nothing?", NULL));

    char n1[PROTO_NONCE_HEX_LEN + 1], n2[PROTO_NONCE_HEX_LEN + 1];
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proto_auth_new_nonce(n1, &err), 0);
    assert_int_equal(proto_auth_new_nonce(n2, &err), 0);
    assert_int_equal(strlen(n1), PROTO_NONCE_HEX_LEN);
    assert_string_not_equal(n1, n2);
}

static char *write_temp(const char *content, size_t len)
{
    char *path = strdup("/tmp/vcr-test-key-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_auth_load_key(void **state)
{
    (void)state;
    cleanup_free char *good = write_temp("0123456789abcdef0123\n\n", 22);
    cleanup_free char *key = NULL;
    size_t len = 0;
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(proto_auth_load_key(good, &key, &len, &err), 0);
    assert_int_equal(len, 20);
    assert_memory_equal(key, "0123456789abcdef0123", 20);
    unlink(good);

    cleanup_free char *shortk = write_temp("short\n", 6);
    assert_int_equal(proto_auth_load_key(shortk, &key, &len, &err), -1);
    assert_non_null(strstr(vcr_error_msg(err), "is 5 bytes; allowed: 16..4096"));
    vcr_error_release(&err);
    unlink(shortk);

    assert_int_equal(proto_auth_load_key("/nonexistent/key", &key, &len, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
}

/* --- two proto_conns over loopback TCP --- */

struct conn_test {
    struct event_base *base;
    struct evconnlistener *listener;
    struct proto_conn *server_side;
    struct proto_conn *client_side;
    json_t *server_got;
    bool client_connected;
    char *client_closed;
    char *server_closed;
    bool free_in_message;
};

static void server_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    struct conn_test *t = opaque;
    json_array_append(t->server_got, msg);
    if (t->free_in_message) {
        /* Freeing from inside the callback must be safe, even with more frames queued. */
        proto_conn_free(c);
        t->server_side = NULL;
        return;
    }
    json_t *echo = proto_msg_new("echo", json_pack("{s:O}", "got", msg));
    assert_int_equal(proto_conn_send(c, echo, NULL), 0);
    json_decref(echo);
    if (json_is_true(json_object_get(msg, "last")))
        proto_conn_close(c, "done");
}

static void server_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct conn_test *t = opaque;
    t->server_closed = strdup(reason);
    proto_conn_free(c);
    t->server_side = NULL;
}

static const struct proto_conn_ops server_ops = {
    .message = server_message,
    .closed = server_closed,
};

static void client_message(struct proto_conn *c, json_t *msg, void *opaque)
{
    (void)c;
    (void)msg;
    (void)opaque;
}

static void client_connected(struct proto_conn *c, void *opaque)
{
    struct conn_test *t = opaque;
    (void)c;
    t->client_connected = true;
}

static void client_closed(struct proto_conn *c, const char *reason, void *opaque)
{
    struct conn_test *t = opaque;
    t->client_closed = strdup(reason);
    proto_conn_free(c);
    t->client_side = NULL;
}

static const struct proto_conn_ops client_ops = {
    .message = client_message,
    .connected = client_connected,
    .closed = client_closed,
};

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct conn_test *t = arg;
    (void)l;
    (void)sa;
    (void)len;
    t->server_side = proto_conn_from_fd(t->base, fd, NULL, &server_ops, t, NULL);
    assert_non_null(t->server_side);
}

static uint16_t listen_loopback(struct conn_test *t)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->listener = evconnlistener_new_bind(t->base, on_accept, t, LEV_OPT_CLOSE_ON_FREE, 8,
                                          (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(t->listener);
    socklen_t slen = sizeof(sin);
    getsockname(evconnlistener_get_fd(t->listener), (struct sockaddr *)&sin, &slen);
    return ntohs(sin.sin_port);
}

typedef bool (*condition_fn)(struct conn_test *t);

static void run_until(struct conn_test *t, condition_fn done)
{
    int64_t deadline = vcr_mono_ms() + 5000;
    while (!done(t) && vcr_mono_ms() < deadline) {
        struct timeval tick = {0, 10000};
        event_base_loopexit(t->base, &tick);
        event_base_dispatch(t->base);
    }
    if (!done(t))
        fail_msg("condition not met: client_closed=%s server_closed=%s got=%zu",
                 t->client_closed ? t->client_closed : "-",
                 t->server_closed ? t->server_closed : "-", json_array_size(t->server_got));
}

static bool both_closed(struct conn_test *t)
{
    return t->client_closed && t->server_closed;
}

static bool server_closed_cond(struct conn_test *t)
{
    return t->server_closed != NULL;
}

static bool client_closed_cond(struct conn_test *t)
{
    return t->client_closed != NULL;
}

static void conn_test_setup(struct conn_test *t)
{
    memset(t, 0, sizeof(*t));
    t->base = event_base_new();
    t->server_got = json_array();
}

static void conn_test_teardown(struct conn_test *t)
{
    proto_conn_free(t->server_side);
    proto_conn_free(t->client_side);
    if (t->listener)
        evconnlistener_free(t->listener);
    event_base_free(t->base);
    json_decref(t->server_got);
    free(t->client_closed);
    free(t->server_closed);
}

static void test_conn_exchange_and_close(void **state)
{
    (void)state;
    struct conn_test t;
    conn_test_setup(&t);
    uint16_t port = listen_loopback(&t);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    cleanup_error vcr_error_t err = NULL;
    t.client_side = proto_conn_connect(t.base, addr, NULL, NULL, &client_ops, &t, &err);
    assert_non_null(t.client_side);
    /* Queued before the connect completes, and sent in order after. */
    for (int i = 1; i <= 3; i++) {
        json_t *m = proto_msg_new("heartbeat", json_pack("{s:i, s:b}", "seq", i, "last", i == 3));
        assert_int_equal(proto_conn_send(t.client_side, m, &err), 0);
        json_decref(m);
    }
    run_until(&t, both_closed);
    assert_true(t.client_connected);
    assert_int_equal(json_array_size(t.server_got), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(t.server_got, 2), "seq")),
                     3);
    assert_string_equal(t.server_closed, "done");
    assert_string_equal(t.client_closed, "connection closed by the peer");
    conn_test_teardown(&t);
}

static void test_conn_free_inside_message(void **state)
{
    (void)state;
    struct conn_test t;
    conn_test_setup(&t);
    t.free_in_message = true;
    uint16_t port = listen_loopback(&t);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    t.client_side = proto_conn_connect(t.base, addr, NULL, NULL, &client_ops, &t, NULL);
    for (int i = 0; i < 5; i++) {
        json_t *m = proto_msg_new("heartbeat", NULL);
        proto_conn_send(t.client_side, m, NULL);
        json_decref(m);
    }
    run_until(&t, client_closed_cond);
    assert_int_equal(json_array_size(t.server_got), 1);
    assert_null(t.server_closed);
    conn_test_teardown(&t);
}

static void test_conn_bad_frame_closes(void **state)
{
    (void)state;
    struct conn_test t;
    conn_test_setup(&t);
    uint16_t port = listen_loopback(&t);
    /* A raw socket, to send what proto_conn_send would refuse to. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    size_t len;
    cleanup_free char *f = frame_of("{\"v\":2,\"type\":\"hello\"}", &len);
    assert_int_equal(write(fd, f, len), (ssize_t)len);
    run_until(&t, server_closed_cond);
    assert_non_null(t.server_closed);
    assert_non_null(strstr(t.server_closed, "protocol error"));
    assert_non_null(strstr(t.server_closed, "\"v\": 2"));
    close(fd);
    conn_test_teardown(&t);
}

static void test_conn_refused(void **state)
{
    (void)state;
    struct conn_test t;
    conn_test_setup(&t);
    /* Bind and close to find a port nobody listens on. */
    uint16_t port = listen_loopback(&t);
    evconnlistener_free(t.listener);
    t.listener = NULL;
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    cleanup_error vcr_error_t err = NULL;
    t.client_side = proto_conn_connect(t.base, addr, NULL, NULL, &client_ops, &t, &err);
    assert_non_null(t.client_side);
    run_until(&t, client_closed_cond);
    assert_false(t.client_connected);
    assert_non_null(strstr(t.client_closed, "refused"));
    conn_test_teardown(&t);
}

/* One table of state names for both sides of the wire (proto_state.h). */
static void test_state_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < PROTO_VM_N_STATES; i++)
        assert_int_equal(proto_vm_state_parse(proto_vm_state_name(i)), i);
    assert_null(proto_vm_state_name(PROTO_VM_N_STATES));
    assert_int_equal(proto_vm_state_parse("sleeping"), -1);
    assert_true(proto_vm_state_is_failure(PROTO_VM_CRASHED));
    assert_false(proto_vm_state_is_failure(PROTO_VM_STOPPED));
    assert_true(proto_vm_state_is_down(PROTO_VM_STOPPED));
    assert_false(proto_vm_state_is_down(PROTO_VM_RESTARTING));
    for (int i = 1; i < PROTO_CT_N_STATES; i++)
        assert_int_equal(proto_ct_state_parse(proto_ct_state_name((enum proto_ct_state)i)), i);
    assert_int_equal(proto_ct_state_parse("RUNNING"), PROTO_CT_UNKNOWN);
    assert_int_equal(proto_ct_state_parse(NULL), PROTO_CT_UNKNOWN);
    assert_string_equal(proto_code_name(proto_code_parse("busy")), "busy");
    assert_int_equal(proto_code_parse("nonsense"), PROTO_CODE_NONE);
    /* A backend that did not answer in time (the libvirt role's deadlines). */
    assert_string_equal(proto_code_name(proto_code_from_errno(ETIMEDOUT)), "timeout");
    assert_int_equal(proto_code_parse("timeout"), PROTO_CODE_TIMEOUT);
    /* An action the agent's role does not have: typed, not a generic invalid. */
    assert_string_equal(proto_code_name(proto_code_from_errno(PROTO_STATUS_UNKNOWN_ORDER)),
                        "unknown_order");
    assert_int_equal(proto_code_parse("unknown_order"), PROTO_CODE_UNKNOWN_ORDER);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names_round_trip),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_msg_new_overrides_envelope),
        cmocka_unit_test(test_split_byte_by_byte),
        cmocka_unit_test(test_several_frames_in_one_read),
        cmocka_unit_test(test_callback_stops_feed),
        cmocka_unit_test(test_length_zero),
        cmocka_unit_test(test_length_over_limit),
        cmocka_unit_test(test_length_at_limit),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_missing_or_wrong_version),
        cmocka_unit_test(test_missing_type),
        cmocka_unit_test(test_encode_rejects_bad_envelope),
        cmocka_unit_test(test_parse_host_port),
        cmocka_unit_test(test_auth_known_answer),
        cmocka_unit_test(test_auth_load_key),
        cmocka_unit_test(test_conn_exchange_and_close),
        cmocka_unit_test(test_conn_free_inside_message),
        cmocka_unit_test(test_conn_bad_frame_closes),
        cmocka_unit_test(test_conn_refused),
    };
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
