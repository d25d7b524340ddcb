#!/usr/bin/env python3
"""bench-migration: live container migration (CRIU, pre-copy or one full dump) vs a cold
move (destroy + create), between two standby VMs (docs/migration.md).

In one run on one machine: two standby VMs under one host agent, one container moved back
and forth between them.  --guest chooses them (the `guest` column of the CSV):
  busybox  (default) standby VMs of 512 MB, 2 vCPUs, initrd-standby.img (as
           tests/integration/test_migration.py); the busybox template's container.
           Before each run the container is made to hold M MB of non-zero bytes in a
           process's memory (/cgi-bin/hog?M, below), so that a dump has real pages.
  debian   two Debian 12 standby VMs (the Debian standby disk of
           lab/build-standby-disk, labkit.debian_standby_vm_entry, --debian-mb MB,
           2 vCPUs); the container is made from the `ct-nginx` image the server
           delivers (`images:`), its cmd given by this script (DEBIAN_CMD): a shell
           holding M MB of non-zero bytes (one M per run of the script, --mem),
           a shell counting seconds into /srv/www/count, then nginx as PID 1.  No data
           volume (debian-vol below has one).  Provisioning is off (provision_warm: false): the bench creates the
           container itself (cold-move included) through the API, naming the image as
           provisioning does (the API sends the agent the server's `images:` entry for it,
           the cmd above included; `vcr container create` has no image option).
  debian-vol  the same, and the container has the service's data volume attached, which
           every migration carries (docs/migration.md "Data"): a busybox primary VM (under
           the same host agent) holds a --volume-mb MB ext4 volume with --volume-fill-mb MB
           of random bytes (does not compress) and a marker file; the service (warm, its
           data {volume, path /srv/www/vol}) is failed over once by `vcr failover`
           (the primary fenced, its volume copied and attached to the container, which
           restarts: its hog fills again), then the container moves back and forth.
           `GET /vol/marker.txt` after each run tells whether the data came along
           (`data_kept`).  Methods: live-precopy and live-full only (a cold move
           recreates the container without its data: no baseline for the volume).
Each (method, M) point is repeated --runs times, methods interleaved within a run (load
on this shared machine varies); the median is reported.  Writes
bench/results/migration.{md,csv} and migration.png (gnuplot).

Methods
  live-precopy  `vcr container migrate SRC CT --to DST --copy server --json`: CRIU pre-dump
                while the container runs, then the final dump (stopped), copy through
                vcr-server in chunks, restore (the stream's baseline).
  live-full     the same with `--no-precopy`: one full dump while it is stopped.
  cold-move     no CRIU: `vcr container destroy SRC CT`, then `vcr container create DST CT
                --address ... --service ...`: processes start again, their memory is lost.
  stream-precopy, stream-full  as live-precopy and live-full without `--copy server`: the
                images go agent to agent over the stream (docs/migration.md "The stream");
                a run whose result says another `copy_method` is recorded as failed.
                The report compares each with its baseline (copy MB/s, downtime).
Measured: total (command start .. end, as seen by this script), the server's
`downtime_ms` (live only), the longest gap a client inside the lab namespace sees doing
`GET /` every 10 ms (lab/harness.py's poller), whether the container's in-memory
counter (`GET /count`, +1 a second in the container's shell) went on (state kept) or
started again, the image sizes (pre_bytes, final_bytes), and the host's 1-minute load
average just before the move (load_1m: the machine is shared), and where each phase's
time went by the agents' own clocks (agent_ms: CRIU's dump and restore, the tar and
unpack of the images; the API result's phases[], docs/migration.md).  With debian and debian-vol
rows both present, the report compares them (the data volume's cost in downtime).

The hog CGI is not in the image: this script appends it to a copy of
initrd-standby.img (labkit.initrd_with_files), in the busybox template's /www/cgi-bin.

Runs inside its own lab namespace (VCR_LAB_NS, default vcrbmig) and tears it down.
`make bench-migration` runs the busybox guest, `make bench-migration-debian` the Debian
one (--guest debian, M = 100 MB), `make bench-migration-debian-vol` the Debian one with the
data volume (--guest debian-vol, M = 100 MB, a 64 MB volume holding 8 MB); all with
--merge, so each keeps the others' rows.
"""
import argparse
import csv
import json
import os
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrbmig")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
import harness  # noqa: E402
from harness import T0, agent_proc, columns_stats, fmt, machine, ratio, say, server_proc, wait_server  # noqa: E402,F401

RESULTS = os.path.join(ROOT, "bench", "results")
HOST = "bmhost"
SB = [("sb31", 0, "10.77.0.31"), ("sb32", 1, "10.77.0.32")]
CT, SERVICE, CT_ADDR = "migb", "migb", "10.77.0.36"
# debian-vol: the service's primary (a busybox lab VM under the same host agent), its volume
# and where the container sees it (nginx serves /srv/www).
PRIMARY, P_INDEX, P_ADDR = "migb-primary", 2, "10.77.0.33"
VOL_PATH, MARKER = "/srv/www/vol", "marker.txt"
TEMPLATE_DIR = "var/lib/vcr/templates/busybox"  # lab/build-image TEMPLATE_DIR
BOOT_TIMEOUT = 300
DEBIAN_BOOT_TIMEOUT = 420  # two systemd guests booting together under TCG
GUEST = "busybox"  # --guest
NOTES = []  # events worth reporting, appended during the run

METHODS = ["live-precopy", "live-full", "cold-move", "stream-precopy", "stream-full"]
LABEL = {"live-precopy": "CRIU pre-dump + final dump, the images through vcr-server in chunks "
                         "(vcr container migrate --copy server)",
         "live-full": "CRIU one full dump, through vcr-server (vcr container migrate "
                      "--no-precopy --copy server)",
         "cold-move": "destroy + create (no CRIU, processes restart)",
         "stream-precopy": "as live-precopy, the images agent to agent over the stream "
                           "(vcr container migrate: docs/migration.md \"The stream\")",
         "stream-full": "as live-full over the stream (vcr container migrate --no-precopy)"}
# The stream's methods and their baselines through the server, in the same run.
STREAM_PAIRS = [("stream-precopy", "live-precopy"), ("stream-full", "live-full")]
# SEEDS.md part A: LXD 2.15 over CRIU, the container stopped until the migration is over
# (no live migration), images 807-945 MB, Xeon E3 v3, GbE, KVM, VMs of 2 vCPU / 2 GB.
PAPER_TOTAL = (17, 21)
PAPER_DOWNTIME = (5.4, 9.0)

# The Debian container's PID 1 (the image's `cmd`, at most 255 characters, run by the
# image's /bin/sh as `exec CMD`; the image has dash, coreutils and grep, no perl): a shell
# holds MB MB of 'a' in a variable (anonymous memory CRIU has to dump, as the busybox
# hog) and writes its VmRSS line to /srv/www/hog once it does; another counts seconds in
# its memory into /srv/www/count; nginx serves both.
DEBIAN_CMD = ("sh -c 'sh -c \"x=\\$(head -c {mb}M /dev/zero|tr \\\\\\\\0 a);"
              "grep VmRSS /proc/\\$\\$/status >/srv/www/hog;sleep inf;:\" & "
              "while sleep 1;do echo $((i+=1)) >/srv/www/count;done & "
              "exec nginx -g \"daemon off;\"'")

