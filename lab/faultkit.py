"""The seeded fault campaign of issue 13: one rig, a matrix of faults, client pollers,
invariants.  Used by bench/faults.py (`make bench-faults`) and, in a short run, by
tests/integration/test_faults.py (`make check`).

Rig: three host agents, each running one busybox primary serving HTTP (web1 warm on fh1,
web2 cold on fh2, web3 warm on fh3), a fourth host agent (fsb, never faulted itself) running
the standby VM (LXC containers, the standby agent inside it: killed or cut off by the two
standby faults), the lab's BIND9, the server's
journal on a small tmpfs of its own (the disk-full fault fills it).

A round: pick a fault with the seeded RNG, inject it (the fault undoes what it must:
SIGCONT, the link up, the daemon restarted, the disk freed), settle (every service `ok` or
`recovered` and unchanged for QUIET_S, within SETTLE_S of the injection), then bring back
the recovered services (`vcr failback`) and wait for the baseline (every service `ok` on its
primary, warm containers running).  Pollers sample every service every 100 ms all along;
invariants are computed afterwards from the samples and the journal (docs in
bench/results/faults.md, written by bench/faults.py).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import harness
import labkit

HEARTBEAT_MS, HOST_TIMEOUT_MS, FENCE_TIMEOUT_MS = 500, 5000, 6000
# The agent's watchdog: its default 10000 is lowered to the server's fence_after_ms
# (host_timeout + fence_timeout less 1000 ms = 10000 ms here): docs/fencing.md.
AGENT_FENCE_MS = 10000
CHECK = {"type": "http", "path": "/", "interval_ms": 500, "timeout_ms": 400, "failures": 3}
# Bounds (TCG on 2 shared cores).  A recovery is at worst host timeout (5 s) + fence wait
# (6 s) + a cold container made in the standby guest (0.3-5 s measured, more under load) +
# port check + DNS + client confirmation (15 s deadline): 120 s leaves 4x room, and is the
# bound test_recovery.py uses.  A failback boots the primary under TCG (10-60 s measured,
# 5 guests on 2 loaded cores up to 300 s): the boot bound of test_recovery.py.
SETTLE_S = 120
BOOT_S = 300
# Settled means unchanged this long: 3 probes at 500 ms (a probe-detected failure) and a
# host timeout (5 s) fit inside it, so a late false failover is seen in its own round.
QUIET_S = 6.0
POLL_INTERVAL_S = 0.1
POLL_TIMEOUT_S = 0.25

SB_HOST, SB_VM, SB_INDEX, SB_ADDR = "fsb", "standby1", 2, "10.77.0.21"
# service: (host agent, tap index, primary address, mode, container address)
WEBS = {
    "web1": ("fh1", 0, "10.77.0.11", "warm", "10.77.0.31"),
    "web2": ("fh2", 1, "10.77.0.12", "cold", "10.77.0.32"),
    "web3": ("fh3", 3, "10.77.0.13", "warm", "10.77.0.33"),
}
HOSTS = ["fh1", "fh2", "fh3"]
RUN_HOSTS = HOSTS + [SB_HOST]  # /dev/shm/vcr-HOST-VM-*.ram names these
SANITIZER = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] faults: {msg}", flush=True)


# --------------------------------------------------------------------------- poller
# Runs inside the namespace: python3 -c POLLER SERVICES_JSON DNS OUT MAX_S.  One thread per
# service, every 100 ms: at once (three threads) an A query for its name to DNS (UDP,
# fresh: no cache), GET / at the primary address, GET / at the container address (0.25 s
# timeouts each, so a sample lasts at most 0.25 s: one instant).  One JSON
# line per sample: {"t", "t1", "s", "d": address or null, "p": bool, "c": bool} where p/c
# mean "answered 200 with the service's name".  Ends when stdin closes or after MAX_S.
POLLER = r'''
import concurrent.futures, json, os, socket, struct, sys, threading, time
services, dns, out, max_s = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
TMO, IV = %(timeout)s, %(interval)s
stop = threading.Event()
lock = threading.Lock()
f = open(out, "a", buffering=1)
def resolve(name):
    q = os.urandom(2) + struct.pack(">HHHHH", 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TMO)
    try:
        s.sendto(q, (dns, 53))
        while True:
            d = s.recv(1500)
            if d[:2] == q[:2]:
                break
        an = struct.unpack(">H", d[6:8])[0]
        i = 12
        while d[i]:
            i += d[i] + 1
        i += 5
        for _ in range(an):
            if d[i] & 0xC0 == 0xC0:
                i += 2
            else:
                while d[i]:
                    i += d[i] + 1
                i += 1
            t, c, ttl, ln = struct.unpack(">HHIH", d[i:i + 10])
            i += 10
            if t == 1 and ln == 4:
                return socket.inet_ntoa(d[i:i + 4])
            i += ln
    except (OSError, IndexError, struct.error):
        return None
    finally:
        s.close()
    return None
def get(addr, name):
    try:
        with socket.create_connection((addr, 80), timeout=TMO) as s:
            s.settimeout(TMO)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while len(data) < 65536:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        head, _, body = data.partition(b"\r\n\r\n")
        return b" 200 " in head.split(b"\r\n", 1)[0] and body.strip() == name.encode()
    except OSError:
        return False
def poll(svc):
    pool = concurrent.futures.ThreadPoolExecutor(2)
    nxt = time.time()
    end = time.time() + max_s
    while not stop.is_set() and time.time() < end:
        t = time.time()
        fd = pool.submit(resolve, svc["dns"])
        fp = pool.submit(get, svc["primary"], svc["name"])
        c = get(svc["container"], svc["name"])
        d, p = fd.result(), fp.result()
        line = json.dumps({"t": round(t, 3), "t1": round(time.time(), 3), "s": svc["name"],
                           "d": d, "p": p, "c": c})
        with lock:
            f.write(line + "\n")
        nxt += IV
        delay = nxt - time.time()
        if delay > 0:
            stop.wait(delay)
        else:
            nxt = time.time()
threads = [threading.Thread(target=poll, args=(s,), daemon=True) for s in services]
for th in threads:
    th.start()
def watch_stdin():
    sys.stdin.read()
    stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
for th in threads:
    th.join()
''' % {"timeout": POLL_TIMEOUT_S, "interval": POLL_INTERVAL_S}


class Poller:
    def __init__(self, path, max_s):
        env = labkit.lab_env()
        zone = env["VCR_LAB_ZONE"]
        svcs = [{"name": n, "dns": f"{n}.{zone}", "primary": w[2], "container": w[4]}
                for n, w in WEBS.items()]
        self.path = path
        self.p = subprocess.Popen(labkit.in_ns([sys.executable, "-c", POLLER, json.dumps(svcs),
                                                env["VCR_LAB_DNS"], path, str(max_s)]),
                                  stdin=subprocess.PIPE, text=True)

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def samples(self):
        out = []
        with open(self.path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a last line cut by a kill
        return out


# --------------------------------------------------------------------------- rig

def vm_specs(cache_dir, standby_vcpus):
    env = labkit.lab_env()
    specs = {h: [] for h in RUN_HOSTS}
    for name, (host, index, address, _, _) in WEBS.items():
        specs[host].append(labkit.vm_entry(name, index, address))
    sb = labkit.vm_entry(SB_VM, SB_INDEX, SB_ADDR, memory_mb=384, vcpus=standby_vcpus,
                         extra_args="apparmor=0 vcr.role=standby "
                                    f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                    f"{labkit.SERVER_AGENT_PORT}")
    # initrd-standby.img, or what VCR_LAB_STANDBY_INITRD names (the integration tests:
    # the ASan+UBSan standby agent).
    sb["image"]["initrd"] = os.path.join(cache_dir, os.path.basename(labkit.standby_initrd()))
    specs[SB_HOST].append(sb)
    return specs


def services_config():
    return [dict(labkit.service_entry(name, host, name, address, mode, SB_VM, f"{name}-c",
                                      ct), check=dict(CHECK))
            for name, (host, _, address, mode, ct) in WEBS.items()]


def named_pid():
    with open(os.path.join(labkit.RUN_DIR, "named.pid")) as f:
        return int(f.read().strip())


def proc_alive(pid, needle):
    """pid runs and its command line names `needle` (a recycled pid does not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return needle.encode() in f.read()
    except OSError:
        return False


def signal_if(pid, sig, needle):
    if pid and proc_alive(pid, needle):
        try:
            os.kill(pid, sig)
            return True
        except ProcessLookupError:
            pass
    return False


class Rig:
    """The daemons and VMs of the campaign, under run_dir."""

    def __init__(self, build, run_dir, journal_mb=32, standby_vcpus=labkit.STANDBY_VCPUS):
        self.build = build
        self.run = str(run_dir)
        self.vcr = labkit.Vcr(build)
        self.jfs = os.path.join(self.run, "jfs")
        self.journal_mb = journal_mb
        self.server = None
        self.agents = {}
        self.logs = []  # every Proc ever started (their logs are checked for sanitizers)
        self.restarts = {}
        self.cache = os.path.dirname(labkit.lab_env()["VCR_LAB_INITRD"])
        self.specs = vm_specs(self.cache, standby_vcpus)

    # -- daemons
    def _log(self, name):
        n = self.restarts.get(name, 0)
        self.restarts[name] = n + 1
        return os.path.join(self.run, f"{name}.log" if n == 0 else f"{name}.{n}.log")

    def start_server(self):
        cfg = os.path.join(self.run, "server.yaml")
        labkit.write_server_config(cfg, os.path.join(self.jfs, "journal.db"), HEARTBEAT_MS,
                                   HOST_TIMEOUT_MS, dns=True, services=services_config(),
                                   fence_timeout_ms=FENCE_TIMEOUT_MS)
        self.server = harness.server_proc(self.build, cfg, self._log("server"), "--log-level",
                                          "debug")
        self.logs.append(self.server)
        harness.wait_server(self.vcr, self.server, 30)

    def start_agent(self, host):
        state = os.path.join(self.run, f"agent-{host}")
        os.makedirs(state, exist_ok=True)
        cfg = os.path.join(self.run, f"agent-{host}.yaml")
        labkit.write_agent_config(cfg, host, state, self.specs[host])
        p = harness.agent_proc(self.build, cfg, self._log(f"agent-{host}"), "--log-level",
                               "debug", "--stop-vms-on-exit")
        self.agents[host] = p
        self.logs.append(p)
        return p

    def up(self):
        os.makedirs(self.jfs, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.journal_mb}m", "tmpfs",
                        self.jfs], check=True)
        labkit.set_records({name: w[2] for name, w in WEBS.items()})
        self.start_server()
        for h in RUN_HOSTS:
            self.start_agent(h)
        self.wait_baseline(BOOT_S)

    def stop(self):
        """Every daemon stopped (agents stop their VMs), the tmpfs unmounted.  Returns the
        sanitizer reports found in the logs."""
        for p in reversed([self.server] + list(self.agents.values())):
            if p is not None:
                p.stop(timeout=30)
        for p in self.logs:
            p.stop()
        reports = []
        for p in self.logs:
            text = p.log_text()
            if any(s in text for s in SANITIZER):
                reports.append(f"{p.log_path}:\n{text[-3000:]}")
        # The standby agent writes to its VM's console (kept before each restart of it).
        reports += labkit.console_sanitizer_reports(self.consoles())
        try:
            labkit.wait_for("the fence watchdogs to exit", lambda: not self.stray(), 30)
        except labkit.Timeout:
            pass
        # The journal lives on the tmpfs: keep a copy in the run directory.
        for f in ("journal.db", "journal.db-wal"):
            src = os.path.join(self.jfs, f)
            if os.path.exists(src):
                subprocess.run(["cp", src, os.path.join(self.run, f)], capture_output=True)
        subprocess.run(["umount", self.jfs], capture_output=True)
        return reports

    def consoles(self):
        """The guests' consoles: AGENT_STATE/VM.serial, and the copies kept of a console
        before its VM was started again (a cold start empties it)."""
        out = []
        for h in RUN_HOSTS:
            state = os.path.join(self.run, f"agent-{h}")
            if os.path.isdir(state):
                out += sorted(os.path.join(state, f) for f in os.listdir(state)
                              if ".serial" in f)
        return out

    def keep_console(self, host, vm):
        """A copy of VM's console, before a cold start of it empties the file."""
        src = os.path.join(self.run, f"agent-{host}", f"{vm}.serial")
        n = sum(1 for f in os.listdir(os.path.dirname(src)) if f.startswith(f"{vm}.serial."))
        if os.path.exists(src):
            subprocess.run(["cp", src, f"{src}.{n + 1}"], check=False)

    def stray(self):
        """Processes (QEMU, agents, watchdogs) whose command line names the run directory."""
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid() and proc_alive(int(pid), self.run):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append((int(pid), f.read().replace(b"\0", b" ")[:120].decode()))
        return out

    def leaks(self, ns_gone_expected=False):
        """What the campaign left behind: processes, /dev/shm files of its hosts, the
        journal's tmpfs, and (after lab down) the lab namespace."""
        found = [f"process {pid}: {cmd}" for pid, cmd in self.stray()]
        for f in os.listdir("/dev/shm"):
            if any(f.startswith(f"vcr-{h}-") for h in RUN_HOSTS):
                found.append(f"/dev/shm/{f}")
        with open("/proc/mounts") as f:
            if any(line.split()[1] == self.jfs for line in f):
                found.append(f"mount {self.jfs}")
        if ns_gone_expected:
            r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
            if any(line.split()[0] == labkit.NS for line in r.stdout.splitlines() if line):
                found.append(f"namespace {labkit.NS}")
        return found

    # -- views
    def services(self):
        return {s["name"]: s for s in self.vcr.json("services")["services"]}

    def status_hosts(self):
        return {h["name"]: h for h in self.vcr.status()["hosts"]}

    def vm_pid(self, name):
        return (self.vcr.vm(name) or {}).get("pid")

    def last_event(self):
        return self.vcr.last_event_id()

    def events(self, since=0):
        return self.vcr.events(since)

    def baseline(self):
        """None when every service is ok on its primary, answered there, DNS on it, its
        warm container running, every host connected; else what is not."""
        try:
            svcs = self.services()
            hosts = self.status_hosts()
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            return f"API: {e}"
        for h in RUN_HOSTS:
            if (hosts.get(h) or {}).get("state") != "connected":
                return f"host {h} not connected"
        if (hosts.get(SB_VM) or {}).get("state") != "connected":
            return "standby agent not connected"
        for name, w in WEBS.items():
            s = svcs[name]
            if s["state"] != "ok" or s["served_by"] != "primary":
                return f"{name} {s['state']} by {s['served_by']}"
            if w[3] == "warm" and s["standby"]["container_state"] != "running":
                return f"{name} container {s['standby']['container_state']}"
            if w[3] == "cold" and s["standby"]["container_state"] not in ("absent", "stopped"):
                return f"{name} cold container {s['standby']['container_state']}"
        for name, w in WEBS.items():
            if labkit.dig(f"{name}.vcr.lab") != [w[2]]:
                return f"{name}.vcr.lab not on {w[2]}"
            if (labkit.http_get(w[2], timeout=1) or "").strip() != name:
                return f"{name} primary does not answer"
        return None

    def wait_baseline(self, timeout):
        last = ["?"]

        def ok():
            last[0] = self.baseline()
            return last[0] is None
        try:
            labkit.wait_for("the baseline", ok, timeout, interval=0.5)
        except labkit.Timeout as e:
            raise labkit.Timeout(f"{e}: {last[0]}") from None


