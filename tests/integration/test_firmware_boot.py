"""A disk-image VM booted by the firmware and the image's own bootloader (docs/config-vm.md,
"Disk-image VMs"): no `image.kernel`, so the host agent gives QEMU no -kernel; SeaBIOS
loads the disk's boot sector, SYSLINUX (installed in the image, a FAT volume) loads the
kernel and initramfs from the image and passes the image's own kernel command line.

The image is made here from the lab's busybox kernel and initramfs (syslinux, mtools,
dosfstools): the guest's address comes from the image itself (`network: image`), so it
boots in seconds.  A real OS image with GRUB takes the same path, nothing in it ours:
the Debian 12 primary on a partitioned disk (primary-grub.qcow2 of lab/build-debian),
in which the project's package is then installed and its units started by systemd."""
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import labkit

VM, INDEX, ADDR = "fw1", 9, "10.77.0.19"
BOOT_TIMEOUT = 180


def make_image(path, kernel, initrd, cmdline):
    """A 96 MB raw disk: one FAT volume (no partition table) with SYSLINUX in its boot
    sector, the kernel, the initramfs and syslinux.cfg."""
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
    run("truncate", "-s", "96M", str(path))
    run("mkfs.vfat", "-n", "VCRBOOT", str(path))
    run("syslinux", "--install", str(path))
    cfg = path.parent / "syslinux.cfg"
    # SERIAL: SYSLINUX writes its banner to the console log too (the VM has no display).
    cfg.write_text("SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n"
                   "  KERNEL vmlinuz\n"
                   f"  INITRD initrd.img\n  APPEND {cmdline}\n")
    for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        run("mcopy", "-i", str(path), str(src), f"::{name}")


def test_firmware_and_the_images_bootloader_boot_it(daemons, tmp_path):
    for tool in ("syslinux", "mcopy", "mkfs.vfat"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/install-deps: syslinux mtools dosfstools)")
    env = labkit.lab_env()
    disk = tmp_path / "images" / "fw1.raw"
    disk.parent.mkdir()
    make_image(disk, env["VCR_LAB_KERNEL"], env["VCR_LAB_INITRD"],
               f"console=ttyS0 vcr.name={VM} vcr.ip={ADDR}/24 vcr.gw={env['VCR_LAB_BRIDGE_ADDR']}")
    vm = labkit.vm_entry(VM, INDEX, ADDR)
    vm["image"] = {"disk": str(disk), "format": "raw"}
    vm["network"] = "image"
    vm["kernel_args"] = None
    daemons.server()
    daemons.agent("fwhost", [vm])
    st = daemons.wait_vm_state(VM, "running", BOOT_TIMEOUT)
    labkit.wait_for(f"{VM} answering HTTP with its name",
                    lambda: (labkit.http_get(ADDR) or "").strip() == VM, BOOT_TIMEOUT,
                    interval=0.5)
    # Booted by the firmware: QEMU got no kernel, and the image's own bootloader ran.
    argv = open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")
    assert b"-kernel" not in argv and b"-initrd" not in argv, argv
    assert st["disk_base"] == str(disk), st
    assert st["disk"] != str(disk)  # its own overlay; the base stays as it was
    serial = tmp_path / "agent-fwhost" / f"{VM}.serial"
    text = serial.read_text(errors="replace")
    assert "SYSLINUX" in text and "Linux version" in text, text[-2000:]
    assert os.path.getsize(disk) == 96 * 1024 * 1024


# --- A real OS image: Debian 12 booted by its own GRUB, the package installed in it ----

