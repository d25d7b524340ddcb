/* Internals of the inventory shared by inventory.c and its hash indexes
 * (inventory_index.c). */
#ifndef VCR_SERVER_INVENTORY_PRIV_H
#define VCR_SERVER_INVENTORY_PRIV_H

#include <stdbool.h>
#include <stddef.h>

#include "server/inventory.h"

/* Open addressing, linear probing; a slot's name is borrowed from its host
 * or VM, so the tables are dropped (stale) before any of those are freed or
 * replaced: every change of inv->hosts or of a host's VM list calls
 * index_stale(). */
struct index_slot {
    const char *name;
    struct inv_host *host;
    struct inv_vm *vm;
};

struct index_table {
    struct index_slot *slots;
    size_t mask; /* size - 1, a power of two; no slots: mask 0 and slots NULL */
};

struct inv_index {
    bool stale;
    struct index_table hosts, vms;
};

/* inventory_index.c: the indexes are rebuilt at the next lookup. */
void index_stale(const struct inventory *inv);

/* inventory.c: h's VM of that name, or NULL (a linear search). */
struct inv_vm *host_find_vm(const struct inv_host *h, const char *name);

#endif
