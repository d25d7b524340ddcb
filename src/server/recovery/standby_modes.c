/* The standby modes a service's `standby.mode` may name (standby_mode.h).  A
 * new one is a standby_NAME.c defining standby_NAME_ops, and its row here;
 * the configuration's messages find it through the table. */
#include <stdio.h>
#include <string.h>

#include "server/recovery/standby_mode.h"

static const struct standby_mode_ops *const modes[] = {
    &standby_warm_ops,
    &standby_cold_ops,
    &standby_warm_vm_ops,
    &standby_cold_vm_ops,
};
#define N_MODES (sizeof(modes) / sizeof(modes[0]))

const struct standby_mode_ops *standby_mode_find(const char *name)
{
    for (size_t i = 0; name && i < N_MODES; i++)
        if (strcmp(modes[i]->name, name) == 0)
            return modes[i];
    return NULL;
}

const char *standby_modes_allowed(char *buf, size_t size, enum standby_modes_which which)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_MODES && used < size; i++) {
        if ((which == STANDBY_MODES_CONTAINER && !modes[i]->container) ||
            (which == STANDBY_MODES_VM && modes[i]->container))
            continue;
        used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", modes[i]->name);
    }
    return buf;
}