# /cgi-bin/hog?MB inside the container.  The shell variable x holds MB MB of 'a' (not
# zeros, not a file: anonymous memory CRIU has to dump).  Answers once it is held.
HOG_CGI = rb'''#!/bin/sh
# bench/migration.py: keep MB MB resident in a process of this container (hog?MB);
# replaces the previous hog; hog?0 only stops it.  Answers "held MB rss KB".
mb=${QUERY_STRING:-0}
case $mb in ''|*[!0-9]*) mb=0 ;; esac
[ -f /tmp/hog.pid ] && kill "$(cat /tmp/hog.pid)" 2>/dev/null
rm -f /tmp/hog.pid /tmp/hog.ready
rss=0
if [ "$mb" -gt 0 ]; then
    MB=$mb sh -c 'x=$(head -c $((MB * 1048576)) /dev/zero | tr "\0" a)
        : >/tmp/hog.ready
        while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
    echo $! >/tmp/hog.pid
    i=0
    while [ ! -f /tmp/hog.ready ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i + 1)); done
    rss=$(awk '/^VmRSS/ { print $2 }' /proc/$(cat /tmp/hog.pid)/status)
fi
printf 'Content-Type: text/plain\r\n\r\nheld %s rss %s\n' "$mb" "$rss"
'''


# --------------------------------------------------------------------------- lab
class Cluster:
    """vcr-server and one host agent running the two standby VMs."""

    def __init__(self, build, work, debian_mb=1024, debian_hog_mb=0, volume=(64, 8)):
        self.build, self.work = build, work
        self.volume = volume  # debian-vol: (size MB, random MB in it)
        self.marker = None  # debian-vol: the marker file's text
        self.vcr = labkit.Vcr(build)
        self.image = None  # debian: the image's name in a create order (the API sends
        # the agent the server's object for it: name, sha256, url, cmd)
        cfg = os.path.join(work, "server.yaml")
        journal = os.path.join(work, "journal.db")
        if GUEST.startswith("debian"):
            vms = self.debian_config(cfg, journal, debian_mb, debian_hog_mb)
        else:
            labkit.write_server_config(cfg, journal, heartbeat_ms=500, host_timeout_ms=5000)
            vms = self.busybox_vms(work)
        self.server = wait_server(self.vcr, server_proc(build, cfg, os.path.join(work, "server.log")))
        state = tempfile.mkdtemp(prefix="agent-", dir=work)
        acfg = os.path.join(work, "agent.yaml")
        labkit.write_agent_config(acfg, HOST, state, vms, accel="tcg")
        self.agent = agent_proc(build, acfg, os.path.join(work, "agent.log"), "--stop-vms-on-exit")
        t = time.monotonic()
        boot = DEBIAN_BOOT_TIMEOUT if GUEST.startswith("debian") else BOOT_TIMEOUT
        if GUEST == "debian-vol":
            labkit.wait_for(f"{PRIMARY} serving", lambda: labkit.http_get(P_ADDR), boot,
                            interval=0.5)
        for name, _, _ in SB:
            labkit.wait_for(f"{name} running",
                            lambda n=name: (self.vcr.vm(n) or {}).get("state") == "running",
                            boot, interval=0.2)
        for name, _, _ in SB:
            labkit.wait_for(f"the standby agent of {name}", lambda n=name: self.standby(n),
                            boot, interval=0.2)
        say(f"  2 {GUEST} standby VMs ({vms[0]['memory_mb']} MB, 2 vCPUs) booted, standby "
            f"agents connected ({time.monotonic() - t:.1f}s)")

    @staticmethod
    def busybox_vms(work):
        vms = [labkit.standby_vm_entry(name, index, address, memory_mb=512, vcpus=2)
               for name, index, address in SB]
        if None in vms:
            raise RuntimeError("no initrd-standby.img: run `make image`")
        initrd = os.path.join(work, "initrd-standby-hog.img")
        labkit.initrd_with_files(vms[0]["image"]["initrd"], initrd, {
            f"{TEMPLATE_DIR}/www/cgi-bin": (stat.S_IFDIR | 0o755, None),
            f"{TEMPLATE_DIR}/www/cgi-bin/hog": (stat.S_IFREG | 0o755, HOG_CGI),
        })
        for vm in vms:
            vm["image"]["initrd"] = initrd
        return vms

    def debian_config(self, cfg, journal, memory_mb, hog_mb):
        """Debian standby VMs; the server delivers ct-nginx with DEBIAN_CMD as its cmd, and
        knows the container as a warm service's (so that a migration's restore order
        carries the image); provisioning off: the bench creates and moves it."""
        disk, why = labkit.debian_standby_image()
        meta = labkit.debian_image("ct-nginx.json")
        if disk is None or meta is None:
            raise RuntimeError(why or "no ct-nginx image: make image-debian")
        with open(meta) as f:
            sha = json.load(f)["sha256"]
        img = {"name": "ct-nginx", "file": labkit.debian_image("ct-nginx.tar.gz"),
               "sha256": sha, "cmd": DEBIAN_CMD.format(mb=hog_mb)}
        self.image = img["name"]
        # A primary that never runs (its host never connects; boot_grace_ms 0: booting
        # until its first answer), as in tests/integration/test_images.py.
        svc = labkit.service_entry(SERVICE, "node9", f"{SERVICE}-primary", "10.77.0.46", "warm",
                                   SB[0][0], CT, CT_ADDR,
                                   check={"type": "http", "path": "/", "interval_ms": 500,
                                          "timeout_ms": 400, "failures": 3, "boot_grace_ms": 0})
        svc["standby"]["image"] = img["name"]
        vms = []
        if GUEST == "debian-vol":
            svc = self.volume_service(svc, vms)
        labkit.write_server_config(cfg, journal, heartbeat_ms=500, host_timeout_ms=5000,
                                   dns=True, images=[img], services=[svc])
        with open(cfg, "a") as f:
            f.write("provision_warm: false\n")
        return [labkit.debian_standby_vm_entry(name, index, address, disk, memory_mb=memory_mb)
                for name, index, address in SB] + vms

    def volume_service(self, svc, vms):
        """debian-vol: the service gets a real primary (a busybox lab VM) whose volume
        holds self.volume[1] MB of random bytes and a marker; its data is attached to the
        container by one failover (attach_data)."""
        size_mb, fill_mb = self.volume
        src = os.path.join(self.work, "volume")
        os.makedirs(src)
        with open(os.path.join(src, "random.bin"), "wb") as f:
            f.write(os.urandom(fill_mb << 20))
        self.marker = f"bench-migration volume {time.time():.3f}\n"
        with open(os.path.join(src, MARKER), "w") as f:
            f.write(self.marker)
        vm = labkit.vm_entry(PRIMARY, P_INDEX, P_ADDR)
        vm["volumes"] = [{"name": "vol", "size_mb": size_mb, "source_dir": src,
                          "image": os.path.join(self.work, "vol.img"), "mount": "/vol",
                          "cache": "none"}]
        vms.append(vm)
        svc = labkit.service_entry(SERVICE, HOST, PRIMARY, P_ADDR, "warm", SB[0][0], CT,
                                   CT_ADDR)
        svc["standby"]["image"] = "ct-nginx"
        svc["data"] = {"volume": "vol", "path": VOL_PATH, "interval_s": 0}
        return svc

    def service(self):
        return next(s for s in self.vcr.json("services")["services"] if s["name"] == SERVICE)

    def attach_data(self):
        """One failover: the primary fenced, its volume copied to the container's standby
        VM and attached (the container restarts with it); then the marker is served."""
        t = time.monotonic()
        labkit.wait_for(f"service {SERVICE} ok", lambda: self.service()["state"] == "ok", 300,
                        interval=0.5)
        r = self.vcr.run("failover", SERVICE, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"failover {SERVICE}: {r.stderr.strip()} {r.stdout.strip()}")
        labkit.wait_for(f"service {SERVICE} recovered",
                        lambda: self.service()["state"] == "recovered", 600, interval=0.5)
        labkit.wait_for("the volume's marker from the container", data_kept, 120, interval=0.5)
        tl = {e["phase"]: e for e in self.service()["recovery"]["timeline"]}
        say(f"  data attached by a failover ({time.monotonic() - t:.1f}s): "
            f"{tl.get('data_copied', {}).get('bytes')} B packed, "
            f"{tl.get('data_copied', {}).get('raw_bytes')} B volume")

    def standby(self, name):
        return next((h for h in self.vcr.status()["hosts"]
                     if h["name"] == name and h.get("role") == "standby"
                     and h["state"] == "connected"), None)

    def where(self):
        """The standby host reporting the container running, or None."""
        for name, _, _ in SB:
            h = self.standby(name) or {}
            for c in h.get("containers") or []:
                if c["name"] == CT and c.get("state") == "running":
                    return name
        return None

    def only_on(self, host):
        """True once `host` reports the container running and no other host reports it."""
        for name, _, _ in SB:
            h = self.standby(name) or {}
            cs = [c for c in h.get("containers") or [] if c["name"] == CT]
            if name == host and not (cs and cs[0].get("state") == "running"):
                return False
            if name != host and cs:
                return False
        return True

    def create(self, host):
        if GUEST.startswith("debian"):
            return self.create_from_image(host)
        r = self.vcr.run("container", "create", host, CT, "--address", f"{CT_ADDR}/24",
                         "--service", SERVICE, "--json", timeout=300)
        out = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
        if r.returncode != 0 or out.get("result") != "done":
            raise RuntimeError(f"container create {host} {CT}: rc {r.returncode} "
                               f"{r.stderr.strip()} {r.stdout.strip()}")
        return out

    def create_from_image(self, host):
        """POST /v1/hosts/HOST/containers with the members provisioning sends
        (recovery_container_members + the image, named: the API replaces the name by the
        `images:` entry's object, the bench's cmd included).  The API waits 10 s for the agent
        (API_ORDER_TIMEOUT_MS); a Debian image's create takes longer under TCG, so a 504
        is followed by waiting for HOST to report the container running."""
        body = {"name": CT, "action": "create", "service": SERVICE, "address": CT_ADDR,
                "prefix": 24, "gateway": labkit.lab_env()["VCR_LAB_BRIDGE_ADDR"],
                "start": True, "image": self.image}
        r = labkit.ns_run(labkit.api_curl(f"/v1/hosts/{host}/containers", "POST", body,
                                          timeout=60, extra=["-w", "\\n%{http_code}"]),
                          timeout=70)
        text, _, code = r.stdout.rpartition("\n")
        if code not in ("200", "504"):
            raise RuntimeError(f"container create {host} {CT}: HTTP {code} {text.strip()}")
        labkit.wait_for(f"{host} to report {CT} running", lambda: self.only_on(host), 300,
                        interval=0.2)
        return {"result": "done", "http": code}

    def destroy(self, host):
        r = self.vcr.run("container", "destroy", host, CT, "--json", timeout=300)
        out = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
        if r.returncode != 0 or out.get("result") != "done":
            raise RuntimeError(f"container destroy {host} {CT}: rc {r.returncode} "
                               f"{r.stderr.strip()} {r.stdout.strip()}")
        return out

    def stop(self):
        self.agent.stop(timeout=120)
        self.server.stop()


