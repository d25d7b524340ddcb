/* vcr status */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const char usage[] =
    "Usage: vcr status [--json]\n"
    "\n"
    "Show every host that has connected (role, connected or lost, accelerator,\n"
    "when its agent was last heard) and every VM (host, state, cause of the last\n"
    "change, CPU %, resident memory, address), standby containers, and the\n"
    "container migrations in flight (from, to, phase, elapsed time).\n"
    "\n"
    "  -j, --json  print the server's JSON (GET /v1/status) instead of tables\n"
    "  -h, --help  show this help\n";

int cli_verb_status(struct cli_context *ctx, int argc, char **argv)
{
    bool json = false;
    int done = cli_parse_json_help("status", usage, argc, argv, &json);
    if (done >= 0)
        return done;
    if (optind < argc) {
        fprintf(stderr, "vcr status: unexpected argument `%s`; see `vcr status --help`\n",
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *status = cli_http_request(ctx->server, "GET", "/v1/status", 10, &err);
    if (status == NULL) {
        vcr_error_report(&err, stderr, "vcr status");
        return CLI_EXIT_FAILURE;
    }
    cleanup_free char *text =
        json ? json_dumps(status, JSON_INDENT(2)) : cli_format_status(status, &err);
    if (text == NULL) {
        vcr_error_report(&err, stderr, "vcr status");
        return CLI_EXIT_FAILURE;
    }
    fputs(text, stdout);
    if (json)
        fputc('\n', stdout);
    return CLI_EXIT_OK;
}
