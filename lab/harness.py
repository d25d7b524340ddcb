"""One harness for the integration tests, the benchmarks and the demos: starting the
daemons (`server_proc`, `agent_proc`, `wait_server`, and `Daemons`, which the tests'
fixtures and two benchmarks use), progress lines (`say`), the machine a result was
measured on (`machine`, `machine_line`), the statistics every table quotes
(`stats`, `columns_stats`, `fmt`, `fmt_stats`, `ratio`), the plots (`gnuplot`) and the
server's heartbeat-gap histograms (`metrics_gaps`, `merge_gaps`, `gap_p99`).

What the lab itself is (namespace, VMs, images, configurations) stays in labkit.py; each
benchmark keeps its own measuring logic in its file.  Plain Python (no pytest): the
benchmarks and lab/demo import it as they are."""
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

import labkit

ROOT = labkit.ROOT
SANITIZER = labkit.SANITIZER_REPORT
T0 = time.monotonic()
QEMU = "/usr/bin/qemu-system-x86_64"


def say(msg, digits=1):
    """A progress line, stamped with the seconds since the harness was imported."""
    print(f"[{time.monotonic() - T0:7.{digits}f}s] {msg}", flush=True)


# --- the machine a result comes from ---------------------------------------------------

def machine():
    """{nproc, mem, cpu, qemu, kernel, load}: strings, "?" where a probe failed."""
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("free -m | awk '/^Mem:/{print $2}'")
    return {"nproc": sh("nproc"), "mem": f"{mem} MB", "cpu": cpu or "?",
            "qemu": sh("qemu-system-x86_64 --version | head -1"), "kernel": platform.release(),
            "load": sh("cut -d' ' -f1-3 /proc/loadavg")}


def machine_line(m=None):
    """machine() as one line for a table's header."""
    m = m or machine()
    return (f"{m['cpu']}, {m['nproc']} CPUs, {m['mem']} RAM, {m['kernel']}; {m['qemu']}; TCG")


# --- statistics --------------------------------------------------------------------------

def stats(values):
    """(median, min, max) of the values, or None when there are none."""
    xs = [float(v) for v in values]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def columns_stats(rows, columns):
    """{col: median, col_min: .., col_max: ..} over the rows' non-empty values of each
    column (None, None, None for a column with none)."""
    d = {}
    for c in columns:
        s = stats(r.get(c) for r in rows if r.get(c) not in ("", None))
        d[c], d[c + "_min"], d[c + "_max"] = s if s else (None, None, None)
    return d


def fmt(x, nd=2):
    """A number for a table: three decimals below 1, else nd; "-" for none."""
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else f"{x:.{nd}f}"


def fmt_stats(st):
    """stats() as "median [min-max]" in whole units; "-" for none."""
    return "-" if st is None else f"{st[0]:.0f} [{st[1]:.0f}-{st[2]:.0f}]"


def ratio(a, b):
    """b / a as "12x" or "1.5x"; "-" when either is missing or a is not positive."""
    if a is None or b is None or a <= 0:
        return "-"
    return f"{b / a:.0f}x" if b / a >= 10 else f"{b / a:.1f}x"


# --- plots -------------------------------------------------------------------------------

def gnuplot(script, *tmp_paths):
    """Runs gnuplot on script, then removes tmp_paths (its data files).  A plot that fails
    (no gnuplot, a bad script) is said, not raised: it must not lose a run whose tables are
    written."""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        say(f"gnuplot: {e}")
    finally:
        for p in tmp_paths:
            os.unlink(p)


# --- the server's heartbeat gaps (GET /metrics) ------------------------------------------

def metrics_gaps():
    """{host: {"bounds": [(le, cumulative)], "count", "max_s"}} from the lab server's
    GET /metrics (`vcr_host_heartbeat_gap_seconds`, `_max_seconds`)."""
    r = labkit.ns_run(labkit.api_curl("/metrics", role="read"), timeout=30)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r'vcr_host_heartbeat_gap_seconds_bucket\{host="([^"]+)",le="([^"]+)"\} '
                     r'(\S+)', line)
        if m:
            h = out.setdefault(m[1], {"bounds": [], "count": 0, "max_s": 0.0})
            h["bounds"].append((float(m[2]), float(m[3])))
            continue
        m = re.match(r'vcr_host_heartbeat_gap_max_seconds\{host="([^"]+)"\} (\S+)', line)
        if m:
            out.setdefault(m[1], {"bounds": [], "count": 0, "max_s": 0.0})["max_s"] = float(m[2])
    for h in out.values():
        h["count"] = int(h["bounds"][-1][1]) if h["bounds"] else 0
    return out


