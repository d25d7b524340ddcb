/* Wiring of the server's parts, and its lifetime. */
#include "server/server.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/hostport.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "ha/ha.h"
#include "server/agents.h"
#include "server/api.h"
#include "server/images.h"
#include "server/inventory.h"
#include "server/journal.h"
#include "server/migrate.h"
#include "server/recovery.h"
#include "config/server_config.h"

struct server {
    struct event_base *base;
    const struct server_config *cfg;
    struct journal *journal;
    struct inventory *inv;
    struct agents *agents;
    struct api *api;
    struct recovery *recovery;
    struct migrator *migrator;
    struct image_server *images; /* NULL: no `images_listen` */
    struct ha *ha;               /* NULL: no `ha:`, the embedded single server */
};

static void ha_elected(void *opaque, int64_t term)
{
    struct server *srv = opaque;
    cleanup_json json_t *detail =
        json_pack("{s:s, s:I}", "name", srv->cfg->ha.name, "term", (json_int_t)term);
    journal_note(srv->journal, 0, NULL, NULL, JOURNAL_HA_LEADER, detail);
    agents_set_leading(srv->agents, true, NULL);
}

static void ha_deposed(void *opaque, const char *why)
{
    struct server *srv = opaque;
    cleanup_json json_t *detail = json_pack("{s:s, s:s}", "name", srv->cfg->ha.name, "why", why);
    journal_note(srv->journal, 0, NULL, NULL, JOURNAL_HA_FOLLOWER, detail);
    agents_set_leading(srv->agents, false, why);
    recovery_ha_deposed(srv->recovery);
}

static const struct ha_watch server_ha_watch = {.elected = ha_elected, .deposed = ha_deposed};

static void watch_vm_event(void *opaque, const char *host, const char *vm, const char *state,
                           const char *cause)
{
    struct server *srv = opaque;
    recovery_on_vm_event(srv->recovery, host, vm, state, cause);
}

static void watch_hello(void *opaque, const char *host)
{
    struct server *srv = opaque;
    recovery_on_hello(srv->recovery, host);
}

static void watch_host_lost(void *opaque, const char *host)
{
    struct server *srv = opaque;
    recovery_on_host_lost(srv->recovery, host);
}

static void watch_sample(void *opaque, const char *host)
{
    struct server *srv = opaque;
    migrator_on_sample(srv->migrator, host);
}

static const struct agents_watch server_watch = {
    .vm_event = watch_vm_event,
    .hello = watch_hello,
    .host_lost = watch_host_lost,
    .sample = watch_sample,
};

