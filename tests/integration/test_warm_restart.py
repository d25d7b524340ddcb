"""Warm restart (issue 4, docs/warm-restart.md), end to end in the lab: a TCG guest's
QEMU is replaced while its RAM stays in /dev/shm; the guest's counter, a file in its
tmpfs and its HTTP address survive; a corrupt state file falls back to a cold boot;
a restarted agent re-adopts the new QEMU; nothing is left behind."""
import glob
import gzip
import io
import json
import os
import shutil
import signal
import stat

import pytest

import labkit

VM, INDEX, ADDRESS = "web1", 0, "10.77.0.11"
HOST = "host1"
BOOT_TIMEOUT = 120

# /cgi-bin/stash?VALUE writes VALUE to /tmp/stash (the guest's tmpfs); /cgi-bin/stash
# reads it back.  It is appended to the lab initrd as a second cpio archive (the kernel
# unpacks concatenated archives in order; /init keeps what is in /www/cgi-bin), so the
# guest image itself needs no change.
STASH_CGI = b"""#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
[ -n "$QUERY_STRING" ] && echo "$QUERY_STRING" >/tmp/stash
cat /tmp/stash 2>/dev/null
"""


def cpio_newc(files):
    """A gzip'd newc cpio archive of {path: (mode, bytes)} (directories: data None)."""
    out = io.BytesIO()
    ino = 1
    for path, (mode, data) in list(files.items()) + [("TRAILER!!!", (0, b""))]:
        data = data or b""
        name = path.encode() + b"\0"
        hdr = b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        out.write(hdr + name)
        out.write(b"\0" * ((4 - (len(hdr) + len(name)) % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - len(data) % 4) % 4))
        ino += 1
    return gzip.compress(out.getvalue())


def overlay_initrd(base, path):
    with open(base, "rb") as f:
        blob = f.read()
    extra = cpio_newc({
        "www": (stat.S_IFDIR | 0o755, None),
        "www/cgi-bin": (stat.S_IFDIR | 0o755, None),
        "www/cgi-bin/stash": (stat.S_IFREG | 0o755, STASH_CGI),
    })
    with open(path, "wb") as f:
        f.write(blob + extra)


@pytest.fixture(scope="module")
def warm(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("warm")
    d = Daemons(tmp)
    d.server(heartbeat_ms=300, host_timeout_ms=1500)
    entry = labkit.vm_entry(VM, INDEX, ADDRESS, memory_mb=256)
    initrd = tmp / "initrd-stash.img"
    overlay_initrd(entry["image"]["initrd"], initrd)
    entry["image"]["initrd"] = str(initrd)
    d.state_dir = tmp / f"agent-{HOST}"
    d.state_dir.mkdir()
    d.agent_cfg = tmp / f"agent-{HOST}.yaml"
    labkit.write_agent_config(d.agent_cfg, HOST, str(d.state_dir), [entry], "tcg")
    d.agent_proc = start_agent(d, "agent")
    d.wait_vm_state(VM, "running", BOOT_TIMEOUT)
    labkit.wait_for("web1 to answer HTTP",
                    lambda: (labkit.http_get(ADDRESS) or "").strip() == VM, BOOT_TIMEOUT)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
    # Stopped with the agent (--stop-vms-on-exit): no RAM file, no state file is left.
    assert not leftovers(d, include_ram=True)


def start_agent(d, name, test_faults=True):
    p = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"),
                     "--config", str(d.agent_cfg), "--log-level", "debug",
                     "--stop-vms-on-exit"] + (["--test-faults"] if test_faults else []),
                    str(d.tmp / f"{name}.log"))
    d.procs.append(p)
    return p


def leftovers(d, include_ram=False):
    found = [f for f in os.listdir(d.state_dir) if ".state" in f or ".warm" in f]
    if include_ram:
        # The RAM file's name carries host and VM (vcr-HOST-VM[-...].ram).
        found += glob.glob(f"/dev/shm/vcr-{HOST}-{VM}*")
    return found


