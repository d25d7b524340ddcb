/* libFuzzer harness for the standby agent's container orders (standby_spec.c,
 * standby_image.c, standby_migrate.c): the input is an order's JSON, as the
 * server (or whoever reaches the agent) sends it, read as a container_create
 * and as a chunk order (container_image_read/write, data_read/write).  A spec that is accepted
 * must yield paths under the container directory and an LXC configuration
 * whose values hold no newline (a newline would add configuration items);
 * an image's URL and command are parsed and rendered as the agent does. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby/standby.h"
#include "agent/standby_migrate.h"
#include "common/err.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1);
    return 0;
}

/* A chunk order's members: offset, length, last, bytes, sha256 and the
 * strict base64 of `data`.  An accepted chunk holds at most
 * STANDBY_CHUNK_MAX bytes and encodes back to the very text it came from (the
 * decoder takes one spelling per byte string); a refusal says why. */
static void chunk_order(json_t *msg)
{
    vcr_error_t err = NULL;
    struct standby_image_write w;
    if (standby_image_write_from_json(msg, &w, &err) == 0) {
        if (w.len > STANDBY_CHUNK_MAX || (w.len && w.data == NULL))
            __builtin_trap();
        char *again = standby_base64_encode(w.data, w.len);
        const char *text = json_string_value(json_object_get(msg, "data"));
        if (again && text && strcmp(again, text) != 0)
            __builtin_trap();
        free(again);
        standby_image_write_release(&w);
    } else if (err == NULL || vcr_error_msg(err)[0] == '\0') {
        __builtin_trap();
    }
    vcr_error_release(&err);
    struct standby_image_read rq;
    if (standby_image_read_from_json(msg, &rq, &err) == 0 &&
        (rq.length < 1 || rq.length > STANDBY_CHUNK_MAX))
        __builtin_trap();
    vcr_error_release(&err);
    const char *text = json_string_value(json_object_get(msg, "data"));
    if (text) {
        unsigned char *out = NULL;
        size_t len = 0;
        if (standby_base64_decode(text, &out, &len, &err) == 0 && len > strlen(text) / 4 * 3)
            __builtin_trap();
        free(out);
        vcr_error_release(&err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *msg = json_loadb((const char *)data, size, 0, NULL);
    if (msg == NULL)
        return 0;
    chunk_order(msg);
    struct standby_ct_spec spec;
    vcr_error_t err = NULL;
    if (standby_ct_spec_from_json(msg, &spec, &err) < 0) {
        if (err == NULL)
            __builtin_trap();
        goto out;
    }
    if (!standby_valid_name(spec.name))
        __builtin_trap();
    struct standby_ct_paths paths;
    if (standby_ct_paths("/var/lib/lxc", STANDBY_LIB_DIR, &spec, &paths, &err) == 0) {
        /* One directory right under lxcpath: never lxcpath itself or its parent. */
        const char *leaf = paths.dir + 13;
        if (strncmp(paths.dir, "/var/lib/lxc/", 13) != 0 || strchr(leaf, '/') != NULL ||
            strcmp(leaf, ".") == 0 || strcmp(leaf, "..") == 0 || leaf[0] == '\0')
            __builtin_trap();
        struct standby_cfg_item items[STANDBY_CFG_MAX];
        size_t n = standby_ct_config(&spec, &paths, items);
        if (n > STANDBY_CFG_MAX)
            __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (strchr(items[i].value, '\n') || strchr(items[i].value, '\r'))
                __builtin_trap();
    }
    vcr_error_release(&err);
    if (spec.has_image) {
        char host[64], path[256], script[512];
        uint16_t port;
        if (standby_url_parse(spec.image.url, host, sizeof(host), &port, path, sizeof(path),
                              &err) == 0 &&
            path[0] != '/')
            __builtin_trap();
        vcr_error_release(&err);
        if (spec.image.cmd[0])
            (void)standby_image_init_script(spec.image.cmd, script, sizeof(script));
    }
out:
    vcr_error_release(&err);
    json_decref(msg);
    return 0;
}
