/* vcr failover SERVICE, vcr failback SERVICE: start the one or the other on
 * the server and return; `vcr services` and `vcr events --follow` show how it
 * goes.  vcr service reset SERVICE: clear a failed recovery. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static int run(struct cli_context *ctx, int argc, char **argv, const char *verb, const char *usage)
{
    const char *prog_verb = strcmp(verb, "reset") == 0 ? "service reset" : verb;
    bool json = false;
    int done = cli_parse_json_help(verb, usage, argc, argv, &json);
    if (done >= 0)
        return done;
    if (argc - optind != 1) {
        fprintf(stderr, "vcr %s: expected one SERVICE; see `vcr %s --help`\n", prog_verb,
                prog_verb);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[optind];
    char path[160];
    snprintf(path, sizeof(path), "/v1/services/%.64s/%s", name, verb);
    char prog[32];
    snprintf(prog, sizeof(prog), "vcr %s", prog_verb);
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = cli_http_request(ctx->server, "POST", path, 10, &err);
    if (body == NULL) {
        vcr_error_report(&err, stderr, prog);
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cli_print_json(body);
    } else if (strcmp(verb, "reset") == 0 && json_is_true(json_object_get(body, "clearing"))) {
        printf("%s: clearing its failed recovery: its DNS name goes back to the primary first; "
               "follow with `vcr services`\n",
               name);
    } else if (strcmp(verb, "reset") == 0) {
        printf("%s: failed recovery cleared (state %s)\n", name,
               json_string_value(json_object_get(body, "state")));
    } else {
        printf("%s: %s started (state %s); follow with `vcr services` or `vcr events --follow`\n",
               name, verb, json_string_value(json_object_get(body, "state")));
    }
    return CLI_EXIT_OK;
}

int cli_verb_failover(struct cli_context *ctx, int argc, char **argv)
{
    return run(ctx, argc, argv, "failover",
               "Usage: vcr failover [--json] SERVICE\n"
               "\n"
               "Move SERVICE to its standby container now (fence the primary, ready the\n"
               "container, switch DNS), or retry a failed recovery from the phase it\n"
               "failed at.\n");
}

int cli_verb_failback(struct cli_context *ctx, int argc, char **argv)
{
    return run(ctx, argc, argv, "failback",
               "Usage: vcr failback [--json] SERVICE\n"
               "\n"
               "Switch a recovered SERVICE back to its primary, once the primary VM runs\n"
               "again and its probe passes; a cold container is then stopped and destroyed.\n");
}

int cli_verb_service(struct cli_context *ctx, int argc, char **argv)
{
    static const char usage[] =
        "Usage: vcr service reset [--json] SERVICE\n"
        "\n"
        "Clear a failed recovery of SERVICE that never switched its DNS name: the\n"
        "service is `ok` again (or `stopped` while its primary VM is stopped), its\n"
        "probes start over with the boot grace, a cold container the recovery made\n"
        "is stopped, a warm one is provisioned again. Refused while the recovery\n"
        "still has an order pending, and when DNS points at the standby (use\n"
        "`vcr failback SERVICE`). A failed service also clears by itself once its\n"
        "primary answers its probe again.\n";
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    if (argc < 2 || strcmp(argv[1], "reset") != 0) {
        fprintf(stderr, "vcr service: expected `reset SERVICE`; see `vcr service --help`\n");
        return CLI_EXIT_USAGE;
    }
    return run(ctx, argc - 1, argv + 1, "reset", usage);
}
