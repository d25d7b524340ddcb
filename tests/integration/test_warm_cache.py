"""Warm-cache volumes end to end (docs/warm-cache.md): a VM with one data volume on
virtio-pmem over its disk image mapped shared (mounted with DAX) and one on virtio-blk
cache=none, both ext4 built from the same host directory; warm and cold reboots, a flush
(fsync of the image), an agent crash, a synced write surviving QEMU and the agent
killed together, a corrupt image.

Run in a namespace of its own, with the image built from this tree's lab/guest/init:
  VCR_LAB_NS=vcrwc VCR_LAB_CACHE=build-wc/lab-cache VCR_ASAN_BUILD=build-wc-asan \
      python3 -m pytest tests/integration/test_warm_cache.py
"""
import ctypes
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

import labkit

VM, ADDR, TAP_INDEX = "wc1", "10.77.0.31", 0
BIG_MB = 24
BOOT_TIMEOUT = 120


def volumes_yaml(src, state):
    return [
        "    volumes:",
        f"      - {{name: data, size_mb: 96, source_dir: {src}, image: {state}/data.img,",
        "         mount: /data, warm_cache: true}",
        f"      - {{name: cold, size_mb: 96, source_dir: {src}, image: {state}/cold.img,",
        "         mount: /cold, cache: none}",
    ]


def start_agent(d, name, src, corrupt=False):
    """Like Daemons.agent, with the volumes appended to the (only) VM entry."""
    state = d.tmp / "agent-wchost"
    state.mkdir(exist_ok=True)
    cfg = d.tmp / "agent-wchost.yaml"
    labkit.write_agent_config(cfg, "wchost", str(state), [labkit.vm_entry(VM, TAP_INDEX, ADDR)])
    with open(cfg, "a") as f:
        f.write("\n".join(volumes_yaml(src, state)) + "\n")
    p = labkit.Proc([os.path.join(d.build, "src", "agent", "vcr-agent"), "--config", str(cfg),
                     "--log-level", "debug"], str(d.tmp / f"{name}.log"))
    d.procs.append(p)
    return p, state


def get(path, timeout=30.0):
    return labkit.http_get(ADDR, path, timeout=timeout)


def kv(text):
    return dict(re.findall(r"(\w+)=(\S+)", text or ""))


def wait_guest(d):
    d.wait_vm_state(VM, "running", BOOT_TIMEOUT)

    def ready():
        vols = get("/cgi-bin/volumes", 2)
        if not vols or "mount=/data" not in vols or "mount=/cold" not in vols:
            return None
        return vols
    return labkit.wait_for("the guest's volumes", ready, BOOT_TIMEOUT, interval=0.2)


def qemu_pid(d):
    return d.vcr.vm(VM)["pid"]


def read_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        return int(re.search(r"^read_bytes: (\d+)", f.read(), re.M).group(1))


