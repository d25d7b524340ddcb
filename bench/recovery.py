#!/usr/bin/env python3
"""bench-recovery (issue 3): client-visible recovery time, warm/cold containers vs warm/cold VMs.

In one run on one machine, for each mode, kills the primary VM's QEMU with SIGKILL and
measures the time until a client inside the lab namespace, which re-resolves the service's
name through the lab DNS server at every poll (its own UDP query, so no cache and no TTL
wait) and then sends GET /, gets its first good answer (HTTP 200) from the new endpoint.
The phase breakdown comes from the server's journal (`vcr events --follow --json`, kind
`recovery`: detected, fenced, container_ready, port_open, dns_updated, client_confirmed).

Three clients per run (docs in the .md, "How it is measured"): the one above (no cache,
`total_ms`); the same behind a caching resolver, Debian's unbound in the namespace with the
lab zone stubbed to BIND9, honouring the record TTL (5 s, the services' ttl)
(`client_cached_ms`); a keep-alive client that never re-resolves (lab/clients.py,
`client_keepalive_ms`, empty when it was never served again).  Each from the kill to its
first HTTP 200.  5 runs per mode by default (--runs).  The 1-min load average is recorded
(before the lab starts, and at each kill: `load1`); when it exceeds 1.5 per CPU before
the lab starts the bench refuses to run and write results, unless --force (FORCE=1), and
the .md says so.

Modes (one protected service each, all configured in the same vcr-server):
  warm-container  standby mode `warm`: the container already runs in the standby VM.
  cold-container  standby mode `cold`: the container is created and started in the shared
                  recovery VM on failure.
  warm-container-both, cold-container-both
                  the same with `takeover: both` (docs/recovery.md, "Address takeover"):
                  the container also takes the primary's address (gratuitous ARP) before
                  DNS moves; the warm one is provisioned by the server.
  warm-vm         baseline: a second plain VM (a VM of the standby side's host agent `stb`)
                  already runs the same service: standby mode `warm-vm` (docs/recovery.md,
                  "Standby modes"): the engine checks that its agent reports it running,
                  then port, DNS.
  cold-vm         baseline: a VM booted on failure: standby mode `cold-vm`, a VM of `stb`
                  with `autostart: false` that the engine starts by a `vm_start` order after
                  `fenced`; its port step waits for the booted guest, then switches DNS;
                  failback stops it again (`vm_stop`).
After each run the primary is brought back: its agent is restarted with a fresh state dir
and the VM left off (a primary that runs while its service is served elsewhere is killed
again by the server), then `vcr failback` starts it, waits for its check and switches the
name back (a cold container is destroyed, the cold-vm baseline's VM stopped by the engine).

Columns of bench/results/recovery.csv: mode, run, detect_ms (kill -> detected),
fence_ms (detected -> fenced), ready_ms (fenced -> port_open: container start or VM boot
and the service's port), address_ms (port_open -> address_taken; `-both` modes), dns_ms
(port_open, or address_taken, -> dns_updated), total_ms (kill -> the no-cache client's
first good answer), client_ms (dns_updated -> that answer; negative when the taken-over
address answered first), client_cached_ms and client_keepalive_ms (kill -> the first good
answer of the client behind the cache, of the keep-alive client), confirm_ms
(dns_updated -> the engine's client_confirmed), container_ms (fenced -> container_ready),
load1 (1-min load average at the kill), polls.

Guests (--guest; `make bench-recovery GUEST=debian`, or `make bench-recovery-debian`):
  busybox (default)  the lab's busybox guests (256 MB): primaries with busybox httpd,
                     standby VMs booting initrd-standby.img, containers from the busybox
                     template.  Results: bench/results/recovery.{md,csv,png}.
  debian             the real Debian 12 images of lab/build-debian and
                     lab/build-standby-disk (VCR_DEBIAN_CACHE): primaries, the warm-vm
                     and cold-vm baselines are the Debian primary disk (512 MB, nginx,
                     booted by its own kernel with the address on its command line and
                     cloud-init disabled), each VM on its own overlay; the standby and
                     recovery VMs are the Debian standby disk (1024 MB, 2 vCPUs); both
                     containers are made from the `ct-nginx` image that the server
                     delivers (`images:`, the services' `standby.image`).  The cold-vm
                     baseline's VM gets a new overlay each run (the previous one is removed
                     after the engine stopped it), so every run boots Debian from the
                     image.  Before the runs the image is put into the recovery VM's cache
                     (the cold service is first configured warm, its container made and
                     then destroyed), so a cold recovery creates the container from the
                     cached rootfs as a template would be, not a download.
                     Results: bench/results/recovery-debian.{md,csv,png}, with the busybox
                     figures of recovery.csv beside them.

--modes runs some modes only; with --merge the rows of the other modes are kept from the
existing CSV (and their lab holds and cost figures from the .json beside it), so
each mode group can be run in a lab hold of its own (`make bench-recovery GUEST=debian
MODES=warm-vm,cold-vm MERGE=1`).  With the Debian guests only the VMs of the modes run
are started.

Runs inside its own lab namespace (VCR_LAB_NS, default vcrbr) and tears it down.
"""
import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrbr")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
import harness  # noqa: E402
import recovery_lab as rl  # noqa: E402
from harness import T0, say  # noqa: E402
from recovery_lab import (BOOT_TIMEOUT, COLD_VM_IDX, GUESTS, HOST_TIMEOUT_MS, IMAGE,  # noqa: E402
                          MODES, SB_COLD, SB_WARM, SVC, TTL, WARM_VM, Client, Cluster, Events,
                          detail, dns_set, is_phase, last_event_id, restore, wait_http)

CLIENTS = os.path.join(ROOT, "lab", "clients.py")

RESULTS = os.path.join(ROOT, "bench", "results")
NOTES = []
LOAD_NOTE = []
LABEL = {"warm-container": "warm container, DNS (ours)",
         "cold-container": "cold container, DNS (ours)",
         "warm-container-both": "warm container, address takeover + DNS (ours)",
         "cold-container-both": "cold container, address takeover + DNS (ours)",
         "warm-vm": "warm standby VM (baseline)", "cold-vm": "cold standby VM (baseline)"}
