#!/usr/bin/env python3
"""bench-hostfail (issue 15): a whole host lost, client-visible time; new timeouts vs old.

In one run on one machine, with one protected service (bench/recovery.py's warm-container
service `wc`: a busybox primary VM under host agent `pwc`, its warm container in the
standby VM `sbw` of agent `stb`), the whole primary host is lost at once: `kill -9` of its
host agent, of the agent's fence watchdog and of the VM's QEMU.  Nothing reports the VM's
end: the server finds the host silent (host timeout), cuts it off, waits until the host's
self-fence must have fired (docs/recovery.md, "Fencing"), then readies the standby, checks
its port and switches DNS.  A client inside the lab namespace re-resolves the name through
the lab DNS server at every poll (20 ms; bench/recovery.py's no-cache client) and the time
runs from the kill to its first HTTP 200 from the standby.

Two server settings, alternating run by run in the same lab (the server is restarted with
the other configuration between runs; the agents reconnect):
  new   the server's defaults: heartbeat 250 ms, host timeout 1250 ms, fence timeout
        1250 ms (the agent's watchdog limit, welcome's fence_after_ms: 1875 ms).
  old   the defaults before them: heartbeat 1000 ms, host timeout 3500 ms, fence timeout
        5500 ms (fence_after_ms 8000 ms).
The agents use their own defaults (fence_timeout_ms 10000, lowered to fence_after_ms).

Phases from the journal (server wall clock, the same host clock as the kill): detect =
kill .. `detected` (the host declared lost), fence = .. `fenced` (the self-fence counted
on), ready = .. `port_open`, dns = .. `dns_updated`, client = .. the client's first good
answer; total = kill .. that answer.  After each run the primary's agent is started again
with a fresh state dir and the VM off, and `vcr failback` starts the primary and moves the
name back (`restore` of lab/recovery_lab.py, as bench/recovery.py does).

Heartbeat gaps: GET /metrics (`vcr_host_heartbeat_gap_seconds`, `_max_seconds`) is read
before each server restart, per host; the .md gives each setting's gap count, p99 (bucket
bound) and max, and every `host_lost` of a host that was not killed (a false declaration).

Results: bench/results/hostfail.{md,csv,png}.  CSV columns: setting, run, detect_ms,
fence_ms, ready_ms, dns_ms, client_ms, total_ms, load1 (1-min load average at the kill).
`make bench-hostfail` (RUNS=N, default 5 per setting).  Runs inside its own lab namespace
(VCR_LAB_NS, default vcrbr) and tears it down.
"""
import argparse
import csv
import json
import os
import re
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrbr")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
import harness  # noqa: E402
import recovery_lab as rec  # noqa: E402
from harness import say  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
MODE = "warm-container"
S = rec.SVC[MODE]
SETTINGS = {
    "new": {},  # the server's defaults
    "old": {"heartbeat_ms": 1000, "host_timeout_ms": 3500, "fence_timeout_ms": 5500},
}
LABELS = {"new": "new defaults (heartbeat 250, host timeout 1250, fence timeout 1250 ms)",
          "old": "old defaults (heartbeat 1000, host timeout 3500, fence timeout 5500 ms)"}
PHASES = ["detected", "fenced", "port_open", "dns_updated"]
COLS = ["setting", "run", "detect_ms", "fence_ms", "ready_ms", "dns_ms", "client_ms",
        "total_ms", "load1"]
TIMING_KEYS = re.compile(r"^(heartbeat_ms|host_timeout_ms|fence_timeout_ms):")


class HostCluster(rec.Cluster):
    """The recovery lab (lab/recovery_lab.py), its server configured with one of SETTINGS."""
    setting = "new"

    def write_server_config(self, path, services, cold_as_warm=False):
        super().write_server_config(path, services, cold_as_warm)
        with open(path) as f:
            lines = [x for x in f.read().splitlines() if not TIMING_KEYS.match(x)]
        lines += [f"{k}: {v}" for k, v in SETTINGS[self.setting].items()]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


