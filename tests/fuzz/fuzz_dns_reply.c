/* libFuzzer harness for the DNS replies the server believes or discards
 * (dns_update.c: an UPDATE's reply; resolve.c: the A query of the client
 * confirmation): whoever can reach the server's UDP port can send them.
 * The input's first two bytes are overwritten with the id in flight half of
 * the time, so that the parsing behind the id check is reached.  Success
 * must never be declared for a reply that is not signed with the key. */
#include <ldns/ldns.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#include "dns/dns_update_priv.h"
#include "dns/resolve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY_NAME   "vcr-update"
#define KEY_SECRET "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
#define ID         0x4242

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t *buf = malloc(size);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1;
    if ((data[0] & 1) && len >= 2) {
        buf[0] = ID >> 8;
        buf[1] = ID & 0xff;
    }
    ldns_rdf *mac = ldns_rdf_new_frm_str(LDNS_RDF_TYPE_B64, "AAECAwQFBgcICQoLDA0ODw==");
    struct dns_reply_judgement j;
    dns_update_judge_reply(ID, KEY_NAME, KEY_SECRET,
                           (data[0] & 2) ? "hmac-sha512." : "hmac-sha256.", mac, buf, len, &j);
    if (j.kind == DNS_REPLY_DONE && j.rcode != 0)
        __builtin_trap();
    if (j.kind == DNS_REPLY_IGNORED && j.rcode != -1)
        __builtin_trap();
    char *address = NULL;
    char why[200] = "";
    /* data[0]'s bit 2 picks the family asked for: A or AAAA. */
    if (resolve_parse_answer(buf, len, ID, (data[0] & 4) ? AF_INET6 : AF_INET, "127.0.0.1:53",
                             "web1.vcr.lab", &address, why, sizeof(why)) == 1) {
        if (address == NULL && why[0] == '\0')
            __builtin_trap(); /* a failure says why */
        free(address);
    }
    ldns_rdf_deep_free(mac);
    free(buf);
    return 0;
}
