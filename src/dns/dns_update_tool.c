/* vcr-dnsupdate: one dns_update_sync() from the command line, for the integration
 * tests, latency measurements and debugging a lab's DNS (docs/dns.md). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/hostport.h"
#include "common/log.h"
#include "dns/dns_update.h"

#define PROG "vcr-dnsupdate"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " --server A.B.C.D[:PORT]|IPV6|[IPV6]:PORT --zone ZONE\n"
            "                     --key-file FILE\n"
            "                     [--attempts N] [--timeout-ms MS] [--max-timeout-ms MS]\n"
            "                     [--fence-term T] [--json] [--log-level LEVEL]\n"
            "                     NAME TTL ADDRESS\n"
            "       " PROG " ... --repeat N NAME TTL ADDRESS [ADDRESS...]\n"
            "       " PROG " ... [--fence-term T] --fence-claim T2 [NAME TTL ADDRESS]\n"
            "Replaces every A record of NAME by ADDRESS with a TSIG-signed DNS UPDATE.\n"
            "ADDRESS is an IPv4 address (the A RRset), an IPv6 address (the AAAA RRset)\n"
            "or both joined by a comma, e.g. 10.77.0.11,fd77::11 (both in one UPDATE).\n"
            "--repeat makes N updates in a row, cycling through the addresses (give two\n"
            "so that each one is a real change), and reports the median time.\n"
            "--fence-term T: only if the zone's fence (TXT " DNS_FENCE_LABEL ".ZONE) is T, as\n"
            "redundant servers switch (docs/ha.md); NXRRSET otherwise.  --fence-claim T2:\n"
            "move the fence from T (no --fence-term: from none) to T2.\n");
}

static int parse_long(const char *what, const char *s, long min, long max, long *out,
                      vcr_error_t *err)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max)
        return vcr_error_make(err, EINVAL, "%s: `%s` is not a number in %ld..%ld", what, s, min,
                              max);
    *out = v;
    return 0;
}

/* The library checks the finer ranges of the retry policy and names the field. */
static int parse_ms_or_count(const char *what, const char *s, unsigned *out, vcr_error_t *err)
{
    long v;
    if (parse_long(what, s, 1, 60000, &v, err) < 0)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* "A.B.C.D", "A.B.C.D:PORT", a bare IPv6 address or "[IPV6]:PORT"; the address
 * itself is checked by the library. */
static int parse_server(char *arg, struct dns_update_config *cfg, vcr_error_t *err)
{
    char *colon = strrchr(arg, ':');
    if (arg[0] == '[') {
        char *close = strchr(arg, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return vcr_error_make(err, EINVAL, "--server: `%s`: expected [IPV6] or [IPV6]:PORT",
                                  arg);
        *close = '\0';
        colon = close[1] == ':' ? close + 1 : NULL;
        arg++;
    } else if (colon && strchr(arg, ':') != colon) {
        colon = NULL; /* a bare IPv6 address: no port */
    }
    if (colon) {
        long port;
        *colon = '\0';
        if (parse_long("--server port", colon + 1, 1, 65535, &port, err) < 0)
            return -1;
        cfg->port = (uint16_t)port;
    }
    cfg->server = arg;
    return 0;
}

/* Times of the updates run (--repeat): the first one in a process pays for cold caches
 * and library initialisation, the median is what a long-running daemon sees. */
struct timing {
    unsigned updates;
    double first_ms, median_ms, max_ms;
};

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static struct timing timing_of(double *ms, unsigned n)
{
    struct timing t = {.updates = n};
    if (n == 0)
        return t;
    t.first_ms = ms[0];
    qsort(ms, n, sizeof(*ms), compare_double);
    t.median_ms = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
    t.max_ms = ms[n - 1];
    return t;
}

static double rounded(double ms)
{
    return (double)(long long)(ms * 1e3 + 0.5) / 1e3;
}

/* "ADDR4", "ADDR6" or "ADDR4,ADDR6" (either order) into the update's A and AAAA
 * addresses; a part of neither family goes to the A side, whose check names it. */
static void split_addresses(const char *arg, char *buf, size_t size, const char **addr,
                            const char **addr6)
{
    snprintf(buf, size, "%s", arg);
    *addr = *addr6 = NULL;
    char *save = NULL;
    for (char *part = strtok_r(buf, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
        if (vcr_ip_family(part) == AF_INET6 && *addr6 == NULL)
            *addr6 = part;
        else
            *addr = part;
    }
}

static int print_outcome(bool json, const char *name, const char *ttl, const char *addr,
                         const struct dns_update_outcome *o, const struct timing *t,
                         const char *error)
{
    if (json) {
        cleanup_json json_t *j = json_pack(
            "{s:b, s:s?, s:i, s:f, s:i, s:i, s:f, s:f, s:f}", "ok", error == NULL, "error", error,
            "attempts", (json_int_t)o->attempts, "elapsed_ms", rounded(o->elapsed_ms), "rcode",
            (json_int_t)o->rcode, "updates", (json_int_t)t->updates, "first_ms",
            rounded(t->first_ms), "median_ms", rounded(t->median_ms), "max_ms", rounded(t->max_ms));
        cleanup_free char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        printf("%s\n", text ? text : "{\"ok\":false,\"error\":\"out of memory\"}");
    } else if (error == NULL && name == NULL) {
        printf("fence claimed: %u attempt(s), %.3f ms\n", o->attempts, o->elapsed_ms);
    } else if (error == NULL && t->updates > 1) {
        printf("%s %s ttl %s: ok, %u updates, median %.3f ms, first %.3f ms, max %.3f ms\n", name,
               addr, ttl, t->updates, t->median_ms, t->first_ms, t->max_ms);
    } else if (error == NULL) {
        printf("%s %s ttl %s: ok, %u attempt(s), %.3f ms\n", name, addr, ttl, o->attempts,
               o->elapsed_ms);
    }
    if (error && o->attempts > 0)
        fprintf(stderr, PROG ": %s (%u attempt(s), %.1f ms)\n", error, o->attempts, o->elapsed_ms);
    else if (error)
        fprintf(stderr, PROG ": %s\n", error);
    return error ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"server", required_argument, NULL, 's'},
        {"zone", required_argument, NULL, 'z'},
        {"key-file", required_argument, NULL, 'k'},
        {"attempts", required_argument, NULL, 'a'},
        {"timeout-ms", required_argument, NULL, 't'},
        {"max-timeout-ms", required_argument, NULL, 'm'},
        {"repeat", required_argument, NULL, 'r'},
        {"fence-term", required_argument, NULL, 'f'},
        {"fence-claim", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cleanup_error vcr_error_t err = NULL;
    struct dns_update_config cfg = {0};
    const char *key_file = NULL;
    bool json = false;
    unsigned repeat = 1;
    int level = VCR_LOG_ERROR;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_server(optarg, &cfg, &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            break;
        case 'z':
            cfg.zone = optarg;
            break;
        case 'k':
            key_file = optarg;
            break;
        case 'a':
            if (parse_ms_or_count("--attempts", optarg, &cfg.retry.attempts, &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            break;
        case 't':
            if (parse_ms_or_count("--timeout-ms", optarg, &cfg.retry.first_timeout_ms, &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            break;
        case 'm':
            if (parse_ms_or_count("--max-timeout-ms", optarg, &cfg.retry.max_timeout_ms, &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            break;
        case 'r':
            if (parse_ms_or_count("--repeat", optarg, &repeat, &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            break;
        case 'f':
        case 'c': {
            long term;
            if (parse_long(c == 'f' ? "--fence-term" : "--fence-claim", optarg, 1, LONG_MAX, &term,
                           &err) < 0)
                return vcr_error_report(&err, stderr, PROG), 2;
            *(c == 'f' ? &cfg.fence_term : &cfg.fence_claim) = term;
            break;
        }
        case 'j':
            json = true;
            break;
        case 'l':
            level = vcr_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, PROG ": --log-level: `%s` is not error, warn, info or debug\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    bool claim_only = cfg.fence_claim > 0 && argc == optind;
    if (cfg.server == NULL || cfg.zone == NULL || key_file == NULL ||
        (argc - optind < 3 && !claim_only) || (argc - optind > 3 && repeat == 1)) {
        usage(stderr);
        return 2;
    }
    vcr_log_init(PROG, (enum vcr_log_level)level);
    static char *none[] = {NULL};
    const char *name = claim_only ? NULL : argv[optind];
    const char *ttl_arg = claim_only ? "0" : argv[optind + 1];
    char **addrs = claim_only ? none : argv + optind + 2;
    unsigned naddrs = claim_only ? 1 : (unsigned)(argc - optind - 2);
    long ttl;
    if (parse_long("ttl", ttl_arg, LONG_MIN, LONG_MAX, &ttl, &err) < 0)
        return vcr_error_report(&err, stderr, PROG), 2;

    struct dns_tsig_key key = {0};
    if (dns_tsig_key_load(key_file, &key, &err) < 0)
        return vcr_error_report(&err, stderr, PROG), 1;
    cfg.key_name = key.name;
    cfg.key_secret = key.secret;
    cfg.algorithm = key.algorithm;
    cleanup_free double *times = calloc(repeat, sizeof(*times));
    if (times == NULL)
        return vcr_error_errno(&err, "allocate %u timings", repeat),
               vcr_error_report(&err, stderr, PROG), 1;
    struct dns_update_outcome outcome = {.rcode = -1};
    unsigned done = 0;
    int rc = 0;
    while (rc == 0 && done < repeat) {
        char buf[128];
        const char *addr = NULL, *addr6 = NULL;
        if (!claim_only)
            split_addresses(addrs[done % naddrs], buf, sizeof(buf), &addr, &addr6);
        rc = dns_update_sync(&cfg, name, ttl, addr, addr6, &outcome, &err);
        if (rc == 0)
            times[done++] = outcome.elapsed_ms;
    }
    dns_tsig_key_clear(&key);
    struct timing timing = timing_of(times, done);
    return print_outcome(json, name, ttl_arg, addrs[(done ? done - 1 : 0) % naddrs], &outcome,
                         &timing, rc < 0 ? vcr_error_msg(err) : NULL);
}
