/* A look at a DNS message before ldns parses it (dns_update_priv.h). */
#include <stdint.h>

#include "dns/dns_update_priv.h"

#define DNS_HEADER   12
#define RR_TYPE_TSIG 250

/* Skips the name at *off (labels, or a compression pointer that ends it). */
static int skip_name(const uint8_t *buf, size_t len, size_t *off)
{
    for (unsigned labels = 0; labels < 128; labels++) {
        if (*off >= len)
            return -1;
        uint8_t l = buf[*off];
        if ((l & 0xc0) == 0xc0) {
            if (*off + 2 > len)
                return -1;
            *off += 2;
            return 0;
        }
        if (l & 0xc0)
            return -1; /* the reserved label types */
        *off += 1u + l;
        if (l == 0)
            return 0;
    }
    return -1;
}

int dns_wire_tsig_count(const uint8_t *buf, size_t len)
{
    if (len < DNS_HEADER)
        return -1;
    unsigned qd = (unsigned)buf[4] << 8 | buf[5];
    unsigned rrs = ((unsigned)buf[6] << 8 | buf[7]) + ((unsigned)buf[8] << 8 | buf[9]) +
                   ((unsigned)buf[10] << 8 | buf[11]);
    size_t off = DNS_HEADER;
    for (unsigned i = 0; i < qd; i++) {
        if (skip_name(buf, len, &off) < 0 || off + 4 > len)
            return -1;
        off += 4;
    }
    int tsigs = 0;
    for (unsigned i = 0; i < rrs; i++) {
        if (skip_name(buf, len, &off) < 0 || off + 10 > len)
            return -1;
        unsigned type = (unsigned)buf[off] << 8 | buf[off + 1];
        size_t rdlen = (size_t)buf[off + 8] << 8 | buf[off + 9];
        off += 10;
        if (off + rdlen > len)
            return -1;
        off += rdlen;
        if (type == RR_TYPE_TSIG)
            tsigs++;
    }
    return tsigs;
}
