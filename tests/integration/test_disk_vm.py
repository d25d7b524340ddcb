"""Disk-image VMs (issue 9, docs/config-vm.md "Disk-image VMs"), end to end: bad images
refused with the file named and nothing started; a real Debian 12 disk image (nginx,
Redis; lab/build-debian) supervised by the host agent like any VM: its own overlay,
network from the kernel command line, kill -9 seen, a warm VMM restart that keeps the
guest's TCP connections and processes; a warm-cache volume (virtio-pmem, mounted with DAX
by the guest's own fstab) whose content survives a warm reboot of the guest."""
import json
import os
import pwd
import signal
import subprocess
import threading
import time

import pytest

import labkit

DEB_ADDR = "10.77.0.41"
DEB_INDEX = 9  # tap9, MAC ...:19
SEEDED_ADDR = "10.77.0.42"  # deb2: its address comes from the NoCloud seed only
SEEDED_INDEX = 10
BOOT_TIMEOUT = 240  # ~50 s alone under TCG (LAB-NOTES); more on a busy machine
WARM_CACHE_USER_DATA = """#cloud-config
write_files:
  - path: /etc/fstab
    append: true
    content: |
      LABEL=wcache  /srv/wcache  ext4  defaults,dax,sync,nofail,x-systemd.device-timeout=60s  0 0
  - path: /etc/systemd/system/boot-report.service
    content: |
      [Unit]
      Description=Boot id and mounts of this boot, served by nginx
      RequiresMountsFor=/srv/wcache
      [Service]
      Type=oneshot
      ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id /proc/mounts > /srv/www/boot.txt'
      [Install]
      WantedBy=multi-user.target
runcmd:
  - [sh, -c, 'mkdir -p /srv/wcache /srv/data && systemctl daemon-reload && mount /srv/wcache && chown www-data:www-data /srv/wcache && ln -sfn /srv/wcache /srv/data/wc && systemctl enable --now boot-report.service && sync']
"""


def agent_bin(daemons):
    return os.path.join(daemons.build, "src", "agent", "vcr-agent")


def disk_vm(name, index, address, disk, **image):
    vm = labkit.vm_entry(name, index, address)
    vm["image"] = {"disk": disk, **image}
    vm["kernel_args"] = None
    vm["network"] = "image"
    vm["autostart"] = False
    return vm


def config_test(daemons, tmp_path, vm):
    cfg = tmp_path / "agent.yaml"
    labkit.write_agent_config(cfg, "h1", str(tmp_path / "state"), [vm])
    return subprocess.run([agent_bin(daemons), "--config", str(cfg), "--config-test"],
                          capture_output=True, text=True, timeout=30)


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_bad_images_are_refused_naming_the_file(daemons, tmp_path):
    missing = tmp_path / "gone.qcow2"
    r = config_test(daemons, tmp_path, disk_vm("d1", 20, "10.77.0.60", missing))
    assert r.returncode not in (0, 2), r
    assert f"vms[0].image.disk: `{missing}`: No such file or directory" in r.stderr, r.stderr

    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-f", "vmdk", str(vmdk), "16M")
    r = config_test(daemons, tmp_path, disk_vm("d1", 20, "10.77.0.60", vmdk))
    assert r.returncode not in (0, 2) and "is in vmdk format; allowed: raw or qcow2" in r.stderr, r.stderr

    # A qcow2 whose backing file is gone, made by the real qemu-img.
    base, top = tmp_path / "base.raw", tmp_path / "top.qcow2"
    qemu_img("create", "-f", "raw", str(base), "16M")
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(base), str(top))
    r = config_test(daemons, tmp_path, disk_vm("d1", 20, "10.77.0.60", top))
    assert r.returncode == 0, r.stderr
    base.unlink()
    r = config_test(daemons, tmp_path, disk_vm("d1", 20, "10.77.0.60", top))
    assert r.returncode not in (0, 2), r
    assert f"backing file `{base}`" in r.stderr and "must be whole" in r.stderr, r.stderr

    # Corrupt: a qcow2 header of an unknown version.
    corrupt = tmp_path / "corrupt.qcow2"
    qemu_img("create", "-f", "qcow2", str(corrupt), "16M")
    with open(corrupt, "r+b") as f:
        f.seek(4)
        f.write(b"\0\0\0\x63")
    r = config_test(daemons, tmp_path, disk_vm("d1", 20, "10.77.0.60", corrupt))
    assert r.returncode not in (0, 2) and "qcow2 version 99" in r.stderr, r.stderr

    # A format that contradicts the header.
    vm = disk_vm("d1", 20, "10.77.0.60", top)
    vm["image"]["format"] = "raw"
    qemu_img("create", "-f", "raw", str(base), "16M")
    r = config_test(daemons, tmp_path, vm)
    assert r.returncode not in (0, 2) and "is a qcow2 image but format raw" in r.stderr, r.stderr


