/* The verbs of `vcr`, one file each, dispatched from the table in vcr.c
 * (after crun's src/crun.c).  argv[0] is the verb itself. */
#ifndef VCR_CLI_VERBS_H
#define VCR_CLI_VERBS_H

struct cli_context {
    const char *server; /* "HOST:PORT" of the HTTP API */
};

int cli_verb_status(struct cli_context *ctx, int argc, char **argv);
int cli_verb_events(struct cli_context *ctx, int argc, char **argv);
int cli_verb_vm(struct cli_context *ctx, int argc, char **argv);
int cli_verb_host(struct cli_context *ctx, int argc, char **argv);
int cli_verb_container(struct cli_context *ctx, int argc, char **argv);
int cli_verb_services(struct cli_context *ctx, int argc, char **argv);
int cli_verb_failover(struct cli_context *ctx, int argc, char **argv);
int cli_verb_failback(struct cli_context *ctx, int argc, char **argv);
/* vcr vm warm-restart NAME (warm.c); argv is the verb's, name already taken out. */
int cli_warm_vm(struct cli_context *ctx, int argc, char **argv, const char *name);

/* vcr vm flush|reboot (reboot.c); argv[0] is "flush" or "reboot". */
int cli_vm_volume(struct cli_context *ctx, int argc, char **argv);

/* For an option getopt_long did not accept: prints a usage error, returns 2. */
int cli_bad_option(const char *verb, int argc, char **argv);

#endif
