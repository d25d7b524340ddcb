"""Warm restart (issue 4, docs/warm-restart.md), end to end in the lab: a TCG guest's
QEMU is replaced while its RAM stays in /dev/shm; the new QEMU starts beside the old one
before the guest is paused, so a QEMU that cannot start leaves every VM running in its
old QEMU, and so does one that fails while the device state goes into it; the guest's
counter, a file in its tmpfs and its HTTP address survive; a restarted agent re-adopts the new QEMU,
or takes over a restart it finds half done; nothing is left behind.  The same with the
RAM on hugetlbfs (`ram_dir`), whose pages are counted, reserved and given back."""
import contextlib
import glob
import gzip
import io
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile

import pytest

import labkit

VM, INDEX, ADDRESS = "web1", 0, "10.77.0.11"
# A second VM of host1, so that a host-wide warm restart has more than one to report.
VM2, INDEX2, ADDRESS2 = "web3", 4, "10.77.0.15"
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


def stash_vm_entry(tmp, name, index, address, memory_mb=256):
    """A lab VM whose initrd also has /cgi-bin/stash."""
    entry = labkit.vm_entry(name, index, address, memory_mb=memory_mb)
    initrd = tmp / "initrd-stash.img"
    if not initrd.exists():
        overlay_initrd(entry["image"]["initrd"], initrd)
    entry["image"]["initrd"] = str(initrd)
    return entry


@pytest.fixture(scope="module")
def warm(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("warm")
    d = Daemons(tmp)
    d.server(heartbeat_ms=500, host_timeout_ms=4000)  # fence after 5 s: margin on a loaded machine
    entries = [stash_vm_entry(tmp, VM, INDEX, ADDRESS), stash_vm_entry(tmp, VM2, INDEX2, ADDRESS2)]
    d.state_dir = tmp / f"agent-{HOST}"
    d.state_dir.mkdir()
    d.agent_cfg = tmp / f"agent-{HOST}.yaml"
    # The binaries the tests point warm restarts at: made before the agent starts and
    # put on its allowlist (docs/security.md); refused_qemu() is not on it.
    d.qemus = tmp / "qemus"
    d.qemus.mkdir()
    (d.qemus / "failing").mkdir()  # not beside other_qemu()'s ../lib and ../share
    d.failing = failing_qemus(d.qemus / "failing")
    (d.qemus / "refusing").mkdir()
    d.refusing = qemu_refusing_the_state(d.qemus / "refusing")
    allowed = ["/usr/bin/qemu-system-x86_64", other_qemu(d.qemus), str(d.refusing)] + [
        str(q) for q, _ in d.failing]
    labkit.write_agent_config(d.agent_cfg, HOST, str(d.state_dir), entries, "tcg",
                              qemu_allowed=allowed)
    d.agent_proc = start_agent(d, "agent")
    for vm, address in ((VM, ADDRESS), (VM2, ADDRESS2)):
        d.wait_vm_state(vm, "running", BOOT_TIMEOUT)
        labkit.wait_for(f"{vm} to answer HTTP",
                        lambda: (labkit.http_get(address) or "").strip() == vm, BOOT_TIMEOUT)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
    # Stopped with the agent (--stop-vms-on-exit): no RAM file, no state file is left,
    # nor the agent's directory for QEMU's user.
    assert not leftovers(d, include_ram=True)
    assert not os.path.exists(labkit.qemu_run_dir(HOST, d.state_dir))


def start_agent(d, name, test_faults=True, cfg=None):
    p = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"),
                     "--config", str(cfg or d.agent_cfg), "--log-level", "debug",
                     "--stop-vms-on-exit"] + (["--test-faults"] if test_faults else []),
                    str(d.tmp / f"{name}.log"))
    d.procs.append(p)
    return p


def state_dir_hash(state_dir):
    """The HASH in this agent's RAM file names (vm_state_dir_hash: FNV-1a)."""
    h = 2166136261
    for b in str(state_dir).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def own_ram(d, vm=VM):
    """This agent's RAM (and pmem) files of vm: vcr-HOST-VM-HASH*; other labs on the
    machine may run a host1/web1 of their own."""
    return glob.glob(f"/dev/shm/vcr-{HOST}-{vm}-{state_dir_hash(d.state_dir)}*")


def leftovers(d, include_ram=False):
    """State files, journals and an old QEMU's moved pid file or QMP socket."""
    found = [f for f in os.listdir(d.state_dir)
             if ".state" in f or ".warm" in f or ".old." in f]
    if include_ram:
        found += own_ram(d) + own_ram(d, VM2)
    return found


