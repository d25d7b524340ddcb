/* vcr's formatting of the API's answers, and its HTTP client's errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_cost.h"
#include "common/cleanup.h"

/* What GET /v1/status answers: two hosts, one lost; samples on one VM only. */
static const char status_json[] =
    "{\"now_ms\": 1700000060000, \"server_version\": \"0.1.0\", \"hosts\": ["
    " {\"name\": \"node1\", \"role\": \"host\", \"state\": \"connected\", \"accel\": \"kvm\","
    "  \"last_seen_ms\": 1700000059600, \"vms\": ["
    "   {\"name\": \"web1\", \"state\": \"running\", \"cause\": null, \"pid\": 100,"
    "    \"address\": \"10.0.0.2\", \"cpu_pct\": 12.5, \"rss_kb\": 524288},"
    "   {\"name\": \"db1\", \"state\": \"crashed\", \"cause\": \"qemu killed by signal 9\","
    "    \"pid\": null, \"address\": \"10.0.0.3\", \"cpu_pct\": null, \"rss_kb\": null}]},"
    " {\"name\": \"standby-7\", \"role\": \"standby\", \"state\": \"lost\", \"accel\": \"tcg\","
    "  \"last_seen_ms\": 1700000000000, \"vms\": ["
    "   {\"name\": \"ct-web1\", \"state\": \"paused\", \"cause\": \"qmp STOP\","
    "    \"address\": null, \"cpu_pct\": 100.0, \"rss_kb\": 1572864}]}]}";

static const char status_table[] =
    "HOST       ROLE     STATE      ACCEL  LAST SEEN  VMS\n"
    "node1      host     connected  kvm    0.4s ago     2\n"
    "standby-7  standby  lost       tcg    60s ago      1\n"
    "\n"
    "VM       HOST       STATE    CAUSE                     CPU%     RSS  ADDRESS\n"
    "web1     node1      running  -                         12.5  512.0M  10.0.0.2\n"
    "db1      node1      crashed  qemu killed by signal 9      -       -  10.0.0.3\n"
    "ct-web1  standby-7  paused   qmp STOP                 100.0    1.5G  -\n";

static void test_format_status_table(void **state)
{
    (void)state;
    json_t *status = json_loads(status_json, 0, NULL);
    assert_non_null(status);
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *text = cli_format_status(status, &err);
    assert_non_null(text);
    if (strcmp(text, status_table) != 0)
        fail_msg("got:\n%s\nexpected:\n%s", text, status_table);
    json_decref(status);
}

/* Migrations in flight (GET /v1/status `migrations`): a table after the others;
 * one a previous leader began, ended by this one, shows `taken over`. */
static void test_format_status_migrations(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    json_t *st = json_loads(
        "{\"now_ms\": 0, \"hosts\": [{\"name\": \"sb1\", \"vms\": []}], \"migrations\": ["
        "{\"container\": \"web1-c\", \"from\": \"sb1\", \"to\": \"sb2\", \"phase\": "
        "\"final_dump\", \"elapsed_ms\": 1250},"
        "{\"container\": \"web2-c\", \"from\": \"sb1\", \"to\": \"sb3\", \"phase\": "
        "\"rolling_back\", \"taken_over\": true}]}",
        0, NULL);
    assert_non_null(st);
    cleanup_free char *text = cli_format_status(st, &err);
    const char *want = "HOST  ROLE  STATE  ACCEL  LAST SEEN  VMS\n"
                       "sb1   -     -      -      -            0\n"
                       "\n"
                       "no VMs\n"
                       "\n"
                       "MIGRATION  FROM  TO   PHASE            ELAPSED\n"
                       "web1-c     sb1   sb2  final_dump          1.2s\n"
                       "web2-c     sb1   sb3  rolling_back  taken over\n";
    if (text == NULL || strcmp(text, want) != 0)
        fail_msg("got:\n%s\nexpected:\n%s", text ? text : "(null)", want);
    json_decref(st);
}

/* Redundant servers: the instances, who leads and its term, first. */
static void test_format_status_ha(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    json_t *st = json_loads(
        "{\"hosts\": [], \"ha\": {\"name\": \"s2\", \"leader\": false, \"term\": 41, "
        "\"leader_name\": \"s1\", \"instances\": ["
        "{\"name\": \"s1\", \"agents\": \"10.77.0.1:7070\", \"api\": \"127.0.0.1:7080\"},"
        "{\"name\": \"s2\", \"agents\": \"10.77.0.1:7073\", \"api\": \"127.0.0.1:7081\"}]}}",
        0, NULL);
    assert_non_null(st);
    cleanup_free char *text = cli_format_status(st, &err);
    const char *want = "SERVER  ROLE                 TERM  AGENTS          API\n"
                       "s1      leader                 41  10.77.0.1:7070  127.0.0.1:7080\n"
                       "s2      follower (this one)     -  10.77.0.1:7073  127.0.0.1:7081\n"
                       "\n"
                       "this server follows s1: hosts connect to the leader\n";
    if (text == NULL || strcmp(text, want) != 0)
        fail_msg("got:\n%s\nexpected:\n%s", text ? text : "(null)", want);
    json_decref(st);
}

