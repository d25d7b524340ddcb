/* libFuzzer harness for the standby agent's HTTP response head parser
 * (src/agent/standby/standby_image.c): the bytes come from the network; any input is
 * a status and a length or an error, never a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby/standby.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *head = malloc(size + 1);
    if (head == NULL)
        return 0;
    memcpy(head, data, size);
    head[size] = '\0';
    struct standby_http_head h = {0, 0};
    vcr_error_t err = NULL;
    if (standby_http_parse_head(head, &h, &err) == 0) {
        if (h.status < 100 || h.status > 999 || h.length < -1)
            __builtin_trap(); /* success must yield a status and a length */
    } else if (err == NULL) {
        __builtin_trap(); /* failure must say why */
    }
    vcr_error_release(&err);
    free(head);
    return 0;
}
