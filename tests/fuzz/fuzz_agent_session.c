/* libFuzzer harness for the server's handlers of agent messages as a session
 * sees them (agents_session.c: hello, heartbeat, vm_event, sample, self_fence, reply)
 * and for the replies a migration reads (migrate.c, chunk_copy.c: checkpoint,
 * image chunks, restore).  Two fake agents talk to a real `struct agents`
 * over socketpairs (agents_accept_fd), with the inventory and a migrator
 * behind it; the journal lives on /dev/shm.
 *
 * Input: {"msgs": [MSG, ...], "migrate": [SRC, CT, DST]?}.  Each MSG is sent
 * as a frame by agent MSG.peer (0 or 1, default 0; the member is dropped); a
 * `reply` without an `id` answers the oldest order that agent has received
 * and not answered.  Each hello gets one order (vm_stop) sent to its host;
 * once SRC and DST have said hello the migration of CT is started.  Nothing
 * may crash, leak or trip a sanitizer, whatever the members hold. */
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate.h"
#include "config/server_config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct journal *journal;
static char journal_path[64];
static unsigned runs;
static struct server_config cfg; /* no services, no images, no migration policy */

static void open_journal(void)
{
    if (journal) {
        journal_close(journal);
        unlink(journal_path);
        char side[80];
        snprintf(side, sizeof(side), "%s-wal", journal_path);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", journal_path);
        unlink(side);
    }
    vcr_error_t err = NULL;
    journal = journal_open(journal_path, &err);
    if (journal == NULL) {
        fprintf(stderr, "fuzz_agent_session: %s\n", vcr_error_msg(err));
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1);
    vcr_log_init("fuzz_agent_session", VCR_LOG_ERROR);
    base = event_base_new();
    snprintf(journal_path, sizeof(journal_path), "/dev/shm/vcr-fuzz-journal-%d.db", (int)getpid());
    open_journal();
    return 0;
}

struct peer {
    int fd;
    char host[80];
    int64_t ids[64]; /* orders received, not answered */
    size_t n_ids;
    unsigned char buf[1 << 16];
    size_t used;
};

struct run {
    struct agents *agents;
    struct peer peers[2];
    char hellos[4][80];
    size_t n_hellos;
};

/* One for every input, reset at its start (the buffers' bytes past `used` are
 * never read), rather than a calloc per input: with its two 64 KiB buffers it
 * is above ASan's largest size class, i.e. an mmap, zeroed pages and an
 * munmap each time.  No speed difference could be measured on the shared
 * machine (bench/results/fuzz.md, Notes): kept for the syscalls it saves. */
static struct run the_run;

static struct run *run_reset(void)
{
    struct run *r = &the_run;
    r->agents = NULL;
    r->n_hellos = 0;
    for (int i = 0; i < 2; i++) {
        r->peers[i].fd = -1;
        r->peers[i].host[0] = '\0';
        r->peers[i].n_ids = 0;
        r->peers[i].used = 0;
    }
    return r;
}

static void order_done(enum order_outcome outcome, const char *message, void *opaque)
{
    (void)outcome;
    (void)message;
    (void)opaque;
}

static void migration_done(json_t *result, void *opaque)
{
    (void)result;
    (void)opaque;
}

static void on_hello(void *opaque, const char *host)
{
    struct run *r = opaque;
    if (r->n_hellos < 4)
        snprintf(r->hellos[r->n_hellos++], sizeof(r->hellos[0]), "%s", host);
    vcr_error_t err = NULL;
    agents_send_order(r->agents, host, "vm_stop", "web1", 60000, order_done, NULL, &err);
    vcr_error_release(&err);
}

static const struct agents_watch watch = {.hello = on_hello};

