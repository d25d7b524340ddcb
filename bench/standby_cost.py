#!/usr/bin/env python3
"""bench-standby-cost: what N protected nginx services cost in memory with warm standby,
measured, not computed (docs/recovery.md "Provisioning").

Ours ("containers"): ONE Debian 12 standby VM (the Debian standby disk of
lab/build-standby-disk, labkit.debian_standby_vm_entry, --standby-mb MB, 2 vCPUs) holding
N warm nginx containers, each the standby of one service whose `standby.image` is the
`ct-nginx` image the server delivers (`images:`): the standby agent downloads, checks and
unpacks it once, then creates and starts each container from it.  The services' primaries
never run (their host never connects; boot_grace_ms 0), as in tests/integration/
test_images.py: provisioning happens while a primary serves, which it would.
N = 1, 4, 16 in one fresh VM per run: the server is restarted (same journal) with the
services of the next N added, and the point is measured once all N containers answer
HTTP.

Baseline ("vms"): N Debian VMs, each the Debian primary image running nginx
(labkit.debian_primary_entry, 512 MB, 1 vCPU): the standby a VM-per-service scheme keeps
running.  N = 1 and 2 measured (fresh VMs each run: the second VM is started beside the
first); N = 4 and 16 extrapolated linearly from the medians at 1 and 2 (measured=false).

Measured once a point is up and its host-side memory has settled (QEMU's RSS changing by
less than 2 % over 10 s, or 120 s passed: `settled` in the CSV):
  qemu_rss_mb, qemu_pss_mb  sum over the point's QEMU processes of Rss / Pss in
                            /proc/PID/smaps_rollup (the guest RAM is a shared file in the
                            agent's ram_dir, mapped by QEMU only, so it is in both)
  ram_file_mb               sum of the allocated size of the guests' RAM files (the part
                            of the guest RAM the guest has touched)
  guest_used_mb             MemTotal - MemAvailable inside the standby VM, from its agent's
                            `vm_load` (containers only: the primaries have no agent)
  containers_mem_mb         sum of the containers' `mem_kb` as the standby agent reports them
--runs runs per point (default 3); medians with min/max.  Writes
bench/results/standby-cost.{md,csv} and standby-cost.png (gnuplot).

Runs in its own lab namespace (VCR_LAB_NS, default vcrbsc) and tears it down.
Run it under `flock /tmp/vcr-lab.lock` on a shared machine (`make bench-standby-cost`).
"""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrbsc")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
from harness import T0, agent_proc, machine, ratio, say, server_proc, wait_server  # noqa: E402
from harness import stats as med_min_max  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
HOST = "bschost"
SB, SB_INDEX, SB_ADDR = "costsb", 0, "10.77.0.52"
PRIMARY_ADDRS = ["10.77.0.61", "10.77.0.62"]  # baseline VMs, taps 1 and 2
CT_BASE = 100  # container i at 10.77.0.(100 + i)
BOOT_TIMEOUT = 420
PROVISION_TIMEOUT = 600  # 12 containers created one after the other under TCG
OURS_N = [1, 4, 16]
BASE_N = [1, 2]
EXTRA_N = [4, 16]
COLS = ["scheme", "n", "vms", "ram_mb", "measured", "run", "qemu_rss_mb", "qemu_pss_mb",
        "ram_file_mb", "guest_used_mb", "containers_mem_mb", "tcg_code_mb", "settled", "up_s", "load1"]
NOTES = []


