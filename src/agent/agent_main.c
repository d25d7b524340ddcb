/* vcr-agent: command line only; the agent itself is agent_lib (agent.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/host/fence_watchdog.h"
#include "common/cleanup.h"
#include "common/log.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: vcr-agent --config FILE [OPTION]...\n"
                 "       vcr-agent --role standby --server HOST:PORT --name NAME [OPTION]...\n"
                 "Supervises this host's QEMU VMs, the domains of a libvirt daemon, or a\n"
                 "standby VM's LXC containers, and reports to vcr-server (docs/agent.md).\n"
                 "\n"
                 "  -c, --config FILE       agent configuration (docs/config-vm.md)\n"
                 "  -r, --role ROLE         what to supervise: host (default), libvirt\n"
                 "                          (the config's `libvirt:` domains; only in\n"
                 "                          vcr-agent-libvirt) or standby\n"
                 "                          (containers; only in an agent built with liblxc)\n"
                 "  -s, --server HOST:PORT  without --config: the server's agent port (several,\n"
                 "                          comma-separated: redundant servers, docs/ha.md)\n"
                 "  -n, --name NAME         without --config: this agent's host name\n"
                 "      --tls-ca FILE --tls-cert FILE --tls-key FILE\n"
                 "                          without --config: the CA, this host's certificate\n"
                 "                          (naming NAME) and its key (`vcr pki`); required\n"
                 "                          unless --insecure (docs/security.md)\n"
                 "      --tls-server-name NAME\n"
                 "                          the name the server's certificate must show\n"
                 "                          (default: the HOST of --server)\n"
                 "      --insecure          without --config: plain TCP to the server (a\n"
                 "                          warning is logged at every start)\n"
                 "  -l, --log-level LEVEL   error, warn, info (default) or debug\n"
                 "  -t, --config-test       validate the configuration and exit\n"
                 "      --stop-vms-on-exit  on SIGTERM/SIGINT stop the VMs first; by default\n"
                 "                          they keep running and a restarted agent adopts them\n"
#if VCR_TEST_FAULTS
                 "      --test-faults       TESTS ONLY: accept fault-injection order members\n"
                 "                          (agent_exit_for_test; docs/warm-restart.md)\n"
                 "                          and hold a VM's disk preparation while\n"
                 "                          STATE_DIR/NAME.prep-hold exists\n"
#endif
                 "      --fence-watchdog DIR --timeout-ms N [--pause MS]\n"
                 "                          the self-fence watchdog the host role starts by\n"
                 "                          itself; with --pause: pause the running one for\n"
                 "                          MS ms (docs/fencing.md)\n"
                 "  -h, --help              this text\n"
                 "  -V, --version           version\n"
                 "\n"
                 "Exit status: 0 after SIGTERM/SIGINT or a passed --config-test; 2 for a bad\n"
                 "command line; otherwise non-zero with the reason on stderr.\n");
}

int main(int argc, char **argv)
{
    enum {
        OPT_STOP_VMS = 256,
        OPT_TEST_FAULTS,
        OPT_FENCE_WATCHDOG,
        OPT_TIMEOUT_MS,
        OPT_LISTEN_FD,
        OPT_PAUSE,
        OPT_TLS_CA,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_TLS_SERVER_NAME,
        OPT_INSECURE,
    };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"role", required_argument, NULL, 'r'},
        {"server", required_argument, NULL, 's'},
        {"name", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'l'},
        {"config-test", no_argument, NULL, 't'},
        {"stop-vms-on-exit", no_argument, NULL, OPT_STOP_VMS},
#if VCR_TEST_FAULTS
        {"test-faults", no_argument, NULL, OPT_TEST_FAULTS},
#endif
        {"fence-watchdog", required_argument, NULL, OPT_FENCE_WATCHDOG},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS},
        {"listen-fd", required_argument, NULL, OPT_LISTEN_FD},
        {"pause", required_argument, NULL, OPT_PAUSE},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct agent_options opts = {.role = "host"};
    bool config_test = false;
    int level = VCR_LOG_INFO;
    const char *fence_dir = NULL;
    int fence_timeout = 0, listen_fd = -1, pause_ms = -1;
    int c;
    while ((c = getopt_long(argc, argv, "c:r:s:n:l:thV", options, NULL)) != -1) {
        switch (c) {
        case 'c':
            opts.config_path = optarg;
            break;
        case 'r':
            opts.role = optarg;
            break;
        case 's':
            opts.server = optarg;
            break;
        case 'n':
            opts.name = optarg;
            break;
        case 'l':
            level = vcr_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "vcr-agent: --log-level `%s`: allowed: error, warn, info, debug\n",
                        optarg);
                return 2;
            }
            break;
        case 't':
            config_test = true;
            break;
        case OPT_STOP_VMS:
            opts.stop_vms_on_exit = true;
            break;
#if VCR_TEST_FAULTS
        case OPT_TEST_FAULTS:
            opts.test_faults = true;
            break;
#endif
        case OPT_FENCE_WATCHDOG:
            fence_dir = optarg;
            break;
        case OPT_TIMEOUT_MS:
            fence_timeout = atoi(optarg);
            break;
        case OPT_LISTEN_FD:
            listen_fd = atoi(optarg);
            break;
        case OPT_PAUSE:
            pause_ms = atoi(optarg);
            break;
        case OPT_TLS_CA:
            opts.tls_ca_file = optarg;
            break;
        case OPT_TLS_CERT:
            opts.tls_cert_file = optarg;
            break;
        case OPT_TLS_KEY:
            opts.tls_key_file = optarg;
            break;
        case OPT_TLS_SERVER_NAME:
            opts.tls_server_name = optarg;
            break;
        case OPT_INSECURE:
            opts.insecure = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vcr-agent %s\n", VCR_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (fence_dir) {
        vcr_log_init("vcr-fence-watchdog", (enum vcr_log_level)level);
        return pause_ms >= 0 ? fence_watchdog_pause(fence_dir, pause_ms)
                             : fence_watchdog_main(fence_dir, fence_timeout, listen_fd);
    }
    bool flags_config = opts.server && opts.name && !config_test;
    if (optind < argc || (opts.config_path == NULL && !flags_config)) {
        fprintf(stderr, "vcr-agent: %s\n",
                optind < argc ? "unexpected argument"
                              : "--config FILE (or --server and --name) is required");
        usage(stderr);
        return 2;
    }
    vcr_error_t err = NULL;
    if (agent_role_check(opts.role, &err) < 0) {
        /* The libvirt role is a role, of its own binary (docs/agent.md). */
        if (strcmp(opts.role, "libvirt") == 0)
            fprintf(stderr, "vcr-agent: --role `libvirt` is run by vcr-agent-libvirt\n");
        else
            fprintf(stderr, "vcr-agent: %s\n", vcr_error_msg(err));
        vcr_error_release(&err);
        return 2;
    }
    vcr_log_init("vcr-agent", (enum vcr_log_level)level);
    int rc = config_test ? agent_config_test(&opts, &err) : agent_run(&opts, &err);
    if (rc < 0)
        return vcr_error_report(&err, stderr, "vcr-agent");
    return 0;
}