# --------------------------------------------------------------------------- faults
# Each fault: inject(rig, rng, svc, ctx) does the fault and undoes what must be undone
# for the system to heal by itself (SIGCONT, link up, restart), and returns a note.
# `hits(svc)`: the services whose primary the fault touches (a recovery of another one is
# a false failover); `no_failover`: the fault must cause no failover at all.

class Fault:
    name = "?"
    no_failover = False
    expect_state = None  # the state the target's service should settle in, if one
    lost_host = None  # a host the fault must have the server call lost (host_lost event)

    def hits(self, svc):
        return {svc}

    def inject(self, rig, rng, svc, ctx):
        raise NotImplementedError


def host_services(host):
    return {n for n, w in WEBS.items() if w[0] == host}


class VmKill9(Fault):
    name = "vm_kill9"
    expect_state = "recovered"

    def inject(self, rig, rng, svc, ctx):
        pid = rig.vm_pid(svc)
        os.kill(pid, signal.SIGKILL)
        return f"qemu {pid} killed"


class AgentKill9(Fault):
    """kill -9 of the host agent of svc's primary, restarted at once (its VMs are adopted,
    its watchdog kept counting: nothing should be fenced)."""
    name = "agent_kill9"

    def hits(self, svc):
        return host_services(WEBS[svc][0])

    def inject(self, rig, rng, svc, ctx):
        host = WEBS[svc][0]
        a = rig.agents[host]
        a.signal(signal.SIGKILL)
        a.popen.wait(10)
        time.sleep(0.5)  # the fault: the agent is gone for a moment
        rig.start_agent(host)
        return f"agent {host} killed, restarted"


