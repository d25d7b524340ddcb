"""Self-fencing, end to end (docs/fencing.md): a host agent that loses the server for
fence_timeout_ms has its VMs killed by its fence watchdog, even when the agent itself is
frozen; an agent restart shorter than the timeout fences nothing."""
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


def start_agent(d, host, stop_vms_on_exit, tag):
    """Like Daemons.agent, with fence_timeout_ms set and a choice of --stop-vms-on-exit."""
    state = d.tmp / f"agent-{host}"
    state.mkdir(exist_ok=True)
    cfg = d.tmp / f"agent-{host}.yaml"
    name, index, address = VM
    labkit.write_agent_config(cfg, host, str(state), [labkit.vm_entry(name, index, address)])
    with open(cfg, "a") as f:
        f.write(f"fence_timeout_ms: {FENCE_MS}\n")
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
