/* vcr image prune HOST: drop the container images a standby VM has cached but
 * neither a configured service nor one of its containers uses. */
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
    "Usage: vcr image prune HOST [--json]\n"
    "\n"
    "Order the standby agent of HOST (a standby VM) to prune its image cache\n"
    "(/var/lib/vcr/images; docs/agent.md, \"Container images\"): every cached\n"
    "image (tarball and unpacked rootfs) is removed unless a service of the\n"
    "server's configuration names it (standby.image), a container of that VM\n"
    "was made from it, or it is being downloaded.  Prints what was removed and\n"
    "what was kept, and why (POST /v1/hosts/HOST/images/prune).\n"
    "\n"
    "  -j, --json   print the server's JSON answer\n"
    "  -h, --help   show this help\n";

int cli_verb_image(struct cli_context *ctx, int argc, char **argv)
{
    bool json = false;
    int done = cli_parse_json_help("image", usage, argc, argv, &json);
    if (done >= 0)
        return done;
    if (argc - optind != 2 || strcmp(argv[optind], "prune") != 0) {
        fprintf(stderr, "vcr image: expected `prune HOST`; see `vcr image --help`\n");
        return CLI_EXIT_USAGE;
    }
    const char *host = argv[optind + 1];
    cleanup_free char *encoded = evhttp_uriencode(host, -1, 0);
    cleanup_free char *path = NULL;
    if (encoded == NULL || asprintf(&path, "/v1/hosts/%s/images/prune", encoded) < 0) {
        fprintf(stderr, "vcr image: out of memory\n");
        return CLI_EXIT_FAILURE;
    }
    cleanup_error vcr_error_t err = NULL;
    /* Removing an unpacked rootfs in a TCG guest takes seconds. */
    cleanup_json json_t *answer = cli_http_request(ctx->server, "POST", path, 150, &err);
    if (answer == NULL) {
        vcr_error_report(&err, stderr, "vcr image prune");
        return CLI_EXIT_FAILURE;
    }
    if (json) {
        cli_print_json(answer);
        return CLI_EXIT_OK;
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(answer, "removed"), i, e)
    {
        printf("removed %s (%lld bytes)\n", json_string_value(json_object_get(e, "sha256")),
               (long long)json_integer_value(json_object_get(e, "bytes")));
    }
    json_array_foreach(json_object_get(answer, "kept"), i, e)
    {
        printf("kept    %s (%s)\n", json_string_value(json_object_get(e, "sha256")),
               json_string_value(json_object_get(e, "why")));
    }
    printf("%s: %zu image(s) removed, %lld bytes freed, %zu kept (%lld ms)\n", host,
           json_array_size(json_object_get(answer, "removed")),
           (long long)json_integer_value(json_object_get(answer, "freed_bytes")),
           json_array_size(json_object_get(answer, "kept")),
           (long long)json_integer_value(json_object_get(answer, "ms")));
    return CLI_EXIT_OK;
}