class ServerKill9(Fault):
    name = "server_kill9"

    def hits(self, svc):
        return set()

    def inject(self, rig, rng, svc, ctx):
        rig.server.signal(signal.SIGKILL)
        rig.server.popen.wait(10)
        time.sleep(0.5)
        rig.start_server()
        return "server killed, restarted on its journal"


class Stop(Fault):
    """SIGSTOP for `seconds`, then SIGCONT."""
    seconds = 1.0

    def target(self, rig, svc):
        raise NotImplementedError

    def inject(self, rig, rng, svc, ctx):
        pid, needle = self.target(rig, svc)
        signal_if(pid, signal.SIGSTOP, needle)
        try:
            time.sleep(self.seconds)  # the fault lasts this long: nothing to wait for
        finally:
            signal_if(pid, signal.SIGCONT, needle)
        return f"pid {pid} stopped {self.seconds:g} s"


class VmStop(Stop):
    def __init__(self, seconds):
        self.seconds = seconds
        self.name = f"vm_stop_{seconds:g}s"
        # 3 failed probes at 500 ms take 1.5-2 s: past that the service is failed over.
        self.expect_state = "recovered" if seconds >= 4 else None

    def target(self, rig, svc):
        return rig.vm_pid(svc), rig.run


class AgentStop(Stop):
    def __init__(self, seconds):
        self.seconds = seconds
        self.name = f"agent_stop_{seconds:g}s"

    def hits(self, svc):
        return host_services(WEBS[svc][0])

    def target(self, rig, svc):
        return rig.agents[WEBS[svc][0]].pid, "vcr-agent"