def load_1m():
    """The host's 1-minute load average now (the machine is shared: the report says how
    loaded it was during the runs)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def counter():
    text = (labkit.http_get(CT_ADDR, "/count") or "").strip()
    return int(text) if text.isdigit() else None


MARKER_TEXT = []  # debian-vol: the marker's text (set by main)


def data_kept():
    """debian-vol: the container serves the volume's marker file as written."""
    return MARKER_TEXT and labkit.http_get(CT_ADDR, f"/vol/{MARKER}") == MARKER_TEXT[0]


def serving():
    body = (labkit.http_get(CT_ADDR) or "").strip()
    if GUEST.startswith("debian"):
        return "vcr-debian container: nginx" in body  # ct-nginx's page (lab/build-debian)
    return body == SERVICE


def hog(mb):
    """Makes the container hold mb MB; returns the hog's VmRSS in KB (0 for mb = 0).
    Debian: the hog was started with the container (DEBIAN_CMD) and holds what it holds;
    this waits until it says so."""
    if GUEST.startswith("debian"):
        def held():
            words = (labkit.http_get(CT_ADDR, "/hog") or "").split()  # VmRSS: N kB
            return int(words[1]) if words[:1] == ["VmRSS:"] and words[1].isdigit() else None
        return labkit.wait_for(f"the container's hog to hold {mb} MB", held, 300, interval=0.5)
    r = labkit.ns_run(["curl", "-s", "-f", "-m", "600", f"http://{CT_ADDR}/cgi-bin/hog?{mb}"],
                      timeout=620)
    words = r.stdout.split()
    if r.returncode != 0 or words[:2] != ["held", str(mb)]:
        raise RuntimeError(f"hog?{mb}: rc {r.returncode} {r.stdout!r}")
    return int(words[3]) if len(words) > 3 and words[3].isdigit() else 0


# --------------------------------------------------------------------------- runs
def other(host):
    return SB[1][0] if host == SB[0][0] else SB[0][0]


def copy_rate(out):
    """MB/s of the image (and data) copies: their bytes over the server's copy phases."""
    ms = {p["phase"]: p["ms"] for p in out.get("phases") or []}
    done = [k for k in ("copy_pre", "copy", "data_copy") if k in ms]
    secs = sum(ms[k] for k in done) / 1000
    nbytes = ((out.get("pre_bytes") or 0 if "copy_pre" in done else 0)
              + (out.get("final_bytes") or 0 if "copy" in done else 0)
              + ((out.get("data") or {}).get("bytes") or 0 if "data_copy" in done else 0))
    return round(nbytes / 1e6 / secs, 3) if secs > 0 and nbytes else ""


def marker_after(err):
    """debian-vol: 1 when the container serves the volume's marker after the run."""
    if GUEST != "debian-vol":
        return ""
    if err:
        return 0
    try:
        labkit.wait_for("the volume's marker", data_kept, 30, interval=0.2)
        return 1
    except labkit.Timeout:
        return 0


