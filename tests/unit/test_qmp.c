/* Unit tests for the QMP parser and client (src/qmp/).  Client tests drive a
 * fake QEMU: a listening UNIX socket in a temporary directory, served from the
 * test on the client's own event loop.  One test runs a real QEMU. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "qmp/qmp.h"

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "              \
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"

/* Long enough for a loaded CI machine, short enough to fail a hung test. */
#define TEST_TIMEOUT_MS 5000
#define QEMU_TIMEOUT_MS 30000

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs one loop iteration, returning by the deadline even when nothing
 * happens; false once the deadline has passed. */
static bool loop_once_until(struct event_base *base, int64_t deadline_ms)
{
    int64_t left = deadline_ms - vcr_mono_ms();
    if (left <= 0)
        return false;
    struct event *timer = evtimer_new(base, on_deadline, NULL);
    struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
    evtimer_add(timer, &tv);
    event_base_loop(base, EVLOOP_ONCE);
    event_free(timer);
    return true;
}

#define WAIT_FOR_MS(base, cond, timeout_ms)                                                        \
    do {                                                                                           \
        int64_t deadline_ = vcr_mono_ms() + (timeout_ms);                                          \
        while (!(cond) && loop_once_until((base), deadline_))                                      \
            ;                                                                                      \
        assert_true(cond);                                                                         \
    } while (0)
#define WAIT_FOR(base, cond) WAIT_FOR_MS(base, cond, TEST_TIMEOUT_MS)

/* --- parser --- */

struct collected {
    int n;
    enum qmp_msg_kind kind[8];
    json_t *root[8];
    int64_t ts_us[8];
};

static void collect(const struct qmp_msg *m, void *opaque)
{
    struct collected *c = opaque;
    assert_true(c->n < 8);
    c->kind[c->n] = m->kind;
    c->root[c->n] = json_incref(m->root);
    c->ts_us[c->n] = m->ts_us;
    c->n++;
}

static void collected_release(struct collected *c)
{
    for (int i = 0; i < c->n; i++)
        json_decref(c->root[i]);
    c->n = 0;
}

static const char three_messages[] =
    GREETING "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 1}\r\n"
             "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
             "\"event\": \"STOP\"}\r\n";

static void assert_three_messages(struct collected *c)
{
    assert_int_equal(c->n, 3);
    assert_int_equal(c->kind[0], QMP_MSG_GREETING);
    assert_int_equal(c->kind[1], QMP_MSG_RETURN);
    assert_int_equal(c->kind[2], QMP_MSG_EVENT);
    assert_true(c->ts_us[2] == INT64_C(1700000000123456));
}

static void test_parser_byte_by_byte(void **state)
{
    (void)state;
    struct qmp_parser *p = qmp_parser_new(0);
    struct collected c = {0};
    cleanup_error vcr_error_t err = NULL;
    for (size_t i = 0; i < sizeof(three_messages) - 1; i++)
        assert_int_equal(qmp_parser_feed(p, three_messages + i, 1, collect, &c, &err), 0);
    assert_three_messages(&c);
    assert_int_equal(qmp_parser_buffered(p), 0);
    collected_release(&c);
    qmp_parser_free(p);
}

static void test_parser_several_messages_in_one_read(void **state)
{
    (void)state;
    struct qmp_parser *p = qmp_parser_new(0);
    struct collected c = {0};
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(
        qmp_parser_feed(p, three_messages, sizeof(three_messages) - 1, collect, &c, &err), 0);
    assert_three_messages(&c);
    collected_release(&c);
    qmp_parser_free(p);
}

/* Every split point, including inside a multi-byte UTF-8 character (jansson
 * calls a cut character invalid, not truncated). */