def merge_gaps(total, part):
    """Adds one server session's histograms (per host) into total."""
    for host, h in part.items():
        t = total.setdefault(host, {"bounds": [(le, 0.0) for le, _ in h["bounds"]],
                                    "count": 0, "max_s": 0.0})
        t["bounds"] = [(le, a + b) for (le, a), (_, b) in zip(t["bounds"], h["bounds"])]
        t["count"] += h["count"]
        t["max_s"] = max(t["max_s"], h["max_s"])


def gap_p99(h):
    """The bucket bound below which 99% of the gaps fall (inf: above every bound)."""
    for le, cum in h["bounds"]:
        if h["count"] and cum >= 0.99 * h["count"]:
            return le
    return float("nan")


# --- the daemons -------------------------------------------------------------------------

def build_dir():
    """The integration tests' build: VCR_ASAN_BUILD, else build-asan."""
    return os.environ.get("VCR_ASAN_BUILD", os.path.join(ROOT, "build-asan"))


def server_proc(build, cfg, log, *args):
    """vcr-server of `build` on configuration file cfg, its output in log."""
    return labkit.Proc([os.path.join(build, "src", "server", "vcr-server"), "--config",
                        str(cfg), *args], str(log))


def agent_proc(build, cfg, log, *args):
    """vcr-agent of `build` on configuration file cfg, its output in log."""
    return labkit.Proc([os.path.join(build, "src", "agent", "vcr-agent"), "--config",
                        str(cfg), *args], str(log))


def wait_server(vcr, p, timeout=15):
    """Until server p answers `vcr status`; fails if p exits first.  Its own listeners,
    not another server's: one left running on the same ports would answer the API
    while this one exits ("Address already in use")."""
    labkit.wait_for("the server listening (or exiting)",
                    lambda: not p.alive() or "HTTP API on" in p.log_text(), timeout)
    if not p.alive():
        raise RuntimeError(f"vcr-server exited: {p.log_text()[-1500:]}")
    labkit.wait_for("the server's API", lambda: vcr.run("status").returncode == 0, timeout)
    return p


class Daemons:
    """Starts vcr-server and vcr-agent processes under tmp_path (a pathlib.Path); checks
    their logs for sanitizer reports."""

    def __init__(self, tmp_path, build=None):
        self.tmp = tmp_path
        self.build = build or build_dir()
        self.procs = []
        self.vcr = labkit.Vcr(self.build)

    def server(self, heartbeat_ms=500, host_timeout_ms=None, log="server", **config):
        """config: more write_server_config keywords (dns, services, fence_timeout_ms).
        A second call with another `log` restarts on the same journal."""
        cfg = self.tmp / "server.yaml"
        labkit.write_server_config(cfg, self.tmp / "journal.db", heartbeat_ms, host_timeout_ms,
                                   **config)
        p = server_proc(self.build, cfg, self.tmp / f"{log}.log", "--log-level", "debug")
        self.procs.append(p)
        try:
            return wait_server(self.vcr, p)
        except RuntimeError as e:
            raise AssertionError(str(e)) from None

    def agent(self, host, vms, accel="tcg", probe_deadline_ms=20000, name=None, server=None,
              args=()):
        """server: the server's HOST:PORT for this agent (write_agent_config's); args: more
        vcr-agent options (--test-faults)."""
        state = self.tmp / f"agent-{host}"
        state.mkdir(exist_ok=True)
        cfg = self.tmp / f"agent-{host}.yaml"
        labkit.write_agent_config(cfg, host, str(state), vms, accel, probe_deadline_ms,
                                  server=server)
        p = agent_proc(self.build, cfg, self.tmp / f"{name or 'agent-' + host}.log",
                       "--log-level", "debug", "--stop-vms-on-exit", *args)
        self.procs.append(p)
        return p

    def wait_vm_state(self, vm, states, timeout):
        states = {states} if isinstance(states, str) else set(states)

        def check():
            v = self.vcr.vm(vm)
            return v if v and v.get("state") in states else None
        return labkit.wait_for(f"VM {vm} in state {sorted(states)}", check, timeout)

    def stop_all(self):
        """Stops every daemon; returns the problems: sanitizer reports in a daemon's log,
        in a host agent's fence watchdog log or in a guest's console (the standby
        agent's output), and a daemon that was still running but
        did not exit 0 on SIGTERM (docs/server.md, docs/agent.md: exit codes)."""
        reports = []
        for p in reversed(self.procs):
            running = p.alive()
            rc = p.stop(timeout=30)  # an agent stops its VMs first
            if running and rc != 0:
                reports.append(f"{p.log_path}: exited {rc} on SIGTERM, not 0")
            text = p.log_text()
            if SANITIZER.search(text):
                reports.append(f"{p.log_path}:\n{text[-3000:]}")
        for log in self.tmp.glob("agent-*/fence-watchdog.log"):
            text = log.read_text(errors="replace")
            if SANITIZER.search(text):
                reports.append(f"{log}:\n{text[-3000:]}")
        reports += labkit.console_sanitizer_reports(self.consoles())
        return reports

    def consoles(self):
        """Every guest console of the test: the standby agent's output is there."""
        return sorted(self.tmp.glob("agent-*/*.serial"))


