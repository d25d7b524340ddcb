#!/usr/bin/env python3
"""bench-soak (issue 15): false host-loss declarations and heartbeat gaps under load, with
the server's default timeouts (heartbeat 250 ms, host timeout 1250 ms, fence timeout 1250 ms).

Real lab, nothing killed: one server with its defaults; host agent `soakh` with two busybox
VMs (`soakp`, always running, and `soakb`, autostart off); host agent `stb` with two
standby VMs (`sba`, `sbb`: busybox initramfs with LXC + CRIU, 512 MB, 2 vCPUs, their own
standby agents); a container `soak-ct` (busybox httpd) created in `sba`.  For --minutes
(default 7: one lab hold), over and over:
  boot          `vcr vm start soakb`, wait for its HTTP answer, `vcr vm stop soakb` and wait
                for it to be stopped (a guest boot under TCG: the heaviest CPU load);
  warm-restart  `vcr vm warm-restart soakp` (the host agent's QMP work, docs/warm-restart.md);
  migrate       `vcr container migrate` of soak-ct to the other standby VM (CRIU dump, tar,
                restore inside both VMs: the standby agents' heaviest work).
Every host here stays up, so every `host_lost` in the journal is a false declaration:
counted, with its host and silence.  At the end, GET /metrics gives each host's heartbeat
gap histogram (`vcr_host_heartbeat_gap_seconds`: p99 as a bucket bound) and longest gap
(`vcr_host_heartbeat_gap_max_seconds`), which the host timeout must exceed.  The 1-min load
average is recorded at each action.

--append adds this hold's runs to the existing results (several holds of at most ~10 min
make a longer soak): bench/results/soak.json keeps each hold's summary, soak.csv every
action (hold, t_s, action, ok, ms, load1, error), soak.md the tables, soak.png the gap
histograms of all holds.  `make bench-soak` (MINUTES=N, APPEND=1).  Runs inside its own lab
namespace (VCR_LAB_NS, default vcrbr) and tears it down.
"""
import argparse
import csv
import json
import os
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
BASE = os.path.join(RESULTS, "soak")
HOST, PRIMARY, BOOTVM = "soakh", ("soakp", 0, "10.77.0.11"), ("soakb", 1, "10.77.0.12")
STANDBYS = [("sba", 5, "10.77.0.21"), ("sbb", 6, "10.77.0.22")]
CT, CT_ADDR = "soak-ct", "10.77.0.31"
COLS = ["hold", "t_s", "action", "ok", "ms", "load1", "error"]


class SoakCluster(rec.Cluster):
    def write_server_config(self, path, services, cold_as_warm=False):
        # The server's own defaults: no heartbeat, host or fence timeout written.
        labkit.write_server_config(path, os.path.join(self.work, "journal.db"),
                                   heartbeat_ms=None)


def timed(fn):
    t = time.monotonic()
    try:
        fn()
        return True, round((time.monotonic() - t) * 1000), ""
    except Exception as e:  # noqa: BLE001
        return False, round((time.monotonic() - t) * 1000), str(e)[:300]


def vcr_ok(cl, *args, timeout=300):
    r = cl.vcr.run(*args, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"vcr {' '.join(args)}: {(r.stderr or r.stdout).strip()[:200]}")
    return r


def container_host(cl):
    for name, _, _ in STANDBYS:
        h = cl.host(name) or {}
        if any(c.get("name") == CT for c in h.get("containers") or []):
            return name
    return None


def boot(cl):
    vcr_ok(cl, "vm", "start", BOOTVM[0], timeout=30)
    rec.wait_http(BOOTVM[2], 180)
    vcr_ok(cl, "vm", "stop", BOOTVM[0], timeout=30)
    labkit.wait_for(f"{BOOTVM[0]} stopped", lambda: (cl.vcr.vm(BOOTVM[0]) or {}).get(
        "state") in ("stopped", "shutdown"), 60, interval=0.3)


def warm_restart(cl):
    vcr_ok(cl, "vm", "warm-restart", PRIMARY[0], timeout=120)
    rec.wait_http(PRIMARY[2], 60)


def migrate(cl):
    src = container_host(cl)
    if src is None:
        raise RuntimeError(f"{CT} is on no standby VM")
    dst = next(n for n, _, _ in STANDBYS if n != src)
    vcr_ok(cl, "container", "migrate", src, CT, "--to", dst, timeout=300)
    rec.wait_http(CT_ADDR, 60)