def guest(path, address=ADDRESS):
    return (labkit.http_get(address, path) or "").strip()


def counter(address=ADDRESS):
    return int(guest("/cgi-bin/counter", address))


def uptime(address=ADDRESS):
    return float(guest("/cgi-bin/uptime", address).split()[0])


def warm_restart(d, *args, vm=VM, host=HOST, timeout=120):
    r = d.vcr.run("vm", "warm-restart", vm, "--json", *args, timeout=timeout)
    out = json.loads(r.stdout)
    assert out["host"] == host and len(out["vms"]) == 1
    return r, out["vms"][0]


def assert_warm_restart_keeps_guest(d, vm, host, address, record_property=None):
    """Warm-restarts a running VM and checks that the guest went on: its counter
    and uptime did not go back, a file in its tmpfs and its address survive, the
    journal shows restarting then running, never crashed.  Returns the result."""
    labkit.wait_for("the counter to run", lambda: counter(address) > 5, 30)
    kept = f"kept-across-warm-restart-{vm}"
    assert guest(f"/cgi-bin/stash?{kept}", address) == kept
    before = d.vcr.vm(vm)
    c0, u0 = counter(address), uptime(address)
    since = d.vcr.last_event_id()

    r, e = warm_restart(d, vm=vm, host=host)
    assert r.returncode == 0, r.stderr
    assert e["ok"] is True and e["fallback"] is False and e["error"] is None
    assert e["state_bytes"] > 0
    # The guest's pause (stop -> cont) is the suspend (the device state moved into the
    # new QEMU) plus the resume (old QEMU killed, cont); the new QEMU's start-up came
    # before it.
    assert 0 < e["suspend_ms"] <= e["pause_ms"] and 0 < e["resume_ms"] <= e["pause_ms"]
    assert e["pause_ms"] <= e["suspend_ms"] + e["resume_ms"] + 50
    assert e["downtime_ms"] == e["pause_ms"] and e["launch_ms"] > 0
    for k in ("launch_ms", "pause_ms", "suspend_ms", "resume_ms", "state_bytes"):
        if record_property:
            record_property(k, e[k])
    print(f"warm restart {vm} {before['memory_mb']} MB: launch {e['launch_ms']:.1f} ms "
          f"(guest running), pause {e['pause_ms']:.1f} ms (suspend {e['suspend_ms']:.1f} ms, "
          f"resume {e['resume_ms']:.1f} ms), state {e['state_bytes']} bytes")

    after = d.wait_vm_state(vm, "running", 10)
    assert after["pid"] != before["pid"] and after["pid"] > 0
    # The guest went on: the counter continued and uptime did not go back.
    c1, u1 = counter(address), uptime(address)
    assert c1 >= c0, f"counter went from {c0} to {c1}: the guest was rebooted"
    assert u1 >= u0, f"uptime went from {u0} to {u1}"
    assert guest("/cgi-bin/stash", address) == kept
    assert guest("/", address) == vm
    # Journal: restarting, then running again; never crashed.
    events = [ev["detail"] for ev in d.vcr.events(since)
              if ev.get("vm") == vm and ev["kind"] == "vm_event"]
    states = [ev["state"] for ev in events]
    assert "restarting" in states and states[-1] == "running", states
    assert "crashed" not in states and "starting" not in states, states
    # The entry is journaled (kind warm_restart), which GET /metrics counts.
    entries = [ev["detail"] for ev in d.vcr.events(since)
               if ev.get("vm") == vm and ev["kind"] == "warm_restart"]
    assert [x["ok"] for x in entries] == [True] and entries[0]["pause_ms"] == e["pause_ms"], entries
    text = labkit.ns_run(labkit.api_curl("/metrics", extra=["-f"])).stdout
    assert 'vcr_warm_restarts_total{result="ok"} ' in text
    assert "vcr_warm_restart_pause_seconds_count " in text
    return e


def post_api(path, body):
    r = labkit.ns_run(labkit.api_curl(path, "POST", body, timeout=90), timeout=100)
    return json.loads(r.stdout)


qemu_ids = labkit.process_ids


