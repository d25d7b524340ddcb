/* The HTTP API (evhttp), JSON in and out; docs/server.md lists the endpoints. */
#ifndef VCR_SERVER_API_H
#define VCR_SERVER_API_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/agents.h"

struct event_base;
struct inventory;
struct journal;
struct agents;
struct api;

/* How long POST /v1/vms/NAME/{stop,kill} waits for the agent's reply before 504. */
#define API_ORDER_TIMEOUT_MS 10000
/* vm_warm_restart: save, restart QEMU, load; or a cold boot (docs/warm-restart.md). */
#define API_WARM_ORDER_TIMEOUT_MS 60000

/* One entry of a warm-restart answer: {"vm", "ok", "fallback", "error",
 * "suspend_ms", "resume_ms", "downtime_ms", "state_bytes", "qemu"}; reply is
 * the agent's (NULL when none came). */
json_t *api_warm_entry(const char *vm, enum order_outcome outcome, const char *message,
                       json_t *reply);
/* Longest long poll of GET /v1/events?wait_ms= */
#define API_EVENTS_WAIT_MAX_MS   30000
#define API_EVENTS_DEFAULT_LIMIT 100

struct proto_tls;
struct api_token;
struct api_options {
    int64_t order_timeout_ms;
    /* docs/security.md, "The HTTP API": TLS with bearer tokens of these hashes
     * (borrowed), or tls NULL: plain HTTP, no authentication. */
    const struct proto_tls *tls;
    const struct api_token *tokens;
    size_t n_tokens;
    char *const *names; /* more names of the server for the Host check */
    size_t n_names;
    uint32_t connections_max;
    uint32_t rate_per_s;
    uint32_t rate_burst;
};

/* inv, journal and agents are borrowed and must outlive the api, except that
 * agents may be freed first (its pending orders then end with 503). */
struct api *api_new(struct event_base *base, struct inventory *inv, struct journal *journal,
                    struct agents *agents, const struct api_options *opts, vcr_error_t *err);
/* Port 0: an ephemeral one, see api_port. */
int api_listen(struct api *api, const char *addr, uint16_t port, vcr_error_t *err);
uint16_t api_port(const struct api *api);
/* The recovery engine behind /v1/services (borrowed; may stay NULL). */
struct recovery;
void api_set_recovery(struct api *api, struct recovery *rc);
/* The configuration (borrowed, outlives the api): its `images:` store names the
 * images of POST .../containers {"image": NAME} and of POST .../images/prune;
 * NULL: no images. */
struct server_config;
void api_set_config(struct api *api, const struct server_config *cfg);
/* Migrations (POST .../containers {"action": "migrate"}); NULL: none. */
struct migrator;
void api_set_migrator(struct api *api, struct migrator *m);
/* Redundant servers (docs/ha.md; borrowed, outlives the api): GET /v1/status
 * adds `ha`, and a follower refuses every action (503, code not_leader, with
 * the leader's API address in `leader`); reads are answered. */
struct ha;
void api_set_ha(struct api *api, struct ha *ha);
/* Answers waiting long polls, then closes every HTTP connection. */
void api_free(struct api *api);

#endif
