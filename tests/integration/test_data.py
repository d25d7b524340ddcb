"""A service's data follows it (issue 9 item 4, docs/data.md), end to end on real QEMU:
a busybox primary `dat1` with a virtio-blk data volume (ext4 image owned by the host
agent), a standby VM running its warm container, the server copying the volume.

  1 while the primary runs, periodic copies (interval_s 10) reach the standby through a
    QMP drive-backup of the running VM: journal `data_copy`, method `drive-backup`; the
    primary's QEMU runs as the agent's qemu_user (vcr-qemu, -runas: /proc/PID/status),
    so it writes the copy through the descriptor the agent passed (add-fd), not by name
  2 a file written (and synced) in the primary's volume just before `kill -9` of its
    QEMU is served by the container from `path` after the recovery (the fresh copy of the
    volume as the VM left it); phases data_copied (source primary) and data_attached;
    the data age is 0 in the timeline and in `vcr services --json`
  3 failback: a file the container wrote under `path` is in the primary's volume once
    it serves again
  4 host failure (host1's agent and dat1's QEMU killed): the last periodic copy that
    reached the standby is attached; a file written before that copy is served; the
    data age is the detection time minus that copy's taken_ms

The container's `path` is /www/data: its busybox httpd serves the data as files.  A CGI
added to the container template (/www/cgi-bin/put) writes a file there.

Run it alone, in a namespace of its own (the lab's machine is shared):
  flock /tmp/vcr-lab.lock env VCR_LAB_NS=vcrdata VCR_LAB_CACHE=build/lab-cache \\
      VCR_IT_CACHE=build/lab-cache python3 -m pytest tests/integration/test_data.py
"""
import hashlib
import os
import pwd
import re
import signal
import stat
import subprocess
import time

import pytest

import labkit
from conftest import cache_file

BOOT_TIMEOUT = 300
RECOVERY_TIMEOUT = 180
VM, ADDR, TAP = "dat1", "10.77.0.11", 0
SB, SB_ADDR, SB_TAP = "standby1", "10.77.0.21", 2
CT, CT_ADDR = "dat1-c", "10.77.0.31"
PATH = "/www/data"

# In the container template: /cgi-bin/put?NAME&TEXT writes TEXT to PATH/NAME and syncs.
PUT_CGI = b"""#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
N=${QUERY_STRING%%&*}; T=${QUERY_STRING#*&}
case "$N" in ''|*/*|.*) echo "usage: put?NAME&TEXT"; exit 0 ;; esac
echo "$T" >/www/data/$N && sync && echo "put=$N"
"""


def fetch_bytes(address, path):
    """The body as bytes (a binary file), or None."""
    r = subprocess.run(labkit.in_ns(["curl", "-s", "-f", "-m", "10", f"http://{address}{path}"]),
                       capture_output=True, timeout=20)
    return r.stdout if r.returncode == 0 else None


def note(record_property, key, value):
    """A measurement: in the JUnit properties, and one JSON line in VCR_DATA_MEASURE."""
    import json
    record_property(key, value)
    with open(os.environ.get("VCR_DATA_MEASURE", "/tmp/vcr-data-measure.jsonl"), "a") as f:
        f.write(json.dumps({"t": time.time(), key: value}) + "\n")


def kv(text):
    return dict(re.findall(r"(\w+)=(\S+)", text or ""))


