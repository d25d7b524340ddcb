/* vcr: the command-line client of vcr-server's HTTP API.  One dispatch table;
 * each verb parses its own options in its own file (after crun's src/crun.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const struct verb {
    const char *name;
    const char *summary;
    int (*run)(struct cli_context *ctx, int argc, char **argv);
} verbs[] = {
    {"status", "show hosts and their VMs", cli_verb_status},
    {"events", "show or follow the event journal", cli_verb_events},
    {"vm", "stop, kill or warm-restart a VM: vm stop|kill|warm-restart NAME", cli_verb_vm},
    {"host", "warm-restart every VM of a host: host warm-restart HOST", cli_verb_host},
    {"container", "containers of a standby VM: container create|start|stop|destroy HOST NAME",
     cli_verb_container},
    {"image", "a standby VM's image cache: image prune HOST", cli_verb_image},
    {"services", "show protected services and their last recovery", cli_verb_services},
    {"failover", "move a service to its standby now, or retry a failed recovery: failover SERVICE",
     cli_verb_failover},
    {"failback", "switch a recovered service back to its primary: failback SERVICE",
     cli_verb_failback},
    {"service", "clear a failed recovery: service reset SERVICE", cli_verb_service},
    {"cost", "the standby footprint of each scheme, in VMs, vCPUs, RAM and money", cli_verb_cost},
    {"pki", "the agent link's CA and certificates: pki init DIR | pki issue DIR NAME",
     cli_verb_pki},
};

static void print_usage(FILE *out)
{
    fputs("Usage: vcr [--server ADDR:PORT] COMMAND [OPTIONS] [ARGS]\n"
          "       vcr --help | --version\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        fprintf(out, "  %-8s %s\n", verbs[i].name, verbs[i].summary);
    fputs("\n"
          "Options:\n"
          "  -s, --server ADDR:PORT  the server's HTTP API (default: $VCR_SERVER, "
          "else " CLI_DEFAULT_SERVER ")\n"
          "  -h, --help              show this help; `vcr COMMAND --help` for a command's\n"
          "  -V, --version           show the version\n"
          "\n"
          "Exit codes: 0 success, 1 the server is unreachable or answered an error,\n"
          "2 usage error.\n",
          out);
}

int cli_bad_option(const char *verb, int argc, char **argv)
{
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    fprintf(stderr, "vcr %s: unknown option or missing argument `%s`; see `vcr %s --help`\n", verb,
            arg, verb);
    return CLI_EXIT_USAGE;
}

int cli_parse_json_help(const char *verb, const char *usage, int argc, char **argv, bool *json)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "jh", options, NULL)) != -1) {
        switch (opt) {
        case 'j':
            *json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option(verb, argc, argv);
        }
    }
    return -1;
}

void cli_print_json(json_t *value)
{
    cleanup_free char *text = json_dumps(value, JSON_INDENT(2));
    puts(text ? text : "null");
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"server", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cli_context ctx = {.server = getenv("VCR_SERVER")};
    if (ctx.server == NULL || ctx.server[0] == '\0')
        ctx.server = CLI_DEFAULT_SERVER;
    int opt;
    opterr = 0;
    /* "+": stop at the verb, whose options are its own. */
    while ((opt = getopt_long(argc, argv, "+s:hV", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            ctx.server = optarg;
            break;
        case 'h':
            print_usage(stdout);
            return CLI_EXIT_OK;
        case 'V':
            printf("vcr %s\n", VCR_VERSION);
            return CLI_EXIT_OK;
        default:
            fprintf(stderr, "vcr: unknown option or missing argument `%s`; see `vcr --help`\n",
                    argv[optind - 1]);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (strcmp(verbs[i].name, argv[optind]) == 0) {
            int verb_argc = argc - optind;
            char **verb_argv = argv + optind;
            /* The verb parses its own argv from the start. */
            optind = 0;
            return verbs[i].run(&ctx, verb_argc, verb_argv);
        }
    fprintf(stderr, "vcr: unknown command `%s`; commands:", argv[optind]);
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        fprintf(stderr, "%s %s", i ? "," : "", verbs[i].name);
    fputs(" (see `vcr --help`)\n", stderr);
    return CLI_EXIT_USAGE;
}
