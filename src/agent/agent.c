/* The agent core: configuration, event loop, signals, the periodic sample
 * tick and the server connection; everything role-specific goes through
 * struct agent_role_ops (agent_role.h). */
#include "agent/agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "agent/agent_conn.h"
#include "agent/agent_role.h"
#include "agent/proc.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "proto/proto_code.h"
#include "proto/proto.h"
#include "proto/proto_tls.h"

/* How long an exiting agent waits for the server to take its last messages. */
#define AGENT_EXIT_FLUSH_MS 1000

/* &standby_role_ops is NULL in an agent built without liblxc, &libvirt_role_ops
 * without libvirt. */
static const struct agent_role_ops *const roles[] = {&host_role_ops, &standby_role_ops,
                                                     &libvirt_role_ops};

static const struct agent_role_ops *find_role(const char *name)
{
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (roles[i] && strcmp(roles[i]->name, name) == 0)
            return roles[i];
    return NULL;
}

int agent_role_check(const char *name, vcr_error_t *err)
{
    if (find_role(name) != NULL)
        return 0;
    /* The roles this binary was built with, from the table: a new one needs no
     * edit here. */
    char roles_built[128] = "";
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (roles[i])
            snprintf(roles_built + strlen(roles_built), sizeof(roles_built) - strlen(roles_built),
                     "%s%s", roles_built[0] ? ", " : "", roles[i]->name);
    return vcr_error_make(err, EINVAL, "--role `%s`: not a role; the roles are: %s", name,
                          roles_built);
}

static int check_role(const struct agent_options *opts, vcr_error_t *err)
{
    return agent_role_check(opts->role ? opts->role : "host", err);
}

/* The standby role needs no file: --server and --name say it all (docs/agent.md). */
static struct vcr_agent_config *config_from_flags(const struct agent_options *opts,
                                                  vcr_error_t *err)
{
    if (opts->server == NULL || opts->name == NULL) {
        vcr_error_make(err, EINVAL, "--config FILE, or --server HOST:PORT and --name NAME");
        return NULL;
    }
    struct vcr_agent_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->host = strdup(opts->name)) == NULL ||
        (cfg->server = strdup(opts->server)) == NULL ||
        (cfg->state_dir = strdup("/run/vcr-agent")) == NULL) {
        vcr_agent_config_free(cfg);
        vcr_error_make(err, ENOMEM, "out of memory");
        return NULL;
    }
    cfg->accel = VCR_ACCEL_TCG;
    cfg->sample_interval_ms = VCR_SAMPLE_INTERVAL_MS_DEF;
    cfg->insecure = opts->insecure;
    if (opts->insecure && (opts->tls_ca_file || opts->tls_cert_file || opts->tls_key_file)) {
        vcr_agent_config_free(cfg);
        vcr_error_make(err, EINVAL, "--insecure and --tls-* exclude each other");
        return NULL;
    }
    if (!opts->insecure &&
        (opts->tls_ca_file == NULL || opts->tls_cert_file == NULL || opts->tls_key_file == NULL)) {
        vcr_agent_config_free(cfg);
        vcr_error_make(err, EINVAL,
                       "the server link needs TLS: --tls-ca FILE, --tls-cert FILE and --tls-key "
                       "FILE, or --insecure");
        return NULL;
    }
    if ((opts->tls_ca_file && (cfg->tls_ca_file = strdup(opts->tls_ca_file)) == NULL) ||
        (opts->tls_cert_file && (cfg->tls_cert_file = strdup(opts->tls_cert_file)) == NULL) ||
        (opts->tls_key_file && (cfg->tls_key_file = strdup(opts->tls_key_file)) == NULL) ||
        (opts->tls_server_name && (cfg->tls_server_name = strdup(opts->tls_server_name)) == NULL)) {
        vcr_agent_config_free(cfg);
        vcr_error_make(err, ENOMEM, "out of memory");
        return NULL;
    }
    return cfg;
}