def one_run(cl, method, mb, run, src):
    """Moves the container from src to the other VM; returns the CSV row."""
    dst = other(src)
    t = time.monotonic()
    rss_kb = hog(mb)
    labkit.wait_for("the counter to pass 5", lambda: (counter() or 0) > 5, 60, interval=0.2)
    say(f"  {method} M={mb} run {run}: {src} -> {dst} (hog rss {rss_kb / 1024:.1f} MB, "
        f"{time.monotonic() - t:.1f}s to fill)")
    poller = harness.Poller([CT_ADDR])  # GET / every 10 ms, longest gap
    c0 = labkit.wait_for("the counter", counter, 30, interval=0.1)
    load = load_1m()
    out, err = {}, None
    t0 = time.monotonic()
    try:
        if method == "cold-move":
            cl.destroy(src)
            cl.create(dst)
            out = {"ok": True}
        else:
            argv = ["container", "migrate", src, CT, "--to", dst, "--json"]
            if method in ("live-full", "stream-full"):
                argv.append("--no-precopy")
            if method.startswith("live-"):
                argv += ["--copy", "server"]
            r = cl.vcr.run(*argv, timeout=900)
            out = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
            if r.returncode != 0 or not out.get("ok"):
                err = (f"rc {r.returncode}: {out.get('error') or r.stderr.strip()}"
                       f"{' (rolled back)' if out.get('rolled_back') else ''}")
            elif out.get("copy_method") != ("stream" if method.startswith("stream-")
                                            else "server"):
                err = f"copied by {out.get('copy_method')}, not as {method} asks"
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        err = str(e)
    total = time.monotonic() - t0
    client_down = None
    if err:
        poller.p.kill()  # the container may answer nowhere: no gap to wait for
        poller.p.wait()
    else:
        try:
            client_down = poller.finish()[CT_ADDR]["gap"]
        except (RuntimeError, ValueError) as e:
            poller.p.kill()
            poller.p.wait()
            err = f"poller: {e}"
    try:
        c1 = labkit.wait_for("the counter", counter, 0 if err else 30, interval=0.1)
    except labkit.Timeout:
        c1 = None
    kept = c0 is not None and c1 is not None and c1 >= c0
    phases = " ".join(f"{p['phase']}:{p['ms']}" for p in out.get("phases") or [])
    agent_ms = " ".join(f"{p['phase']}.{k}:{p[k]}" for p in out.get("phases") or []
                        for k in AGENT_TIMES if k in p)
    row = {"guest": GUEST, "method": method, "mem_mb": mb, "run": run, "ok": int(err is None),
           "total_s": round(total, 3),
           "server_total_s": round(out["total_ms"] / 1000, 3) if out.get("total_ms") else "",
           # A failed migration's downtime_ms is null: the run is recorded as failed.
           "downtime_s": (round(out["downtime_ms"] / 1000, 3)
                          if out.get("downtime_ms") is not None else ""),
           "downtime_ms": out.get("downtime_ms") if out.get("downtime_ms") is not None else "",
           "copy_mb_s": copy_rate(out), "copy_method": out.get("copy_method") or "",
           "client_downtime_s": "" if client_down is None else round(client_down, 3),
           "pre_bytes": out.get("pre_bytes", ""), "final_bytes": out.get("final_bytes", ""),
           "state_kept": int(kept), "counter_before": c0, "counter_after": c1,
           "hog_rss_kb": rss_kb, "from": src, "to": dst, "phases": phases,
           "agent_ms": agent_ms,
           "volume_mb": cl.volume[0] if GUEST == "debian-vol" else "",
           "data_bytes": (out.get("data") or {}).get("bytes", "") if out else "",
           "data_kept": marker_after(err), "load_1m": load}
    if err:
        NOTES.append(f"{method}, M = {mb} MB, run {run} ({src} -> {dst}) FAILED: {err}")
        say(f"    FAILED: {err}")
    else:
        say(f"    total {total:.2f}s, server downtime {fmt(row['downtime_s'] or None)}s, "
            f"client downtime {fmt(client_down)}s, pre {out.get('pre_bytes', 0) or 0} B, "
            f"final {out.get('final_bytes', 0) or 0} B, data {row['data_bytes'] or '-'} B "
            f"(kept {row['data_kept']}), counter {c0} -> {c1} "
            f"({'kept' if kept else 'restarted'}); phases {phases or '-'}")
    return row


def settle(cl, expected):
    """After a run: waits until `expected` alone reports the container and it answers.
    Else: a standby VM whose agent stays away is killed and started again (a hung guest),
    and the container is created again where nothing is left of it.  Returns its host."""
    try:
        labkit.wait_for(f"{CT} reported only on {expected}", lambda: cl.only_on(expected), 60,
                        interval=0.2)
        labkit.wait_for(f"{CT} to answer HTTP", serving, 120, interval=0.2)
        return expected
    except labkit.Timeout:
        pass
    host = cl.where()
    lost = [n for n, _, _ in SB if not cl.standby(n)]
    for name in lost:
        t = time.monotonic()
        say(f"  standby host {name} is not connected: its VM is killed and started again")
        cl.vcr.run("vm", "kill", name, timeout=30)
        labkit.wait_for(f"{name} started", lambda n=name: cl.vcr.run(
            "vm", "start", n, timeout=30).returncode == 0, 60, interval=1)
        labkit.wait_for(f"the standby agent of {name}", lambda n=name: cl.standby(n),
                        BOOT_TIMEOUT, interval=0.5)
        NOTES.append(f"standby VM {name} was not connected after the run (hung guest): "
                     f"killed and started again ({time.monotonic() - t:.0f} s)")
    if host is None or lost:
        for name, _, _ in SB:
            if name != host:
                cl.vcr.run("container", "destroy", name, CT, timeout=300)
    if host is None:
        host = SB[0][0]
        say(f"  container lost: created again on {host}")
        NOTES.append(f"the container was lost (expected on {expected}): created again on "
                     f"{host} (its memory and counter start again)")
        cl.create(host)
    elif host != expected:
        NOTES.append(f"after a run the container was expected on {expected}, found on {host}")
    labkit.wait_for(f"{CT} reported only on {host}", lambda: cl.only_on(host), 60, interval=0.2)
    labkit.wait_for(f"{CT} to answer HTTP", serving, 120, interval=0.2)
    return host


# --------------------------------------------------------------------------- report
COLS = ["guest", "method", "mem_mb", "run", "ok", "total_s", "server_total_s", "downtime_s",
        "client_downtime_s", "pre_bytes", "final_bytes", "state_kept", "counter_before",
        "counter_after", "hog_rss_kb", "from", "to", "phases", "volume_mb", "data_bytes",
        "data_kept", "downtime_ms", "copy_mb_s", "load_1m", "copy_method", "agent_ms"]
# The agents' own times inside a phase (the API result's phases[]: docs/migration.md).
AGENT_TIMES = ("dump_ms", "pack_ms", "unpack_ms", "restore_ms")
GUESTS = ["busybox", "debian", "debian-vol"]
GUEST_VMS = {
    "busybox": "two standby VMs of 512 MB, 2 vCPUs, Debian 6.1 kernel + busybox initramfs "
               "with LXC and CRIU (`lab/build-image --standby`, initrd-standby.img); the "
               "container is the busybox template (httpd on port 80, an in-memory counter); "
               "M: `GET /cgi-bin/hog?M` (a CGI the bench appends to a copy of "
               "initrd-standby.img) makes a busybox shell hold M MB of non-zero bytes",
    "debian": "two Debian 12 standby VMs (the Debian standby disk: systemd, the project's "
              ".deb, LXC 5.0.2, CRIU 3.17; `labkit.debian_standby_vm_entry`) of {mb} MB, 2 "
              "vCPUs; the container is made from the `ct-nginx` image the server delivers "
              "(Debian 12 rootfs, nginx-light), its cmd set by the bench (`DEBIAN_CMD`): a "
              "shell holding M MB of non-zero bytes in a variable (started with the "
              "container, its VmRSS is `hog MB`), a shell counting seconds in memory into "
              "/srv/www/count (`GET /count`), nginx as PID 1. No data volume (the "
              "debian-vol rows have one). Provisioning is off; the container is created "
              "(also by cold-move) with the API's create order naming the image (the server "
              "sends its `images:` entry, the bench's cmd included), the target's image "
              "cache already filled",
    "debian-vol": "the same two Debian standby VMs and container, which this time has the "
                  "service's data volume attached at /srv/www/vol (docs/migration.md "
                  "\"Data\"): an ext4 volume of `volume_mb` MB (column) holding 8 MB of "
                  "random bytes (they do not compress) and a marker file, from a busybox "
                  "primary VM, attached by one `vcr failover` before the runs; every "
                  "migration carries it (packed after the final dump, `data_bytes` = the "
                  "packed copy; `data_kept` = the marker served after the run). Live methods "
                  "only: a cold move would recreate the container without its data",
}


def guest_of(r):
    return r.get("guest") or "busybox"  # rows written before the column existed


