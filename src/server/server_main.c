/* vcr-server: command line only; the server is server.c. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/err.h"
#include "common/log.h"
#include "server/listen_guard.h"
#include "server/server.h"
#include "config/server_config.h"

/* docs/server.md, "Exit codes". */
enum {
    EXIT_OK = 0,
    EXIT_CONFIG = 1,
    EXIT_USAGE = 2,
    EXIT_RUNTIME = 3,
};

static const char usage[] =
    "Usage: vcr-server [--config FILE] [--config-test [FILE]] [--log-level LEVEL]\n"
    "       vcr-server --help | --version\n"
    "\n"
    "The VCRecovery monitoring server: accepts agents, keeps the inventory and the\n"
    "event journal, and serves the HTTP API.\n"
    "\n"
    "  -c, --config FILE      read the YAML configuration FILE (default: built-in\n"
    "                         defaults, see docs/server.md)\n"
    "  -t, --config-test      validate the configuration (FILE, or --config's) and exit:\n"
    "                         0 if valid, 1 with every bad key named if not\n"
    "  -l, --log-level LEVEL  error, warn, info (default) or debug\n"
    "  -h, --help             show this help\n"
    "  -V, --version          show the version\n"
    "\n"
    "Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 1 invalid configuration,\n"
    "2 usage error, 3 could not start or the event loop failed.\n";

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},    {"config-test", no_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool config_test = false;
    int level = VCR_LOG_INFO;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:tl:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            config_test = true;
            break;
        case 'l':
            level = vcr_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "vcr-server: --log-level `%s`: allowed: error, warn, info, debug\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return EXIT_OK;
        case 'V':
            printf("vcr-server %s\n", VCR_VERSION);
            return EXIT_OK;
        default:
            fprintf(stderr, "vcr-server: unknown option or missing argument `%s`; see --help\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    /* `--config-test FILE` reads as naturally as `--config FILE --config-test`. */
    if (config_test && optind == argc - 1 && config_path == NULL)
        config_path = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "vcr-server: unexpected argument `%s`; see --help\n", argv[optind]);
        return EXIT_USAGE;
    }
    vcr_log_init("vcr-server", (enum vcr_log_level)level);

    vcr_error_t err = NULL;
    struct server_config *cfg =
        config_path ? server_config_load(config_path, &err) : server_config_defaults(&err);
    if (cfg == NULL) {
        vcr_error_report(&err, stderr, "vcr-server");
        return EXIT_CONFIG;
    }
    if (cfg->tls == NULL && !cfg->insecure) {
        fprintf(stderr,
                "vcr-server: %s: the agent port needs TLS: set tls_ca_file, tls_cert_file and "
                "tls_key_file (`vcr pki`), or `insecure: true` (docs/security.md)\n",
                config_path ? config_path : "no --config");
        server_config_free(cfg);
        return EXIT_CONFIG;
    }
    if (cfg->api_tls == NULL && !cfg->api_insecure) {
        fprintf(stderr,
                "vcr-server: %s: the HTTP API needs tokens over TLS: set api_tokens_file (`vcr "
                "pki token`) with the tls_* keys, or `api_insecure: true` (docs/security.md)\n",
                config_path ? config_path : "no --config");
        server_config_free(cfg);
        return EXIT_CONFIG;
    }
    if (config_test) {
        printf("configuration %s%s%s is valid\n", config_path ? "`" : "(built-in defaults)",
               config_path ? config_path : "", config_path ? "`" : "");
        server_config_free(cfg);
        return EXIT_OK;
    }

    /* libevent writes with writev(): a vanished peer must be an error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    /* Connections and probes each take a descriptor (docs/server.md, "Limits"). */
    uint64_t nofile = listen_guard_raise_nofile();
    log_debug("RLIMIT_NOFILE %llu", (unsigned long long)nofile);
    struct event_base *base = event_base_new();
    struct server *srv = base ? server_new(base, cfg, &err) : NULL;
    int rc = EXIT_OK;
    if (srv == NULL || server_run(srv, &err) < 0) {
        if (base == NULL)
            vcr_error_make(&err, 0, "cannot create the event loop");
        vcr_error_report(&err, stderr, "vcr-server");
        rc = EXIT_RUNTIME;
    }
    server_free(srv);
    if (base)
        event_base_free(base);
    server_config_free(cfg);
    return rc;
}
