"""The libvirt role (docs/agent.md, "The libvirt role"): vcr-agent-libvirt watching a
domain of a real libvirtd, which runs the lab's busybox guest under QEMU TCG on a tap of
the lab bridge.  libvirtd (and virtlogd, which its QEMU driver needs) are started here,
without systemd, inside the lab namespace, with their sockets and logs in the test's
temporary directory (system mode: the QEMU driver's own state stays in /run/libvirt).

One rig for the module; the scenarios run in file order and hand their state on:
  1 the agent reports the domain running, with samples (CPU, RSS from libvirt)
  2 `virsh destroy` -> the server sees `crashed` and recovers the service into a cold
    container of the standby VM (run by a host agent, as in test_recovery.py)
  3 the domain started again (`vcr vm start`: virDomainCreate); `vcr vm kill` (the
    fence order) destroys it: `stopped`
  4 libvirtd killed -> `unknown` (not crashed, no recovery); restarted -> read again
  5 a warm restart order is refused with code `unsupported`
  6 libvirtd stopped (SIGSTOP) past the agent's fence watchdog: the agent's calls to it
    miss their deadlines (the domain `unknown`), but its loop, heartbeats and session go
    on: the server never loses the host, the watchdog never fires, the QEMU lives; after
    SIGCONT the domain is `running` again, same QEMU, same boot
  7 `vcr vm stop` (virDomainShutdown, destroyed after the grace): `stopped`
  8 `vcr vm kill` (the fence) while a `vcr vm stop` waits out its grace: the kill
    overtakes the stop (not refused as busy), the domain is destroyed on order and the
    stop is answered too
  9 the self-fence: the server stopped (SIGSTOP) past the agent's fence watchdog: the
    watchdog kills the domain's QEMU itself, libvirt reports it, and the server, back,
    shows it `crashed` (self-fenced)

Scenario 2 runs the agent with samples every 60 s: the `crashed` event must reach the
server with no other libvirt call of the agent's to carry it (docs/agent.md, "Threads").

Needs libvirt-daemon-system (libvirtd, virtlogd, virsh) and a build with libvirt-dev
(vcr-agent-libvirt)."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import labkit
from conftest import cache_file

BOOT_TIMEOUT = 300
RECOVERY_TIMEOUT = 120
HEARTBEAT_MS, HOST_TIMEOUT_MS, FENCE_TIMEOUT_MS = 500, 5000, 6000
# The agent's own fence watchdog (docs/fencing.md): shorter than the server's host
# timeout, so that scenarios 6 and 8 hold their SIGSTOP past both in a few seconds.
AGENT_FENCE_MS = 4000
DOM, DOM_TAP, DOM_MAC, DOM_ADDR = "lvweb1", "tap10", "52:54:00:77:00:50", "10.77.0.50"
SB, SB_INDEX, SB_ADDR = "standby1", 11, "10.77.0.51"
SERVICE, CT, CT_ADDR = "lvweb", "lvweb-c", "10.77.0.52"
LV_HOST = "lvhost"


def domain_xml(tmp):
    env = labkit.lab_env()
    cmdline = (f"console=ttyS0 vcr.name={DOM} vcr.ip={DOM_ADDR}/24 "
               f"vcr.gw={env['VCR_LAB_BRIDGE_ADDR']} vcr.dns={env['VCR_LAB_DNS']}")
    # DAC label +0:+0 without relabelling: QEMU runs as root and the lab's kernel and
    # initrd keep their owners (libvirt would otherwise chown them to libvirt-qemu).
    return f"""<domain type='qemu'>
  <name>{DOM}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{env['VCR_LAB_KERNEL']}</kernel><initrd>{env['VCR_LAB_INITRD']}</initrd>
    <cmdline>{cmdline}</cmdline></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='ethernet'><target dev='{DOM_TAP}' managed='no'/>
      <mac address='{DOM_MAC}'/><model type='virtio'/></interface>
    <serial type='file'><source path='{tmp}/{DOM}.serial'/></serial>
    <video><model type='none'/></video>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>
