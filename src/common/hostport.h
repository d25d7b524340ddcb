#ifndef VCR_COMMON_HOSTPORT_H
#define VCR_COMMON_HOSTPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/* Parse "HOST:PORT" (IPv4 dotted quad or name, port 1..65535).  A host made of
 * digits and dots only must be a valid dotted quad.  *host is allocated. */
int vcr_parse_host_port(const char *s, char **host, uint16_t *port, vcr_error_t *err);

/* Whether name can be a certificate's name (`vcr pki`, tls_server_name): a DNS
 * name of a-z, 0-9 and '-' labels (1..63 characters, no leading or trailing
 * '-') joined by '.', at most 253 characters, or an IPv4 address. */
bool vcr_cert_name_is_valid(const char *name);

#endif
