/* GET /ui/ and its files: the dashboard (docs/dashboard.md).  The files are built
 * into the binary (ui_assets.h), so serving it needs neither the network nor a
 * file at run time.  The page talks to the API only: GET /v1/status,
 * /v1/services, /v1/events/stream, and the operator's POSTs. */
#include <event2/buffer.h>
#include <event2/http.h>
#include <string.h>

#include "server/api_priv.h"
#include "server/ui_assets.h"

/* The page runs no inline script or style and loads nothing from elsewhere. */
#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void serve(struct evhttp_request *req, const struct ui_asset *asset)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL || evbuffer_add_reference(buf, asset->data, asset->size, NULL, NULL) < 0) {
        if (buf)
            evbuffer_free(buf);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", asset->content_type);
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Content-Security-Policy", UI_CSP);
    evhttp_send_reply(req, 200, "OK", buf);
    evbuffer_free(buf);
}

static const struct ui_asset *find(const char *name)
{
    for (size_t i = 0; i < ui_assets_count; i++)
        if (strcmp(ui_assets[i].name, name) == 0)
            return &ui_assets[i];
    return NULL;
}

void api_handle_ui_redirect(struct api *api, struct evhttp_request *req, const char *arg)
{
    (void)api;
    (void)arg;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Location", "/ui/");
    evhttp_send_reply(req, 301, "Moved Permanently", NULL);
}

void api_handle_ui_index(struct api *api, struct evhttp_request *req, const char *arg)
{
    api_handle_ui_file(api, req, arg ? arg : "index.html");
}

void api_handle_ui_file(struct api *api, struct evhttp_request *req, const char *name)
{
    (void)api;
    const struct ui_asset *asset = find(name);
    if (asset == NULL) {
        api_reply_error(req, 404, "no dashboard file `%s`", name);
        return;
    }
    serve(req, asset);
}
