/* vcr cost (docs/cost.md) */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/cli_cost.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const char usage[] =
    "Usage: vcr cost [--prices FILE] [--json]\n"
    "\n"
    "The standby footprint of each protection scheme for the services the server\n"
    "protects, from its inventory and configuration (docs/cost.md):\n"
    "  warm-vm         a warm standby VM per service, sized like its primary (baseline)\n"
    "  cold-vm         a VM booted at failure: nothing stands by (baseline)\n"
    "  warm-container  the shared standby VMs the services are placed in (ours)\n"
    "  cold-container  the same shared recovery VMs, containers started at failure (ours)\n"
    "in VMs, vCPUs and RAM as the host agents report the VMs' sizes; with a price\n"
    "table, in money per year and the saving against a warm VM per service.\n"
    "\n"
    "  -p, --prices FILE  a JSON price table: {\"currency\": \"USD\", \"vm_hour\": 0.57,\n"
    "                     \"vcpu_hour\": 0, \"gib_hour\": 0, \"hours_per_year\": 8760}\n"
    "                     (every key optional; docs/cost.md has examples)\n"
    "  -j, --json         print the report as JSON\n"
    "  -h, --help         show this help\n";

static void print_report(json_t *r)
{
    const char *cur = json_string_value(json_object_get(r, "currency"));
    bool money = json_is_number(
        json_object_get(json_array_get(json_object_get(r, "schemes"), 0), "per_year"));
    printf("%lld protected service(s)\n\n",
           (long long)json_integer_value(json_object_get(r, "services")));
    printf("%-15s %4s %6s %9s", "SCHEME", "VMS", "VCPUS", "RAM_MB");
    if (money)
        printf(" %14s %14s", "PER_YEAR", "SAVING");
    printf("  %s\n", "WHAT");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r, "schemes"), i, s)
    {
        printf("%-15s %4lld %6lld %9lld", json_string_value(json_object_get(s, "scheme")),
               (long long)json_integer_value(json_object_get(s, "vms")),
               (long long)json_integer_value(json_object_get(s, "vcpus")),
               (long long)json_integer_value(json_object_get(s, "memory_mb")));
        if (money)
            printf(" %10.2f %-3s %10.2f %-3s", json_number_value(json_object_get(s, "per_year")),
                   cur ? cur : "", json_number_value(json_object_get(s, "saving_per_year")),
                   cur ? cur : "");
        printf("  %s\n", json_string_value(json_object_get(s, "label")));
    }
    json_t *unknown = json_object_get(r, "unknown");
    if (json_array_size(unknown) > 0) {
        printf("\nsize unknown (their host has not reported them), counted as 0 vCPUs and 0 MB:");
        json_array_foreach(unknown, i, s)
        {
            printf(" %s", json_string_value(s));
        }
        printf("\n");
    }
}

int cli_verb_cost(struct cli_context *ctx, int argc, char **argv)
{
    static const struct option options[] = {
        {"prices", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prices_path = NULL;
    bool json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "p:jh", options, NULL)) != -1) {
        switch (opt) {
        case 'p':
            prices_path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option("cost", argc, argv);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vcr cost: unexpected argument `%s`; see `vcr cost --help`\n",
                argv[optind]);
        return CLI_EXIT_USAGE;
    }
    cleanup_json json_t *prices = NULL;
    cleanup_error vcr_error_t err = NULL;
    if (prices_path) {
        json_error_t jerr;
        prices = json_load_file(prices_path, JSON_REJECT_DUPLICATES, &jerr);
        if (prices == NULL) {
            fprintf(stderr, "vcr cost: --prices `%s`: line %d column %d: %s\n", prices_path,
                    jerr.line, jerr.column, jerr.text);
            return CLI_EXIT_USAGE;
        }
        if (cli_cost_check_prices(prices, &err) < 0) {
            fprintf(stderr, "vcr cost: --prices `%s`: %s\n", prices_path, vcr_error_msg(err));
            return CLI_EXIT_USAGE;
        }
    }
    cleanup_json json_t *status = cli_http_request(ctx->server, "GET", "/v1/status", 10, &err);
    cleanup_json json_t *services =
        status ? cli_http_request(ctx->server, "GET", "/v1/services", 10, &err) : NULL;
    cleanup_json json_t *report = services ? cli_cost_report(status, services, prices, &err) : NULL;
    if (report == NULL) {
        vcr_error_report(&err, stderr, "vcr cost");
        return CLI_EXIT_FAILURE;
    }
    if (json)
        cli_print_json(report);
    else
        print_report(report);
    return CLI_EXIT_OK;
}