def test_start_refused_when_the_base_went_away(daemons, tmp_path):
    """The base is checked again at every start: gone since the agent loaded it, the VM
    is `failed` with the file named, no QEMU runs and no overlay is made."""
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "64M")
    daemons.server()
    daemons.agent("dhost", [disk_vm("d2", 21, "10.77.0.61", base)])
    labkit.wait_for("d2 reported", lambda: daemons.vcr.vm("d2"), 30)
    base.unlink()
    r = daemons.vcr.run("vm", "start", "d2")
    vm = daemons.wait_vm_state("d2", {"failed", "running"}, 30)
    assert vm["state"] == "failed", vm
    assert str(base) in vm["cause"] and "No such file" in vm["cause"], vm
    assert not (tmp_path / "agent-dhost" / "d2.qcow2").exists()
    assert not vm.get("pid"), vm
    assert r.returncode != 0 or "failed" in (r.stdout + r.stderr)


def test_kill_cancels_a_start_still_preparing_its_disks(daemons, tmp_path):
    """A VM's disks are made in a child of the agent before QEMU starts (host_vm_prep.c,
    off the agent's loop). A kill sent meanwhile (the preparation held by the agent's
    test hook, --test-faults) cancels the start: the start is answered as cancelled, the
    VM is `stopped`, no QEMU ran and no overlay was made; the next start makes it and
    runs. Before, the kill was refused as busy with the vm_start."""
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", str(base), "64M")
    daemons.server()
    state = tmp_path / "agent-dhost"
    state.mkdir()
    hold = state / "d3.prep-hold"
    hold.write_text("")
    daemons.agent("dhost", [disk_vm("d3", 22, "10.77.0.62", base)], args=["--test-faults"])
    labkit.wait_for("d3 reported", lambda: daemons.vcr.vm("d3"), 30)
    started = {}
    starter = threading.Thread(target=lambda: started.update(
        r=daemons.vcr.run("vm", "start", "d3", timeout=60)))
    starter.start()
    vm = labkit.wait_for("d3 preparing its disks", lambda: (
        lambda v: v if v and v["state"] == "starting" and "preparing its disks" in v["cause"]
        else None)(daemons.vcr.vm("d3")), 30)
    assert not vm.get("pid"), vm
    r = daemons.vcr.run("vm", "kill", "d3")
    starter.join(60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = started["r"].stdout + started["r"].stderr
    assert started["r"].returncode != 0 and "cancelled by a vm_kill order" in out, out
    vm = daemons.vcr.vm("d3")
    assert vm["state"] == "stopped" and "before its qemu started" in vm["cause"], vm
    assert not vm.get("pid"), vm
    assert not (state / "d3.qcow2").exists()
    hold.unlink()
    r = daemons.vcr.run("vm", "start", "d3", timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    vm = daemons.wait_vm_state("d3", "running", 30)
    assert vm.get("pid") and (state / "d3.qcow2").exists(), vm


# --- The real Debian 12 guest --------------------------------------------------------

def redis_cmd(address, *words, timeout=3.0):
    """One RESP command; the reply's first line (b'+PONG', b':1', b'$5' ...)."""
    msg = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    r = labkit.ns_run(["python3", "-c", (
        "import socket,sys\n"
        f"s=socket.create_connection(('{address}',6379),timeout={timeout})\n"
        f"s.sendall({msg.encode()!r})\n"
        "sys.stdout.write(s.recv(4096).decode(errors='replace'))\n")], timeout=timeout + 5)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module")
def debian(lab, tmp_path_factory):
    vm = labkit.debian_primary_entry("deb1", DEB_INDEX, DEB_ADDR)
    if vm is None:
        pytest.skip("the Debian images are not built (make image-debian)")
    seeded = labkit.debian_primary_entry("deb2", SEEDED_INDEX, SEEDED_ADDR, network="nocloud")
    tmp = tmp_path_factory.mktemp("debian-seeded")
    # A warm-cache volume, mounted with DAX by the guest itself: its fstab line and a
    # unit that copies what each boot mounted (/proc/mounts) where nginx serves it,
    # written by cloud-init from the seed's user-data; the volume's directory is
    # reached through /data/ (nginx's WebDAV PUT), by a symlink.
    user_data = tmp / "user-data"
    user_data.write_text(WARM_CACHE_USER_DATA)
    seeded["user_data"] = str(user_data)
    seeded["volumes"] = [{"name": "wcache", "size_mb": 64, "image": str(tmp / "wcache.img"),
                          "mount": "/srv/wcache", "warm_cache": "true"}]
    from conftest import Daemons
    d = Daemons(tmp_path_factory.mktemp("debian"))
    d.server(heartbeat_ms=500, host_timeout_ms=3000)
    d.agent("debhost", [vm, seeded])
    d.wait_vm_state("deb1", "running", 60)
    labkit.wait_for("nginx of the Debian guest", lambda: labkit.http_get(DEB_ADDR, timeout=2),
                    BOOT_TIMEOUT, interval=1)
    labkit.wait_for("redis of the Debian guest",
                    lambda: "+PONG" in (redis_cmd(DEB_ADDR, "PING") or ""), 60, interval=1)
    run_dir = labkit.qemu_run_dir("debhost", d.tmp / "agent-debhost")
    assert os.path.isdir(run_dir)
    yield d
    reports = d.stop_all()
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)
    # The agent stopped its VMs and removed its directory for QEMU's user.
    assert not os.path.exists(run_dir)


def test_debian_guest_runs_on_its_own_overlay(debian):
    state = debian.tmp / "agent-debhost"
    overlay = state / "deb1.qcow2"
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                          capture_output=True, text=True, check=True).stdout
    assert labkit.debian_image("primary.qcow2") in info
    vm = debian.vcr.vm("deb1")
    cmdline = open(f"/proc/{vm['pid']}/cmdline").read().split("\0")
    assert any(str(overlay) in a for a in cmdline)
    assert not any(a.startswith("file=" + labkit.debian_image("primary.qcow2")) for a in cmdline)
    assert any("ip=10.77.0.41::10.77.0.1:255.255.255.0:deb1:eth0:off" in a for a in cmdline)
    assert vm["disk"] == str(overlay) and vm["disk_base"] == labkit.debian_image("primary.qcow2")