GRUB_VM, GRUB_INDEX, GRUB_ADDR = "debgrub", 11, "10.77.0.43"
DEBIAN_BOOT_TIMEOUT = 300  # ~50 s alone under TCG (LAB-NOTES), cloud-init's runcmd after
API_PORT = 7080
# Run by cloud-init's bootcmd (its init stage: ~50 s before runcmd under TCG) from the
# volume `vcrpkgs` (ext4 made by the host agent from source_dir): the project's package
# and the libraries it needs that the image lacks, installed with dpkg; a CA and
# certificates made by the installed `vcr pki`; the server and the host agent enabled and
# started by systemd from the package's units.  --no-block: their units start after
# network-online.target, which waits for this very stage.  vcr-report.service, ordered
# after both (Type=notify: after their READY=1), says on the console what systemd saw.
SETUP_SH = """#!/bin/sh
set -eu
V=/mnt/vcrpkgs
say() { echo "VCR-PKG: $*" >/dev/console; }
dpkg -i "$V"/debs/*.deb >/dev/console 2>&1
say "installed vcrecovery $(dpkg-query -W -f='${Version}' vcrecovery)"
vcr pki init /etc/vcr/pki
vcr pki issue --server --san 127.0.0.1 /etc/vcr/pki vcr-server
vcr pki issue /etc/vcr/pki debgrub
chgrp vcr /etc/vcr/pki /etc/vcr/pki/vcr-server.key && chmod 0750 /etc/vcr/pki && chmod 0640 /etc/vcr/pki/vcr-server.key
cp "$V/server.yaml" "$V/agent.yaml" /etc/vcr/
cat >/etc/systemd/system/vcr-report.service <<'EOF'
[Unit]
Description=The VCRecovery units' state on the console
After=vcr-server.service vcr-agent.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'for u in vcr-server vcr-agent; do echo "VCR-PKG: $$u $(systemctl is-active $$u.service) $(systemctl show -p MainPID --value $$u.service)"; done >/dev/console'
EOF
systemctl daemon-reload
systemctl enable vcr-server.service vcr-agent.service >/dev/console 2>&1
systemctl --no-block start vcr-server.service vcr-agent.service vcr-report.service
say "units enabled, start queued"
"""
SERVER_YAML = f"""listen: 127.0.0.1:7070
api: 0.0.0.0:{API_PORT}
tls_ca_file: /etc/vcr/pki/ca.crt
tls_cert_file: /etc/vcr/pki/vcr-server.crt
tls_key_file: /etc/vcr/pki/vcr-server.key
api_insecure: true
"""
# The packaged server runs as the user `vcr` (docs/security.md, "Least privilege"): its
# key and its directory (`vcr pki init` makes it 0700) are made readable to that group,
# as docs/operator-guide.md says.  Its API is plain
# and open here (`api_insecure`): the test reads it from the lab without the guest's
# tokens; test_api_auth.py shows the API's authentication.
# The guest has no QEMU (the package only recommends it) and the agent no VMs to run:
# `qemu` names /usr/bin/true to pass the configuration's executable check; accel tcg
# starts no probe VM.
AGENT_YAML = """host: debgrub
server: 127.0.0.1:7070
state_dir: /var/lib/vcr/agent
tls_ca_file: /etc/vcr/pki/ca.crt
tls_cert_file: /etc/vcr/pki/debgrub.crt
tls_key_file: /etc/vcr/pki/debgrub.key
accel: tcg
qemu: /usr/bin/true
vms: []
"""
# The volume's label appears when udev has named the disk (10-15 s into the boot under
# TCG: lab/README.md, "Primary VM"): waited for, 90 s at most.
USER_DATA = """#cloud-config
bootcmd:
  - [sh, -c, 'L=/dev/disk/by-label/vcrpkgs; i=0; while [ ! -e $L ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done; mkdir -p /mnt/vcrpkgs && mount -o ro $L /mnt/vcrpkgs && sh /mnt/vcrpkgs/setup.sh']
"""


@pytest.fixture
def package():
    """The project's .deb: VCR_DEB, else built by scripts/build-deb (as test_deb.py)."""
    path = os.environ.get("VCR_DEB")
    if not path:
        if shutil.which("dpkg-shlibdeps") is None:
            pytest.skip("dpkg-shlibdeps not installed (dpkg-dev)")
        r = subprocess.run([os.path.join(labkit.ROOT, "scripts", "build-deb")],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path), path
    return path


