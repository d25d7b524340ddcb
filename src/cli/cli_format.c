/* Human output of `vcr`: aligned tables and one-line events. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"

#define TABLE_MAX_COLS 8

struct table {
    size_t ncols;
    const char *const *head;
    const bool *right; /* right-aligned columns: numbers */
    char **cells;      /* nrows * ncols */
    size_t nrows;
};

static void table_release(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Agents supply these strings: a newline or an escape sequence in a VM's
 * cause must not break the table or the terminal. */
static char *printable(const char *s)
{
    char *out = strdup(s ? s : "-");
    for (char *c = out; c && *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    return out;
}

/* Adds one row of ncols strings (copied; NULL prints "-").  -1 when out of memory. */
static int table_add(struct table *t, const char *const *cells)
{
    char **grown = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*grown));
    if (grown == NULL)
        return -1;
    t->cells = grown;
    for (size_t c = 0; c < t->ncols; c++)
        grown[t->nrows * t->ncols + c] = NULL;
    t->nrows++;
    for (size_t c = 0; c < t->ncols; c++)
        if ((grown[(t->nrows - 1) * t->ncols + c] = printable(cells[c])) == NULL)
            return -1;
    return 0;
}

static void table_print(const struct table *t, FILE *out)
{
    size_t width[TABLE_MAX_COLS];
    for (size_t c = 0; c < t->ncols; c++) {
        width[c] = strlen(t->head[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = strlen(t->cells[r * t->ncols + c]);
            if (w > width[c])
                width[c] = w;
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = r == 0 ? t->head[c] : t->cells[(r - 1) * t->ncols + c];
            bool last = c + 1 == t->ncols;
            if (t->right[c])
                fprintf(out, "%*s", (int)width[c], s);
            else
                fprintf(out, "%-*s", last ? 0 : (int)width[c], s);
            fputs(last ? "\n" : "  ", out);
        }
    }
}

void cli_format_age(int64_t ms, char *out, size_t size)
{
    if (ms < 0)
        ms = 0;
    if (ms < 10000)
        snprintf(out, size, "%.1fs ago", (double)ms / 1000.0);
    else if (ms < 120000)
        snprintf(out, size, "%llds ago", (long long)(ms / 1000));
    else if (ms < 2 * 3600000LL)
        snprintf(out, size, "%lldm ago", (long long)(ms / 60000));
    else if (ms < 48 * 3600000LL)
        snprintf(out, size, "%lldh ago", (long long)(ms / 3600000));
    else
        snprintf(out, size, "%lldd ago", (long long)(ms / 86400000));
}

void cli_format_kb(int64_t kb, char *out, size_t size)
{
    if (kb < 1024)
        snprintf(out, size, "%lldK", (long long)kb);
    else if (kb < 1024 * 1024)
        snprintf(out, size, "%.1fM", (double)kb / 1024.0);
    else
        snprintf(out, size, "%.1fG", (double)kb / (1024.0 * 1024.0));
}

/* "-" for a missing member: every cell and summary shows something. */
static const char *str_member(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "-";
}

static int add_host_row(struct table *t, json_t *host, json_t *now)
{
    char seen[32] = "-", nvms[16];
    json_t *last = json_object_get(host, "last_seen_ms");
    if (json_is_integer(last) && json_is_integer(now))
        cli_format_age(json_integer_value(now) - json_integer_value(last), seen, sizeof(seen));
    snprintf(nvms, sizeof(nvms), "%zu", json_array_size(json_object_get(host, "vms")));
    const char *row[] = {str_member(host, "name"),
                         str_member(host, "role"),
                         str_member(host, "state"),
                         str_member(host, "accel"),
                         seen,
                         nvms};
    return table_add(t, row);
}

static int add_vm_row(struct table *t, json_t *vm, const char *host)
{
    char cpu[16] = "-", rss[16] = "-";
    json_t *cpu_pct = json_object_get(vm, "cpu_pct");
    json_t *rss_kb = json_object_get(vm, "rss_kb");
    if (json_is_number(cpu_pct))
        snprintf(cpu, sizeof(cpu), "%.1f", json_number_value(cpu_pct));
    if (json_is_integer(rss_kb))
        cli_format_kb(json_integer_value(rss_kb), rss, sizeof(rss));
    const char *row[] = {str_member(vm, "name"),   host, str_member(vm, "state"),
                         str_member(vm, "cause"),  cpu,  rss,
                         str_member(vm, "address")};
    return table_add(t, row);
}

/* A standby host's container: CONTAINER HOST SERVICE STATE CPU% MEM ADDRESS. */
static int add_container_row(struct table *t, json_t *c, const char *host)
{
    char cpu[32] = "-", mem[32] = "-";
    json_t *pct = json_object_get(c, "cpu_pct");
    if (json_is_number(pct))
        snprintf(cpu, sizeof(cpu), "%.1f", json_number_value(pct));
    if (json_is_integer(json_object_get(c, "mem_kb")))
        cli_format_kb(json_integer_value(json_object_get(c, "mem_kb")), mem, sizeof(mem));
    const char *row[] = {str_member(c, "name"),   host, str_member(c, "service"),
                         str_member(c, "state"),  cpu,  mem,
                         str_member(c, "address")};
    return table_add(t, row);
}

/* A migration in flight: MIGRATION FROM TO PHASE ELAPSED; one a previous
 * leader began, ended by this one, has no elapsed time (`taken over`). */
static int add_migration_row(struct table *t, json_t *m)
{
    char elapsed[32] = "taken over";
    json_t *ms = json_object_get(m, "elapsed_ms");
    if (json_is_integer(ms))
        snprintf(elapsed, sizeof(elapsed), "%.1fs", (double)json_integer_value(ms) / 1000.0);
    const char *row[] = {str_member(m, "container"), str_member(m, "from"), str_member(m, "to"),
                         str_member(m, "phase"), elapsed};
    return table_add(t, row);
}

/* Redundant servers (docs/ha.md): one row per live instance, the leader first
 * named by its role and the term it leads with. */
static int add_server_rows(struct table *t, json_t *ha)
{
    const char *leader = json_string_value(json_object_get(ha, "leader_name"));
    char term[24] = "-";
    if (json_integer_value(json_object_get(ha, "term")) > 0)
        snprintf(term, sizeof(term), "%lld",
                 (long long)json_integer_value(json_object_get(ha, "term")));
    size_t i;
    json_t *inst;
    int r = 0;
    json_array_foreach(json_object_get(ha, "instances"), i, inst)
    {
        const char *name = str_member(inst, "name");
        bool leads = leader && strcmp(name, leader) == 0;
        const char *self = strcmp(name, str_member(ha, "name")) == 0 ? " (this one)" : "";
        char role[32];
        snprintf(role, sizeof(role), "%s%s", leads ? "leader" : "follower", self);
        const char *row[] = {name, role, leads ? term : "-", str_member(inst, "agents"),
                             str_member(inst, "api")};
        r |= table_add(t, row);
    }
    return r;
}

char *cli_format_status(json_t *status, vcr_error_t *err)
{
    static const char *const srv_head[] = {"SERVER", "ROLE", "TERM", "AGENTS", "API"};
    static const bool srv_right[] = {false, false, true, false, false};
    struct table st = {.ncols = 5, .head = srv_head, .right = srv_right};
    json_t *ha = json_object_get(status, "ha");
    static const char *const ct_head[] = {"CONTAINER", "HOST", "SERVICE", "STATE",
                                          "CPU%",      "MEM",  "ADDRESS"};
    static const bool ct_right[] = {false, false, false, false, true, true, false};
    struct table ct = {.ncols = 7, .head = ct_head, .right = ct_right};
    static const char *const mig_head[] = {"MIGRATION", "FROM", "TO", "PHASE", "ELAPSED"};
    static const bool mig_right[] = {false, false, false, false, true};
    struct table mt = {.ncols = 5, .head = mig_head, .right = mig_right};
    static const char *const host_head[] = {"HOST", "ROLE", "STATE", "ACCEL", "LAST SEEN", "VMS"};
    static const bool host_right[] = {false, false, false, false, false, true};
    static const char *const vm_head[] = {"VM", "HOST", "STATE", "CAUSE", "CPU%", "RSS", "ADDRESS"};
    static const bool vm_right[] = {false, false, false, false, true, true, false};
    json_t *hosts = json_object_get(status, "hosts");
    if (!json_is_array(hosts)) {
        vcr_error_make(err, EPROTO, "status: the server's answer has no `hosts` array");
        return NULL;
    }
    struct table ht = {.ncols = 6, .head = host_head, .right = host_right};
    struct table vt = {.ncols = 7, .head = vm_head, .right = vm_right};
    json_t *now = json_object_get(status, "now_ms");
    size_t i, j;
    json_t *host, *vm;
    int r = ha ? add_server_rows(&st, ha) : 0;
    json_array_foreach(hosts, i, host)
    {
        r |= add_host_row(&ht, host, now);
        json_array_foreach(json_object_get(host, "vms"), j, vm)
        {
            r |= add_vm_row(&vt, vm, str_member(host, "name"));
        }
        json_array_foreach(json_object_get(host, "containers"), j, vm)
        {
            r |= add_container_row(&ct, vm, str_member(host, "name"));
        }
    }
    json_array_foreach(json_object_get(status, "migrations"), i, vm)
    {
        r |= add_migration_row(&mt, vm);
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = r == 0 ? open_memstream(&text, &len) : NULL;
    if (out) {
        if (ha) {
            table_print(&st, out);
            fputc('\n', out);
        }
        if (ha && !json_is_true(json_object_get(ha, "leader")))
            fprintf(out, "this server follows %s: hosts connect to the leader\n",
                    str_member(ha, "leader_name"));
        else if (ht.nrows == 0) {
            fputs("no hosts have connected\n", out);
        } else {
            table_print(&ht, out);
            fputc('\n', out);
            if (vt.nrows)
                table_print(&vt, out);
            else
                fputs("no VMs\n", out);
            if (ct.nrows) {
                fputc('\n', out);
                table_print(&ct, out);
            }
            if (mt.nrows) {
                fputc('\n', out);
                table_print(&mt, out);
            }
        }
        fclose(out);
    }
    table_release(&ht);
    table_release(&vt);
    table_release(&ct);
    table_release(&mt);
    table_release(&st);
    if (text == NULL)
        vcr_error_make(err, ENOMEM, "status: out of memory");
    return text;
}

const char *cli_event_header(void)
{
    return "ID      TIME (UTC)               HOST          VM            KIND       DETAIL";
}

static void format_time(json_t *ts, char *out, size_t size)
{
    if (!json_is_integer(ts) || json_integer_value(ts) < 0) {
        snprintf(out, size, "-");
        return;
    }
    int64_t ms = json_integer_value(ts);
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char day[32];
    gmtime_r(&sec, &tm);
    strftime(day, sizeof(day), "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, size, "%s.%03d", day, (int)(ms % 1000));
}

/* What a human wants to read from each kind's detail (docs/server.md, "Journal"). */
static char *summarise_detail(const char *kind, json_t *d)
{
    char *s = NULL;
    int n = -1;
    if (kind && strcmp(kind, "vm_event") == 0 && json_is_object(d)) {
        json_t *pid = json_object_get(d, "pid");
        if (json_is_integer(pid))
            n = asprintf(&s, "%s: %s (pid %lld)", str_member(d, "state"), str_member(d, "cause"),
                         (long long)json_integer_value(pid));
        else
            n = asprintf(&s, "%s: %s", str_member(d, "state"), str_member(d, "cause"));
    } else if (kind && strcmp(kind, "hello") == 0 && json_is_object(d)) {
        n = asprintf(&s, "role %s, accel %s, agent %s, %lld VMs, from %s", str_member(d, "role"),
                     str_member(d, "accel"), str_member(d, "agent_version"),
                     (long long)json_integer_value(json_object_get(d, "vms")),
                     str_member(d, "peer"));
    } else if (kind && strcmp(kind, "host_up") == 0 && json_is_object(d)) {
        n = asprintf(&s, "from %s", str_member(d, "peer"));
    } else if (kind && strcmp(kind, "host_lost") == 0 && json_is_object(d)) {
        n = asprintf(&s, "silent for %lld ms (host_timeout_ms %lld)",
                     (long long)json_integer_value(json_object_get(d, "silent_ms")),
                     (long long)json_integer_value(json_object_get(d, "host_timeout_ms")));
    } else if (d && !json_is_null(d)) {
        s = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
        n = s ? 0 : -1;
    } else {
        s = strdup("");
        n = s ? 0 : -1;
    }
    return n < 0 ? NULL : s;
}

char *cli_format_event(json_t *event)
{
    char when[40], id[24];
    format_time(json_object_get(event, "ts_ms"), when, sizeof(when));
    snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(event, "id")));
    const char *kind = str_member(event, "kind");
    cleanup_free char *detail = summarise_detail(kind, json_object_get(event, "detail"));
    cleanup_free char *host = printable(str_member(event, "host"));
    cleanup_free char *vm = printable(str_member(event, "vm"));
    cleanup_free char *kind_p = printable(kind);
    cleanup_free char *detail_p = printable(detail);
    char *line = NULL;
    if (host == NULL || vm == NULL || kind_p == NULL || detail_p == NULL ||
        asprintf(&line, "%-7s %-24s %-13s %-13s %-10s %s", id, when, host, vm, kind_p, detail_p) <
            0)
        return NULL;
    return line;
}

char *cli_format_warm_entry(json_t *e)
{
    cleanup_free char *vm = printable(str_member(e, "vm"));
    cleanup_free char *error = printable(str_member(e, "error"));
    cleanup_free char *qemu = printable(str_member(e, "qemu"));
    char *line = NULL;
    int n;
    if (json_is_true(json_object_get(e, "ok"))) {
        char size[32] = "-";
        json_t *bytes = json_object_get(e, "state_bytes");
        if (json_is_integer(bytes))
            cli_format_kb((json_integer_value(bytes) + 1023) / 1024, size, sizeof(size));
        n = asprintf(&line,
                     "%s: warm restart done: pause %.1f ms (suspend %.1f ms, resume %.1f ms), "
                     "launch %.1f ms, state %s, qemu %s",
                     vm, json_number_value(json_object_get(e, "pause_ms")),
                     json_number_value(json_object_get(e, "suspend_ms")),
                     json_number_value(json_object_get(e, "resume_ms")),
                     json_number_value(json_object_get(e, "launch_ms")), size, qemu);
    } else if (json_is_true(json_object_get(e, "fallback"))) {
        n = asprintf(&line, "%s: warm restart FAILED, booted cold instead: %s", vm, error);
    } else {
        n = asprintf(&line, "%s: warm restart FAILED: %s", vm, error);
    }
    return n < 0 ? NULL : line;
}