class ServerStop(Stop):
    def __init__(self, seconds):
        self.seconds = seconds
        self.name = f"server_stop_{seconds:g}s"

    def hits(self, svc):
        return set()

    def target(self, rig, svc):
        return rig.server.pid, "vcr-server"


class LinkCut(Fault):
    """The primary's tap down inside the namespace for `seconds`, then up: its probes
    fail, the server fails it over (the agent still reaches the VM: vm_kill fences)."""
    name = "link_cut"
    seconds = 6.0
    expect_state = "recovered"

    def tap(self, svc):
        return f"tap{WEBS[svc][1]}"

    def while_down(self, rig, ctx):
        """What the fault looks at while the link is down; returns a note."""
        return ""

    def inject(self, rig, rng, svc, ctx):
        tap = self.tap(svc)
        t0 = time.monotonic()
        subprocess.run(["ip", "-n", labkit.NS, "link", "set", tap, "down"], check=True)
        try:
            note = self.while_down(rig, ctx)
            time.sleep(max(0.0, self.seconds - (time.monotonic() - t0)))  # the fault's length
        finally:
            subprocess.run(["ip", "-n", labkit.NS, "link", "set", tap, "up"], check=True)
        return f"{tap} down {self.seconds:g} s{note}"


class DnsDownDuringFailure(Fault):
    """named stopped, the primary killed: the recovery fails at its DNS update; named
    continued, `vcr failover` retries it."""
    name = "dns_down_failure"
    expect_state = "recovered"

    def inject(self, rig, rng, svc, ctx):
        named = named_pid()
        os.kill(named, signal.SIGSTOP)
        try:
            os.kill(rig.vm_pid(svc), signal.SIGKILL)
            s = labkit.wait_for(f"{svc} failed", lambda: (lambda x: x if x["state"] in (
                "failed", "recovered") else None)(rig.services()[svc]), SETTLE_S, interval=0.2)
        finally:
            os.kill(named, signal.SIGCONT)
        labkit.wait_for("named answering", lambda: labkit.dig("web1.vcr.lab"), 30)
        if s["state"] == "failed":
            r = rig.vcr.run("failover", svc)
            if r.returncode != 0:
                return f"failed ({s['recovery']['error']}); failover refused: {r.stderr.strip()}"
        return f"{svc} {s['state']} while named was stopped; failover"