static void test_parser_every_split_point(void **state)
{
    (void)state;
    static const char stream[] = "{\"return\": \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\", "
                                 "\"id\": 7}\r\n{\"event\": \"RESET\", \"data\": {}}";
    size_t len = sizeof(stream) - 1;
    for (size_t split = 0; split <= len; split++) {
        struct qmp_parser *p = qmp_parser_new(0);
        struct collected c = {0};
        cleanup_error vcr_error_t err = NULL;
        assert_int_equal(qmp_parser_feed(p, stream, split, collect, &c, &err), 0);
        assert_int_equal(qmp_parser_feed(p, stream + split, len - split, collect, &c, &err), 0);
        assert_int_equal(c.n, 2);
        assert_string_equal(json_string_value(json_object_get(c.root[0], "return")),
                            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
        assert_int_equal(c.kind[1], QMP_MSG_EVENT);
        collected_release(&c);
        qmp_parser_free(p);
    }
}

static void test_parser_waits_for_truncated_message(void **state)
{
    (void)state;
    static const char head[] = "{\"return\": {\"a\": [1, 2, {\"b\": \"x";
    static const char tail[] = "y\"}]}, \"id\": 3}";
    struct qmp_parser *p = qmp_parser_new(0);
    struct collected c = {0};
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(qmp_parser_feed(p, head, sizeof(head) - 1, collect, &c, &err), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(qmp_parser_buffered(p), sizeof(head) - 1);
    assert_int_equal(qmp_parser_feed(p, tail, sizeof(tail) - 1, collect, &c, &err), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(qmp_parser_buffered(p), 0);
    collected_release(&c);
    qmp_parser_free(p);
}

/* Feeds input in one read, then byte by byte; both must fail with `status`
 * after delivering `good` messages. */
static void assert_stream_fails(const char *input, size_t len, int good, int status)
{
    for (int bytewise = 0; bytewise <= 1; bytewise++) {
        struct qmp_parser *p = qmp_parser_new(64);
        struct collected c = {0};
        cleanup_error vcr_error_t err = NULL;
        int rc = 0;
        if (bytewise) {
            for (size_t i = 0; i < len && rc == 0; i++)
                rc = qmp_parser_feed(p, input + i, 1, collect, &c, &err);
        } else {
            rc = qmp_parser_feed(p, input, len, collect, &c, &err);
        }
        if (rc != -1)
            fail_msg("accepted: `%.*s`", (int)len, input);
        assert_non_null(err);
        assert_int_equal(vcr_error_status(err), status);
        assert_int_equal(c.n, good);
        vcr_error_release(&err);
        /* A broken stream stays broken. */
        assert_int_equal(qmp_parser_feed(p, "{}", 2, collect, &c, &err), -1);
        collected_release(&c);
        qmp_parser_free(p);
    }
}

#define ASSERT_FAILS(lit, good, status) assert_stream_fails(lit, sizeof(lit) - 1, good, status)

static void test_parser_malformed_json_fails(void **state)
{
    (void)state;
    ASSERT_FAILS("{\"return\": }\r\n", 0, EPROTO);
    ASSERT_FAILS("{\"return\": tru}\r\n", 0, EPROTO);
    ASSERT_FAILS("{\"return\" {}}", 0, EPROTO);
    ASSERT_FAILS("{]}", 0, EPROTO);
    ASSERT_FAILS("}", 0, EPROTO);
    ASSERT_FAILS("garbage\r\n", 0, EPROTO);
    ASSERT_FAILS("{\"return\": {}}}", 1, EPROTO);
    ASSERT_FAILS("{\"return\": \"\xff\"}", 0, EPROTO);
    ASSERT_FAILS("{\"return\": \"\xc3\"}", 0, EPROTO);
    ASSERT_FAILS("{\"return\": \"a\x01\"}", 0, EPROTO);
    ASSERT_FAILS("\0{}", 0, EPROTO);
}

static void test_parser_non_object_fails(void **state)
{
    (void)state;
    ASSERT_FAILS("[1, 2]\r\n", 0, EPROTO);
    ASSERT_FAILS("42\r\n", 0, EPROTO);
    ASSERT_FAILS("\"return\"\r\n", 0, EPROTO);
    ASSERT_FAILS("null\r\n", 0, EPROTO);

    cleanup_json json_t *array = json_pack("[i]", 1);
    cleanup_error vcr_error_t err = NULL;
    struct qmp_msg m;
    assert_int_equal(qmp_msg_classify(array, &m, &err), -1);
    assert_int_equal(vcr_error_status(err), EPROTO);
}

static void test_parser_unknown_kind_fails(void **state)
{
    (void)state;
    ASSERT_FAILS("{}", 0, EPROTO);
    ASSERT_FAILS("{\"execute\": \"stop\"}", 0, EPROTO);
    ASSERT_FAILS("{\"return\": {}, \"event\": \"STOP\"}", 0, EPROTO);
    ASSERT_FAILS("{\"event\": 5}", 0, EPROTO);
    ASSERT_FAILS("{\"error\": \"boom\"}", 0, EPROTO);
    ASSERT_FAILS("{\"error\": {\"class\": \"GenericError\"}}", 0, EPROTO);
    ASSERT_FAILS("{\"QMP\": 1}", 0, EPROTO);
}

static void test_parser_message_over_limit_fails(void **state)
{
    (void)state;
    char big[200];
    /* Never terminated: must not be buffered without bound. */
    int n = snprintf(big, sizeof(big), "{\"return\": \"%0100d", 0);
    assert_stream_fails(big, (size_t)n, 0, EMSGSIZE);
    /* Complete but over the limit. */
    n = snprintf(big, sizeof(big), "{\"return\": \"%0100d\"}", 0);
    assert_stream_fails(big, (size_t)n, 0, EMSGSIZE);

    /* Whitespace between messages does not count towards a message. */
    struct qmp_parser *p = qmp_parser_new(64);
    struct collected c = {0};
    cleanup_error vcr_error_t err = NULL;
    memset(big, '\n', sizeof(big));
    for (int i = 0; i < 10; i++)
        assert_int_equal(qmp_parser_feed(p, big, sizeof(big), collect, &c, &err), 0);
    assert_int_equal(qmp_parser_feed(p, "{\"return\": {}}", 14, collect, &c, &err), 0);
    assert_int_equal(c.n, 1);
    collected_release(&c);
    qmp_parser_free(p);
}

static void test_classify_fields(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct qmp_msg m;

    cleanup_json json_t *error = json_loads(
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such VM\"}, \"id\": 9}", 0, NULL);
    assert_int_equal(qmp_msg_classify(error, &m, &err), 0);
    assert_int_equal(m.kind, QMP_MSG_ERROR);
    assert_string_equal(m.eclass, "GenericError");
    assert_string_equal(m.desc, "no such VM");
    assert_int_equal(json_integer_value(m.id), 9);

    cleanup_json json_t *stop = json_loads(
        "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 12, \"microseconds\": 34}}", 0, NULL);
    assert_int_equal(qmp_msg_classify(stop, &m, &err), 0);
    assert_string_equal(m.event, "STOP");
    assert_null(m.value);
    assert_true(m.ts_us == 12000034);

    cleanup_json json_t *wild = json_loads(
        "{\"event\": \"X\", \"data\": {}, \"timestamp\": {\"seconds\": 9223372036854775807, "
        "\"microseconds\": 0}}",
        0, NULL);
    assert_int_equal(qmp_msg_classify(wild, &m, &err), 0);
    assert_true(json_is_object(m.value));
    assert_true(m.ts_us == 0);

    cleanup_json json_t *ret = json_loads("{\"return\": [], \"id\": \"x\"}", 0, NULL);
    assert_int_equal(qmp_msg_classify(ret, &m, &err), 0);
    assert_int_equal(m.kind, QMP_MSG_RETURN);
    assert_true(json_is_array(m.value));
    assert_string_equal(json_string_value(m.id), "x");
    assert_null(err);
}

/* --- client against a fake QEMU --- */

struct fake_qemu {
    struct event_base *base;
    char dir[48];
    char path[96];
    int listen_fd;
    int conn_fd;
    struct event *conn_ev;
    bool connection_queued;
    char in[16384]; /* what the client sent */
    size_t in_len;
    bool peer_closed;
};

static void fake_on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_qemu *f = arg;
    ssize_t n = read(fd, f->in + f->in_len, sizeof(f->in) - f->in_len);
    if (n > 0)
        f->in_len += (size_t)n;
    else if (n == 0 || errno != EAGAIN)
        f->peer_closed = true;
    if (f->peer_closed)
        event_del(f->conn_ev);
}

static void fake_make_dir(struct fake_qemu *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/vcr-test-qmp-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/qmp.sock", f->dir);
}

static void fake_listen(struct fake_qemu *f)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->listen_fd >= 0);
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->listen_fd, 4), 0);
}