/* The server link's TLS context; NULL with *tls NULL when insecure.  Errors
 * name the key and the file. */
static int load_tls(const struct vcr_agent_config *cfg, struct proto_tls **tls, vcr_error_t *err)
{
    *tls = NULL;
    if (cfg->insecure)
        return 0;
    if (cfg->tls_ca_file == NULL && cfg->tls_cert_file == NULL && cfg->tls_key_file == NULL)
        return vcr_error_make(err, EINVAL,
                              "config `%s`: the server link needs TLS: set tls_ca_file, "
                              "tls_cert_file and tls_key_file (`vcr pki`), or `insecure: true` "
                              "(docs/security.md)",
                              cfg->path ? cfg->path : "(flags)");
    struct proto_tls_files files = {
        .ca = cfg->tls_ca_file, .cert = cfg->tls_cert_file, .key = cfg->tls_key_file};
    *tls = proto_tls_new(PROTO_TLS_CLIENT, &files, err);
    if (*tls == NULL)
        return cfg->path ? vcr_error_wrap(err, "config `%s`", cfg->path) : -1;
    return 0;
}

int agent_config_test(const struct agent_options *opts, vcr_error_t *err)
{
    if (check_role(opts, err) < 0)
        return -1;
    struct vcr_agent_config *cfg = vcr_agent_config_load(opts->config_path, err);
    if (cfg == NULL)
        return -1;
    struct proto_tls *tls = NULL;
    if (load_tls(cfg, &tls, err) < 0) {
        vcr_agent_config_free(cfg);
        return -1;
    }
    proto_tls_free(tls);
    printf("%s: ok: host %s, server %s, accel %s, %zu VM(s)\n", cfg->path, cfg->host, cfg->server,
           vcr_accel_mode_name(cfg->accel), cfg->n_vms);
    vcr_agent_config_free(cfg);
    return 0;
}

/* mkdir -p, for the state directory. */
static int make_dirs(const char *path, vcr_error_t *err)
{
    cleanup_free char *copy = strdup(path);
    if (copy == NULL)
        return vcr_error_make(err, ENOMEM, "out of memory");
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, 0750) < 0 && errno != EEXIST)
            return vcr_error_errno(err, "create state_dir `%s`", copy);
        if (saved == '\0')
            break;
        *p = saved;
    }
    return 0;
}

void agent_report_event(struct agent *a, json_t *body)
{
    if (a->conn == NULL) {
        json_decref(body);
        return;
    }
    agent_conn_send_event(a->conn, body);
}

void agent_report(struct agent *a, const char *type, json_t *body)
{
    if (a->conn == NULL) {
        json_decref(body);
        return;
    }
    agent_conn_send_report(a->conn, type, body);
}

void agent_reply(struct agent *a, json_t *id, bool ok, const char *error)
{
    if (a->conn)
        agent_conn_reply(a->conn, id, ok, error);
}

void agent_refuse(struct agent *a, json_t *id, int status, const char *error)
{
    agent_reply_with(a, id, false, error,
                     json_pack("{s:s}", "code", proto_code_name(proto_code_from_errno(status))));
}

void agent_reply_with(struct agent *a, json_t *id, bool ok, const char *error, json_t *members)
{
    if (a->conn)
        agent_conn_reply_with(a->conn, id, ok, error, members);
    else
        json_decref(members);
}

const void *agent_order_row(struct agent *a, json_t *id, const char *action, const void *rows,
                            size_t n, size_t row_size)
{
    const char *row = rows;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        memcpy(&name, row + i * row_size, sizeof(name));
        if (strcmp(name, action) == 0)
            return row + i * row_size;
    }
    char msg[512];
    size_t used = (size_t)snprintf(msg, sizeof(msg),
                                   "unknown %s action `%.40s`; allowed:", a->role->name, action);
    for (size_t i = 0; i < n && used < sizeof(msg); i++) {
        const char *name;
        memcpy(&name, row + i * row_size, sizeof(name));
        used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s %s", i ? "," : "", name);
    }
    agent_refuse(a, id, PROTO_STATUS_UNKNOWN_ORDER, msg);
    return NULL;
}