class DiskFull(Fault):
    """The journal's filesystem filled, the primary killed while it is full (the recovery
    must hold, not act unsaved), freed after `seconds`."""
    name = "disk_full"
    seconds = 5.0
    expect_state = "recovered"

    def inject(self, rig, rng, svc, ctx):
        fill = os.path.join(rig.jfs, "fill")
        subprocess.run(["dd", "if=/dev/zero", f"of={fill}", "bs=1M"], capture_output=True)
        try:
            os.kill(rig.vm_pid(svc), signal.SIGKILL)
            time.sleep(self.seconds)
            held = rig.services()[svc]
            dns = labkit.dig(f"{svc}.vcr.lab")
        finally:
            os.unlink(fill)
        ctx["disk_full_held"] = (held["state"], (held.get("recovery") or {}).get("phase"), dns)
        return (f"full {self.seconds:g} s; meanwhile {svc} {held['state']} at phase "
                f"{(held.get('recovery') or {}).get('phase')}, DNS {dns}")


class FdExhaustion(Fault):
    """The server held to 512 descriptors, ~2000 connections to its agent port from
    inside the namespace for `seconds`; the limit restored after.  Only the soft limit
    is lowered (512:HARD, not 512:512): raising a hard limit again needs
    CAP_SYS_RESOURCE, which the lab's root lacks here, and the server runs into the
    soft one (EMFILE) and caps its connections by it just the same."""
    name = "fd_exhaustion"
    seconds = 15.0

    def hits(self, svc):
        return set()

    def inject(self, rig, rng, svc, ctx):
        pid = rig.server.pid
        old = subprocess.run(["prlimit", "--pid", str(pid), "--nofile", "--output",
                              "SOFT,HARD", "--noheadings"], capture_output=True, text=True,
                             check=True).stdout.split()
        subprocess.run(["prlimit", "--pid", str(pid), f"--nofile=512:{old[1]}"], check=True)
        env = labkit.lab_env()
        flood = subprocess.Popen(labkit.in_ns([
            sys.executable, "-c",
            "import resource, socket, sys, time\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
            "s = []\n"
            "end = time.time() + float(sys.argv[3])\n"
            "for i in range(2000):\n"
            "    if time.time() > end: break\n"
            "    c = socket.socket(); c.settimeout(1)\n"
            "    try:\n"
            "        c.connect((sys.argv[1], int(sys.argv[2]))); s.append(c)\n"
            "    except OSError:\n"
            "        c.close()\n"
            "print(len(s), flush=True)\n"
            "time.sleep(max(0, end - time.time()))\n",
            env["VCR_LAB_BRIDGE_ADDR"], str(labkit.SERVER_AGENT_PORT), str(self.seconds)]),
            stdout=subprocess.PIPE, text=True)
        try:
            out, _ = flood.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            flood.kill()
            out, _ = flood.communicate()
        finally:
            back = subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={old[0]}:{old[1]}"],
                                  capture_output=True, text=True)
        return (f"{(out or '?').strip()} connections held {self.seconds:g} s at nofile "
                f"512:{old[1]}" + (f"; limit not restored: {back.stderr.strip()}"
                                   if back.returncode else ""))


class AgentRestartMidRecovery(Fault):
    """The primary killed; once its recovery is detected, its host agent killed -9 and
    restarted (the fence order may be lost; the new agent finds the VM ended)."""
    name = "agent_restart_mid_recovery"
    expect_state = "recovered"

    def hits(self, svc):
        return {svc} | host_services(WEBS[svc][0])

    def inject(self, rig, rng, svc, ctx):
        host = WEBS[svc][0]
        since = rig.last_event()
        os.kill(rig.vm_pid(svc), signal.SIGKILL)
        labkit.wait_for(f"{svc} detected", lambda: [
            e for e in rig.events(since) if e["kind"] == "recovery"
            and e["detail"].get("service") == svc and e["detail"].get("phase") == "detected"],
            60, interval=0.02)
        a = rig.agents[host]
        a.signal(signal.SIGKILL)
        a.popen.wait(10)
        rig.start_agent(host)
        return f"agent {host} killed and restarted after {svc} detected"


class VmRestartByHand(Fault):
    """`vcr vm stop` + `vcr vm start`: maintenance, never a failover."""
    name = "vm_restart_by_hand"
    no_failover = True

    def inject(self, rig, rng, svc, ctx):
        note = []
        r = rig.vcr.run("vm", "stop", svc, timeout=60)
        if r.returncode != 0:  # the order's answer may come late (10 s API bound): go on
            note.append(f"vm stop: {r.stderr.strip()}")
        labkit.wait_for(f"{svc} stopped", lambda: rig.services()[svc]["state"] == "stopped",
                        60, interval=0.2)
        r = rig.vcr.run("vm", "start", svc, timeout=60)
        if r.returncode != 0:
            note.append(f"vm start: {r.stderr.strip()}")
        labkit.wait_for(f"{svc} answering again", lambda: (labkit.http_get(
            WEBS[svc][2], timeout=1) or "").strip() == svc, BOOT_S, interval=0.5)
        return "; ".join(["stopped and started by hand"] + note)


def standby_view(rig):
    """(standby host state, {container: state} as the server shows them, {service:
    container_state})."""
    h = rig.status_hosts().get(SB_VM) or {}
    cts = {c["name"]: c.get("state") for c in h.get("containers") or []}
    return h.get("state"), cts, {n: s["standby"]["container_state"]
                                 for n, s in rig.services().items()}