def test_debian_guest_takes_its_address_from_the_cloud_init_seed(debian):
    """deb2 has no ip= on its command line: cloud-init's NoCloud datasource found the seed
    the agent wrote (ISO 9660, label cidata) and applied its network-config."""
    debian.wait_vm_state("deb2", "running", 30)
    labkit.wait_for("nginx of the seeded guest", lambda: labkit.http_get(SEEDED_ADDR, timeout=2),
                    BOOT_TIMEOUT, interval=1)
    vm = debian.vcr.vm("deb2")
    cmdline = open(f"/proc/{vm['pid']}/cmdline").read().split("\0")
    assert not any("ip=" in a for a in cmdline)
    seed = debian.tmp / "agent-debhost" / "deb2.seed.iso"
    assert any(f"file={seed}," in a for a in cmdline)
    # cloud-init's last stage names the datasource it used (a little after nginx is up).
    serial = debian.tmp / "agent-debhost" / "deb2.serial"
    labkit.wait_for("cloud-init to report its datasource",
                    lambda: "DataSourceNoCloud" in serial.read_text(errors="replace"), 120,
                    interval=1)


def boot_report(address):
    """(boot id, the /proc/mounts line of /srv/wcache or None) of the guest's current boot,
    as its boot-report unit wrote them; None before it has."""
    text = labkit.http_get(address, "/boot.txt", timeout=3)
    if not text:
        return None
    lines = text.splitlines()
    mount = next((l for l in lines[1:] if l.split()[1:2] == ["/srv/wcache"]), None)
    return lines[0], mount


def put(address, path, body):
    r = labkit.ns_run(["curl", "-s", "-f", "-m", "10", "-X", "PUT", "--data-binary", body,
                       f"http://{address}{path}"], timeout=15)
    return r.returncode == 0


