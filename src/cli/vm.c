/* vcr vm stop|kill|start NAME */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const char usage[] =
    "Usage: vcr vm stop NAME [--json]\n"
    "       vcr vm kill NAME [--json]\n"
    "       vcr vm start NAME [--json]\n"
    "       vcr vm warm-restart NAME [--qemu PATH] [--json]  (see `vcr vm warm-restart --help`)\n"
    "       vcr vm flush NAME [VOLUME] | reboot NAME [--cold]  (see `vcr vm reboot --help`)\n"
    "\n"
    "Order the agent of VM NAME's host to stop it (graceful), kill it (at once) or\n"
    "start it again (its QEMU is started; the guest boots after the answer), and\n"
    "wait for the agent's answer.  The server gives up after 10 s (HTTP 504);\n"
    "a lost host or a closed agent connection fail at once.\n"
    "\n"
    "  -j, --json  print the server's JSON answer\n"
    "  -h, --help  show this help\n";

int cli_verb_vm(struct cli_context *ctx, int argc, char **argv)
{
    /* flush and reboot have options of their own (reboot.c). */
    if (argc > 1 && (strcmp(argv[1], "flush") == 0 || strcmp(argv[1], "reboot") == 0))
        return cli_vm_volume(ctx, argc - 1, argv + 1);
    /* warm-restart has options of its own (warm.c). */
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "warm-restart") == 0 && argv[i + 1][0] != '-') {
            const char *name = argv[i + 1];
            memmove(argv + i, argv + i + 2, (size_t)(argc - i - 2) * sizeof(*argv));
            argc -= 2;
            argv[argc] = NULL;
            return cli_warm_vm(ctx, argc, argv, name);
        } else if (strcmp(argv[i], "warm-restart") == 0 && i + 1 < argc) {
            break;
        }
    bool json = false;
    int done = cli_parse_json_help("vm", usage, argc, argv, &json);
    if (done >= 0)
        return done;
    if (argc - optind != 2) {
        fprintf(stderr,
                "vcr vm: expected `stop NAME`, `kill NAME` or `start NAME`; see `vcr vm --help`\n");
        return CLI_EXIT_USAGE;
    }
    const char *action = argv[optind];
    const char *name = argv[optind + 1];
    if (strcmp(action, "stop") != 0 && strcmp(action, "kill") != 0 &&
        strcmp(action, "start") != 0) {
        fprintf(stderr, "vcr vm: unknown action `%s`; allowed: stop, kill, start, warm-restart\n",
                action);
        return CLI_EXIT_USAGE;
    }
    cleanup_free char *encoded = evhttp_uriencode(name, -1, 0);
    cleanup_free char *path = NULL;
    if (encoded == NULL || asprintf(&path, "/v1/vms/%s/%s", encoded, action) < 0) {
        fprintf(stderr, "vcr vm: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    cleanup_error vcr_error_t err = NULL;
    /* Longer than the server's own 10 s deadline, so that its 504 is what we report. */
    cleanup_json json_t *answer = cli_http_request(ctx->server, "POST", path, 30, &err);
    if (answer == NULL) {
        vcr_error_report(&err, stderr, "vcr vm");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cleanup_free char *text = json_dumps(answer, JSON_INDENT(2));
        if (text)
            puts(text);
    } else {
        const char *host = json_string_value(json_object_get(answer, "host"));
        printf("%s: %s done (host %s)\n", name, action, host ? host : "-");
    }
    return CLI_EXIT_OK;
}