def test_warm_restart_keeps_counter_tmpfs_file_and_address(warm, record_property):
    """docs/security.md ("Least privilege"): QEMU runs as the agent's qemu_user
    (-runas, default vcr-qemu), before and after the warm restart (whose new QEMU
    binds the migration socket as that user, in /run/vcr-qemu/HOST-HASH)."""
    user = pwd.getpwnam("vcr-qemu")
    before = warm.wait_vm_state(VM, "running", 10)
    assert qemu_ids(before["pid"]) == (user.pw_uid, user.pw_gid), before
    run_dir = os.stat(labkit.qemu_run_dir(HOST, warm.state_dir))
    assert (run_dir.st_uid, stat.S_IMODE(run_dir.st_mode)) == (user.pw_uid, 0o700)
    assert_warm_restart_keeps_guest(warm, VM, HOST, ADDRESS, record_property)
    after = warm.wait_vm_state(VM, "running", 10)
    assert after["pid"] != before["pid"]
    assert qemu_ids(after["pid"]) == (user.pw_uid, user.pw_gid), after
    assert not leftovers(warm)
    ram = own_ram(warm)
    assert len(ram) == 1
    vm = warm.vcr.vm(VM)
    assert vm["ram"] == ram[0] and vm["ram_backing"] == "tmpfs", vm


def other_qemu(root):
    """A copy of Debian's QEMU under root.  QEMU finds its modules and firmware
    relative to its binary (relocatable install: ../lib/..., ../share/qemu): the copy
    gets the same neighbours."""
    (root / "bin").mkdir()
    os.symlink("/usr/lib", root / "lib")
    os.symlink("/usr/share", root / "share")
    qemu = root / "bin" / "qemu-system-x86_64"
    shutil.copy2("/usr/bin/qemu-system-x86_64", qemu)
    os.chmod(qemu, 0o755)
    return str(qemu)


def refused_qemu(root):
    """A binary not on the agent's allowlist that would work (it runs the real QEMU)
    and leaves a mark if it is ever run: (path, mark)."""
    mark = root / "refused-qemu-ran"
    script = root / "refused" / "qemu-system-x86_64"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\ntouch {mark}\nexec /usr/bin/qemu-system-x86_64 \"$@\"\n")
    os.chmod(script, 0o755)
    return script, mark


def test_a_qemu_outside_the_allowlist_is_refused(warm):
    """docs/security.md ("Root actions"): a warm restart may only run a QEMU binary of
    the agent's allowlist, compared by real path: another one is refused before any
    process starts, the VM runs on in the same QEMU.  A link to an allowed binary is
    that binary."""
    qemu, mark = refused_qemu(warm.qemus)
    before = warm.wait_vm_state(VM, "running", 10)
    # The RAM file the new QEMU would map is the agent's own: made by it, 0600.
    ram = os.stat(own_ram(warm)[0])
    assert stat.S_IMODE(ram.st_mode) == 0o600 and ram.st_uid == os.geteuid(), oct(ram.st_mode)
    for path in (str(qemu), "/bin/sh"):
        r, e = warm_restart(warm, "--qemu", path)
        assert r.returncode != 0 and e["ok"] is False, (r.stdout, r.stderr)
        assert "is not an allowed QEMU binary" in e["error"], e
        assert "nothing was started" in e["error"] and "/usr/bin/qemu-system-x86_64" in e["error"]
        assert not mark.exists(), "the refused binary ran"
        v = warm.wait_vm_state(VM, "running", 10)
        assert v["pid"] == before["pid"] and v["qemu"] == before["qemu"], v
        assert [p for p, _ in qemu_pids_of_vm(warm)] == [before["pid"]]
    link = warm.qemus / "link-to-allowed"
    os.symlink(other_qemu_path(warm), link)
    r, e = warm_restart(warm, "--qemu", str(link))
    assert r.returncode == 0 and e["ok"] and e["qemu"] == other_qemu_path(warm), (r.stderr, e)
    r, e = warm_restart(warm, "--qemu", "/usr/bin/qemu-system-x86_64")
    assert r.returncode == 0 and e["ok"], r.stderr


def other_qemu_path(d):
    return str(d.qemus / "bin" / "qemu-system-x86_64")


def test_warm_restart_to_another_qemu_binary(warm):
    qemu = other_qemu_path(warm)
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


