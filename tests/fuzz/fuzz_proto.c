/* libFuzzer harness for the frame decoder: the first input byte picks where
 * the rest is split into two feeds, so that frame boundaries falling inside a
 * header or a payload are exercised.  Every message the decoder accepts must
 * encode again and decode to an equal object.  The top-level meson.build
 * instruments the whole fuzz build, proto_dep included. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "proto/proto.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Same hashing on every run, so that a crash reproduces. */
    json_object_seed(1);
    return 0;
}

static int collect_again(json_t *msg, void *opaque)
{
    json_t **out = opaque;
    *out = json_incref(msg);
    return 0;
}

static int check_round_trip(json_t *msg, void *opaque)
{
    (void)opaque;
    if (proto_msg_type(msg) == NULL)
        abort();
    char *frame = NULL;
    size_t len = 0;
    vcr_error_t err = NULL;
    /* Re-encoding may exceed the limit (reals print longer than "1e5"); that is
     * a refusal, not a bug. */
    if (proto_encode(msg, &frame, &len, &err) < 0) {
        vcr_error_release(&err);
        return 0;
    }
    struct proto_decoder *d = proto_decoder_new();
    json_t *again = NULL;
    if (d == NULL || proto_decoder_feed(d, frame, len, collect_again, &again, &err) < 0 ||
        again == NULL || !json_equal(msg, again))
        abort();
    json_decref(again);
    proto_decoder_free(d);
    free(frame);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t rest = size - 1;
    size_t split = rest * data[0] / 255;
    struct proto_decoder *d = proto_decoder_new();
    vcr_error_t err = NULL;
    if (proto_decoder_feed(d, data + 1, split, check_round_trip, NULL, &err) == 0)
        proto_decoder_feed(d, data + 1 + split, rest - split, check_round_trip, NULL, &err);
    vcr_error_release(&err);
    proto_decoder_free(d);
    return 0;
}
