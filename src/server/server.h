/* vcr-server as a library: wires the journal, the inventory, the agent
 * listener and the HTTP API on one event loop.  server_main.c only parses the
 * command line; tests start the same server in-process. */
#ifndef VCR_SERVER_SERVER_H
#define VCR_SERVER_SERVER_H

#include <stdint.h>

#include "common/err.h"

struct event_base;
struct server_config;
struct server;

/* Opens the journal and starts listening; cfg is borrowed and must outlive the server. */
struct server *server_new(struct event_base *base, const struct server_config *cfg,
                          vcr_error_t *err);
/* Runs the loop until SIGINT or SIGTERM. */
int server_run(struct server *srv, vcr_error_t *err);
void server_free(struct server *srv);

/* The bound ports (useful when the config asked for port 0). */
uint16_t server_agent_port(const struct server *srv);
uint16_t server_api_port(const struct server *srv);
struct inventory *server_inventory(const struct server *srv);
struct journal *server_journal(const struct server *srv);
struct recovery *server_recovery(const struct server *srv);
struct migrator *server_migrator(const struct server *srv);
/* The leader election (docs/ha.md); NULL without `ha:`. */
struct ha *server_ha(const struct server *srv);

#endif
