/* libFuzzer harness for the QMP parser.  The input is fed in two reads, split
 * at data[0] % size, so that messages are cut anywhere; then in one read.
 * Both must deliver the same messages: a cut object taken for an invalid one
 * would lose messages in the split feed. */
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "qmp/qmp.h"

/* Small enough that the fuzzer reaches the size limit. */
#define FUZZ_MAX_MESSAGE 4096

struct seen {
    size_t count;
    uint64_t kinds; /* the sequence of kinds, folded */
};

static void check_message(const struct qmp_msg *m, void *opaque)
{
    struct seen *seen = opaque;
    struct qmp_msg again;
    vcr_error_t err = NULL;
    if (qmp_msg_classify(m->root, &again, &err) < 0 || again.kind != m->kind)
        __builtin_trap();
    if ((m->kind == QMP_MSG_ERROR && (m->eclass == NULL || m->desc == NULL)) ||
        (m->kind == QMP_MSG_EVENT && m->event == NULL))
        __builtin_trap();
    seen->count++;
    seen->kinds = seen->kinds * 5 + (uint64_t)m->kind + 1;
}

static struct seen feed(const uint8_t *data, size_t size, size_t split)
{
    struct seen seen = {0};
    struct qmp_parser *p = qmp_parser_new(FUZZ_MAX_MESSAGE);
    if (p == NULL)
        __builtin_trap();
    vcr_error_t err = NULL;
    if (qmp_parser_feed(p, (const char *)data, split, check_message, &seen, &err) == 0)
        qmp_parser_feed(p, (const char *)data + split, size - split, check_message, &seen, &err);
    vcr_error_release(&err);
    qmp_parser_free(p);
    return seen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct seen split = feed(data, size, data[0] % size);
    struct seen whole = feed(data, size, size);
    if (split.count != whole.count || split.kinds != whole.kinds)
        __builtin_trap();
    return 0;
}
