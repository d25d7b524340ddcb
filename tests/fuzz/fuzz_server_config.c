/* libFuzzer harness for the server's YAML configuration (server_config.c,
 * services.c, images.c): any text is either a configuration or an error that
 * says why, never a crash, a leak or a sanitizer report. */
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/server_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vcr_error_t err = NULL;
    struct server_config *cfg = server_config_parse((const char *)data, size, "fuzz.yaml", &err);
    if (cfg == NULL && err == NULL)
        __builtin_trap(); /* failure must say why */
    server_config_free(cfg);
    vcr_error_release(&err);
    return 0;
}
