#!/usr/bin/env python3
"""bench-warm-vm (issues 4, 15): Warm-VM restart vs a local live migration to a new QEMU vs
full QEMU save/restore vs guest shutdown+boot.

In one run on one machine, for each method, measures the guest's pause, suspend, resume
and the service downtime seen by an HTTP client polling every VM every 10 ms from inside
the lab namespace, (a) vs VM memory size (one VM) and (b) vs number of 256 MB VMs
restarted together.  Each point is repeated --runs times on the same booted VMs; the median is
reported.  Writes bench/results/warm-vm.{md,csv} and warm-vm-{mem,vms}.png (gnuplot),
and warm-vm-timeline.csv: each warm run's per-VM step times as the agent reports them
(`at_ms`), which say whether a pause shared the machine with a start-up or another pause.

Methods
  warm          `vcr vm warm-restart VM` / `vcr host warm-restart HOST` (VMs under vcr-agent);
                pause/suspend/resume as reported by vcr (pause: `stop` of the old QEMU ..
                `cont` of the new one; the new QEMU was started before), downtime from the
                HTTP poller.
  live-migrate  the usual way to move a guest to a new QEMU process: QEMU started by this
                script with the agent's argv (the tap given as a descriptor, shared with the
                new QEMU); a new QEMU with its own RAM file (-incoming defer) and `migrate
                unix:SOCK` while the guest runs (pre-copy, RAM copied, QEMU's default
                limits: 300 ms downtime, 128 MiB/s).  pause = QEMU's own `downtime` of the
                migration; suspend = `migrate` .. completed; resume = completed .. the new
                QEMU running, the old one gone.
  save-restore  QEMU started by this script with the agent's argv; QMP stop, migrate
                (x-ignore-shared off) to `exec:cat > FILE`, quit, RAM file deleted; new QEMU
                -incoming defer, migrate-incoming `exec:cat FILE`, cont.
                suspend = stop .. old QEMU gone; resume = new QEMU exec .. cont returned.
  reboot        GET /cgi-bin/poweroff (guest sleeps 0.5 s, then poweroff -f), QEMU exits;
                a new QEMU boots.  suspend = request .. QEMU gone; resume = QEMU exec ..
                first good HTTP answer.
  pause (save-restore): `stop` .. `cont` returned; (reboot): suspend + resume.
For several VMs, suspend/resume is the time until the LAST VM is done (they run in
parallel); pause and downtime are the longest per-VM ones.

Run by `make bench-warm-vm` (bench/results/warm-vm.md says how each is measured).

Runs inside its own lab namespace (VCR_LAB_NS, default vcrbench) and tears it down.
"""
import argparse
import ctypes
import csv
import fcntl
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrbench")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
from harness import (T0, LabVm, Poller, agent_proc, columns_stats, fmt,  # noqa: E402,F401
                     machine, migration_done, ratio, say, server_proc, wait_server,
                     wait_tap_free)

RESULTS = os.path.join(ROOT, "bench", "results")
HOST = "bench1"
NOTES = []  # events worth reporting, appended during the run
MACHINE_OVERRIDE = {}  # --report-only: the machine the runs were measured on

# Paper (Xen 3.0.0, Pentium 4 3.0 GHz, 2 GB; SEEDS.md part B): (suspend_s, resume_s).
PAPER_MEM_1G = {"warm": (0.6, 0.6), "save-restore": (28, 20), "reboot": (12, 11)}
PAPER_VMS_6 = {"warm": (2.3, 2.0), "save-restore": (45, 37), "reboot": (25, 56)}
PAPER_DOWNTIME_1G = {"warm": 40, "save-restore": 104, "reboot": 78}
PAPER_NAMES = {"warm": "Warm-VM Reboot", "save-restore": "Xen save/restore",
               "reboot": "shutdown/boot"}