static void fake_start(struct fake_qemu *f, struct event_base *base)
{
    memset(f, 0, sizeof(*f));
    f->base = base;
    f->listen_fd = f->conn_fd = -1;
    fake_make_dir(f);
    fake_listen(f);
}

static void fake_on_connection(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct fake_qemu *f = arg;
    f->connection_queued = true;
}

static void fake_accept(struct fake_qemu *f)
{
    f->connection_queued = false;
    struct event *ev = event_new(f->base, f->listen_fd, EV_READ, fake_on_connection, f);
    event_add(ev, NULL);
    WAIT_FOR(f->base, f->connection_queued);
    event_free(ev);
    f->conn_fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(f->conn_fd >= 0);
    f->conn_ev = event_new(f->base, f->conn_fd, EV_READ | EV_PERSIST, fake_on_readable, f);
    event_add(f->conn_ev, NULL);
}

static void fake_send(struct fake_qemu *f, const char *text)
{
    size_t len = strlen(text);
    assert_int_equal(write(f->conn_fd, text, len), (ssize_t)len);
}

static void fake_hang_up(struct fake_qemu *f)
{
    if (f->conn_ev) {
        event_free(f->conn_ev);
        f->conn_ev = NULL;
    }
    if (f->conn_fd >= 0)
        close(f->conn_fd);
    f->conn_fd = -1;
}

static void fake_stop(struct fake_qemu *f)
{
    fake_hang_up(f);
    if (f->listen_fd >= 0)
        close(f->listen_fd);
    unlink(f->path);
    rmdir(f->dir);
}