def medians(rows):
    """{(guest, method, mem_mb): {col: median or None, col_min, col_max, n, kept}} over the
    successful runs."""
    groups = {}
    for r in rows:
        if int(r["ok"]):
            groups.setdefault((guest_of(r), r["method"], int(r["mem_mb"])), []).append(r)
    med = {}
    for k, rs in groups.items():
        d = {"n": len(rs), "kept": sum(int(r["state_kept"]) for r in rs),
             "data_kept": sum(int(r.get("data_kept") or 0) for r in rs)}
        d.update(columns_stats(rs, ("total_s", "downtime_s", "client_downtime_s", "pre_bytes",
                                    "final_bytes", "hog_rss_kb", "data_bytes", "copy_mb_s")))
        med[k] = d
    return med


PHASES = ["space", "predump", "copy_pre", "unpack_pre", "dump", "copy", "data_export", "data_copy",
          "data_install", "restore", "port_open", "destroy", "cleanup"]


def phase_medians(rows, guest, method, mem):
    """{phase: median ms} over the successful runs of (guest, method, mem)."""
    per = {}
    for r in rows:
        if (guest_of(r) == guest and r["method"] == method and int(r["mem_mb"]) == mem
                and int(r["ok"])):
            for item in (r["phases"] or "").split():
                name, ms = item.split(":")
                per.setdefault(name, []).append(float(ms))
    return {p: statistics.median(v) for p, v in per.items()}


def agent_medians(rows, guest, method, mem):
    """{phase.time: median ms} of the agents' own times over the successful runs."""
    per = {}
    for r in rows:
        if (guest_of(r) == guest and r["method"] == method and int(r["mem_mb"]) == mem
                and int(r["ok"])):
            for item in (r.get("agent_ms") or "").split():
                name, ms = item.split(":")
                per.setdefault(name, []).append(float(ms))
    return {p: statistics.median(v) for p, v in per.items()}


AGENT_COLS = [("predump", "dump_ms", "pre-dump: CRIU"), ("predump", "pack_ms", "pre-dump: tar"),
              ("unpack_pre", "unpack_ms", "unpack_pre: check + tar -x"),
              ("dump", "dump_ms", "dump: CRIU"), ("dump", "pack_ms", "dump: tar + sha256"),
              ("restore", "unpack_ms", "restore: check + tar -x"),
              ("restore", "restore_ms", "restore: CRIU")]