def fence_watchdog_pids(state_dir):
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--fence-watchdog" in argv and state_dir.encode() in argv:
            pids.append(int(p))
    return pids


def one_run(cl, setting, run):
    e = cl.env
    st = cl.service(S["svc"])
    if st["state"] not in ("ok", "degraded") or st["served_by"] != "primary":
        raise RuntimeError(f"service {S['svc']} not ready: {st['state']}, {st['served_by']}")
    vm = cl.vcr.vm(S["vm"])
    if not vm or vm.get("state") != "running" or not vm.get("pid"):
        raise RuntimeError(f"primary {S['vm']} not running: {vm}")
    agent = cl.agents[S["host"]][0]
    wds = fence_watchdog_pids(cl.state_dirs[S["host"]])
    if not wds:
        raise RuntimeError(f"no fence watchdog found for {S['host']}")
    since = rec.last_event_id(cl)
    ev = rec.Events(cl.vcr, since)
    seen = []
    client = rec.Client(f"{S['svc']}.{e['VCR_LAB_ZONE']}", e["VCR_LAB_DNS"], S["sb_addr"],
                        S["addr"])
    try:
        t_fail = time.time()
        for pid in [agent.pid] + wds + [vm["pid"]]:
            os.kill(pid, signal.SIGKILL)
        client.go()
        load = os.getloadavg()[0]
        say(f"  {setting} run {run}: killed agent {agent.pid}, watchdog {wds}, qemu "
            f"{vm['pid']} (load {load:.2f})")
        end = ev.wait(rec.is_phase(S["svc"], phases=("client_confirmed", "failed")), 120, seen)
        if rec.detail(end).get("phase") == "failed":
            raise RuntimeError(f"recovery failed: {json.dumps(rec.detail(end))}")
        res = client.result(60)
    finally:
        client.kill()
        ev.stop()
    ts = {}
    for x in seen:
        d = rec.detail(x)
        if x.get("kind") == "recovery" and d.get("service") == S["svc"]:
            ts.setdefault(d.get("phase"), x["ts_ms"])
    missing = [p for p in PHASES if p not in ts]
    if missing or not res.get("t_good_new"):
        raise RuntimeError(f"phases missing {missing} or no client answer: {ts} {res}")
    tf = t_fail * 1000
    row = {"setting": setting, "run": run, "detect_ms": round(ts["detected"] - tf),
           "fence_ms": ts["fenced"] - ts["detected"], "ready_ms": ts["port_open"] - ts["fenced"],
           "dns_ms": ts["dns_updated"] - ts["port_open"],
           "client_ms": round(res["t_good_new"] * 1000 - ts["dns_updated"]),
           "total_ms": round(res["t_good_new"] * 1000 - tf), "load1": f"{load:.2f}"}
    say(f"  {setting} run {run}: total {row['total_ms']} ms (detect {row['detect_ms']}, fence "
        f"{row['fence_ms']}, ready {row['ready_ms']}, dns {row['dns_ms']}, client "
        f"{row['client_ms']})")
    return row