# --------------------------------------------------------------------------- own QEMU
class OwnVm(LabVm):
    """harness.LabVm with the two baselines' suspend and resume."""

    # save-restore: returns (suspend_s, resume_s, t_suspend_start, t_resume_end)
    def save_restore(self, barrier):
        t0 = time.monotonic()
        q = self.qmp
        q.cmd("stop")
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "x-ignore-shared", "state": False}])
        q.cmd("migrate", uri=f"exec:cat > {self.state}")
        labkit.wait_for(f"{self.name} save", lambda: migration_done(q), 600, interval=0.005)
        q.cmd("quit")
        self.wait_exit()
        os.unlink(self.ram)  # the memory is gone: restore has to rebuild it from the file
        t1 = time.monotonic()
        barrier.wait()
        t2 = time.monotonic()
        self.start(incoming=True)
        q = self.qmp
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "x-ignore-shared", "state": False}])
        q.cmd("migrate-incoming", uri=f"exec:cat {self.state}")
        labkit.wait_for(f"{self.name} restore", lambda: migration_done(q), 600, interval=0.005)
        q.cmd("cont")
        t3 = time.monotonic()
        self.state_bytes = os.path.getsize(self.state)
        os.unlink(self.state)
        return t1 - t0, t3 - t2, t0, t3

    # live-migrate: returns (suspend_s, resume_s, pause_s)
    def live_migrate(self, barrier, work):
        old_proc, old_qmp, old_ram, old_qmp_path = self.proc, self.qmp, self.ram, self.qmp_path
        # The new QEMU: its own RAM file (RAM is copied), its own QMP socket, and the
        # old one's tap descriptor (a tap that is not multi-queue has one open file:
        # the new QEMU cannot open it by name while the old one holds it).
        self.ram = old_ram[:-2] if old_ram.endswith(".b") else old_ram + ".b"
        self.qmp_path = (old_qmp_path[:-6] + ".qmp" if old_qmp_path.endswith(".b.qmp")
                         else old_qmp_path[:-4] + ".b.qmp")
        self.tap_fd = take_tap_fd(old_proc.pid, self.tap)
        hdr = vnet_hdr(self.tap_fd)
        sock = os.path.join(work, f"{self.name}.mig")
        if os.path.exists(sock):
            os.unlink(sock)
        try:
            self.start(incoming=True, autostart=True)
            vnet_hdr(self.tap_fd, hdr)  # QEMU resets it when it sets the tap up
            self.qmp.cmd("migrate-incoming", uri=f"unix:{sock}")
        finally:
            os.close(self.tap_fd)
            self.tap_fd = None
        barrier.wait()
        t0 = time.monotonic()
        old_qmp.cmd("migrate", uri=f"unix:{sock}")
        info = labkit.wait_for(f"{self.name} live migration", lambda: migration_info(old_qmp), 600,
                               interval=0.005)
        t1 = time.monotonic()
        labkit.wait_for(f"{self.name} running in the new QEMU",
                        lambda: self.qmp.cmd("query-status").get("status") == "running", 60,
                        interval=0.005)
        old_qmp.cmd("quit")
        old_proc.wait(timeout=60)
        old_qmp.close()
        os.unlink(old_ram)
        t2 = time.monotonic()
        self.state_bytes = info.get("ram", {}).get("transferred", 0)
        return t1 - t0, t2 - t1, info["downtime"] / 1000

    # reboot: returns (suspend_s, t_resume_start) ; resume end comes from the poller
    def reboot(self, barrier):
        t0 = time.monotonic()
        r = labkit.ns_run(["curl", "-s", "-f", "-m", "5", f"http://{self.addr}/cgi-bin/poweroff"],
                          timeout=10)
        self.forced = False
        try:
            if r.returncode != 0:
                raise labkit.Timeout(f"curl rc {r.returncode}")
            self.wait_exit(timeout=30)
        except labkit.Timeout:
            # Seen under TCG on a loaded host: the guest printed the power-off request,
            # then its kernel soft-locked.  Power it off from QEMU and count the run.
            self.forced = True
            say(f"  {self.name}: no guest power-off (no answer, or not off after 30 s): QMP quit")
            self.qmp.cmd("quit")
            self.wait_exit()
        t1 = time.monotonic()
        barrier.wait()
        t2 = time.monotonic()
        self.start()
        return t1 - t0, t2


# A running QEMU's descriptor of its tap, copied (pidfd_getfd, as src/agent/tap_fd.c does).
SYS_PIDFD_GETFD = 438
TUNGETVNETHDRSZ, TUNSETVNETHDRSZ = 0x800454D7, 0x400454D8


def take_tap_fd(pid, tap):
    # By fdinfo's `iff:` line (tun files only), not by the link's path: seen here, the
    # link of a descriptor handed on from a QEMU that has exited (its `ip netns exec`
    # mount namespace gone with it) no longer read "/dev/net/tun".
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                iff = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("iff:")]
            if iff != [tap]:
                continue
        except OSError:
            continue
        pidfd = os.pidfd_open(pid)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(fd), 0)
            if copy < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd of {tap} in qemu pid {pid}")
            return copy
        finally:
            os.close(pidfd)
    raise RuntimeError(f"qemu pid {pid} holds no descriptor of {tap}")


def vnet_hdr(fd, size=None):
    """The tap's vnet header size; with size: set it."""
    if size is not None:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", size))
        return size
    return struct.unpack("i", fcntl.ioctl(fd, TUNGETVNETHDRSZ, struct.pack("i", 0)))[0]


def migration_info(q):
    """query-migrate once completed (None before)."""
    r = q.cmd("query-migrate")
    if r.get("status") in ("failed", "cancelled"):
        raise RuntimeError(f"migration {r.get('status')}: {r.get('error-desc')}")
    return r if r.get("status") == "completed" else None


def parallel(fns, barrier=None):
    """Runs the callables in threads; returns their results; re-raises the first error
    (and breaks `barrier`, so that the other threads do not wait for the failed one)."""
    res, errs = [None] * len(fns), []

    def run(i, fn):
        try:
            res[i] = fn()
        except BaseException as e:  # noqa: BLE001
            errs.append(e)
            if barrier is not None:
                barrier.abort()
    ths = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    if errs:
        raise errs[0]
    return res


class Barrier(threading.Barrier):
    """A barrier that is broken (not hung) when one party fails."""

    def wait(self, timeout=600):
        return super().wait(timeout)


def wait_http(addrs, timeout):
    def ok(a):
        labkit.wait_for(f"HTTP from {a}", lambda: labkit.http_get(a, timeout=1) is not None,
                        timeout, interval=0.1)
    parallel([lambda a=a: ok(a) for a in addrs])


def fill(addrs, mb):
    def one(a):
        r = labkit.ns_run(["curl", "-s", "-f", "-m", "600", f"http://{a}/cgi-bin/fill?{mb}"],
                          timeout=620)
        if r.returncode != 0 or "filled" not in r.stdout:
            raise RuntimeError(f"fill {a}: rc {r.returncode} {r.stdout!r}")
    t = time.monotonic()
    parallel([lambda a=a: one(a) for a in addrs])
    say(f"  guest memory filled: {mb} MB non-zero in /tmp of each VM ({time.monotonic() - t:.1f}s)")


def fill_mb(mem_mb):
    # /tmp is a tmpfs limited to half of the guest's RAM; writing it runs at ~12 MB/s
    # under TCG here, so a quarter of the RAM keeps the whole bench under ~25 minutes.
    return mem_mb // 4


