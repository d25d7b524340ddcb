/* Container images (docs/server.md, "Container images"): the `images:` list
 * of the server's configuration, its validation, and the image server that
 * standby agents download them from.
 *
 * An image is a rootfs tarball (.tar.gz) on the server machine, named in the
 * configuration with its SHA-256.  A service's `standby.image` names one; its
 * container orders then carry `image: {name, sha256, url, cmd?}` and the
 * standby agent downloads the bytes from url, checks the SHA-256 and unpacks
 * them once into its cache (src/agent/standby/standby_image.c).  The server never
 * hashes the file itself: the agent's check is end to end, and the checksum
 * travels on the (authenticated) agent connection, not beside the bytes. */
#ifndef VCR_SERVER_IMAGES_H
#define VCR_SERVER_IMAGES_H

#include <cyaml/cyaml.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "server/services.h"

#define IMAGES_MAX      64
#define IMAGES_CMD_MAX  255
#define IMAGES_HEX_LEN  64
#define IMAGES_URL_PATH "/v1/images/"
/* The response header that repeats the configured SHA-256 (for people and
 * curl; the agent checks against the order's `sha256`). */
#define IMAGES_SHA256_HEADER "X-VCR-Image-SHA256"

struct image_config {
    char *name;
    char *file;                      /* absolute, or relative to the config file's directory */
    char sha256[IMAGES_HEX_LEN + 1]; /* lower-case hex */
    char *cmd; /* the container's PID 1, a shell command line; NULL: the agent's default */
};

/* --- raw YAML (strings), for server_config.c's libcyaml schema --- */
struct images_raw_image {
    char *name, *file, *sha256, *cmd;
};
extern const cyaml_schema_value_t images_raw_image_schema;

/* Converts and validates every entry: name (unique), file (an existing,
 * readable regular file named *.tar.gz or *.tgz), sha256 (64 hex digits),
 * cmd (optional: one shell command line, at most IMAGES_CMD_MAX characters,
 * no control characters).  One report line per problem;
 * returns their number.  *images is an array of *n (NULL when n is 0). */
unsigned images_config_convert(const struct images_raw_image *raw, size_t n, const char *base_dir,
                               struct image_config **images, size_t *n_images,
                               services_report_fn report, void *ctx);
/* NULL when no image has that name. */
const struct image_config *images_find(const struct image_config *images, size_t n,
                                       const char *name);
/* http://HOST:PORT/v1/images/NAME into buf; -1 when it does not fit. */
int images_url(const char *host, uint16_t port, const char *name, char *buf, size_t size);
void images_free(struct image_config *images, size_t n);

/* --- the image server: GET /v1/images/NAME on its own listener --- */

struct event_base;
struct image_server;

/* images (borrowed) must outlive the server. */
struct image_server *image_server_new(struct event_base *base, const struct image_config *images,
                                      size_t n, vcr_error_t *err);
/* Port 0: an ephemeral one (image_server_port). */
int image_server_listen(struct image_server *s, const char *addr, uint16_t port, vcr_error_t *err);
uint16_t image_server_port(const struct image_server *s);
/* Bytes of image files sent so far (counted when a reply is queued). */
uint64_t image_server_bytes_served(const struct image_server *s);
void image_server_free(struct image_server *s);

#endif