def realtime_threads(pid):
    """The threads of pid not under SCHED_OTHER: a warm restart's pause runs its QEMUs
    and the agent's thread under SCHED_FIFO (pause_boost.h), and must put them back."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if os.sched_getscheduler(int(tid)) != os.SCHED_OTHER:
                found.append(int(tid))
        except ProcessLookupError:
            pass
    return found


def test_host_warm_restart_reports_each_vm(warm):
    c0, c2 = counter(), counter(ADDRESS2)
    r = warm.vcr.run("host", "warm-restart", HOST, timeout=120)
    assert r.returncode == 0, r.stderr
    for vm in (VM, VM2):
        assert f"{vm}: warm restart done: pause " in r.stdout, r.stdout
    assert f"host {HOST}: 2 of 2 VMs warm-restarted" in r.stdout, r.stdout
    assert counter() >= c0 and counter(ADDRESS2) >= c2
    r = warm.vcr.run("host", "warm-restart", HOST, "--json", timeout=120)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["host"] == HOST
    assert sorted(v["vm"] for v in out["vms"]) == [VM, VM2]
    for e in out["vms"]:
        assert e["ok"] and e["pause_ms"] > 0 and e["launch_ms"] > 0, e
        print(f"host warm restart {e['vm']}: launch {e['launch_ms']:.1f} ms, "
              f"pause {e['pause_ms']:.1f} ms; steps {e['at_ms']}")
    # How the restarts fell (the agent's step times, one clock): each VM's steps in
    # order; every new QEMU greeted before any guest was paused (one request: the
    # server sent both orders at once); the pauses one after the other, never together.
    steps = ("order", "spawned", "ready", "listening", "gate", "stop", "migrated", "cont")
    ats = [e["at_ms"] for e in out["vms"]]
    for at in ats:
        assert all(at[a] > 0 and at[a] <= at[b] for a, b in zip(steps, steps[1:])), at
    assert max(at["ready"] for at in ats) <= min(at["stop"] for at in ats), ats
    first, second = sorted(ats, key=lambda at: at["stop"])
    assert first["cont"] <= second["gate"], ats
    # The pauses' boost is undone: the guests' new QEMUs and the agent run as before.
    for vm in (VM, VM2):
        pid = warm.wait_vm_state(vm, "running", 10)["pid"]
        assert realtime_threads(pid) == [], (vm, pid)
    assert realtime_threads(warm.agent_proc.pid) == []


def failing_qemus(tmp_path):
    """Binaries a warm restart may be pointed at that cannot start: (path, what the
    error must say).  Made once, before the agent starts (its allowlist)."""
    script = tmp_path / "qemu-exits-1"
    script.write_text("#!/bin/sh\necho 'this qemu refuses to start' >&2\nexit 1\n")
    os.chmod(script, 0o755)
    # Debian's QEMU copied elsewhere without its ../lib neighbours: it cannot load its
    # accelerator module and exits before its QMP greeting.
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "qemu-system-x86_64"
    shutil.copy2("/usr/bin/qemu-system-x86_64", copy)
    os.chmod(copy, 0o755)
    # One that never greets on QMP: killed after HOST_VM_WARM_LAUNCH_MS.
    hangs = tmp_path / "qemu-hangs"
    hangs.write_text("#!/bin/sh\nexec sleep 987\n")
    os.chmod(hangs, 0o755)
    return [(script, "this qemu refuses to start"), (copy, "could not load module"),
            (hangs, "no QMP greeting within 10000 ms")]


def sleepers():
    """Processes left by the hanging binary of failing_qemus()."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == b"sleep\x00987\x00":
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_host_warm_restart_to_a_qemu_that_cannot_start_keeps_every_vm(warm):
    """Issue 13 item 7: one bad --qemu must not take the host's VMs down.  The new QEMU
    is started before the old one is paused; it fails, so every guest goes on in the same
    QEMU (never paused, never booted cold) and each VM's result carries its own error."""
    vms = {VM: ADDRESS, VM2: ADDRESS2}
    for vm, address in vms.items():
        assert guest(f"/cgi-bin/stash?kept-{vm}", address) == f"kept-{vm}"
    for i, (qemu, says) in enumerate(warm.failing):
        pids = {vm: warm.wait_vm_state(vm, "running", 10)["pid"] for vm in vms}
        counters = {vm: counter(address) for vm, address in vms.items()}
        since = warm.vcr.last_event_id()
        json_out = i == 0
        r = warm.vcr.run("host", "warm-restart", HOST, "--qemu", str(qemu),
                         *(["--json"] if json_out else []), timeout=120)
        print(r.stdout, r.stderr)
        assert r.returncode == 1, (r.stdout, r.stderr)
        if json_out:
            out = json.loads(r.stdout)
            entries = {e["vm"]: e for e in out["vms"]}
            assert sorted(entries) == sorted(vms), out
            for vm, e in entries.items():
                assert e["ok"] is False and e["fallback"] is False, e
                assert says in e["error"] and "the old qemu runs on" in e["error"], e
                assert e["pause_ms"] == 0, e  # never paused
        else:
            for vm in vms:
                line = [ln for ln in r.stdout.splitlines() if ln.startswith(f"{vm}: ")]
                assert len(line) == 1, r.stdout
                assert "warm restart FAILED: " in line[0] and says in line[0], line
                assert "booted cold" not in line[0], line
            assert f"host {HOST}: 0 of 2 VMs warm-restarted" in r.stdout, r.stdout
        for vm, address in vms.items():
            v = warm.wait_vm_state(vm, "running", 10)
            assert v["pid"] == pids[vm], (vm, v)
            assert v["qemu"] == "/usr/bin/qemu-system-x86_64", v
            assert "never paused" in v["cause"], v
            assert [p for p, _ in qemu_pids_of_vm(warm, vm)] == [pids[vm]]
            # The guest went on: its in-memory counter continued, its tmpfs file is there.
            labkit.wait_for(f"{vm}'s counter to move on",
                            lambda: counter(address) > counters[vm], 10)
            assert guest("/cgi-bin/stash", address) == f"kept-{vm}"
            states = [ev["detail"]["state"] for ev in warm.vcr.events(since)
                      if ev.get("vm") == vm and ev["kind"] == "vm_event"]
            assert states and states[-1] == "running", states
            assert "starting" not in states and "crashed" not in states, states
        assert not leftovers(warm)
        assert len(own_ram(warm)) == 1 and len(own_ram(warm, VM2)) == 1
        assert not sleepers()


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