def guest(path):
    return (labkit.http_get(ADDRESS, path) or "").strip()


def counter():
    return int(guest("/cgi-bin/counter"))


def uptime():
    return float(guest("/cgi-bin/uptime").split()[0])


def warm_restart(d, *args, timeout=120):
    r = d.vcr.run("vm", "warm-restart", VM, "--json", *args, timeout=timeout)
    out = json.loads(r.stdout)
    assert out["host"] == HOST and len(out["vms"]) == 1
    return r, out["vms"][0]


def post_api(path, body):
    r = labkit.ns_run(["curl", "-s", "-m", "90", "-X", "POST", "-H",
                       "Content-Type: application/json", "-d", json.dumps(body),
                       f"http://{labkit.SERVER_API}{path}"], timeout=100)
    return json.loads(r.stdout)


def test_warm_restart_keeps_counter_tmpfs_file_and_address(warm, record_property):
    labkit.wait_for("the counter to run", lambda: counter() > 5, 30)
    assert guest("/cgi-bin/stash?kept-across-warm-restart") == "kept-across-warm-restart"
    before = warm.vcr.vm(VM)
    c0, u0 = counter(), uptime()
    since = warm.vcr.last_event_id()

    r, e = warm_restart(warm)
    assert r.returncode == 0, r.stderr
    assert e["ok"] is True and e["fallback"] is False and e["error"] is None
    assert e["state_bytes"] > 0
    assert 0 < e["suspend_ms"] <= e["downtime_ms"] and 0 < e["resume_ms"] <= e["downtime_ms"]
    for k in ("suspend_ms", "resume_ms", "downtime_ms", "state_bytes"):
        record_property(k, e[k])
    print(f"warm restart 256 MB: suspend {e['suspend_ms']:.1f} ms, resume "
          f"{e['resume_ms']:.1f} ms, downtime {e['downtime_ms']:.1f} ms, "
          f"state {e['state_bytes']} bytes")

    after = warm.wait_vm_state(VM, "running", 10)
    assert after["pid"] != before["pid"] and after["pid"] > 0
    # The guest went on: the counter continued and uptime did not go back.
    c1, u1 = counter(), uptime()
    assert c1 >= c0, f"counter went from {c0} to {c1}: the guest was rebooted"
    assert u1 >= u0, f"uptime went from {u0} to {u1}"
    assert guest("/cgi-bin/stash") == "kept-across-warm-restart"
    assert guest("/") == VM
    # Journal: restarting, then running again; never crashed.
    events = [ev["detail"] for ev in warm.vcr.events(since)
              if ev.get("vm") == VM and ev["kind"] == "vm_event"]
    states = [ev["state"] for ev in events]
    assert "restarting" in states and states[-1] == "running", states
    assert "crashed" not in states and "starting" not in states, states
    assert not leftovers(warm)
    assert len(glob.glob(f"/dev/shm/vcr-{HOST}-{VM}*")) == 1


def test_warm_restart_to_another_qemu_binary(warm, tmp_path):
    # QEMU finds its modules and firmware relative to its binary (relocatable
    # install: ../lib/..., ../share/qemu): give the copy the same neighbours.
    (tmp_path / "bin").mkdir()
    os.symlink("/usr/lib", tmp_path / "lib")
    os.symlink("/usr/share", tmp_path / "share")
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    shutil.copy2("/usr/bin/qemu-system-x86_64", qemu)
    os.chmod(qemu, 0o755)
    guest("/cgi-bin/stash?other-binary")
    c0 = counter()
    r, e = warm_restart(warm, "--qemu", str(qemu))
    assert r.returncode == 0, r.stderr
    assert e["ok"] and e["qemu"] == str(qemu)
    vm = labkit.wait_for("status to show the new binary",
                         lambda: (lambda v: v if v["qemu"] == str(qemu) else None)(
                             warm.vcr.vm(VM)), 10)
    assert vm["state"] == "running"
    assert os.readlink(f"/proc/{vm['pid']}/exe") == str(qemu)
    assert counter() >= c0 and guest("/cgi-bin/stash") == "other-binary"
    # Back to the configured binary, so that the copy can go.
    r, e = warm_restart(warm, "--qemu", "/usr/bin/qemu-system-x86_64")
    assert r.returncode == 0 and e["ok"], r.stderr


