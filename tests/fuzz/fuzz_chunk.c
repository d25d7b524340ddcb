/* libFuzzer harness for the chunk orders' members (standby_migrate.c:
 * container_image_read/write, data_read/write, volume_snapshot_*): offset,
 * length, last, bytes, sha256 and the strict base64 decoder of `data`.  The
 * input is the order's JSON.  An accepted chunk holds at most
 * STANDBY_CHUNK_MAX bytes and encodes back to the very text it came from
 * (the decoder takes one spelling per byte string); a refusal says why. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *msg = json_loadb((const char *)data, size, 0, NULL);
    if (msg == NULL)
        return 0;
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
    /* The decoder alone, on the text of any string member `data`. */
    const char *text = json_string_value(json_object_get(msg, "data"));
    if (text) {
        unsigned char *out = NULL;
        size_t len = 0;
        if (standby_base64_decode(text, &out, &len, &err) == 0 && len > strlen(text) / 4 * 3)
            __builtin_trap();
        free(out);
        vcr_error_release(&err);
    }
    json_decref(msg);
    return 0;
}