static void test_format_status_empty_and_bad(void **state)
{
    (void)state;
    cleanup_error vcr_error_t err = NULL;
    json_t *empty = json_pack("{s:[], s:I}", "hosts", "now_ms", (json_int_t)1);
    cleanup_free char *text = cli_format_status(empty, &err);
    assert_string_equal(text, "no hosts have connected\n");
    json_decref(empty);

    json_t *no_vms = json_loads("{\"hosts\": [{\"name\": \"n\", \"vms\": []}]}", 0, NULL);
    cleanup_free char *text2 = cli_format_status(no_vms, &err);
    assert_string_equal(text2, "HOST  ROLE  STATE  ACCEL  LAST SEEN  VMS\n"
                               "n     -     -      -      -            0\n"
                               "\n"
                               "no VMs\n");
    json_decref(no_vms);

    json_t *bad = json_pack("{s:s}", "error", "x");
    assert_null(cli_format_status(bad, &err));
    assert_non_null(strstr(vcr_error_msg(err), "no `hosts` array"));
    json_decref(bad);
}

static void test_format_status_hostile_strings(void **state)
{
    (void)state;
    json_t *status = json_loads("{\"now_ms\": 0, \"hosts\": [{\"name\": \"n\", \"vms\": ["
                                "{\"name\": \"v\", \"state\": \"crashed\","
                                " \"cause\": \"line\\nbreak \\u001b[31mred\"}]}]}",
                                0, NULL);
    cleanup_error vcr_error_t err = NULL;
    cleanup_free char *text = cli_format_status(status, &err);
    assert_non_null(strstr(text, "line?break ?[31mred"));
    assert_null(strchr(text, '\x1b'));
    json_decref(status);
}

static void test_format_age_and_size(void **state)
{
    (void)state;
    char buf[32];
    static const struct {
        int64_t ms;
        const char *text;
    } ages[] = {{-5, "0.0s ago"},      {400, "0.4s ago"},    {9999, "10.0s ago"},
                {10000, "10s ago"},    {119999, "119s ago"}, {120000, "2m ago"},
                {7199999, "119m ago"}, {7200000, "2h ago"},  {172800000, "2d ago"}};
    for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
        cli_format_age(ages[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, ages[i].text);
    }
    cli_format_kb(980, buf, sizeof(buf));
    assert_string_equal(buf, "980K");
    cli_format_kb(1024, buf, sizeof(buf));
    assert_string_equal(buf, "1.0M");
    cli_format_kb(3 * 1024 * 1024, buf, sizeof(buf));
    assert_string_equal(buf, "3.0G");
}

static void expect_event_line(const char *event_json, const char *line)
{
    json_t *ev = json_loads(event_json, 0, NULL);
    assert_non_null(ev);
    cleanup_free char *got = cli_format_event(ev);
    if (got == NULL || strcmp(got, line) != 0)
        fail_msg("got:\n%s\nexpected:\n%s", got ? got : "(null)", line);
    json_decref(ev);
}

static void test_format_events(void **state)
{
    (void)state;
    expect_event_line(
        "{\"id\": 12, \"ts_ms\": 1700000000123, \"rx_ms\": 1700000000130, \"host\": \"node1\","
        " \"vm\": \"db1\", \"kind\": \"vm_event\", \"detail\": {\"state\": \"crashed\","
        " \"cause\": \"qemu killed by signal 9\", \"pid\": 101}}",
        "12      2023-11-14 22:13:20.123  node1         db1           vm_event   crashed: qemu "
        "killed by signal 9 (pid 101)");
    expect_event_line(
        "{\"id\": 1, \"ts_ms\": 1700000000000, \"host\": \"node1\", \"vm\": null,"
        " \"kind\": \"hello\", \"detail\": {\"role\": \"host\", \"accel\": \"kvm\","
        " \"agent_version\": \"0.1.0\", \"pid\": 7, \"vms\": 2, \"peer\": \"10.0.0.1:4000\"}}",
        "1       2023-11-14 22:13:20.000  node1         -             hello      role host, accel "
        "kvm, agent 0.1.0, 2 VMs, from 10.0.0.1:4000");
    expect_event_line(
        "{\"id\": 3, \"ts_ms\": 1700000000000, \"host\": \"node1\", \"vm\": null,"
        " \"kind\": \"host_lost\", \"detail\": {\"silent_ms\": 3512, \"host_timeout_ms\": 3500}}",
        "3       2023-11-14 22:13:20.000  node1         -             host_lost  silent for 3512 "
        "ms (host_timeout_ms 3500)");
    /* A kind this vcr does not know: its detail as JSON. */
    expect_event_line("{\"id\": 4, \"ts_ms\": 1700000000000, \"host\": null, \"vm\": null,"
                      " \"kind\": \"failover\", \"detail\": {\"to\": \"standby-7\"}}",
                      "4       2023-11-14 22:13:20.000  -             -             failover   "
                      "{\"to\":\"standby-7\"}");
    assert_non_null(strstr(cli_event_header(), "KIND"));
}

