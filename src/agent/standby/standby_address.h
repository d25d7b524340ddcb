/* Address takeover inside a standby VM (docs/recovery.md, "Address takeover"). */
#ifndef VCR_AGENT_STANDBY_ADDRESS_H
#define VCR_AGENT_STANDBY_ADDRESS_H

#include <stdbool.h>

#include "common/err.h"

/* Enters the network namespace of process pid (/proc/PID/ns/net) and returns a
 * descriptor of the caller's own, to go back with setns(fd, CLONE_NEWNET) and
 * close; -1 with err (still in the caller's namespace) on failure. */
int standby_netns_enter(int pid, vcr_error_t *err);

/* Adds (take) or removes address as a host address (/32) on ifname inside the
 * network namespace of process pid (/proc/PID/ns/net; the caller's own
 * namespace is restored).  Adding an address that is there, or removing one
 * that is not, succeeds. */
int standby_address_apply(int pid, const char *ifname, const char *address, bool take,
                          vcr_error_t *err);

#endif