def vcr_json(d, *args, timeout=200):
    r = d.vcr.run(*args, "--json", timeout=timeout)
    assert r.returncode == 0, f"vcr {' '.join(args)}: {r.stderr.strip()}"
    return json.loads(r.stdout)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64)
                for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def cachestat(path, ranges=((0, 0),)):
    """The host page cache's view of (off, len) ranges of a file (len 0: to the end),
    summed (cachestat(2), Linux 6.5+; syscall 451): {cache, dirty, writeback,
    evicted, recently_evicted} in pages, or None where the kernel lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    total = dict.fromkeys(n for n, _ in _Cachestat._fields_)
    try:
        for off, length in ranges:
            rng, cs = _CachestatRange(off, length), _Cachestat()
            if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
                return None
            for n in total:
                total[n] = (total[n] or 0) + getattr(cs, n)
        return total
    finally:
        os.close(fd)


def image_file(image, path, tmp):
    """PATH in the ext4 IMAGE as a host crash would leave it: (its bytes, its data
    blocks as (offset, length) ranges of the image).  A copy of the image has its
    journal replayed (e2fsck), then debugfs reads the file and lists its blocks."""
    copy = tmp / "image-copy.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True, timeout=60)
    fsck = subprocess.run(["e2fsck", "-fy", str(copy)], capture_output=True, text=True,
                          timeout=60)
    assert fsck.returncode in (0, 1), f"e2fsck of the image: {fsck.stdout}{fsck.stderr}"
    data = subprocess.run(["debugfs", "-R", f"cat {path}", str(copy)], capture_output=True,
                          timeout=60).stdout
    blocks = subprocess.run(["debugfs", "-R", f"blocks {path}", str(copy)], capture_output=True,
                            text=True, timeout=60).stdout.split()
    copy.unlink()
    return data, [(int(b) * 4096, 4096) for b in blocks if b.isdigit()]


def uptime():
    return float(get("/cgi-bin/uptime").split()[0])


@pytest.fixture(scope="module")
def wc(lab, tmp_path_factory):
    from conftest import Daemons
    d = Daemons(tmp_path_factory.mktemp("wc"))
    src = d.tmp / "src"
    src.mkdir()
    with open(src / "big", "wb") as f:
        f.write(os.urandom(BIG_MB << 20))
    d.server(heartbeat_ms=300)
    agent, state = start_agent(d, "agent-1", src)
    d.src, d.state, d.agent_proc = src, state, agent
    d.vols = wait_guest(d)
    yield d
    d.vcr.run("vm", "stop", VM, timeout=30)
    reports = d.stop_all()
    for f in glob.glob(f"/dev/shm/vcr-wchost-{VM}-*"):
        os.unlink(f)
    assert not reports, "sanitizer reports in daemon logs:\n" + "\n".join(reports)


def test_dax_is_on_for_the_pmem_volume(wc):
    lines = {kv(line)["mount"]: kv(line) for line in wc.vols.splitlines() if line.strip()}
    assert lines["/data"]["type"] == "pmem" and lines["/data"]["dax"] == "on"
    assert lines["/cold"]["type"] == "blk" and lines["/cold"]["dax"] == "off"
    serial = open(wc.state / f"{VM}.serial", errors="replace").read()
    assert "VCR-PMEM-DAX dev=pmem0 mount=/data dax=on" in serial


def image_blocks(image, path):
    """(offset, length) of each data block of PATH in the ext4 IMAGE (debugfs)."""
    out = subprocess.run(["debugfs", "-R", f"blocks {path}", str(image)], capture_output=True,
                         text=True, timeout=60).stdout.split()
    return [(int(b) * 4096, 4096) for b in out if b.isdigit()]


def test_data_survives_a_warm_reboot_without_host_disk_io(wc):
    size = BIG_MB << 20
    # In use before the reboot, as a running service's data would be.
    for path in ("/data/big", "/cold/big"):
        assert int(kv(get(f"/cgi-bin/readfile?{path}", 120))["bytes"]) == size
    w = kv(get("/cgi-bin/writefile?/data/w&4"))
    assert int(w["bytes"]) == 4 << 20
    t0 = time.monotonic()
    r = vcr_json(wc, "vm", "reboot", VM)
    assert r["result"] == "done" and r["cold"] is False and r["ready_ms"] > 0
    wait_guest(wc)
    assert uptime() < time.monotonic() - t0, "the guest did not reboot"
    assert kv(get("/cgi-bin/md5?/data/w"))["md5"] == w["md5"]
    # First read after the reboot: the guest's page cache is empty, but /data is the
    # image mapped shared, whose pages the host page cache still holds: not one of
    # them is read from disk.  /cold (virtio-blk cache=none) comes from the disk.
    pid = qemu_pid(wc)
    image = wc.state / "data.img"
    big = image_blocks(image, "/big")
    assert len(big) == size // 4096
    c0 = cachestat(image, big)
    rb0 = read_bytes(pid)
    assert int(kv(get("/cgi-bin/readfile?/data/big", 120))["bytes"]) == size
    rb1 = read_bytes(pid)
    c1 = cachestat(image, big)
    assert int(kv(get("/cgi-bin/readfile?/cold/big", 120))["bytes"]) == size
    rb2 = read_bytes(pid)
    print(f"QEMU read_bytes: pmem first read {rb1 - rb0}, virtio-blk first read {rb2 - rb1}; "
          f"host page cache of /big in the image before {c0}, after {c1}")
    if c0 is not None:
        assert c0["cache"] == len(big), (
            f"only {c0['cache']} of the {len(big)} pages of /big were in the host page cache "
            "after the reboot: the host reclaimed the others (docs/warm-cache.md, limits)")
        assert c1["cache"] == c0["cache"] and c1["evicted"] == c0["evicted"], (c0, c1)
    # QEMU's read_bytes counts its own page-ins too (its binary's pages, when the host
    # had evicted them: up to ~100 KB seen here), never the volume's 24 MB.
    assert rb1 - rb0 < size // 64, f"pmem read caused {rb1 - rb0} bytes of host disk reads"
    assert rb2 - rb1 >= size * 9 // 10, f"virtio-blk read only {rb2 - rb1} bytes from disk"
    want = hashlib.md5(open(wc.src / "big", "rb").read()).hexdigest()
    assert kv(get("/cgi-bin/md5?/data/big", 120))["md5"] == want


def test_flush_reaches_the_image_and_survives_an_agent_crash(wc):
    w = kv(get("/cgi-bin/writefile?/data/flushed&2"))
    r = vcr_json(wc, "vm", "flush", VM, "data")
    assert r["result"] == "done" and r["bytes"] == 96 << 20
    out = subprocess.run(["debugfs", "-R", "cat /flushed", str(wc.state / "data.img")],
                         capture_output=True, timeout=60)
    assert hashlib.md5(out.stdout).hexdigest() == w["md5"]
    # Agent crash: QEMU keeps the image mapped; data written after the flush is there too.
    later = kv(get("/cgi-bin/writefile?/data/later&1"))
    pid = qemu_pid(wc)
    wc.agent_proc.signal(signal.SIGKILL)
    wc.agent_proc.popen.wait(10)
    wc.agent_proc, _ = start_agent(wc, "agent-2", wc.src)
    labkit.wait_for("the VM adopted",
                    lambda: f"adopted qemu pid {pid} " in wc.agent_proc.log_text(), 60)
    wc.wait_vm_state(VM, "running", 30)
    assert qemu_pid(wc) == pid
    assert kv(get("/cgi-bin/md5?/data/later"))["md5"] == later["md5"]
    assert kv(get("/cgi-bin/md5?/data/flushed"))["md5"] == w["md5"]


def test_cold_reboot_comes_back_from_the_image(wc):
    w = kv(get("/cgi-bin/writefile?/data/cold-w&1"))
    pid, t0 = qemu_pid(wc), time.monotonic()
    r = vcr_json(wc, "vm", "reboot", VM, "--cold")
    assert r["result"] == "done" and r["cold"] is True and r["ready_ms"] > 5000
    wait_guest(wc)
    assert uptime() < time.monotonic() - t0 and qemu_pid(wc) != pid
    assert kv(get("/cgi-bin/md5?/data/cold-w"))["md5"] == w["md5"]


def test_synced_write_is_in_the_image_when_qemu_and_agent_are_killed(wc):
    """The guest's own sync is the only flush: right after it both QEMU and the agent
    die by SIGKILL, so no write-back, exit handler or `vcr vm flush` runs."""
    pid = qemu_pid(wc)
    w = kv(get("/cgi-bin/writefile?/data/synced&3"))  # answered after the guest's sync
    wc.agent_proc.signal(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    wc.agent_proc.popen.wait(10)

    def qemu_gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    labkit.wait_for("QEMU to die", qemu_gone, 10)
    image = wc.state / "data.img"
    got, blocks = image_file(image, "/synced", wc.tmp)
    assert len(got) == 3 << 20 and hashlib.md5(got).hexdigest() == w["md5"], (
        f"the image holds {len(got)} bytes of /synced, not the guest's synced 3 MB")
    # And it is on the disk, not only in the host page cache: none of the file's
    # pages is dirty (the guest's sync was QEMU's fsync of the image).
    stat = cachestat(image, blocks)
    print(f"the image's pages of /synced after the kill: {stat}")
    if stat is not None:
        assert stat["dirty"] == 0 and stat["writeback"] == 0, stat
    # The agent comes back, finds the QEMU ended unobserved (reported crashed, not
    # autostarted: the server decides); started again, the VM mounts the same image.
    wc.agent_proc, _ = start_agent(wc, "agent-killed", wc.src)
    wc.wait_vm_state(VM, "crashed", 60)
    r = wc.vcr.run("vm", "start", VM, timeout=40)
    assert r.returncode == 0, r.stderr
    wait_guest(wc)
    assert kv(get("/cgi-bin/md5?/data/synced"))["md5"] == w["md5"]


def test_corrupt_image_is_refused_and_the_vm_not_started(wc):
    wc.vcr.run("vm", "stop", VM, timeout=30)
    wc.wait_vm_state(VM, ["stopped", "shutdown"], 60)
    # Damage the image (it is the volume: nothing else holds the data).
    with open(wc.state / "data.img", "r+b") as f:
        f.seek(1080)
        f.write(b"\0\0")
    wc.agent_proc.stop()
    wc.agent_proc, _ = start_agent(wc, "agent-3", wc.src)
    v = wc.wait_vm_state(VM, "failed", 60)
    assert "is not ext4: magic 0x0000 at offset 1080" in v["cause"], v["cause"]
    assert "data.img" in v["cause"]
    assert not v.get("pid")
