/* libFuzzer harness for the migration archives' check (standby_archive.c):
 * pre.tar and final.tar come from another standby VM, so their bytes are
 * untrusted.  Byte 0 picks the policy (pre or final), the rest is the
 * archive.  Nothing may crash or trip a sanitizer; a refusal always says why,
 * and an accepted archive holds no member named `..` or `/...`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/standby/standby_archive.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct standby_archive_policy *policy =
        data[0] & 1 ? &standby_archive_final : &standby_archive_pre;
    /* An exact copy: the check must not read a byte past the archive. */
    unsigned char *copy = malloc(size - 1 ? size - 1 : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    vcr_error_t err = NULL;
    int rc = standby_archive_check_mem(copy, size - 1, policy, &err);
    if ((rc < 0) != (err != NULL) || (rc < 0 && vcr_error_msg(err)[0] == '\0'))
        __builtin_trap();
    vcr_error_release(&err);
    free(copy);
    return 0;
}
