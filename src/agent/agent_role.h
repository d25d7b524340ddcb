/* A role is what an agent supervises: `host` runs QEMU VMs (host_*.c); a
 * `standby` role (containers in a standby VM) plugs in beside it through the
 * same table, after crun's custom-handler.h: one ops struct per variant. */
#ifndef VCR_AGENT_AGENT_ROLE_H
#define VCR_AGENT_AGENT_ROLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/agent_config.h"

struct event_base;
struct agent_conn;
struct proto_tls;

struct agent {
    struct event_base *base;
    struct vcr_agent_config *cfg;
    const struct agent_role_ops *role;
    void *role_data;
    struct agent_conn *conn; /* NULL until the role is ready to report */
    char accel[8];
    char *key; /* agent_key_file contents, or NULL */
    size_t key_len;
    struct proto_tls *tls; /* the server link's TLS; NULL only when insecure */
    bool stop_vms_on_exit;
    bool test_faults; /* --test-faults: orders may ask for injected faults */
    bool leaving;
    struct event *sample_timer;
};

struct agent_role_ops {
    const char *name;
    /* The role hello names (NULL: name): the libvirt role is a host to the server. */
    const char *hello_role;
    /* Set up and begin (asynchronously); call agent_role_ready() once the
     * role can describe itself (host: when the accelerator is known). */
    int (*init)(struct agent *a, vcr_error_t *err);
    /* The `vms` array of hello (new reference). */
    json_t *(*vm_list)(struct agent *a);
    /* The `vms` array of a sample (new reference), or NULL for none. */
    json_t *(*sample)(struct agent *a);
    /* An order from the server; answer with agent_reply(). id is borrowed. */
    void (*order)(struct agent *a, json_t *id, const char *action, const char *vm, json_t *msg);
    /* The agent is exiting: stop what the role runs if stop is set, then call
     * agent_role_left() (possibly later, from the loop). */
    void (*leave)(struct agent *a, bool stop);
    /* Free the role's data; what it runs keeps running unless leave stopped it. */
    void (*fini)(struct agent *a);
    /* Optional: more members (an object, new reference) for hello and for
     * each sample (standby: `containers`, `vm_load`). */
    json_t *(*hello_extra)(struct agent *a);
    json_t *(*sample_extra)(struct agent *a);
    /* Optional: the server was in contact at evidence_ms (CLOCK_BOOTTIME ms;
     * agent_conn_ops.heard): host feeds its fence watchdog (docs/fencing.md). */
    void (*server_heard)(struct agent *a, int64_t evidence_ms);
    /* Optional: the server's welcome.fence_after_ms (docs/fencing.md). */
    void (*server_fence_limit)(struct agent *a, uint32_t fence_after_ms);
};

extern const struct agent_role_ops host_role_ops;
/* standby_role.c, linked only into an agent built with liblxc (meson
 * `dependency('lxc')`): weak, so NULL in the static agent. */
extern const struct agent_role_ops standby_role_ops __attribute__((weak));
/* libvirt_role.c, linked only into an agent built with libvirt (meson
 * `dependency('libvirt')`, src/agent/host/libvirt_role.c): weak likewise. */
extern const struct agent_role_ops libvirt_role_ops __attribute__((weak));

/* Services of the agent core for roles. */
void agent_role_ready(struct agent *a, const char *accel);
/* vm_event body (stolen): queued while the server is unreachable. */
void agent_report_event(struct agent *a, json_t *body);
/* A message of type `type` stating what holds now (body stolen): sent once a
 * hello is on the connection, dropped otherwise (the next hello says it). */
void agent_report(struct agent *a, const char *type, json_t *body);
void agent_reply(struct agent *a, json_t *id, bool ok, const char *error);
/* members: an object (stolen) merged into the reply, e.g. a warm restart's result. */
void agent_reply_with(struct agent *a, json_t *id, bool ok, const char *error, json_t *members);
/* A refusal with its `code` (docs/protocol.md) from an errno-style status
 * (vcr_error_status): the server decides on the code, people read error. */
void agent_refuse(struct agent *a, json_t *id, int status, const char *error);
void agent_role_left(struct agent *a);
/* A role's table of orders: `rows` holds `n` rows of `row_size` bytes whose
 * first member is the action's name (const char *). Returns the row naming
 * `action`, or NULL after refusing the order (code `invalid`) with the list
 * of the role's actions. */
const void *agent_order_row(struct agent *a, json_t *id, const char *action, const void *rows,
                            size_t n, size_t row_size);

#endif