struct server *server_new(struct event_base *base, const struct server_config *cfg,
                          vcr_error_t *err)
{
    struct server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        vcr_error_errno(err, "server");
        return NULL;
    }
    srv->base = base;
    srv->cfg = cfg;
    struct agents_options agent_opts = {
        .heartbeat_ms = cfg->heartbeat_ms,
        .host_timeout_ms = cfg->host_timeout_ms,
        .fence_timeout_ms = cfg->fence_timeout_ms,
        .key = cfg->agent_key,
        .key_len = cfg->agent_key_len,
        .tls = cfg->tls,
        .connections_max = cfg->agent_connections_max,
    };
    struct api_options api_opts = {
        .order_timeout_ms = API_ORDER_TIMEOUT_MS,
        .tls = cfg->api_tls,
        .tokens = cfg->api_tokens,
        .n_tokens = cfg->n_api_tokens,
        .names = cfg->api_names,
        .n_names = cfg->n_api_names,
        .connections_max = cfg->api_connections_max,
        .rate_per_s = cfg->api_rate_per_s,
        .rate_burst = cfg->api_rate_burst,
    };
    if ((srv->journal = journal_open(cfg->journal, err)) == NULL ||
        (srv->inv = inventory_new()) == NULL ||
        (srv->agents = agents_new(base, srv->inv, srv->journal, &agent_opts, err)) == NULL ||
        agents_listen(srv->agents, cfg->listen_host, cfg->listen_port, err) < 0 ||
        (srv->api = api_new(base, srv->inv, srv->journal, srv->agents, &api_opts, err)) == NULL ||
        api_listen(srv->api, cfg->api_host, cfg->api_port, err) < 0 ||
        (srv->recovery = recovery_new(base, cfg, srv->inv, srv->journal, srv->agents, err)) ==
            NULL ||
        (srv->migrator = migrator_new(base, cfg, srv->inv, srv->journal, srv->agents, err)) ==
            NULL) {
        if (srv->journal && srv->inv == NULL)
            vcr_error_make(err, ENOMEM, "inventory: out of memory");
        server_free(srv);
        return NULL;
    }
    if (cfg->standby_insecure_host &&
        agents_listen_standby_insecure(srv->agents, cfg->standby_insecure_host,
                                       cfg->standby_insecure_port, err) < 0) {
        server_free(srv);
        return NULL;
    }
    if (cfg->images_host &&
        ((srv->images = image_server_new(base, cfg->images, cfg->n_images, err)) == NULL ||
         image_server_listen(srv->images, cfg->images_host, cfg->images_port, err) < 0)) {
        server_free(srv);
        return NULL;
    }
    if (srv->images)
        log_info("image server on %s:%u: %zu image(s)", cfg->images_host,
                 image_server_port(srv->images), cfg->n_images);
    if (cfg->ha.enabled) {
        struct ha_options o = {
            .etcd = (const char *const *)cfg->ha.etcd,
            .n_etcd = cfg->ha.n_etcd,
            .lease_ttl_s = cfg->ha.lease_ttl_s,
            .name = cfg->ha.name,
            .agents_addr = cfg->ha.advertise,
            .api_addr = cfg->ha.advertise_api,
            .prefix = SERVER_HA_PREFIX,
        };
        if ((srv->ha = ha_new(base, &o, &server_ha_watch, srv, err)) == NULL) {
            server_free(srv);
            return NULL;
        }
        agents_set_ha(srv->agents, srv->ha);
        recovery_set_ha(srv->recovery, srv->ha);
        migrator_set_ha(srv->migrator, srv->ha);
        api_set_ha(srv->api, srv->ha);
    }
    agents_set_watch(srv->agents, &server_watch, srv);
    api_set_recovery(srv->api, srv->recovery);
    api_set_migrator(srv->api, srv->migrator);
    api_set_config(srv->api, cfg);
    char agents_at[64], api_at[64], standby_at[64];
    vcr_host_port_format(cfg->listen_host, agents_port(srv->agents), agents_at, sizeof(agents_at));
    vcr_host_port_format(cfg->api_host, api_port(srv->api), api_at, sizeof(api_at));
    vcr_host_port_format(cfg->standby_insecure_host, cfg->standby_insecure_port, standby_at,
                         sizeof(standby_at));
    if (cfg->tls == NULL)
        log_warn("insecure: the agent port is plain TCP: anyone who reaches %s can say hello "
                 "as any host, and agents cannot tell this server from another "
                 "(docs/security.md)",
                 agents_at);
    if (cfg->api_tls == NULL)
        log_warn("api_insecure: the HTTP API on %s is plain HTTP without authentication: "
                 "anyone who reaches it can stop VMs and move services (docs/security.md)",
                 api_at);
    if (cfg->standby_insecure_host)
        log_warn("standby_insecure_listen %s: plain TCP for standby agents: anyone who reaches "
                 "it can say hello as a standby host (docs/security.md)",
                 standby_at);
    log_info("agents on %s%s%s, HTTP API on %s%s, journal %s, heartbeat %u ms, host timeout "
             "%u ms",
             agents_at, cfg->tls ? " (mutual TLS)" : " (plain TCP)",
             cfg->agent_key ? " (challenge with agent_key_file)" : "", api_at,
             cfg->api_tls ? " (TLS, tokens)" : " (plain, open)", cfg->journal, cfg->heartbeat_ms,
             cfg->host_timeout_ms);
    return srv;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    vcr_sd_notify("STOPPING=1");
    event_base_loopbreak(srv->base);
}

int server_run(struct server *srv, vcr_error_t *err)
{
    struct event *sigint = evsignal_new(srv->base, SIGINT, on_signal, srv);
    struct event *sigterm = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    struct vcr_sd_watchdog *watchdog = NULL;
    int r = 0;
    if (sigint == NULL || sigterm == NULL || evsignal_add(sigint, NULL) < 0 ||
        evsignal_add(sigterm, NULL) < 0) {
        r = vcr_error_make(err, ENOMEM, "cannot watch SIGINT and SIGTERM");
    } else {
        /* Both listeners are bound (server_new): systemd may order clients
         * after us from here on. */
        watchdog = vcr_sd_watchdog_start(srv->base);
        if (vcr_sd_notifyf("READY=1\nSTATUS=agents on port %u, HTTP API on port %u",
                           agents_port(srv->agents), api_port(srv->api)) < 0)
            log_warn("cannot notify $NOTIFY_SOCKET: %s", strerror(errno));
        if (event_base_dispatch(srv->base) < 0)
            r = vcr_error_make(err, EIO, "the event loop failed");
    }
    vcr_sd_watchdog_free(watchdog);
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    return r;
}

void server_free(struct server *srv)
{
    if (srv == NULL)
        return;
    /* Agents first: their pending orders are answered through the API; the
     * recovery engine ignores the answers from then on. */
    recovery_stop(srv->recovery);
    migrator_stop(srv->migrator);
    agents_free(srv->agents);
    api_free(srv->api);
    image_server_free(srv->images);
    recovery_free(srv->recovery);
    migrator_free(srv->migrator);
    ha_free(srv->ha);
    journal_close(srv->journal);
    inventory_free(srv->inv);
    free(srv);
}

uint16_t server_agent_port(const struct server *srv)
{
    return agents_port(srv->agents);
}

uint16_t server_api_port(const struct server *srv)
{
    return api_port(srv->api);
}

struct inventory *server_inventory(const struct server *srv)
{
    return srv->inv;
}

struct journal *server_journal(const struct server *srv)
{
    return srv->journal;
}

struct recovery *server_recovery(const struct server *srv)
{
    return srv->recovery;
}

struct migrator *server_migrator(const struct server *srv)
{
    return srv->migrator;
}

struct ha *server_ha(const struct server *srv)
{
    return srv->ha;
}