def load_json():
    try:
        with open(BASE + ".json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"holds": []}


def write_report(meta, rows, append):
    os.makedirs(RESULTS, exist_ok=True)
    old_rows = []
    if append and os.path.exists(BASE + ".csv"):
        with open(BASE + ".csv") as f:
            old_rows = list(csv.DictReader(f))
    with open(BASE + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLS)
        w.writeheader()
        w.writerows(old_rows + rows)
    with open(BASE + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    holds = meta["holds"]
    total_min = sum(h["minutes"] for h in holds)
    all_rows = old_rows + rows
    L = ["# bench-soak: false host-loss declarations and heartbeat gaps, default timeouts", "",
         f"Generated by `bench/soak.py`; {len(holds)} lab hold(s), {total_min:.1f} min of "
         f"soak in all; last {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
         "Server: its defaults, heartbeat 250 ms, host timeout 1250 ms (a host is lost "
         "after 1250 ms without a frame, checked every 100 ms), fence timeout 1250 ms; "
         "agents: their defaults (fence watchdog limit lowered to welcome's fence_after_ms, "
         "1875 ms). Host agent `soakh` (VMs soakp, soakb), host agent `stb` (standby VMs sba, "
         "sbb, 512 MB, 2 vCPUs each, their own standby agents inside). Actions in a loop: "
         "boot (soakb started, HTTP, stopped), warm-restart (soakp), migrate (soak-ct between "
         "sba and sbb, CRIU). Nothing is killed: every `host_lost` is a false declaration.",
         "",
         f"- {harness.machine_line()}",
         "- **The machine is shared and was busy**: other jobs (other lab users' builds and "
         "tests) ran beside every hold, with 2 CPUs for them, QEMU's TCG vCPUs (2+2+1+1) and "
         "the daemons: a harsher soak than an idle host. Load averages below.", "",
         "## Holds", "",
         "| hold | start (UTC) | minutes | load at start (1, 5, 15) | load at end | boots | "
         "warm restarts | migrations | actions failed | **false host_lost** |",
         "|---:|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for i, h in enumerate(holds):
        n = h["actions"]
        L.append(f"| {i} | {h['start']} | {h['minutes']:.1f} | {h['load_start']} | "
                 f"{h['load_end']} | {n.get('boot', 0)} | {n.get('warm-restart', 0)} | "
                 f"{n.get('migrate', 0)} | {h['failed']} | **{len(h['false_lost'])}** |")
    lost = [x for h in holds for x in h["false_lost"]]
    L += ["", f"False host-loss declarations in all: **{len(lost)}**"
          + ("" if not lost else ": " + "; ".join(lost)), ""]
    gaps = {}
    for h in holds:
        harness.merge_gaps(gaps, {k: dict(v, bounds=[tuple(b) for b in v["bounds"]])
                                   for k, v in h["gaps"].items()})
    L += ["## Heartbeat gaps the server saw (GET /metrics, all holds)", "",
          "| host | gaps | p99 (s, bucket bound) | max (s) | over 0.5 s | over 1 s |",
          "|---|---:|---:|---:|---:|---:|"]
    for host, g in sorted(gaps.items()):
        over = {lim: g["count"] - next((c for le, c in g["bounds"] if le >= lim), g["count"])
                for lim in (0.5, 1.0)}
        L.append(f"| {host} | {g['count']} | {harness.gap_p99(g):g} | {g['max_s']:.3f} | "
                 f"{over[0.5]:.0f} | {over[1.0]:.0f} |")
    L += ["", "## Actions (medians [min-max], ms)", "", "| action | ok | failed | time |",
          "|---|---:|---:|---:|"]
    for a in ("boot", "warm-restart", "migrate"):
        rs = [r for r in all_rows if r["action"] == a]
        ok = [r for r in rs if str(r["ok"]) in ("1", "True")]
        st = harness.stats([r["ms"] for r in ok])
        L.append(f"| {a} | {len(ok)} | {len(rs) - len(ok)} | {harness.fmt_stats(st)} |")
    fails = [r for r in all_rows if str(r["ok"]) not in ("1", "True")]
    if fails:
        L += ["", "Failed actions (hold, t, action: error):", ""]
        L += [f"- {r['hold']}, {r['t_s']} s, {r['action']}: {r['error']}" for r in fails[:20]]
    L += ["", "Plot: `soak.png`, the gap histogram per host (all holds).", "",
          "Run: `make bench-soak` (MINUTES=N per hold, default 7; APPEND=1 adds a hold), "
          "under the lab lock.", ""]
    with open(BASE + ".md", "w") as f:
        f.write("\n".join(L))
    plot(gaps)


def plot(gaps):
    if not gaps:
        return
    dat = BASE + ".dat"
    hosts = sorted(gaps)
    with open(dat, "w") as f:
        bounds = [le for le, _ in gaps[hosts[0]]["bounds"]]
        for i, le in enumerate(bounds):
            vals = []
            for h in hosts:
                b = gaps[h]["bounds"]
                prev = b[i - 1][1] if i else 0
                vals.append(max(b[i][1] - prev, 0.5))  # 0.5: visible on the log scale
            f.write(f'"{le:g}" ' + " ".join(f"{v:g}" for v in vals) + "\n")
    cols = ", ".join(f"'{dat}' using {i + 2}:xtic(1) title '{h}'" for i, h in enumerate(hosts))
    script = f"""set terminal pngcairo size 900,480
set output '{BASE}.png'
set title 'Heartbeat gaps seen by the server (default heartbeat 250 ms, host timeout 1.25 s)'
set xlabel 'gap up to (s, bucket bound)'
set ylabel 'gaps (log scale; 0.5 = none)'
set logscale y
set yrange [0.1:*]
set offsets 0, 0, graph 0.1, 0
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8
set grid ytics
plot {cols}
"""
    harness.gnuplot(script, dat)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--append", action="store_true",
                    help="add this hold to the existing results (soak.json, soak.csv)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    meta = load_json() if args.append else {"holds": []}
    hold_i = len(meta["holds"])
    hold = {"start": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load_start": harness.machine()["load"], "minutes": 0.0, "actions": {},
            "failed": 0, "false_lost": [], "gaps": {}}
    rows = []
    work = tempfile.mkdtemp(prefix="vcr-bench-soak-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    labkit.lab_up()
    cl = SoakCluster(build, work, [])
    try:
        cl.start_server(services=False)
        first_id = rec.last_event_id(cl)
        cl.start_agent(HOST, [labkit.vm_entry(*PRIMARY),
                              dict(labkit.vm_entry(*BOOTVM), autostart=False)])
        cl.start_agent("stb", [labkit.standby_vm_entry(*sb, memory_mb=512, vcpus=2) for sb in STANDBYS])
        rec.wait_http(PRIMARY[2], rec.BOOT_TIMEOUT)
        for name, _, _ in STANDBYS:
            labkit.wait_for(f"standby agent {name}", lambda n=name: cl.standby_up(n),
                            rec.BOOT_TIMEOUT, interval=1)
        vcr_ok(cl, "container", "create", STANDBYS[0][0], CT, "--address", f"{CT_ADDR}/24",
               "--gateway", cl.env["VCR_LAB_BRIDGE_ADDR"])
        rec.wait_http(CT_ADDR, 120)
        say(f"lab ready; soaking {args.minutes} min")
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        actions = [("boot", boot), ("warm-restart", warm_restart), ("migrate", migrate)]
        i = 0
        while time.monotonic() < end:
            name, fn = actions[i % len(actions)]
            i += 1
            t = time.monotonic() - t0
            ok, ms, err = timed(lambda: fn(cl))
            load = os.getloadavg()[0]
            rows.append({"hold": hold_i, "t_s": round(t, 1), "action": name, "ok": int(ok),
                         "ms": ms, "load1": f"{load:.2f}", "error": err})
            hold["actions"][name] = hold["actions"].get(name, 0) + int(ok)
            hold["failed"] += 0 if ok else 1
            say(f"  {t:6.1f}s {name}: {'ok' if ok else 'FAILED'} {ms} ms (load {load:.2f})"
                + (f": {err}" if err else ""))
        hold["minutes"] = (time.monotonic() - t0) / 60
        hold["gaps"] = harness.metrics_gaps()
        for x in cl.vcr.events(first_id):
            if x.get("kind") == "host_lost":
                hold["false_lost"].append(f"{x.get('host')} ({json.dumps(rec.detail(x))})")
    finally:
        cl.stop()
        labkit.lab_down()
        hold["load_end"] = harness.machine()["load"]
        meta["holds"].append(hold)
        write_report(meta, rows, args.append)
        say(f"wrote {BASE}.md; logs in {work}")
    print(open(BASE + ".md").read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
