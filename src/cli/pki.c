/* vcr pki init DIR, vcr pki issue DIR NAME [--server] [--san NAME]...: the
 * deployment's CA and the certificates of the agent link (docs/security.md).
 * Local files only: no server is contacted. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"
#include "pki/pki.h"

#define PKI_SAN_MAX 16

static const char usage[] =
    "Usage: vcr pki init [--json] [--cn NAME] DIR\n"
    "       vcr pki issue [--json] [--server] [--san NAME]... DIR NAME\n"
    "       vcr pki token [--json] [--role read|operator] DIR NAME\n"
    "\n"
    "The certificates of the agent link (mutual TLS, docs/security.md).\n"
    "  init DIR    create DIR (0700) if needed, and a CA: DIR/ca.key (0600), DIR/ca.crt\n"
    "  issue DIR NAME\n"
    "              DIR/NAME.key (0600) and DIR/NAME.crt signed by DIR's CA, naming NAME\n"
    "              (CN and subjectAltName).  An agent's certificate names its host (the\n"
    "              `host` of its config, or --name): the server accepts a hello only\n"
    "              for the host its certificate names.\n"
    "  token DIR NAME\n"
    "              a token of the HTTP API: DIR/NAME.token (0600, what `vcr --token-file`\n"
    "              reads) and its SHA-256 appended to DIR/api-tokens, the server's\n"
    "              `api_tokens_file` (restart the server to take it)\n"
    "\n"
    "Options:\n"
    "  --role ROLE  a token's role: read (every GET: status, services, events,\n"
    "               metrics, the dashboard) or operator (every action; the default)\n"
    "  --server     a server certificate (serverAuth) for vcr-server; without it, a\n"
    "               host certificate (clientAuth), which cannot act as the server\n"
    "  --san NAME   one more DNS name or IPv4 address the certificate names (up to 16);\n"
    "               a server certificate must name what agents connect to (`server`\n"
    "               of their config, or tls_server_name)\n"
    "  --cn NAME    the CA's common name (default: vcr-ca)\n"
    "  --json       print the files written as JSON\n"
    "  -h, --help   show this help\n"
    "\n"
    "Existing files are never overwritten.  Keys are ECDSA P-256; the CA is valid\n"
    "for 3650 days, certificates for 825.\n"
    "Exit codes: 0 success, 1 failure (the message says which file), 2 usage error.\n";

static void print_files(bool json, const char *dir, const char *name)
{
    char key[4096], crt[4096];
    snprintf(key, sizeof(key), "%s/%s.key", dir, name);
    snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
    if (json) {
        cleanup_json json_t *out =
            json_pack("{s:s, s:s, s:s}", "name", name, "key", key, "cert", crt);
        cli_print_json(out);
    } else {
        printf("%s\n%s\n", key, crt);
    }
}

int cli_verb_pki(struct cli_context *ctx, int argc, char **argv)
{
    (void)ctx;
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"server", no_argument, NULL, 'S'},
        {"san", required_argument, NULL, 'a'},
        {"cn", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"role", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *role = "operator";
    bool json = false, server = false;
    const char *cn = "vcr-ca";
    const char *san[PKI_SAN_MAX];
    size_t n_san = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "jh", options, NULL)) != -1) {
        switch (opt) {
        case 'j':
            json = true;
            break;
        case 'S':
            server = true;
            break;
        case 'a':
            if (n_san == PKI_SAN_MAX) {
                fprintf(stderr, "vcr pki: more than %d --san\n", PKI_SAN_MAX);
                return CLI_EXIT_USAGE;
            }
            san[n_san++] = optarg;
            break;
        case 'c':
            cn = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option("pki", argc, argv);
        }
    }
    int n = argc - optind;
    const char *sub = n > 0 ? argv[optind] : "";
    cleanup_error vcr_error_t err = NULL;
    if (strcmp(sub, "init") == 0 && n == 2) {
        if (server || n_san) {
            fprintf(stderr, "vcr pki init: --server and --san are for `issue`\n");
            return CLI_EXIT_USAGE;
        }
        if (pki_init(argv[optind + 1], cn, &err) < 0) {
            vcr_error_report(&err, stderr, "vcr pki init");
            return CLI_EXIT_FAILURE;
        }
        print_files(json, argv[optind + 1], "ca");
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "issue") == 0 && n == 3) {
        if (pki_issue(argv[optind + 1], argv[optind + 2], server, san, n_san, &err) < 0) {
            vcr_error_report(&err, stderr, "vcr pki issue");
            return CLI_EXIT_FAILURE;
        }
        print_files(json, argv[optind + 1], argv[optind + 2]);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "token") == 0 && n == 3) {
        if (pki_token(argv[optind + 1], argv[optind + 2], role, &err) < 0) {
            vcr_error_report(&err, stderr, "vcr pki token");
            return CLI_EXIT_FAILURE;
        }
        char tok[4096], list[4096];
        snprintf(tok, sizeof(tok), "%s/%s.token", argv[optind + 1], argv[optind + 2]);
        snprintf(list, sizeof(list), "%s/api-tokens", argv[optind + 1]);
        if (json) {
            cleanup_json json_t *out =
                json_pack("{s:s, s:s, s:s, s:s}", "name", argv[optind + 2], "role", role,
                          "token_file", tok, "tokens_file", list);
            cli_print_json(out);
        } else {
            printf("%s\n%s\n", tok, list);
        }
        return CLI_EXIT_OK;
    }
    fprintf(stderr, "vcr pki: expected `init DIR`, `issue DIR NAME` or `token DIR NAME`; see "
                    "`vcr pki --help`\n");
    return CLI_EXIT_USAGE;
}
