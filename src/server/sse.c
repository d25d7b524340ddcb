/* The text/event-stream format (sse.h). */
#include "server/sse.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <string.h>

int sse_parse_event_id(const char *text, size_t len, int64_t *id)
{
    if (len == 0 || len > 15)
        return -1;
    int64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        value = value * 10 + (text[i] - '0');
    }
    *id = value;
    return 0;
}

int sse_format_event(struct evbuffer *out, int64_t id, const char *data)
{
    if (evbuffer_add_printf(out, "id: %" PRId64 "\n", id) < 0)
        return -1;
    const char *line = data;
    for (;;) {
        size_t n = strcspn(line, "\r\n");
        if (evbuffer_add(out, "data: ", 6) < 0 || evbuffer_add(out, line, n) < 0 ||
            evbuffer_add(out, "\n", 1) < 0)
            return -1;
        if (line[n] == '\0')
            break;
        line += n + (line[n] == '\r' && line[n + 1] == '\n' ? 2 : 1);
    }
    return evbuffer_add(out, "\n", 1);
}