def qemu_refusing_the_state(directory):
    """A QEMU that starts, greets and listens, but whose machine lacks the guest's NIC:
    the old QEMU's device state (a virtio-net section) cannot be loaded into it, so it
    fails only after the old one was paused: the most dangerous moment to fail."""
    wrapper = directory / "qemu-without-nic"
    wrapper.write_text(
        "#!/usr/bin/python3\n"
        "import os, sys\n"
        "args, out = sys.argv[1:], []\n"
        "while args:\n"
        "    a = args.pop(0)\n"
        "    if a == '-device' and args and args[0].startswith('virtio-net-pci'):\n"
        "        args.pop(0)\n"
        "        continue\n"
        "    out.append(a)\n"
        "os.execv('/usr/bin/qemu-system-x86_64', ['qemu-system-x86_64'] + out)\n")
    os.chmod(wrapper, 0o755)
    return wrapper


def test_new_qemu_refusing_the_state_leaves_the_old_one_running(warm):
    """The new QEMU fails after `stop`, while the device state goes into it: the old
    QEMU, which was never killed, takes the guest up again (same pid, same memory,
    same address); the order fails, nothing is booted cold."""
    guest("/cgi-bin/stash?kept-by-the-old-qemu")
    before = warm.wait_vm_state(VM, "running", 10)
    c0, u0 = counter(), uptime()
    since = warm.vcr.last_event_id()
    r, e = warm_restart(warm, "--qemu", str(warm.refusing))
    print(r.stdout, r.stderr)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert e["ok"] is False and e["fallback"] is False, e
    assert "new qemu pid" in e["error"] and "the old qemu runs on" in e["error"], e
    assert e["pause_ms"] == 0 and e["launch_ms"] > 0, e
    vm = warm.wait_vm_state(VM, "running", 10)
    assert vm["pid"] == before["pid"], (before, vm)
    assert "warm restart abandoned" in vm["cause"] and "never paused" not in vm["cause"], vm
    assert [p for p, _ in qemu_pids_of_vm(warm)] == [before["pid"]]
    # Boosted for the pause, put back by the failure's path (pause_boost.h).
    assert realtime_threads(before["pid"]) == [] and realtime_threads(warm.agent_proc.pid) == []
    # The guest goes on in the old QEMU: answering, its counter moving, its memory kept.
    labkit.wait_for("the counter to move on", lambda: counter() > c0, 30)
    assert uptime() >= u0
    assert guest("/cgi-bin/stash") == "kept-by-the-old-qemu"
    assert guest("/") == VM
    events = [ev for ev in warm.vcr.events(since) if ev.get("vm") == VM]
    states = [ev["detail"]["state"] for ev in events if ev["kind"] == "vm_event"]
    assert states and states[-1] == "running", states
    assert "starting" not in states and "crashed" not in states, states
    # Journaled as a warm restart that failed; never a failure of the VM (it ran on).
    assert [ev["detail"]["ok"] for ev in events if ev["kind"] == "warm_restart"] == [False]
    assert "warm_restart_failed" not in [ev["kind"] for ev in events]
    assert not leftovers(warm)
    assert len(own_ram(warm)) == 1
    # And the next warm restart, to a good binary, works from there.
    r, e = warm_restart(warm)
    assert r.returncode == 0 and e["ok"], r.stderr