# --------------------------------------------------------------------------- runs
def run_baselines(work, mem, n, runs, methods, rows):
    vms = [OwnVm(f"bvm{i}", i, mem, work) for i in range(n)]
    addrs = [v.addr for v in vms]
    try:
        t = time.monotonic()
        parallel([v.start for v in vms])
        wait_http(addrs, 300)
        say(f"  {n} x {mem} MB own QEMU booted ({time.monotonic() - t:.1f}s)")
        fill(addrs, fill_mb(mem))
        if "save-restore" in methods:
            for run in range(runs):
                p = Poller(addrs)
                b = Barrier(n)
                res = parallel([lambda v=v: v.save_restore(b) for v in vms], b)
                gaps = p.finish()
                susp = max(r[0] for r in res)
                resu = max(r[1] for r in res)
                pause = max(r[3] - r[2] for r in res)  # stop .. cont returned
                down = max(g["gap"] for g in gaps.values())
                st = sum(v.state_bytes for v in vms)
                rows.append(row("save-restore", mem, n, run, susp, resu, down,
                                state_mb=st / 2**20, pause_s=pause))
                say(f"  save-restore run {run}: suspend {susp:.2f}s resume {resu:.2f}s "
                    f"downtime {down:.2f}s state {st / 2**20:.0f} MB")
        if "reboot" in methods:
            for run in range(runs):
                p = Poller(addrs)
                b = Barrier(n)
                res = parallel([lambda v=v: v.reboot(b) for v in vms], b)
                gaps = p.finish()
                susp = max(r[0] for r in res)
                t_start = min(r[1] for r in res)
                resu = max(g["gap_end"] for g in gaps.values()) - t_start
                down = max(g["gap"] for g in gaps.values())
                forced = [v.name for v in vms if v.forced]
                rows.append(row("reboot", mem, n, run, susp, resu, down, forced=bool(forced),
                                pause_s=susp + resu))
                if forced:
                    NOTES.append(f"reboot, {n} x {mem} MB, run {run}: {', '.join(forced)} did "
                                 "not answer the power-off request or did not power off within "
                                 "30 s: QMP quit (the 30 s are in this run's suspend time)")
                say(f"  reboot run {run}: suspend {susp:.2f}s resume {resu:.2f}s "
                    f"downtime {down:.2f}s")
        if "live-migrate" in methods:
            for run in range(runs):
                p = Poller(addrs)
                b = Barrier(n)
                res = parallel([lambda v=v: v.live_migrate(b, work) for v in vms], b)
                gaps = p.finish()
                susp = max(r[0] for r in res)
                resu = max(r[1] for r in res)
                pause = max(r[2] for r in res)
                down = max(g["gap"] for g in gaps.values())
                st = sum(v.state_bytes for v in vms)
                rows.append(row("live-migrate", mem, n, run, susp, resu, down,
                                state_mb=st / 2**20, pause_s=pause))
                say(f"  live-migrate run {run}: pause {pause * 1000:.1f} ms (QEMU's downtime) "
                    f"migration {susp:.2f}s switch {resu:.2f}s downtime {down:.2f}s "
                    f"RAM sent {st / 2**20:.0f} MB")
    finally:
        for v in vms:
            v.kill()


class Cluster:
    """vcr-server for the whole bench; a vcr-agent per measured point."""

    def __init__(self, build, work):
        self.build, self.work = build, work
        self.vcr = labkit.Vcr(build)
        cfg = os.path.join(work, "server.yaml")
        labkit.write_server_config(cfg, os.path.join(work, "journal.db"))
        self.server = wait_server(self.vcr, server_proc(build, cfg, os.path.join(work, "server.log")))
        self.agent = None

    def start_agent(self, mem, n):
        state = tempfile.mkdtemp(prefix="agent-", dir=self.work)
        cfg = os.path.join(self.work, "agent.yaml")
        vms = [labkit.vm_entry(f"wvm{i}", i, f"10.77.0.{11 + i}", memory_mb=mem)
               for i in range(n)]
        for i in range(n):
            wait_tap_free(f"tap{i}")
        labkit.write_agent_config(cfg, HOST, state, vms, accel="tcg")
        self.agent = agent_proc(self.build, cfg, os.path.join(self.work, f"agent-{mem}-{n}.log"),
                                "--stop-vms-on-exit")
        for v in vms:
            labkit.wait_for(f"{v['name']} running",
                            lambda v=v: (self.vcr.vm(v["name"]) or {}).get("state") == "running",
                            300, interval=0.2)
        return [f"wvm{i}" for i in range(n)], [v["address"].split("/")[0] for v in vms]

    def stop_agent(self):
        if self.agent:
            self.agent.stop(timeout=60)
            self.agent = None

    def stop(self):
        self.stop_agent()
        self.server.stop()


