/* Inside the server's configuration: server_config.c (the schema, defaults,
 * the sections) converts each scalar with server_config_fields.c. */
#ifndef VCR_CONFIG_SERVER_CONFIG_PRIV_H
#define VCR_CONFIG_SERVER_CONFIG_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config_internal.h"

#define ADDRESS_ALLOWED                                                                            \
    "ADDR:PORT with an IPv4 address, or [ADDR]:PORT with an IPv6 address, and a port 1..65535, "   \
    "e.g. 127.0.0.1:7070 or [::1]:7070"

/* Problems go to a config_report (config_errors.c, shared with the agent's
 * configuration), one line each, so that one --config-test run shows them all;
 * vcr-server words them "config `FILE`: ..." (config_report_finish_each). */
#define report_add(r, ...) config_report_add((r), NULL, __VA_ARGS__)

/* What `key` accepts, for messages (one table, the same keys as the schema). */
const char *sc_allowed_for(const char *key);

/* Each converts one scalar the schema read as a string and, when it is good,
 * sets *out (the value before is kept otherwise, and a line says why). */
void sc_take_address(struct config_report *r, const char *key, const char *value, char **host,
                     uint16_t *port);
void sc_take_ms(struct config_report *r, const char *key, const char *value, uint32_t min,
                uint32_t max, uint32_t *out);
void sc_take_bool(struct config_report *r, const char *key, const char *value, bool *out);
/* A relative path is taken from base_dir, the config file's directory. */
void sc_take_path(struct config_report *r, const char *key, const char *value, const char *base_dir,
                  char **out);
void sc_take_count(struct config_report *r, const char *key, const char *value, uint32_t min,
                   uint32_t max, uint32_t *out);
bool sc_valid_host_name(const char *s);

#endif
