/* vcr vm flush NAME [VOLUME] and vcr vm reboot NAME [--cold] (docs/warm-cache.md). */
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
    "Usage: vcr vm flush NAME [VOLUME] [--json]\n"
    "       vcr vm reboot NAME [--cold] [--json]\n"
    "\n"
    "flush: fsync the disk images of VM NAME's warm-cache volumes (or only\n"
    "VOLUME's) now; the guest runs on.  What the guest synced is on disk already\n"
    "(QEMU fsyncs the image for it); this also covers what it wrote unsynced.\n"
    "reboot: reboot the guest OS and wait until it is ready again.  Warm (the\n"
    "default): a reset in the same QEMU; warm-cache volumes stay mapped, so their\n"
    "data is still in host memory.  --cold: the conventional path: QEMU ends and\n"
    "the VM starts again in a new QEMU, which maps the disk images afresh.\n"
    "\n"
    "  -c, --cold  (reboot) conventional reboot from the disk images\n"
    "  -j, --json  print the server's JSON answer\n"
    "  -h, --help  show this help\n";

/* argv[0] is "flush" or "reboot". */
int cli_vm_volume(struct cli_context *ctx, int argc, char **argv)
{
    static const struct option options[] = {
        {"cold", no_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false, cold = false;
    bool reboot = strcmp(argv[0], "reboot") == 0;
    int opt;
    optind = 0; /* a fresh scan of this argv (glibc) */
    while ((opt = getopt_long(argc, argv, "cjh", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cold = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        default:
            return cli_bad_option("vm", argc, argv);
        }
    }
    int rest = argc - optind;
    if (rest < 1 || rest > (reboot ? 1 : 2) || (cold && !reboot)) {
        fprintf(stderr, "vcr vm: expected `%s`; see `vcr vm %s --help`\n",
                reboot ? "reboot NAME [--cold]" : "flush NAME [VOLUME]", argv[0]);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[optind];
    cleanup_json json_t *body =
        reboot ? json_pack("{s:b}", "cold", cold)
               : (rest == 2 ? json_pack("{s:s}", "volume", argv[optind + 1]) : json_object());
    cleanup_free char *encoded = evhttp_uriencode(name, -1, 0);
    cleanup_free char *path = NULL;
    if (body == NULL || encoded == NULL || asprintf(&path, "/v1/vms/%s/%s", encoded, argv[0]) < 0) {
        fprintf(stderr, "vcr vm: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    cleanup_error vcr_error_t err = NULL;
    /* Longer than the server's own deadlines (150 s for a reboot). */
    cleanup_json json_t *answer =
        cli_http_request_body(ctx->server, "POST", path, body, reboot ? 300 : 60, &err);
    if (answer == NULL) {
        vcr_error_report(&err, stderr, "vcr vm");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cleanup_free char *text = json_dumps(answer, JSON_INDENT(2));
        if (text)
            puts(text);
    } else if (reboot) {
        printf("%s: %s reboot done: reset %.0f ms, guest ready after %.0f ms\n", name,
               cold ? "cold" : "warm", json_number_value(json_object_get(answer, "reset_ms")),
               json_number_value(json_object_get(answer, "ready_ms")));
    } else {
        printf("%s: fsync'd %.1f MB of warm-cache image(s) in %.0f ms\n", name,
               json_number_value(json_object_get(answer, "bytes")) / 1048576.0,
               json_number_value(json_object_get(answer, "elapsed_ms")));
    }
    return CLI_EXIT_OK;
}
