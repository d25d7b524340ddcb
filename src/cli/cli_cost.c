/* The standby footprint of each scheme (cli_cost.h, docs/cost.md).
 *
 * warm-vm         baseline: one standby VM per service, each the size of the
 *                 service's primary VM, running all the time.
 * cold-vm         baseline: a VM booted at failure: nothing stands by (the
 *                 price is paid in recovery time, bench/results/recovery.md).
 * warm-container  ours: the standby VMs the services are placed in, as
 *                 configured, each shared by every service placed there; the
 *                 containers run in them.
 * cold-container  ours: the same shared recovery VMs; the containers are
 *                 started at failure, so the VMs hold only their OS (the
 *                 measured difference: bench/results/standby-cost.md). */
#include "cli/cli_cost.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/cleanup.h"

static const char *const price_keys[] = {"currency", "vm_hour", "vcpu_hour", "gib_hour",
                                         "hours_per_year"};
#define PRICE_KEYS_ALLOWED "currency, vm_hour, vcpu_hour, gib_hour, hours_per_year"

int cli_cost_check_prices(json_t *prices, vcr_error_t *err)
{
    if (!json_is_object(prices))
        return vcr_error_make(
            err, EINVAL, "the price table must be a JSON object with keys " PRICE_KEYS_ALLOWED);
    const char *key;
    json_t *v;
    json_object_foreach(prices, key, v)
    {
        size_t i;
        for (i = 0; i < sizeof(price_keys) / sizeof(price_keys[0]); i++)
            if (strcmp(key, price_keys[i]) == 0)
                break;
        if (i == sizeof(price_keys) / sizeof(price_keys[0]))
            return vcr_error_make(err, EINVAL, "unknown key `%.64s`; allowed: " PRICE_KEYS_ALLOWED,
                                  key);
        if (strcmp(key, "currency") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 16)
                return vcr_error_make(err, EINVAL,
                                      "`currency` must be a string of 1 to 16 characters (USD, "
                                      "EUR, JPY, ...)");
            continue;
        }
        cleanup_free char *text = json_dumps(v, JSON_ENCODE_ANY);
        double d = json_number_value(v);
        if (!json_is_number(v) || !isfinite(d) || d < 0 ||
            (strcmp(key, "hours_per_year") == 0 && (d <= 0 || d > 8784)))
            return vcr_error_make(err, EINVAL, "`%s` is %.64s; allowed: %s", key, text ? text : "?",
                                  strcmp(key, "hours_per_year") == 0
                                      ? "a number of hours above 0 and at most 8784"
                                      : "a number >= 0 (the price of one hour)");
    }
    return 0;
}

/* One VM's size from the inventory: the VM named `name` on any host. */
static json_t *find_vm(json_t *status, const char *name)
{
    size_t i, j;
    json_t *h, *vm;
    json_array_foreach(json_object_get(status, "hosts"), i, h)
    {
        json_array_foreach(json_object_get(h, "vms"), j, vm)
        {
            const char *n = json_string_value(json_object_get(vm, "name"));
            if (n && strcmp(n, name) == 0)
                return vm;
        }
    }
    return NULL;
}

static bool contains(json_t *names, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        if (strcmp(json_string_value(n), name) == 0)
            return true;
    }
    return false;
}

struct scheme_sum {
    json_int_t vms, vcpus, memory_mb;
    json_t *standby_vms; /* names, for the container schemes */
};

/* Adds VM `name` (its vcpus and memory_mb) to sum; a VM the inventory does
 * not know (its host never said hello) goes to unknown, once. */
static void add_vm(struct scheme_sum *sum, json_t *status, const char *name, json_t *unknown)
{
    sum->vms++;
    json_t *vm = find_vm(status, name);
    json_t *vcpus = json_object_get(vm, "vcpus"), *mem = json_object_get(vm, "memory_mb");
    if (!json_is_integer(vcpus) || !json_is_integer(mem)) {
        if (!contains(unknown, name))
            json_array_append_new(unknown, json_string(name));
        return;
    }
    sum->vcpus += json_integer_value(vcpus);
    sum->memory_mb += json_integer_value(mem);
}

static double per_year(json_t *prices, const struct scheme_sum *s)
{
    double hours = json_is_number(json_object_get(prices, "hours_per_year"))
                       ? json_number_value(json_object_get(prices, "hours_per_year"))
                       : 8760.0;
    double hour =
        json_number_value(json_object_get(prices, "vm_hour")) * (double)s->vms +
        json_number_value(json_object_get(prices, "vcpu_hour")) * (double)s->vcpus +
        json_number_value(json_object_get(prices, "gib_hour")) * ((double)s->memory_mb / 1024.0);
    return round(hour * hours * 100.0) / 100.0;
}

json_t *cli_cost_report(json_t *status, json_t *services, json_t *prices, vcr_error_t *err)
{
    json_t *list = json_object_get(services, "services");
    if (!json_is_array(list) || !json_is_array(json_object_get(status, "hosts"))) {
        vcr_error_make(err, EPROTO,
                       "the server's answers are not the inventory and services JSON "
                       "(GET /v1/status, GET /v1/services)");
        return NULL;
    }
    cleanup_json json_t *unknown = json_array();
    struct scheme_sum warm_vm = {0}, cold_vm = {0}, shared = {.standby_vms = json_array()};
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *primary =
            json_string_value(json_object_get(json_object_get(s, "primary"), "vm"));
        /* A VM standby mode's standby (kind `vm`) is a VM of its own, not a
         * shared standby VM. */
        json_t *sb = json_object_get(s, "standby");
        const char *kind = json_string_value(json_object_get(sb, "kind"));
        const char *standby =
            kind && strcmp(kind, "vm") == 0 ? NULL : json_string_value(json_object_get(sb, "host"));
        if (primary)
            add_vm(&warm_vm, status, primary, unknown);
        if (standby == NULL)
            continue;
        if (!contains(shared.standby_vms, standby)) {
            json_array_append_new(shared.standby_vms, json_string(standby));
            add_vm(&shared, status, standby, unknown);
        }
    }
    struct {
        const char *scheme, *label;
        const struct scheme_sum *sum;
    } rows[] = {
        {"warm-vm", "a warm standby VM per service (baseline)", &warm_vm},
        {"cold-vm", "a VM booted at failure (baseline; nothing stands by)", &cold_vm},
        {"warm-container", "warm containers in the shared standby VMs (ours)", &shared},
        {"cold-container", "cold containers started in the shared recovery VMs (ours)", &shared},
    };
    json_t *schemes = json_array();
    double base = prices ? per_year(prices, &warm_vm) : 0;
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        const struct scheme_sum *sum = rows[r].sum;
        double y = prices ? per_year(prices, sum) : 0;
        json_array_append_new(
            schemes, json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o, s:O?}", "scheme",
                               rows[r].scheme, "label", rows[r].label, "vms", sum->vms, "vcpus",
                               sum->vcpus, "memory_mb", sum->memory_mb, "per_year",
                               prices ? json_real(y) : json_null(), "saving_per_year",
                               prices ? json_real(round((base - y) * 100) / 100) : json_null(),
                               "standby_vms", sum->standby_vms));
    }
    json_decref(shared.standby_vms);
    json_t *currency = json_object_get(prices, "currency");
    json_t *hours = json_object_get(prices, "hours_per_year");
    return json_pack("{s:I, s:O?, s:o, s:o, s:O}", "services", (json_int_t)json_array_size(list),
                     "currency", currency, "hours_per_year",
                     hours ? json_incref(hours) : json_real(8760.0), "schemes", schemes, "unknown",
                     unknown);
}