class Rig:
    def __init__(self, d):
        self.d = d
        self.vcr = d.vcr

    def service(self):
        return next(s for s in self.vcr.json("services")["services"] if s["name"] == VM)

    def events(self, kind, since=0):
        return [e for e in self.vcr.events(since) if e["kind"] == kind]

    def standby(self):
        return next((h for h in self.vcr.status()["hosts"]
                     if h["name"] == SB and h.get("role") == "standby"
                     and h["state"] == "connected"), None)


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("data")
    d = Daemons(tmp)
    r = Rig(d)
    try:
        env = labkit.lab_env()
        sb_initrd = tmp / "initrd-standby-put.img"
        tpl = "var/lib/vcr/templates/busybox/www/cgi-bin"
        labkit.initrd_with_files(cache_file("initrd-standby.img"), sb_initrd, {
            tpl: (stat.S_IFDIR | 0o755, None),
            f"{tpl}/put": (stat.S_IFREG | 0o755, PUT_CGI),
        })
        sb = labkit.vm_entry(SB, SB_TAP, SB_ADDR, memory_mb=384, vcpus=labkit.STANDBY_VCPUS,
                             extra_args="apparmor=0 vcr.role=standby "
                                        f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                        f"{labkit.SERVER_AGENT_PORT}")
        sb["image"]["initrd"] = str(sb_initrd)
        web = labkit.vm_entry(VM, TAP, ADDR)
        web["image"]["initrd"] = cache_file("initrd.img")
        svc = labkit.service_entry(VM, "host1", VM, ADDR, "warm", SB, CT, CT_ADDR)
        svc["data"] = {"volume": "data", "path": PATH, "interval_s": 10}
        r.server = d.server(heartbeat_ms=500, host_timeout_ms=5000, fence_timeout_ms=6000,
                            dns=True, services=[svc])
        # The standby VM on host2, so that host1 (the primary's) can fail alone.
        r.agents = {"host2": d.agent("host2", [sb])}
        # host1's config, with the volume appended to its VM (dat1).
        state = tmp / "agent-host1"
        state.mkdir(exist_ok=True)
        cfg = tmp / "agent-host1.yaml"
        labkit.write_agent_config(cfg, "host1", str(state), [web])
        with open(cfg, "a") as f:
            f.write("    volumes:\n"
                    f"      - {{name: data, size_mb: 16, image: {state}/data.img, "
                    "mount: /data, cache: none}\n")
        p = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"), "--config",
                         str(cfg), "--log-level", "debug", "--stop-vms-on-exit"],
                        str(tmp / "agent-host1.log"))
        d.procs.append(p)
        r.agents["host1"] = p
        for name in (VM, SB):
            d.wait_vm_state(name, "running", BOOT_TIMEOUT)
        labkit.wait_for("the primary's volume",
                        lambda: "mount=/data" in (labkit.http_get(ADDR, "/cgi-bin/volumes",
                                                                  timeout=2) or ""),
                        BOOT_TIMEOUT, interval=0.5)
        labkit.wait_for("the standby agent's hello", r.standby, BOOT_TIMEOUT, interval=0.5)
        labkit.wait_for("the warm container running",
                        lambda: r.service()["standby"]["container_state"] == "running",
                        RECOVERY_TIMEOUT, interval=0.5)
        labkit.wait_for("the service ok", lambda: r.service()["state"] == "ok", 60)
        yield r
    finally:
        reports = d.stop_all()
        assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_1_periodic_copies_of_the_running_primary(rig, record_property):
    user = pwd.getpwnam("vcr-qemu")
    vm = rig.d.wait_vm_state(VM, "running", 10)
    assert labkit.process_ids(vm["pid"]) == (user.pw_uid, user.pw_gid), vm
    def two_copies():
        ok = [e for e in rig.events("data_copy") if (e.get("detail") or {}).get("ok")]
        return ok[:2] if len(ok) >= 2 else None
    copies = labkit.wait_for("two data copies", two_copies, 120, interval=1)
    for c in copies:
        d = c["detail"]
        assert d["method"] == "drive-backup", d
        assert d["raw_bytes"] == 16 << 20, d
        assert 0 < d["bytes"] < d["raw_bytes"] // 4, d  # ext4 mostly zeros: gzip -1
        assert d["host"] == SB
        total = d["snapshot_ms"] + d["transfer_ms"] + d["install_ms"]
        note(record_property, f"copy_{c['id']}", f"{d['bytes']} B packed of {d['raw_bytes']} raw: "
                        f"snapshot {d['snapshot_ms']} ms, transfer {d['transfer_ms']} ms, "
                        f"install {d['install_ms']} ms, total {total} ms")
    # The interval holds: the second copy at least ~10 s after the first.
    t = [c["ts_ms"] for c in copies]
    assert t[1] - t[0] >= 9000, t
    last = rig.service()["data"]["last_copy"]
    assert last and last["method"] == "drive-backup"
    # The same QEMU made the copies: still that user's.
    assert rig.d.wait_vm_state(VM, "running", 10)["pid"] == vm["pid"]
    assert labkit.process_ids(vm["pid"]) == (user.pw_uid, user.pw_gid), vm


