/* Address takeover inside a standby VM (docs/recovery.md, "Address takeover"). */
#ifndef VCR_AGENT_STANDBY_ADDRESS_H
#define VCR_AGENT_STANDBY_ADDRESS_H

#include <stdbool.h>

#include "common/err.h"

/* Adds (take) or removes address as a host address (/32) on ifname inside the
 * network namespace of process pid (/proc/PID/ns/net; the caller's own
 * namespace is restored).  Adding an address that is there, or removing one
 * that is not, succeeds. */
int standby_address_apply(int pid, const char *ifname, const char *address, bool take,
                          vcr_error_t *err);

#endif
