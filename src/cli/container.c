/* vcr container create|start|stop|destroy|migrate HOST NAME [...] */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "cli/cli.h"
#include "cli/verbs.h"
#include "common/cleanup.h"

static const char usage[] =
    "Usage: vcr container create HOST NAME --address A.B.C.D[/NN] [--service S]\n"
    "                            [--gateway A.B.C.D] [--template T | --image I]\n"
    "                            [--privileged] [--no-start] [--json]\n"
    "       vcr container start|stop|destroy HOST NAME [--json]\n"
    "       vcr container migrate HOST NAME --to HOST2 [--no-precopy]\n"
    "                             [--copy stream|server] [--json]\n"
    "\n"
    "Order the standby agent of HOST (a standby VM) to create (and start, unless\n"
    "--no-start), start, stop or destroy container NAME (docs/server.md,\n"
    "POST /v1/hosts/HOST/containers), and wait for its answer.  migrate moves the\n"
    "running container, processes and all (CRIU), to standby host HOST2 and waits\n"
    "until it answers there (docs/migration.md); exit 1 if it failed.\n"
    "\n"
    "  -a, --address ADDR   the container's IPv4 address (prefix /24 unless given)\n"
    "  -S, --service S      the service it serves (default: NAME)\n"
    "  -g, --gateway ADDR   its default gateway\n"
    "  -t, --template T     template rootfs under /var/lib/vcr/templates (default busybox)\n"
    "  -i, --image I        the image named I in the server's `images:` instead: the\n"
    "                       agent downloads it, checks its SHA-256 and caches it (a\n"
    "                       name the server does not know, or a checksum mismatch, is\n"
    "                       refused and nothing is started; docs/server.md)\n"
    "      --privileged     a privileged container (root is the VM's root), for an\n"
    "                       image that needs it.  The default is unprivileged: its\n"
    "                       root is uid 100000 of the VM (user namespace),\n"
    "                       capabilities dropped, LXC's seccomp deny list\n"
    "                       (docs/security.md, \"Standby containers\")\n"
    "      --unprivileged   accepted: the default\n"
    "      --no-start       create only\n"
    "      --to HOST2       migrate: the standby host to move it to\n"
    "      --no-precopy     migrate: no pre-dump; one full dump while it is stopped\n"
    "      --copy HOW       migrate: how the images travel: stream (default: agent\n"
    "                       to agent over TCP when both agents can) or server\n"
    "                       (through the server in chunks)\n"
    "  -j, --json           print the server's JSON answer\n"
    "  -h, --help           show this help\n";