/* The next command the client sent (the client sends whole objects in one
 * write, so their closing brace is the last byte received); returns its id. */
static json_int_t fake_next_command(struct fake_qemu *f, const char *expect_execute)
{
    WAIT_FOR(f->base, f->in_len > 0 && f->in[f->in_len - 1] == '}');
    json_error_t jerr;
    cleanup_json json_t *cmd = json_loadb(f->in, f->in_len, JSON_DISABLE_EOF_CHECK, &jerr);
    if (cmd == NULL)
        fail_msg("client sent invalid JSON: %s", jerr.text);
    size_t used = (size_t)jerr.position;
    memmove(f->in, f->in + used, f->in_len - used);
    f->in_len -= used;
    assert_string_equal(json_string_value(json_object_get(cmd, "execute")), expect_execute);
    assert_true(json_is_integer(json_object_get(cmd, "id")));
    return json_integer_value(json_object_get(cmd, "id"));
}

static void fake_reply(struct fake_qemu *f, json_int_t id, const char *value)
{
    char text[512];
    snprintf(text, sizeof(text), "{\"return\": %s, \"id\": %" JSON_INTEGER_FORMAT "}\r\n", value,
             id);
    fake_send(f, text);
}

/* What the client reported, in order, as "ready;event:STOP;reply:tag=...;closed:..." */
struct world {
    struct event_base *base;
    struct fake_qemu fake;
    struct qmp_client *client;
    char log[2048];
    int ready, events, replies, closed;
    bool free_in_closed;
};

static void world_log(struct world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void world_log(struct world *w, const char *fmt, ...)
{
    size_t used = strlen(w->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->log + used, sizeof(w->log) - used, fmt, ap);
    va_end(ap);
}

static void on_ready(struct qmp_client *c, void *opaque)
{
    struct world *w = opaque;
    assert_ptr_equal(c, w->client);
    assert_true(qmp_client_is_ready(c));
    w->ready++;
    world_log(w, "ready;");
}

static void on_event(struct qmp_client *c, const char *name, json_t *data, int64_t ts_us,
                     void *opaque)
{
    (void)c;
    struct world *w = opaque;
    w->events++;
    world_log(w, "event:%s%s@%lld;", name, data ? "+data" : "", (long long)ts_us);
}

static void on_closed(struct qmp_client *c, const char *reason, void *opaque)
{
    struct world *w = opaque;
    w->closed++;
    world_log(w, "closed:%s;", reason ? reason : "EOF");
    if (w->free_in_closed) {
        qmp_client_free(c);
        w->client = NULL;
    }
}

static const struct qmp_client_ops world_ops = {
    .ready = on_ready,
    .event = on_event,
    .closed = on_closed,
};

/* A command in flight: the reply callback's opaque. */
struct call {
    struct world *w;
    const char *tag;
    bool free_client; /* free the client from the reply callback */
};

static void on_reply(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    struct call *call = opaque;
    struct world *w = call->w;
    assert_true((result == NULL) != (error == NULL));
    w->replies++;
    cleanup_free char *text = result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    world_log(w, "reply:%s=%s;", call->tag, result ? text : error);
    if (call->free_client) {
        qmp_client_free(c);
        w->client = NULL;
    }
}

static void world_start(struct world *w)
{
    memset(w, 0, sizeof(*w));
    w->base = event_base_new();
    assert_non_null(w->base);
    fake_start(&w->fake, w->base);
    w->client = qmp_client_new(w->base, &world_ops, w);
    assert_non_null(w->client);
}

/* Connects and completes the handshake with the fake QEMU. */
static void world_connect(struct world *w)
{
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(qmp_client_connect(w->client, w->fake.path, &err), 0);
    fake_accept(&w->fake);
    fake_send(&w->fake, GREETING);
    int was_ready = w->ready;
    json_int_t caps = fake_next_command(&w->fake, "qmp_capabilities");
    assert_int_equal(w->ready, was_ready);
    fake_reply(&w->fake, caps, "{}");
    WAIT_FOR(w->base, w->ready == was_ready + 1);
}

static void world_command(struct world *w, const char *cmd, json_t *args, struct call *call)
{
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command(w->client, cmd, args, on_reply, call, &err) < 0)
        fail_msg("command `%s`: %s", cmd, vcr_error_msg(err));
}

static void world_stop(struct world *w)
{
    qmp_client_free(w->client);
    fake_stop(&w->fake);
    event_base_free(w->base);
}

