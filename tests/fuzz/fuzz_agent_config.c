/* libFuzzer harness for the agent's YAML configuration (src/config): any text
 * is either a configuration or an error that says why, never a crash, a leak
 * or a sanitizer report.  The loader reads a file: each input is written to
 * one under $TMPDIR first. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/err.h"
#include "config/agent_config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/vcr-fuzz-agent-config-%d.yaml", tmp ? tmp : "/tmp",
             (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    ssize_t n = write(fd, data, size);
    close(fd);
    if (n != (ssize_t)size)
        return 0;
    vcr_error_t err = NULL;
    struct vcr_agent_config *cfg = vcr_agent_config_load(path, &err);
    if (cfg == NULL && err == NULL)
        __builtin_trap(); /* failure must say why */
    vcr_agent_config_free(cfg);
    vcr_error_release(&err);
    return 0;
}
