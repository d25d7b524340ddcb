"""Self-fencing, end to end (docs/fencing.md): a host agent that loses the server for
fence_timeout_ms has its VMs killed by its fence watchdog, even when the agent itself is
frozen; an agent restart shorter than the timeout fences nothing; a watchdog that was
stopped past its deadline kills on waking although its agent fed it meanwhile; a
respawned watchdog fires at its predecessor's deadline; the agent tells the server what
its self-fence is (armed, paused, off), and the server never switches a service whose
primary may still run because it counted on a self-fence that is off."""
import json
import os
import select
import signal
import time

import pytest

import labkit

FENCE_MS = 3000
HEARTBEAT_MS = 300
HOST_TIMEOUT_MS = 1500
VM = ("web1", 0, "10.77.0.11")


def start_agent(d, host, stop_vms_on_exit, tag, fence_ms=FENCE_MS):
    """Like Daemons.agent, with fence_timeout_ms set and a choice of --stop-vms-on-exit."""
    state = d.tmp / f"agent-{host}"
    state.mkdir(exist_ok=True)
    cfg = d.tmp / f"agent-{host}.yaml"
    name, index, address = VM
    labkit.write_agent_config(cfg, host, str(state), [labkit.vm_entry(name, index, address)])
    with open(cfg, "a") as f:
        f.write(f"fence_timeout_ms: {fence_ms}\n")
    argv = [os.path.join(d.build, "src", "agent", "vcr-agent"), "--config", str(cfg),
            "--log-level", "debug"]
    if stop_vms_on_exit:
        argv.append("--stop-vms-on-exit")
    p = labkit.Proc(argv, str(d.tmp / f"agent-{host}-{tag}.log"))
    d.procs.append(p)
    return p, state


