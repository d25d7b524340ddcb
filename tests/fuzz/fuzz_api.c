/* libFuzzer harness for what any client of the HTTP API sends before and into
 * a handler (src/server/api_auth.c, api_containers.c): the first byte picks the
 * parser, the rest is its input.  0 a tokens file, 1 an Authorization header,
 * 2 a Cookie header, 3 a Content-Type, 4 a Host header (and the Host check),
 * 5 an Origin and a Host (split at the first newline), 6 a POST .../containers
 * body, 7 a warm restart's body, 8 GET /v1/events's query string.  What each accepts is checked: a
 * bearer token is a non-empty span of the header, a cookie's value lies inside it, a host is
 * lower-case without a port, an accepted Origin is "https://" + the Host, a container order holds
 * only the members api_container_members allows, each of the right type. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "server/api_auth.h"
#include "server/api_priv.h"

static void check_members(json_t *members, int action)
{
    static const char *const allowed[] = {
        "name",  "service", "address", "prefix",           "gateway",    "template", "image",
        "start", "to",      "precopy", "hold_for_test_ms", "privileged", NULL};
    const char *key;
    json_t *v;
    if (!json_is_string(json_object_get(members, "name")) || action < 0 || action > 4)
        __builtin_trap();
    json_object_foreach(members, key, v)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (allowed[i] == NULL)
            __builtin_trap();
        if ((strcmp(key, "start") == 0 || strcmp(key, "precopy") == 0 ||
             strcmp(key, "privileged") == 0) &&
            !json_is_boolean(v))
            __builtin_trap();
        if (strcmp(key, "prefix") == 0 &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 32))
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 9;
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    size_t len = strlen(text);
    switch (which) {
    case 0: {
        struct api_token *tokens = NULL;
        size_t n = 0;
        vcr_error_t err = NULL;
        if (api_tokens_parse((const char *)data + 1, size - 1, "fuzz", &tokens, &n, &err) == 0) {
            if (n == 0 || n > API_TOKENS_MAX)
                __builtin_trap();
            for (size_t i = 0; i < n; i++)
                if (tokens[i].role != API_ROLE_READ && tokens[i].role != API_ROLE_OPERATOR)
                    __builtin_trap();
            (void)api_tokens_match(tokens, n, text, len);
        }
        vcr_error_release(&err);
        free(tokens);
        break;
    }
    case 1: {
        const char *tok;
        size_t n;
        if (api_parse_bearer(text, &tok, &n) == 0 &&
            (n == 0 || tok < text || tok + n > text + len || memchr(tok, ' ', n)))
            __builtin_trap();
        break;
    }
    case 2: {
        const char *v;
        size_t n;
        if (api_parse_cookie(text, "vcr_session", &v, &n) == 0 && (v < text || v + n > text + len))
            __builtin_trap();
        break;
    }
    case 3:
        (void)api_content_type_is_json(text);
        break;
    case 4: {
        char host[256];
        if (api_host_of(text, host, sizeof(host)) == 0) {
            for (const char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    __builtin_trap();
        }
        const char *names[] = {"vcr.example"};
        (void)api_host_allowed(text, "127.0.0.1", names, 1);
        break;
    }
    case 5: {
        char *nl = strchr(text, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        if (api_origin_allowed(text, nl + 1, true) &&
            (strncasecmp(text, "https://", 8) != 0 || strcasecmp(text + 8, nl + 1) != 0))
            __builtin_trap();
        break;
    }
    case 6: {
        json_error_t jerr;
        json_t *body = json_loadb((const char *)data + 1, size - 1, 0, &jerr);
        json_t *members = NULL;
        char why[300];
        int k = api_container_members(body, &members, why, sizeof(why));
        if (k >= 0)
            check_members(members, k);
        else if (members != NULL || why[0] == '\0')
            __builtin_trap();
        json_decref(members);
        json_decref(body);
        break;
    }
    case 7: {
        json_error_t jerr;
        json_t *body = json_loadb((const char *)data + 1, size - 1, 0, &jerr);
        json_t *members = NULL;
        char why[200];
        if (api_warm_members(body, &members, why, sizeof(why)) == 0) {
            json_t *q = json_object_get(members, "qemu");
            if (q && (!json_is_string(q) || json_string_value(q)[0] != '/'))
                __builtin_trap();
            if (json_object_size(members) > 3)
                __builtin_trap();
        } else if (members != NULL) {
            __builtin_trap();
        }
        json_decref(members);
        /* The same bytes as an agent's reply: the entry keeps only numbers of at_ms. */
        json_t *entry = api_warm_entry("vm", ORDER_DONE, NULL, body);
        json_t *at = json_object_get(entry, "at_ms");
        const char *key;
        json_t *v;
        json_object_foreach(at, key, v)
        {
            if (!json_is_number(v))
                __builtin_trap();
        }
        json_decref(entry);
        json_decref(body);
        break;
    }
    case 8: {
        int64_t since, limit, wait_ms;
        char why[200];
        if (api_events_query(text, &since, &limit, &wait_ms, why, sizeof(why)) == 0 &&
            (limit < 1 || limit > 1000 || wait_ms < 0 || wait_ms > 30000 || since < -1))
            __builtin_trap();
        break;
    }
    }
    free(text);
    return 0;
}