def write_report(rows, gaps, false_lost, args, started, failures, partial):
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, "hostfail")
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLS)
        w.writeheader()
        w.writerows(rows)
    m = harness.machine()
    med = {}
    L = ["# bench-hostfail: a whole host lost, client-visible time (new timeouts vs old)", "",
         f"Generated by `bench/hostfail.py` (--runs {args.runs}) on "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
         + (" (**partial**: the run was cut short)" if partial else "") + ".", "",
         "## Machine", "",
         f"- {harness.machine_line(m)}",
         f"- Load average (1, 5, 15 min) at the start {started['load']}, at the end "
         f"{m['load']}; each run's 1-min load at the kill is in the CSV (`load1`). **The "
         "machine is shared and was busy**: other jobs ran beside the bench, so absolute "
         "times are pessimistic; the ratio between the settings, measured in the same lab, "
         "is what to read.", "",
         "## How it is measured", "",
         "- Failure: the whole primary host at once: `kill -9` of its host agent, of the "
         "agent's fence watchdog and of the primary VM's QEMU. Nothing reports the VM's end: "
         "the server declares the host lost after its host timeout, cuts it off and counts "
         "on the host's self-fence (docs/recovery.md, \"Fencing\"), then the warm container "
         "(already running in the standby VM) gets the name.",
         "- Client: inside the lab namespace, every 20 ms a fresh UDP A query to the lab's "
         "BIND9 and `GET /` to the address returned (bench/recovery.py's no-cache client); "
         "total = kill .. its first HTTP 200 from the standby.",
         "- Phases from the journal: detect = kill .. `detected`; fence = .. `fenced`; ready "
         "= .. `port_open`; dns = .. `dns_updated`; client = .. the client's answer.",
         "- Settings alternate run by run in the same lab (the server restarted with the "
         "other configuration; the agents reconnect). Agents: their default "
         "fence_timeout_ms (10000), lowered to the server's `fence_after_ms`.", "",
         "## Client-visible time (medians [min-max], ms)", "",
         "| server setting | detect | fence | ready | dns | client | **total** | runs |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SETTINGS:
        rs = [r for r in rows if r["setting"] == s]
        if not rs:
            continue
        st = {c: harness.stats([r[c] for r in rs]) for c in COLS[2:8]}
        med[s] = st["total_ms"]
        L.append(f"| {LABELS[s]} | " + " | ".join(harness.fmt_stats(st[c]) for c in COLS[2:7])
                 + f" | **{harness.fmt_stats(st['total_ms'])}** | {len(rs)} |")
    if "new" in med and "old" in med and med["new"][0] > 0:
        L += ["", f"Median total, old / new: **{med['old'][0] / med['new'][0]:.2f}x**; "
              f"new: {med['new'][0]:.0f} ms median, {med['new'][2]:.0f} ms max, against the "
              "goal of 3000 ms."]
    L += ["", "## Heartbeat gaps seen by the server (GET /metrics)", "",
          "Per setting and host, summed over that setting's server sessions: gaps counted, "
          "the bucket bound under which 99% fall (`vcr_host_heartbeat_gap_seconds`), the "
          "longest (`_max_seconds`). The killed host's last connection is included.", "",
          "| setting | host | gaps | p99 (s, bucket bound) | max (s) |", "|---|---|---:|---:|---:|"]
    for s in SETTINGS:
        for host, h in sorted(gaps.get(s, {}).items()):
            L.append(f"| {s} | {host} | {h['count']} | {harness.gap_p99(h):g} | {h['max_s']:.3f} |")
    L += ["", f"False host-loss declarations (`host_lost` of a host other than "
          f"`{S['host']}`): **{len(false_lost)}**"
          + ("" if not false_lost else ": " + "; ".join(false_lost)), ""]
    if failures:
        L += ["## Failures", ""] + [f"- {x}" for x in failures] + [""]
    L += ["Plot: `hostfail.png` (each run's total and detection, by setting).", "",
          "Run: `make bench-hostfail` (RUNS=N per setting, default 5), under the lab lock.", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(L))
    plot(rows, base)


def plot(rows, base):
    if not rows:
        return
    dat = base + ".dat"
    with open(dat, "w") as f:
        for i, s in enumerate(SETTINGS):
            for r in rows:
                if r["setting"] == s:
                    f.write(f"{i} {r['total_ms']} {r['detect_ms']}\n")
    script = f"""set terminal pngcairo size 800,480
set output '{base}.png'
set title 'Whole host lost (kill -9 agent + watchdog + QEMU): client-visible time'
set ylabel 'ms from the kill'
set xtics ('new defaults' 0, 'old defaults' 1)
set xrange [-0.5:1.5]
set yrange [0:*]
set grid ytics
set key top left
plot '{dat}' using 1:2 with points pt 7 ps 1.2 title 'total (client answer)', \\
     '{dat}' using 1:3 with points pt 5 ps 1 title 'detected (host lost)', \\
     3000 with lines dt 2 lw 2 title 'goal 3000 ms'
"""
    harness.gnuplot(script, dat)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=5, help="runs per setting (default 5)")
    ap.add_argument("--keep-lab", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("hostfail: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    started = harness.machine()
    work = tempfile.mkdtemp(prefix="vcr-bench-hostfail-")
    rows, failures, gaps, false_lost = [], [], {}, []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    say(f"lab up (namespace {labkit.NS}); work dir {work}")
    labkit.lab_up()
    cl = HostCluster(build, work, [MODE])
    hosts = [S["host"], "stb", rec.SB_WARM["name"]]

    def agents_back():
        labkit.wait_for("every agent connected", lambda: all(
            (cl.host(h) or {}).get("state") == "connected" for h in hosts), 60, interval=0.5)

    def switch_to(setting):
        if cl.server and cl.setting != setting:
            harness.merge_gaps(gaps.setdefault(cl.setting, {}), harness.metrics_gaps())
        if cl.server is None or cl.setting != setting:
            cl.setting = setting
            cl.start_server(services=True)
            agents_back()
            labkit.wait_for(f"service {S['svc']} ok", lambda: cl.service(S["svc"])["state"] == "ok",
                            120, interval=0.5)

    try:
        cl.start_server(services=False)
        cl.start_agent(S["host"], [cl.primary_vm(MODE)])
        cl.start_agent("stb", [cl.standby_vm(rec.SB_WARM)])
        rec.dns_set(cl, f"{S['svc']}.{cl.env['VCR_LAB_ZONE']}", S["addr"])
        rec.wait_http(S["addr"], rec.BOOT_TIMEOUT)
        labkit.wait_for("standby agent hello", lambda: cl.standby_up(rec.SB_WARM["name"]),
                        rec.BOOT_TIMEOUT, interval=1)
        r = cl.vcr.json("container", "create", rec.SB_WARM["name"], S["ct"], "--address",
                        f"{S['sb_addr']}/24", "--service", S["svc"], "--gateway",
                        cl.env["VCR_LAB_BRIDGE_ADDR"])
        rec.wait_http(S["sb_addr"], 120)
        say(f"warm container {S['ct']} up ({r.get('ms')} ms)")
        cl.server.stop()
        cl.server = None
        first_id = 0
        for run in range(args.runs):
            for setting in (("new", "old") if run % 2 == 0 else ("old", "new")):
                switch_to(setting)
                if not first_id:
                    first_id = rec.last_event_id(cl)
                try:
                    rows.append(one_run(cl, setting, run))
                except Exception as e:  # noqa: BLE001
                    failures.append(f"{setting} run {run}: {e}")
                    say(f"  FAILED: {e}")
                try:
                    rec.restore(cl, MODE)
                except Exception as e:  # noqa: BLE001
                    failures.append(f"after {setting} run {run}: restore failed: {e}")
                    raise
                write_report(rows, gaps, false_lost, args, started, failures, True)
        harness.merge_gaps(gaps.setdefault(cl.setting, {}), harness.metrics_gaps())
        for x in cl.vcr.events(first_id):
            if x.get("kind") == "host_lost" and x.get("host") != S["host"]:
                false_lost.append(f"{x.get('host')} at event {x.get('id')} "
                                  f"({json.dumps(rec.detail(x))})")
    except Exception as e:  # noqa: BLE001
        failures.append(f"aborted: {e}")
        say(f"ABORTED: {e}")
        raise
    finally:
        cl.stop()
        if not args.keep_lab:
            labkit.lab_down()
        write_report(rows, gaps, false_lost, args, started, failures, bool(failures))
        say(f"wrote {RESULTS}/hostfail.md; logs in {work}")
    print(open(os.path.join(RESULTS, "hostfail.md")).read())
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