def qemu_pids_of_vm(d, vm=VM):
    """(pid, started with -incoming) of every live QEMU of vm of this agent (its QMP
    socket in d.state_dir: other labs on the machine may run a web1 of their own)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(
                a.endswith(f"{d.state_dir}/{vm}.qmp,server=on,wait=off".encode())
                for a in argv):
            found.append((int(pid), b"-incoming" in argv))
    return sorted(found)


def process_lives(pid):
    """Not gone, nor a zombie: a QEMU orphaned by a dead agent is reaped by PID 1,
    whenever that gets to it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("point,expect", [
    ("launched", "rolled back"),  # the new QEMU listens beside the old one, which runs the guest
    ("stopped", "rolled back"),   # old QEMU paused, its state on its way (the migration goes on)
    ("migrated", "rolled back"),  # old QEMU paused, the new one has the whole state, paused
    ("handed", "warm restart done"),  # old QEMU killed, the new one has the state, no `cont` yet
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
    # What the dead agent left behind is what the point says: the new QEMU (-incoming)
    # is up from `launched` on; the old one until it is killed at `handed`.
    left = labkit.wait_for("the QEMUs to settle", lambda: (
        lambda q: q if (point == "handed") == (old_pid not in [p for p, _ in q]) else None)(
            qemu_pids_of_vm(warm)), 10)
    pre = [pid for pid, incoming in left if pid != old_pid and incoming]
    assert len(pre) == 1, left
    names = os.listdir(warm.state_dir)
    if point == "handed":
        assert left == [(pre[0], True)], left
    else:
        assert sorted(pid for pid, _ in left) == sorted([old_pid, pre[0]]), left
    # The new QEMU has NAME.pid and NAME.qmp; the old one's were moved aside.
    assert {f"{VM}.old.pid", f"{VM}.old.qmp", f"{VM}.pid", f"{VM}.qmp"} <= set(names)
    assert f"{VM}.warm" in names, names
    assert f"{VM}.state" not in names, names  # the state goes through a socket, no file

    warm.agent_proc = start_agent(warm, f"agent-after-{point}")
    vm = labkit.wait_for(f"the new agent to take the restart over ({expect})", lambda: (
        lambda v: v if v["state"] == "running" and expect in (v["cause"] or "") else None)(
            warm.vcr.vm(VM)), 90)
    if expect == "rolled back":
        assert vm["pid"] == old_pid
    else:
        assert vm["pid"] == pre[0]  # the pre-launched QEMU had the whole state: resumed
    # Exactly one QEMU is left: the pre-launched one was killed (or, at `handed`,
    # resumed); its files are gone, the VM's are in place.
    assert [pid for pid, _ in qemu_pids_of_vm(warm)] == [vm["pid"]]
    assert not process_lives(pre[0]) or pre[0] == vm["pid"]
    # The dead agent's pause boost (SCHED_FIFO) does not outlive it: the QEMU that
    # runs the guest on is back to SCHED_OTHER (a guest spinning at a real-time
    # priority would starve the host's ordinary tasks).
    assert realtime_threads(vm["pid"]) == [], (point, vm["pid"])
    names = os.listdir(warm.state_dir)
    assert {f"{VM}.pid", f"{VM}.qmp"} <= set(names), names
    with open(warm.state_dir / f"{VM}.pid") as f:
        assert int(f.read()) == vm["pid"]
    # The guest went on: same memory, same processes, same address.
    labkit.wait_for("the guest to answer", lambda: guest("/") == VM, 30)
    assert counter() >= c0 and uptime() >= u0
    assert guest("/cgi-bin/stash") == f"survives-{point}"
    states = [ev["detail"]["state"] for ev in warm.vcr.events(since)
              if ev.get("vm") == VM and ev["kind"] == "vm_event"]
    assert "crashed" not in states and "starting" not in states, states
    assert not leftovers(warm)
    assert len(own_ram(warm)) == 1


def test_warm_restart_of_unknown_vm_exits_1_with_reason(warm):
    # A warm restart of a VM that is not running fails with exit 1 and the reason.
    r = warm.vcr.run("vm", "warm-restart", "no-such-vm", timeout=30)
    assert r.returncode == 1
    assert "no VM `no-such-vm`" in r.stderr or "no VM `no-such-vm`" in r.stdout


def test_fault_injection_is_refused_without_test_faults(warm):
    # Runs after the other host1 tests: it replaces the agent by one started without
    # --test-faults.
    pid = warm.vcr.vm(VM)["pid"]
    warm.agent_proc.signal(signal.SIGKILL)
    warm.agent_proc.popen.wait(10)
    warm.agent_proc = start_agent(warm, "agent-no-faults", test_faults=False)
    labkit.wait_for("the agent without --test-faults to adopt the VM", lambda: (
        warm.vcr.status()["hosts"][0]["agent_pid"] == warm.agent_proc.pid
        and warm.vcr.vm(VM)["state"] == "running"), 30)
    out = post_api(f"/v1/vms/{VM}/warm-restart", {"agent_exit_for_test": "stopped"})
    assert "--test-faults" in json.dumps(out), out
    # Refused before anything happened: same QEMU, still serving.
    assert warm.vcr.vm(VM)["pid"] == pid
    assert guest("/") == VM


# --- RAM on hugetlbfs (ram_dir) ------------------------------------------------------

HUGE_HOST, HUGE_VM, HUGE_INDEX, HUGE_ADDRESS = "host2", "web2", 1, "10.77.0.12"
HUGE_MB, PAGE_KB = 256, 2048
HUGE_PAGES = HUGE_MB * 1024 // PAGE_KB
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def hugepages():
    """HugePages_* of /proc/meminfo (the default 2 MB pool), and `available`: free
    pages nobody has reserved, what a new VM can have."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key.startswith("HugePages_"):
                out[key[len("HugePages_"):].lower()] = int(value.split()[0])
    out["available"] = out["free"] - out["rsvd"]
    return out


@pytest.fixture(scope="module")
def hugetlbfs(lab):
    """A hugetlbfs mount (2 MB pages) and a pool with room for one HUGE_MB VM plus a
    margin; both undone afterwards."""
    with open(NR_HUGEPAGES) as f:
        old = int(f.read())
    want = old + HUGE_PAGES + 16
    mount = tempfile.mkdtemp(prefix="vcr-hugetlbfs-")
    mounted = False
    try:
        with open("/proc/sys/vm/compact_memory", "w") as f:
            f.write("1")
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(want))
        total = hugepages()["total"]
        if total != want:
            pytest.skip(f"the kernel allocated {total} huge pages of {PAGE_KB} kB, not the "
                        f"{want} asked for in {NR_HUGEPAGES} (memory too fragmented?)")
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mount],
                       check=True)
        mounted = True
        yield mount
    finally:
        if mounted:
            subprocess.run(["umount", mount], check=True)
        os.rmdir(mount)
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(old))
        assert hugepages()["total"] == old


@contextlib.contextmanager
def agent_with_ram_dir(d, host, vms, ram_dir):
    """Another agent of the `warm` lab's server, with its VMs' RAM in ram_dir."""
    state = d.tmp / f"agent-{host}"
    state.mkdir(exist_ok=True)
    cfg = d.tmp / f"agent-{host}.yaml"
    labkit.write_agent_config(cfg, host, str(state), vms, "tcg", ram_dir=ram_dir)
    p = start_agent(d, f"agent-{host}", cfg=cfg)
    try:
        yield p
    finally:
        p.stop(timeout=30)


def ram_files(directory, host, vm):
    return glob.glob(f"{directory}/vcr-{host}-{vm}-*.ram")


def test_hugetlbfs_ram_survives_warm_restart_and_is_given_back(warm, hugetlbfs, tmp_path,
                                                                record_property):
    before = hugepages()
    entry = stash_vm_entry(warm.tmp, HUGE_VM, HUGE_INDEX, HUGE_ADDRESS, HUGE_MB)
    with agent_with_ram_dir(warm, HUGE_HOST, [entry], hugetlbfs) as agent:
        warm.wait_vm_state(HUGE_VM, "running", BOOT_TIMEOUT)
        labkit.wait_for(f"{HUGE_VM} to answer HTTP",
                        lambda: guest("/", HUGE_ADDRESS) == HUGE_VM, BOOT_TIMEOUT)
        files = ram_files(hugetlbfs, HUGE_HOST, HUGE_VM)
        assert len(files) == 1, files
        ram = files[0]
        fs = subprocess.run(["stat", "-f", "-c", "%T", ram], capture_output=True, text=True,
                            check=True).stdout.strip()
        assert fs == "hugetlbfs", f"{ram} is on {fs}"
        assert os.path.getsize(ram) == HUGE_MB << 20
        vm = warm.vcr.vm(HUGE_VM)
        assert vm["ram"] == ram and vm["ram_backing"] == "hugetlbfs", vm
        assert not glob.glob(f"/dev/shm/vcr-{HUGE_HOST}-{HUGE_VM}*")
        # The VM's pages are taken (touched) or reserved for its file: exactly its size.
        during = hugepages()
        print(f"huge pages before {before}, VM running {during}")
        assert before["available"] - during["available"] == HUGE_PAGES, (before, during)
        assert before["free"] > during["free"]
        assert f"RAM `{ram}` on hugetlbfs: {HUGE_PAGES} pages of {PAGE_KB} kB reserved" \
            in agent.log_text()

        inode = os.stat(ram).st_ino
        e = assert_warm_restart_keeps_guest(warm, HUGE_VM, HUGE_HOST, HUGE_ADDRESS)
        record_property("hugetlbfs_downtime_ms", e["downtime_ms"])
        # The same file, and no page more: the new QEMU mapped what the old one left.
        assert ram_files(hugetlbfs, HUGE_HOST, HUGE_VM) == [ram]
        assert os.stat(ram).st_ino == inode
        restarted = hugepages()
        print(f"huge pages after the warm restart {restarted}")
        assert restarted["available"] == during["available"], (during, restarted)

        r = warm.vcr.run("vm", "stop", HUGE_VM, timeout=60)
        assert r.returncode == 0, r.stderr
        warm.wait_vm_state(HUGE_VM, ["stopped", "shutdown"], 60)
        labkit.wait_for("the RAM file to go", lambda: not os.path.exists(ram), 10)
        after = labkit.wait_for("the huge pages to come back", lambda: (
            lambda h: h if h["available"] == before["available"]
            and h["free"] == before["free"] else None)(hugepages()), 10)
        print(f"huge pages after the VM stopped {after}")
    assert not os.listdir(hugetlbfs)


def test_hugetlbfs_vm_needing_more_pages_than_free_is_refused(warm, hugetlbfs):
    before = hugepages()
    free = before["available"]
    big_mb = (free + 8) * PAGE_KB // 1024
    vms = [labkit.vm_entry("big", 2, "10.77.0.13", memory_mb=big_mb),
           labkit.vm_entry("odd", 3, "10.77.0.14", memory_mb=65)]
    with agent_with_ram_dir(warm, "host3", vms, hugetlbfs):
        big = warm.wait_vm_state("big", "failed", 60)
        odd = warm.wait_vm_state("odd", "failed", 60)
        print(f"big: {big['cause']}\nodd: {odd['cause']}")
        assert (f"VM `big`: needs {free + 8} pages of {PAGE_KB} kB (memory_mb {big_mb}), "
                f"{free} free in `{hugetlbfs}`") in big["cause"], big["cause"]
        assert ("VM `odd`: memory_mb 65 is not a whole number of huge pages of 2048 kB "
                f"(ram_dir `{hugetlbfs}` is hugetlbfs); allowed: a multiple of 2 MB") \
            in odd["cause"], odd["cause"]
        # Refused before QEMU: no process, no file, no page taken.
        assert not big["pid"] and not odd["pid"]
        assert not (warm.tmp / "agent-host3" / "big.log").exists()
        assert not (warm.tmp / "agent-host3" / "odd.log").exists()
        assert not os.listdir(hugetlbfs)
        assert hugepages()["available"] == free


def test_ram_dir_on_another_filesystem_stops_the_agent(warm, tmp_path):
    # tmp_path is on the root filesystem: neither tmpfs nor hugetlbfs.
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                        text=True, check=True).stdout.strip()
    if fs in ("tmpfs", "hugetlbfs"):
        pytest.skip(f"{tmp_path} is on {fs}: no other filesystem to try")
    with agent_with_ram_dir(warm, "host4", [], str(tmp_path)) as agent:
        labkit.wait_for("the agent to exit", lambda: not agent.alive(), 15)
        assert agent.popen.returncode != 0
        text = agent.log_text()
        assert f"ram_dir: `{tmp_path}` is on a filesystem of type 0x" in text, text
        assert "allowed: a directory on tmpfs (e.g. /dev/shm) or hugetlbfs" in text, text
