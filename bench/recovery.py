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
import queue
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
from harness import T0, say  # noqa: E402

CLIENTS = os.path.join(ROOT, "lab", "clients.py")

RESULTS = os.path.join(ROOT, "bench", "results")
NOTES = []
LOAD_NOTE = []
MODES = ["warm-container", "cold-container", "warm-container-both", "cold-container-both",
         "warm-vm", "cold-vm"]
LABEL = {"warm-container": "warm container, DNS (ours)",
         "cold-container": "cold container, DNS (ours)",
         "warm-container-both": "warm container, address takeover + DNS (ours)",
         "cold-container-both": "cold container, address takeover + DNS (ours)",
         "warm-vm": "warm standby VM (baseline)", "cold-vm": "cold standby VM (baseline)"}
PHASES = ["detected", "fenced", "container_ready", "port_open", "dns_updated",
          "client_confirmed"]
PHASES_BOTH = ["detected", "fenced", "container_ready", "port_open", "address_taken",
               "dns_updated", "client_confirmed"]
# The services' record TTL (the project's default): what a caching resolver keeps an
# answer for, so what a client behind one waits for a DNS switch, at most.
TTL = 5
# The caching resolver (unbound) in the namespace: the lab zone stubbed to BIND9.
CACHE_ADDR, CACHE_PORT = "127.0.0.1", 53
# A machine busier than this before the lab starts (1-min load average per CPU) makes the
# times say more about the other jobs than about recovery: results are not written
# (--force writes them anyway, and the .md says it was forced).
LOAD_MAX_PER_CPU = 1.5
# The keep-alive client is watched this long after the recovery ended.
KEEPALIVE_GRACE_S = 5
HOST_TIMEOUT_MS = 10000
BOOT_TIMEOUT = 600  # TCG on a loaded 2-core machine
# Per guest kind: VM sizes, result file stem, and for Debian the engine's port deadline
# (a Debian boot under TCG with seven guests running can outlast the default 60 s).
GUESTS = {
    "busybox": dict(out="recovery", primary_mb=256, standby_mb=256, port_timeout_ms=None),
    "debian": dict(out="recovery-debian", primary_mb=512, standby_mb=1024,
                   port_timeout_ms=300000),
}
GUEST = "busybox"
PRIMARY_MB = GUESTS[GUEST]["primary_mb"]
STANDBY_MB = GUESTS[GUEST]["standby_mb"]
IMAGE = "ct-nginx"  # the Debian run's container image (server `images:`)


def set_guest(kind):
    global GUEST, PRIMARY_MB, STANDBY_MB
    GUEST = kind
    PRIMARY_MB = GUESTS[kind]["primary_mb"]
    STANDBY_MB = GUESTS[kind]["standby_mb"]


def out_path(ext):
    return os.path.join(RESULTS, f"{GUESTS[GUEST]['out']}.{ext}")


def debian_images():
    """The Debian artifacts this run needs, or exits naming how to build them."""
    sb, why = labkit.debian_standby_image()
    meta = labkit.debian_image(f"{IMAGE}.json")
    tar = labkit.debian_image(f"{IMAGE}.tar.gz")
    if sb is None or meta is None or tar is None or labkit.debian_image("primary.qcow2") is None:
        sys.exit("recovery --guest debian: " + (why or f"no primary.qcow2 / {IMAGE} image in "
                 f"{labkit.DEBIAN_CACHE}") + " (make image-debian image-standby-disk)")
    with open(meta) as f:
        m = json.load(f)
    return {"standby": sb, "image": {"name": IMAGE, "file": tar, "sha256": m["sha256"],
                                     "cmd": m["cmd"]}}