def test_host_warm_restart_reports_each_vm(warm):
    c0 = counter()
    r = warm.vcr.run("host", "warm-restart", HOST, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{VM}: warm restart done: suspend" in r.stdout
    assert counter() >= c0
    r = warm.vcr.run("host", "warm-restart", HOST, "--json", timeout=120)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["host"] == HOST
    assert [v["vm"] for v in out["vms"]] == [VM] and out["vms"][0]["ok"]


def test_agent_restart_readopts_after_warm_restart(warm):
    r, e = warm_restart(warm)
    assert r.returncode == 0, r.stderr
    vm = warm.wait_vm_state(VM, "running", 10)
    pid = vm["pid"]
    c0 = counter()
    # The agent dies hard: nothing of it runs; the VM must go on.
    warm.agent_proc.signal(signal.SIGKILL)
    warm.agent_proc.popen.wait(10)
    assert os.path.exists(f"/proc/{pid}")
    warm.agent_proc = start_agent(warm, "agent-2")
    vm = labkit.wait_for("the new agent to adopt the VM", lambda: (
        lambda v: v if v["state"] == "running" and "adopted" in (v["cause"] or "")
        or (v["state"] == "running" and v["pid"] == pid and v["host_state"] == "connected"
            and warm.vcr.status()["hosts"][0]["agent_pid"] == warm.agent_proc.pid)
        else None)(warm.vcr.vm(VM)), 30)
    assert vm["pid"] == pid
    assert counter() >= c0 and guest("/cgi-bin/stash")
    # The adopted QEMU can be warm-restarted again.
    r, e = warm_restart(warm)
    assert r.returncode == 0 and e["ok"], r.stderr


def test_corrupted_state_file_falls_back_to_cold_boot(warm):
    guest("/cgi-bin/stash?lost-on-cold-boot")
    labkit.wait_for("the counter to pass 50", lambda: counter() > 50, 60)
    u0 = uptime()
    since = warm.vcr.last_event_id()
    out = post_api(f"/v1/vms/{VM}/warm-restart", {"corrupt_state_for_test": True})
    e = out["vms"][0]
    assert e["ok"] is False and e["fallback"] is True
    assert "fails its checksum" in e["error"], e["error"]
    vm = warm.wait_vm_state(VM, "running", BOOT_TIMEOUT)
    starting = [ev["detail"]["cause"] for ev in warm.vcr.events(since)
                if ev.get("vm") == VM and ev["kind"] == "vm_event"
                and ev["detail"]["state"] == "starting"]
    assert starting and "cold boot after a failed warm restart" in starting[0], starting
    labkit.wait_for("web1 to answer HTTP after the cold boot",
                    lambda: guest("/") == VM, BOOT_TIMEOUT)
    assert uptime() < u0, "a cold boot starts the guest's uptime again"
    assert guest("/cgi-bin/stash") == ""
    assert not leftovers(warm)
    assert len(glob.glob(f"/dev/shm/vcr-{HOST}-{VM}*")) == 1
    # The server journaled the failed warm restart.
    kinds = [ev["kind"] for ev in warm.vcr.events(since) if ev.get("vm") == VM]
    assert "warm_restart_failed" in kinds


def qemu_pids_of_vm():
    """(pid, started with -incoming) of every live QEMU of VM on this machine."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(
                a.endswith(f"/{VM}.qmp,server=on,wait=off".encode()) for a in argv):
            found.append((int(pid), b"-incoming" in argv))
    return found


@pytest.mark.parametrize("point,expect", [
    ("stopped", "rolled back"),  # old QEMU paused, nothing saved yet
    ("sealed", "rolled back"),   # old QEMU paused, state saved and sealed
    ("quit", "warm restart done"),     # old QEMU gone, no new one yet
    ("spawned", "warm restart done"),  # new QEMU waiting with -incoming
])
def test_agent_killed_mid_warm_restart_is_taken_over(warm, point, expect):
    """The agent dies (SIGKILL, injected at POINT) in the middle of a warm restart; the
    next agent finishes it or rolls it back, and the guest keeps its memory either way."""
    guest(f"/cgi-bin/stash?survives-{point}")
    old_pid = warm.wait_vm_state(VM, "running", 10)["pid"]
    c0, u0 = counter(), uptime()
    since = warm.vcr.last_event_id()
    out = post_api(f"/v1/vms/{VM}/warm-restart", {"agent_exit_for_test": point})
    assert not out.get("vms", [{}])[0].get("ok"), out
    assert warm.agent_proc.popen.wait(30) == -signal.SIGKILL
    # What the dead agent left behind is what the point says.
    left = qemu_pids_of_vm()
    if point in ("stopped", "sealed"):
        assert left == [(old_pid, False)], left
    elif point == "quit":
        assert left == [], left
    else:
        assert len(left) == 1 and left[0][1] and left[0][0] != old_pid, left
    names = os.listdir(warm.state_dir)
    assert f"{VM}.warm" in names, names
    assert (f"{VM}.state" in names) == (point != "stopped"), names

    warm.agent_proc = start_agent(warm, f"agent-after-{point}")
    vm = labkit.wait_for(f"the new agent to take the restart over ({expect})", lambda: (
        lambda v: v if v["state"] == "running" and expect in (v["cause"] or "") else None)(
            warm.vcr.vm(VM)), 90)
    if expect == "rolled back":
        assert vm["pid"] == old_pid
    else:
        assert vm["pid"] != old_pid
    assert qemu_pids_of_vm() == [(vm["pid"], expect != "rolled back")]
    # The guest went on: same memory, same processes, same address.
    labkit.wait_for("the guest to answer", lambda: guest("/") == VM, 30)
    assert counter() >= c0 and uptime() >= u0
    assert guest("/cgi-bin/stash") == f"survives-{point}"
    states = [ev["detail"]["state"] for ev in warm.vcr.events(since)
              if ev.get("vm") == VM and ev["kind"] == "vm_event"]
    assert "crashed" not in states and "starting" not in states, states
    assert not leftovers(warm)
    assert len(glob.glob(f"/dev/shm/vcr-{HOST}-{VM}*")) == 1


def test_warm_restart_of_unknown_vm_exits_1_with_reason(warm):
    # A warm restart of a VM that is not running fails with exit 1 and the reason.
    r = warm.vcr.run("vm", "warm-restart", "no-such-vm", timeout=30)
    assert r.returncode == 1
    assert "no VM `no-such-vm`" in r.stderr or "no VM `no-such-vm`" in r.stdout


def test_fault_injection_is_refused_without_test_faults(warm):
    # Runs last: it replaces the agent by one started without --test-faults.
    pid = warm.vcr.vm(VM)["pid"]
    warm.agent_proc.signal(signal.SIGKILL)
    warm.agent_proc.popen.wait(10)
    warm.agent_proc = start_agent(warm, "agent-no-faults", test_faults=False)
    labkit.wait_for("the agent without --test-faults to adopt the VM", lambda: (
        warm.vcr.status()["hosts"][0]["agent_pid"] == warm.agent_proc.pid
        and warm.vcr.vm(VM)["state"] == "running"), 30)
    out = post_api(f"/v1/vms/{VM}/warm-restart", {"corrupt_state_for_test": True})
    assert "--test-faults" in json.dumps(out), out
    # Refused before anything happened: same QEMU, still serving.
    assert warm.vcr.vm(VM)["pid"] == pid
    assert guest("/") == VM