PHASES = ["detected", "fenced", "container_ready", "port_open", "dns_updated",
          "client_confirmed"]
PHASES_BOTH = ["detected", "fenced", "container_ready", "port_open", "address_taken",
               "dns_updated", "client_confirmed"]
# The caching resolver (unbound) in the namespace: the lab zone stubbed to BIND9.
CACHE_ADDR, CACHE_PORT = "127.0.0.1", 53
# A machine busier than this before the lab starts (1-min load average per CPU) makes the
# times say more about the other jobs than about recovery: results are not written
# (--force writes them anyway, and the .md says it was forced).
LOAD_MAX_PER_CPU = 1.5
# The keep-alive client is watched this long after the recovery ended.
KEEPALIVE_GRACE_S = 5


def out_path(ext):
    return os.path.join(RESULTS, f"{GUESTS[rl.GUEST]['out']}.{ext}")



class KeepAlive:
    """lab/clients.py keepalive: one connection to the primary's address, never
    re-resolved (wrk, a connection pool).  after(t) asks for its first good answer to a
    request sent at or after t; result() waits for it (or for stop())."""

    def __init__(self, addr, seconds):
        self.p = subprocess.Popen(labkit.in_ns([sys.executable, CLIENTS, "keepalive", addr, "80",
                                                str(seconds), "0.02"]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if line != "started":
            self.kill()
            raise RuntimeError(f"keep-alive client on {addr}: {line!r}")

    def send(self, line):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass

    def after(self, t):
        self.send(f"after {t:.6f}")

    def result(self, timeout):
        out = [None]
        th = threading.Thread(target=lambda: out.__setitem__(0, self.p.stdout.readline()),
                              daemon=True)
        th.start()
        th.join(timeout)
        if not out[0]:
            self.send("stop")
            th.join(10)
        self.kill()
        return json.loads(out[0]) if out[0] else {}

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


class Unbound:
    """A caching resolver in the namespace (Debian's unbound, honouring the record TTL):
    the lab zone is a stub zone served by the lab's BIND9; nothing else resolves."""

    def __init__(self, work, env):
        conf = os.path.join(work, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
  interface: {CACHE_ADDR}@{CACHE_PORT}
  access-control: 127.0.0.0/8 allow
  access-control: {env['VCR_LAB_BRIDGE_ADDR']}/{env['VCR_LAB_PREFIX']} allow
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: ""
  use-syslog: no
  logfile: "{work}/unbound.log"
  verbosity: 1
  do-daemonize: no
  module-config: "iterator"
  prefetch: no
  serve-expired: no
  cache-min-ttl: 0
  num-threads: 1
  do-ip6: no
  domain-insecure: "{env['VCR_LAB_ZONE']}"
  local-zone: "{env['VCR_LAB_ZONE']}." transparent
stub-zone:
  name: "{env['VCR_LAB_ZONE']}"
  stub-addr: {env['VCR_LAB_DNS']}@{env.get('VCR_LAB_DNS_PORT') or 53}
remote-control:
  control-enable: no
""")
        self.proc = labkit.Proc(["unbound", "-d", "-c", conf], os.path.join(work, "unbound.out"))
        probe = f"{SVC['warm-container']['svc']}.{env['VCR_LAB_ZONE']}"
        labkit.wait_for("unbound answering", lambda: self.proc.alive() and labkit.ns_run(
            ["dig", f"@{CACHE_ADDR}", "-p", str(CACHE_PORT), "+short", "+time=1", "+tries=1",
             probe]).returncode == 0, 15, interval=0.2)
        if not self.proc.alive():
            raise RuntimeError(f"unbound exited: {self.proc.log_text()[-500:]}")

    def stop(self):
        self.proc.stop()


def log_tail(path, n=12, grep=None):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    if grep:
        lines = [x for x in lines if any(g in x for g in grep)]
    return lines[-n:]


# --------------------------------------------------------------------------- one run
def one_run(cl, mode, run, work):
    s = SVC[mode]
    e = cl.env
    name = f"{s['svc']}.{e['VCR_LAB_ZONE']}"
    st = cl.service(s["svc"])
    if st["state"] not in ("ok", "degraded") or st["served_by"] != "primary":
        raise RuntimeError(f"service {s['svc']} not ready for a run: {st['state']}, "
                           f"served by {st['served_by']}")
    vm = cl.vcr.vm(s["vm"])
    pid = vm and vm.get("pid")
    if not pid or vm.get("state") != "running":
        raise RuntimeError(f"primary {s['vm']} not running: {vm}")
    since = last_event_id(cl)
    ev = Events(cl.vcr, since)
    clients = []
    seen = []
    try:
        # The three clients (How it is measured): no cache, through the cache, keep-alive.
        client = Client(name, e["VCR_LAB_DNS"], s["sb_addr"], s["addr"])
        clients.append(client)
        cached = Client(name, CACHE_ADDR, s["sb_addr"], s["addr"], CACHE_PORT)
        clients.append(cached)
        keep = KeepAlive(s["addr"], 900)
        clients.append(keep)
        t_fail = time.time()
        os.kill(pid, signal.SIGKILL)
        client.go()
        cached.go()
        keep.after(t_fail)
        load = os.getloadavg()[0]
        say(f"  {mode} run {run}: killed qemu pid {pid} of {s['vm']} (load {load:.2f})")
        end = ev.wait(is_phase(s["svc"], phases=("client_confirmed", "failed")), 300, seen)
        d = detail(end)
        if (mode == "cold-vm" and d.get("phase") == "failed" and d.get("after") ==
                "container_ready" and "not open within" in (d.get("error") or "")):
            # The engine's port step gives up after 60 s; a cold VM booting under TCG on a
            # loaded machine can take longer.  `vcr failover` resumes after the last phase
            # (the port step again); the client's total still runs from the kill.
            NOTES.append(f"cold-vm run {run}: the guest boot outlasted the engine's 60 s port "
                         "deadline; `vcr failover cv` resumed the port step")
            r = cl.vcr.run("failover", s["svc"])
            if r.returncode != 0:
                raise RuntimeError(f"vcr failover {s['svc']}: {r.stderr.strip()}")
            end = ev.wait(is_phase(s["svc"], phases=("client_confirmed", "failed")), 300, seen)
        if detail(end).get("phase") == "failed":
            raise RuntimeError(f"recovery failed: {json.dumps(detail(end))}")
        res = client.result(120)
        # Through the cache: up to the TTL after the switch (dns); the keep-alive client
        # for a grace after the recovery and the other clients (it may never follow).
        res_cached = cached.result(120 + TTL)
        res_keep = keep.result(KEEPALIVE_GRACE_S)
    finally:
        for c in clients:
            c.kill()
        ev.stop()
    ts = {}
    for x in seen:
        d = detail(x)
        if x.get("kind") == "recovery" and d.get("service") == s["svc"]:
            ts.setdefault(d.get("phase"), x["ts_ms"])
    missing = [p for p in (PHASES_BOTH if s.get("takeover") else PHASES) if p not in ts]
    if missing:
        raise RuntimeError(f"phases missing from the journal: {missing}; got {ts}")
    if not res.get("t_good_new"):
        raise RuntimeError(f"client never got an answer from {s['sb_addr']}: {res}")
    if not res_cached.get("t_good_new"):
        raise RuntimeError(f"the client behind the cache never got an answer: {res_cached}")
    tf = t_fail * 1000
    ka = res_keep.get("first_after")
    row = {"mode": mode, "run": run,
           "detect_ms": round(ts["detected"] - tf),
           "fence_ms": ts["fenced"] - ts["detected"],
           "ready_ms": ts["port_open"] - ts["fenced"],
           "dns_ms": ts["dns_updated"] - ts.get("address_taken", ts["port_open"]),
           "address_ms": (ts["address_taken"] - ts["port_open"]) if "address_taken" in ts
           else "",
           "total_ms": round(res["t_good_new"] * 1000 - tf),
           "client_ms": round(res["t_good_new"] * 1000 - ts["dns_updated"]),
           "confirm_ms": ts["client_confirmed"] - ts["dns_updated"],
           "container_ms": ts["container_ready"] - ts["fenced"],
           "client_cached_ms": round(res_cached["t_good_new"] * 1000 - tf),
           "client_keepalive_ms": round(ka * 1000 - tf) if ka else "",
           "load1": f"{load:.2f}",
           "polls": res["polls"],
           # cold-vm: the engine's vm_start goes out right after `fenced`.
           "boot_start_ms": round(ts["fenced"] - tf) if mode == "cold-vm" else ""}
    say(f"  {mode} run {run}: total {row['total_ms']} ms (detect {row['detect_ms']}, fence "
        f"{row['fence_ms']}, ready {row['ready_ms']}, dns {row['dns_ms']}, client "
        f"{row['client_ms']}); through the cache {row['client_cached_ms']} ms "
        f"({res_cached['addr_good']}); keep-alive {row['client_keepalive_ms'] or 'never'} ms "
        f"({res_keep.get('reconnects')} connects, errors {len(res_keep.get('errors', []))}); "
        f"answer {res['body']!r}")
    return row


# --------------------------------------------------------------------------- cost
def measure_cost(cl, base_used):
    """From the standby agents' load reports: RAM of one idle container, VM base use."""
    ct = labkit.wait_for("a memory figure for the warm container",
                         lambda: next((c for c in (cl.host(SB_WARM["name"]) or {}).get(
                             "containers") or [] if c["name"] == SVC["warm-container"]["ct"]
                             and (c.get("mem_kb") or 0) > 0), None), 60, interval=0.5)
    samples = []
    for _ in range(5):
        h = cl.host(SB_WARM["name"])
        c = next(c for c in h["containers"] if c["name"] == SVC["warm-container"]["ct"])
        samples.append((c["mem_kb"], h["vm_load"]["mem_used_kb"], h["vm_load"]["mem_total_kb"]))
        time.sleep(0.3)  # spread the five readings over the agent's sample interval
    env = cl.env
    if rl.GUEST == "debian":
        img = os.path.getsize(cl.debian["image"]["file"])
    else:
        img = sum(os.path.getsize(p) for p in (env["VCR_LAB_KERNEL"], env["VCR_LAB_INITRD"]))
    return {"ct_kb": statistics.median(x[0] for x in samples),
            "used_with_ct_kb": statistics.median(x[1] for x in samples),
            "total_kb": samples[-1][2], "base_used_kb": base_used,
            "image_mb": img / 2**20, "ct_service": ct["service"]}


def cost_table(cost):
    """{(scheme, N): (vms, ram_mb, per_service_mb)}"""
    c_mb = cost["ct_kb"] / 1024
    out = {}
    for n in (1, 4, 16):
        out[("warm-vm", n)] = (n, n * rl.PRIMARY_MB)
        out[("warm-container", n)] = (1, rl.STANDBY_MB + n * c_mb)
        out[("cold-container", n)] = (1, rl.STANDBY_MB)
        out[("cold-vm", n)] = (0, 0)
    return out


# --------------------------------------------------------------------------- report
COLS = ["mode", "run", "detect_ms", "fence_ms", "ready_ms", "address_ms", "dns_ms", "total_ms",
        "client_ms", "client_cached_ms", "client_keepalive_ms", "confirm_ms", "container_ms",
        "load1", "polls", "boot_start_ms"]
NUM = ["detect_ms", "fence_ms", "ready_ms", "dns_ms", "total_ms", "client_ms", "confirm_ms",
       "container_ms", "client_cached_ms"]
# Empty in a run where it did not happen: address_ms (dns-only modes), client_keepalive_ms
# (the keep-alive client was never served again within the grace).
SPARSE = ["address_ms", "client_keepalive_ms"]


def medians(rows):
    med = {}
    for m in MODES:
        rs = [r for r in rows if r["mode"] == m]
        if not rs:
            continue
        med[m] = {"n": len(rs)}
        for c in NUM + SPARSE:
            st = harness.stats(r[c] for r in rs if r.get(c) not in (None, ""))
            med[m][c], med[m]["min_" + c], med[m]["max_" + c] = st or (None, None, None)
            med[m]["n_" + c] = sum(1 for r in rs if r.get(c) not in (None, ""))
    return med


def pct(a, b):
    return "-" if a is None or b is None or b <= 0 else f"{100 * a / b:.0f}%"


def load_previous(modes):
    """--merge: the rows of the other modes from this guest's CSV, and its sidecar
    (lab holds, cost figures)."""
    rows, meta = [], {"holds": [], "cost": None}
    try:
        with open(out_path("csv")) as f:
            rows = [r for r in csv.DictReader(f) if r["mode"] not in modes]
        with open(out_path("json")) as f:
            meta = json.load(f)
    except OSError:
        pass
    for h in meta.get("holds", []):
        h["modes"] = [m for m in h["modes"] if m not in modes]
    meta["holds"] = [h for h in meta.get("holds", []) if h["modes"]]
    return rows, meta


def busybox_medians():
    """Medians of the committed busybox results (recovery.csv), for the Debian report."""
    try:
        with open(os.path.join(RESULTS, "recovery.csv")) as f:
            return medians(list(csv.DictReader(f)))
    except OSError:
        return {}


def cl_zone():
    try:
        return labkit.lab_env().get("VCR_LAB_ZONE", "vcr.lab")
    except OSError:  # the lab is down when the last report is written
        return "vcr.lab"


def takeover_section(med):
    """DNS only against address takeover + DNS, warm and cold, same run."""
    L = ["## DNS switch vs address takeover (same run)\n"]

    def v(m, c):
        return (med.get(m) or {}).get(c)

    def ratio(a, b):
        return f"{a / b:.1f}x" if a and b else "-"
    L.append("| standby | client | DNS only (median ms) | takeover + DNS (median ms) | "
             "DNS / takeover |")
    L.append("|---|---|---:|---:|---:|")
    for kind in ("warm", "cold"):
        dns, both = f"{kind}-container", f"{kind}-container-both"
        if dns not in med and both not in med:
            continue
        for c, what in (("total_ms", "no cache"), ("client_cached_ms", "through the cache"),
                        ("client_keepalive_ms", "keep-alive")):
            a, b = v(dns, c), v(both, c)
            fa = f"{a:.0f}" if a is not None else ("never" if dns in med else "-")
            fb = f"{b:.0f}" if b is not None else ("never" if both in med else "-")
            L.append(f"| {kind} | {what} | {fa} | {fb} | {ratio(a, b)} |")
    w = v("warm-container-both", "client_cached_ms")
    if w is not None:
        L.append("")
        L.append(f"Goal (issue 15): a warm failover seen through the cache within 1 s: "
                 f"median {w:.0f} ms, max {v('warm-container-both', 'max_client_cached_ms'):.0f}"
                 f" ms with address takeover: **{'met' if w <= 1000 else 'not met'}** "
                 f"(median){'' if v('warm-container-both', 'max_client_cached_ms') <= 1000 else '; not in every run'}.")
    L.append("")
    return L


def write_report(rows, args, cost, failures, elapsed, partial, meta):
    os.makedirs(RESULTS, exist_ok=True)
    rows.sort(key=lambda r: (MODES.index(r["mode"]), int(r["run"])))
    with open(out_path("csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    # Both guests: without it a --merge run of some modes lost the standby cost (measured
    # with warm-container) and the other modes' lab holds.
    with open(out_path("json"), "w") as f:
        json.dump(meta, f, indent=1)
    med = medians(rows)
    mach = harness.machine()
    stem = GUESTS[rl.GUEST]["out"]
    debian = rl.GUEST == "debian"
    L = ["# bench-recovery: client-visible recovery time, containers vs VMs"
         + (" (real Debian 12 guests)" if debian else "") + "\n"]
    if partial:
        L.append("**Partial: the run was still going when this was written.**\n")
    runs = sorted({h["runs"] for h in meta["holds"]})
    per_mode = (f"{runs[0]} run(s) per mode" if len(runs) == 1 else
                f"{'-'.join(str(r) for r in (runs[0], runs[-1]))} run(s) per mode (each lab "
                "hold's below; each row's in its column n)")
    L.append(f"Generated by `bench/recovery.py` ({' '.join(sys.argv[1:]) or 'defaults'}) on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total {elapsed / 60:.1f} "
             f"min; {per_mode}, medians shown.\n")
    L.append("## Machine\n")
    L.append(f"- CPUs (`nproc`): {mach['nproc']}; memory {mach['mem']}; CPU: {mach['cpu']}")
    if debian:
        L.append(f"- {mach['qemu']}; accelerator **TCG** (no usable KVM here); host kernel "
                 f"{mach['kernel']}. Shared machine: other jobs ran beside this benchmark. "
                 "Load average (1, 5, 15 min) per lab hold:")
        for h in meta["holds"]:
            L.append(f"  - {', '.join(h['modes'])} ({h['runs']} run(s) each), "
                     f"{h['start']}-{h.get('end', '?')} UTC: load {h['load_start']} at the "
                     f"start, {h.get('load_end', '?')} at the end")
        L.append(f"- Primary VMs, the warm standby VM and the cold VM: the Debian 12 primary "
                 f"disk (lab/build-debian `primary.qcow2`), {rl.PRIMARY_MB} MB, 1 vCPU, systemd, "
                 "nginx-light on :80, direct kernel boot with its own kernel, address by `ip=`, "
                 "`cloud-init=disabled`, each on its own qcow2 overlay. Standby and recovery "
                 f"VMs: the Debian standby disk (lab/build-standby-disk), {rl.STANDBY_MB} MB, "
                 "2 vCPUs, the project's .deb, LXC 5.0.2, cgroup v1; both containers from the "
                 f"`{IMAGE}` image (Debian nginx-light) delivered by the server (`images:`, "
                 "the services' `standby.image`).\n")
    else:
        L.append(f"- {mach['qemu']}; accelerator **TCG** (no usable KVM here); host kernel "
                 f"{mach['kernel']}; load average (1, 5, 15 min) at the end {mach['load']}, "
                 "the bench's own VMs included; shared machine: other jobs ran beside it "
                 "(each run's 1-min load at the kill is in the CSV, `load1`)")
        if len(meta["holds"]) > 1:
            L.append("- Load average (1, 5, 15 min) per lab hold (`--merge`):")
            for h in meta["holds"]:
                L.append(f"  - {', '.join(h['modes'])} ({h['runs']} run(s) each), "
                         f"{h['start']}-{h.get('end', '?')} UTC: load {h['load_start']} at "
                         f"the start, {h.get('load_end', '?')} at the end")
        L.append(f"- Primary VMs: {rl.PRIMARY_MB} MB, 1 vCPU, busybox guest, httpd on :80. Standby "
                 f"and recovery VMs: {rl.STANDBY_MB} MB, 1 vCPU, initrd-standby.img (LXC 5.0.2), "
                 "containers from the busybox template on an overlay.\n")
    L.extend(f"- {n}" for n in LOAD_NOTE)
    L.append("")
    L.append("Absolute times are TCG times on a loaded machine: compare ratios with the "
             "paper, not seconds.\n")
    L.append("## How it is measured\n")
    L.append("- Failure: `kill -9` of the primary VM's QEMU (pid from `vcr status`); the host "
             "agent reports the exit (`vm_event` crashed), the server detects, fences "
             "(`vm_kill`, refused as not running = fenced), readies the standby, checks its "
             "port, sends the RFC 2136 update, confirms as a client.")
    L.append("- Three clients inside the lab namespace, all started before the kill, each "
             "measured from the kill to its first HTTP 200 (whatever answers after the kill "
             "is the recovered service: the primary is dead):")
    L.append("  - **no cache** (`total`): every 20 ms a fresh UDP A query for the service name "
             "to the lab's BIND9 (nothing cached: the TTL never delays it), then `GET /` to "
             "the address returned.")
    L.append(f"  - **through the cache** (`client_cached_ms`): the same, but the query goes to "
             f"a caching resolver in the namespace, Debian's `unbound` (stub zone "
             f"`{cl_zone()}` -> BIND9, no prefetch, no serve-expired, `cache-min-ttl: 0`), "
             f"which keeps an answer for the record's TTL ({TTL} s, the services' `ttl`): "
             "after a DNS switch it hands out the old address until its copy expires.")
    L.append("  - **keep-alive** (`client_keepalive_ms`, `lab/clients.py keepalive`): a "
             "client that never re-resolves (wrk, a connection pool): a `GET /` every 20 ms "
             "to the primary's address, on one connection while the server keeps it "
             "(busybox httpd closes after each answer: a new connection each time, to the "
             "same address); no answer within 1 s or an error: connect again. `never`: not "
             f"served again by {KEEPALIVE_GRACE_S} s after the recovery and the other clients "
             "ended.")
    L.append("- Modes `...-both` are services with `takeover: both` (docs/recovery.md, "
             "\"Address takeover\"): after `port_open` the container takes the primary's "
             "address (gratuitous ARP), then DNS moves; address = `port_open` .. "
             "`address_taken`, dns = .. `dns_updated`. The other modes are `takeover: dns`.")
    L.append("- Phases from the journal (`vcr events --follow --json`, kind `recovery`, "
             "server wall clock, same host clock as the kill): detect = kill .. `detected`; "
             "fence = .. `fenced`; ready = `fenced` .. `port_open` (container start or VM boot "
             "and the service's port); dns = `port_open` .. `dns_updated`; client = "
             "`dns_updated` .. the client's first good answer.")
    L.append("- warm-vm baseline: standby mode `warm-vm` (docs/recovery.md, \"Standby modes\"): "
             "a second plain VM, a VM of the standby side's host agent, already runs the "
             "service; the engine checks that its agent reports it running (no order), "
             "checks the port of its address, switches DNS to it.")
    if debian:
        L.append("- cold-vm baseline: standby mode `cold-vm`: a VM of the standby side's agent "
                 "(`autostart: false`) that the engine starts by a `vm_start` order right "
                 "after `fenced`, on a new overlay of the Debian image each run (the previous "
                 "one is removed after failback stopped it). The engine's port step "
                 f"(`port_timeout_ms: {GUESTS[rl.GUEST]['port_timeout_ms']}`) waits for the "
                 "booted guest. ready = QEMU start + Debian boot (systemd) + nginx.")
        L.append(f"- Containers: made from the `{IMAGE}` image, which is in the standby VMs' "
                 "image cache before the runs (the warm container was provisioned by the "
                 "server; the cold service was first configured warm, its container "
                 "provisioned, then destroyed once the server ran with it cold), so a cold "
                 "recovery creates and starts the container from the cached rootfs (no "
                 "download, no unpack), like the busybox template baked into the image.")
    else:
        L.append("- cold-vm baseline: standby mode `cold-vm`: a VM of the standby side's agent "
                 "(`autostart: false`) that the engine starts by a `vm_start` order right "
                 "after `fenced`; its port step (retried until 60 s) waits for the booted "
                 "guest. ready = QEMU start + guest boot + httpd.")
    L.append(f"- Server: heartbeat 500 ms, host_timeout_ms {HOST_TIMEOUT_MS} (with the default "
             "2000 ms, the recovery VM's standby agent, busy creating the container under TCG, "
             "missed its heartbeats and was declared lost mid-recovery: the cold-container "
             "recovery failed). VM failures are pushed by the host agent, so this timeout "
             "does not enter the times measured.")
    L.append("- Between runs: the primary's agent is restarted with a fresh state dir and the "
             "VM left off, then `vcr failback` starts the primary, waits for its check and "
             "moves the name back (cold container: stopped and destroyed; cold VM: stopped).\n")
    L.append("## Recovery time (medians [min-max], ms)\n")
    L.append("Client-visible times run from the kill: **no cache** (a fresh query to BIND9 "
             "at every poll), **through the cache** (unbound, TTL "
             f"{TTL} s) and **keep-alive** (never re-resolves; `never`: not served again "
             f"within {KEEPALIVE_GRACE_S} s after the recovery and the other clients).\n")
    L.append("| mode | detect | fence | ready | address | dns | **no cache** | "
             "**through the cache** | **keep-alive** | engine confirm | runs |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in MODES:
        d = med.get(m)

        def cell(c, d=d):
            if d[c] is None:
                return "-"
            return f"{d[c]:.0f} [{d['min_' + c]:.0f}-{d['max_' + c]:.0f}]"

        def keep(d=d):
            never = d["n"] - d["n_client_keepalive_ms"]
            if d["client_keepalive_ms"] is None:
                return f"never ({never} of {d['n']})"
            return cell("client_keepalive_ms") + (f"; never in {never} of {d['n']}" if never
                                                  else "")
        if d:
            L.append(f"| {LABEL[m]} | {cell('detect_ms')} | {cell('fence_ms')} | "
                     f"{cell('ready_ms')} | {cell('address_ms')} | {cell('dns_ms')} | "
                     f"**{cell('total_ms')}** | **{cell('client_cached_ms')}** | "
                     f"**{keep()}** | {cell('confirm_ms')} | {d['n']} |")
        else:
            L.append(f"| {LABEL[m]} | not run in this run (`--modes`; earlier runs: the git "
                     "history of this file) | | | | | | | | | 0 |")
    L.append("")
    L.extend(takeover_section(med))
    L.append(f"![phases per mode]({stem}.png)\n")
    g = lambda m: med.get(m, {}).get("total_ms")  # noqa: E731
    L.append("## Beside the paper (SEEDS.md part A; their hardware: Xeon E3 v3, KVM, LXD 2.15, "
             "2 vCPU / 2 GB VMs)\n")
    L.append("| figure | paper | ours (medians of total) |")
    L.append("|---|---|---|")
    L.append(f"| cold container / cold VM recovery time | 47% | "
             f"{pct(g('cold-container'), g('cold-vm'))} |")
    L.append(f"| warm container / warm VM recovery time | about the same (100%) | "
             f"{pct(g('warm-container'), g('warm-vm'))} |")
    if cost:
        tab4 = cost_table(cost)
        L.append(f"| standby VMs, 4 services: warm VM -> warm containers | 4 -> 1 | "
                 f"{tab4[('warm-vm', 4)][0]} -> {tab4[('warm-container', 4)][0]} "
                 "(table below; computed from the schemes, not measured) |")
    else:
        L.append("| standby VMs, 4 services: warm VM -> warm containers | 4 -> 1 | "
                 "not measured |")
    L.append("")
    if debian:
        # The same figures on the busybox guests (the committed recovery.csv).
        bb = busybox_medians()
        gb = lambda m: bb.get(m, {}).get("total_ms")  # noqa: E731
        L.append("## Beside the busybox guests (`recovery.md`, committed figures)\n")
        L.append("Medians of total (kill -> the client's first HTTP 200 from the new "
                 "endpoint), ms; the busybox figures come from an earlier run (its own "
                 "load), so compare ratios.\n")
        L.append("| mode | busybox guests | Debian guests | Debian / busybox |")
        L.append("|---|---:|---:|---:|")
        for m in MODES:
            a, b = gb(m), g(m)
            L.append(f"| {LABEL[m]} | {a:.0f} | {b:.0f} | {b / a:.1f}x |" if a and b else
                     f"| {LABEL[m]} | {a or '-'} | {b or '-'} | - |")
        L.append(f"| cold container / cold VM | {pct(gb('cold-container'), gb('cold-vm'))} | "
                 f"{pct(g('cold-container'), g('cold-vm'))} | |")
        L.append(f"| warm container / warm VM | {pct(gb('warm-container'), gb('warm-vm'))} | "
                 f"{pct(g('warm-container'), g('warm-vm'))} | |")
        L.append("")
    if cost:
        tab = cost_table(cost)
        L.append("## Standby cost (VMs and RAM held in standby)\n")
        L.append(f"Measured: one idle container ({'nginx, ' + IMAGE if debian else 'busybox httpd'}) uses "
                 f"**{cost['ct_kb'] / 1024:.1f} MB** in the standby VM (median of the standby "
                 f"agent's `mem_kb` reports, cgroup v1 memory); the standby VM's own use before "
                 f"any container was {cost['base_used_kb'] / 1024:.0f} MB of "
                 f"{cost['total_kb'] / 1024:.0f} MB, {cost['used_with_ct_kb'] / 1024:.0f} MB "
                 f"with the container. Primary VM size P = {rl.PRIMARY_MB} MB; standby/recovery "
                 f"VM base size B = {rl.STANDBY_MB} MB (the size it is known to work at, "
                 "lab/README.md); " + (f"container image {IMAGE} {cost['image_mb']:.1f} MB "
                                       "(tar.gz).\n" if debian else
                                       f"boot image {cost['image_mb']:.1f} MB (kernel + "
                                       "initrd).\n"))
        L.append("Formulas: warm VM = N VMs, N x P; warm containers = 1 VM, B + N x c; cold "
                 "containers = 1 shared recovery VM, B (B/n per owner when n owners share it); "
                 "cold VM = 0 VMs running, 0 RAM (a disk image per service only).\n")
        L.append("| scheme | N=1 VMs / RAM MB | N=4 VMs / RAM MB | N=16 VMs / RAM MB |")
        L.append("|---|---:|---:|---:|")
        for m in ("warm-vm", "warm-container", "cold-container", "cold-vm"):
            cells = []
            for n in (1, 4, 16):
                v, r = tab[(m, n)]
                extra = f" ({r / n:.0f}/owner)" if m == "cold-container" else ""
                cells.append(f"{v} / {r:.0f}{extra}")
            L.append(f"| {LABEL[m]} | " + " | ".join(cells) + " |")
        L.append("")
        if not debian:
            L.append("The containers here are busybox httpd (a few MB each), so the "
                     "warm-container VM barely grows with N; a real service's container would "
                     "add its own working set to c, still without a guest kernel and OS per "
                     "service.\n")
    if failures:
        L.append("## What failed\n")
        L.extend(f"- {x}" for x in failures)
        L.append("")
    if NOTES:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in NOTES)
        L.append("")
    L.append(f"Files: `{stem}.csv` (every run: " + ", ".join(COLS) + f"), `{stem}.png`"
             + f", `{stem}.json` (lab holds, cost figures; `--merge` reads it).")
    with open(out_path("md"), "w") as f:
        f.write("\n".join(L) + "\n")
    plot(med)


def plot(med):
    if not shutil.which("gnuplot") or not med:
        return
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    dat = os.path.join(tmp, "r.dat")
    with open(dat, "w") as f:
        for m in MODES:
            d = med.get(m)
            if d:
                addr = d["address_ms"] or 0
                client = max(d["total_ms"] - d["detect_ms"] - d["fence_ms"] - d["ready_ms"]
                             - addr - d["dns_ms"], 0)
                keep = d["client_keepalive_ms"]
                f.write(f"\"{m}\" {d['detect_ms'] / 1000:.3f} {d['fence_ms'] / 1000:.3f} "
                        f"{d['ready_ms'] / 1000:.3f} {addr / 1000:.3f} {d['dns_ms'] / 1000:.3f} "
                        f"{client / 1000:.3f} {d['total_ms'] / 1000:.3f} "
                        f"{(d['client_cached_ms'] or 0) / 1000:.3f} "
                        f"{keep / 1000 if keep is not None else 0}\n")
    # The zoom shows the container modes whole (4 s for the busybox guests).
    cts = [med[m]["total_ms"] / 1000 for m in ("warm-container", "cold-container") if m in med]
    zoom = max(4, int(max(cts, default=0) * 1.25) + 1) if rl.GUEST != "busybox" else 4
    guest = ", Debian 12 guests" if rl.GUEST == "debian" else ""
    bars = (f"plot '{dat}' using 2:xtic(1) title 'detect' lc rgb '#7570b3', "
            "'' using 3 title 'fence' lc rgb '#e7298a', "
            "'' using 4 title 'ready (container/VM + port)' lc rgb '#d95f02', "
            "'' using 5 title 'address takeover' lc rgb '#e6ab02', "
            "'' using 6 title 'DNS update' lc rgb '#1b9e77', "
            "'' using 7 title 'client (no cache) sees it' lc rgb '#666666'")
    clients = (f"plot '{dat}' using 8:xtic(1) title 'no cache' lc rgb '#1b9e77', "
               "'' using 9 title 'through the cache (unbound)' lc rgb '#d95f02', "
               "'' using 10 title 'keep-alive (no bar: never served again)' lc rgb '#7570b3'")
    script = f"""
set terminal pngcairo size 1300,600 font 'sans,10'
set output '{out_path('png')}'
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set xtics rotate by -20
set multiplot layout 1,2 title 'Client-visible recovery time from kill -9 (TCG, medians{guest})'
set title 'by phase, no-cache client (zoom: 0-{zoom} s)'
set ylabel 'seconds'
set key top left
set yrange [0:{zoom}]
{bars}
set title 'by client (zoom: 0-{max(zoom, TTL + 3)} s)'
set style histogram clustered gap 1
set yrange [0:{max(zoom, TTL + 3)}]
{clients}
unset multiplot
"""
    # A plot that fails must not lose the run: the tables are written already.
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        say(f"gnuplot failed: {r.stderr.strip()[-300:]}")
    shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--force", action="store_true",
                    help="write results even when the machine was busy at the start (1-min "
                         f"load average above {LOAD_MAX_PER_CPU} per CPU); the .md says so")
    ap.add_argument("--quick", action="store_true", help="1 run per mode")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--keep-lab", action="store_true")
    ap.add_argument("--guest", choices=sorted(GUESTS), default="busybox",
                    help="guest kind (see above); default busybox")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the modes not run now from the existing CSV "
                         "(and their lock holds, cost figures): one mode group per lab hold")
    args = ap.parse_args()
    rl.set_guest(args.guest)
    if args.quick:
        args.runs = 1
    if os.geteuid() != 0:
        sys.exit("recovery: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit(f"unknown modes {bad}; allowed: {MODES}")
    load0, ncpu = os.getloadavg()[0], os.cpu_count() or 1
    busy = load0 > LOAD_MAX_PER_CPU * ncpu
    if busy and not args.force:
        sys.exit(f"recovery: the machine is busy (1-min load average {load0:.2f} > "
                 f"{LOAD_MAX_PER_CPU} x {ncpu} CPUs) before the lab starts: the times would "
                 "measure the other jobs; not run, no results written (--force, FORCE=1 to "
                 "run anyway)")
    LOAD_NOTE.append(f"1-min load average before the lab started: {load0:.2f} on {ncpu} CPUs "
                     f"(threshold {LOAD_MAX_PER_CPU * ncpu:.1f}: above it the bench refuses to "
                     "run and write results unless forced)"
                     + ("; **forced: the machine was busier than the threshold**" if busy
                        else ""))
    work = tempfile.mkdtemp(prefix="vcr-bench-rec-")
    rows, failures, cost = [], [], None
    meta = {"holds": [], "cost": None}
    if args.merge:
        rows, meta = load_previous(modes)
        cost = meta.get("cost")
    hold = {"modes": modes, "runs": args.runs, "start": time.strftime("%H:%M", time.gmtime()),
            "load_start": harness.machine()["load"]}
    meta["holds"].append(hold)
    modes_vms = modes  # only what these modes use: less TCG load, faster boots
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    say(f"lab up (namespace {labkit.NS}); work dir {work}; modes {modes}")
    labkit.lab_up()
    cl = Cluster(build, work, modes_vms)
    cache = None
    dead = set()

    def report(partial):
        hold.update(end=time.strftime("%H:%M", time.gmtime()),
                    load_end=harness.machine()["load"])
        meta["cost"] = cost
        write_report(rows, args, cost, failures, time.monotonic() - T0, partial, meta)

    try:
        cache = Unbound(work, cl.env)
        cl.start_server(services=False)
        t = time.monotonic()
        for m in modes_vms:
            cl.start_agent(SVC[m]["host"], [cl.primary_vm(m)])
        # The standby side: the warm standby VM (warm-vm), the standby VM of the warm
        # containers, the recovery VM of the cold ones; the cold-vm baseline's VM (Debian).
        stb, sbs = [], []
        if "warm-vm" in modes_vms:
            stb.append(cl.plain_vm(WARM_VM["name"], WARM_VM["idx"], WARM_VM["addr"]))
        for ms, d in ((("warm-container",), SB_WARM),
                      (("cold-container",), SB_COLD)):
            if set(ms) & set(modes_vms):
                stb.append(cl.standby_vm(d))
                sbs.append(d)
        if "cold-vm" in modes_vms:
            s = SVC["cold-vm"]
            stb.append(dict(cl.plain_vm(s["sb_vm"], COLD_VM_IDX, s["sb_addr"]),
                            autostart=False))
        cl.start_agent("stb", stb)
        for m in modes_vms:
            dns_set(cl, f"{SVC[m]['svc']}.{cl.env['VCR_LAB_ZONE']}", SVC[m]["addr"])
        for m in modes_vms:
            wait_http(SVC[m]["addr"], BOOT_TIMEOUT)
        if "warm-vm" in modes_vms:
            wait_http(WARM_VM["addr"], BOOT_TIMEOUT)
        say(f"primaries and the warm standby VM answer ({time.monotonic() - t:.1f}s)")
        for d in sbs:
            labkit.wait_for(f"standby agent {d['name']} hello", lambda d=d: cl.standby_up(
                d["name"]), BOOT_TIMEOUT, interval=1)
        say(f"standby and recovery VMs' agents connected ({time.monotonic() - t:.1f}s)")
        base = None
        if "warm-container" in modes_vms:
            base = labkit.wait_for("standby VM load", lambda: (cl.host(SB_WARM["name"]).get(
                "vm_load") or {}).get("mem_used_kb"), 60, interval=0.5)
        s = SVC["warm-container"]
        hosts = ([SVC[m]["host"] for m in modes_vms] + ["stb"] + [d["name"] for d in sbs])

        def agents_back():
            labkit.wait_for("every agent connected to the restarted server",
                            lambda: all((cl.host(h) or {}).get("state") == "connected"
                                        for h in hosts), 60, interval=0.5)

        if rl.GUEST == "debian":
            # Both containers made by the server from the delivered image: the warm one
            # stays; the cold one only puts the image into the recovery VM's cache and
            # is destroyed once the server runs with the service cold.
            cl.start_server(services=True, cold_as_warm=True)
            agents_back()
            for m in ("warm-container", "cold-container"):
                if m not in modes_vms:
                    continue
                c = SVC[m]
                labkit.wait_for(f"container {c['ct']} provisioned from {IMAGE}",
                                lambda c=c: (cl.service(c["svc"]).get("standby") or {}).get(
                                    "container_state") == "running", 600, interval=1)
                wait_http(c["sb_addr"], 120)
            say(f"containers provisioned from {IMAGE} ({time.monotonic() - t:.1f}s)")
            if base is not None:
                cost = measure_cost(cl, base)
            if "cold-container" in modes_vms:
                cl.start_server(services=True)
                agents_back()
                c = SVC["cold-container"]
                r = cl.vcr.run("container", "destroy", c["sb_host"], c["ct"], timeout=60)
                if r.returncode != 0:
                    raise RuntimeError(f"vcr container destroy {c['ct']}: {r.stderr.strip()}")
                labkit.wait_for(f"{c['ct']} gone", lambda: labkit.http_get(
                    c["sb_addr"], timeout=1) is None, 60, interval=0.5)
                say(f"server restarted with {c['svc']} cold; {c['ct']} destroyed (image "
                    "cached)")
        else:
            # By hand, under a server without services: the standby VM's use is read before
            # the container exists, and its create time is the agent's own.  The server
            # started with the services below finds it running and has nothing to provision.
            if "warm-container" in modes_vms:
                r = cl.vcr.json("container", "create", SB_WARM["name"], s["ct"], "--address",
                                f"{s['sb_addr']}/24", "--service", s["svc"], "--gateway",
                                cl.env["VCR_LAB_BRIDGE_ADDR"])
                say(f"warm container {s['ct']} created+started in {r.get('ms')} ms (guest)")
                wait_http(s["sb_addr"], 120)
                cost = measure_cost(cl, base)
            cl.start_server(services=True)
            agents_back()
            say("server restarted with the services; agents back")
        if base is not None:
            say(f"idle container: {cost['ct_kb']} kB; standby VM used {base} kB before, "
                f"{cost['used_with_ct_kb']} kB with it")
        for m in modes:
            labkit.wait_for(f"service {SVC[m]['svc']} ok",
                            lambda m=m: cl.service(SVC[m]["svc"])["state"] == "ok", 60,
                            interval=0.5)
        for m in modes:
            if SVC[m]["mode"] == "warm" and m.endswith("-both"):
                # Provisioned by the server, from the services configuration.
                labkit.wait_for(f"warm container of {SVC[m]['svc']} running",
                                lambda m=m: (cl.service(SVC[m]["svc"]).get("standby") or {}).get(
                                    "container_state") == "running", 300, interval=0.5)
                wait_http(SVC[m]["sb_addr"], 120)
        report(True)
        for run in range(args.runs):
            for m in modes:
                if m in dead:
                    continue
                say(f"{m} run {run}")
                try:
                    rows.append(one_run(cl, m, run, work))
                except Exception as e:  # noqa: BLE001
                    dead.add(m)
                    srv = log_tail(cl.server.log_path, 10, grep=[f"service {SVC[m]['svc']}",
                                                                  "recovery", "error", "warn"])
                    failures.append(f"{m} run {run}: {e}. Server log: "
                                    + " / ".join(f"`{x.strip()}`" for x in srv))
                    say(f"  {m} FAILED: {e}")
                try:
                    restore(cl, m)
                except Exception as e:  # noqa: BLE001
                    dead.add(m)
                    failures.append(f"{m} after run {run}: restoring the primary/failback "
                                    f"failed: {e}")
                    say(f"  {m} restore FAILED: {e}")
                report(True)
    except Exception as e:  # noqa: BLE001
        failures.append(f"setup/run aborted: {e}")
        say(f"ABORTED: {e}")
        raise
    finally:
        cl.stop()
        if cache:
            cache.stop()
        if not args.keep_lab:
            labkit.lab_down()
            say("lab down")
        report(False)
        say(f"wrote {out_path('md')}, .csv, .png; logs in {work}")
    print(open(out_path("md")).read())
    return 0 if not failures else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
