/* vcr vm warm-restart VM, vcr host warm-restart HOST (docs/warm-restart.md).
 * A VM: one POST /v1/vms/VM/warm-restart, on a thread of its own (every request
 * runs on a private event loop).  A host: one POST /v1/hosts/HOST/warm-restart,
 * whose answer lists every VM's result. */
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

/* Longer than the server's 60 s deadline for the order, so that its answer is what we report. */
#define WARM_HTTP_TIMEOUT_S 90

struct warm_job {
    const char *server;
    const char *vm;
    const char *qemu;
    bool json;
    json_t *entry; /* result */
    char *host;    /* from the answer */
    pthread_t thread;
};

static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static json_t *failed_entry(const char *vm, const char *error)
{
    return json_pack("{s:s, s:b, s:b, s:s, s:n, s:n, s:n, s:n, s:n, s:n, s:n}", "vm", vm, "ok", 0,
                     "fallback", 0, "error", error, "launch_ms", "pause_ms", "suspend_ms",
                     "resume_ms", "downtime_ms", "state_bytes", "qemu");
}

static void *run_job(void *arg)
{
    struct warm_job *j = arg;
    cleanup_free char *encoded = evhttp_uriencode(j->vm, -1, 0);
    cleanup_free char *path = NULL;
    cleanup_json json_t *body = j->qemu ? json_pack("{s:s}", "qemu", j->qemu) : NULL;
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *answer = NULL;
    if (encoded && asprintf(&path, "/v1/vms/%s/warm-restart", encoded) >= 0)
        answer = cli_http_request_body(j->server, "POST", path, body, WARM_HTTP_TIMEOUT_S, &err);
    json_t *entry = json_array_get(json_object_get(answer, "vms"), 0);
    const char *host = json_string_value(json_object_get(answer, "host"));
    j->host = host ? strdup(host) : NULL;
    j->entry = entry ? json_incref(entry)
                     : failed_entry(j->vm, answer ? "the server's answer has no entry"
                                                  : vcr_error_msg(err));
    cleanup_free char *line = cli_format_warm_entry(j->entry);
    pthread_mutex_lock(&print_lock);
    /* With --json, stdout carries only the JSON: progress goes to stderr. */
    fprintf(j->json ? stderr : stdout, "%s\n", line ? line : j->vm);
    fflush(j->json ? stderr : stdout);
    pthread_mutex_unlock(&print_lock);
    return NULL;
}

/* Runs the jobs in parallel, prints the result; the exit code. */
static int run_all(struct cli_context *ctx, const char *host, char **vms, size_t n,
                   const char *qemu, bool json)
{
    struct warm_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
    if (jobs == NULL) {
        fprintf(stderr, "vcr: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    for (size_t i = 0; i < n; i++) {
        jobs[i] =
            (struct warm_job){.server = ctx->server, .vm = vms[i], .qemu = qemu, .json = json};
        if (pthread_create(&jobs[i].thread, NULL, run_job, &jobs[i]) != 0)
            run_job(&jobs[i]), jobs[i].thread = 0;
    }
    cleanup_json json_t *list = json_array();
    bool all_ok = n > 0;
    const char *answer_host = host;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].thread)
            pthread_join(jobs[i].thread, NULL);
        if (json_is_true(json_object_get(jobs[i].entry, "ok")))
            ok++;
        else
            all_ok = false;
        if (answer_host == NULL)
            answer_host = jobs[i].host;
        json_array_append(list, jobs[i].entry);
    }
    if (json) {
        cleanup_json json_t *out = json_pack("{s:s?, s:O}", "host", answer_host, "vms", list);
        cleanup_free char *text = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
        if (text)
            puts(text);
    } else if (n > 1) {
        printf("host %s: %zu of %zu VMs warm-restarted\n", answer_host ? answer_host : "-", ok, n);
    }
    for (size_t i = 0; i < n; i++) {
        json_decref(jobs[i].entry);
        free(jobs[i].host);
    }
    free(jobs);
    return all_ok ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

/* Options after the verb's action: --qemu PATH, --json.  -1: usage error printed. */
static int parse_options(const char *verb, int argc, char **argv, const char **qemu, bool *json,
                         const char *usage)
{
    static const struct option options[] = {
        {"qemu", required_argument, NULL, 'q'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "q:jh", options, NULL)) != -1) {
        switch (opt) {
        case 'q':
            if (optarg[0] != '/') {
                fprintf(stderr, "vcr %s: --qemu `%s`: give an absolute path\n", verb, optarg);
                return -1;
            }
            *qemu = optarg;
            break;
        case 'j':
            *json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 1;
        default:
            cli_bad_option(verb, argc, argv);
            return -1;
        }
    }
    return 0;
}

