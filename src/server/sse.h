/* The text/event-stream format (WHATWG HTML, "Server-sent events") as the
 * dashboard's event stream (api_sse.c) writes it, and the one value a client
 * sends back: the id of the last event it saw (Last-Event-ID, or ?since=). */
#ifndef VCR_SERVER_SSE_H
#define VCR_SERVER_SSE_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* Largest id accepted back from a client (15 decimal digits). */
#define SSE_EVENT_ID_MAX 999999999999999LL

/* Parses len bytes of text as an event id: 1..15 decimal digits, nothing else
 * (no sign, no blanks).  0 and *id set, or -1 and *id untouched. */
int sse_parse_event_id(const char *text, size_t len, int64_t *id);

/* Appends one event: `id: ID`, then one `data:` line per line of data (a CR,
 * LF or CRLF in data starts a new line, as the client will join them with LF),
 * then the blank line that dispatches it.  0, or -1 when out of memory. */
int sse_format_event(struct evbuffer *out, int64_t id, const char *data);

#endif