static void exit_loop(void *arg)
{
    struct agent *a = arg;
    event_base_loopexit(a->base, NULL);
}

void agent_role_left(struct agent *a)
{
    log_info("leaving");
    if (a->conn == NULL) {
        exit_loop(a);
        return;
    }
    /* The last vm_events (VMs stopped on exit) are still in the send buffer:
     * close gracefully, but do not wait on a server that does not read. */
    struct timeval cap = {.tv_sec = AGENT_EXIT_FLUSH_MS / 1000,
                          .tv_usec = (AGENT_EXIT_FLUSH_MS % 1000) * 1000};
    event_base_loopexit(a->base, &cap);
    agent_conn_finish(a->conn, exit_loop, a);
}

static json_t *conn_vm_list(void *opaque)
{
    struct agent *a = opaque;
    return a->role->vm_list(a);
}

static void conn_order(json_t *id, const char *action, const char *vm, json_t *msg, void *opaque)
{
    struct agent *a = opaque;
    if (a->leaving) {
        agent_reply(a, id, false, "the agent is exiting");
        return;
    }
    a->role->order(a, id, action, vm, msg);
}

static json_t *conn_hello_extra(void *opaque)
{
    struct agent *a = opaque;
    return a->role->hello_extra ? a->role->hello_extra(a) : NULL;
}

static void conn_heard(int64_t evidence_ms, void *opaque)
{
    struct agent *a = opaque;
    if (a->role->server_heard)
        a->role->server_heard(a, evidence_ms);
}

static void conn_fence_limit(uint32_t fence_after_ms, void *opaque)
{
    struct agent *a = opaque;
    if (a->role->server_fence_limit)
        a->role->server_fence_limit(a, fence_after_ms);
}

static const struct agent_conn_ops conn_ops = {
    .vm_list = conn_vm_list,
    .order = conn_order,
    .hello_extra = conn_hello_extra,
    .heard = conn_heard,
    .fence_limit = conn_fence_limit,
};

static void on_sample_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct agent *a = arg;
    if (a->conn == NULL || !agent_conn_is_up(a->conn))
        return;
    json_t *vms = a->role->sample(a);
    if (vms == NULL)
        return;
    json_t *body = json_pack("{s:I, s:o}", "ts_ms", (json_int_t)vcr_wall_ms(), "vms", vms);
    if (body && a->role->sample_extra) {
        cleanup_json json_t *extra = a->role->sample_extra(a);
        if (json_is_object(extra))
            json_object_update_missing(body, extra);
    }
    agent_conn_send_sample(a->conn, body);
}

void agent_role_ready(struct agent *a, const char *accel)
{
    snprintf(a->accel, sizeof(a->accel), "%s", accel);
    struct agent_conn_params params = {
        .server = a->cfg->server,
        .host = a->cfg->host,
        .role = a->role->hello_role ? a->role->hello_role : a->role->name,
        .accel = a->accel,
        .key = a->key,
        .key_len = a->key_len,
        .tls = a->tls,
        .server_name = a->cfg->tls_server_name,
    };
    cleanup_error vcr_error_t err = NULL;
    a->conn = agent_conn_new(a->base, &params, &conn_ops, a, &err);
    if (a->conn == NULL) {
        log_error("%s", vcr_error_msg(err));
        event_base_loopbreak(a->base);
        return;
    }
    agent_conn_start(a->conn);
    /* The role has its VMs (adopted or started) and the link is on its way:
     * for systemd (Type=notify) the agent is up. */
    if (vcr_sd_notifyf("READY=1\nSTATUS=role %s, host %s, server %s, accel %s", a->role->name,
                       a->cfg->host, a->cfg->server, a->accel) < 0)
        log_warn("cannot notify $NOTIFY_SOCKET: %s", strerror(errno));
    struct timeval tv = {.tv_sec = a->cfg->sample_interval_ms / 1000,
                         .tv_usec = (a->cfg->sample_interval_ms % 1000) * 1000};
    event_add(a->sample_timer, &tv);
}