"""


class Libvirtd:
    """virtlogd + libvirtd in the lab namespace; sockets, config and log under tmp."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sock_dir = tmp / "libvirt-sock"
        self.sock_dir.mkdir(exist_ok=True)
        self.conf = tmp / "libvirtd.conf"
        self.conf.write_text(
            f'unix_sock_dir = "{self.sock_dir}"\nlisten_tcp = 0\nlisten_tls = 0\n'
            'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            f'log_outputs = "3:file:{tmp}/libvirtd-debug.log"\n')
        self.uri = f"qemu:///system?socket={self.sock_dir}/libvirt-sock"
        self.virtlogd = None
        self.proc = None
        self.n = 0

    def start(self):
        if self.virtlogd is None or not self.virtlogd.alive():
            self.virtlogd = labkit.Proc(["virtlogd"], str(self.tmp / "virtlogd.log"))
        self.n += 1
        self.proc = labkit.Proc(["libvirtd", "--config", str(self.conf), "--pid-file",
                                 str(self.tmp / "libvirtd.pid")],
                                str(self.tmp / f"libvirtd-{self.n}.log"))
        labkit.wait_for("libvirtd answering", lambda: not self.proc.alive() or
                        self.virsh("version", check=False).returncode == 0, 120, interval=0.2)
        assert self.proc.alive(), self.proc.log_text()[-2000:]

    def virsh(self, *args, check=True):
        r = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True,
                           timeout=180)
        if check:
            assert r.returncode == 0, f"virsh {' '.join(args)}: {r.stderr}"
        return r

    def domstate(self):
        return self.virsh("domstate", DOM).stdout.strip()

    def stop(self):
        for p in (self.proc, self.virtlogd):
            if p is not None:
                p.stop(timeout=30)


def agent_config(path, state_dir, uri, sample_interval_ms=None):
    """The libvirt agent's file: the lab's PKI like any host agent, no `vms`."""
    labkit.write_agent_config(path, LV_HOST, str(state_dir), [], fence_timeout_ms=AGENT_FENCE_MS)
    lines = [x for x in path.read_text().splitlines() if x != "vms:"]
    if sample_interval_ms:
        lines = [f"sample_interval_ms: {sample_interval_ms}" if x.startswith("sample_interval_ms:")
                 else x for x in lines]
    lines += ["libvirt:", f"  uri: \"{uri}\"", f"  domains: [{DOM}]"]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    for tool in ("libvirtd", "virtlogd", "virsh"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}: install libvirt-daemon-system (scripts/install-deps)")
    tmp = tmp_path_factory.mktemp("libvirt")
    d = Daemons(tmp)
    exe = os.path.join(d.build, "src", "agent", "vcr-agent-libvirt")
    if not os.path.exists(exe):
        pytest.skip(f"no {exe}: build with libvirt-dev installed")
    lv = Libvirtd(tmp)
    r = type("Rig", (), {})()
    r.d, r.vcr, r.lv = d, d.vcr, lv
    try:
        lv.start()
        xml = tmp / f"{DOM}.xml"
        xml.write_text(domain_xml(tmp))
        lv.virsh("destroy", DOM, check=False)  # left by an aborted run
        lv.virsh("undefine", DOM, check=False)
        lv.virsh("define", str(xml))
        labkit.set_records({SERVICE: DOM_ADDR})
        env = labkit.lab_env()
        service = labkit.service_entry(SERVICE, LV_HOST, DOM, DOM_ADDR, "cold", SB, CT, CT_ADDR)
        d.server(heartbeat_ms=HEARTBEAT_MS, host_timeout_ms=HOST_TIMEOUT_MS,
                 fence_timeout_ms=FENCE_TIMEOUT_MS, dns=True, services=[service])
        sb = labkit.vm_entry(SB, SB_INDEX, SB_ADDR, memory_mb=384, vcpus=labkit.STANDBY_VCPUS,
                             extra_args="apparmor=0 vcr.role=standby "
                                        f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                        f"{labkit.SERVER_AGENT_PORT}")
        sb["image"]["initrd"] = cache_file(os.path.basename(labkit.standby_initrd()))
        d.agent("host1", [sb])
        lv.virsh("start", DOM)
        r.state = tmp / "agent-lvhost"
        r.state.mkdir()
        r.exe, r.tmp, r.runs = exe, tmp, 0
        r.server = d.procs[0]
        start_agent(r)
        d.wait_vm_state(DOM, "running", BOOT_TIMEOUT)
        labkit.wait_for(f"{DOM} to answer HTTP",
                        lambda: (labkit.http_get(DOM_ADDR) or "").strip() == DOM, BOOT_TIMEOUT,
                        interval=0.5)
        labkit.wait_for("the standby agent's hello", lambda: any(
            h["name"] == SB and h.get("role") == "standby" and h["state"] == "connected"
            for h in r.vcr.status()["hosts"]), BOOT_TIMEOUT, interval=0.5)
        yield r
    finally:
        reports = d.stop_all()
        lv.virsh("destroy", DOM, check=False)
        lv.virsh("undefine", DOM, check=False)
        lv.stop()
        assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def start_agent(r, sample_interval_ms=None):
    """(Re)starts the libvirt agent; a new log file each time (r.agent.log_text())."""
    if getattr(r, "agent", None) is not None:
        r.agent.stop()
        r.d.procs.remove(r.agent)
    r.runs += 1
    cfg = r.tmp / f"agent-lvhost-{r.runs}.yaml"
    agent_config(cfg, r.state, r.lv.uri, sample_interval_ms)
    r.agent = labkit.Proc([r.exe, "--config", str(cfg), "--role", "libvirt", "--log-level",
                           "debug"], str(r.tmp / f"agent-lvhost-{r.runs}.log"))
    r.d.procs.append(r.agent)


