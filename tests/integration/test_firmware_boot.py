"""A disk-image VM booted by the firmware and the image's own bootloader (docs/config-vm.md,
"Disk-image VMs"): no `image.kernel`, so the host agent gives QEMU no -kernel; SeaBIOS
loads the disk's boot sector, SYSLINUX (installed in the image, a FAT volume) loads the
kernel and initramfs from the image and passes the image's own kernel command line.

The image is made here from the lab's busybox kernel and initramfs (syslinux, mtools,
dosfstools): the guest's address comes from the image itself (`network: image`), so it
boots in seconds.  A real OS image with GRUB takes the same path: nothing in it is ours."""
import os
import shutil
import subprocess

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
