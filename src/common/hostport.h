#ifndef VCR_COMMON_HOSTPORT_H
#define VCR_COMMON_HOSTPORT_H

#include <stdint.h>

#include "common/err.h"

/* Parse "HOST:PORT" (IPv4 dotted quad or name, port 1..65535).  A host made of
 * digits and dots only must be a valid dotted quad.  *host is allocated. */
int vcr_parse_host_port(const char *s, char **host, uint16_t *port, vcr_error_t *err);

#endif