def qemu_alive(pid):
    """A process, not a zombie its parent (libvirtd) has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def qemu_pid():
    with open(f"/run/libvirt/qemu/{DOM}.pid") as f:
        return int(f.read())


def service(r):
    return next(s for s in r.vcr.json("services")["services"] if s["name"] == SERVICE)


def host(r):
    return next(h for h in r.vcr.status()["hosts"] if h["name"] == LV_HOST)


def test_1_reports_running_with_samples(rig):
    vm = rig.vcr.vm(DOM)
    assert vm["state"] == "running" and vm["host"] == LV_HOST, vm
    assert host(rig).get("role") == "host"
    pid = int(open(f"/run/libvirt/qemu/{DOM}.pid").read())
    assert vm.get("pid") == pid, (vm, pid)
    # A sample carries libvirt's RSS (balloon stats) and a CPU share from cpuTime deltas.
    got = labkit.wait_for("a sample with rss_kb", lambda: (lambda v: v if v.get("rss_kb")
                                                           else None)(rig.vcr.vm(DOM)), 30)
    assert 10_000 < got["rss_kb"] < 1_000_000, got
    assert got.get("cpu_pct") is not None and got["cpu_pct"] >= 0, got
    assert labkit.wait_for("service ok", lambda: service(rig)["state"] == "ok", 60)


def test_2_virsh_destroy_recovers_into_container(rig, record_property):
    # An agent that makes no libvirt call of its own (samples every 60 s): events must
    # come through libvirt's event thread alone.
    start_agent(rig, sample_interval_ms=60000)
    labkit.wait_for("the new agent to read the domain", lambda: (
        f"domain {DOM}: unknown -> running" in rig.agent.log_text()
        and host(rig)["state"] == "connected"), 30, interval=0.2)
    try:
        # A pause (not a failure for the server): the SUSPENDED event reaches the server
        # with no call of the agent's to libvirtd at all after its connect.
        rig.lv.virsh("suspend", DOM)
        try:
            labkit.wait_for("the server to see paused", lambda: rig.vcr.vm(DOM)["state"] ==
                            "paused", 30, interval=0.1)
        finally:
            rig.lv.virsh("resume", DOM)
        log = rig.agent.log_text()
        calls = [x for x in log.splitlines() if " debug libvirt: " in x
                 and " libvirt: event " not in x]
        assert calls == [calls[0]] and calls[0].endswith("libvirt: connect"), calls
        assert f"domain {DOM}: running -> paused" in log
        labkit.wait_for("running again", lambda: rig.vcr.vm(DOM)["state"] == "running", 30,
                        interval=0.1)
        t0 = time.monotonic()
        rig.lv.virsh("destroy", DOM)
        destroy_ms = round((time.monotonic() - t0) * 1000)
        record_property("virsh_destroy_ms", destroy_ms)
        print(f"virsh destroy took {destroy_ms} ms (libvirtd sends STOPPED at its end)")
        s = labkit.wait_for("recovered", lambda: (
            lambda x: x if x["state"] == "recovered" else None)(service(rig)),
            RECOVERY_TIMEOUT, interval=0.2)
        assert s["served_by"] == "standby" and s["address"] == CT_ADDR, s
        # Detected by whichever comes first: the STOPPED event, which libvirtd sends
        # once its destroy has finished (seen 2 s after QEMU died here, under TCG load),
        # or the service's failed probes (1.5 s). In the first case the VM is `crashed`,
        # destroyed outside the agent; in the second the server's fence (vm_kill) reaches
        # the domain while libvirtd destroys it, and the agent reports it stopped on that
        # order, which is a success of the fence (docs/agent.md).
        cause = s["recovery"]["cause"]
        vm = rig.vcr.vm(DOM)
        if "crashed" in cause:
            assert vm["state"] == "crashed" and "destroyed outside vcr-agent" in vm["cause"], vm
        else:
            assert "probe failures" in cause, s["recovery"]
            assert vm["state"] in ("crashed", "stopped"), vm
    finally:
        start_agent(rig)
    assert labkit.dig(f"{SERVICE}.vcr.lab") == [CT_ADDR]
    assert (labkit.http_get(CT_ADDR) or "").strip() == SERVICE
    assert labkit.http_get(DOM_ADDR, timeout=1) is None


def start_on_order(rig):
    """Through the server (vm_start -> virDomainCreate): a primary started behind its back
    while its service is on the standby is fenced at once (vm_kill), and the server
    refuses `vcr vm start` then (HTTP 409): `vcr failback` starts it and moves back."""
    if service(rig)["served_by"] != "standby":
        r = rig.vcr.run("vm", "start", DOM)
        if r.returncode == 0:
            return
        # The primary went down before (a kill of the previous test) and its recovery
        # began after the check above: the server refuses the start and says why.
        assert "vcr failback" in r.stderr, r.stderr
        labkit.wait_for("recovered", lambda: service(rig)["state"] == "recovered",
                        RECOVERY_TIMEOUT, interval=0.2)
    r = rig.vcr.run("failback", SERVICE, timeout=RECOVERY_TIMEOUT)
    assert r.returncode == 0, r.stderr
    labkit.wait_for("served by the primary again", lambda: (
        lambda x: x["state"] == "ok" and x["served_by"] == "primary")(service(rig)),
        RECOVERY_TIMEOUT, interval=0.2)


def test_3_fence_order_destroys_domain(rig):
    start_on_order(rig)
    labkit.wait_for("running again", lambda: rig.vcr.vm(DOM)["state"] == "running", 60,
                    interval=0.2)
    r = rig.vcr.run("vm", "kill", DOM)
    assert r.returncode == 0, r.stderr
    assert rig.lv.domstate() == "shut off"
    vm = labkit.wait_for("stopped", lambda: (lambda v: v if v["state"] == "stopped" else None)(
        rig.vcr.vm(DOM)), 30, interval=0.1)
    assert "destroyed on order" in vm["cause"], vm
    # Already down: the fence holds, and the order says so.
    assert rig.vcr.run("vm", "kill", DOM).returncode == 0


def test_4_libvirtd_restart_is_unknown_not_crashed(rig):
    start_on_order(rig)
    labkit.wait_for("running", lambda: rig.vcr.vm(DOM)["state"] == "running", 60, interval=0.2)
    rig.lv.proc.signal(signal.SIGKILL)
    rig.lv.proc.popen.wait(10)
    vm = labkit.wait_for("unknown", lambda: (lambda v: v if v["state"] == "unknown" else None)(
        rig.vcr.vm(DOM)), 30, interval=0.1)
    assert "unreachable" in vm["cause"], vm
    rig.lv.start()
    labkit.wait_for("running after libvirtd is back", lambda: rig.vcr.vm(DOM)["state"] ==
                    "running", 60, interval=0.2)
    assert rig.lv.domstate() == "running"


def test_5_warm_restart_refused(rig):
    r = rig.vcr.run("vm", "warm-restart", DOM)
    assert "not supported by the libvirt role" in (r.stderr + r.stdout), r


def hellos(r):
    return len([e for e in r.vcr.events() if e["kind"] == "hello" and e.get("host") == LV_HOST])


def test_6_hung_libvirtd_does_not_stop_the_agent(rig):
    labkit.wait_for("running", lambda: rig.vcr.vm(DOM)["state"] == "running", 60, interval=0.2)
    pid, n_hello = qemu_pid(), hellos(rig)
    hold_s = AGENT_FENCE_MS / 1000 + 3  # past the watchdog and the server's host timeout
    seen = set()
    rig.lv.proc.signal(signal.SIGSTOP)
    try:
        end = time.monotonic() + hold_s
        while time.monotonic() < end:  # what must hold all along the stop
            assert host(rig)["state"] == "connected", host(rig)
            assert qemu_alive(pid), "the QEMU was killed while libvirtd was stopped"
            vm = rig.vcr.vm(DOM)
            seen.add((vm["state"], vm["cause"]))
            time.sleep(0.2)
    finally:
        rig.lv.proc.signal(signal.SIGCONT)
    # The calls that libvirtd left unanswered were reported: the domain `unknown`.
    assert any(st == "unknown" and ("did not answer" in c or "unreachable" in c)
               for st, c in seen), seen
    vm = labkit.wait_for("running after SIGCONT", lambda: (
        lambda v: v if v["state"] == "running" else None)(rig.vcr.vm(DOM)), 60, interval=0.2)
    assert vm["pid"] == pid, vm  # the same QEMU, seen again: not a new boot
    assert hellos(rig) == n_hello, "the agent's session was lost"
    assert not os.path.exists(rig.state / "fenced.json")
    assert "did not answer within" in rig.agent.log_text()


def test_7_vm_stop(rig):
    labkit.wait_for("running", lambda: rig.vcr.vm(DOM)["state"] == "running", 60, interval=0.2)
    r = rig.vcr.run("vm", "stop", DOM, timeout=60)
    assert r.returncode == 0, r.stderr
    assert rig.lv.domstate() == "shut off"
    vm = labkit.wait_for("stopped", lambda: (lambda v: v if v["state"] == "stopped" else None)(
        rig.vcr.vm(DOM)), 30, interval=0.1)
    # The busybox guest does not shut down on request: the domain is destroyed, at once
    # if libvirt refuses the request, else after the grace; a guest that obeys is
    # `shut down on order`.
    assert "on order" in vm["cause"], vm
    # An operator's stop is maintenance from the order on (docs/recovery.md, "The
    # primary's life"): libvirtd reports the destroy only once it has cleaned up (1.8 s
    # here), after the service's probes (1.5 s) failed; no recovery may start.
    labkit.wait_for("service stopped (maintenance)", lambda: service(rig)["state"] == "stopped",
                    RECOVERY_TIMEOUT, interval=0.2)
    assert service(rig)["state"] == "stopped"


def test_8_kill_overtakes_stop(rig):
    """The domain has ACPI, which the busybox guest ignores: a stop waits out its grace.
    A fence sent meanwhile must not be refused as busy with the stop (a recovery's fence
    would fail and the service end `failed`)."""
    start_on_order(rig)
    labkit.wait_for("running", lambda: rig.vcr.vm(DOM)["state"] == "running", 60, interval=0.2)
    log_from = len(rig.agent.log_text())
    stop = subprocess.Popen(labkit.in_ns(rig.vcr.argv("vm", "stop", DOM)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The agent's worker has taken the stop: it is running or in its grace.
        labkit.wait_for("the agent's vm_stop job", lambda: f"libvirt: vm_stop {DOM}" in
                        rig.agent.log_text()[log_from:], 30, interval=0.05)
        r = rig.vcr.run("vm", "kill", DOM, timeout=30)
        assert r.returncode == 0, r.stderr
        assert rig.lv.domstate() == "shut off"
        _, err = stop.communicate(timeout=60)
        assert stop.returncode == 0, err
    finally:
        if stop.poll() is None:
            stop.kill()
            stop.wait()
    vm = labkit.wait_for("stopped", lambda: (lambda v: v if v["state"] == "stopped" else None)(
        rig.vcr.vm(DOM)), 30, interval=0.1)
    assert "destroyed on order" in vm["cause"], vm


def test_9_self_fence_destroys_the_domain(rig):
    start_on_order(rig)
    labkit.wait_for("running", lambda: rig.vcr.vm(DOM)["state"] == "running", 60, interval=0.2)
    pid = qemu_pid()
    rig.server.signal(signal.SIGSTOP)
    try:
        labkit.wait_for("the agent's watchdog to kill the QEMU", lambda: not qemu_alive(pid),
                        AGENT_FENCE_MS / 1000 + 10, interval=0.1)
        labkit.wait_for("libvirt to see it shut off", lambda: rig.lv.domstate() == "shut off",
                        10, interval=0.2)
    finally:
        rig.server.signal(signal.SIGCONT)
    with open(rig.state / "fenced.json") as f:
        assert pid in json.load(f)["pids"]
    vm = labkit.wait_for("the server to show it self-fenced", lambda: (
        lambda v: v if v["state"] == "crashed" and "self-fenced" in v["cause"] else None)(
        rig.vcr.vm(DOM)), 30, interval=0.2)
    assert "no server contact" in vm["cause"], vm
