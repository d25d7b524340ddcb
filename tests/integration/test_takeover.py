"""Address takeover (docs/recovery.md, "Address takeover"): a real TCG primary supervised
by a host agent, a standby VM running its warm LXC container (the ASan+UBSan standby
agent), the lab's BIND9; the service is `takeover: both`.

After kill -9 of the primary's QEMU the container takes the primary's address (after the
fence) and DNS moves too.  A client that holds the old address (it never re-resolves) is
served by the container; a connection opened to the primary before the failure is reset
when used (by the container's kernel: the address answers from there now) and a fresh
connection to the same address is served.  After `vcr failback` only the primary answers
ARP for its address again, and serves it.

The service is dual-stack: the container takes the primary's IPv6 address as well and
announces it by an unsolicited neighbour advertisement (sent by the standby agent from a
raw ICMPv6 socket): the lab namespace's neighbour entry for it, which held the primary's
MAC, holds the container's right after the recovery, with no IPv6 packet sent to the
address meanwhile; the container serves it; failback releases it (the container no
longer answers for it, even when sent its packets) and the primary serves it again."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import labkit
from conftest import cache_file

BOOT_TIMEOUT = 240
RECOVERY_TIMEOUT = 120
HEARTBEAT_MS, HOST_TIMEOUT_MS, FENCE_TIMEOUT_MS = 500, 5000, 6000
SB, SB_INDEX, SB_ADDR = "standby1", 6, "10.77.0.26"
WEB, WEB_INDEX, WEB_ADDR, CT_ADDR = "web7", 7, "10.77.0.17", "10.77.0.37"
WEB_ADDR6, CT_ADDR6 = "fd77::17", "fd77::37"
PRIMARY_MAC = f"52:54:00:77:00:{0x10 + WEB_INDEX:02x}"
CLIENTS = os.path.join(os.path.dirname(labkit.__file__), "clients.py")
PHASES = ["detected", "fenced", "container_ready", "port_open", "address_taken",
          "dns_updated", "client_confirmed"]


def arp_macs(address, count=3):
    """The MACs that answer a broadcast ARP request for address on the lab bridge (every
    host that claims it answers: busybox arping -b never goes unicast)."""
    env = labkit.lab_env()
    r = labkit.ns_run(["busybox", "arping", "-b", "-c", str(count), "-w", str(count + 1),
                       "-I", env["VCR_LAB_BRIDGE"], address], timeout=count + 10)
    return sorted(set(m.lower() for m in re.findall(r"\[([0-9A-Fa-f:]{17})\]", r.stdout)))


def answers(address, timeout=1.0):
    return (labkit.http_get(address, timeout=timeout) or "").strip() == WEB


def neigh_mac(address6):
    """The MAC the lab namespace's neighbour entry for address6 holds (None: no entry)."""
    r = labkit.ns_run(["ip", "-6", "neigh", "show", address6, "dev",
                       labkit.lab_env()["VCR_LAB_BRIDGE"]])
    m = re.search(r"lladdr ([0-9a-f:]{17})", r.stdout)
    return m.group(1) if m else None


def answers_at_mac(address6, mac):
    """Whether the host owning mac serves address6: the namespace's neighbour entry is
    pinned to mac for one request, so only that host's kernel can accept the packets."""
    br = labkit.lab_env()["VCR_LAB_BRIDGE"]
    labkit.ns_run(["ip", "-6", "neigh", "replace", address6, "lladdr", mac, "dev", br,
                   "nud", "permanent"])
    try:
        return answers(address6, timeout=1.5)
    finally:
        labkit.ns_run(["ip", "-6", "neigh", "del", address6, "dev", br])


