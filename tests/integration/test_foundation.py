"""Foundation, end to end: real QEMU VMs (TCG) in the lab namespace, supervised by
vcr-agent over QMP and pidfd, reported to vcr-server, names served by BIND9."""
import os
import signal

import pytest

import labkit

VMS = [("web1", 0, "10.77.0.11"), ("web2", 1, "10.77.0.12")]
BOOT_TIMEOUT = 120  # two TCG guests booting on two shared cores


@pytest.fixture(scope="module")
def pair(lab, tmp_path_factory):
    from conftest import Daemons
    d = Daemons(tmp_path_factory.mktemp("pair"))
    d.server(heartbeat_ms=300, host_timeout_ms=1500)
    d.agent("host1", [labkit.vm_entry(n, i, a) for n, i, a in VMS])
    for name, _, address in VMS:
        d.wait_vm_state(name, "running", BOOT_TIMEOUT)
    for name, _, address in VMS:
        labkit.wait_for(f"{name} to answer HTTP",
                        lambda: (labkit.http_get(address) or "").strip() == name, BOOT_TIMEOUT)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_vms_answer_http_by_name(pair):
    for name, _, address in VMS:
        assert labkit.dig(f"{name}.vcr.lab") == [address]
        assert labkit.http_get(labkit.dig(f"{name}.vcr.lab")[0]).strip() == name


def test_status_shows_host_accel_and_vms(pair):
    status = pair.vcr.status()
    hosts = {h["name"]: h for h in status["hosts"]}
    assert hosts["host1"]["state"] == "connected"
    assert hosts["host1"]["accel"] == "tcg"
    vms = {v["name"]: v for v in hosts["host1"]["vms"]}
    assert set(vms) == {"web1", "web2"}
    assert all(v["state"] == "running" and v["pid"] > 0 for v in vms.values())
    table = pair.vcr.run("status")
    assert table.returncode == 0
    assert "host1" in table.stdout and "web1" in table.stdout and "running" in table.stdout


def test_cpu_samples_reach_the_server(pair):
    def sampled():
        v = pair.vcr.vm("web1")
        return v if v.get("rss_kb", 0) > 0 and v.get("sample_ts_ms", 0) > 0 else None
    v = labkit.wait_for("a CPU/RSS sample of web1", sampled, 10)
    assert 0 <= v["cpu_pct"] <= 100 * 64


def test_kill9_of_qemu_reaches_server_as_crash(pair, record_property):
    vm = pair.vcr.vm("web1")
    since = pair.vcr.last_event_id()
    killed_ms = labkit.now_ms()
    os.kill(vm["pid"], signal.SIGKILL)
    failed = pair.wait_vm_state("web1", "crashed", 10)
    assert "signal 9" in failed["cause"]
    events = [e for e in pair.vcr.events(since) if e.get("vm") == "web1"]
    crash = [e for e in events if e["kind"] == "vm_event" and e["detail"]["state"] == "crashed"]
    assert crash, f"no crashed vm_event in {events}"
    delay_ms = crash[0]["rx_ms"] - killed_ms
    record_property("kill9_to_server_ms", delay_ms)
    print(f"kill -9 -> server journal: {delay_ms} ms")
    assert delay_ms >= 0
    assert labkit.http_get("10.77.0.11", timeout=1) is None
    # The RAM file of a dead VM is removed: nothing of host1's web1 is left in /dev/shm
    # (shared with whatever else runs VMs on this machine: only this agent's name counts).
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("vcr-host1-web1-")]


def test_guest_poweroff_is_reported_as_shutdown_not_crash(pair):
    since = pair.vcr.last_event_id()
    labkit.http_get("10.77.0.12", "/cgi-bin/poweroff")
    vm = pair.wait_vm_state("web2", {"shutdown", "crashed"}, 30)
    assert vm["state"] == "shutdown", f"guest poweroff reported as {vm}"
    states = [e["detail"]["state"] for e in pair.vcr.events(since)
              if e.get("vm") == "web2" and e["kind"] == "vm_event"]
    assert "shutdown" in states and "crashed" not in states


def test_stopped_agent_makes_host_lost_then_back(pair):
    agent = pair.procs[-1]
    agent.signal(signal.SIGSTOP)
    try:
        labkit.wait_for("host1 lost", lambda: pair.vcr.status()["hosts"][0]["state"] == "lost",
                        10)
        # What a lost host's agent last said is not the present: its VMs are unknown.
        vms = pair.vcr.status()["hosts"][0]["vms"]
        assert vms and all(v["state"] == "unknown" for v in vms), vms
        assert {v["last_state"] for v in vms} <= {"running", "shutdown", "crashed"}, vms
    finally:
        agent.signal(signal.SIGCONT)
    labkit.wait_for("host1 up again", lambda: pair.vcr.status()["hosts"][0]["state"] == "connected",
                    10)
    vms = pair.vcr.status()["hosts"][0]["vms"]
    assert all(v["state"] == v["last_state"] for v in vms), vms
    kinds = [e["kind"] for e in pair.vcr.events()]
    assert "host_lost" in kinds


def test_accel_auto_probes_and_reports_choice(pair):
    # The pair's server (this module's): a second server could not bind its ports.
    daemons = pair
    # The probe may take longer than the agent's fence timeout (10 s) and the agent
    # calls the server only once it is done: its VM must not be self-fenced meanwhile.
    agent = daemons.agent("probe-host", [labkit.vm_entry("web3", 3, "10.77.0.13")],
                          accel="auto", probe_deadline_ms=12000)
    host = labkit.wait_for(
        "probe-host to report its accelerator",
        lambda: next((h for h in daemons.vcr.status()["hosts"] if h["name"] == "probe-host"),
                     None), 60)
    assert host["accel"] in ("kvm", "tcg")
    vm = daemons.wait_vm_state("web3", {"running", "crashed", "failed"}, 60)
    assert vm["state"] == "running", vm
    assert not (daemons.tmp / "agent-probe-host" / "fenced.json").exists()
    log = agent.log_text()
    assert "accel" in log and host["accel"] in log
    if not os.path.exists("/dev/kvm"):
        assert host["accel"] == "tcg"