/* The orders that reached p's end of its socketpair. */
static void read_orders(struct peer *p)
{
    for (;;) {
        ssize_t n = recv(p->fd, p->buf + p->used, sizeof(p->buf) - p->used, MSG_DONTWAIT);
        if (n <= 0)
            break;
        p->used += (size_t)n;
        while (p->used >= 4) {
            uint32_t len = (uint32_t)p->buf[0] << 24 | (uint32_t)p->buf[1] << 16 |
                           (uint32_t)p->buf[2] << 8 | p->buf[3];
            if (len > sizeof(p->buf) - 4) {
                p->used = 0; /* not ours to judge: the server's frames are its own */
                break;
            }
            if (p->used < 4 + len)
                break;
            json_t *msg = json_loadb((const char *)p->buf + 4, len, 0, NULL);
            json_t *id = json_object_get(msg, "id");
            const char *type = json_string_value(json_object_get(msg, "type"));
            if (type && strcmp(type, "order") == 0 && json_is_integer(id) &&
                p->n_ids < sizeof(p->ids) / sizeof(p->ids[0]))
                p->ids[p->n_ids++] = json_integer_value(id);
            json_decref(msg);
            memmove(p->buf, p->buf + 4 + len, p->used - 4 - len);
            p->used -= 4 + len;
        }
        if (p->used == sizeof(p->buf))
            p->used = 0;
    }
}

static void send_frame(struct peer *p, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    unsigned char hdr[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    /* Frames above the protocol's limit are the codec's business (fuzz_proto). */
    if (len <= 200000 && send(p->fd, hdr, 4, MSG_NOSIGNAL | MSG_DONTWAIT) == 4)
        (void)send(p->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    free(text);
}

static void pump(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *in = json_loadb((const char *)data, size, 0, NULL);
    json_t *msgs = json_object_get(in, "msgs");
    if (!json_is_array(msgs)) {
        json_decref(in);
        return 0;
    }
    if (++runs % 5000 == 0)
        open_journal(); /* keep /dev/shm small */
    json_t *mig = json_object_get(in, "migrate");
    const char *src = json_string_value(json_array_get(mig, 0));
    const char *ct = json_string_value(json_array_get(mig, 1));
    const char *dst = json_string_value(json_array_get(mig, 2));
    bool migrating = false;

    vcr_error_t err = NULL;
    struct run *r = run_reset();
    struct inventory *inv = inventory_new();
    struct agents_options opts = {.heartbeat_ms = 1000, .host_timeout_ms = 5000};
    r->agents = agents_new(base, inv, journal, &opts, &err);
    struct migrator *m = r->agents ? migrator_new(base, &cfg, inv, journal, r->agents, &err) : NULL;
    if (m == NULL)
        abort();
    agents_set_watch(r->agents, &watch, r);
    for (int i = 0; i < 2; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            abort();
        agents_accept_fd(r->agents, sv[0], i == 1);
        r->peers[i].fd = sv[1];
    }
    size_t i;
    json_t *msg;
    json_array_foreach(msgs, i, msg)
    {
        if (!json_is_object(msg))
            continue;
        json_t *copy = json_deep_copy(msg);
        int peer = json_integer_value(json_object_get(copy, "peer")) == 1 ? 1 : 0;
        json_object_del(copy, "peer");
        struct peer *p = &r->peers[peer];
        const char *type = json_string_value(json_object_get(copy, "type"));
        if (type && strcmp(type, "reply") == 0 && json_object_get(copy, "id") == NULL) {
            read_orders(p);
            if (p->n_ids) {
                json_object_set_new(copy, "id", json_integer(p->ids[0]));
                memmove(p->ids, p->ids + 1, --p->n_ids * sizeof(p->ids[0]));
            }
        }
        send_frame(p, copy);
        json_decref(copy);
        pump();
        read_orders(&r->peers[0]);
        read_orders(&r->peers[1]);
        if (!migrating && src && ct && dst) {
            migrating =
                migrator_start(m, src, ct, dst, "fuzz", true, migration_done, NULL, &err) == 0;
            vcr_error_release(&err);
            pump();
        }
    }
    json_decref(inventory_status_json(inv, 0, 1700000000000));
    json_decref(migrator_status_json(m));
    /* The server's order (server.c): the migrator stops, the agents go (their
     * pending orders end, unreachable), then the migrator is freed. */
    migrator_stop(m);
    close(r->peers[0].fd);
    close(r->peers[1].fd);
    pump();
    agents_free(r->agents);
    migrator_free(m);
    inventory_free(inv);
    json_decref(in);
    return 0;
}
