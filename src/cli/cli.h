/* cli_lib: what the `vcr` verbs share and the tests link: the HTTP client of
 * the server's API and the formatting of its answers for humans. */
#ifndef VCR_CLI_H
#define VCR_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

#define CLI_DEFAULT_SERVER "127.0.0.1:7080"

/* docs/cli.md, "Exit codes". */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1, /* the server is unreachable or answered an error */
    CLI_EXIT_USAGE = 2,
};

/* Every later request goes over TLS checked against ca_file (the server's
 * certificate must name the host of --server), with `Authorization: Bearer
 * token` when token is given (docs/cli.md).  NULL, NULL: plain HTTP. */
int cli_http_set_credentials(const char *ca_file, const char *token, vcr_error_t *err);

/* One request to the API at server ("HOST:PORT"); method is "GET" or "POST",
 * path includes the query.  Returns the JSON body of a 2xx answer.  Otherwise
 * NULL with *err: unreachable, timed out, not JSON, or the server's
 * {"error"} text with the HTTP status. */
json_t *cli_http_request(const char *server, const char *method, const char *path, int timeout_s,
                         vcr_error_t *err);

/* The same with a JSON body (borrowed; NULL: none). */
json_t *cli_http_request_body(const char *server, const char *method, const char *path,
                              json_t *body, int timeout_s, vcr_error_t *err);

/* One line (no newline) for one VM of a warm-restart answer:
 * "web1: warm restart done: pause 21.0 ms (suspend 11.2 ms, resume 9.8 ms), launch
 * 80.1 ms, state 320.0K, qemu /usr/bin/qemu-system-x86_64",
 * "web1: warm restart FAILED: CAUSE" (the guest runs on in its old QEMU), or
 * "web1: warm restart FAILED, booted cold instead: CAUSE". */
char *cli_format_warm_entry(json_t *entry);

/* The human form of GET /v1/status: a table of hosts, then one of VMs.  Ages
 * are computed against the server's "now_ms", so a skewed local clock does not
 * matter.  Missing members print as "-". */
char *cli_format_status(json_t *status, vcr_error_t *err);

/* One line per journal event (no newline), and the header that goes above. */
char *cli_format_event(json_t *event);
const char *cli_event_header(void);

/* "0.4s ago", "12s ago", "5m ago", "3h ago", "2d ago". */
void cli_format_age(int64_t ms, char *out, size_t size);
/* kB -> "980K", "512.0M", "1.5G". */
void cli_format_kb(int64_t kb, char *out, size_t size);

#endif
