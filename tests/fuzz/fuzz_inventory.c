/* libFuzzer harness for the server's handlers of agent messages (inventory.c):
 * the input is JSON, an array of messages; each `hello`, `vm_event` and
 * `sample` is applied as the server would (the host of the last accepted
 * hello sends the others), then the status is rendered and hosts are expired.
 * Nothing may crash, leak or trip a sanitizer, whatever the members hold. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "proto/proto.h"
#include "server/inventory.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1);
    return 0;
}

static void expired(struct inv_host *h, int64_t silent_ms, void *opaque)
{
    (void)h;
    (void)silent_ms;
    (void)opaque;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *list = json_loadb((const char *)data, size, 0, NULL);
    if (!json_is_array(list)) {
        json_decref(list);
        return 0;
    }
    struct inventory *inv = inventory_new();
    char host[80] = "";
    int64_t now = 1000;
    size_t i;
    json_t *msg;
    json_array_foreach(list, i, msg)
    {
        vcr_error_t err = NULL;
        const char *type = json_string_value(json_object_get(msg, "type"));
        now += 100;
        if (type && strcmp(type, "hello") == 0) {
            bool came_up = false;
            struct inv_host *h = inventory_apply_hello(inv, msg, now, &came_up, &err);
            if (h && strlen(h->name) < sizeof(host))
                memcpy(host, h->name, strlen(h->name) + 1);
        } else if (type && strcmp(type, "vm_event") == 0 && host[0]) {
            enum inv_restart_change change;
            inventory_apply_vm_event_at(inv, host, msg, now, &change, &err);
        } else if (type && strcmp(type, "sample") == 0 && host[0]) {
            inventory_apply_sample(inv, host, msg, &err);
        }
        vcr_error_release(&err);
    }
    json_decref(inventory_status_json(inv, now, 1700000000000));
    inventory_expire_hosts(inv, now + 100000, 3500, expired, NULL);
    json_decref(inventory_status_json(inv, now + 100000, 1700000100000));
    inventory_free(inv);
    json_decref(list);
    return 0;
}