# One service per mode.  index = tap/MAC index of the VM (vm_entry).
SVC = {
    "warm-container": dict(svc="wc", host="pwc", vm="pwc", idx=0, addr="10.77.0.11",
                           mode="warm", sb_host="sbw", ct="wc-ct", sb_addr="10.77.0.31"),
    "cold-container": dict(svc="cc", host="pcc", vm="pcc", idx=1, addr="10.77.0.12",
                           mode="cold", sb_host="sbr", ct="cc-ct", sb_addr="10.77.0.32"),
    # The VM baselines: standby modes warm-vm and cold-vm, a VM of host agent "stb".
    "warm-vm": dict(svc="wv", host="pwv", vm="pwv", idx=2, addr="10.77.0.13",
                    mode="warm-vm", sb_host="stb", sb_vm="wvsb", sb_addr="10.77.0.15"),
    "cold-vm": dict(svc="cv", host="pcv", vm="pcv", idx=3, addr="10.77.0.14",
                    mode="cold-vm", sb_host="stb", sb_vm="cvsb", sb_addr="10.77.0.18"),
    # takeover: both (docs/recovery.md, "Address takeover"): the container also takes the
    # primary's address; every container is on the lab bridge (br0 in the standby VM).
    "warm-container-both": dict(svc="wcb", host="pwcb", vm="pwcb", idx=8, addr="10.77.0.19",
                                mode="warm", sb_host="sbw", ct="wcb-ct", sb_addr="10.77.0.33",
                                takeover="both"),
    "cold-container-both": dict(svc="ccb", host="pccb", vm="pccb", idx=9, addr="10.77.0.20",
                                mode="cold", sb_host="sbr", ct="ccb-ct", sb_addr="10.77.0.34",
                                takeover="both"),
}
# Long-lived VMs under one agent host "stb": the warm standby VM (plain), the standby VM
# (LXC, warm containers), the shared recovery VM (LXC, cold containers) and the cold-vm
# baseline's VM (autostart false).
WARM_VM = dict(name="wvsb", idx=4, addr="10.77.0.15")
SB_WARM = dict(name="sbw", idx=5, addr="10.77.0.21")
SB_COLD = dict(name="sbr", idx=6, addr="10.77.0.22")
COLD_VM_IDX = 7  # tap7, 10.77.0.18


# --------------------------------------------------------------------------- client
# Runs inside the namespace: `python3 -c CLIENT NAME DNS NEW_ADDR OLD_ADDR DNS_PORT`.  Every
# 20 ms: an A query for NAME sent to DNS:DNS_PORT over UDP, then GET / to the address it
# gave (0.2 s timeouts).  Against BIND9 each query is answered afresh (nothing cached: the
# TTL never delays it); against the caching resolver the answer is whatever it holds.
# Prints "ready" once NAME resolves to OLD_ADDR and that answers; then, on a line on stdin
# (sent once the primary is killed), polls until an address NAME resolves to answers 200:
# NEW_ADDR, or OLD_ADDR once another host took it over (the primary is dead: whatever
# answers there now is the recovered service) (deadline 600 s), and prints one JSON line:
# {"t_dns_new", "t_good_new", "addr_good", "polls", "fails", "body"} (time.time()).
CLIENT = r'''
import json, os, socket, struct, sys, time
name, dns, new, old, port = sys.argv[1:6]
port = int(port)
def resolve():
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(q, (dns, port))
        while True:
            d = s.recv(1500)
            if d[:2] == q[:2]:
                break
    except OSError:
        return None
    finally:
        s.close()
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
    return None
def get(addr):
    try:
        with socket.create_connection((addr, 80), timeout=0.2) as s:
            s.settimeout(0.2)
            s.sendall(b"GET / HTTP/1.0\r\nHost: " + name.encode() + b"\r\n\r\n")
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
        head, _, body = data.partition(b"\r\n\r\n")
        if data.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n", 1)[0]:
            return body.decode(errors="replace").strip()
    except OSError:
        pass
    return None
dl = time.time() + 300
while time.time() < dl:
    a = resolve()
    if a == old and get(a) is not None:
        break
    time.sleep(0.02)
else:
    print("timeout", flush=True)
    sys.exit(1)
print("ready", flush=True)
sys.stdin.readline()
res = {"t_dns_new": None, "t_good_new": None, "addr_good": None, "polls": 0, "fails": 0,
       "body": None}
nxt = time.time()
dl = time.time() + 600
while time.time() < dl:
    res["polls"] += 1
    a = resolve()
    t = time.time()
    if a == new and res["t_dns_new"] is None:
        res["t_dns_new"] = t
    body = get(a) if a else None
    if body is not None:
        res["t_good_new"], res["body"], res["addr_good"] = time.time(), body, a
        break
    if body is None:
        res["fails"] += 1
    nxt += 0.02
    d = nxt - time.time()
    if d > 0:
        time.sleep(d)
    else:
        nxt = time.time()
print(json.dumps(res), flush=True)
'''


