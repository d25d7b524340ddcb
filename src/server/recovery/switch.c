/* The ways of the traffic switch (switch.h) and their order. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/recovery/recovery_priv.h"
#include "server/recovery/switch.h"

/* The address first: it reaches clients that hold it at once, while a DNS
 * change waits out their resolvers' caches. */
static const struct switch_ops *const switch_ways[] = {&switch_address_ops, &switch_dns_ops,
                                                       &switch_hook_ops};
#define N_WAYS (sizeof(switch_ways) / sizeof(switch_ways[0]))

const struct switch_ops *switch_next(const struct svc *s, int after)
{
    for (size_t i = 0; i < N_WAYS; i++)
        if (switch_ways[i]->selected(s) && switch_ways[i]->done_phase > after)
            return switch_ways[i];
    return NULL;
}

void switch_cancel(struct svc *s)
{
    if (s->switch_way && s->switch_way->cancel)
        s->switch_way->cancel(s);
    s->switch_way = NULL;
}

static void give_back_next(struct svc *s, const char *error);

static void on_given_back(struct svc *s, const char *error)
{
    s->switch_way = NULL;
    give_back_next(s, error);
}

/* Runs the give_back of the next way from s->switch_back_next on. */
static void give_back_next(struct svc *s, const char *error)
{
    while (error == NULL && s->switch_back_next < N_WAYS) {
        const struct switch_ops *way = switch_ways[s->switch_back_next++];
        if (way->give_back == NULL || !way->selected(s))
            continue;
        s->switch_way = way;
        if (way->give_back(s, on_given_back) == 0)
            return;
        s->switch_way = NULL;
        error = s->error;
    }
    s->switch_back_done(s, error);
}

void switch_give_back(struct svc *s, switch_released_fn done)
{
    s->switch_back_done = done;
    s->switch_back_next = 0;
    give_back_next(s, NULL);
}

/* --- dns --- */

static bool dns_selected(const struct svc *s)
{
    return s->cfg->takeover & SERVICES_TAKEOVER_DNS;
}

static int dns_take(struct svc *s)
{
    s->step = STEP_DNS;
    return recovery_dns_switch(s);
}

const struct switch_ops switch_dns_ops = {
    .name = "dns",
    .selected = dns_selected,
    .done_phase = PH_DNS_UPDATED,
    .take = dns_take,
};

/* --- address --- */

#define ADDRESS_ORDER_MS 30000

static bool address_selected(const struct svc *s)
{
    return s->cfg->takeover & SERVICES_TAKEOVER_ADDRESS;
}

bool switch_address_held(const struct svc *s)
{
    return address_selected(s) && s->on_standby;
}

static void on_address_taken(enum order_outcome outcome, const char *message, json_t *reply,
                             void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    s->order_pending = false;
    if (s->rc->stopping || s->step != STEP_ADDRESS)
        return;
    /* A take that failed or was not answered may have added the address
     * (the gratuitous ARP failed, or the reply was lost): the service counts
     * as served by the container, so that its primary stays fenced and only
     * failback, which releases the address first, brings it back. */
    s->on_standby = true;
    if (outcome != ORDER_DONE) {
        recovery_fail(s, "address takeover of %s by container %s on %s: %s",
                      s->cfg->primary.address, s->cfg->standby.container, s->target_host,
                      message ? message : "failed");
        return;
    }
    json_t *detail = json_pack("{s:s, s:s, s:s, s:I}", "address", s->cfg->primary.address,
                               "container", s->cfg->standby.container, "host", s->target_host,
                               "order_ms", (json_int_t)(vcr_mono_ms() - s->step_started));
    if (detail && s->cfg->primary.address6)
        json_object_set_new(detail, "address6", json_string(s->cfg->primary.address6));
    recovery_phase_done(s, PH_ADDRESS_TAKEN, detail);
}

static int address_order(struct svc *s, bool take, agents_order_reply_cb cb, void *opaque)
{
    cleanup_json json_t *m = json_pack("{s:s, s:s, s:b}", "name", s->cfg->standby.container,
                                       "address", s->cfg->primary.address, "take", take);
    /* A dual-stack primary's IPv6 address moves with its IPv4 one, in the same
     * order: the container holds both or, after a release, neither. */
    if (m && s->cfg->primary.address6)
        json_object_set_new(m, "address6", json_string(s->cfg->primary.address6));
    cleanup_error vcr_error_t err = NULL;
    if (agents_send_order_with(s->rc->agents, recovery_container_host(s), "container_address",
                               s->cfg->standby.container, m, ADDRESS_ORDER_MS, cb, opaque,
                               &err) < 0) {
        snprintf(s->error, sizeof(s->error), "container_address: %s", vcr_error_msg(err));
        return -1;
    }
    s->order_pending = true;
    return 0;
}

static int address_take(struct svc *s)
{
    /* Never before the primary is known dead: two hosts answering ARP for one
     * address would split its clients (the recovery's phases are in order;
     * this guards against a caller that skips them). */
    if (s->phase < PH_FENCED) {
        snprintf(s->error, sizeof(s->error),
                 "address takeover of %s refused: primary VM %s is not fenced",
                 s->cfg->primary.address, s->cfg->primary.vm);
        return -1;
    }
    s->step = STEP_ADDRESS;
    s->step_started = vcr_mono_ms();
    return address_order(s, true, on_address_taken, s);
}

const struct switch_ops switch_address_ops = {
    .name = "address",
    .selected = address_selected,
    .done_phase = PH_ADDRESS_TAKEN,
    .take = address_take,
};

static void on_address_released(enum order_outcome outcome, const char *message, json_t *reply,
                                void *opaque)
{
    struct svc *s = opaque;
    (void)reply;
    s->order_pending = false;
    if (s->rc->stopping)
        return;
    char why[300];
    if (outcome != ORDER_DONE)
        snprintf(why, sizeof(why), "container %s did not release %s: %s", s->cfg->standby.container,
                 s->cfg->primary.address, message ? message : "failed");
    s->address_released(s, outcome == ORDER_DONE ? NULL : why);
}

int switch_address_release(struct svc *s, switch_released_fn done)
{
    s->address_released = done;
    return address_order(s, false, on_address_released, s);
}
