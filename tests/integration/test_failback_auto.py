"""Automatic failback (docs/recovery.md, "Automatic failback") on real QEMU: a busybox
primary `fba1` with a warm container in a busybox standby VM, `failback: {mode: auto,
after_s: 3, min_interval_s: 600}`.

  1 kill -9 of the primary's QEMU: recovered onto the container; 3 s later, with the
    primary's host connected, the engine fails back by itself: the primary VM started
    again, its check passed, DNS back to it (journal `failback` auto_started ... done)
  2 kill -9 again at once: flapping, so automatic failback is suspended (auto_suspended,
    `failback.suspended` in `vcr services --json`); the service stays on the container
    well past after_s; the operator's `vcr failback` brings it back and re-enables it
"""
import os
import signal

import pytest

import labkit
from conftest import cache_file

BOOT_TIMEOUT = 300
RECOVERY_TIMEOUT = 180
VM, ADDR, TAP = "fba1", "10.77.0.11", 0
SB, SB_ADDR, SB_TAP = "standby1", "10.77.0.21", 2
CT, CT_ADDR = "fba1-c", "10.77.0.31"
AFTER_S = 3


class Rig:
    def __init__(self, d):
        self.d = d
        self.vcr = d.vcr

    def service(self):
        return next(s for s in self.vcr.json("services")["services"] if s["name"] == VM)

    def failback_phases(self, since=0):
        return [e["detail"]["phase"] for e in self.vcr.events(since) if e["kind"] == "failback"]

    def last_event(self):
        return max([e["id"] for e in self.vcr.json("events", "--limit", "1")["events"]] or [0])

    def wait_state(self, states, timeout=RECOVERY_TIMEOUT):
        return labkit.wait_for(f"service {VM} in {states}",
                               lambda: (lambda s: s if s["state"] in states else None)(
                                   self.service()), timeout, interval=0.2)

    def kill_primary(self):
        os.kill(self.vcr.vm(VM)["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("failback-auto")
    d = Daemons(tmp)
    r = Rig(d)
    try:
        env = labkit.lab_env()
        sb = labkit.vm_entry(SB, SB_TAP, SB_ADDR, memory_mb=384, vcpus=labkit.STANDBY_VCPUS,
                             extra_args="apparmor=0 vcr.role=standby "
                                        f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                        f"{labkit.SERVER_AGENT_PORT}")
        sb["image"]["initrd"] = cache_file("initrd-standby.img")
        web = labkit.vm_entry(VM, TAP, ADDR)
        web["image"]["initrd"] = cache_file("initrd.img")
        svc = labkit.service_entry(VM, "host1", VM, ADDR, "warm", SB, CT, CT_ADDR)
        svc["failback"] = {"mode": "auto", "after_s": AFTER_S, "min_interval_s": 600}
        d.server(heartbeat_ms=500, host_timeout_ms=5000, fence_timeout_ms=6000, dns=True,
                 services=[svc])
        d.agent("host1", [web, sb])
        for name in (VM, SB):
            d.wait_vm_state(name, "running", BOOT_TIMEOUT)
        labkit.wait_for("the warm container running",
                        lambda: r.service()["standby"]["container_state"] == "running",
                        RECOVERY_TIMEOUT, interval=0.5)
        labkit.wait_for("the service ok", lambda: r.service()["state"] == "ok", BOOT_TIMEOUT)
        yield r
    finally:
        reports = d.stop_all()
        assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_1_recovered_then_failed_back_by_itself(rig):
    s = rig.service()
    assert s["failback"] == {"mode": "auto", "after_s": AFTER_S, "min_interval_s": 600,
                             "suspended": False}, s["failback"]
    since = rig.last_event()
    rig.kill_primary()
    s = rig.wait_state(["recovered"])
    assert s["served_by"] == "standby"
    assert labkit.dig(f"{VM}.vcr.lab") == [CT_ADDR]
    # No operator: the engine starts the primary again and switches back.
    s = labkit.wait_for("the service back on its primary",
                        lambda: (lambda s: s if s["state"] == "ok" and s["served_by"] == "primary"
                                 else None)(rig.service()), BOOT_TIMEOUT, interval=0.5)
    phases = rig.failback_phases(since)
    assert phases[:2] == ["started", "auto_started"] and "primary_started" in phases \
        and phases[-1] == "done", phases
    assert labkit.dig(f"{VM}.vcr.lab") == [ADDR]
    assert labkit.http_get(ADDR, timeout=2) is not None
    assert rig.vcr.vm(VM)["state"] == "running"


def test_2_flapping_suspends_it_until_the_operator_fails_back(rig):
    since = rig.last_event()
    rig.kill_primary()
    rig.wait_state(["recovered"])
    labkit.wait_for("auto_suspended in the journal",
                    lambda: "auto_suspended" in rig.failback_phases(since), 30, interval=0.5)
    assert rig.service()["failback"]["suspended"] is True
    table = rig.vcr.run("services")
    assert "SUSPENDED" in table.stdout, table.stdout
    # Well past after_s: no automatic failback.
    with pytest.raises(labkit.Timeout):
        labkit.wait_for("an automatic failback (must not happen)",
                        lambda: "auto_started" in rig.failback_phases(since), AFTER_S + 7,
                        interval=0.5)
    assert rig.service()["state"] == "recovered"
    r = rig.vcr.run("failback", VM)
    assert r.returncode == 0, r.stderr
    labkit.wait_for("the service back on its primary",
                    lambda: rig.service()["state"] == "ok", BOOT_TIMEOUT, interval=0.5)
    assert "auto_resumed" in rig.failback_phases(since)
    assert rig.service()["failback"]["suspended"] is False