/* One line per VM of a warm restart: the guest's pause first; a failure says
 * whether the VM was booted cold or runs on untouched. */
static void test_format_warm_entry(void **state)
{
    (void)state;
    cleanup_json json_t *ok =
        json_pack("{s:s, s:b, s:b, s:n, s:f, s:f, s:f, s:f, s:f, s:i, s:s}", "vm", "web1", "ok", 1,
                  "fallback", 0, "error", "launch_ms", 78.1, "pause_ms", 40.2, "suspend_ms", 24.6,
                  "resume_ms", 15.6, "downtime_ms", 40.2, "state_bytes", 616592, "qemu",
                  "/usr/bin/qemu-system-x86_64");
    cleanup_free char *line = cli_format_warm_entry(ok);
    assert_string_equal(line, "web1: warm restart done: pause 40.2 ms (suspend 24.6 ms, resume "
                              "15.6 ms), launch 78.1 ms, state 603K, qemu "
                              "/usr/bin/qemu-system-x86_64");
    cleanup_json json_t *failed =
        json_pack("{s:s, s:b, s:b, s:s, s:f}", "vm", "web3", "ok", 0, "fallback", 0, "error",
                  "new qemu (/opt/q): qemu exited with status 1 before its QMP greeting; the "
                  "old qemu runs on",
                  "pause_ms", 0.0);
    cleanup_free char *line2 = cli_format_warm_entry(failed);
    assert_string_equal(line2, "web3: warm restart FAILED: new qemu (/opt/q): qemu exited with "
                               "status 1 before its QMP greeting; the old qemu runs on");
    cleanup_json json_t *cold = json_pack("{s:s, s:b, s:b, s:s}", "vm", "web2", "ok", 0, "fallback",
                                          1, "error", "state file fails its checksum");
    cleanup_free char *line3 = cli_format_warm_entry(cold);
    assert_string_equal(line3,
                        "web2: warm restart FAILED, booted cold instead: state file fails its "
                        "checksum");
}

