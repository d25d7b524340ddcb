/* The dashboard's files (src/server/ui/), built into vcr-server: ui_assets.c is
 * generated from them at build time by ui/embed_assets.py. */
#ifndef VCR_SERVER_UI_ASSETS_H
#define VCR_SERVER_UI_ASSETS_H

#include <stddef.h>

struct ui_asset {
    const char *name; /* the file's name, as in /ui/NAME */
    const char *content_type;
    const unsigned char *data;
    size_t size;
};

extern const struct ui_asset ui_assets[];
extern const size_t ui_assets_count;

#endif
