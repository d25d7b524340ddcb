/* vcr: the command-line client of vcr-server's HTTP API.  One dispatch table;
 * each verb parses its own options in its own file (after crun's src/crun.c). */
#include <errno.h>
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
    fputs("Usage: vcr [--server ADDR:PORT] [--ca FILE] [--token-file FILE] COMMAND [OPTIONS] "
          "[ARGS]\n"
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
          "      --ca FILE           talk TLS, checking the server's certificate against this\n"
          "                          CA (default: $VCR_CA); the certificate must name ADDR\n"
          "      --token-file FILE   send the API token in FILE (`vcr pki token`; default:\n"
          "                          $VCR_TOKEN itself, else the file $VCR_TOKEN_FILE)\n"
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

/* The token in path: its first line, without the newline. */
static char *read_token_file(const char *path)
{
    cleanup_file FILE *f = fopen(path, "re");
    if (f == NULL) {
        fprintf(stderr, "vcr: token file `%s`: %s\n", path, strerror(errno));
        return NULL;
    }
    char line[512];
    if (fgets(line, sizeof(line), f) == NULL) {
        fprintf(stderr, "vcr: token file `%s`: empty\n", path);
        return NULL;
    }
    line[strcspn(line, "\r\n")] = '\0';
    return strdup(line);
}

/* --ca / $VCR_CA and --token-file / $VCR_TOKEN / $VCR_TOKEN_FILE (docs/cli.md). */
static int set_credentials(const char *ca, const char *token_file)
{
    if (ca == NULL && getenv("VCR_CA") && getenv("VCR_CA")[0])
        ca = getenv("VCR_CA");
    cleanup_free char *token = NULL;
    if (token_file == NULL && getenv("VCR_TOKEN") && getenv("VCR_TOKEN")[0])
        token = strdup(getenv("VCR_TOKEN"));
    else if (token_file == NULL && getenv("VCR_TOKEN_FILE") && getenv("VCR_TOKEN_FILE")[0])
        token_file = getenv("VCR_TOKEN_FILE");
    if (token_file && (token = read_token_file(token_file)) == NULL)
        return CLI_EXIT_USAGE;
    cleanup_error vcr_error_t err = NULL;
    if (cli_http_set_credentials(ca, token, &err) < 0) {
        vcr_error_report(&err, stderr, "vcr");
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"server", required_argument, NULL, 's'},     {"ca", required_argument, NULL, 'C'},
        {"token-file", required_argument, NULL, 'T'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},          {NULL, 0, NULL, 0},
    };
    struct cli_context ctx = {.server = getenv("VCR_SERVER")};
    if (ctx.server == NULL || ctx.server[0] == '\0')
        ctx.server = CLI_DEFAULT_SERVER;
    const char *ca = NULL, *token_file = NULL;
    int opt;
    opterr = 0;
    /* "+": stop at the verb, whose options are its own. */
    while ((opt = getopt_long(argc, argv, "+s:hV", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            ctx.server = optarg;
            break;
        case 'C':
            ca = optarg;
            break;
        case 'T':
            token_file = optarg;
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
            int rc =
                strcmp(verbs[i].name, "pki") == 0 ? CLI_EXIT_OK : set_credentials(ca, token_file);
            if (rc != CLI_EXIT_OK)
                return rc;
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
