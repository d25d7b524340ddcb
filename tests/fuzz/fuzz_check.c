/* libFuzzer harness for the health checks' answer parsers (every protocol of
 * check_protocols.c's table): what a probed service sends is untrusted.
 * Byte 0 picks the protocol (its index in the table), byte 1 where the answer is split in two reads
 * and whether the peer closed after it; the rest is the answer.  A verdict is
 * -1 (with a reason), 0 (wait) or 1; a body offset lies inside the answer. */
#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "server/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n_protocols = 0;
    while (check_protocol_at(n_protocols))
        n_protocols++;
    const struct check_ops *ops = check_protocol_at(data[0] % n_protocols);
    bool eof = data[1] & 1;
    const uint8_t *answer = data + 2;
    size_t n = size - 2, split = n ? (data[1] >> 1) % (n + 1) : 0;
    struct check_target t = {
        .type = ops, .address = "127.0.0.1", .port = 80, .path = "/", .timeout_ms = 1000};
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    if (out == NULL || in == NULL)
        goto done;
    if (ops->connected(&t, out) == 1 || ops->received == NULL)
        goto done;
    const size_t parts[2] = {split, n - split};
    size_t off = 0;
    for (int i = 0; i < 2; i++) {
        evbuffer_add(in, answer + off, parts[i]);
        off += parts[i];
        char why[200] = "";
        size_t body = (size_t)-1;
        int v = ops->received(&t, in, eof && i == 1, why, sizeof(why), &body);
        if (v < -1 || v > 1 || (v == -1 && why[0] == '\0') ||
            strnlen(why, sizeof(why)) == sizeof(why))
            __builtin_trap();
        if (body != (size_t)-1 && body > evbuffer_get_length(in))
            __builtin_trap();
        if (v != 0)
            break;
    }
done:
    if (out)
        evbuffer_free(out);
    if (in)
        evbuffer_free(in);
    return 0;
}
