/* vcr events */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

#define EVENTS_DEFAULT_LIMIT 20
#define EVENTS_MAX_LIMIT     1000
/* Below the server's 30 s maximum; the HTTP timeout leaves room above it. */
#define FOLLOW_WAIT_MS   25000
#define FOLLOW_TIMEOUT_S 40

static const char usage[] =
    "Usage: vcr events [--since ID] [--limit N] [--follow] [--json]\n"
    "\n"
    "Show events from the server's journal, oldest first: hosts saying hello,\n"
    "coming up and being lost, VM state changes.  Without --since, the last N.\n"
    "\n"
    "  -s, --since ID   only events after event ID\n"
    "  -n, --limit N    at most N events (1..1000, default 20)\n"
    "  -f, --follow     then wait for new events and print them as they come,\n"
    "                   until interrupted\n"
    "  -j, --json       print the server's JSON (GET /v1/events); with --follow,\n"
    "                   one event object per line\n"
    "  -h, --help       show this help\n";

static bool parse_count(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max || strspn(s, "0123456789") != strlen(s))
        return false;
    *out = v;
    return true;
}

static void print_events(json_t *answer, bool json, bool lines)
{
    json_t *events = json_object_get(answer, "events");
    size_t i;
    json_t *ev;
    if (json && !lines) {
        cleanup_free char *text = json_dumps(answer, JSON_INDENT(2));
        if (text)
            puts(text);
        return;
    }
    json_array_foreach(events, i, ev)
    {
        cleanup_free char *line = json ? json_dumps(ev, JSON_COMPACT) : cli_format_event(ev);
        if (line)
            puts(line);
    }
    fflush(stdout);
}

int cli_verb_events(struct cli_context *ctx, int argc, char **argv)
{
    static const struct option options[] = {
        {"since", required_argument, NULL, 's'}, {"limit", required_argument, NULL, 'n'},
        {"follow", no_argument, NULL, 'f'},      {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    long long since = -1, limit = EVENTS_DEFAULT_LIMIT;
    bool follow = false, json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "s:n:fjh", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            if (!parse_count(optarg, 0, 1LL << 53, &since)) {
                fprintf(stderr, "vcr events: --since `%s`: expected an event id (0 or more)\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'n':
            if (!parse_count(optarg, 1, EVENTS_MAX_LIMIT, &limit)) {
                fprintf(stderr, "vcr events: --limit `%s`: allowed: 1..%d\n", optarg,
                        EVENTS_MAX_LIMIT);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'f':
            follow = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option("events", argc, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vcr events: unexpected argument `%s`; see `vcr events --help`\n",
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (!json)
        puts(cli_event_header());
    for (bool first = true; first || follow; first = false) {
        char path[128];
        if (since < 0)
            snprintf(path, sizeof(path), "/v1/events?limit=%lld", limit);
        else if (first)
            snprintf(path, sizeof(path), "/v1/events?since=%lld&limit=%lld", since, limit);
        else
            snprintf(path, sizeof(path), "/v1/events?since=%lld&limit=%d&wait_ms=%d", since,
                     EVENTS_MAX_LIMIT, FOLLOW_WAIT_MS);
        cleanup_error vcr_error_t err = NULL;
        cleanup_json json_t *answer =
            cli_http_request(ctx->server, "GET", path, first ? 10 : FOLLOW_TIMEOUT_S, &err);
        if (answer == NULL) {
            vcr_error_report(&err, stderr, "vcr events");
            return CLI_EXIT_FAILURE;
        }
        print_events(answer, json, follow);
        since = json_integer_value(json_object_get(answer, "last_id"));
    }
    return CLI_EXIT_OK;
}
