"""The Debian 12 standby VM (lab/build-standby-disk: the standby base of lab/build-debian
with the project's .deb installed, vcr-agent-standby.service enabled) booted as a
disk-image VM of a host agent: the packaged standby agent gets its server and name from
the kernel command line, moves the VM's address to br0, says hello to the server, and a
container is created and answers HTTP on its own lab address.  One boot.

Image: lab/build-debian --only standby; lab/build-standby-disk (docs/packaging.md)."""
import json
import time

import pytest

import labkit

VM, VM_INDEX, VM_ADDR = "dsb1", 0, "10.77.0.21"
CT, SERVICE, CT_ADDR = "web1ct", "web1", "10.77.0.31"
# TCG, systemd: LAB-NOTES measured ~50 s to userspace services for a Debian guest on an
# idle machine; the host is shared, so allow several times that.
BOOT_TIMEOUT = 420

# Checked at collection, so that a missing image skips before the lab is brought up.
IMAGE, NO_IMAGE = labkit.debian_standby_image()
pytestmark = pytest.mark.skipif(IMAGE is None, reason=NO_IMAGE or "")


def standby_host(d):
    return next((h for h in d.vcr.status()["hosts"]
                 if h["name"] == VM and h.get("role") == "standby"
                 and h["state"] == "connected"), None)


def test_debian_standby_agent_connects(lab, daemons, record_property):
    image = IMAGE
    d = daemons
    d.server(heartbeat_ms=500, host_timeout_ms=5000)
    # One vCPU: a 2-vCPU Debian guest once hung in its boot under multi-threaded TCG
    # (labkit.guest_stall).
    vm = labkit.debian_standby_vm_entry(VM, VM_INDEX, VM_ADDR, image, vcpus=1)
    t0 = time.monotonic()
    agent = d.agent("host1", [vm])

    def running():
        assert agent.alive(), f"the host agent exited:\n{agent.log_text()[-3000:]}"
        v = d.vcr.vm(VM)
        return v if v and v.get("state") == "running" else None
    labkit.wait_for(f"VM {VM} running", running, 120)
    t_running = time.monotonic()
    serial = d.tmp / "agent-host1" / f"{VM}.serial"
    try:
        host = labkit.wait_for("the Debian standby agent's hello", lambda: standby_host(d),
                               BOOT_TIMEOUT, interval=0.5)
    except labkit.Timeout:
        tail = serial.read_text(errors="replace")[-4000:] if serial.exists() else "(none)"
        raise AssertionError(f"no hello from {VM}; serial console tail:\n{tail}")
    t_hello = time.monotonic()
    boot_s, hello_s = t_hello - t0, t_hello - t_running
    record_property("agent_start_to_hello_s", round(boot_s, 1))
    record_property("vm_running_to_hello_s", round(hello_s, 1))
    print(f"host agent start -> standby hello: {boot_s:.1f} s "
          f"(VM running -> hello: {hello_s:.1f} s)")

    # The packaged agent (vcr-agent-standby.service), its settings from the kernel
    # command line, the VM's address on br0.
    console = serial.read_text(errors="replace")
    assert f"--name {VM}" in console and "from the kernel command line" in console, console[-3000:]
    # Mutual TLS with the identity the host agent passed as fw_cfg files (agent_identity:
    # the image keeps qemu_fw_cfg), to the server's one TLS port: no plain-TCP port.
    assert "TLS identity from fwcfg" in console, console[-3000:]
    assert "--insecure" not in console, console[-3000:]
    assert "standby_insecure_listen" not in (d.tmp / "server.yaml").read_text()
    assert "br0 over eth0: " + f"{VM_ADDR}/24" in console, console[-3000:]
    assert host["accel"] == "none" and host["vms"] == []
    # The VM's load arrives with the agent's first sample (every 1000 ms).
    load = labkit.wait_for("the standby's first sample", lambda: (standby_host(d) or {}).get(
        "vm_load"), 30)
    assert load["ncpus"] == 1 and 0 < load["mem_used_kb"] < load["mem_total_kb"], load
    print("vcr status --json, the standby host:", json.dumps(standby_host(d)))

    create = d.vcr.json("container", "create", VM, CT, "--address", f"{CT_ADDR}/24",
                        "--service", SERVICE, "--gateway", lab["VCR_LAB_BRIDGE_ADDR"])
    assert create["result"] == "done" and create["container"]["state"] == "running", create
    record_property("create_start_ms", create["ms"])
    print(f"container create+start in the Debian standby: {create['ms']} ms")
    labkit.wait_for(f"http://{CT_ADDR}/ to answer {SERVICE}",
                    lambda: (labkit.http_get(CT_ADDR) or "").strip() == SERVICE, 60)
    # The VM itself still answers on its address, now on br0.
    r = labkit.ns_run(["busybox", "ping", "-c", "1", "-W", "2", VM_ADDR], timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr

    destroy = d.vcr.json("container", "destroy", VM, CT)
    assert destroy["result"] == "done", destroy
    assert labkit.http_get(CT_ADDR, timeout=1) is None