def standby_lost_view(rig, ctx):
    """Waits for the server to call the standby host lost; what it shows of its
    containers then must be `unknown` (a lost host's, issue 13 item 5): any other
    state is kept as ctx["standby_known"] (the round's false_states).  Returns a note."""
    labkit.wait_for(f"standby host {SB_VM} lost", lambda: standby_view(rig)[0] == "lost",
                    HOST_TIMEOUT_MS / 1000 + 15, interval=0.1)
    _, cts, svcs = standby_view(rig)
    known = [f"{n} {v}" for n, v in sorted(list(cts.items()) + list(svcs.items()))
             if v != "unknown"]
    ctx["standby_known"] = known
    return "; lost, containers shown " + (f"KNOWN: {known}" if known else "unknown")


class StandbyAgentKill(Fault):
    """kill -9 of the standby VM's QEMU: its agent, its containers and their state go at
    once.  No primary is touched: no failover; the server calls the standby host lost
    and shows its containers `unknown`.  Undone by `vcr vm start` of the standby VM: the
    server provisions the warm containers again on its hello."""
    name = "standby_agent_kill"
    no_failover = True
    lost_host = SB_VM

    def hits(self, svc):
        return set()

    def inject(self, rig, rng, svc, ctx):
        pid = rig.vm_pid(SB_VM)
        os.kill(pid, signal.SIGKILL)
        note = f"standby qemu {pid} killed" + standby_lost_view(rig, ctx)
        rig.keep_console(SB_HOST, SB_VM)
        r = rig.vcr.run("vm", "start", SB_VM, timeout=60)
        if r.returncode != 0:
            note += f"; vm start: {r.stderr.strip()}"
        return note


class StandbyLinkCut(LinkCut):
    """The standby VM's tap down inside the namespace for `seconds` (past the host
    timeout): the server calls the standby host lost and shows its containers `unknown`;
    the containers go on running in the guest; link up, the agent says hello again.  No
    primary is touched: no failover."""
    name = "standby_link_cut"
    seconds = 8.0
    expect_state = None
    no_failover = True
    lost_host = SB_VM

    def hits(self, svc):
        return set()

    def tap(self, svc):
        return f"tap{SB_INDEX}"

    def while_down(self, rig, ctx):
        return standby_lost_view(rig, ctx)


def matrix():
    return [VmKill9(), AgentKill9(), ServerKill9(), VmStop(1), VmStop(5), AgentStop(2),
            AgentStop(7), AgentStop(12), ServerStop(2), ServerStop(7), LinkCut(),
            DnsDownDuringFailure(),
            DiskFull(), FdExhaustion(), AgentRestartMidRecovery(), VmRestartByHand(),
            StandbyAgentKill(), StandbyLinkCut()]


# Cheap and distinct (no TCG boot but for one vm_kill9 failback and the hand restart);
# server_stop_7s failed every service over before the server forgave its own stall;
# standby_link_cut: a standby host lost and back, no boot.
SHORT = ["server_kill9", "server_stop_7s", "agent_kill9", "agent_stop_2s", "vm_stop_1s",
         "fd_exhaustion", "vm_kill9", "vm_restart_by_hand", "standby_link_cut"]


def by_name(names=None):
    m = {f.name: f for f in matrix()}
    return [m[n] for n in names] if names else list(m.values())


# --------------------------------------------------------------------------- campaign

class Round:
    def __init__(self, n, fault, svc):
        self.n, self.fault, self.svc = n, fault, svc
        self.hits = fault.hits(svc)
        self.t0 = self.t_settled = self.t_end = None
        self.ev0 = self.ev1 = None
        self.note = ""
        self.stuck = []
        self.settled = {}
        self.failbacks = {}  # service -> (t_start, t_end)
        self.ctx = {}
        self.load = os.getloadavg()[0]  # the machine's 1-min load when the round began


def settle(rig, rnd):
    """Every service ok or recovered and unchanged for QUIET_S, within SETTLE_S of the
    injection's end.  Returns {service: state}, or raises Timeout with the states."""
    deadline = time.monotonic() + SETTLE_S
    seen, since = None, None
    while time.monotonic() < deadline:
        try:
            states = {n: s["state"] for n, s in rig.services().items()}
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            states = None
        if states and all(v in ("ok", "recovered") for v in states.values()):
            if states != seen:
                seen, since = states, time.monotonic()
            elif time.monotonic() - since >= QUIET_S:
                return states
        else:
            seen = None
        time.sleep(0.25)
    raise labkit.Timeout(f"not settled within {SETTLE_S} s: {states}")


def failback(rig, rnd, svc):
    t = time.time()
    r = rig.vcr.run("failback", svc)
    if r.returncode != 0:
        rnd.failbacks[svc] = (t, time.time())
        return f"failback {svc} refused: {r.stderr.strip()}"
    try:
        labkit.wait_for(f"{svc} back on its primary", lambda: (lambda s: s["state"] == "ok" and
                        s["served_by"] == "primary")(rig.services()[svc]), BOOT_S,
                        interval=0.5)
        if WEBS[svc][3] == "cold":
            labkit.wait_for(f"{svc}'s cold container gone", lambda: rig.services()[svc][
                "standby"]["container_state"] in ("absent", "stopped"), 60, interval=0.5)
        return None
    except labkit.Timeout as e:
        return str(e)
    finally:
        rnd.failbacks[svc] = (t, time.time())


