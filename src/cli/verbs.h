/* The verbs of `vcr`, one file each, dispatched from the table in vcr.c
 * (after crun's src/crun.c).  argv[0] is the verb itself. */
#ifndef VCR_CLI_VERBS_H
#define VCR_CLI_VERBS_H

#include <jansson.h>
#include <stdbool.h>

struct cli_context {
    const char *server; /* "HOST:PORT" of the HTTP API */
};

int cli_verb_status(struct cli_context *ctx, int argc, char **argv);
int cli_verb_events(struct cli_context *ctx, int argc, char **argv);
int cli_verb_vm(struct cli_context *ctx, int argc, char **argv);
int cli_verb_host(struct cli_context *ctx, int argc, char **argv);
int cli_verb_container(struct cli_context *ctx, int argc, char **argv);
int cli_verb_image(struct cli_context *ctx, int argc, char **argv);
int cli_verb_services(struct cli_context *ctx, int argc, char **argv);
int cli_verb_failover(struct cli_context *ctx, int argc, char **argv);
int cli_verb_failback(struct cli_context *ctx, int argc, char **argv);
int cli_verb_service(struct cli_context *ctx, int argc, char **argv);
int cli_verb_cost(struct cli_context *ctx, int argc, char **argv);
/* Local files only (pki.c): ctx is unused. */
int cli_verb_pki(struct cli_context *ctx, int argc, char **argv);
/* vcr vm warm-restart NAME (warm.c); argv is the verb's, name already taken out. */
int cli_warm_vm(struct cli_context *ctx, int argc, char **argv, const char *name);

/* vcr vm flush|reboot (reboot.c); argv[0] is "flush" or "reboot". */
int cli_vm_volume(struct cli_context *ctx, int argc, char **argv);

/* The options of a verb that has only --json and --help: parses them (getopt_long,
 * optind left at the first operand), sets *json, and returns -1 to go on, or the
 * exit code to return now (--help printed usage, or a bad option). */
int cli_parse_json_help(const char *verb, const char *usage, int argc, char **argv, bool *json);

/* Prints value as indented JSON on stdout (`null` if it cannot be encoded). */
void cli_print_json(json_t *value);

/* For an option getopt_long did not accept: prints a usage error, returns 2. */
int cli_bad_option(const char *verb, int argc, char **argv);

#endif