def run_warm(cluster, mem, n, runs, rows):
    t = time.monotonic()
    names, addrs = cluster.start_agent(mem, n)
    try:
        wait_http(addrs, 300)
        say(f"  {n} x {mem} MB under vcr-agent booted ({time.monotonic() - t:.1f}s)")
        fill(addrs, fill_mb(mem))
        for run in range(runs):
            p = Poller(addrs)
            if n == 1:
                r = cluster.vcr.run("vm", "warm-restart", names[0], "--json", timeout=600)
            else:
                r = cluster.vcr.run("host", "warm-restart", HOST, "--json", timeout=600)
            if r.returncode != 0:
                p.p.kill()
                raise RuntimeError(f"vcr warm-restart failed: {r.stderr.strip()} {r.stdout}")
            out = json.loads(r.stdout)
            gaps = p.finish()
            vs = out["vms"]
            bad = [v for v in vs if not v.get("ok") or v.get("fallback")]
            if bad or len(vs) != n:
                raise RuntimeError(f"warm restart not clean: {out}")
            susp = max(v["suspend_ms"] for v in vs) / 1000
            resu = max(v["resume_ms"] for v in vs) / 1000
            down = max(g["gap"] for g in gaps.values())
            st = sum(v.get("state_bytes") or 0 for v in vs)
            vmm_down = max(v["downtime_ms"] for v in vs) / 1000
            pause = max(v["pause_ms"] for v in vs) / 1000
            rows.append(row("warm", mem, n, run, susp, resu, down, state_mb=st / 2**20,
                            vmm_downtime_s=vmm_down, pause_s=pause))
            say(f"  warm run {run}: pause {pause * 1000:.1f} ms (per VM: "
                f"{', '.join(format(v['pause_ms'], '.1f') for v in vs)}) suspend {susp:.3f}s "
                f"resume {resu:.3f}s downtime {down:.3f}s state {st / 1024:.0f} KB")
            timeline(mem, n, run, vs)
    finally:
        cluster.stop_agent()


TIMELINE_STEPS = ("order", "spawned", "ready", "listening", "gate", "stop", "migrated", "cont")
TIMELINE = []  # rows of warm-vm-timeline.csv


def timeline(mem, n, run, vs):
    """The agent's step times of each VM (`at_ms`, its CLOCK_MONOTONIC ms), relative to the
    run's first order: shows whether a guest's pause shared the machine with another VM's
    QEMU start-up or pause.  Kept for warm-vm-timeline.csv and printed."""
    ats = [v.get("at_ms") or {} for v in vs]
    orders = [a["order"] for a in ats if a.get("order")]
    if not orders:
        return
    t0 = min(orders)
    for v, a in zip(vs, ats):
        r = {"mem_mb": mem, "vms": n, "run": run, "vm": v["vm"],
             "pause_ms": round(v["pause_ms"], 2)}
        for k in TIMELINE_STEPS:
            r[k] = round(a[k] - t0, 2) if a.get(k) else ""
        TIMELINE.append(r)
        say("    " + v["vm"] + " " + " ".join(f"{k} {r[k]}" for k in TIMELINE_STEPS)
            + f" pause {r['pause_ms']}")


def row(method, mem, n, run, susp, resu, down, state_mb=None, vmm_downtime_s=None, forced=False,
        pause_s=None):
    """forced: a reboot run in which some guest did not power off within 30 s and was quit
    by QMP; its times include that wait, so it is reported apart, not in the medians.
    pause_s: the guest's pause (the longest of the VMs), written as pause_ms."""
    return {"method": method, "mem_mb": mem, "vms": n, "run": run,
            "pause_ms": "" if pause_s is None else round(pause_s * 1000, 2),
            "suspend_s": round(susp, 4),
            "resume_s": round(resu, 4), "downtime_s": round(down, 4),
            "state_mb": "" if state_mb is None else round(state_mb, 3),
            "vmm_downtime_s": "" if vmm_downtime_s is None else round(vmm_downtime_s, 4),
            "forced": 1 if forced else 0}


def is_forced(r):
    return str(r.get("forced", "0")).strip() in ("1", "True", "true")


# --------------------------------------------------------------------------- report
METHODS = ["warm", "live-migrate", "save-restore", "reboot"]
LABEL = {"warm": "Warm-VM restart (vcr)", "live-migrate": "live migration to a new QEMU (RAM copied)",
         "save-restore": "QEMU save/restore (full RAM)", "reboot": "guest shutdown + boot"}


def medians(rows, key):
    """{(method, key value): {col: median, col_min, col_max, n, forced}}; forced runs are
    counted apart and left out of the medians (is_forced)."""
    out, forced = {}, {}
    for r in rows:
        k = (r["method"], r[key])
        if is_forced(r):
            forced[k] = forced.get(k, 0) + 1
            out.setdefault(k, [])
        else:
            out.setdefault(k, []).append(r)
    med = {}
    for k, rs in out.items():
        if not rs:
            continue
        med[k] = columns_stats(rs, ("suspend_s", "resume_s", "downtime_s", "pause_ms"))
        med[k]["n"] = len(rs)
        med[k]["forced"] = forced.get(k, 0)
        sm = [float(x["state_mb"]) for x in rs if x["state_mb"] != ""]
        med[k]["state_mb"] = statistics.median(sm) if sm else None
    return med