# --------------------------------------------------------------------------- poller
# Runs inside the namespace (`ip netns exec NS python3 -c POLLER ADDR...`).  One thread per
# address: GET / over a raw socket every 10 ms (timeout 0.2 s); a good answer is a 200.
# Protocol: prints "ready" once every address answered; on "stop" on stdin, keeps going
# until every address answered after the stop (deadline 300 s), then prints one JSON line
# {addr: {"gap": s, "gap_start": t, "gap_end": t, "ok": n, "fail": n}} (CLOCK_MONOTONIC).
POLLER = r'''
import json, socket, sys, threading, time
addrs = sys.argv[1:]
stop_at = [None]
st = {a: {"gap": 0.0, "gap_start": None, "gap_end": None, "ok": 0, "fail": 0,
          "last": None, "after_stop": False} for a in addrs}
def good(a):
    try:
        with socket.create_connection((a, 80), timeout=0.2) as s:
            s.settimeout(0.2)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]
    except OSError:
        return False
def run(a):
    s = st[a]
    nxt = time.monotonic()
    while True:
        t = time.monotonic()
        if good(a):
            now = time.monotonic()
            if s["last"] is not None and now - s["last"] > s["gap"]:
                s["gap"], s["gap_start"], s["gap_end"] = now - s["last"], s["last"], now
            s["last"] = now
            s["ok"] += 1
            if stop_at[0] is not None and t >= stop_at[0]:
                s["after_stop"] = True
                return
        else:
            s["fail"] += 1
        nxt += 0.01
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()
ths = [threading.Thread(target=run, args=(a,), daemon=True) for a in addrs]
for t in ths:
    t.start()
dl = time.monotonic() + 300
while any(st[a]["last"] is None for a in addrs) and time.monotonic() < dl:
    time.sleep(0.01)
print("ready" if all(st[a]["last"] is not None for a in addrs) else "timeout", flush=True)
sys.stdin.readline()
stop_at[0] = time.monotonic()
dl = time.monotonic() + 300
for t in ths:
    t.join(max(0, dl - time.monotonic()))
print(json.dumps({a: {k: st[a][k] for k in ("gap", "gap_start", "gap_end", "ok", "fail",
                                             "after_stop")} for a in addrs}), flush=True)
'''