def test_2_file_written_before_kill9_is_served_by_the_container(rig, record_property):
    w = kv(labkit.http_get(ADDR, "/cgi-bin/writefile?/data/latest&1", timeout=60))
    assert "md5" in w, w
    pid = rig.vcr.vm(VM)["pid"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    labkit.wait_for("recovered", lambda: rig.service()["state"] == "recovered",
                    RECOVERY_TIMEOUT, interval=0.2)
    note(record_property, "kill_to_recovered_s", round(time.monotonic() - t0, 2))
    body = labkit.wait_for("the file from the container",
                           lambda: fetch_bytes(CT_ADDR, "/data/latest"), 30, interval=0.5)
    assert hashlib.md5(body).hexdigest() == w["md5"], (len(body), w)
    s = rig.service()
    phases = [e["phase"] for e in s["recovery"]["timeline"]]
    assert phases == ["detected", "fenced", "container_ready", "data_copied", "data_attached",
                      "port_open", "dns_updated", "client_confirmed"], phases
    tl = {e["phase"]: e for e in s["recovery"]["timeline"]}
    copied, attached = tl["data_copied"], tl["data_attached"]
    assert copied["source"] == "primary" and copied["method"] == "file", copied
    assert copied["taken_ms"] >= s["recovery"]["started_ms"]  # after the VM died
    assert attached["data_age_ms"] == 0 and attached["taken_ms"] == copied["taken_ms"]
    assert s["data"]["age_ms"] == 0
    table = rig.vcr.run("services").stdout
    assert f"{VM}: data `data` at {PATH}: last copy taken at" in table, table
    assert "age at the last recovery 0 ms" in table, table
    assert attached["path"] == PATH
    note(record_property, "data_copied", {k: copied[k] for k in ("bytes", "raw_bytes", "snapshot_ms",
                                                           "transfer_ms", "install_ms")})
    note(record_property, "data_attached_ms", attached.get("attach_ms"))
    note(record_property, "recovery_timeline", s["recovery"]["timeline"])


def test_3_failback_brings_the_containers_writes_back(rig, record_property):
    put = kv(labkit.http_get(CT_ADDR, "/cgi-bin/put?fromct&written-in-the-container",
                             timeout=30))
    assert put.get("put") == "fromct", put
    t0 = time.monotonic()
    r = rig.vcr.run("failback", VM, timeout=60)
    assert r.returncode == 0, r.stderr
    labkit.wait_for("back on the primary", lambda: rig.service()["state"] == "ok",
                    RECOVERY_TIMEOUT, interval=0.5)
    note(record_property, "failback_s", round(time.monotonic() - t0, 2))
    md5 = kv(labkit.http_get(ADDR, "/cgi-bin/md5?/data/fromct", timeout=30))
    want = hashlib.md5(b"written-in-the-container\n").hexdigest()
    assert md5.get("md5") == want, md5
    back = [e["detail"] for e in rig.events("failback") if e["detail"]["phase"] == "data_returned"]
    assert back, "no data_returned failback phase"
    note(record_property, "data_returned", back[-1])


def test_4_host_failure_uses_the_last_copy_on_the_standby(rig, record_property):
    labkit.wait_for("the service ok", lambda: rig.service()["state"] == "ok", 60)
    w = kv(labkit.http_get(ADDR, "/cgi-bin/writefile?/data/before-host&1", timeout=60))
    assert "md5" in w, w
    written_ms = labkit.now_ms()

    def copy_after_write():
        ok = [e["detail"] for e in rig.events("data_copy")
              if (e.get("detail") or {}).get("ok") and e["detail"]["taken_ms"] > written_ms]
        return ok[-1] if ok else None
    copy = labkit.wait_for("a periodic copy after the write", copy_after_write, 90, interval=0.5)
    pid = rig.vcr.vm(VM)["pid"]
    rig.agents["host1"].signal(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    labkit.wait_for("recovered", lambda: rig.service()["state"] == "recovered",
                    RECOVERY_TIMEOUT, interval=0.2)
    note(record_property, "host_failure_to_recovered_s", round(time.monotonic() - t0, 2))
    s = rig.service()
    tl = {e["phase"]: e for e in s["recovery"]["timeline"]}
    copied, attached = tl["data_copied"], tl["data_attached"]
    assert copied["source"] == "standby", copied
    # The last copy that reached the standby: the one seen above, or a later one.
    assert attached["taken_ms"] >= copy["taken_ms"], (attached, copy)
    detected = s["recovery"]["started_ms"]
    assert attached["data_age_ms"] == max(0, detected - attached["taken_ms"]), attached
    assert s["data"]["age_ms"] == attached["data_age_ms"]
    assert attached["data_age_ms"] > 0  # the copy predates the failure
    body = labkit.wait_for("the file from the container",
                           lambda: fetch_bytes(CT_ADDR, "/data/before-host"), 30, interval=0.5)
    assert hashlib.md5(body).hexdigest() == w["md5"]
    note(record_property, "host_failure_timeline", s["recovery"]["timeline"])
