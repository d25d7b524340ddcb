/* libFuzzer harness for the agent's YAML configuration (src/config): any text
 * is either a configuration or an error that says why, never a crash, a leak
 * or a sanitizer report.  The text is parsed from memory
 * (vcr_agent_config_parse, what vcr_agent_config_load calls once it has read
 * the file): writing each input to a file first cost more than the parse
 * (bench/results/fuzz.md).  Relative paths are taken from $TMPDIR, as they
 * were from the file's directory. */
#include <stdint.h>
#include <stdlib.h>

#include "common/err.h"
#include "config/agent_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    vcr_error_t err = NULL;
    struct vcr_agent_config *cfg =
        vcr_agent_config_parse((const char *)data, size, "fuzz.yaml", tmp ? tmp : "/tmp", &err);
    if (cfg == NULL && err == NULL)
        __builtin_trap(); /* failure must say why */
    vcr_agent_config_free(cfg);
    vcr_error_release(&err);
    return 0;
}