static void test_client_event_between_command_and_reply(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);

    struct call status = {&w, "status", false}, version = {&w, "version", false};
    world_command(&w, "query-status", NULL, &status);
    world_command(&w, "query-version", NULL, &version);
    json_int_t status_id = fake_next_command(&w.fake, "query-status");
    json_int_t version_id = fake_next_command(&w.fake, "query-version");
    assert_true(version_id > status_id);

    /* Out of order, with an event first, all in one write. */
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"timestamp\": {\"seconds\": 5, \"microseconds\": 6}, \"event\": \"STOP\"}\r\n"
             "{\"return\": {\"qemu\": {\"major\": 7}}, \"id\": %" JSON_INTEGER_FORMAT "}\r\n"
             "{\"return\": {\"status\": \"paused\"}, \"id\": %" JSON_INTEGER_FORMAT "}\r\n",
             version_id, status_id);
    fake_send(&w.fake, text);
    WAIT_FOR(w.base, w.replies == 2);
    assert_string_equal(w.log, "ready;event:STOP@5000006;"
                               "reply:version={\"qemu\":{\"major\":7}};"
                               "reply:status={\"status\":\"paused\"};");
    world_stop(&w);
}

static void test_client_error_reply(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    struct call call = {&w, "cont", false};
    world_command(&w, "cont", json_pack("{s:b}", "force", 1), &call);
    json_int_t id = fake_next_command(&w.fake, "cont");
    char text[256];
    snprintf(text, sizeof(text),
             "{\"error\": {\"class\": \"GenericError\", \"desc\": \"guest is panicked\"}, "
             "\"id\": %" JSON_INTEGER_FORMAT "}\r\n",
             id);
    fake_send(&w.fake, text);
    WAIT_FOR(w.base, w.replies == 1);
    assert_string_equal(w.log, "ready;reply:cont=GenericError: guest is panicked;");
    assert_true(qmp_client_is_ready(w.client));
    world_stop(&w);
}

static void test_client_close_fails_pending(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    struct call call = {&w, "status", false};
    world_command(&w, "query-status", NULL, &call);
    fake_next_command(&w.fake, "query-status");
    fake_hang_up(&w.fake);
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "ready;reply:status=connection closed;closed:EOF;");
    assert_false(qmp_client_is_ready(w.client));
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(qmp_client_command(w.client, "query-status", NULL, NULL, NULL, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOTCONN);
    world_stop(&w);
}

static void test_client_protocol_violation_closes(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    struct call call = {&w, "status", false};
    world_command(&w, "query-status", NULL, &call);
    fake_next_command(&w.fake, "query-status");
    /* Messages after the violation in the same read are not delivered. */
    fake_send(&w.fake, "{\"bogus\": 1}\r\n{\"event\": \"STOP\"}\r\n");
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "ready;reply:status=connection closed: QMP message has none of "
                               "`QMP`, `return`, `error`, `event`;closed:QMP message has none of "
                               "`QMP`, `return`, `error`, `event`;");
    world_stop(&w);

    world_start(&w);
    world_connect(&w);
    fake_reply(&w.fake, 999, "{}");
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "ready;closed:reply to unknown command id 999;");
    world_stop(&w);
}

static void test_client_handshake_violations(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    struct world w;
    world_start(&w);
    assert_int_equal(qmp_client_connect(w.client, w.fake.path, &err), 0);
    fake_accept(&w.fake);
    fake_send(&w.fake, "{\"event\": \"STOP\"}\r\n");
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "closed:expected the QMP greeting first;");
    world_stop(&w);

    world_start(&w);
    assert_int_equal(qmp_client_connect(w.client, w.fake.path, &err), 0);
    fake_accept(&w.fake);
    fake_send(&w.fake, GREETING);
    json_int_t caps = fake_next_command(&w.fake, "qmp_capabilities");
    char text[256];
    snprintf(text, sizeof(text),
             "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}, \"id\": "
             "%" JSON_INTEGER_FORMAT "}\r\n",
             caps);
    fake_send(&w.fake, text);
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "closed:qmp_capabilities failed: CommandNotFound: nope;");
    world_stop(&w);

    /* QEMU gone half-way through the greeting. */
    world_start(&w);
    assert_int_equal(qmp_client_connect(w.client, w.fake.path, &err), 0);
    fake_accept(&w.fake);
    fake_send(&w.fake, "{\"QMP\": {\"version\": ");
    fake_hang_up(&w.fake);
    WAIT_FOR(w.base, w.closed == 1);
    assert_string_equal(w.log, "closed:connection closed in the middle of a QMP message;");
    world_stop(&w);
}