def repair(rig, rnd):
    """After a round that did not settle: what an operator would do (reset a failed
    recovery, fail back), so that the next round starts from the baseline."""
    for name, s in rig.services().items():
        if s["state"] == "failed":
            if labkit.dig(f"{name}.vcr.lab") == [WEBS[name][2]]:
                rig.vcr.run("service", "reset", name)
                if rig.vm_pid(name) is None:
                    rig.vcr.run("vm", "start", name, timeout=60)
            else:
                failback(rig, rnd, name)
        elif s["state"] == "recovered":
            failback(rig, rnd, name)


def run_round(rig, rnd, rng):
    say(f"round {rnd.n}: {rnd.fault.name} on {rnd.svc}")
    rnd.ev0 = rig.last_event()
    rnd.t0 = time.time()
    try:
        rnd.note = rnd.fault.inject(rig, rng, rnd.svc, rnd.ctx)
    except Exception as e:  # a fault that could not be injected is reported, not hidden
        rnd.note = f"inject error: {type(e).__name__}: {e}"
    try:
        rnd.settled = settle(rig, rnd)
    except labkit.Timeout as e:
        rnd.stuck = [n for n, s in rig.services().items() if s["state"] not in
                     ("ok", "recovered")]
        rnd.note += f"; {e}"
        say(f"round {rnd.n}: STUCK {rnd.stuck}")
        repair(rig, rnd)
    rnd.t_settled = time.time()
    for name, s in rig.services().items():
        if s["state"] == "recovered":
            err = failback(rig, rnd, name)
            if err:
                rnd.note += f"; {err}"
                if name not in rnd.stuck:
                    rnd.stuck.append(name)
    try:
        rig.wait_baseline(BOOT_S)
    except labkit.Timeout as e:
        rnd.note += f"; baseline: {e}"
        say(f"round {rnd.n}: no baseline: {e}")
        repair(rig, rnd)
        rig.wait_baseline(BOOT_S)  # still not: the campaign cannot go on (raises)
    rnd.t_end = time.time()
    rnd.ev1 = rig.last_event()
    say(f"round {rnd.n}: {rnd.note}; {time.time() - rnd.t0:.0f} s")


def plan(seed, rounds, faults):
    """rounds picks: each block of len(faults) rounds is a seeded shuffle of the faults
    (every fault comes up), each with a seeded target service."""
    rng = random.Random(seed)
    out = []
    while len(out) < rounds:
        block = list(faults)
        rng.shuffle(block)
        for f in block:
            if len(out) < rounds:
                out.append((f, rng.choice(sorted(WEBS))))
    return rng, out


def run_campaign(rig, seed, rounds, faults, out_dir):
    """Runs `rounds` rounds on a rig that is up.  Returns (rounds done, samples, events,
    error): error is None, or why the campaign could not go on (a rig that does not come
    back to its baseline); the rounds finished before it are kept."""
    rng, picks = plan(seed, rounds, faults)
    poller = Poller(os.path.join(out_dir, "samples.jsonl"), 6 * 3600)
    done, error = [], None
    try:
        labkit.wait_for("the pollers' first samples",
                        lambda: os.path.exists(poller.path) and os.path.getsize(poller.path), 30)
        for i, (fault, svc) in enumerate(picks, 1):
            rnd = Round(i, fault, svc)
            run_round(rig, rnd, rng)
            done.append(rnd)
    except Exception as e:  # reported by the caller, with the rounds done so far
        error = f"round {len(done) + 1}: {type(e).__name__}: {e}"
        say(f"campaign stopped: {error}")
    finally:
        poller.stop()
    try:
        events = rig.events(0)
    except Exception as e:
        events = []
        error = error or f"journal unreadable: {e}"
    return done, poller.samples(), events, error


# --------------------------------------------------------------------------- invariants

PHASES = ["detected", "fenced", "container_ready", "port_open", "dns_updated",
          "client_confirmed"]


def served_twice(samples, rnd):
    """Samples of the round where one service answered at two places: its primary while
    DNS gave its container, or (cold: the container exists only once the primary is
    fenced) its primary and its container both.  Failback windows are left out: failback
    is make-before-break by design (the primary answers, then DNS moves back, then the
    cold container stops)."""
    bad = []
    for s in samples:
        if not (rnd.t0 <= s["t"] <= rnd.t_end):
            continue
        fb = rnd.failbacks.get(s["s"])
        if fb and fb[0] <= s["t"] <= fb[1]:
            continue
        w = WEBS[s["s"]]
        if s["p"] and ((w[3] == "cold" and s["c"]) or s["d"] == w[4]):
            bad.append(s)
    return bad


def round_events(events, rnd):
    return [e for e in events if rnd.ev0 < e["id"] <= rnd.ev1]


def recoveries(evs):
    """{service: [[phase events of one recovery], ...]} split at each `detected`."""
    out = {}
    for e in evs:
        if e["kind"] != "recovery":
            continue
        d = e["detail"] or {}
        runs = out.setdefault(d.get("service"), [])
        if d.get("phase") == "detected" or not runs:
            runs.append([])
        runs[-1].append(e)
    return out


