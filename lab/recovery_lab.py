"""The recovery lab of bench/recovery.py, bench/hostfail.py and bench/soak.py: its topology
(one protected service per mode, `SVC`, on fixed addresses and taps; the long-lived standby
side `WARM_VM`, `SB_WARM`, `SB_COLD`, `COLD_VM_IDX`), the guest kind (`set_guest`: busybox
or Debian; `GUEST`, `PRIMARY_MB`, `STANDBY_MB` are read here at run time, so read them as
`recovery_lab.GUEST`, never copy them with `from ... import`), the cluster of daemons
(`Cluster`: the server's configuration, agents, primaries and standbys), the no-cache DNS
client (`Client`), the journal follower (`Events`, `detail`, `is_phase`) and the helpers
around a run (`wait_http`, `dns_set`, `last_event_id`, `restore`, `cold_vm_reset`).

Each benchmark keeps its measuring logic in its file; what more than one of them uses is
here, so that no benchmark imports another.  Plain Python on labkit and harness."""
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import harness
import labkit
from harness import say

MODES = ["warm-container", "cold-container", "warm-container-both", "cold-container-both",
         "warm-vm", "cold-vm"]

# The services' record TTL (the project's default): what a caching resolver keeps an
# answer for, so what a client behind one waits for a DNS switch, at most.
TTL = 5

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