static void test_client_free_from_reply_callback(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    struct call first = {&w, "first", true}, second = {&w, "second", false};
    world_command(&w, "query-status", NULL, &first);
    world_command(&w, "query-version", NULL, &second);
    json_int_t id = fake_next_command(&w.fake, "query-status");
    fake_next_command(&w.fake, "query-version");
    char text[256];
    snprintf(text, sizeof(text),
             "{\"return\": {}, \"id\": %" JSON_INTEGER_FORMAT "}\r\n{\"event\": \"STOP\"}\r\n", id);
    fake_send(&w.fake, text);
    WAIT_FOR(w.base, w.replies == 2);
    /* Nothing after the free but the pending reply; no closed. */
    assert_string_equal(w.log, "ready;reply:first={};reply:second=connection closed;");
    assert_null(w.client);
    WAIT_FOR(w.base, w.fake.peer_closed);
    world_stop(&w);
}

static void test_client_free_from_closed_callback(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    w.free_in_closed = true;
    fake_send(&w.fake, "{\"return\": {}}\r\n");
    WAIT_FOR(w.base, w.closed == 1);
    assert_null(w.client);
    assert_string_equal(w.log, "ready;closed:reply without a command id;");
    world_stop(&w);
}

static void test_client_free_with_pending(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    struct call call = {&w, "status", false};
    world_command(&w, "query-status", NULL, &call);
    qmp_client_free(w.client);
    w.client = NULL;
    assert_string_equal(w.log, "ready;reply:status=connection closed;");
    world_stop(&w);
}

/* qmp_client_command_fd: the descriptor reaches QEMU's side as SCM_RIGHTS on the
 * command's own bytes, after a command queued before it (QEMU's monitor keeps
 * the last descriptor it received for the next add-fd: the earlier command must
 * not carry it), and it is the caller's file. */
struct fd_capture {
    char text[4096];
    size_t len;
    size_t fd_at; /* offset in text of the bytes that came with the descriptor */
    int fd;
};

static bool capture_once(int sock, struct fd_capture *c)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    /* A byte at a time, as QEMU's monitor reads: the descriptor comes with the
     * first byte of what was sent with it (a larger read would merge it with
     * the bytes before). */
    assert_true(c->len + 1 < sizeof(c->text));
    struct iovec iov = {.iov_base = c->text + c->len, .iov_len = 1};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return false;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            assert_int_equal(c->fd, -1); /* one descriptor, once */
            memcpy(&c->fd, CMSG_DATA(cm), sizeof(int));
            c->fd_at = c->len;
        }
    c->len += (size_t)n;
    c->text[c->len] = '\0';
    return true;
}

static void test_client_command_passes_fd(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    event_del(w.fake.conn_ev); /* read below with recvmsg, which keeps the descriptor */
    char file[] = "/tmp/vcr-test-qmp-fd-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    unlink(file);
    struct stat want;
    assert_int_equal(fstat(fd, &want), 0);

    struct call status = {&w, "status", false}, add = {&w, "add-fd", false};
    world_command(&w, "query-status", NULL, &status); /* still queued in the bufferevent */
    cleanup_error vcr_error_t err = NULL;
    if (qmp_client_command_fd(w.client, "add-fd", json_pack("{s:I}", "fdset-id", 7), fd, on_reply,
                              &add, &err) < 0)
        fail_msg("add-fd: %s", vcr_error_msg(err));
    close(fd); /* borrowed: the peer has its own copy */
    struct fd_capture c = {.fd = -1};
    int64_t deadline = vcr_mono_ms() + TEST_TIMEOUT_MS;
    /* Until add-fd's object is whole (its closing brace after its name). */
    while (!(strstr(c.text, "add-fd") && strchr(strstr(c.text, "add-fd"), '}')) &&
           vcr_mono_ms() < deadline)
        if (!capture_once(w.fake.conn_fd, &c))
            loop_once_until(w.base, vcr_mono_ms() + 10);
    assert_true(c.fd >= 0);
    struct stat got;
    assert_int_equal(fstat(c.fd, &got), 0);
    assert_true(got.st_dev == want.st_dev && got.st_ino == want.st_ino);
    close(c.fd);
    /* query-status whole before the descriptor, add-fd from it on. */
    char *q = strstr(c.text, "query-status"), *a = strstr(c.text, "add-fd");
    assert_non_null(q);
    assert_non_null(a);
    assert_true(q < c.text + c.fd_at && c.text + c.fd_at < a);
    assert_int_equal(c.text[c.fd_at], '{');
    assert_non_null(strchr(q, '}'));
    assert_true(strchr(q, '}') < c.text + c.fd_at);
    assert_non_null(strstr(c.text + c.fd_at, "\"fdset-id\":7"));
    world_stop(&w);
}

