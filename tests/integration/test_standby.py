"""Standby role, end to end: a standby VM (initrd-standby.img: LXC 5.0.2 in a TCG
guest) booted by the host agent runs the liblxc-linked vcr-agent --role standby,
which says hello to the server; containers are created, started, stopped and
destroyed through the server's API (vcr container ...), answer HTTP on their own
lab address, and their CPU/memory come back in samples.

Image: `make image` (lab/build-image --standby --standby-agent BUILD/src/agent/vcr-agent)."""
import json
import threading
import time

import pytest

import labkit

VM, VM_INDEX, VM_ADDR = "sb21", 0, "10.77.0.21"
CT, SERVICE, CT_ADDR = "web1ct", "web1", "10.77.0.31"
# The unprivileged container (docs/security.md, "Standby containers").
CT2, SERVICE2, CT2_ADDR = "web2ct", "web2", "10.77.0.37"
# Capabilities an unprivileged container runs without: their bits in CapEff
# (linux/capability.h).
DROPPED = {"sys_module": 16, "sys_rawio": 17, "sys_admin": 21, "sys_boot": 22, "sys_time": 25,
           "mac_override": 32, "mac_admin": 33}
VM_ROOT_MAP = "0 0 4294967295"  # uid_map of a process in the VM's own user namespace
BOOT_TIMEOUT = 300  # TCG: a standby guest copies its initramfs, then LXC checks


def standby_vm():
    vm = labkit.standby_vm_entry(VM, VM_INDEX, VM_ADDR, extra_args="vcr.agent_test_faults=1")
    if vm is None:
        pytest.skip(f"no {labkit.standby_initrd()}: run `make image-asan`")
    return vm


def standby_host(d):
    return next((h for h in d.vcr.status()["hosts"]
                 if h["name"] == VM and h.get("role") == "standby"
                 and h["state"] == "connected"), None)


def container(d, name=CT):
    h = standby_host(d)
    return next((c for c in (h or {}).get("containers") or [] if c["name"] == name), None)


@pytest.fixture(scope="module")
def standby(lab, tmp_path_factory):
    from conftest import Daemons
    d = Daemons(tmp_path_factory.mktemp("standby"))
    d.server(heartbeat_ms=500, host_timeout_ms=5000)
    d.agent("host1", [standby_vm()])
    d.wait_vm_state(VM, "running", BOOT_TIMEOUT)
    labkit.wait_for("the standby agent's hello", lambda: standby_host(d), BOOT_TIMEOUT)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_container_lifecycle_and_load(standby, record_property):
    d = standby
    host = standby_host(d)
    assert host["accel"] == "none" and host["vms"] == []

    create = d.vcr.json("container", "create", VM, CT, "--address", f"{CT_ADDR}/24",
                        "--service", SERVICE, "--gateway", "10.77.0.1", "--privileged")
    assert create["result"] == "done" and create["container"]["state"] == "running"
    record_property("create_start_ms", create["ms"])
    print(f"create+start in the guest: {create['ms']} ms")
    labkit.wait_for(f"http://{CT_ADDR}/ to answer {SERVICE}",
                    lambda: (labkit.http_get(CT_ADDR) or "").strip() == SERVICE, 60)
    # Privileged (`--privileged`; unprivileged is the default): the VM's root, every capability, no seccomp filter; it may
    # try to load a module and make a device node (test_unprivileged_container: the
    # opposite of each).
    iso = create["container"]["isolation"]
    assert create["container"]["privileged"] is True and iso["uid_map"] == VM_ROOT_MAP, iso
    assert iso["seccomp"] == 0 and all(int(iso["cap_eff"], 16) >> bit & 1
                                       for bit in DROPPED.values()), iso
    tried = labkit.http_get(CT_ADDR, "/privileges") or ""
    assert "insmod: can't insert '/bin/busybox': invalid module format" in tried, tried
    assert "Operation not permitted" not in tried and "mknod=0" in tried, tried

    # Load: a sample with the container's CPU and memory, and the VM's.
    c = labkit.wait_for("a container sample with CPU and memory",
                        lambda: (lambda c: c if c and c.get("state") == "running"
                                 and c.get("cpu_pct") is not None
                                 and (c.get("mem_kb") or 0) > 0 else None)(container(d)), 30)
    assert c["service"] == SERVICE and c["address"] == CT_ADDR and c["cpu_pct"] >= 0
    load = standby_host(d)["vm_load"]
    assert load["mem_total_kb"] > 100000 and 0 < load["mem_used_kb"] < load["mem_total_kb"]
    assert load["ncpus"] == labkit.STANDBY_VCPUS
    labkit.wait_for("a VM CPU figure", lambda: standby_host(d)["vm_load"]["cpu_pct"] is not None,
                    10)
    table = d.vcr.run("status")
    assert table.returncode == 0 and CT in table.stdout, table.stdout

    stop = d.vcr.json("container", "stop", VM, CT)
    record_property("stop_ms", stop["ms"])
    print(f"stop in the guest: {stop['ms']} ms")
    assert stop["container"]["state"] == "stopped"
    assert labkit.http_get(CT_ADDR, timeout=1) is None
    labkit.wait_for("status: stopped", lambda: (container(d) or {}).get("state") == "stopped", 10)

    start = d.vcr.json("container", "start", VM, CT)
    print(f"start (again) in the guest: {start['ms']} ms")
    record_property("start_ms", start["ms"])
    labkit.wait_for(f"http://{CT_ADDR}/ back", lambda: (labkit.http_get(CT_ADDR) or "").strip()
                    == SERVICE, 60)

    destroy = d.vcr.json("container", "destroy", VM, CT)
    print(f"destroy (running) in the guest: {destroy['ms']} ms")
    record_property("destroy_ms", destroy["ms"])
    assert labkit.http_get(CT_ADDR, timeout=1) is None
    labkit.wait_for("container gone from status", lambda: container(d) is None, 10)


