/* libFuzzer harness for the event stream's id parser and event writer
 * (src/server/sse.c): the id comes from any client (Last-Event-ID, ?since=);
 * the data is journal text.  An id parsed is in range and prints back as the
 * same digits less leading zeros; a written event has one `data:` line per line
 * of its data, no stray CR, and ends with the blank line. */
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t id = -1;
    if (sse_parse_event_id((const char *)data, size, &id) == 0) {
        if (id < 0 || id > SSE_EVENT_ID_MAX || size == 0 || size > 15)
            __builtin_trap();
        char back[32];
        snprintf(back, sizeof(back), "%" PRId64, id);
        size_t zeros = 0; /* data is not NUL-terminated */
        while (zeros + 1 < size && data[zeros] == '0')
            zeros++;
        if (strlen(back) != size - zeros || memcmp(back, data + zeros, size - zeros) != 0)
            __builtin_trap();
    }
    char *text = malloc(size + 1);
    struct evbuffer *out = evbuffer_new();
    if (text == NULL || out == NULL)
        goto out;
    memcpy(text, data, size);
    text[size] = '\0';
    if (sse_format_event(out, 1, text) < 0)
        goto out;
    size_t len = evbuffer_get_length(out);
    const char *ev = (const char *)evbuffer_pullup(out, -1);
    if (len < 10 || memcmp(ev, "id: 1\n", 6) != 0 || memcmp(ev + len - 2, "\n\n", 2) != 0 ||
        memchr(ev, '\r', len) != NULL)
        __builtin_trap();
    /* Every line after the id is a data line, until the final blank one. */
    for (const char *line = ev + 6; line < ev + len - 1;) {
        const char *nl = memchr(line, '\n', (size_t)(ev + len - line));
        if (strncmp(line, "data: ", 6) != 0 || nl == NULL)
            __builtin_trap();
        line = nl + 1;
    }
out:
    if (out)
        evbuffer_free(out);
    free(text);
    return 0;
}