static void test_client_command_needs_ready(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    cleanup_error vcr_error_t err = NULL;
    /* args is stolen even on failure: LeakSanitizer checks. */
    assert_int_equal(qmp_client_command(w.client, "stop", json_object(), NULL, NULL, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOTCONN);
    vcr_error_release(&err);

    world_connect(&w);
    assert_int_equal(qmp_client_command(w.client, "stop", json_pack("[i]", 1), NULL, NULL, &err),
                     -1);
    assert_int_equal(vcr_error_status(err), EINVAL);
    vcr_error_release(&err);
    assert_int_equal(qmp_client_connect(w.client, w.fake.path, &err), -1);
    assert_int_equal(vcr_error_status(err), EISCONN);
    world_stop(&w);
}

static void test_client_reconnect_after_close(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    world_connect(&w);
    fake_hang_up(&w.fake);
    WAIT_FOR(w.base, w.closed == 1);
    world_connect(&w);
    assert_int_equal(w.ready, 2);
    world_stop(&w);
}

static void test_client_connect_fails_fast(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    cleanup_error vcr_error_t err = NULL;
    char missing[160];
    snprintf(missing, sizeof(missing), "%s/absent.sock", w.fake.dir);
    assert_int_equal(qmp_client_connect(w.client, missing, &err), -1);
    assert_int_equal(vcr_error_status(err), ENOENT);
    vcr_error_release(&err);

    /* A socket file nobody listens on: QEMU gone, or not listening yet. */
    close(w.fake.listen_fd);
    w.fake.listen_fd = -1;
    assert_int_equal(qmp_client_connect(w.client, w.fake.path, &err), -1);
    assert_int_equal(vcr_error_status(err), ECONNREFUSED);
    vcr_error_release(&err);

    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(qmp_client_connect_retry(w.client, longpath, 1000, &err), -1);
    assert_int_equal(vcr_error_status(err), ENAMETOOLONG);
    assert_int_equal(w.closed, 0);
    world_stop(&w);
}

static void listen_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fake_listen(arg);
}

static void test_client_connect_retry(void **state)
{
    (void)state;
    struct world w;
    world_start(&w);
    cleanup_error vcr_error_t err = NULL;

    /* The socket appears only after the client started trying. */
    close(w.fake.listen_fd);
    unlink(w.fake.path);
    w.fake.listen_fd = -1;
    assert_int_equal(qmp_client_connect_retry(w.client, w.fake.path, TEST_TIMEOUT_MS, &err), 0);
    struct timeval later = {.tv_sec = 0, .tv_usec = 100 * 1000};
    assert_int_equal(event_base_once(w.base, -1, EV_TIMEOUT, listen_later, &w.fake, &later), 0);
    WAIT_FOR(w.base, w.fake.listen_fd >= 0);
    fake_accept(&w.fake);
    fake_send(&w.fake, GREETING);
    fake_reply(&w.fake, fake_next_command(&w.fake, "qmp_capabilities"), "{}");
    WAIT_FOR(w.base, w.ready == 1);
    world_stop(&w);

    /* Nobody ever listens: closed reports the last error. */
    world_start(&w);
    close(w.fake.listen_fd);
    unlink(w.fake.path);
    w.fake.listen_fd = -1;
    int64_t start = vcr_mono_ms();
    assert_int_equal(qmp_client_connect_retry(w.client, w.fake.path, 200, &err), 0);
    WAIT_FOR(w.base, w.closed == 1);
    assert_true(vcr_mono_ms() - start >= 200);
    assert_non_null(strstr(w.log, "No such file or directory"));
    world_stop(&w);

    /* Freed while retrying. */
    world_start(&w);
    close(w.fake.listen_fd);
    unlink(w.fake.path);
    w.fake.listen_fd = -1;
    assert_int_equal(qmp_client_connect_retry(w.client, w.fake.path, 200, &err), 0);
    world_stop(&w);
}

/* --- real QEMU --- */

static pid_t qemu_pid = -1;

static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    cleanup_free char *dirs = strdup(path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char full[512];
        snprintf(full, sizeof(full), "%s/%s", d, prog);
        if (access(full, X_OK) == 0)
            return true;
    }
    return false;
}

static int kill_qemu(void **state)
{
    (void)state;
    if (qemu_pid > 0) {
        kill(qemu_pid, SIGKILL);
        waitpid(qemu_pid, NULL, 0);
        qemu_pid = -1;
    }
    return 0;
}

struct qemu_replies {
    struct world *w;
    json_t *status;
    json_t *version;
    int quit;
};

static void on_status(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct qemu_replies *r = opaque;
    if (error)
        fail_msg("query-status: %s", error);
    r->status = json_incref(result);
}

static void on_version(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    struct qemu_replies *r = opaque;
    if (error)
        fail_msg("query-version: %s", error);
    r->version = json_incref(result);
}