static void test_http_unreachable(void **state)
{
    (void)state;
    /* A port nobody listens on: bind, note it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%u", ntohs(sin.sin_port));
    cleanup_error vcr_error_t err = NULL;
    assert_null(cli_http_request(server, "GET", "/v1/status", 5, &err));
    assert_non_null(strstr(vcr_error_msg(err), server));
    assert_non_null(strstr(vcr_error_msg(err), "cannot connect"));
    vcr_error_release(&err);

    assert_null(cli_http_request("localhost", "GET", "/v1/status", 5, &err));
    assert_non_null(strstr(vcr_error_msg(err), "server address"));
}

/* vcr cost: the paper's example (4 services on RHEL VMs of 8 vCPU / 32 GB, one
 * shared standby VM of the same size): 4 standby VMs become 1, about 15,000
 * a year at 0.57 an hour per VM.  A standby VM the inventory does not know is
 * listed, not guessed. */
static void test_cost_report(void **state)
{
    (void)state;
    static const char status[] = "{\"hosts\": [{\"name\": \"node1\", \"vms\": ["
                                 " {\"name\": \"db\", \"vcpus\": 8, \"memory_mb\": 32768},"
                                 " {\"name\": \"web\", \"vcpus\": 8, \"memory_mb\": 32768},"
                                 " {\"name\": \"mail\", \"vcpus\": 8, \"memory_mb\": 32768},"
                                 " {\"name\": \"wiki\", \"vcpus\": 8, \"memory_mb\": 32768},"
                                 " {\"name\": \"sb1\", \"vcpus\": 8, \"memory_mb\": 32768}]},"
                                 " {\"name\": \"sb1\", \"role\": \"standby\", \"vms\": []}]}";
    static const char services[] =
        "{\"services\": ["
        " {\"name\": \"a\", \"primary\": {\"vm\": \"db\"}, \"standby\": {\"host\": \"sb1\"}},"
        " {\"name\": \"b\", \"primary\": {\"vm\": \"web\"}, \"standby\": {\"host\": \"sb1\"}},"
        " {\"name\": \"c\", \"primary\": {\"vm\": \"mail\"}, \"standby\": {\"host\": \"sb1\"}},"
        " {\"name\": \"d\", \"primary\": {\"vm\": \"wiki\"}, \"standby\": {\"host\": \"sb1\"}}]}";
    cleanup_json json_t *st = json_loads(status, 0, NULL);
    cleanup_json json_t *sv = json_loads(services, 0, NULL);
    cleanup_json json_t *prices = json_loads("{\"currency\": \"USD\", \"vm_hour\": 0.57}", 0, NULL);
    assert_non_null(st);
    assert_non_null(sv);
    cleanup_error vcr_error_t err = NULL;
    assert_int_equal(cli_cost_check_prices(prices, &err), 0);
    cleanup_json json_t *r = cli_cost_report(st, sv, prices, &err);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "services")), 4);
    json_t *schemes = json_object_get(r, "schemes");
    assert_int_equal(json_array_size(schemes), 4);
    json_t *warm_vm = json_array_get(schemes, 0), *cold_vm = json_array_get(schemes, 1),
           *warm_ct = json_array_get(schemes, 2);
    assert_string_equal(json_string_value(json_object_get(warm_vm, "scheme")), "warm-vm");
    assert_int_equal(json_integer_value(json_object_get(warm_vm, "vms")), 4);
    assert_int_equal(json_integer_value(json_object_get(warm_vm, "vcpus")), 32);
    assert_int_equal(json_integer_value(json_object_get(warm_vm, "memory_mb")), 4 * 32768);
    assert_int_equal(json_integer_value(json_object_get(cold_vm, "vms")), 0);
    assert_string_equal(json_string_value(json_object_get(warm_ct, "scheme")), "warm-container");
    assert_int_equal(json_integer_value(json_object_get(warm_ct, "vms")), 1);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(warm_ct, "standby_vms"), 0)), "sb1");
    /* 4 x 0.57 x 8760 = 19972.80; 3 VMs saved = 14979.60 */
    assert_true(json_real_value(json_object_get(warm_vm, "per_year")) > 19972.79 &&
                json_real_value(json_object_get(warm_vm, "per_year")) < 19972.81);
    assert_true(json_real_value(json_object_get(warm_ct, "saving_per_year")) > 14979.59 &&
                json_real_value(json_object_get(warm_ct, "saving_per_year")) < 14979.61);
    assert_int_equal(json_array_size(json_object_get(r, "unknown")), 0);

    /* Without prices: no money; a standby VM no host reported: listed as unknown. */
    json_array_remove(json_object_get(json_array_get(json_object_get(st, "hosts"), 0), "vms"), 4);
    cleanup_json json_t *r2 = cli_cost_report(st, sv, NULL, &err);
    assert_non_null(r2);
    json_t *ct2 = json_array_get(json_object_get(r2, "schemes"), 2);
    assert_true(json_is_null(json_object_get(ct2, "per_year")));
    assert_int_equal(json_integer_value(json_object_get(ct2, "vms")), 1);
    assert_int_equal(json_integer_value(json_object_get(ct2, "vcpus")), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(r2, "unknown"), 0)),
                        "sb1");

    /* Not the API's JSON. */
    cleanup_json json_t *junk = json_loads("{\"hosts\": 3}", 0, NULL);
    assert_null(cli_cost_report(junk, sv, NULL, &err));
    assert_non_null(strstr(vcr_error_msg(err), "GET /v1/status"));
}

static void test_cost_prices_refused(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"[1]", "JSON object"},
        {"{\"vm_hours\": 1}", "unknown key `vm_hours`; allowed: currency, vm_hour"},
        {"{\"vm_hour\": -1}", "`vm_hour` is -1; allowed: a number >= 0"},
        {"{\"gib_hour\": \"cheap\"}", "`gib_hour` is \"cheap\""},
        {"{\"hours_per_year\": 0}", "`hours_per_year` is 0; allowed: a number of hours above 0"},
        {"{\"currency\": 5}", "`currency` must be a string"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cleanup_json json_t *p = json_loads(bad[i].json, JSON_DECODE_ANY, NULL);
        assert_non_null(p);
        cleanup_error vcr_error_t err = NULL;
        assert_int_equal(cli_cost_check_prices(p, &err), -1);
        if (strstr(vcr_error_msg(err), bad[i].want) == NULL)
            fail_msg("%s: got `%s`, want `%s`", bad[i].json, vcr_error_msg(err), bad[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_status_table),
        cmocka_unit_test(test_format_status_ha),
        cmocka_unit_test(test_format_status_migrations),
        cmocka_unit_test(test_format_status_empty_and_bad),
        cmocka_unit_test(test_format_status_hostile_strings),
        cmocka_unit_test(test_format_age_and_size),
        cmocka_unit_test(test_format_events),
        cmocka_unit_test(test_format_warm_entry),
        cmocka_unit_test(test_http_unreachable),
        cmocka_unit_test(test_cost_report),
        cmocka_unit_test(test_cost_prices_refused),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
