/* The API's services (docs/server.md, recovery.c): GET /v1/services and
 * POST /v1/services/NAME/{failover,failback,reset}. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/agents.h"
#include "server/api_priv.h"
#include "server/inventory.h"
#include "server/migrate.h"
#include "server/recovery.h"

/* --- GET /v1/services, POST /v1/services/NAME/{failover,failback} (recovery.c) --- */

void api_handle_services(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)arg;
    cleanup_json json_t *body = recovery_services_json(api->recovery);
    if (body == NULL || json_object_set_new(body, "now_ms", json_integer(vcr_wall_ms())) < 0) {
        api_reply_error(req, 500, "out of memory");
        return;
    }
    api_reply_json(req, 200, body);
}

static void answer_service_order(struct evhttp_request *req, json_t *body, vcr_error_t *err)
{
    if (body == NULL) {
        api_reply_error(req, api_status_of(vcr_error_status(*err)), "%s", vcr_error_msg(*err));
        return;
    }
    api_reply_json(req, 202, body);
}

void api_handle_service_failover(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_failover(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

void api_handle_service_failback(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_failback(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

void api_handle_service_reset(struct api *api, struct evhttp_request *req, const char *name)
{
    cleanup_error vcr_error_t err = NULL;
    cleanup_json json_t *body = NULL;
    if (api->recovery == NULL)
        vcr_error_make(&err, ENOENT, "no service `%s`: no recovery engine", name);
    else
        body = recovery_reset(api->recovery, name, &err);
    answer_service_order(req, body, &err);
}

void api_set_recovery(struct api *api, struct recovery *rc)
{
    api->recovery = rc;
}

void api_set_migrator(struct api *api, struct migrator *m)
{
    api->migrator = m;
}