def ns_script(code, args, failure):
    """Python code run inside the lab's namespace with args, talking over stdin and
    stdout; returned once it printed "ready", else killed and RuntimeError(failure)."""
    p = subprocess.Popen(labkit.in_ns([sys.executable, "-c", code, *args]),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        raise RuntimeError(f"{failure} ({line!r})")
    return p


class Poller:
    """POLLER in the lab's namespace over addrs: ready once each answered; finish()."""

    def __init__(self, addrs):
        self.p = ns_script(POLLER, addrs, f"poller: no HTTP answer from {addrs}")

    def finish(self):
        """Call once the restart is over: returns the per-address gaps."""
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        self.p.wait(timeout=10)
        res = json.loads(out)
        bad = [a for a, r in res.items() if not r["after_stop"]]
        if bad:
            raise RuntimeError(f"no HTTP answer after the restart from {bad}")
        return res


# --------------------------------------------------------------------------- QMP
class Qmp:
    def __init__(self, path, timeout=30):
        self.s = labkit.wait_for(f"QMP socket {path}", lambda: self._connect(path), timeout,
                                 interval=0.01)
        self.f = self.s.makefile("rwb", buffering=0)
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    @staticmethod
    def _connect(path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        return s

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        while True:
            line = self.f.readline()
            if not line:
                if name == "quit":
                    return None
                raise RuntimeError(f"QMP closed during {name}")
            r = json.loads(line)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            # events are ignored

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- own QEMU
class LabVm:
    """A QEMU started by a benchmark itself (not by an agent), with the argv vcr-agent
    uses (src/agent/host/vm.c): the VM baselines."""

    def __init__(self, name, index, mem_mb, work):
        self.name, self.index, self.mem = name, index, mem_mb
        self.addr = f"10.77.0.{11 + index}"
        self.tap = f"tap{index}"
        self.mac = f"52:54:00:77:00:{0x10 + index:02x}"
        self.ram = f"/dev/shm/vcr-bench-{name}.ram"
        self.tap_fd = None  # a descriptor of the tap two QEMUs share (bench/warm_vm.py)
        self.qmp_path = os.path.join(work, f"{name}.qmp")
        self.serial = os.path.join(work, f"{name}.serial")
        self.state = os.path.join(work, f"{name}.state")
        self.proc = None
        self.qmp = None

    def argv(self, incoming=False, autostart=False):
        env = labkit.lab_env()
        a = [QEMU, "-name", self.name, "-accel", "tcg", "-machine", "pc,memory-backend=mem",
             "-m", f"{self.mem}M", "-object",
             f"memory-backend-file,id=mem,size={self.mem}M,mem-path={self.ram},share=on",
             "-smp", "1", "-kernel", env["VCR_LAB_KERNEL"], "-initrd", env["VCR_LAB_INITRD"],
             "-append", f"console=ttyS0 vcr.name={self.name} vcr.ip={self.addr}/24 "
                        f"vcr.gw={env['VCR_LAB_BRIDGE_ADDR']} vcr.dns={env['VCR_LAB_DNS']}",
             "-netdev", (f"tap,id=n0,fd={self.tap_fd}" if self.tap_fd is not None else
                         f"tap,id=n0,ifname={self.tap},script=no,downscript=no"),
             "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}", "-device", "pvpanic",
             "-vga", "none", "-display", "none", "-nodefaults", "-no-user-config",
             "-serial", f"file:{self.serial}", "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
             "-no-reboot"]
        if incoming:
            a += ([] if autostart else ["-S"]) + ["-incoming", "defer"]
        return a

    def start(self, incoming=False, autostart=False):
        if self.tap_fd is None:
            wait_tap_free(self.tap)
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        self.proc = subprocess.Popen(labkit.in_ns(self.argv(incoming, autostart)),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     pass_fds=() if self.tap_fd is None else (self.tap_fd,))
        self.qmp = Qmp(self.qmp_path)

    def wait_exit(self, timeout=60):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise labkit.Timeout(f"QEMU of {self.name} did not exit in {timeout}s")
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.qmp:
            self.qmp.close()
            self.qmp = None
        for f in (self.ram, self.state, self.ram + ".b"):
            if os.path.exists(f):
                os.unlink(f)


def migration_done(q):
    st = q.cmd("query-migrate").get("status")
    if st in ("failed", "cancelled"):
        raise RuntimeError(f"migration {st}")
    return st == "completed"


def wait_tap_free(tap, timeout=60):
    """No process of OUR namespace holds the tap (other labs have taps of the same name)."""
    needle = f"ifname={tap},".encode()
    ns_ino = os.stat(f"/run/netns/{labkit.NS}").st_ino

    def free():
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.stat(f"/proc/{pid}/ns/net").st_ino != ns_ino:
                        continue
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if needle in f.read():
                            return False
                except OSError:
                    pass
        return True
    labkit.wait_for(f"{tap} free (no QEMU on it)", free, timeout)