def test_unprivileged_container(standby):
    """`--unprivileged` (`privileged: false`): the container's root is uid 100000 of the
    VM (its init's uid_map, read by the agent in the VM's /proc), the dangerous
    capabilities are gone from its CapEff, LXC's seccomp deny list is on (Seccomp: 2),
    and inside it loading a module and making a device node are refused; it serves,
    stops and starts again the same way."""
    d = standby
    create = d.vcr.json("container", "create", VM, CT2, "--address", f"{CT2_ADDR}/24",
                        "--service", SERVICE2, "--gateway", "10.77.0.1", "--unprivileged")
    assert create["result"] == "done", create
    c = create["container"]
    assert c["state"] == "running" and c["privileged"] is False, c
    iso = c["isolation"]
    assert iso["uid_map"] == "0 100000 65536" and iso["seccomp"] == 2, iso
    kept = [name for name, bit in DROPPED.items() if int(iso["cap_eff"], 16) >> bit & 1]
    assert kept == [], iso
    labkit.wait_for(f"http://{CT2_ADDR}/ to answer {SERVICE2}",
                    lambda: (labkit.http_get(CT2_ADDR) or "").strip() == SERVICE2, 60)
    tried = labkit.http_get(CT2_ADDR, "/privileges") or ""
    assert "insmod: can't insert '/bin/busybox': Operation not permitted" in tried, tried
    assert "mknod: /tmp/.dev: Operation not permitted" in tried and "mknod=1" in tried, tried
    labkit.wait_for("the status to show it unprivileged", lambda: (
        (container(d, CT2) or {}).get("privileged") is False
        and ((container(d, CT2) or {}).get("isolation") or {}).get("uid_map")
        == "0 100000 65536"), 10)

    stop = d.vcr.json("container", "stop", VM, CT2)
    assert stop["container"]["state"] == "stopped"
    assert labkit.http_get(CT2_ADDR, timeout=1) is None
    start = d.vcr.json("container", "start", VM, CT2)
    iso = start["container"]["isolation"]
    assert iso["uid_map"] == "0 100000 65536" and iso["seccomp"] == 2, iso
    labkit.wait_for(f"http://{CT2_ADDR}/ back", lambda: (labkit.http_get(CT2_ADDR) or "").strip()
                    == SERVICE2, 60)
    assert d.vcr.json("container", "destroy", VM, CT2)["result"] == "done"
    labkit.wait_for("web2ct gone from status", lambda: container(d, CT2) is None, 10)


def test_standby_agent_is_the_sanitized_build(standby):
    """The standby agent in the guest is the ASan+UBSan build (initrd-standby-asan.img):
    the fixture's end scans its console for reports, which only such a build writes."""
    console = standby.tmp / "agent-host1" / f"{VM}.serial"
    text = console.read_text(errors="replace")
    assert "vcr-agent started" in text and "build asan+ubsan" in text, text[-2000:]


def test_bad_container_orders_are_refused(standby):
    d = standby
    r = d.vcr.run("container", "create", VM, "bad1", "--address", "10.77.0.300")
    assert r.returncode != 0 and "address" in r.stderr
    r = d.vcr.run("container", "start", VM, "nosuch")
    assert r.returncode != 0 and "no such container" in r.stderr
    r = d.vcr.run("container", "create", "host1", "x", "--address", "10.77.0.40")
    assert r.returncode != 0 and "standby" in r.stderr


def post_container(body):
    r = labkit.ns_run(labkit.api_curl(f"/v1/hosts/{VM}/containers", "POST", body, timeout=90),
                      timeout=100)
    return json.loads(r.stdout)


def test_agent_serves_while_a_container_is_created(standby):
    """liblxc work runs in a child process: while a create is held for 6 s (test fault
    hold_for_test_ms, in the child before any work), the agent keeps sending to the
    server, answers an order for another container, and refuses a second order for the
    busy one; then the create completes."""
    d = standby
    held = {}
    t0_wall = time.time() * 1000
    worker = threading.Thread(target=lambda: held.update(post_container({
        "name": "held1", "service": "held", "address": "10.77.0.33/24",
        "hold_for_test_ms": 6000})))
    worker.start()
    try:
        labkit.wait_for("the create order to reach the agent", lambda: "busy" in json.dumps(
            post_container({"name": "held1", "action": "stop"})), 20)
        assert worker.is_alive(), held
        # Another container's order is answered at once (nothing to destroy: success).
        other = post_container({"name": "other1", "action": "destroy"})
        assert "error" not in other, other
        assert worker.is_alive(), held
        # The agent keeps talking to the server while the child works.
        labkit.wait_for("a message from the standby agent during the create", lambda: (
            worker.is_alive() and standby_host(d)["last_seen_ms"] > t0_wall + 1500), 5)
    finally:
        worker.join(120)
    assert held.get("result") == "done", held
    assert held["container"]["state"] == "running"
    # No `privileged` in the body: unprivileged, the default (docs/security.md).
    assert held["container"]["privileged"] is False, held
    assert held["container"]["isolation"]["uid_map"] == "0 100000 65536", held
    labkit.wait_for("held1 to answer HTTP",
                    lambda: (labkit.http_get("10.77.0.33") or "").strip() == "held", 60)
    gone = d.vcr.json("container", "destroy", VM, "held1")
    assert gone["result"] == "done"


def test_hold_for_test_needs_test_faults_and_a_sane_value(standby):
    out = post_container({"name": "held2", "service": "held", "address": "10.77.0.34/24",
                          "hold_for_test_ms": -1})
    assert "hold_for_test_ms" in out.get("error", ""), out
