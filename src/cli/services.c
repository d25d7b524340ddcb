/* vcr services */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const char usage[] =
    "Usage: vcr services [--json]\n"
    "\n"
    "Show every protected service: its state (ok, degraded, recovering, recovered,\n"
    "failed), where it is served now (primary or standby, address:port), the state of\n"
    "its standby container as the standby host reports it (running, stopped, absent,\n"
    "provisioning, unknown while the host is lost), and the timeline of its last\n"
    "recovery, phase by phase with the ms since detection.  A service with data\n"
    "(docs/data.md) gets a line with its last copy and the data's age at its last\n"
    "recovery.  A service with automatic failback gets a line with its policy\n"
    "(and SUSPENDED after flapping, docs/recovery.md).\n"
    "\n"
    "  -j, --json  print the server's JSON (GET /v1/services) instead\n"
    "  -h, --help  show this help\n";

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

/* A service's data (docs/data.md): its last copy and the age at the last recovery. */
static void print_data(json_t *s)
{
    json_t *data = json_object_get(s, "data");
    if (!json_is_object(data))
        return;
    json_t *last = json_object_get(data, "last_copy");
    json_t *age = json_object_get(data, "age_ms");
    printf("  %s: data `%s` at %s: ", str(s, "name"), str(data, "volume"), str(data, "path"));
    if (json_is_object(last))
        printf("last copy taken at %lld ms (%s, %lld bytes packed)",
               (long long)json_integer_value(json_object_get(last, "taken_ms")),
               str(last, "method"), (long long)json_integer_value(json_object_get(last, "bytes")));
    else
        printf("no copy yet");
    if (json_is_integer(age))
        printf("; age at the last recovery %lld ms", (long long)json_integer_value(age));
    if (json_is_string(json_object_get(data, "error")))
        printf("; last error: %s", str(data, "error"));
    printf("\n");
}

static void print_services(json_t *body)
{
    printf("%-16s %-11s %-8s %-21s %-7s %-12s %s\n", "SERVICE", "STATE", "SERVED", "ADDRESS",
           "MODE", "CONTAINER", "DNS NAME");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(body, "services"), i, s)
    {
        char where[40];
        snprintf(where, sizeof(where), "%s:%lld", str(s, "address"),
                 (long long)json_integer_value(json_object_get(s, "port")));
        json_t *standby = json_object_get(s, "standby");
        printf("%-16s %-11s %-8s %-21s %-7s %-12s %s\n", str(s, "name"), str(s, "state"),
               str(s, "served_by"), where, str(s, "mode"), str(standby, "container_state"),
               str(s, "dns_name"));
        if (json_is_string(json_object_get(standby, "provision_error")))
            printf("  %s: provisioning failed: %s\n", str(s, "name"),
                   str(standby, "provision_error"));
        print_data(s);
        json_t *fb = json_object_get(s, "failback");
        if (json_is_object(fb) && strcmp(str(fb, "mode"), "auto") == 0)
            printf("  %s: failback auto after %lld s, at most every %lld s%s\n", str(s, "name"),
                   (long long)json_integer_value(json_object_get(fb, "after_s")),
                   (long long)json_integer_value(json_object_get(fb, "min_interval_s")),
                   json_is_true(json_object_get(fb, "suspended"))
                       ? "; SUSPENDED (it failed again soon after the last one: `vcr failback` "
                         "re-enables it)"
                       : "");
    }
    json_array_foreach(json_object_get(body, "services"), i, s)
    {
        json_t *rec = json_object_get(s, "recovery");
        if (!json_is_object(rec))
            continue;
        printf("\n%s: last recovery: %s\n", str(s, "name"), str(rec, "cause"));
        size_t j;
        json_t *e;
        json_array_foreach(json_object_get(rec, "timeline"), j, e)
        {
            const char *extra = json_string_value(json_object_get(e, "how"));
            if (extra == NULL)
                extra = json_string_value(json_object_get(e, "error"));
            printf("  %8lld ms  %-16s %s\n",
                   (long long)json_integer_value(json_object_get(e, "elapsed_ms")), str(e, "phase"),
                   extra ? extra : "");
        }
        if (json_is_string(json_object_get(rec, "error")))
            printf("  error: %s\n", str(rec, "error"));
    }
}

int cli_verb_services(struct cli_context *ctx, int argc, char **argv)
{
    bool json = false;
    int done = cli_parse_json_help("services", usage, argc, argv, &json);
    if (done >= 0)
        return done;
    if (optind < argc) {
        fprintf(stderr, "vcr services: unexpected argument `%s`; see `vcr services --help`\n",
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = cli_http_request(ctx->server, "GET", "/v1/services", 10, &err);
    if (body == NULL) {
        vcr_error_report(&err, stderr, "vcr services");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cli_print_json(body);
    } else {
        print_services(body);
    }
    return CLI_EXIT_OK;
}