def smaps_rollup(pid):
    """(Rss, Pss) of process pid in MB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("Rss:", "Pss:"):
                out[parts[0][:-1]] = int(parts[1]) / 1024
    return out["Rss"], out["Pss"]


def tcg_code_mb(pid):
    """Rss (MB) of pid's anonymous executable mappings: TCG's translated-code buffer (the
    rwx regions QEMU maps for it; a QEMU process maps nothing else anonymous and
    executable)."""
    total, anon_x = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                anon_x = len(parts) == 5 and "x" in parts[1]
            elif parts[0] == "Rss:" and anon_x:
                total += int(parts[1])
    return total / 1024


def allocated_mb(path):
    st = os.stat(path)
    return st.st_blocks * 512 / 2**20


class Rig:
    """vcr-server and one host agent, for one run of one scheme."""

    def __init__(self, build, work, vms, ram_dir):
        self.build, self.work, self.vms, self.ram_dir = build, work, vms, ram_dir
        self.vcr = labkit.Vcr(build)
        self.server = self.agent = None
        self.cfg = os.path.join(work, "server.yaml")
        self.journal = os.path.join(work, "journal.db")

    def start_server(self, images=(), services=(), log="server"):
        if self.server:
            self.server.stop()
        labkit.write_server_config(self.cfg, self.journal, heartbeat_ms=500,
                                   host_timeout_ms=5000, dns=True, images=images,
                                   services=services)
        self.server = wait_server(self.vcr, server_proc(self.build, self.cfg,
                                                        os.path.join(self.work, f"{log}.log")))

    def start_agent(self):
        state = tempfile.mkdtemp(prefix="agent-", dir=self.work)
        acfg = os.path.join(self.work, "agent.yaml")
        labkit.write_agent_config(acfg, HOST, state, self.vms, accel="tcg",
                                  ram_dir=self.ram_dir)
        self.agent = agent_proc(self.build, acfg, os.path.join(self.work, "agent.log"),
                                "--stop-vms-on-exit")

    def pids(self, names):
        out = []
        for n in names:
            v = self.vcr.vm(n) or {}
            if v.get("state") != "running" or not v.get("pid"):
                raise RuntimeError(f"VM {n} is not running: {v}")
            out.append(v["pid"])
        return out

    def standby(self):
        return next((h for h in self.vcr.status()["hosts"]
                     if h["name"] == SB and h.get("role") == "standby"
                     and h["state"] == "connected"), None)

    def stop(self):
        for vm in self.vms:
            self.vcr.run("vm", "kill", vm["name"], timeout=30)
        if self.agent:
            self.agent.stop(timeout=120)
        if self.server:
            self.server.stop()


def settle(pids, deadline_s=120, window=5, interval=2.0):
    """Polls the QEMU processes' summed Rss until the last `window` samples differ by
    less than 2 % (or deadline_s passed); returns True when it settled."""
    t_end = time.monotonic() + deadline_s
    samples = []
    while time.monotonic() < t_end:
        samples.append(sum(smaps_rollup(p)[0] for p in pids))
        last = samples[-window:]
        if len(last) == window and max(last) - min(last) < 0.02 * max(last):
            return True
        time.sleep(interval)
    return False


def measure(rig, names, ram_files, guest=False):
    rss = pss = tcg = 0.0
    for p in rig.pids(names):
        r, s = smaps_rollup(p)
        rss, pss, tcg = rss + r, pss + s, tcg + tcg_code_mb(p)
    row = {"tcg_code_mb": round(tcg, 1),"qemu_rss_mb": round(rss, 1), "qemu_pss_mb": round(pss, 1),
           "ram_file_mb": round(sum(allocated_mb(f) for f in ram_files), 1),
           "guest_used_mb": "", "containers_mem_mb": "",
           "load1": round(os.getloadavg()[0], 2)}
    if guest:
        h = rig.standby() or {}
        load = h.get("vm_load") or {}
        if load.get("mem_used_kb") is not None:
            row["guest_used_mb"] = round(load["mem_used_kb"] / 1024, 1)
        cts = [c for c in h.get("containers") or [] if c.get("mem_kb") is not None]
        if cts:
            row["containers_mem_mb"] = round(sum(c["mem_kb"] for c in cts) / 1024, 1)
    return row


def ram_files(ram_dir):
    return [os.path.join(ram_dir, f) for f in os.listdir(ram_dir) if f.endswith(".ram")]


# --------------------------------------------------------------------------- ours
def nginx_image():
    meta = labkit.debian_image("ct-nginx.json")
    tarball = labkit.debian_image("ct-nginx.tar.gz")
    if not meta or not tarball:
        return None
    with open(meta) as f:
        m = json.load(f)
    return {"name": "ct-nginx", "file": tarball, "sha256": m["sha256"], "cmd": m["cmd"]}


def services(n):
    out = []
    for i in range(n):
        s = labkit.service_entry(f"web{i}", "node9", f"web{i}-primary", f"10.77.0.{200 + i}",
                                 "warm", SB, f"web{i}-c", f"10.77.0.{CT_BASE + i}",
                                 check={"type": "http", "path": "/", "interval_ms": 500,
                                        "timeout_ms": 400, "failures": 3, "boot_grace_ms": 0})
        s["standby"]["image"] = "ct-nginx"
        out.append(s)
    return out


def run_ours(build, base_work, run, sb_mb, points):
    image, why = labkit.debian_standby_image()
    if image is None:
        raise RuntimeError(why)
    img = nginx_image()
    if img is None:
        raise RuntimeError("no ct-nginx image: make image-debian")
    work = tempfile.mkdtemp(prefix=f"ours-{run}-", dir=base_work)
    ram_dir = tempfile.mkdtemp(prefix="vcr-bsc-", dir="/dev/shm")
    vm = labkit.debian_standby_vm_entry(SB, SB_INDEX, SB_ADDR, image, memory_mb=sb_mb)
    rig = Rig(build, work, [vm], ram_dir)
    rows = []
    try:
        t0 = time.monotonic()
        rig.start_server(images=[img], services=services(points[0]))
        rig.start_agent()
        labkit.wait_for("the Debian standby agent", rig.standby, BOOT_TIMEOUT, interval=1)
        say(f"  ours run {run}: standby VM ({sb_mb} MB) booted, agent connected "
            f"({time.monotonic() - t0:.1f}s)")
        for k, n in enumerate(points):
            if k:
                rig.start_server(images=[img], services=services(n), log=f"server-{n}")
            t = time.monotonic()

            def up():
                h = rig.standby() or {}
                running = {c["name"] for c in h.get("containers") or []
                           if c.get("state") == "running"}
                return all(f"web{i}-c" in running for i in range(n))
            labkit.wait_for(f"{n} warm containers running", up, PROVISION_TIMEOUT, interval=1)
            for i in range(n):
                labkit.wait_for(f"nginx of web{i}-c", lambda i=i: labkit.http_get(
                    f"10.77.0.{CT_BASE + i}", timeout=5), 120, interval=1)
            up_s = time.monotonic() - t
            settled = settle(rig.pids([SB]))
            # vm_load and the containers' mem_kb come with the standby agent's samples
            # (every second): settle() has polled for 10 s at least, so they are fresh.
            row = dict(measure(rig, [SB], ram_files(ram_dir), guest=True), scheme="containers",
                       n=n, vms=1, ram_mb=sb_mb, measured="true", run=run,
                       settled=int(settled), up_s=round(up_s, 1))
            rows.append(row)
            say(f"  ours N={n}: {up_s:.0f}s to serve; RSS {row['qemu_rss_mb']} MB, PSS "
                f"{row['qemu_pss_mb']} MB, RAM file {row['ram_file_mb']} MB, guest used "
                f"{row['guest_used_mb']} MB, containers {row['containers_mem_mb']} MB"
                f"{'' if settled else ' (RSS had not settled)'}")
    finally:
        rig.stop()
        shutil.rmtree(ram_dir, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- baseline
def run_baseline(build, base_work, run, points):
    work = tempfile.mkdtemp(prefix=f"vms-{run}-", dir=base_work)
    ram_dir = tempfile.mkdtemp(prefix="vcr-bsc-", dir="/dev/shm")
    n_max = max(points)
    vms = [labkit.debian_primary_entry(f"webvm{i}", 1 + i, PRIMARY_ADDRS[i])
           for i in range(n_max)]
    if None in vms:
        raise RuntimeError("no Debian primary image: make image-debian")
    for vm in vms[1:]:
        vm["autostart"] = False  # started beside the first for the next point
    rig = Rig(build, work, vms, ram_dir)
    rows = []
    try:
        rig.start_server()
        rig.start_agent()
        for n in points:
            t = time.monotonic()
            if n > 1:
                for vm in vms[1:n]:
                    labkit.wait_for(f"{vm['name']} started", lambda v=vm: rig.vcr.run(
                        "vm", "start", v["name"], timeout=30).returncode == 0, 60, interval=1)
            for i in range(n):
                labkit.wait_for(f"nginx of webvm{i}", lambda i=i: labkit.http_get(
                    PRIMARY_ADDRS[i], timeout=5), BOOT_TIMEOUT, interval=1)
            up_s = time.monotonic() - t
            names = [vm["name"] for vm in vms[:n]]
            settled = settle(rig.pids(names))
            files = [f for f in ram_files(ram_dir) if any(f"-{nm}-" in f for nm in names)]
            row = dict(measure(rig, names, files), scheme="vms", n=n, vms=n,
                       ram_mb=sum(vm["memory_mb"] for vm in vms[:n]), measured="true",
                       run=run, settled=int(settled), up_s=round(up_s, 1))
            rows.append(row)
            say(f"  baseline N={n}: {up_s:.0f}s to serve; RSS {row['qemu_rss_mb']} MB, PSS "
                f"{row['qemu_pss_mb']} MB, RAM files {row['ram_file_mb']} MB"
                f"{'' if settled else ' (RSS had not settled)'}")
    finally:
        rig.stop()
        shutil.rmtree(ram_dir, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- report
MEASURES = ["qemu_rss_mb", "qemu_pss_mb", "ram_file_mb", "guest_used_mb", "containers_mem_mb",
            "tcg_code_mb"]


def stats(rows):
    """{(scheme, n): {col: (median, min, max) or None, runs}} over the measured rows."""
    groups = {}
    for r in rows:
        if str(r["measured"]) == "true":
            groups.setdefault((r["scheme"], int(r["n"])), []).append(r)
    out = {}
    for k, rs in groups.items():
        d = {"runs": len(rs), "ram_mb": int(rs[0]["ram_mb"]), "vms": int(rs[0]["vms"]),
             "settled": sum(int(r["settled"]) for r in rs)}
        for c in MEASURES + ["up_s"]:
            d[c] = med_min_max(r[c] for r in rs if r.get(c) not in ("", None))
        d["qemu_own_mb"] = med_min_max(float(r["qemu_rss_mb"]) - float(r["ram_file_mb"]) for r in rs)
        out[k] = d
    return out


def extrapolate(st):
    """Rows for the baseline at EXTRA_N, linear through its medians at 1 and 2."""
    a, b = st.get(("vms", 1)), st.get(("vms", 2))
    rows = []
    if not a or not b:
        return rows
    for n in EXTRA_N:
        row = {"scheme": "vms", "n": n, "vms": n, "ram_mb": a["ram_mb"] * n,
               "measured": "false", "run": "", "settled": "", "up_s": "",
               "guest_used_mb": "", "containers_mem_mb": ""}
        for c in ("qemu_rss_mb", "qemu_pss_mb", "ram_file_mb"):
            if a[c] and b[c]:
                slope = b[c][0] - a[c][0]
                row[c] = round(a[c][0] + slope * (n - 1), 1)
            else:
                row[c] = ""
        rows.append(row)
    return rows


def cell(v):
    if v is None:
        return "-"
    m, lo, hi = v
    return f"{m:.0f} ({lo:.0f}-{hi:.0f})"


def write_report(rows, args, mach, elapsed, notes, generated=None):
    os.makedirs(RESULTS, exist_ok=True)
    st = stats(rows)
    extra = extrapolate(st)
    with open(os.path.join(RESULTS, "standby-cost.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        for r in rows + extra:
            w.writerow({c: r.get(c, "") for c in COLS})
    ext = {int(r["n"]): r for r in extra}
    L = ["# bench-standby-cost: memory of N warm nginx standbys, containers vs VMs\n"]
    L.append(generated or
             f"Generated by `bench/standby_cost.py` ({' '.join(sys.argv[1:]) or 'defaults'}) "
             f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total "
             f"{elapsed / 60:.1f} min. Medians of the runs per point, (min-max) beside them.\n")
    L.append("## Machine\n")
    L.append(f"- CPUs (`nproc`): {mach['nproc']}; memory {mach['mem']}; CPU: {mach['cpu']}")
    L.append(f"- {mach['qemu']}; accelerator **TCG**; host kernel {mach['kernel']}")
    loads = [float(r["load1"]) for r in rows if r.get("load1") not in ("", None)]
    L.append(f"- Load average at the end: {mach['load']}; 1-minute load at the measurements "
             + (f"{min(loads):.2f}-{max(loads):.2f} (`load1` column)" if loads else "-")
             + ". The machine is shared: other builds and tests ran on it meanwhile "
             "(other lab VMs wait for the lab lock this bench holds; their builds do "
             "not).\n")
    L.append("## What is compared\n")
    L.append(f"- **containers** (ours): ONE Debian 12 standby VM (the Debian standby disk "
             f"with the project's .deb, `labkit.debian_standby_vm_entry`) of "
             f"**{args.standby_mb} MB**, 2 vCPUs, chosen so that 16 containers fit, holding N "
             "warm nginx containers built from the `ct-nginx` image the server delivers "
             "(`images:`; one service per container, `standby.image: ct-nginx`). Each "
             "run boots a fresh VM; N grows 1 -> 4 -> 16 in it (the server restarted with "
             "more services, same journal), each point measured once all N containers "
             "answer HTTP.")
    L.append("- **vms** (baseline): N Debian 12 VMs of the primary image (nginx; "
             "`labkit.debian_primary_entry`), **512 MB**, 1 vCPU each: a VM per service kept "
             "running as its standby. N = 1 and 2 measured (fresh VMs each run; the second "
             "VM started beside the first); **N = 4 and 16 are extrapolated linearly from "
             "the medians at N = 1 and 2 (measured = false)**, not measured.")
    L.append("- Host side: the sum over the point's QEMU processes of `Rss` and `Pss` of "
             "/proc/PID/smaps_rollup (the guest RAM is a shared file in the agent's "
             "`ram_dir`, mapped by QEMU alone, so Rss and Pss both count it) and the "
             "allocated size of the guests' RAM files (guest RAM the guest has touched), "
             "read once the point serves and Rss has settled (<2 % change over 10 s, or 120 "
             "s: `settled` column). Guest side (containers only): MemTotal - MemAvailable "
             "of the standby VM (its agent's `vm_load`) and the sum of the containers' "
             "`mem_kb` as the agent reports them. The primaries carry no agent: no guest "
             "side for the baseline.\n")
    L.append("## Results\n")
    L.append("| scheme | N | VMs | RAM configured MB | measured | QEMU RSS MB | QEMU PSS MB | "
             "RAM files MB | RSS - RAM files MB | guest used MB | containers MB | "
             "TCG code MB | runs (settled) |")
    L.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ns = sorted({int(r["n"]) for r in rows} | set(ext))
    for scheme in ("containers", "vms"):
        for n in ns:
            d = st.get((scheme, n))
            if d:
                L.append(f"| {scheme} | {n} | {d['vms']} | {d['ram_mb']} | true | "
                         + " | ".join(cell(d[c]) for c in MEASURES[:3] + ["qemu_own_mb"]
                                      + MEASURES[3:])
                         + f" | {d['runs']} ({d['settled']}) |")
            elif scheme == "vms" and n in ext:
                e = ext[n]
                L.append(f"| vms | {n} | {n} | {e['ram_mb']} | **false** (linear) | "
                         + " | ".join(f"{e[c]:.0f}" if e[c] != "" else "-"
                                      for c in ("qemu_rss_mb", "qemu_pss_mb", "ram_file_mb"))
                         + (f" | {e['qemu_rss_mb'] - e['ram_file_mb']:.0f}"
                            if e["qemu_rss_mb"] != "" and e["ram_file_mb"] != "" else " | -")
                         + " | - | - | - | - |")
    L.append("")
    L.append("![host memory vs N](standby-cost.png)\n")
    L.append("## Ratios (baseline / ours, host side)\n")
    L.append("| N | baseline from | RSS vms / containers | PSS vms / containers | "
             "RAM files vms / containers | configured RAM vms / containers |")
    L.append("|---:|---|---:|---:|---:|---:|")
    for n in OURS_N:
        o = st.get(("containers", n))
        b = st.get(("vms", n))
        if not o:
            continue
        if b:
            src = "measured"
            brss, bpss, bfile, bram = (b["qemu_rss_mb"][0], b["qemu_pss_mb"][0],
                                       b["ram_file_mb"][0], b["ram_mb"])
        elif n in ext and ext[n]["qemu_rss_mb"] != "":
            src = "extrapolated"
            brss, bpss, bfile, bram = (ext[n]["qemu_rss_mb"], ext[n]["qemu_pss_mb"],
                                       ext[n]["ram_file_mb"], ext[n]["ram_mb"])
        else:
            continue
        L.append(f"| {n} | {src} | {ratio(o['qemu_rss_mb'][0], brss)} | "
                 f"{ratio(o['qemu_pss_mb'][0], bpss)} | {ratio(o['ram_file_mb'][0], bfile)} | "
                 f"{ratio(o['ram_mb'], bram)} |")
    L.append("")
    L.append("Under TCG most of a QEMU process's RSS beyond its guest's RAM file (`RSS - RAM "
             "files`) is TCG's cache of translated guest code (`TCG code`: the Rss of QEMU's "
             "anonymous executable mappings, where it is measured), which grows with the "
             "code the guest runs (each new container's processes) and which KVM would not "
             "have; the "
             "RAM files (guest RAM the guests have touched) are the part that would remain "
             "under KVM. Both are measured; quote the one that fits the question.\n")
    L.append("Time to serve (`up_s`, s, medians): " + "; ".join(
        f"{s} N={n}: {d['up_s'][0]:.0f}" for (s, n), d in sorted(st.items()) if d["up_s"])
        + " (containers: from the server's (re)start with the new services; vms: from the "
        "start of the new VM).\n")
    if notes:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    L.append("Reproduce: `make bench-standby-cost` (under `flock /tmp/vcr-lab.lock` on a "
             "shared machine). Files: `standby-cost.csv` (every run: " + ", ".join(COLS)
             + "; extrapolated rows have measured=false and no run), `standby-cost.png`.")
    with open(os.path.join(RESULTS, "standby-cost.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    plot(st, ext)


def plot(st, ext):
    """Two panels, QEMU RSS and the guests' RAM files, against N."""
    if not shutil.which("gnuplot"):
        return
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    files = {}
    for name, key, ns in (("ours", "containers", OURS_N), ("base", "vms", BASE_N)):
        files[name] = os.path.join(tmp, f"{name}.dat")
        with open(files[name], "w") as f:
            for n in ns:
                d = st.get((key, n))
                if d:
                    f.write(f"{n} " + " ".join(f"{v[0]} {v[1]} {v[2]}" for v in (
                        d["qemu_rss_mb"], d["ram_file_mb"])) + "\n")
    files["ext"] = os.path.join(tmp, "ext.dat")
    with open(files["ext"], "w") as f:
        b2 = st.get(("vms", 2))
        if b2:
            f.write(f"2 {b2['qemu_rss_mb'][0]} {b2['ram_file_mb'][0]}\n")
        for n in EXTRA_N:
            if n in ext and ext[n]["qemu_rss_mb"] != "":
                f.write(f"{n} {ext[n]['qemu_rss_mb']} {ext[n]['ram_file_mb']}\n")

    def plots(col):
        series = [(files["ours"], f"1:{col}:{col + 1}:{col + 2} with yerrorlines lw 2 pt 7 "
                   "lc rgb '#1b9e77'", "one standby VM, N containers (measured)"),
                  (files["base"], f"1:{col}:{col + 1}:{col + 2} with yerrorlines lw 2 pt 5 "
                   "lc rgb '#d95f02'", "N standby VMs (measured)"),
                  (files["ext"], f"1:{2 if col == 2 else 3} with linespoints dt 2 lw 2 pt 4 "
                   "lc rgb '#d95f02'", "N standby VMs (extrapolated, not measured)")]
        return ", ".join(f"'{f}' using {how} title '{title}'" for f, how, title in series
                         if os.path.getsize(f))
    if not os.path.getsize(files["ours"]) and not os.path.getsize(files["base"]):
        return
    script = f"""
set terminal pngcairo size 1300,560 font 'sans,11'
set output '{os.path.join(RESULTS, 'standby-cost.png')}'
set multiplot layout 1,2 title 'Host memory of N warm nginx standbys (medians, min-max bars; TCG)'
set xlabel 'N protected services'
set ylabel 'MB'
set logscale x 2
set xtics (1, 2, 4, 16)
set xrange [0.8:20]
set yrange [0:*]
set grid
set key top left
set title 'QEMU RSS (with TCG translated-code cache)'
plot {plots(2)}
set title 'guest RAM touched (RAM files)'
plot {plots(5)}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--standby-mb", type=int, default=1024,
                    help="memory of the standby VM (ours), MB")
    ap.add_argument("--schemes", default="containers,vms")
    ap.add_argument("--n", default=",".join(map(str, OURS_N)),
                    help="N for the containers scheme (ascending)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the existing CSV's measured rows of the schemes not run now")
    ap.add_argument("--report-only", action="store_true",
                    help="no measurement: rewrite the .md and plot from standby-cost.csv")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    csv_path = os.path.join(RESULTS, "standby-cost.csv")

    def earlier(keep):
        if not os.path.exists(csv_path):
            return []
        with open(csv_path) as f:
            return [r for r in csv.DictReader(f) if r["measured"] == "true" and keep(r)]

    schemes = [s for s in args.schemes.split(",") if s]
    if args.report_only:
        # The measuring run's header line is kept (its load average line is today's).
        gen = None
        md = os.path.join(RESULTS, "standby-cost.md")
        if os.path.exists(md):
            with open(md) as f:
                gen = next((x + "\n" for x in f.read().split("\n")
                            if x.startswith("Generated by")), None)
        write_report(earlier(lambda r: True), args, machine(), 0, args.note, generated=gen)
        return 0
    if os.geteuid() != 0:
        sys.exit("standby-cost: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    points = [int(x) for x in args.n.split(",") if x]
    old = earlier(lambda r: r["scheme"] not in schemes) if args.merge else []
    rows = list(old)
    work = tempfile.mkdtemp(prefix="vcr-bench-cost-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    def report(extra=()):
        write_report(rows, args, machine(), time.monotonic() - T0,
                     args.note + NOTES + list(extra))

    say(f"lab up (namespace {labkit.NS}); work dir {work}")
    labkit.lab_up()
    try:
        for run in range(args.runs):
            for scheme in schemes:
                try:
                    if scheme == "containers":
                        rows += run_ours(build, work, run, args.standby_mb, points)
                    else:
                        rows += run_baseline(build, work, run, BASE_N)
                except (RuntimeError, labkit.Timeout) as e:
                    NOTES.append(f"{scheme} run {run} FAILED: {e}")
                    say(f"  FAILED: {e}")
            report(["partial: the run was still going when this was written"])
    except BaseException:
        report(["FAILED/INTERRUPTED run: only the rows in the CSV were measured"])
        raise
    finally:
        labkit.lab_down()
        say("lab down")
    report()
    say(f"wrote {RESULTS}/standby-cost.md, .csv, .png")
    print(open(os.path.join(RESULTS, "standby-cost.md")).read())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