def test_debian_guest_warm_cache_volume_survives_a_warm_reboot(debian, record_property):
    """deb2's warm-cache volume (virtio-pmem over its image) is mounted by the guest's own
    fstab with DAX; a file written there through nginx before `vcr vm reboot` (warm: a
    reset in the same QEMU) is served from it after the reboot, which mounted it with DAX
    again."""
    first = labkit.wait_for("the first boot's report", lambda: boot_report(SEEDED_ADDR),
                            BOOT_TIMEOUT, interval=1)
    assert first[1] is not None, first
    dev, _, fstype, options = first[1].split()[:4]
    assert dev == "/dev/pmem0" and fstype == "ext4" and "dax=always" in options, first[1]
    stamp = f"written before the reboot at {time.time():.3f}\n"
    assert put(SEEDED_ADDR, "/data/wc/note.txt", stamp)
    assert labkit.http_get(SEEDED_ADDR, "/data/wc/note.txt", timeout=3) == stamp
    pid = debian.vcr.vm("deb2")["pid"]
    r = debian.vcr.run("vm", "reboot", "deb2", "--json", timeout=320)
    assert r.returncode == 0, r.stdout + r.stderr
    answer = json.loads(r.stdout)
    assert debian.vcr.vm("deb2")["pid"] == pid  # warm: the same QEMU, the image still mapped
    after = labkit.wait_for("the report of the boot after the reboot",
                            lambda: (lambda b: b if b and b[0] != first[0] else None)(
                                boot_report(SEEDED_ADDR)), BOOT_TIMEOUT, interval=1)
    assert after[1] is not None, after
    dev, _, fstype, options = after[1].split()[:4]
    assert dev == "/dev/pmem0" and "dax=always" in options, after[1]
    assert labkit.http_get(SEEDED_ADDR, "/data/wc/note.txt", timeout=3) == stamp
    record_property("reboot_answer", answer)
    print(f"warm reboot of deb2: {answer}; after it: {after[1]}")
    debian.vcr.run("vm", "stop", "deb2", timeout=60)  # the CPU goes to the tests below


def test_debian_guest_keeps_connection_and_processes_across_warm_restart(debian):
    """A warm VMM restart of the systemd guest: a TCP connection opened before it is
    served after it, Redis keeps its data and its process (same run_id, uptime goes on).
    The disk-image VM's QEMU runs as the agent's qemu_user before and after (-runas: the
    new QEMU takes the qcow2 overlay over from the old one; docs/security.md)."""
    user = pwd.getpwnam(labkit.QEMU_USER)
    assert labkit.process_ids(debian.vcr.vm("deb1")["pid"]) == (user.pw_uid, user.pw_gid)
    assert "+OK" in redis_cmd(DEB_ADDR, "SET", "warm", "kept")
    info = redis_cmd(DEB_ADDR, "INFO", "server")
    run_id = [l for l in info.splitlines() if l.startswith("run_id:")][0]
    # A connection held open across the restart, from inside the namespace.
    holder = subprocess.Popen(labkit.in_ns(["python3", "-c", (
        "import socket,sys,time\n"
        f"s=socket.create_connection(('{DEB_ADDR}',6379),timeout=60)\n"
        "s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n'); print(s.recv(64)); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        "s.sendall(b'*2\\r\\n$3\\r\\nGET\\r\\n$4\\r\\nwarm\\r\\n'); print(s.recv(64))\n")]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert "PONG" in holder.stdout.readline()
    old_pid = debian.vcr.vm("deb1")["pid"]
    r = debian.vcr.run("vm", "warm-restart", "deb1", "--json", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    new_pid = debian.vcr.vm("deb1")["pid"]
    assert new_pid != old_pid
    assert labkit.process_ids(new_pid) == (user.pw_uid, user.pw_gid)
    holder.stdin.write("go\n")
    holder.stdin.flush()
    out, _ = holder.communicate(timeout=60)
    assert "kept" in out, out
    info = redis_cmd(DEB_ADDR, "INFO", "server")
    assert run_id in info, info


def test_debian_guest_kill9_is_a_crash_and_its_disk_is_kept(debian):
    vm = debian.vcr.vm("deb1")
    overlay = debian.tmp / "agent-debhost" / "deb1.qcow2"
    inode = overlay.stat().st_ino
    os.kill(vm["pid"], signal.SIGKILL)
    crashed = debian.wait_vm_state("deb1", "crashed", 20)
    assert "signal 9" in crashed["cause"]
    assert overlay.stat().st_ino == inode  # the failed VM's disk, kept for inspection
    # Started again on the same disk: what Redis synced before the kill is there.
    r = debian.vcr.run("vm", "start", "deb1")
    assert r.returncode == 0, r.stderr
    labkit.wait_for("redis back", lambda: "+PONG" in (redis_cmd(DEB_ADDR, "PING") or ""),
                    BOOT_TIMEOUT, interval=1)
    assert "kept" in redis_cmd(DEB_ADDR, "GET", "warm")
    assert overlay.stat().st_ino == inode