static const char vm_usage[] =
    "Usage: vcr vm warm-restart NAME [--qemu PATH] [--json]\n"
    "\n"
    "Restart the QEMU of VM NAME while the guest keeps its memory: start a new QEMU\n"
    "(the same binary, or PATH) on the same RAM file beside the running one, then\n"
    "pause, save the device state, end the old QEMU, load, continue.  A new QEMU\n"
    "that cannot start leaves the old one running, never paused, and the command\n"
    "fails with the cause; one that cannot take the state makes the VM boot cold\n"
    "instead (docs/warm-restart.md).\n"
    "\n"
    "  -q, --qemu PATH  the QEMU binary to restart into (absolute path)\n"
    "  -j, --json       print {\"host\", \"vms\": [{\"vm\", \"ok\", \"fallback\", \"error\",\n"
    "                   \"launch_ms\", \"pause_ms\", \"suspend_ms\", \"resume_ms\",\n"
    "                   \"downtime_ms\", \"state_bytes\", \"qemu\"}]}\n"
    "  -h, --help       show this help\n";

int cli_warm_vm(struct cli_context *ctx, int argc, char **argv, const char *name)
{
    const char *qemu = NULL;
    bool json = false;
    int r = parse_options("vm", argc, argv, &qemu, &json, vm_usage);
    if (r != 0)
        return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    char *vms[] = {(char *)name};
    return run_all(ctx, NULL, vms, 1, qemu, json);
}

static const char host_usage[] =
    "Usage: vcr host warm-restart HOST [--qemu PATH] [--json]\n"
    "\n"
    "Warm-restart every VM of HOST together (see `vcr vm warm-restart --help`): one\n"
    "request, so that the server sends every VM's order at once; the agent starts\n"
    "every new QEMU, then pauses the guests one at a time.  Prints one line per VM\n"
    "(in the order they finished) once all are done.  Exit 0 only if every VM was\n"
    "warm-restarted; a cold-boot fallback counts as a failure.\n"
    "\n"
    "  -q, --qemu PATH  the QEMU binary to restart into (absolute path)\n"
    "  -j, --json       print the results as JSON (progress lines go to stderr)\n"
    "  -h, --help       show this help\n";

int cli_verb_host(struct cli_context *ctx, int argc, char **argv)
{
    const char *qemu = NULL;
    bool json = false;
    int r = parse_options("host", argc, argv, &qemu, &json, host_usage);
    if (r != 0)
        return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    if (argc - optind != 2 || strcmp(argv[optind], "warm-restart") != 0) {
        fprintf(stderr, "vcr host: expected `warm-restart HOST`; see `vcr host --help`\n");
        return CLI_EXIT_USAGE;
    }
    const char *host = argv[optind + 1];
    /* One request: the server sends every VM's order at once, so that the agent
     * has them all before the first new QEMU is ready and can pause the guests
     * one after another with no start-up beside a pause (docs/warm-restart.md). */
    cleanup_free char *encoded = evhttp_uriencode(host, -1, 0);
    cleanup_free char *path = NULL;
    if (encoded == NULL || asprintf(&path, "/v1/hosts/%s/warm-restart", encoded) < 0) {
        fprintf(stderr, "vcr host: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    cleanup_json json_t *body = qemu ? json_pack("{s:s}", "qemu", qemu) : NULL;
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *answer =
        cli_http_request_body(ctx->server, "POST", path, body, WARM_HTTP_TIMEOUT_S, &err);
    if (answer == NULL) {
        vcr_error_report(&err, stderr, "vcr host");
        return CLI_EXIT_FAILURE;
    }
    json_t *list = json_object_get(answer, "vms");
    size_t n = json_array_size(list), ok = 0, i;
    if (n == 0) {
        fprintf(stderr, "vcr host: host `%s` has no VMs\n", host);
        return CLI_EXIT_FAILURE;
    }
    json_t *entry;
    json_array_foreach(list, i, entry)
    {
        if (json_is_true(json_object_get(entry, "ok")))
            ok++;
        cleanup_free char *line = cli_format_warm_entry(entry);
        /* With --json, stdout carries only the JSON: the lines go to stderr. */
        fprintf(json ? stderr : stdout, "%s\n", line ? line : "?");
    }
    if (json) {
        cleanup_free char *text = json_dumps(answer, JSON_INDENT(2));
        if (text)
            puts(text);
    } else {
        printf("host %s: %zu of %zu VMs warm-restarted\n", host, ok, n);
    }
    return ok == n ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}