def test_debian_booted_by_its_grub_runs_the_installed_package(daemons, package, tmp_path):
    """primary-grub.qcow2 (lab/build-debian): SeaBIOS runs the MBR's GRUB boot.img, which
    loads core.img from the post-MBR gap, GRUB reads /boot/grub/grub.cfg from the root
    partition and boots the image's kernel: no -kernel to QEMU.  The VM is supervised by
    the host agent (running in `vcr status`), on its own overlay, takes its address from
    the NoCloud seed, serves nginx and shows its login prompt.  Then, in that fresh
    Debian 12, the package installed with dpkg and its units started by systemd: the
    server's API answers `vcr status` (from the lab, over the guest's network) and lists
    the guest's own host agent connected over mutual TLS."""
    vm = labkit.debian_grub_entry(GRUB_VM, GRUB_INDEX, GRUB_ADDR)
    if vm is None:
        pytest.skip("no primary-grub.qcow2: run lab/build-debian (make image-debian)")
    installed = {line.split()[0] for line in
                 open(os.path.join(labkit.DEBIAN_CACHE, "primary.packages"))}
    pkgs = tmp_path / "vcrpkgs"
    (pkgs / "debs").mkdir(parents=True)
    for deb in labkit.deb_closure(package, installed,
                                  [os.path.join(labkit.DEBIAN_CACHE, d)
                                   for d in ("debs", "standby-disk-debs")]):
        shutil.copy(deb, pkgs / "debs")
    (pkgs / "setup.sh").write_text(SETUP_SH)
    (pkgs / "server.yaml").write_text(SERVER_YAML)
    (pkgs / "agent.yaml").write_text(AGENT_YAML)
    user_data = tmp_path / "user-data"
    user_data.write_text(USER_DATA)
    vm["user_data"] = str(user_data)
    vm["volumes"] = [{"name": "vcrpkgs", "size_mb": 64, "source_dir": str(pkgs),
                      "image": str(tmp_path / "vcrpkgs.img"), "mount": "/mnt/vcrpkgs"}]
    daemons.server()
    t0 = time.monotonic()
    daemons.agent("grubhost", [vm])
    st = daemons.wait_vm_state(GRUB_VM, "running", 60)
    argv = open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")
    assert b"-kernel" not in argv and b"-initrd" not in argv, argv
    assert st["disk_base"] == labkit.debian_image("primary-grub.qcow2"), st
    assert st["disk"] == str(tmp_path / "agent-grubhost" / f"{GRUB_VM}.qcow2"), st
    serial = tmp_path / "agent-grubhost" / f"{GRUB_VM}.serial"
    console = lambda: serial.read_text(errors="replace")  # noqa: E731
    labkit.wait_for(f"the login prompt of {GRUB_VM}", lambda: f"{GRUB_VM} login:" in console(),
                    DEBIAN_BOOT_TIMEOUT, interval=1)
    t_login = time.monotonic() - t0
    text = console()
    # GRUB's own line (grub.cfg), then the kernel it loaded with GRUB's BOOT_IMAGE=.
    grub_at = text.find("GRUB: booting Debian 12")
    assert grub_at >= 0, text[:3000]
    assert re.search(r"Command line: BOOT_IMAGE=/boot/vmlinuz-\S+ root=/dev/vda1 ",
                     text[grub_at:]), text[:5000]
    labkit.wait_for(f"nginx of {GRUB_VM}", lambda: labkit.http_get(GRUB_ADDR, timeout=2),
                    DEBIAN_BOOT_TIMEOUT, interval=1)
    t_nginx = time.monotonic() - t0
    assert daemons.vcr.vm(GRUB_VM)["state"] == "running"

    # The package, from the guest's own systemd.
    api = f"{GRUB_ADDR}:{API_PORT}"

    def guest_status():
        r = labkit.ns_run([daemons.vcr.bin, "--server", api, "status", "--json"], timeout=15)
        if r.returncode != 0:
            return None
        hosts = {h.get("name"): h for h in json.loads(r.stdout).get("hosts", [])}
        return hosts if hosts.get("debgrub", {}).get("state") == "connected" else None
    hosts = labkit.wait_for("the guest's vcr-server answering with its agent connected",
                            guest_status, DEBIAN_BOOT_TIMEOUT, interval=2)
    t_api = time.monotonic() - t0
    assert "VCR-PKG: installed vcrecovery" in console(), console()[-4000:]
    # What the guest's systemd says of both units once they are up (vcr-report.service).
    labkit.wait_for("the units' state on the guest's console",
                    lambda: re.search(r"VCR-PKG: vcr-agent \S+ \d+", console()), 60, interval=1)
    text = console()
    assert re.search(r"VCR-PKG: vcr-server active [1-9]", text), text[-4000:]
    assert re.search(r"VCR-PKG: vcr-agent active [1-9]", text), text[-4000:]
    print(f"{GRUB_VM}: agent start -> login prompt {t_login:.1f} s, nginx {t_nginx:.1f} s, "
          f"the guest's API with its agent connected {t_api:.1f} s; hosts {sorted(hosts)}")
