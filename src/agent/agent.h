/* vcr-agent as a library: agent_main.c parses the command line and calls
 * these; the unit tests link the same code (docs/agent.md). */
#ifndef VCR_AGENT_AGENT_H
#define VCR_AGENT_AGENT_H

#include <stdbool.h>

#include "common/err.h"

struct agent_options {
    const char *config_path;
    const char *role; /* "host" (default) or "standby" (built with liblxc) */
    /* Without config_path (standby role): the server (HOST:PORT) and our name. */
    const char *server;
    const char *name;
    /* Without config_path: the server link's TLS files, or insecure (plain TCP). */
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_server_name;
    bool insecure;
    /* Stop the role's VMs on SIGTERM/SIGINT; by default they outlive the agent. */
    bool stop_vms_on_exit;
    /* Accept test-only order members (`agent_exit_for_test`); never in production. */
    bool test_faults;
};

/* 0 when name is a role this binary implements; else -1 and an error that
 * lists the roles it does. */
int agent_role_check(const char *name, vcr_error_t *err);
/* --config-test: load and validate; on success prints a summary to stdout. */
int agent_config_test(const struct agent_options *opts, vcr_error_t *err);
/* Runs until SIGTERM or SIGINT (a second one exits at once). */
int agent_run(const struct agent_options *opts, vcr_error_t *err);

#endif