class Client:
    def __init__(self, name, dns, new, old, port=53):
        self.p = harness.ns_script(CLIENT, [name, dns, new, old, str(port)],
                                   f"client: {name} does not resolve to {old} or no answer")

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def result(self, timeout):
        out = [None]
        th = threading.Thread(target=lambda: out.__setitem__(0, self.p.stdout.readline()),
                              daemon=True)
        th.start()
        th.join(timeout)
        if out[0] is None:
            self.p.kill()
            raise labkit.Timeout(f"client gave no result within {timeout:.0f}s")
        self.p.wait(timeout=10)
        return json.loads(out[0])

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


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


# --------------------------------------------------------------------------- journal
class Events:
    """`vcr events --follow --json` inside the namespace, lines into a queue."""

    def __init__(self, vcr, since):
        self.q = queue.Queue()
        self.p = subprocess.Popen(labkit.in_ns(vcr.argv("events", "--follow", "--json",
                                                        "--since", str(since))),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.q.put(json.loads(line))
                except ValueError:
                    pass
        self.q.put(None)

    def wait(self, pred, timeout, seen):
        """Next event for which pred(ev) is true; every event read is appended to seen."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise labkit.Timeout(f"no matching journal event within {timeout:.0f}s")
            try:
                ev = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if ev is None:
                raise RuntimeError("vcr events --follow ended")
            seen.append(ev)
            if pred(ev):
                return ev

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(timeout=10)


def detail(ev):
    d = ev.get("detail")
    if isinstance(d, str):
        try:
            d = json.loads(d)
        except ValueError:
            d = {}
    return d or {}


def is_phase(svc, kinds=("recovery",), phases=None):
    def pred(ev):
        d = detail(ev)
        return (ev.get("kind") in kinds and d.get("service") == svc
                and (phases is None or d.get("phase") in phases))
    return pred


# --------------------------------------------------------------------------- cluster
class Cluster:
    def __init__(self, build, work, modes=MODES):
        self.build, self.work, self.modes = build, work, modes
        self.vcr = labkit.Vcr(build)
        self.env = labkit.lab_env()
        self.agents = {}
        self.state_dirs = {}
        self.server = None
        self.debian = debian_images() if GUEST == "debian" else None

    def bin(self, *p):
        return os.path.join(self.build, "src", *p)

    def write_server_config(self, path, services, cold_as_warm=False):
        """cold_as_warm: the cold-container service configured `warm` (Debian: the server
        provisions its container once, which puts the image into the recovery VM's
        cache)."""
        # host_timeout_ms 10 s: a standby agent under TCG on this loaded machine was silent
        # for > 2 s (the default 3 x 500 + 500) while it created a container, and was
        # declared lost mid-recovery.  A VM kill is pushed by the host agent, not found by
        # this timeout, so it does not change the times measured here.
        debian = GUEST == "debian"
        labkit.write_server_config(path, os.path.join(self.work, "journal.db"), heartbeat_ms=500,
                                   host_timeout_ms=HOST_TIMEOUT_MS,
                                   port_timeout_ms=GUESTS[GUEST]["port_timeout_ms"],
                                   images=[self.debian["image"]] if debian else ())
        if not services:
            return
        e = self.env
        L = [f"dns: {{server: {e['VCR_LAB_DNS']}, zone: {e['VCR_LAB_ZONE']}, "
             f"key_file: {e['VCR_LAB_TSIG_FILE']}}}", "services:"]
        for m in self.modes:
            s = SVC[m]
            mode = "warm" if cold_as_warm and m == "cold-container" else s["mode"]
            image = f", image: {IMAGE}" if debian and m.endswith("-container") else ""
            if s["mode"] in ("warm-vm", "cold-vm"):
                standby = (f"    standby: {{mode: {mode}, host: {s['sb_host']}, "
                           f"vm: {s['sb_vm']}, address: {s['sb_addr']}}}")
            else:
                standby = (f"    standby: {{mode: {mode}, host: {s['sb_host']}, "
                           f"container: {s['ct']}, address: {s['sb_addr']}, prefix: 24, "
                           f"gateway: {e['VCR_LAB_BRIDGE_ADDR']}{image}}}")
            L += [f"  - name: {s['svc']}",
                  f"    dns_name: {s['svc']}.{e['VCR_LAB_ZONE']}",
                  f"    ttl: {TTL}",
                  f"    takeover: {s.get('takeover', 'dns')}",
                  f"    primary: {{host: {s['host']}, vm: {s['vm']}, address: {s['addr']}, "
                  "port: 80}",
                  "    check: {type: http, path: /, interval_ms: 1000, timeout_ms: 500, "
                  "failures: 3}",
                  standby]
        with open(path, "a") as f:
            f.write("\n".join(L) + "\n")

    def start_server(self, services=True, cold_as_warm=False):
        """Without services first: the server probes a primary as soon as its VM runs, so
        a primary still booting (no HTTP yet) would be 'recovered' at once.  The services
        are configured by restarting the server once every primary answers."""
        if self.server:
            self.server.stop()
        cfg = os.path.join(self.work, "server.yaml")
        self.write_server_config(cfg, services, cold_as_warm)
        r = subprocess.run([self.bin("server", "vcr-server"), "--config-test", cfg],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"server config refused:\n{r.stdout}{r.stderr}")
        self.n_servers = getattr(self, "n_servers", 0) + 1
        self.server = harness.wait_server(self.vcr, harness.server_proc(
            self.build, cfg, os.path.join(self.work, f"server-{self.n_servers}.log"),
            "--log-level", "debug"))

    def standby_vm(self, d):
        if GUEST == "debian":
            return labkit.debian_standby_vm_entry(d["name"], d["idx"], d["addr"],
                                                  self.debian["standby"],
                                                  memory_mb=STANDBY_MB)
        e = self.env
        vm = labkit.vm_entry(d["name"], d["idx"], d["addr"], memory_mb=STANDBY_MB, vcpus=1,
                             extra_args="apparmor=0 vcr.role=standby vcr.agent_server="
                                        f"{e['VCR_LAB_BRIDGE_ADDR']}:{labkit.SERVER_AGENT_PORT}")
        vm["image"]["initrd"] = os.path.join(os.path.dirname(e["VCR_LAB_INITRD"]),
                                             "initrd-standby.img")
        return vm

    def start_agent(self, host, vms):
        state = tempfile.mkdtemp(prefix=f"agent-{host}-", dir=self.work)
        cfg = os.path.join(self.work, f"agent-{host}.yaml")
        for v in vms:
            harness.wait_tap_free(v["tap"])
        labkit.write_agent_config(cfg, host, state, vms, accel="tcg")
        self.n_agents = getattr(self, "n_agents", 0) + 1
        p = harness.agent_proc(self.build, cfg,
                               os.path.join(self.work, f"agent-{host}-{self.n_agents}.log"),
                               "--log-level", "debug", "--stop-vms-on-exit")
        self.agents[host] = (p, vms)
        self.state_dirs[host] = state
        return p

    def primary_vm(self, mode):
        s = SVC[mode]
        return self.plain_vm(s["vm"], s["idx"], s["addr"])

    def plain_vm(self, name, idx, addr):
        """A VM running the service itself: a primary, the warm-vm and cold-vm baselines."""
        if GUEST == "debian":
            return labkit.debian_primary_entry(name, idx, addr, memory_mb=PRIMARY_MB)
        return labkit.vm_entry(name, idx, addr, memory_mb=PRIMARY_MB)

    def restart_primary(self, mode, autostart=True):
        s = SVC[mode]
        old = self.agents.get(s["host"])
        if old:
            old[0].stop(timeout=60)
            # Until the server has seen the old session end, "connected" is the old one's:
            # a failback then would find no connection (seen: `host pwv has no agent
            # connection`).
            labkit.wait_for(f"server to see {s['host']}'s agent gone", lambda: (
                self.host(s["host"]) or {}).get("state") != "connected",
                HOST_TIMEOUT_MS / 1000 + 10, interval=0.2)
        self.start_agent(s["host"], [dict(self.primary_vm(mode), autostart=autostart)])

    def vm_running(self, name):
        return (self.vcr.vm(name) or {}).get("state") == "running"

    def host(self, name):
        return next((h for h in self.vcr.status()["hosts"] if h["name"] == name), None)

    def standby_up(self, name):
        h = self.host(name)
        return h if h and h.get("role") == "standby" and h["state"] == "connected" else None

    def service(self, svc):
        return next(x for x in self.vcr.json("services")["services"] if x["name"] == svc)

    def stop(self):
        for p, _ in self.agents.values():
            try:
                p.stop(timeout=60)
            except Exception as e:  # noqa: BLE001
                say(f"agent stop: {e}")
        if self.server:
            self.server.stop()


def cold_vm_reset(cl):
    """After a cold-vm run: the engine stopped the VM (failback's `vm_stop`) or, after a
    failed recovery, it is killed here; Debian: its overlay is removed, so that the next
    start boots the image anew (the agent makes a new overlay when there is none)."""
    name = SVC["cold-vm"]["sb_vm"]
    if cl.vm_running(name):
        r = cl.vcr.run("vm", "kill", name, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"vcr vm kill {name}: {r.stderr.strip()}")
    labkit.wait_for(f"{name} not running", lambda: not cl.vm_running(name), 60, interval=0.5)
    if GUEST == "debian":
        state = cl.state_dirs["stb"]
        for f in (f"{name}.qcow2", f"{name}.qcow2.base"):
            if os.path.exists(os.path.join(state, f)):
                os.unlink(os.path.join(state, f))


def dns_set(cl, name, addr):
    e = cl.env
    r = labkit.ns_run([cl.bin("dns", "vcr-dnsupdate"), "--server", e["VCR_LAB_DNS"], "--zone",
                       e["VCR_LAB_ZONE"], "--key-file", e["VCR_LAB_TSIG_FILE"], name, "1", addr],
                      timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"vcr-dnsupdate {name} {addr}: {r.stdout}{r.stderr}")


def wait_http(addr, timeout, body=None):
    def ok():
        b = labkit.http_get(addr, timeout=1)
        return b is not None and (body is None or b.strip() == body)
    labkit.wait_for(f"HTTP from {addr}" + (f" = {body}" if body else ""), ok, timeout,
                    interval=0.2)


def last_event_id(cl):
    return cl.vcr.json("events", "--limit", "1").get("last_id", 0) or 0


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


def restore(cl, mode):
    """Primary's agent restarted (fresh state dir, VM left off), then `vcr failback`, which
    starts the primary; cold VM killed."""
    s = SVC[mode]
    t = time.monotonic()
    # A primary that comes back while its service is served elsewhere is killed again
    # within ~2 s (docs/recovery.md, "The primary's life"), sooner than a guest boots:
    # its new agent leaves it off; `vcr failback` starts it and waits for its check
    # (within check.boot_grace_ms) before moving the name back.
    cl.restart_primary(mode, autostart=False)
    labkit.wait_for(f"host {s['host']} connected", lambda: (cl.host(s["host"]) or {}).get(
        "state") == "connected", 60, interval=0.5)
    st = cl.service(s["svc"])
    if st["state"] == "recovered":
        since = last_event_id(cl)
        ev = Events(cl.vcr, since)
        seen = []
        try:
            r = cl.vcr.run("failback", s["svc"])
            if r.returncode != 0:
                raise RuntimeError(f"vcr failback {s['svc']}: {r.stderr.strip()}")
            end = ev.wait(is_phase(s["svc"], ("failback",), ("done", "failed")),
                          BOOT_TIMEOUT, seen)
        finally:
            ev.stop()
        if detail(end).get("phase") != "done":
            raise RuntimeError(f"failback of {s['svc']}: {detail(end)}")
        if mode == "cold-vm" and not any(detail(x).get("phase") == "vm_stopped"
                                         for x in seen):
            raise RuntimeError(f"failback of {s['svc']}: no `vm_stopped`: {detail(end)}")
    elif st["state"] == "failed":
        # A failed recovery cannot be failed back: point the name at the primary again.
        dns_set(cl, f"{s['svc']}.{cl.env['VCR_LAB_ZONE']}", s["addr"])
        cl.vcr.run("vm", "start", s["vm"], timeout=30)
        if mode == "cold-vm":
            cold_vm_reset(cl)
        raise RuntimeError(f"service {s['svc']} stays `failed` (no failback from failed); "
                           "name pointed back at the primary")
    if mode == "cold-vm":
        cold_vm_reset(cl)
    wait_http(s["addr"], BOOT_TIMEOUT)
    labkit.wait_for(f"service {s['svc']} ok on its primary",
                    lambda: (lambda x: x["state"] in ("ok", "degraded") and x["served_by"] == "primary")(
                        cl.service(s["svc"])), 120, interval=0.5)
    say(f"  {mode}: primary back and failed back ({time.monotonic() - t:.1f}s)")


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
    if GUEST == "debian":
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
        out[("warm-vm", n)] = (n, n * PRIMARY_MB)
        out[("warm-container", n)] = (1, STANDBY_MB + n * c_mb)
        out[("cold-container", n)] = (1, STANDBY_MB)
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
    stem = GUESTS[GUEST]["out"]
    debian = GUEST == "debian"
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
                 f"disk (lab/build-debian `primary.qcow2`), {PRIMARY_MB} MB, 1 vCPU, systemd, "
                 "nginx-light on :80, direct kernel boot with its own kernel, address by `ip=`, "
                 "`cloud-init=disabled`, each on its own qcow2 overlay. Standby and recovery "
                 f"VMs: the Debian standby disk (lab/build-standby-disk), {STANDBY_MB} MB, "
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
        L.append(f"- Primary VMs: {PRIMARY_MB} MB, 1 vCPU, busybox guest, httpd on :80. Standby "
                 f"and recovery VMs: {STANDBY_MB} MB, 1 vCPU, initrd-standby.img (LXC 5.0.2), "
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
                 f"(`port_timeout_ms: {GUESTS[GUEST]['port_timeout_ms']}`) waits for the "
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
                 f"with the container. Primary VM size P = {PRIMARY_MB} MB; standby/recovery "
                 f"VM base size B = {STANDBY_MB} MB (the size it is known to work at, "
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
    zoom = max(4, int(max(cts, default=0) * 1.25) + 1) if GUEST != "busybox" else 4
    guest = ", Debian 12 guests" if GUEST == "debian" else ""
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
    set_guest(args.guest)
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

        if GUEST == "debian":
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