def mb(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def span(d, col):
    """median (min-max)"""
    if d[col] is None:
        return "-"
    return f"{fmt(d[col])} ({fmt(d[col + '_min'])}-{fmt(d[col + '_max'])})"


def argv_without_notes():
    out, skip = [], False
    for a in sys.argv[1:]:
        if skip or a == "--note":
            skip = a == "--note"
            continue
        out.append(a)
    return " ".join(out)


def backfill(r):
    """Rows written before the copy_mb_s and downtime_ms columns: both from the row's own
    phases, sizes and downtime."""
    if r.get("copy_mb_s") in ("", None) and int(r["ok"]) and r.get("phases"):
        phases = [{"phase": x.split(":")[0], "ms": float(x.split(":")[1])}
                  for x in r["phases"].split()]
        out = {"phases": phases, "pre_bytes": int(r["pre_bytes"] or 0),
               "final_bytes": int(r["final_bytes"] or 0),
               "data": {"bytes": int(r["data_bytes"])} if r.get("data_bytes") else None}
        r["copy_mb_s"] = copy_rate(out)
    if r.get("downtime_ms") in ("", None) and r.get("downtime_s") not in ("", None):
        r["downtime_ms"] = round(float(r["downtime_s"]) * 1000)
    return r


def stream_section(med, guests, mems):
    """The stream against the server's chunks, measured in the same runs."""
    L = ["## The stream vs the chunks through the server\n",
         "Same run, same container, methods interleaved: copy MB/s (the copy phases' bytes "
         "over their time) and the server's downtime, medians (min-max); stream / server "
         "for the rate (> 1: the stream is faster), server / stream for the downtime (> 1: "
         "the stream is shorter). Goal (issue 15): >= 20x the server's rate, and <= 2 s of "
         "downtime for a container holding 64 MB.\n",
         "| guest | M MB | stream method | copy MB/s stream | copy MB/s server | rate ratio | "
         "downtime s stream | downtime s server | downtime ratio | runs |",
         "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    n = 0
    for g in guests:
        for k in mems[g]:
            for sm, bm in STREAM_PAIRS:
                a, b = med.get((g, sm, k)), med.get((g, bm, k))
                if not a or not b:
                    continue
                n += 1
                L.append(f"| {g} | {k} | {sm} | {span(a, 'copy_mb_s')} | {span(b, 'copy_mb_s')}"
                         f" | {ratio(b['copy_mb_s'], a['copy_mb_s'])} | {span(a, 'downtime_s')} "
                         f"| {span(b, 'downtime_s')} | {ratio(a['downtime_s'], b['downtime_s'])}"
                         f" | {a['n']}/{b['n']} |")
    return L + [""] if n else []


def write_report(rows, args, mach, elapsed, notes, generated=None):
    os.makedirs(RESULTS, exist_ok=True)
    rows = [backfill(dict(r)) for r in rows]
    with open(os.path.join(RESULTS, "migration.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        for r in rows:
            w.writerow(dict(r, guest=guest_of(r)))
    med = medians(rows)
    guests = [g for g in GUESTS if any(guest_of(r) == g for r in rows)]
    mems = {g: sorted({int(r["mem_mb"]) for r in rows if guest_of(r) == g}) for g in guests}
    failed = sum(1 for r in rows if not int(r["ok"]))
    vols = {guest_of(r): r["volume_mb"] for r in rows if r.get("volume_mb") not in ("", None)}
    L = []
    L.append("# bench-migration: live container migration (CRIU) vs a cold move\n")
    L.append(generated or
             f"Generated by `bench/migration.py` ({argv_without_notes() or 'defaults'}) on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; total {elapsed / 60:.1f} "
             f"min; medians of the successful runs per point (runs column), (min-max) beside "
             f"them; {failed} failed run(s) (Notes).\n")
    L.append("## Machine\n")
    L.append(f"- CPUs (`nproc`): {mach['nproc']}; memory {mach['mem']}; CPU: {mach['cpu']}")
    L.append(f"- {mach['qemu']}; accelerator **TCG** (no usable KVM here); host kernel "
             f"{mach['kernel']}; load average at the end {mach['load']} (a shared machine: "
             "other VM tests ran on it meanwhile)")
    for g in guests:
        loads = [float(r["load_1m"]) for r in rows
                 if guest_of(r) == g and r.get("load_1m") not in ("", None)]
        if loads:
            L.append(f"- 1-minute load average just before each {g} move (`load_1m`): median "
                     f"{statistics.median(loads):.2f}, {min(loads):.2f}-{max(loads):.2f} on "
                     f"the {mach['nproc']} cores (other jobs share this machine)")
    L.append("- Under one host agent, by guest (`guest` column; `--guest`):")
    for g in guests:
        L.append(f"  - **{g}**: " + GUEST_VMS[g].format(mb=args.debian_mb) + ".")
    L.append("- Images go from VM to VM through vcr-server (base64, 128 KiB a time) for the "
             "live-* methods, agent to agent over one TCP connection on the lab bridge for "
             "the stream-* ones (docs/migration.md \"The stream\"), all on this host.\n")
    L.append("Absolute times are TCG times on this machine (every guest instruction emulated, "
             "CRIU and tar included): compare the ratios and the shape, not the seconds, with "
             "the paper.\n")
    L.append("## How each is measured\n")
    for m in METHODS:
        L.append(f"- **{m}**: {LABEL[m]}.")
    L.append("- **M** (memory held): a process of the container holds M MB of non-zero "
             "bytes (anonymous memory a dump must write; per guest above); its VmRSS is the "
             "`hog MB` column.")
    L.append("- **total**: from the start of the first command to the end of the last one, "
             "as this script sees it (the `vcr` calls included); for live methods the "
             "server's own `total_ms` is in the CSV (`server_total_s`).")
    L.append("- **server downtime**: the server's `downtime_ms` (final dump start .. the "
             "container's port accepts a TCP connection on the target; docs/migration.md). "
             "None for cold-move.")
    L.append("- **client downtime**: a client inside the lab namespace sends `GET /` to the "
             "container's address every 10 ms (lab/harness.py's poller: raw sockets, 0.2 s "
             "timeout); the longest gap between two good answers. It ends when the server "
             "answers again, after the command returned for cold-move.")
    L.append("- **copy MB/s**: the bytes of the images (pre-dump, final, and the data "
             "volume's packed copy when it moves) over the time of the server's copy phases "
             "(`copy_pre`, `copy`, `data_copy`); `downtime_ms` in the CSV is the server's "
             "downtime in ms. A failed run is a row with `ok` 0 and its error in the Notes.")
    L.append("- **state kept**: the container's counter (`GET /count`, +1 a second in a "
             "shell's memory) read just before and just after: kept if it went on, not if "
             "it started again at 1 (runs kept / runs).")
    L.append("- Runs interleave the methods (run 1: live-precopy, live-full, cold-move, "
             "run 2: ...) and alternate the direction (sb31 -> sb32, then back).\n")
    L.append("## Results\n")
    L.append("| guest | M MB | method | total s | server downtime s | client downtime s | "
             "pre-dump MB | final MB | state kept | hog MB | data volume MB (packed) | "
             "data kept | copy MB/s | runs |")
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for g in guests:
        for k in mems[g]:
            for m in METHODS:
                d = med.get((g, m, k))
                if not d:
                    if any(guest_of(r) == g and r["method"] == m and int(r["mem_mb"]) == k
                           for r in rows):
                        L.append(f"| {g} | {k} | {m} | failed | | | | | | | | | | 0 |")
                    continue
                hog_mb = ("-" if d["hog_rss_kb"] is None
                          else format(d["hog_rss_kb"] / 1024, ".1f"))
                L.append(f"| {g} | {k} | {m} | {span(d, 'total_s')} | {span(d, 'downtime_s')} "
                         f"| {span(d, 'client_downtime_s')} | "
                         f"{mb(d['pre_bytes']) if m.endswith('-precopy') else '-'} | "
                         f"{mb(d['final_bytes'])} | {d['kept']}/{d['n']} | {hog_mb} | "
                         + (f"{vols.get(g, '-')} ({mb(d['data_bytes'])}) | "
                            f"{d['data_kept']}/{d['n']} | " if d['data_bytes'] is not None
                            else "- | - | ") + f"{span(d, 'copy_mb_s')} | {d['n']} |")
    L.append("")
    L.append("![downtime and total vs memory held](migration.png)\n")
    L.append("## Where the time goes (live methods, medians of the server's phases, s)\n")
    L.append("Downtime = dump + copy + restore + port_open (docs/migration.md); the copies "
             "carry the tars through vcr-server in 128 KiB base64 frames.\n")
    L.append("| guest | M MB | method | " + " | ".join(PHASES) + " |")
    L.append("|---|---:|---|" + "---:|" * len(PHASES))
    for g in guests:
        for k in mems[g]:
            for m in ("live-precopy", "live-full", "stream-precopy", "stream-full"):
                ph = phase_medians(rows, g, m, k)
                if ph:
                    L.append(f"| {g} | {k} | {m} | " + " | ".join(
                        "-" if ph.get(p) is None else f"{ph[p] / 1000:.2f}" for p in PHASES)
                        + " |")
    L.append("")
    agent_lines = []
    for g in guests:
        for k in mems[g]:
            for m in ("live-precopy", "live-full", "stream-precopy", "stream-full"):
                am = agent_medians(rows, g, m, k)
                if am:
                    agent_lines.append(f"| {g} | {k} | {m} | " + " | ".join(
                        "-" if am.get(f"{ph}.{t}") is None else f"{am[f'{ph}.{t}'] / 1000:.2f}"
                        for ph, t, _ in AGENT_COLS) + " |")
    if agent_lines:
        L.append("## Inside the phases (the agents' own times, medians, s)\n")
        L.append("What the source and target agents measured inside the server's phases "
                 "(the API result's phases[], CSV column `agent_ms`; runs recorded before the "
                 "agents reported them have none). The rest of a phase is the order's way "
                 "to the agent and back and liblxc's work around CRIU (the container's "
                 "creation on the target).\n")
        L.append("| guest | M MB | method | " + " | ".join(c for _, _, c in AGENT_COLS) + " |")
        L.append("|---|---:|---|" + "---:|" * len(AGENT_COLS))
        L.extend(agent_lines)
        L.append("")
    L.extend(stream_section(med, guests, mems))
    L.append("## Ratios\n")
    L.append("Live / cold (how many times longer the live move takes: the price of keeping "
             "the processes' memory), and live-full / live-precopy (>1 = the pre-dump "
             "shortens it):\n")
    L.append("| guest | M MB | precopy / cold total | precopy / cold client downtime | "
             "full / cold total | full / cold client downtime | full / precopy server "
             "downtime | full / precopy client downtime |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for g in guests:
        for k in mems[g]:
            p, f_, c = (med.get((g, m, k)) for m in METHODS[:3])

            def r(a, b, col):
                return ratio(a[col], b[col]) if a and b else "-"
            L.append(f"| {g} | {k} | {r(c, p, 'total_s')} | {r(c, p, 'client_downtime_s')} | "
                     f"{r(c, f_, 'total_s')} | {r(c, f_, 'client_downtime_s')} | "
                     f"{r(p, f_, 'downtime_s')} | {r(p, f_, 'client_downtime_s')} |")
    L.append("")
    if "busybox" in guests and "debian" in guests:
        L.append("Debian / busybox at the largest M of each (the same method; how much a real "
                 "Debian container with nginx costs against the busybox one):\n")
        L.append("| method | busybox M | debian M | total | server downtime | client downtime "
                 "| final image |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        kb, kd = max(mems["busybox"]), max(mems["debian"])
        for m in METHODS:
            b, d = med.get(("busybox", m, kb)), med.get(("debian", m, kd))
            if b and d:
                L.append(f"| {m} | {kb} | {kd} | " + " | ".join(
                    ratio(b[c], d[c]) for c in ("total_s", "downtime_s", "client_downtime_s",
                                                "final_bytes")) + " |")
        L.append("")
    if "debian" in guests and "debian-vol" in guests:
        L.extend(volume_section(rows, med, mems))
    L.append("## Beside the paper's figures\n")
    L.append("The paper (SEEDS.md part A): LXD 2.15 over CRIU, the container stopped until "
             "the migration was over (their live migration did not work), images of "
             "807-945 MB, Xeon E3 v3 hosts, GbE, KVM, VMs of 2 vCPU / 2 GB. Their method is "
             "closest to our live-full; their downtime was still only a third to a half of "
             "the total (the slides do not say what ran before the stop). Downtime / total is "
             "the share of the move during which the service is down.\n")
    L.append("| who, method | M MB | image MB (pre + final) | total s | downtime s (server) | "
             "client downtime s | downtime / total |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    L.append(f"| paper, LXD stop-and-copy | - | 807-945 | {PAPER_TOTAL[0]}-{PAPER_TOTAL[1]} | "
             f"{PAPER_DOWNTIME[0]}-{PAPER_DOWNTIME[1]} | - | "
             f"{PAPER_DOWNTIME[0] / PAPER_TOTAL[0]:.2f}-{PAPER_DOWNTIME[1] / PAPER_TOTAL[1]:.2f}"
             " |")
    for g in guests:
        for m in ("live-full", "live-precopy"):
            for k in mems[g]:
                d = med.get((g, m, k))
                if not d:
                    continue
                img = (d["pre_bytes"] or 0) + (d["final_bytes"] or 0)
                share = (f"{d['downtime_s'] / d['total_s']:.2f}"
                         if d["downtime_s"] is not None and d["total_s"] else "-")
                L.append(f"| ours (TCG, {g}), {m} | {k} | {img / 2**20:.1f} | "
                         f"{fmt(d['total_s'])} | {fmt(d['downtime_s'])} | "
                         f"{fmt(d['client_downtime_s'])} | {share} |")
    L.append("")
    L.append("Their images carry a whole container root filesystem (807-945 MB); ours carry "
             "the process memory and the overlay's upper directory only (the template or "
             "image is in every standby VM, or fetched by the target before the restore), so "
             "the sizes differ by orders of magnitude while our CPU is emulated: neither the "
             "seconds nor the sizes compare directly.\n")
    L.append("## How to rerun\n")
    L.append("Under the lab lock (`flock /tmp/vcr-lab.lock ...`), as root, with the Debian "
             "images in VCR_DEBIAN_CACHE (`make image-debian image-standby-disk`):\n")
    L.append("- `make bench-migration` (busybox rows), `make bench-migration-debian` (debian), "
             "`make bench-migration-debian-vol` (debian-vol): each runs `bench/migration.py "
             "--guest G --merge`, which replaces the rows of its guest and M and keeps the "
             "others;")
    L.append("- `bench/migration.py --report-only` rewrites this report and the plot from "
             "migration.csv; `--help` lists the options (`--runs`, `--mem`, `--volume-mb`, "
             "`--volume-fill-mb`, `--methods`).\n")
    if notes:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    L.append("Files: `migration.csv` (every run: " + ", ".join(COLS) + "; `phases` = the "
             "server's phase durations in ms), `migration.png`.")
    with open(os.path.join(RESULTS, "migration.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    plot(med, guests, mems)


DATA_PHASES = ("data_export", "data_copy", "data_install")


def volume_section(rows, med, mems):
    """debian-vol against debian (the same container and M, without the volume): the
    cost of carrying the data, per live method; then in words."""
    L = ["## The data volume (debian-vol against debian)\n",
         "The same two Debian standby VMs, the same container and M; debian-vol's container "
         "has the service's data volume attached, which the migration packs after the final "
         "dump, copies through the server and installs before the restore (docs/migration.md "
         "\"Data\"), so its copy time is downtime. Data phases: medians of the server's "
         "`data_export` + `data_copy` + `data_install` (s); with / without = debian-vol's "
         "median over debian's.\n",
         "| method | M MB | volume MB (packed MB) | data phases s (export / copy / install) | "
         "data share of server downtime | total s with / without | server downtime s with "
         "/ without | client downtime s with / without | data kept |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    words = []
    vol_mb = next((r["volume_mb"] for r in rows
                   if guest_of(r) == "debian-vol" and r.get("volume_mb") not in ("", None)),
                  "-")
    for k in mems["debian-vol"]:
        for m in ("live-precopy", "live-full"):
            v, d = med.get(("debian-vol", m, k)), med.get(("debian", m, k))
            if not v:
                continue
            ph = phase_medians(rows, "debian-vol", m, k)
            data = [ph.get(p) for p in DATA_PHASES]
            data_s = sum(x for x in data if x is not None) / 1000 if any(data) else None
            share = (f"{data_s / v['downtime_s']:.0%}" if data_s is not None
                     and v["downtime_s"] else "-")

            def pair(col):
                if not d or d[col] is None or v[col] is None:
                    return f"{fmt(v[col])} / -"
                return f"{fmt(v[col])} / {fmt(d[col])} ({ratio(d[col], v[col])})"
            L.append(f"| {m} | {k} | {vol_mb} ({mb(v['data_bytes'])}) | "
                     + (f"{data_s:.2f} (" + " / ".join(
                         "-" if x is None else f"{x / 1000:.2f}" for x in data) + ")"
                        if data_s is not None else "-")
                     + f" | {share} | {pair('total_s')} | {pair('downtime_s')} | "
                       f"{pair('client_downtime_s')} | {v['data_kept']}/{v['n']} |")
            if d and data_s is not None and v["downtime_s"] and d["downtime_s"]:
                words.append(
                    f"{m}: carrying the {vol_mb} MB volume ({mb(v['data_bytes'])} MB packed) "
                    f"took {data_s:.2f} s of a {fmt(v['downtime_s'])} s server downtime "
                    f"({share}); without the volume the downtime was {fmt(d['downtime_s'])} s, "
                    f"so with it {ratio(d['downtime_s'], v['downtime_s'])} that; total "
                    f"{fmt(v['total_s'])} s against {fmt(d['total_s'])} s "
                    f"({ratio(d['total_s'], v['total_s'])}). The downtime less the data "
                    f"phases, {v['downtime_s'] - data_s:.2f} s, is what the same move costs "
                    f"here without them: against {fmt(d['downtime_s'])} s it is the dump, "
                    "copy and restore of the same memory at this run's load.")
        p, f_ = med.get(("debian-vol", "live-precopy", k)), med.get(("debian-vol", "live-full", k))
        if p and f_:
            words.append(
                f"Between the methods (with the volume, M = {k} MB): live-full's server downtime "
                f"is {ratio(p['downtime_s'], f_['downtime_s'])} live-precopy's "
                f"({fmt(f_['downtime_s'])} s against {fmt(p['downtime_s'])} s), its total "
                f"{ratio(p['total_s'], f_['total_s'])} ({fmt(f_['total_s'])} s against "
                f"{fmt(p['total_s'])} s): the pre-dump moves the memory while the container "
                "still serves; the data volume is not pre-copied, so both methods pay for it "
                "inside the downtime.")
    if any(guest_of(r) == "debian" and r.get("load_1m") in ("", None) for r in rows):
        words.append("The debian rows come from another run (Notes) made before `load_1m` was "
                     "recorded: the machine's load then was not the load of the debian-vol "
                     "runs, so the with / without ratios mix the volume's cost with the "
                     "difference in load (the data phases above are measured directly).")
    L.append("")
    L.extend(f"- {w}" for w in words)
    L.append("")
    return L


def plot(med, guests, mems):
    allm = sorted({k for g in guests for k in mems[g]})
    if not shutil.which("gnuplot") or not allm:
        return
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    colors = {"live-precopy": "#1b9e77", "live-full": "#d95f02", "cold-move": "#7570b3",
              "stream-precopy": "#e7298a", "stream-full": "#66a61e"}
    points = {"busybox": (7, 5), "debian": (9, 11), "debian-vol": (13, 15)}  # client, server
    down, tot = [], []
    for g in guests:
        for m in METHODS:
            if not any((g, m, k) in med for k in mems[g]):
                continue
            path = os.path.join(tmp, f"{g}-{m}.dat")
            with open(path, "w") as f:
                for k in mems[g]:
                    d = med.get((g, m, k))
                    if d:
                        f.write(f"{k} {d['total_s']} {d['client_downtime_s'] or 'NaN'} "
                                f"{d['downtime_s'] if d['downtime_s'] is not None else 'NaN'}\n")
            pc, ps = points[g]
            down.append(f"'{path}' using 1:3 with linespoints lw 2 pt {pc} ps 1.3 lc rgb "
                        f"'{colors[m]}' title '{g} {m}: client'")
            if m != "cold-move":
                down.append(f"'{path}' using 1:4 with linespoints lw 2 dt 2 pt {ps} ps 1.3 lc "
                            f"rgb '{colors[m]}' title '{g} {m}: server'")
            tot.append(f"'{path}' using 1:2 with linespoints lw 2 pt {pc} ps 1.3 lc rgb "
                       f"'{colors[m]}' title '{g} {m}'")
    paper = ("{lo} with lines dt 3 lw 1.5 lc rgb '#888888' title 'paper ({lo}-{hi} s)', "
             "{hi} with lines dt 3 lw 1.5 lc rgb '#888888' notitle")
    down.append(paper.format(lo=PAPER_DOWNTIME[0], hi=PAPER_DOWNTIME[1]))
    tot.append(paper.format(lo=PAPER_TOTAL[0], hi=PAPER_TOTAL[1]))
    script = f"""
set terminal pngcairo size 1300,600 font 'sans,11'
set output '{os.path.join(RESULTS, 'migration.png')}'
set multiplot layout 1,2 title 'Container migration between standby VMs (TCG, medians; busybox: circles, debian: triangles, debian-vol: diamonds)'
set xlabel 'memory held by the container (MB)'
set grid
set key top left font 'sans,9'
set yrange [0:*]
set xrange [-4:{max(allm) + 4}]
set xtics ({', '.join(str(k) for k in allm)})
set title 'downtime'
set ylabel 'downtime (s)'
plot {', '.join(down)}
set title 'total time'
set ylabel 'total (s)'
plot {', '.join(tot)}
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
    ap.add_argument("--guest", choices=GUESTS, default="busybox",
                    help="the standby VMs and container (module docstring)")
    ap.add_argument("--mem", default=None,
                    help="memory held by the container (MB); default 0,16,64 (busybox), "
                         "100 (debian: one value, set when the container starts)")
    ap.add_argument("--debian-mb", type=int, default=1024,
                    help="memory of each Debian standby VM (MB)")
    ap.add_argument("--methods", default=None,
                    help="default: all (debian-vol: live-precopy,live-full)")
    ap.add_argument("--volume-mb", type=int, default=64,
                    help="debian-vol: the data volume's size (MB)")
    ap.add_argument("--volume-fill-mb", type=int, default=8,
                    help="debian-vol: MB of random bytes in it")
    ap.add_argument("--quick", action="store_true", help="0/16 MB, 1 run")
    ap.add_argument("--keep-lab", action="store_true")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the report's Notes (repeatable)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the existing migration.csv for the M not measured now")
    ap.add_argument("--report-only", action="store_true",
                    help="no measurement: rewrite migration.md and the plot from migration.csv")
    args = ap.parse_args()
    global GUEST
    GUEST = args.guest
    if args.mem is None:
        args.mem = "100" if GUEST.startswith("debian") else "0,16,64"
    if args.quick:
        args.mem, args.runs = ("16" if GUEST.startswith("debian") else "0,16"), 1
    if os.geteuid() != 0:
        sys.exit("migration: must run as root (network namespaces, taps)")
    build = os.path.abspath(args.build)
    os.environ.setdefault("VCR_LAB_CACHE", os.path.join(build, "lab-cache"))
    mems = [int(x) for x in args.mem.split(",") if x]
    if args.methods is None:
        args.methods = ("live-precopy,live-full" if GUEST == "debian-vol"
                        else ",".join(METHODS))
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        sys.exit(f"unknown method(s) {bad}: {METHODS}")
    if GUEST.startswith("debian") and len(mems) != 1:
        sys.exit("--guest debian: one --mem value (the hog starts with the container)")
    notes = list(args.note)

    def earlier():
        """Rows of the existing migration.csv, the notes and header line of migration.md."""
        rows, notes_, gen = [], [], None
        if os.path.exists(os.path.join(RESULTS, "migration.csv")):
            with open(os.path.join(RESULTS, "migration.csv")) as f:
                rows = list(csv.DictReader(f))
        if os.path.exists(os.path.join(RESULTS, "migration.md")):
            with open(os.path.join(RESULTS, "migration.md")) as f:
                old = f.read().split("\n")
            gen = next((x + "\n" for x in old if x.startswith("Generated by")), None)
            i = old.index("## Notes") + 2 if "## Notes" in old else len(old)
            while i < len(old) and old[i].startswith("- "):
                if not old[i].startswith(("- partial:", "- FAILED/INTERRUPTED")):
                    # one "(earlier run)" is enough, however many merges ago
                    notes_.append(re.sub(r"^(\(earlier run\) )+", "(earlier run) ", old[i][2:]))
                i += 1
        return rows, notes_, gen

    if args.report_only:
        # The measuring run's header line and notes are kept from the report it wrote.
        rows, kept, gen = earlier()
        write_report(rows, args, machine(), 0, kept + notes, generated=gen)
        say(f"rewrote {RESULTS}/migration.md and migration.png from migration.csv")
        return 0
    old_rows, old_notes = [], []
    if args.merge:
        old_rows, old_notes, gen = earlier()
        old_rows = [r for r in old_rows if guest_of(r) != GUEST or int(r["mem_mb"]) not in mems
                    or r["method"] not in methods]
        if old_rows:
            kept = sorted({(guest_of(r), int(r["mem_mb"])) for r in old_rows})
            old_notes = ([f"--merge: {len(old_rows)} rows (guest, M MB: "
                          f"{', '.join(f'{g} {k}' for g, k in kept)}) kept from an "
                          f"earlier run of this script on this machine: {gen.strip()}"] +
                         ["(earlier run) " + n.removeprefix("(earlier run) ")
                          for n in old_notes])
        else:
            old_notes = []

    def report(rows, extra=()):
        write_report(old_rows + rows, args, machine(), time.monotonic() - T0,
                     old_notes + notes + NOTES + list(extra))

    work = tempfile.mkdtemp(prefix="vcr-bench-mig-")
    rows, cl = [], None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    say(f"lab up (namespace {labkit.NS}); work dir {work}; methods {methods}; M {mems} MB")
    labkit.lab_up()
    try:
        cl = Cluster(build, work, args.debian_mb, mems[0], (args.volume_mb, args.volume_fill_mb))
        if cl.marker:
            MARKER_TEXT.append(cl.marker)
        host = SB[0][0]
        if GUEST.startswith("debian"):
            # Both image caches filled first, so that no run includes the image's fetch.
            t = time.monotonic()
            cl.create(SB[1][0])
            labkit.wait_for(f"{CT} to answer HTTP", serving, 120, interval=0.2)
            cl.destroy(SB[1][0])
            labkit.wait_for(f"{CT} gone from {SB[1][0]}", lambda: cl.where() is None, 60,
                            interval=0.2)
            say(f"  ct-nginx fetched and unpacked on {SB[1][0]} ({time.monotonic() - t:.1f}s)")
        cl.create(host)
        labkit.wait_for(f"{CT} to answer HTTP", serving, 120, interval=0.2)
        say(f"  container {CT} ({CT_ADDR}) serving on {host}")
        if GUEST == "debian-vol":
            cl.attach_data()
        for k in mems:
            say(f"point: M = {k} MB")
            for run in range(args.runs):
                for m in methods:
                    row = one_run(cl, m, k, run, host)
                    rows.append(row)
                    host = settle(cl, row["to"] if row["ok"] else row["from"])
            # After every point, so that an interrupted run still leaves its results.
            report(rows, ["partial: the run was still going when this was written"])
    except BaseException:
        report(rows, ["FAILED/INTERRUPTED run: only the points listed were measured"])
        raise
    finally:
        if cl:
            cl.stop()
        if not args.keep_lab:
            labkit.lab_down()
            say("lab down")
    report(rows)
    say(f"wrote {RESULTS}/migration.md, migration.csv, migration.png")
    print(open(os.path.join(RESULTS, "migration.md")).read())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