static void on_leave_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct agent *a = arg;
    if (a->leaving) {
        log_warn("%s again: exiting at once", strsignal((int)sig));
        event_base_loopbreak(a->base);
        return;
    }
    a->leaving = true;
    vcr_sd_notify("STOPPING=1");
    log_info("%s: exiting; VMs %s", strsignal((int)sig),
             a->stop_vms_on_exit ? "are stopped first (--stop-vms-on-exit)"
                                 : "keep running (they outlive the agent)");
    a->role->leave(a, a->stop_vms_on_exit);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    proc_reap_children();
}

int agent_run(const struct agent_options *opts, vcr_error_t *err)
{
    if (check_role(opts, err) < 0)
        return -1;
    struct agent a = {.stop_vms_on_exit = opts->stop_vms_on_exit, .test_faults = opts->test_faults};
    a.role = find_role(opts->role ? opts->role : "host");
    a.cfg = opts->config_path ? vcr_agent_config_load(opts->config_path, err)
                              : config_from_flags(opts, err);
    if (a.cfg == NULL)
        return -1;
    int rc = -1;
    struct event *sig_term = NULL, *sig_int = NULL, *sig_chld = NULL;
    struct vcr_sd_watchdog *watchdog = NULL;
    bool role_started = false;
    if (make_dirs(a.cfg->state_dir, err) < 0)
        goto out;
    if (a.cfg->agent_key_file &&
        proto_auth_load_key(a.cfg->agent_key_file, &a.key, &a.key_len, err) < 0) {
        vcr_error_wrap(err, "agent_key_file");
        goto out;
    }
    if (load_tls(a.cfg, &a.tls, err) < 0)
        goto out;
    if (a.cfg->insecure)
        log_warn("insecure: the server link is plain TCP: this agent cannot tell its server "
                 "from another, and any peer can say hello as this host (docs/security.md)");
    /* proto.h: a vanished peer must not kill us through SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    a.base = event_base_new();
    if (a.base == NULL) {
        vcr_error_make(err, ENOMEM, "cannot create the event loop");
        goto out;
    }
    sig_term = evsignal_new(a.base, SIGTERM, on_leave_signal, &a);
    sig_int = evsignal_new(a.base, SIGINT, on_leave_signal, &a);
    sig_chld = evsignal_new(a.base, SIGCHLD, on_sigchld, &a);
    a.sample_timer = event_new(a.base, -1, EV_PERSIST, on_sample_tick, &a);
    if (!sig_term || !sig_int || !sig_chld || !a.sample_timer || evsignal_add(sig_term, NULL) ||
        evsignal_add(sig_int, NULL) || evsignal_add(sig_chld, NULL)) {
        vcr_error_make(err, ENOMEM, "cannot register signal events");
        goto out;
    }
    log_info("vcr-agent %s: role %s, host %s, server %s, state_dir %s, %zu VM(s)", VCR_VERSION,
             a.role->name, a.cfg->host, a.cfg->server, a.cfg->state_dir, a.cfg->n_vms);
    if (a.role->init(&a, err) < 0)
        goto out;
    role_started = true;
    watchdog = vcr_sd_watchdog_start(a.base);
    if (event_base_dispatch(a.base) < 0) {
        vcr_error_make(err, EIO, "event loop failed");
        goto out;
    }
    rc = 0;
out:
    if (role_started)
        a.role->fini(&a);
    agent_conn_free(a.conn);
    vcr_sd_watchdog_free(watchdog);
    if (a.sample_timer)
        event_free(a.sample_timer);
    if (sig_term)
        event_free(sig_term);
    if (sig_int)
        event_free(sig_int);
    if (sig_chld)
        event_free(sig_chld);
    if (a.base)
        event_base_free(a.base);
    free(a.key);
    proto_tls_free(a.tls);
    vcr_agent_config_free(a.cfg);
    return rc;
}
