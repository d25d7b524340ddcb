/* The inventory's hash indexes of hosts and VMs by name (inventory.h says
 * why), and the lookups that use them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/inventory.h"
#include "server/inventory_priv.h"

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct index_slot *table_find(const struct index_table *t, const char *name)
{
    if (t->slots == NULL)
        return NULL;
    for (size_t i = name_hash(name) & t->mask;; i = (i + 1) & t->mask) {
        if (t->slots[i].name == NULL)
            return NULL;
        if (strcmp(t->slots[i].name, name) == 0)
            return &t->slots[i];
    }
}

/* The first entry of a name wins, as the linear searches' first match did. */
static void table_put(struct index_table *t, const char *name, struct inv_host *h,
                      struct inv_vm *vm)
{
    size_t i = name_hash(name) & t->mask;
    for (; t->slots[i].name; i = (i + 1) & t->mask)
        if (strcmp(t->slots[i].name, name) == 0)
            return;
    t->slots[i] = (struct index_slot){name, h, vm};
}

static int table_reset(struct index_table *t, size_t entries)
{
    size_t size = 16;
    while (size < 2 * entries)
        size *= 2;
    free(t->slots);
    t->slots = calloc(size, sizeof(*t->slots));
    t->mask = t->slots ? size - 1 : 0;
    return t->slots ? 0 : -1;
}

void index_stale(const struct inventory *inv)
{
    inv->index->stale = true;
}

/* Rebuilt when stale; false when memory ran out (the caller searches). */
static bool index_fresh(const struct inventory *inv)
{
    struct inv_index *x = inv->index;
    if (!x->stale)
        return true;
    size_t n_vms = 0;
    for (size_t i = 0; i < inv->n_hosts; i++)
        n_vms += inv->hosts[i]->n_vms;
    if (table_reset(&x->hosts, inv->n_hosts) < 0 || table_reset(&x->vms, n_vms) < 0)
        return false;
    for (size_t i = 0; i < inv->n_hosts; i++) {
        struct inv_host *h = inv->hosts[i];
        table_put(&x->hosts, h->name, h, NULL);
        for (size_t j = 0; j < h->n_vms; j++)
            table_put(&x->vms, h->vms[j]->name, h, h->vms[j]);
    }
    x->stale = false;
    return true;
}

struct inv_host *inventory_find_host(const struct inventory *inv, const char *name)
{
    if (name && index_fresh(inv)) {
        struct index_slot *slot = table_find(&inv->index->hosts, name);
        return slot ? slot->host : NULL;
    }
    for (size_t i = 0; name && i < inv->n_hosts; i++)
        if (strcmp(inv->hosts[i]->name, name) == 0)
            return inv->hosts[i];
    return NULL;
}

struct inv_vm *inventory_find_vm(const struct inventory *inv, const char *name,
                                 struct inv_host **host)
{
    if (name && index_fresh(inv)) {
        struct index_slot *slot = table_find(&inv->index->vms, name);
        if (slot && host)
            *host = slot->host;
        return slot ? slot->vm : NULL;
    }
    for (size_t i = 0; name && i < inv->n_hosts; i++) {
        struct inv_vm *vm = host_find_vm(inv->hosts[i], name);
        if (vm) {
            if (host)
                *host = inv->hosts[i];
            return vm;
        }
    }
    return NULL;
}