class Rig:
    def __init__(self, d):
        self.d = d
        self.vcr = d.vcr

    def service(self):
        return next(s for s in self.vcr.json("services")["services"] if s["name"] == WEB)

    def wait_state(self, states, timeout=RECOVERY_TIMEOUT):
        states = {states} if isinstance(states, str) else set(states)
        return labkit.wait_for(f"service {WEB} in {sorted(states)}",
                               lambda: (lambda s: s if s["state"] in states else None)(
                                   self.service()), timeout, interval=0.2)

    def events(self, kind):
        out, since = [], 0
        while True:
            page = self.vcr.json("events", "--since", str(since), "--limit", "1000")["events"]
            if not page:
                return [e for e in out if e["kind"] == kind
                        and (e.get("detail") or {}).get("service") == WEB]
            out += page
            since = page[-1]["id"]


@pytest.fixture(scope="module")
def rig(lab, tmp_path_factory):
    from conftest import Daemons
    tmp = tmp_path_factory.mktemp("takeover")
    d = Daemons(tmp)
    r = Rig(d)
    try:
        env = labkit.lab_env()
        labkit.set_records({WEB: WEB_ADDR})
        svc = labkit.service_entry(WEB, "host1", WEB, WEB_ADDR, "warm", SB, f"{WEB}-c", CT_ADDR)
        svc["takeover"] = "both"
        svc["primary"]["address6"] = f"'{WEB_ADDR6}'"
        svc["standby"]["address6"] = f"'{CT_ADDR6}'"
        labkit.set_records({WEB: WEB_ADDR6})
        d.server(heartbeat_ms=HEARTBEAT_MS, host_timeout_ms=HOST_TIMEOUT_MS,
                 fence_timeout_ms=FENCE_TIMEOUT_MS, dns=True, services=[svc])
        sb = labkit.vm_entry(SB, SB_INDEX, SB_ADDR, memory_mb=384, vcpus=labkit.STANDBY_VCPUS,
                             extra_args="apparmor=0 vcr.role=standby "
                                        f"vcr.agent_server={env['VCR_LAB_BRIDGE_ADDR']}:"
                                        f"{labkit.SERVER_AGENT_PORT}")
        sb["image"]["initrd"] = cache_file(os.path.basename(labkit.standby_initrd()))
        d.agent("host1", [labkit.vm_entry(WEB, WEB_INDEX, WEB_ADDR, address6=WEB_ADDR6), sb])
        for name in (WEB, SB):
            d.wait_vm_state(name, "running", BOOT_TIMEOUT)
        labkit.wait_for(f"{WEB} to answer HTTP", lambda: answers(WEB_ADDR), BOOT_TIMEOUT,
                        interval=0.5)
        labkit.wait_for("the warm container running",
                        lambda: r.service()["standby"]["container_state"] == "running",
                        BOOT_TIMEOUT, interval=0.5)
        labkit.wait_for("the warm container to answer", lambda: answers(CT_ADDR), 60)
        labkit.wait_for(f"{WEB} to answer on {WEB_ADDR6}", lambda: answers(WEB_ADDR6), 60,
                        interval=0.5)
        labkit.wait_for("the warm container to answer on IPv6", lambda: answers(CT_ADDR6), 60,
                        interval=0.5)
        assert r.wait_state("ok", 30)["takeover"] == "both"
        yield r
    finally:
        reports = d.stop_all()
        assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_takeover_serves_held_address_and_resets_old_connections(rig, record_property):
    # Before: only the primary claims its address; the container claims only its own.
    primary_macs = arp_macs(WEB_ADDR)
    assert primary_macs == [PRIMARY_MAC], primary_macs
    ct_macs = arp_macs(CT_ADDR)
    assert len(ct_macs) == 1 and ct_macs != primary_macs, ct_macs
    # IPv6: the container does not serve the primary's address6 even when sent its
    # packets; the namespace's entry for it holds the primary's MAC (it just talked to it).
    assert not answers_at_mac(WEB_ADDR6, ct_macs[0])
    assert answers(WEB_ADDR6) and neigh_mac(WEB_ADDR6) == PRIMARY_MAC
    held = subprocess.Popen(labkit.in_ns([sys.executable, CLIENTS, "hold", WEB_ADDR]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "connected"
        assert answers(WEB_ADDR)  # the namespace's neighbour entry: the primary's MAC
        os.kill(rig.vcr.vm(WEB)["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        # A client that holds the address (a cached DNS answer): no re-resolve.
        labkit.wait_for(f"{WEB_ADDR} to answer again", lambda: answers(WEB_ADDR, timeout=0.5),
                        RECOVERY_TIMEOUT, interval=0.05)
        held_ms = int((time.monotonic() - t0) * 1000)
        s = rig.wait_state("recovered")
        # No IPv6 packet went to the address since the kill: only the container's
        # neighbour advertisement can have moved the entry to its MAC.
        ndisc_mac = neigh_mac(WEB_ADDR6)
        held.stdin.write("go\n")
        held.stdin.flush()
        res = json.loads(held.stdout.readline())
    finally:
        held.kill()
        held.wait()
    print(f"takeover: {WEB_ADDR} answered again {held_ms} ms after kill -9; held "
          f"connection: {res}")
    record_property("held_address_ms", held_ms)
    assert res["old"] == "reset", res
    assert res["fresh"] == "answer" and res["fresh_body"] == WEB, res
    # The answers come from the container: it alone claims the address now.
    assert arp_macs(WEB_ADDR) == ct_macs
    assert s["served_by"] == "standby" and s["address"] == CT_ADDR, s
    events = rig.events("recovery")
    assert [e["detail"]["phase"] for e in events] == PHASES, events
    taken = events[PHASES.index("address_taken")]["detail"]
    assert taken["address"] == WEB_ADDR and taken["container"] == f"{WEB}-c", taken
    assert labkit.dig(f"{WEB}.vcr.lab") == [CT_ADDR]
    # IPv6: the primary's address6 moved with it and was announced.
    assert taken.get("address6") == WEB_ADDR6, taken
    assert ndisc_mac == ct_macs[0], (ndisc_mac, ct_macs)
    assert answers(WEB_ADDR6) and answers_at_mac(WEB_ADDR6, ct_macs[0])
    assert labkit.dig(f"{WEB}.vcr.lab", rtype="AAAA") == [CT_ADDR6]
    port = events[PHASES.index("port_open")]["detail"]
    confirmed = events[PHASES.index("client_confirmed")]["detail"]
    assert port.get("address6") == CT_ADDR6, port
    assert confirmed.get("address6") == CT_ADDR6 and confirmed.get("answer6") == WEB, confirmed


def test_failback_releases_the_address_before_the_primary_answers(rig):
    r = rig.vcr.run("failback", WEB)
    assert r.returncode == 0, r.stderr
    s = rig.wait_state("ok", BOOT_TIMEOUT)
    assert s["served_by"] == "primary" and s["address"] == WEB_ADDR, s
    phases = [e["detail"]["phase"] for e in rig.events("failback")]
    assert phases[:3] == ["started", "address_released", "primary_started"], phases
    assert phases[-1] == "done", phases
    # Only the primary claims its address; the container kept running on its own.
    assert arp_macs(WEB_ADDR) == [PRIMARY_MAC]
    assert answers(WEB_ADDR) and answers(CT_ADDR)
    assert labkit.dig(f"{WEB}.vcr.lab") == [WEB_ADDR]
    # IPv6: the container holds the primary's address6 no more; the primary serves it
    # (the namespace's stale entry, the container's MAC, is dropped first: a client's
    # own kernel finds the primary at its next neighbour probe, docs/recovery.md).
    ct_mac = arp_macs(CT_ADDR)[0]
    assert not answers_at_mac(WEB_ADDR6, ct_mac)
    assert answers(WEB_ADDR6) and neigh_mac(WEB_ADDR6) == PRIMARY_MAC
    assert answers(CT_ADDR6)
    assert labkit.dig(f"{WEB}.vcr.lab", rtype="AAAA") == [WEB_ADDR6]