def check_round(rnd, samples, events):
    evs = round_events(events, rnd)
    recs = recoveries(evs)
    detected = {svc for svc, runs in recs.items() for run in runs
                if any(e["detail"].get("phase") == "detected" for e in run)}
    false = sorted(detected if rnd.fault.no_failover else detected - rnd.hits)
    missing = []
    max_ms = None
    fenced_kind = [e for e in evs if e["kind"] == "fenced"]
    for svc, runs in recs.items():
        for run in runs:
            phases = [e["detail"].get("phase") for e in run]
            if phases[0] != "detected":
                missing.append(f"{svc}: recovery without detected: {phases}")
                continue
            if "fenced" not in phases and "failed" not in phases:
                missing.append(f"{svc}: detected, neither fenced nor failed: {phases}")
            if "fenced" in phases and not any(e["detail"].get("service") == svc
                                              for e in fenced_kind):
                missing.append(f"{svc}: fenced phase without a fenced event")
            done = [p for p in phases if p in PHASES]
            if "client_confirmed" in phases:
                if [p for p in PHASES if p in done] != PHASES:
                    missing.append(f"{svc}: client_confirmed but phases {phases}")
                t0, t1 = run[0]["ts_ms"], next(e["ts_ms"] for e in run
                                               if e["detail"].get("phase") == "client_confirmed")
                max_ms = max(max_ms or 0, t1 - t0)
    for svc, state in rnd.settled.items():
        if state == "recovered" and not any("client_confirmed" in [
                e["detail"].get("phase") for e in run] for run in recs.get(svc, [])):
            # recovered in this round (not already before): the round began at baseline
            missing.append(f"{svc}: recovered without client_confirmed in the journal")
    for svc in rnd.failbacks:
        fb = [e["detail"].get("phase") for e in evs if e["kind"] == "failback"
              and (e["detail"] or {}).get("service") == svc]
        if fb and (fb[0] != "started" or fb[-1] != "done"):
            missing.append(f"{svc}: failback phases {fb}")
    if rnd.fault.name in ("vm_kill9", "dns_down_failure", "disk_full",
                          "agent_restart_mid_recovery"):
        if not any(e["kind"] == "vm_event" and e.get("vm") == rnd.svc and
                   (e["detail"] or {}).get("state") == "crashed" for e in evs):
            missing.append(f"{rnd.svc}: no vm_event crashed")
    if rnd.fault.lost_host and not any(e["kind"] == "host_lost" and
                                       e.get("host") == rnd.fault.lost_host for e in evs):
        missing.append(f"{rnd.fault.lost_host}: no host_lost")
    ids = [e["id"] for e in evs]
    gaps = [(a, b) for a, b in zip([rnd.ev0] + ids, ids) if b != a + 1]
    missing += [f"ids jump {a} -> {b}" for a, b in gaps]
    twice = served_twice(samples, rnd)
    expected = rnd.fault.expect_state
    return {
        "round": rnd.n, "fault": rnd.fault.name, "target": rnd.svc,
        "hits": " ".join(sorted(rnd.hits)) or "-",
        "seconds": round(rnd.t_end - rnd.t0, 1),
        "failovers": " ".join(sorted(detected)) or "-",
        "settled": " ".join(f"{k}={v}" for k, v in sorted(rnd.settled.items())) or "-",
        "expected": "-" if expected is None else f"{rnd.svc}={expected}",
        "served_twice": len(twice),
        "served_twice_first": (f"{twice[0]['s']}@{twice[0]['t']:.3f} d={twice[0]['d']}"
                               if twice else ""),
        "false_failovers": len(false),
        "false_failover_services": " ".join(false),
        "stuck": len(rnd.stuck),
        "lost_events": len(missing),
        "lost_detail": "; ".join(missing),
        # A lost standby host's containers shown in a state the server cannot know.
        "false_states": len(rnd.ctx.get("standby_known") or []),
        "false_state_detail": " ".join(rnd.ctx.get("standby_known") or []),
        "max_recovery_ms": max_ms if max_ms is not None else "",
        "events": f"{rnd.ev0 + 1}..{rnd.ev1}",
        "load1": round(rnd.load, 2),
        "note": rnd.note,
    }


def journal_gaps(events, first_id):
    ids = [e["id"] for e in events if e["id"] > first_id]
    return [(a, b) for a, b in zip([first_id] + ids, ids) if b != a + 1]


def summarize(rows, leaks):
    out = []
    for name in dict.fromkeys(r["fault"] for r in rows):
        rs = [r for r in rows if r["fault"] == name]
        ms = [r["max_recovery_ms"] for r in rs if r["max_recovery_ms"] != ""]
        out.append({
            "fault": name, "rounds": len(rs),
            "failovers": sum(1 for r in rs if r["failovers"] != "-"),
            "served_twice": sum(r["served_twice"] for r in rs),
            "false_failovers": sum(r["false_failovers"] for r in rs),
            "stuck": sum(r["stuck"] for r in rs),
            "lost_events": sum(r["lost_events"] for r in rs),
            "false_states": sum(r["false_states"] for r in rs),
            "leaks": "-",
            "max_recovery_ms": max(ms) if ms else "",
        })
    ms = [r["max_recovery_ms"] for r in out if r["max_recovery_ms"] != ""]
    out.append({"fault": "all", "rounds": len(rows),
                "failovers": sum(r["failovers"] for r in out),
                "served_twice": sum(r["served_twice"] for r in out),
                "false_failovers": sum(r["false_failovers"] for r in out),
                "stuck": sum(r["stuck"] for r in out),
                "lost_events": sum(r["lost_events"] for r in out),
                "false_states": sum(r["false_states"] for r in out),
                "leaks": len(leaks), "max_recovery_ms": max(ms) if ms else ""})
    return out