static void on_quit(struct qmp_client *c, json_t *result, const char *error, void *opaque)
{
    (void)c;
    (void)result;
    struct qemu_replies *r = opaque;
    if (error)
        fail_msg("quit: %s", error);
    r->quit = 1;
    world_log(r->w, "quit;");
}

static void on_qemu_exit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    int *exited = arg;
    *exited = 1;
}

static void test_real_qemu(void **state)
{
    (void)state;
    if (!in_path("qemu-system-x86_64"))
        skip();
    struct world w;
    world_start(&w);
    /* QEMU creates the socket itself; nothing may exist there yet. */
    close(w.fake.listen_fd);
    unlink(w.fake.path);
    w.fake.listen_fd = -1;

    char qmp_arg[200];
    snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", w.fake.path);
    char *argv[] = {"qemu-system-x86_64", "-accel", "tcg",  "-machine", "none", "-nodefaults",
                    "-display",           "none",   "-qmp", qmp_arg,    NULL};
    int rc = posix_spawnp(&qemu_pid, argv[0], NULL, NULL, argv, environ);
    assert_int_equal(rc, 0);
    int pidfd = pidfd_open(qemu_pid, 0);
    assert_true(pidfd >= 0);
    int exited = 0;
    struct event *exit_ev = event_new(w.base, pidfd, EV_READ, on_qemu_exit, &exited);
    event_add(exit_ev, NULL);

    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(qmp_client_connect_retry(w.client, w.fake.path, QEMU_TIMEOUT_MS, &err), 0);
    WAIT_FOR_MS(w.base, w.ready == 1 || w.closed, QEMU_TIMEOUT_MS);
    assert_int_equal(w.ready, 1);

    struct qemu_replies r = {.w = &w};
    assert_int_equal(qmp_client_command(w.client, "query-status", NULL, on_status, &r, &err), 0);
    assert_int_equal(qmp_client_command(w.client, "query-version", NULL, on_version, &r, &err), 0);
    WAIT_FOR_MS(w.base, r.status && r.version, QEMU_TIMEOUT_MS);
    assert_non_null(json_string_value(json_object_get(r.status, "status")));
    assert_true(json_is_boolean(json_object_get(r.status, "running")));
    json_t *qemu = json_object_get(r.version, "qemu");
    assert_true(json_integer_value(json_object_get(qemu, "major")) >= 2);

    assert_int_equal(qmp_client_command(w.client, "quit", NULL, on_quit, &r, &err), 0);
    WAIT_FOR_MS(w.base, w.closed == 1 && exited, QEMU_TIMEOUT_MS);
    assert_int_equal(r.quit, 1);
    assert_non_null(strstr(w.log, "event:SHUTDOWN+data@"));
    /* Closed is the last thing reported, and on an orderly EOF. */
    size_t len = strlen(w.log);
    const char *tail = "closed:EOF;";
    assert_true(len >= strlen(tail));
    assert_string_equal(w.log + len - strlen(tail), tail);

    int status = 0;
    assert_int_equal(waitpid(qemu_pid, &status, 0), qemu_pid);
    qemu_pid = -1;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    json_decref(r.status);
    json_decref(r.version);
    event_free(exit_ev);
    close(pidfd);
    world_stop(&w);
}

int main(void)
{
    /* Writing to a socket QEMU has closed must fail with EPIPE, not kill. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_byte_by_byte),
        cmocka_unit_test(test_parser_several_messages_in_one_read),
        cmocka_unit_test(test_parser_every_split_point),
        cmocka_unit_test(test_parser_waits_for_truncated_message),
        cmocka_unit_test(test_parser_malformed_json_fails),
        cmocka_unit_test(test_parser_non_object_fails),
        cmocka_unit_test(test_parser_unknown_kind_fails),
        cmocka_unit_test(test_parser_message_over_limit_fails),
        cmocka_unit_test(test_classify_fields),
        cmocka_unit_test(test_client_event_between_command_and_reply),
        cmocka_unit_test(test_client_error_reply),
        cmocka_unit_test(test_client_close_fails_pending),
        cmocka_unit_test(test_client_protocol_violation_closes),
        cmocka_unit_test(test_client_handshake_violations),
        cmocka_unit_test(test_client_free_from_reply_callback),
        cmocka_unit_test(test_client_free_from_closed_callback),
        cmocka_unit_test(test_client_free_with_pending),
        cmocka_unit_test(test_client_command_needs_ready),
        cmocka_unit_test(test_client_command_passes_fd),
        cmocka_unit_test(test_client_reconnect_after_close),
        cmocka_unit_test(test_client_connect_fails_fast),
        cmocka_unit_test(test_client_connect_retry),
        cmocka_unit_test_teardown(test_real_qemu, kill_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
