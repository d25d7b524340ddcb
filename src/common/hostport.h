#ifndef VCR_COMMON_HOSTPORT_H
#define VCR_COMMON_HOSTPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"

/* Parse "HOST:PORT" (IPv4 dotted quad or name, port 1..65535) or "[IPV6]:PORT"
 * (RFC 3986's brackets).  A host made of digits and dots only must be a valid
 * dotted quad.  *host is allocated, without the brackets. */
int vcr_parse_host_port(const char *s, char **host, uint16_t *port, vcr_error_t *err);

/* Whether name can be a certificate's name (`vcr pki`, tls_server_name): a DNS
 * name of a-z, 0-9 and '-' labels (1..63 characters, no leading or trailing
 * '-') joined by '.', at most 253 characters, or an IPv4 or IPv6 address. */
bool vcr_cert_name_is_valid(const char *name);

/* AF_INET or AF_INET6 for an address literal of that family, 0 for anything else. */
int vcr_ip_family(const char *s);

/* The socket address of an IPv4 or IPv6 literal and port; -1 (nothing set but
 * *ss zeroed) when address is neither. */
int vcr_sockaddr_of(const char *address, uint16_t port, struct sockaddr_storage *ss,
                    socklen_t *len);

/* "host:port", or "[host]:port" for an IPv6 address, into buf (returned). */
const char *vcr_host_port_format(const char *host, uint16_t port, char *buf, size_t size);

#endif
