/* libFuzzer harness for the nftables lock filter (standby_nft.c): the ruleset
 * image comes from another standby VM, so its bytes are untrusted.  Nothing
 * may crash or trip a sanitizer; the result is never longer than the input,
 * and filtering it again changes nothing (no lock table is left). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby/standby.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact copy: the filter must not read a byte past the text. */
    char *text = malloc(size ? size : 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    size_t n = standby_nft_drop_lock_tables(text, size);
    if (n > size)
        __builtin_trap();
    char *again = malloc(n ? n : 1);
    if (again == NULL) {
        free(text);
        return 0;
    }
    memcpy(again, text, n);
    /* Whole lines are kept or dropped, so no lock table line is left. */
    if (standby_nft_drop_lock_tables(again, n) != n || memcmp(again, text, n) != 0)
        __builtin_trap();
    free(again);
    free(text);
    return 0;
}
