/* libFuzzer harness for the BIND key file parser (src/dns/dns_keyfile.c): any
 * input is either a key or an error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "dns/dns_update.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_tsig_key key;
    memset(&key, 0, sizeof(key));
    vcr_error_t err = NULL;
    if (dns_tsig_key_parse((const char *)data, size, "fuzz", &key, &err) == 0) {
        if (key.name == NULL || key.secret == NULL)
            __builtin_trap(); /* success must yield a whole key */
        dns_tsig_key_clear(&key);
    } else if (err == NULL) {
        __builtin_trap(); /* failure must say why */
    }
    vcr_error_release(&err);
    return 0;
}