def write_report(rows, args, methods, mach, elapsed, notes):
    os.makedirs(RESULTS, exist_ok=True)
    cols = ["method", "mem_mb", "vms", "run", "pause_ms", "suspend_s", "resume_s", "downtime_s",
            "state_mb", "vmm_downtime_s", "sweep", "forced"]
    with open(os.path.join(RESULTS, "warm-vm.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    tl_path = os.path.join(RESULTS, "warm-vm-timeline.csv")
    tl = [dict(r) for r in TIMELINE]
    if args.merge and os.path.exists(tl_path):
        # The points not measured now keep their rows, as in warm-vm.csv.
        now = {(int(r["mem_mb"]), int(r["vms"])) for r in tl}
        with open(tl_path) as f:
            tl = [r for r in csv.DictReader(f) if (int(r["mem_mb"]), int(r["vms"])) not in now] + tl
    if TIMELINE:
        with open(tl_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["mem_mb", "vms", "run", "vm", "pause_ms",
                                              *TIMELINE_STEPS])
            w.writeheader()
            w.writerows(tl)
    if not mach.get("measured"):
        # What the runs were measured on, for a later --report-only.
        side = dict(mach, measured=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                    minutes=f"{elapsed / 60:.1f}", argv=" ".join(sys.argv[1:]) or "defaults")
        with open(os.path.join(RESULTS, "warm-vm-machine.json"), "w") as f:
            json.dump(side, f, indent=1)
    forced_runs = [r for r in rows if is_forced(r)]
    if forced_runs:
        notes = list(notes) + [
            f"Reported apart, not in the medians: {r['method']} {r['vms']} x {r['mem_mb']} MB "
            f"run {r['run']}: suspend {float(r['suspend_s']):.2f} s, resume "
            f"{float(r['resume_s']):.2f} s, downtime {float(r['downtime_s']):.2f} s (a guest "
            "did not power off within 30 s and was quit by QMP; the 30 s are in its suspend)"
            for r in forced_runs]
    mem_rows = [r for r in rows if r["vms"] == 1]
    vm_rows = [r for r in rows if r["mem_mb"] == 256]
    mm, mv = medians(mem_rows, "mem_mb"), medians(vm_rows, "vms")
    mems = sorted({r["mem_mb"] for r in mem_rows})
    nvms = sorted({r["vms"] for r in vm_rows})
    L = []
    L.append("# bench-warm-vm: Warm-VM restart vs live migration to a new QEMU vs QEMU "
             "save/restore vs shutdown + boot\n")
    if "warm" not in methods:
        L.append("**BASELINES ONLY: the Warm-VM restart feature (`vcr vm warm-restart`) was not "
                 "available when this ran; the `warm` rows are missing. Re-run "
                 "`make bench-warm-vm` once it has landed.**\n")
    if mach.get("measured"):
        L.append(f"Measured by `bench/warm_vm.py` ({mach.get('argv', 'defaults')}) on "
                 f"{mach['measured']}; total {mach.get('minutes', '?')} min; this report "
                 f"regenerated from `warm-vm.csv` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                 "; medians (min-max) of the runs per point (runs column).\n")
    else:
        L.append(f"Generated by `bench/warm_vm.py` ({' '.join(a for i, a in enumerate(sys.argv[1:]) if a != '--note' and sys.argv[i] != '--note') or 'defaults'}) on "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total {elapsed / 60:.1f} "
                 f"min (last invocation); medians (min-max) of the runs per point (runs column).\n")
    L.append("## Machine\n")
    L.append(f"- CPUs (`nproc`): {mach['nproc']}; memory {mach['mem']}; CPU: {mach['cpu']}")
    L.append(f"- {mach['qemu']}; accelerator **TCG** (no usable KVM here); host kernel "
             f"{mach['kernel']}; load average at the end {mach['load']}")
    L.append("- Guest: Debian 6.1 kernel + busybox initramfs (lab/build-image), 1 vCPU, RAM in a "
             "/dev/shm file (`memory-backend-file,share=on`), HTTP by busybox httpd.")
    L.append("- Before measuring, each guest writes 1/4 of its RAM of non-zero data to its tmpfs "
             "(`/cgi-bin/fill?MB`), so a full save has real pages to write.\n")
    L.append("- The machine is shared: other jobs ran beside this benchmark (see the load "
             "average), which inflates the TCG times and their spread.\n")
    L.append("Absolute times are TCG times on this machine: compare the ratios, not the "
             "seconds, with the paper.\n")
    L.append("## How each is measured\n")
    L.append("- **pause** (the guest's pause, ms; the longest of the VMs when several): "
             "**warm**: `pause_ms` as vcr reports it, `stop` sent to the old QEMU .. `cont` "
             "answered by the new one (the new QEMU was started, greeted and listens before the "
             "`stop`); **live-migrate**: QEMU's own `downtime` of the migration (query-migrate); "
             "**save-restore**: `stop` .. `cont` returned; **reboot**: suspend + resume.")
    L.append("- **warm**: `vcr vm warm-restart VM --json` (one VM) or `vcr host warm-restart "
             "HOST --json` (all VMs of the host in parallel): the device state goes straight from "
             "the old QEMU into the new one over a UNIX socket, RAM not copied (x-ignore-shared); "
             "suspend = `stop` .. the new QEMU has the state, resume = .. `cont` (as reported by "
             "vcr; `vmm_downtime_s` in the CSV is vcr's own downtime figure).")
    L.append("- **live-migrate** (the usual way to move a guest to a new QEMU process, the peer "
             "baseline): QEMU started by the bench with the agent's argv; a new QEMU with its own "
             "RAM file, `-incoming defer`, the old one's tap descriptor (pidfd_getfd); `migrate "
             "unix:SOCK` while the guest runs (pre-copy, all RAM copied, QEMU's default limits: "
             "300 ms downtime, 128 MiB/s); suspend = `migrate` .. completed, resume = .. the new "
             "one running and the old one gone; state MB = RAM bytes sent.")
    L.append("- **save-restore**: QEMU started by the bench with the agent's argv; QMP `stop`, "
             "`migrate` to `exec:cat > FILE` with x-ignore-shared off, `quit`, RAM file deleted "
             "(suspend = `stop` .. old QEMU exited); new QEMU `-S -incoming defer`, "
             "`migrate-incoming exec:cat FILE`, `cont` (resume = exec .. `cont` returned).")
    L.append("- **reboot**: `GET /cgi-bin/poweroff` (the guest waits 0.5 s, then `poweroff -f`) "
             "until QEMU exits = suspend; a new QEMU boots until the first good HTTP answer = "
             "resume.")
    L.append("- **downtime**: a client inside the lab namespace sends `GET /` to every VM every "
             "10 ms (raw sockets, 0.2 s timeout); downtime = the longest gap between two good "
             "answers of a VM (the worst VM when several).")
    L.append("- Several VMs: all restarted together; suspend/resume = until the last VM is "
             "done.\n")

    def table(med, keyname, keys, title):
        L.append(f"## {title}\n")
        L.append("Median (min-max) of the runs; a reboot run in which a guest had to be quit "
                 "after 30 s is not in them (runs column: `+N forced`, listed below).\n")
        L.append(f"| {keyname} | method | pause ms | suspend s | resume s | HTTP downtime s | "
                 "state MB | runs |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|")

        def cell(d, c):
            return f"{fmt(d[c])} ({fmt(d[c + '_min'])}-{fmt(d[c + '_max'])})"

        def pcell(d):
            if d.get("pause_ms") is None:
                return "-"
            return (f"{d['pause_ms']:.1f} ({d['pause_ms_min']:.1f}-{d['pause_ms_max']:.1f})")
        for k in keys:
            for m in METHODS:
                d = med.get((m, k))
                if d:
                    runs = f"{d['n']}" + (f" +{d['forced']} forced" if d.get("forced") else "")
                    L.append(f"| {k} | {m} | {pcell(d)} | {cell(d, 'suspend_s')} | "
                             f"{cell(d, 'resume_s')} | "
                             f"{cell(d, 'downtime_s')} | "
                             f"{'-' if d['state_mb'] is None else format(d['state_mb'], '.2f')} | {runs} |")
        L.append("")
        L.append("Ratios (baseline / warm; >1 = warm is faster), of the medians:\n")
        L.append(f"| {keyname} | live-migrate pause | downtime | save-restore pause | downtime | "
                 "reboot pause | downtime |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        any_ratio = False
        for k in keys:
            w = med.get(("warm", k))
            if not w:
                continue
            cells = []
            for m in ("live-migrate", "save-restore", "reboot"):
                b = med.get((m, k))
                cells.append(ratio(w["pause_ms"], b["pause_ms"]) if b and b.get("pause_ms")
                             and w.get("pause_ms") else "-")
                cells.append(ratio(w["downtime_s"], b["downtime_s"]) if b else "-")
            L.append(f"| {k} | " + " | ".join(cells) + " |")
            any_ratio = True
        if not any_ratio:
            L.append("| - | (no warm rows) | | | | | |")
        L.append("")

    def goals():
        L.append("## Goals (issue 15) and what this run reached\n")
        w1g = mm.get(("warm", 1024))
        ws = [mm[("warm", k)]["pause_ms"] for k in mems
              if ("warm", k) in mm and mm[("warm", k)].get("pause_ms")]
        w1, w6 = mv.get(("warm", 1)), mv.get(("warm", max(nvms) if nvms else 1))
        L.append("| goal | reached (medians) |")
        L.append("|---|---|")
        L.append(f"| warm pause at 1 GB <= 50 ms under TCG | "
                 f"{format(w1g['pause_ms'], '.1f') + ' ms' if w1g and w1g.get('pause_ms') else 'not measured'} |")
        L.append(f"| max/min of the warm pause over {min(mems)} MB-{max(mems)} MB <= 1.5 | "
                 f"{format(max(ws) / min(ws), '.2f') if len(ws) > 1 else 'not measured'} "
                 f"({', '.join(format(x, '.1f') for x in ws)} ms) |")
        if w1 and w6 and w1.get("pause_ms") and w6.get("pause_ms") and max(nvms) > 1:
            L.append(f"| {max(nvms)} VMs together <= 2x one VM (the longest pause of the "
                     f"{max(nvms)}) | {w6['pause_ms'] / w1['pause_ms']:.2f}x "
                     f"({w6['pause_ms']:.1f} vs {w1['pause_ms']:.1f} ms); all {max(nvms)} "
                     f"restarted (suspend+resume of the last): "
                     f"{(w6['suspend_s'] + w6['resume_s']) / (w1['suspend_s'] + w1['resume_s']):.2f}x |")
        else:
            L.append("| 6 VMs together <= 2x one VM | not measured |")
        L.append("")

    goals()
    table(mm, "VM MB", mems, "(a) vs VM memory size (one VM)")
    L.append("![the guest's pause vs memory](warm-vm-mem.png)\n")
    table(mv, "VMs", nvms, "(b) vs number of 256 MB VMs restarted together")
    L.append("![the guest's pause vs number of VMs](warm-vm-vms.png)\n")

    overlap_section(L, tl)
    L.append("## (c) service downtime seen by the HTTP client\n")
    L.append("From the tables above (HTTP downtime column); for the 1 GB VM:\n")
    L.append("| method | ours: HTTP downtime s (1 GB VM, QEMU restart only) | paper: downtime s "
             "(1 GB VM, incl. Xen's own reboot) |")
    L.append("|---|---:|---:|")
    for m in METHODS:
        d = mm.get((m, 1024))
        L.append(f"| {m} | {fmt(d['downtime_s']) if d else 'not measured'} | "
                 f"{PAPER_DOWNTIME_1G[m]} ({PAPER_NAMES[m]}) |" if m in PAPER_DOWNTIME_1G else
                 f"| {m} | {fmt(d['downtime_s']) if d else 'not measured'} | - |")
    L.append("")
    L.append("## Beside the paper's figures (their hardware: Xen 3.0.0, Pentium 4 3.0 GHz, "
             "2 GB RAM, SATA disk; SEEDS.md part B)\n")
    L.append("| figure | method | paper (theirs) suspend / resume s | ours suspend / resume s | "
             "paper ratio vs warm | our ratio vs warm |")
    L.append("|---|---|---:|---:|---:|---:|")
    for title, paper, med, k in (("1 GB VM", PAPER_MEM_1G, mm, 1024),
                                 ("6 VMs x 256 MB", PAPER_VMS_6, mv, 6)):
        pw, ow = paper["warm"], med.get(("warm", k))
        for m in METHODS:
            if m not in paper:
                continue
            p, o = paper[m], med.get((m, k))
            ours = f"{fmt(o['suspend_s'])} / {fmt(o['resume_s'])}" if o else "not measured"
            pr = "-" if m == "warm" else f"{ratio(pw[0], p[0])} / {ratio(pw[1], p[1])}"
            orr = ("-" if m == "warm" or not o or not ow else
                   f"{ratio(ow['suspend_s'], o['suspend_s'])} / {ratio(ow['resume_s'], o['resume_s'])}")
            L.append(f"| {title} | {m} ({PAPER_NAMES[m]}) | {p[0]} / {p[1]} | {ours} | {pr} | {orr} |")
    L.append("")
    L.append("The paper's warm figure (0.6 s) includes Xen's work to save/re-attach the "
             "domain's memory and the paper's downtimes include the VMM's (Xen's) own reboot, "
             "which has no equivalent here: only QEMU processes are restarted, the host kernel "
             "keeps running. Shutdown/boot here is a minimal busybox guest (no services).\n")
    if notes:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    L.append("Files: `warm-vm.csv` (every run: method, mem_mb, vms, run, pause_ms, suspend_s, resume_s, "
             "downtime_s, state_mb, vmm_downtime_s, sweep, forced), `warm-vm-timeline.csv` (each warm run's per-VM step times: section (d)), `warm-vm-machine.json` (what the runs were measured on), `warm-vm-mem.png`, `warm-vm-vms.png`.")
    with open(os.path.join(RESULTS, "warm-vm.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    plot(mm, mems, "mem", "VM memory size (MB), one VM")
    plot(mv, nvms, "vms", "number of 256 MB VMs restarted together")


def overlap_section(L, tl):
    """How the warm pauses of several VMs fell, from the agent's step times (`at_ms`)."""
    runs = {}
    for r in tl:
        if int(r["vms"]) > 1:
            runs.setdefault((int(r["mem_mb"]), int(r["vms"]), int(r["run"])), []).append(r)
    if not runs:
        return
    f = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None
    L.append("## (d) where the pauses of several VMs went (warm, `warm-vm-timeline.csv`)\n")
    L.append("The agent reports when each step of each VM's restart happened (`at_ms` in "
             "the order's reply, its CLOCK_MONOTONIC; here ms after the run's first order): "
             "order accepted, new QEMU spawned, greeted (ready), listening, let through the "
             "pause gate, `stop` sent, state in (migrated), `cont` answered. A pause "
             "*overlaps a start-up* when another VM's new QEMU was between spawned and ready "
             "during it, *another pause* when two VMs' stop..cont intervals intersect.\n")
    L.append("| VMs | run | orders spread ms | last ready ms | first stop ms | pauses overlapping a "
             "start-up | overlapping another pause | per VM pause ms (stop..state in + state in.."
             "cont) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---|")
    for (mem, n, run), rs in sorted(runs.items()):
        if any(f(r, "stop") is None or f(r, "cont") is None for r in rs):
            continue
        rs.sort(key=lambda r: f(r, "stop"))
        starts = sum(1 for a in rs if any(
            b is not a and f(b, "spawned") is not None and f(b, "ready") is not None
            and f(b, "spawned") < f(a, "cont") and f(b, "ready") > f(a, "stop") for b in rs))
        pauses = sum(1 for a in rs if any(
            b is not a and f(b, "stop") < f(a, "cont") and f(b, "cont") > f(a, "stop")
            for b in rs))
        orders = [f(r, "order") for r in rs]
        parts = ", ".join(f"{f(r, 'pause_ms'):.1f} ({f(r, 'migrated') - f(r, 'stop'):.1f} + "
                          f"{f(r, 'cont') - f(r, 'migrated'):.1f})" for r in rs)
        L.append(f"| {n} | {run} | {max(orders) - min(orders):.0f} | "
                 f"{max(f(r, 'ready') for r in rs):.0f} | {min(f(r, 'stop') for r in rs):.0f} | "
                 f"{starts} of {len(rs)} | {pauses} of {len(rs)} | {parts} |")
    L.append("")


def plot(med, keys, name, xlabel):
    """The guest's pause (ms, log scale) per method: medians with min-max bars."""
    if not shutil.which("gnuplot") or not keys:
        return
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    series = []
    for m in METHODS:
        if not any((m, k) in med and med[(m, k)].get("pause_ms") for k in keys):
            continue
        path = os.path.join(tmp, f"{m}.dat")
        with open(path, "w") as f:
            for i, k in enumerate(keys):
                d = med.get((m, k))
                if d and d.get("pause_ms"):
                    f.write(f"{i} {k} {max(d['pause_ms'], 0.1)} {max(d['pause_ms_min'], 0.1)} "
                            f"{max(d['pause_ms_max'], 0.1)}\n")
        series.append((m, path))
    colors = {"warm": "#1b9e77", "live-migrate": "#e7298a", "save-restore": "#d95f02",
              "reboot": "#7570b3"}
    plots = []
    for m, path in series:
        plots.append(f"'{path}' using 1:3:4:5:xtic(2) with yerrorlines lw 2 pt 7 ps 1.3 "
                     f"lc rgb '{colors[m]}' title '{m}'")
    script = f"""
set terminal pngcairo size 900,560 font 'sans,11'
set output '{os.path.join(RESULTS, f'warm-vm-{name}.png')}'
set title "The guest's pause: warm restart vs live migration vs save/restore vs reboot (TCG, medians, min-max)"
set xlabel '{xlabel}'
set ylabel 'pause (ms, log scale)'
set logscale y
set format y '%g'
set grid ytics mytics xtics
set key outside right top
set xrange [-0.3:{len(keys) - 0.7}]
plot {', '.join(plots)}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- main
def warm_available(build):
    vcr = os.path.join(build, "src", "cli", "vcr")
    r = subprocess.run([vcr, "vm", "warm-restart", "--help"], capture_output=True, text=True)
    return r.returncode == 0 and "warm" in (r.stdout + r.stderr).lower()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="256/1024 MB, 1/2 VMs, 1 run")
    ap.add_argument("--mem", default="256,512,1024,2048", help="memory sizes (MB), one VM")
    ap.add_argument("--vms", default="1,6", help="numbers of 256 MB VMs")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--keep-lab", action="store_true")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the report's Notes (repeatable)")
    ap.add_argument("--report-only", action="store_true",
                    help="no measurement: rewrite warm-vm.md and the plots from warm-vm.csv "
                         "(implies --merge)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the existing bench/results/warm-vm.csv for the "
                         "(method, memory, VMs) points not measured now")
    args = ap.parse_args()
    if args.quick:
        args.mem, args.vms, args.runs = "256,1024", "1,2", 1
    if os.geteuid() != 0:
        sys.exit("warm_vm: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    # The guest image `make image` / lab/build-image wrote for this build.
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    mems = [int(x) for x in args.mem.split(",") if x]
    nvms = [int(x) for x in args.vms.split(",") if x]
    methods = [m for m in args.methods.split(",") if m]
    notes = list(args.note)
    if args.report_only:
        args.merge = True
    elif "warm" in methods and not warm_available(build):
        say(f"`vcr vm warm-restart` is not in {build}: running the baselines only")
        notes.append(f"`vcr vm warm-restart --help` failed in {build}: warm not measured.")
        methods = [m for m in methods if m != "warm"]
    if max(nvms or [0]) > 8:
        sys.exit("at most 8 VMs (tap0..tap7)")

    old_rows = []
    if args.merge and os.path.exists(os.path.join(RESULTS, "warm-vm.csv")):
        with open(os.path.join(RESULTS, "warm-vm.csv")) as f:
            old_rows = list(csv.DictReader(f))
        for r in old_rows:
            for k in ("mem_mb", "vms", "run"):
                r[k] = int(r[k])

    def report(rows, extra=()):
        done = {(r["method"], r["mem_mb"], r["vms"]) for r in rows}
        old = [r for r in old_rows if (r["method"], r["mem_mb"], r["vms"]) not in done]
        kept = sorted({(r["method"], r["mem_mb"], r["vms"]) for r in old})
        n = [f"--merge: {len(old)} rows kept from an earlier run of this script on this "
             f"machine (points as method, MB, VMs): {kept}."] if old and rows else []
        ms = sorted(set(methods) | {r["method"] for r in old}, key=METHODS.index)
        write_report(old + rows, args, ms, MACHINE_OVERRIDE or machine(), time.monotonic() - T0,
                     notes + NOTES + n + list(extra))

    if args.report_only:
        methods = []
        side = os.path.join(RESULTS, "warm-vm-machine.json")
        if os.path.exists(side):
            with open(side) as f:
                MACHINE_OVERRIDE.update(json.load(f))
        report([])
        say(f"rewrote {RESULTS}/warm-vm.md and the plots from warm-vm.csv")
        return 0
    work = tempfile.mkdtemp(prefix="vcr-bench-warm-")
    rows = []
    cluster = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    say(f"lab up (namespace {labkit.NS}); work dir {work}; methods {methods}")
    labkit.lab_up()
    try:
        if "warm" in methods:
            cluster = Cluster(build, work)
        # (mem, n) points; the (256 MB, 1 VM) point belongs to both sweeps.
        points = [(m, 1, "mem") for m in mems]
        points += [(256, n, "vms") for n in nvms if not (n == 1 and 256 in mems)]
        # The paper's headline points first (1 GB, 6 VMs), so a cut-short run has them.
        first = {(1024, 1), (256, 6), (256, 1)}
        points.sort(key=lambda p: ((p[0], p[1]) not in first))
        for mem, n, sweep in points:
            say(f"point: {n} VM(s) x {mem} MB")
            before = len(rows)
            if "warm" in methods:
                run_warm(cluster, mem, n, args.runs, rows)
            base = [m for m in methods if m != "warm"]
            if base:
                run_baselines(work, mem, n, args.runs, base, rows)
            for r in rows[before:]:
                r["sweep"] = "both" if (mem == 256 and n == 1) else sweep
            # After every point, so that an interrupted run still leaves its results.
            report(rows, ["partial: the run was still going when this was written"])
    except BaseException:
        report(rows, ["FAILED/INTERRUPTED run: only the points listed were measured"])
        raise
    finally:
        if cluster:
            cluster.stop()
        if not args.keep_lab:
            labkit.lab_down()
            say("lab down")
    report(rows)
    say(f"wrote {RESULTS}/warm-vm.md, warm-vm.csv, warm-vm-mem.png, warm-vm-vms.png")
    print(open(os.path.join(RESULTS, "warm-vm.md")).read())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