def ended_within(pid, seconds):
    """Waits on the process's pidfd: True if it ended within seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([fd], [], [], seconds)
        return bool(r)
    finally:
        os.close(fd)


def booted(d, host):
    vm = d.wait_vm_state(VM[0], "running", 60)
    assert vm["host"] == host
    return vm["pid"]


def wait_self_fenced_report(d):
    def check():
        v = d.vcr.vm(VM[0])
        return v if v and v["state"] == "crashed" and "self-fenced" in (v.get("cause") or "") \
            else None
    return labkit.wait_for("the server to show web1 crashed (self-fenced)", check, 20)


def fence_and_measure(pid, record_property, label):
    t0 = time.monotonic()
    assert ended_within(pid, (FENCE_MS + 4000) / 1000), "the VM was not fenced"
    ms = (time.monotonic() - t0) * 1000
    record_property(label, round(ms))
    print(f"{label}: QEMU killed {ms:.0f} ms after the server contact stopped "
          f"(fence_timeout_ms {FENCE_MS})")
    # The last contact was at most one heartbeat before the stop.
    assert ms >= FENCE_MS - HEARTBEAT_MS - 100, f"fenced too early: {ms:.0f} ms"
    return ms


def check_fenced_file(state, pid):
    with open(state / "fenced.json") as f:
        doc = json.load(f)
    assert pid in doc["pids"]
    assert "no server contact" in doc["reason"]


@pytest.fixture
def fencing(daemons):
    # The server's own fence timeout is set so that its fence_after_ms (welcome) does not
    # lower the agent's FENCE_MS: this module measures the agent's configured timeout.
    daemons.server(heartbeat_ms=HEARTBEAT_MS, host_timeout_ms=HOST_TIMEOUT_MS,
                   fence_timeout_ms=FENCE_MS)
    return daemons


def test_stopped_agent_is_fenced_by_its_watchdog(fencing, record_property):
    d = fencing
    agent, state = start_agent(d, "fhost1", True, "a")
    pid = booted(d, "fhost1")
    agent.signal(signal.SIGSTOP)
    try:
        fence_and_measure(pid, record_property, "fence_ms_agent_sigstop")
        check_fenced_file(state, pid)
    finally:
        agent.signal(signal.SIGCONT)
    v = wait_self_fenced_report(d)
    assert f"{FENCE_MS}" in v["cause"] or "no server contact" in v["cause"]
    # Not autostarted again, by this agent.
    assert d.vcr.vm(VM[0])["state"] == "crashed"
    assert "killing 1 VM" in open(state / "fence-watchdog.log").read()


def test_silent_server_gets_the_vm_fenced(fencing, record_property):
    d = fencing
    server = d.procs[0]
    agent, state = start_agent(d, "fhost2", True, "a")
    pid = booted(d, "fhost2")
    server.signal(signal.SIGSTOP)
    try:
        fence_and_measure(pid, record_property, "fence_ms_server_sigstop")
        check_fenced_file(state, pid)
    finally:
        server.signal(signal.SIGCONT)
    wait_self_fenced_report(d)
    assert agent.alive()


def test_agent_restart_within_timeout_does_not_fence(fencing):
    d = fencing
    first, state = start_agent(d, "fhost3", False, "a")
    pid = booted(d, "fhost3")
    labkit.wait_for("the agent to feed its watchdog",
                    lambda: "fence watchdog started" in first.log_text(), 10)
    first.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    first.popen.wait(timeout=10)
    second, _ = start_agent(d, "fhost3", True, "b")
    labkit.wait_for("the new agent to re-attach to the watchdog",
                    lambda: "attached to the running one" in second.log_text(), 10)
    labkit.wait_for("the new agent's hello",
                    lambda: len([e for e in d.vcr.events() if e["kind"] == "hello"
                                 and e.get("host") == "fhost3"]) >= 2, 30)
    vm = d.wait_vm_state(VM[0], "running", 30)
    assert vm["pid"] == pid
    # Well past the fence timeout from the old agent's exit, the VM still runs.
    left = FENCE_MS / 1000 + 2 - (time.monotonic() - stopped_at)
    assert not ended_within(pid, max(left, 0.5)), "an agent restart fenced the VM"
    assert not os.path.exists(state / "fenced.json")

    # Then the whole host dies at once (agent, watchdog, QEMU: kill -9), the case
    # bench-hostfail times: the server declares it lost after host_timeout_ms of silence,
    # measured by the server itself from the last frame (its liveness tick runs every
    # 100 ms; a tick later than 1 s would be counted as the server's own stall).
    since = d.vcr.last_event_id()
    wds = watchdog_pids(state)
    assert wds, "no fence watchdog"
    for p in [second.pid] + wds + [pid]:
        os.kill(p, signal.SIGKILL)
    # A dead host's /dev/shm (a tmpfs) goes with it; here it is this machine's: what
    # the killed QEMU left there (its RAM file) goes now, as no agent of fhost3 returns.
    for f in os.listdir("/dev/shm"):
        if f.startswith("vcr-fhost3-"):
            os.unlink(os.path.join("/dev/shm", f))
    lost = labkit.wait_for("the server to declare fhost3 lost", lambda: next(
        (e for e in d.vcr.events(since) if e["kind"] == "host_lost"
         and e.get("host") == "fhost3"), None), 30)
    detail = lost["detail"]
    print(f"whole host killed: declared lost after {detail['silent_ms']} ms of silence "
          f"(host_timeout_ms {HOST_TIMEOUT_MS})")
    assert detail["host_timeout_ms"] == HOST_TIMEOUT_MS
    assert HOST_TIMEOUT_MS <= detail["silent_ms"] < HOST_TIMEOUT_MS + 1000, detail
    assert detail.get("reason") is None  # lost by silence, not cut off
    assert host_status(d, "fhost3")["state"] == "lost"


def watchdog_pids(state):
    """The fence watchdogs of this state dir (scanning /proc: the watchdog is in a session of
    its own, not the agent's child)."""
    want = b"--fence-watchdog\0" + str(state).encode() + b"\0"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if want in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def boot_ms():
    """CLOCK_BOOTTIME in ms: the watchdog's clock."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)


def start_boot_ms(pid):
    """When process pid started, CLOCK_BOOTTIME ms (/proc/PID/stat field 22, in ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return ticks * 1000 // os.sysconf("SC_CLK_TCK")


def ended_at(pid, seconds):
    """CLOCK_BOOTTIME ms at which pid ended, or None if it did not within seconds."""
    return boot_ms() if ended_within(pid, seconds) else None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def host_status(d, host):
    return next((h for h in d.vcr.status()["hosts"] if h["name"] == host), None)


def test_stopped_watchdog_past_its_deadline_kills_on_waking(fencing):
    """Stopped (SIGSTOP) past its deadline while the agent went on feeding it: on SIGCONT the
    deadline is checked before the queued feeds are read, so the VM is killed."""
    d = fencing
    agent, state = start_agent(d, "fhost4", True, "a")
    pid = booted(d, "fhost4")
    [wd] = labkit.wait_for("the fence watchdog", lambda: watchdog_pids(state), 10)
    os.kill(wd, signal.SIGSTOP)
    try:
        # Nothing kills the VM meanwhile; the agent is in contact and feeds all along.
        assert not ended_within(pid, (FENCE_MS + 1500) / 1000), "killed while stopped"
        assert host_status(d, "fhost4")["state"] == "connected"
    finally:
        os.kill(wd, signal.SIGCONT)
    assert ended_within(pid, 3), "the watchdog woke past its deadline and did not fence"
    check_fenced_file(state, pid)
    log = open(state / "fence-watchdog.log").read()
    assert "killing 1 VM" in log
    # The feeds read after the kill re-arm it: the host is in contact.
    assert "server contact is back" in log


def test_respawned_watchdog_fires_at_the_original_deadline(fencing, record_property):
    """The server gone, the watchdog killed (-9) when most of the timeout has passed: the
    agent respawns it, and the new one fires at the old deadline (it goes on from the
    contact its predecessor kept in fence-contact.json), not a whole timeout later."""
    d = fencing
    server = d.procs[0]
    agent, state = start_agent(d, "fhost5", True, "a")
    pid = booted(d, "fhost5")
    [wd] = labkit.wait_for("the fence watchdog", lambda: watchdog_pids(state), 10)
    server.signal(signal.SIGSTOP)
    try:
        stopped = boot_ms()
        assert not ended_within(pid, FENCE_MS * 0.6 / 1000)
        kept = read_json(state / "fence-contact.json")
        os.kill(wd, signal.SIGKILL)
        [new] = labkit.wait_for("the agent to respawn its watchdog",
                                lambda: [p for p in watchdog_pids(state) if p != wd], 10)
        respawned = start_boot_ms(new)
        died = ended_at(pid, (FENCE_MS + 4000) / 1000)
        assert died is not None, "the respawned watchdog did not fence"
    finally:
        server.signal(signal.SIGCONT)
    print(f"server stopped, watchdog respawned {respawned - stopped} ms later, VM killed "
          f"{died - stopped} ms after the stop (fence_timeout_ms {FENCE_MS})")
    assert died < respawned + FENCE_MS, "the respawned watchdog counted from its own start"
    # In order: last contact (kept), server stopped, respawn, kill at contact + timeout.
    assert kept, "no countdown kept in fence-contact.json"
    contact = kept["contact_ms"]
    record_property("respawn_after_contact_ms", respawned - contact)
    record_property("fenced_after_contact_ms", died - contact)
    print(f"last contact +0, server stopped +{stopped - contact} ms, respawned "
          f"+{respawned - contact} ms, VM killed +{died - contact} ms")
    assert contact <= stopped < respawned < died
    assert died >= contact + FENCE_MS - 50, "fenced before the deadline"
    check_fenced_file(state, pid)
    assert "going on with the countdown" in open(state / "fence-watchdog.log").read()


def test_agent_reports_its_watchdog_pause(fencing):
    """A pause asked of the watchdog directly reaches the server (self_fence message), and so
    does its end; `vcr status --json` shows it per host."""
    d = fencing
    agent, state = start_agent(d, "fhost6", True, "a")

    def watchdog_state(want):
        h = host_status(d, "fhost6")
        f = (h or {}).get("self_fence") or {}
        return f if f.get("watchdog") == want else None
    armed = labkit.wait_for("fhost6's self-fence armed", lambda: watchdog_state("armed"), 30)
    assert armed["timeout_ms"] == FENCE_MS
    exe = os.path.join(d.build, "src", "agent", "vcr-agent")
    r = labkit.ns_run([exe, "--fence-watchdog", str(state), "--pause", "600000"])
    assert r.returncode == 0, r.stderr
    paused = labkit.wait_for("fhost6's self-fence paused", lambda: watchdog_state("paused"), 10)
    assert 0 < paused["pause_ms"] <= 600000
    assert any(e["kind"] == "self_fence" and e["detail"]["watchdog"] == "paused"
               for e in d.vcr.events())
    r = labkit.ns_run([exe, "--fence-watchdog", str(state), "--pause", "0"])
    assert r.returncode == 0, r.stderr
    labkit.wait_for("fhost6's self-fence armed again", lambda: watchdog_state("armed"), 10)


def test_self_fence_off_and_kill_unanswered_is_not_switched(daemons):
    """fence_timeout_ms 0 on the agent, which stops answering (SIGSTOP) when the server orders
    vm_kill: nothing can be counted on to kill the VM, so web1 is not switched (the recovery
    stays at fencing and says why), for longer than the old rule (the kill's 5 s, then
    fence_timeout_ms) would have waited.  The agent back, the kill is confirmed."""
    d = daemons
    host_timeout, fence_timeout = 8000, 8000  # host lost only after the kill's 5 s deadline
    name, _, address = VM
    service = labkit.service_entry(name, "fhost7", name, address, "cold", "nosb", "web1-c",
                                   "10.77.0.31")
    d.server(heartbeat_ms=HEARTBEAT_MS, host_timeout_ms=host_timeout,
             fence_timeout_ms=fence_timeout, dns=True, services=[service])
    agent, state = start_agent(d, "fhost7", True, "a", fence_ms=0)
    pid = booted(d, "fhost7")
    labkit.wait_for("the record of web1 on its primary",
                    lambda: labkit.dig("web1.vcr.lab") == [address], 10)
    agent.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = d.vcr.run("failover", name)
        assert r.returncode == 0, r.stderr
        # Past the kill's 5 s deadline and fence_timeout_ms after it (when the server used to
        # count web1 fenced), with margin: the VM runs all along (its agent is stopped).
        left = 5 + fence_timeout / 1000 + 3 - (time.monotonic() - t0)
        assert not ended_within(pid, max(left, 0)), "the VM died while its agent was stopped"
        events = d.vcr.events()
        assert not [e for e in events if e["kind"] == "fenced"], "counted fenced: " + str(
            [e for e in events if e["kind"] in ("fenced", "recovery")])
        s = next(s for s in d.vcr.json("services")["services"] if s["name"] == name)
        assert s["state"] == "recovering" and s["served_by"] == "primary", s
        assert s["recovery"]["phase"] == "detected", s["recovery"]
        assert "not switched" in s["recovery"]["error"], s["recovery"]
        assert "self-fencing is off" in s["recovery"]["error"], s["recovery"]
        assert [e for e in events if e["kind"] == "fence_wait"
                and not e["detail"]["counted"]], events
        assert labkit.dig("web1.vcr.lab") == [address]
        assert host_status(d, "fhost7")["self_fence"]["watchdog"] == "off"
    finally:
        agent.signal(signal.SIGCONT)
    # Back: the kill it was ordered (or ordered again) is done and confirmed.
    assert ended_within(pid, 30), "the VM was not killed once its agent was back"
    fenced = labkit.wait_for("web1 fenced by a confirmed kill",
                             lambda: [e for e in d.vcr.events() if e["kind"] == "fenced"], 30)
    how = fenced[0]["detail"]["how"]
    assert "vm_kill" in how or "reported" in how, how
