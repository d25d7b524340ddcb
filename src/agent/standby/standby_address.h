/* Address takeover inside a standby VM (docs/recovery.md, "Address takeover"). */
#ifndef VCR_AGENT_STANDBY_ADDRESS_H
#define VCR_AGENT_STANDBY_ADDRESS_H

#include <stdbool.h>

#include "common/err.h"

/* Enters the network namespace of process pid (/proc/PID/ns/net) and returns a
 * descriptor of the caller's own, to go back with setns(fd, CLONE_NEWNET) and
 * close; -1 with err (still in the caller's namespace) on failure. */
int standby_netns_enter(int pid, vcr_error_t *err);

/* Adds (take) or removes address as a host address (IPv4: /32, IPv6: /128,
 * usable at once: no duplicate address detection, the primary is fenced) on
 * ifname inside the network namespace of process pid (/proc/PID/ns/net; the
 * caller's own namespace is restored).  Adding an address that is there, or
 * removing one that is not, succeeds. */
int standby_address_apply(int pid, const char *ifname, const char *address, bool take,
                          vcr_error_t *err);

/* The ICMPv6 unsolicited neighbour advertisement for address6 (RFC 4861,
 * sections 4.4 and 7.2.6): Override set, Router and Solicited clear, the
 * target link-layer address option with mac.  The checksum is left 0: the
 * kernel computes it on a raw ICMPv6 socket. */
#define STANDBY_NA_LEN 32
int standby_na_message(const unsigned char mac[6], const char *address6,
                       unsigned char msg[STANDBY_NA_LEN], vcr_error_t *err);

/* Sends that advertisement, from address6 to all nodes (ff02::1) on ifname,
 * hop limit 255 (a receiver drops any other), inside the network namespace of
 * process pid: the IPv6 side of the gratuitous ARP.  A neighbour that holds an
 * entry for address6 replaces its link-layer address with ifname's. */
int standby_send_unsolicited_na(int pid, const char *ifname, const char *address6,
                                vcr_error_t *err);

#endif