int cli_verb_container(struct cli_context *ctx, int argc, char **argv)
{
    enum { OPT_NO_START = 256, OPT_TO, OPT_NO_PRECOPY, OPT_UNPRIVILEGED, OPT_PRIVILEGED, OPT_COPY };
    static const struct option options[] = {
        {"address", required_argument, NULL, 'a'},
        {"service", required_argument, NULL, 'S'},
        {"gateway", required_argument, NULL, 'g'},
        {"template", required_argument, NULL, 't'},
        {"image", required_argument, NULL, 'i'},
        {"no-start", no_argument, NULL, OPT_NO_START},
        {"unprivileged", no_argument, NULL, OPT_UNPRIVILEGED},
        {"privileged", no_argument, NULL, OPT_PRIVILEGED},
        {"to", required_argument, NULL, OPT_TO},
        {"no-precopy", no_argument, NULL, OPT_NO_PRECOPY},
        {"copy", required_argument, NULL, OPT_COPY},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cleanup_json json_t *body = json_object();
    bool json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "a:S:g:t:i:jh", options, NULL)) != -1) {
        switch (opt) {
        case 'a':
            json_object_set_new(body, "address", json_string(optarg));
            break;
        case 'S':
            json_object_set_new(body, "service", json_string(optarg));
            break;
        case 'g':
            json_object_set_new(body, "gateway", json_string(optarg));
            break;
        case 't':
            json_object_set_new(body, "template", json_string(optarg));
            break;
        case 'i':
            json_object_set_new(body, "image", json_string(optarg));
            break;
        case OPT_NO_START:
            json_object_set_new(body, "start", json_false());
            break;
        case OPT_UNPRIVILEGED:
            json_object_set_new(body, "privileged", json_false());
            break;
        case OPT_PRIVILEGED:
            json_object_set_new(body, "privileged", json_true());
            break;
        case OPT_TO:
            json_object_set_new(body, "to", json_string(optarg));
            break;
        case OPT_NO_PRECOPY:
            json_object_set_new(body, "precopy", json_false());
            break;
        case OPT_COPY:
            json_object_set_new(body, "copy", json_string(optarg));
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option("container", argc, argv);
        }
    }
    if (argc - optind != 3) {
        fprintf(stderr, "vcr container: expected ACTION HOST NAME; see `vcr container --help`\n");
        return CLI_EXIT_USAGE;
    }
    const char *action = argv[optind], *host = argv[optind + 1], *name = argv[optind + 2];
    bool migrate = strcmp(action, "migrate") == 0;
    if (strcmp(action, "create") != 0 && strcmp(action, "start") != 0 &&
        strcmp(action, "stop") != 0 && strcmp(action, "destroy") != 0 && !migrate) {
        fprintf(stderr,
                "vcr container: unknown action `%s`; allowed: create, start, stop, "
                "destroy, migrate\n",
                action);
        return CLI_EXIT_USAGE;
    }
    if (!migrate && (json_object_get(body, "precopy") || json_object_get(body, "copy"))) {
        fprintf(stderr, "vcr container: --no-precopy and --copy are only for migrate\n");
        return CLI_EXIT_USAGE;
    }
    if (migrate != (json_object_get(body, "to") != NULL)) {
        fprintf(stderr, migrate ? "vcr container migrate: --to HOST2 is required\n"
                                : "vcr container: --to is only for migrate\n");
        return CLI_EXIT_USAGE;
    }
    bool image = json_object_get(body, "image") != NULL;
    if (json_object_get(body, "privileged") && strcmp(action, "create") != 0) {
        fprintf(stderr, "vcr container: --privileged and --unprivileged are only for create\n");
        return CLI_EXIT_USAGE;
    }
    if (image && strcmp(action, "create") != 0) {
        fprintf(stderr, "vcr container: --image is only for create\n");
        return CLI_EXIT_USAGE;
    }
    if (image && json_object_get(body, "template")) {
        fprintf(stderr, "vcr container create: --template and --image given; allowed: one\n");
        return CLI_EXIT_USAGE;
    }
    if (strcmp(action, "create") == 0 && json_object_get(body, "address") == NULL) {
        fprintf(stderr, "vcr container create: --address is required\n");
        return CLI_EXIT_USAGE;
    }
    json_object_set_new(body, "action", json_string(action));
    json_object_set_new(body, "name", json_string(name));
    cleanup_free char *encoded = evhttp_uriencode(host, -1, 0);
    cleanup_free char *path = NULL;
    if (encoded == NULL || asprintf(&path, "/v1/hosts/%s/containers", encoded) < 0) {
        fprintf(stderr, "vcr container: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    cleanup_error vcr_error_t err = NULL;
    /* A migration copies memory images through the server: minutes under TCG. */
    cleanup_json json_t *answer = cli_http_request_body(ctx->server, "POST", path, body,
                                                        migrate ? 900
                                                        : image ? 150
                                                                : 30,
                                                        &err);
    if (answer == NULL) {
        vcr_error_report(&err, stderr, "vcr container");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cleanup_free char *text = json_dumps(answer, JSON_INDENT(2));
        if (text)
            puts(text);
    } else if (migrate) {
        if (json_is_true(json_object_get(answer, "ok")))
            printf("%s: migrated from %s to %s in %lld ms (downtime %lld ms; images: pre-dump "
                   "%lld bytes, final %lld bytes; copied at %.1f MB/s, %s)\n",
                   name, host, json_string_value(json_object_get(answer, "to")),
                   (long long)json_integer_value(json_object_get(answer, "total_ms")),
                   (long long)json_integer_value(json_object_get(answer, "downtime_ms")),
                   (long long)json_integer_value(json_object_get(answer, "pre_bytes")),
                   (long long)json_integer_value(json_object_get(answer, "final_bytes")),
                   json_number_value(json_object_get(answer, "copy_mb_s")),
                   json_string_value(json_object_get(answer, "copy_method"))
                       ? json_string_value(json_object_get(answer, "copy_method"))
                       : "no copy");
    } else {
        json_t *ms = json_object_get(answer, "ms");
        printf("%s: %s done on %s (%lld ms)\n", name, action, host,
               (long long)json_integer_value(ms));
    }
    if (migrate && !json_is_true(json_object_get(answer, "ok"))) {
        fprintf(stderr, "vcr container migrate: %s\n",
                json_string_value(json_object_get(answer, "error")));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}
