/* vcr cost (docs/cost.md): the standby footprint of each protection scheme, in
 * VMs, vCPUs and RAM, and in money from a price table, computed from the
 * server's inventory (GET /v1/status) and services (GET /v1/services).  Kept
 * apart from the verb so that the unit tests feed it JSON. */
#ifndef VCR_CLI_COST_H
#define VCR_CLI_COST_H

#include <jansson.h>

#include "common/err.h"

/* Checks a price table (the parsed --prices file): an object with only the
 * keys currency (string), vm_hour, vcpu_hour, gib_hour (numbers >= 0) and
 * hours_per_year (number > 0).  *err names the key, the value and what is
 * allowed. */
int cli_cost_check_prices(json_t *prices, vcr_error_t *err);

/* The report: {"services": N, "currency", "hours_per_year", "schemes": [{scheme,
 * label, vms, vcpus, memory_mb, per_year, saving_per_year, standby_vms}], "unknown":
 * [VMs whose size the inventory does not know]}.  prices may be NULL (no money
 * columns: per_year null).  NULL with *err when status or services is not the
 * API's JSON. */
json_t *cli_cost_report(json_t *status, json_t *services, json_t *prices, vcr_error_t *err);

#endif
