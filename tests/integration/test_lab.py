"""The lab itself: `lab up` is idempotent, `lab down` leaves nothing behind, even after
a crash that left processes and files around.  Runs after test_foundation (file order)."""
import fcntl
import glob
import os
import subprocess

import labkit


def held_open():
    """/dev/shm/vcr-* files some process has open or mapped (another lab's VMs on this
    machine: `lab down` must leave those alone)."""
    held = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
            with open(f"/proc/{pid}/maps") as f:
                held.update(line.split()[-1] for line in f if "/dev/shm/vcr-" in line)
        except OSError:
            continue
    return held


def leftovers():
    found = []
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if any(line.split()[0] == labkit.NS for line in r.stdout.splitlines() if line.strip()):
        found.append(f"namespace {labkit.NS}")
    if os.path.exists(labkit.RUN_DIR):
        found.append(labkit.RUN_DIR)
    held = held_open()
    found += [f for f in glob.glob("/dev/shm/vcr-*") if f not in held]
    # Processes of this lab name its run directory.  A zombie (<defunct>, state Z)
    # holds nothing of the lab's: it only waits for its parent to reap it (fence
    # watchdogs are reparented to whatever reaps orphans here).
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    found += [line for line in ps.splitlines()
              if labkit.RUN_DIR in line and "pytest" not in line
              and not line.split()[1].startswith("Z")]
    return found


def test_up_is_idempotent(lab):
    r = labkit.lab("up")
    assert r.returncode == 0, r.stderr
    assert labkit.dig("ns.vcr.lab") == [lab["VCR_LAB_DNS"]]


def test_tsig_signed_update_is_accepted(lab):
    script = f"server {lab['VCR_LAB_DNS']}\nupdate add probe.vcr.lab 5 A 10.77.0.99\nsend\n"
    r = subprocess.run(labkit.in_ns(["nsupdate", "-k", lab["VCR_LAB_TSIG_FILE"]]), input=script,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert labkit.dig("probe.vcr.lab") == ["10.77.0.99"]


def test_down_after_crash_leaves_nothing(lab):
    # Leave things behind as a crash would: a stray process in the namespace and a
    # RAM file in /dev/shm.
    stray = subprocess.Popen(labkit.in_ns(["sleep", "600"]), stdin=subprocess.DEVNULL)
    with open("/dev/shm/vcr-crashtest.ram", "w") as f:
        f.write("x")
    try:
        r = labkit.lab("down")
        assert r.returncode == 0, r.stderr
        assert stray.wait(timeout=10) is not None
        assert leftovers() == []
        assert labkit.lab("down").returncode == 0  # idempotent
    finally:
        labkit.lab_up()  # leave the lab as the session fixture expects, pass or fail


def test_named_keeps_no_descriptor_of_its_caller(lab, tmp_path):
    """`flock LOCK lab/lab up` (how the lab lock is taken) once handed LOCK's descriptor to
    named, which kept the lock taken until `lab down`: every later user of the lock waited."""
    lock = tmp_path / "lock"
    try:
        assert labkit.lab("down").returncode == 0
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            r = subprocess.run([labkit.LAB, "up"], pass_fds=(fd,), capture_output=True,
                               text=True)
        finally:
            os.close(fd)
        assert r.returncode == 0, r.stderr
        other = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while held
        finally:
            os.close(other)
    finally:
        labkit.lab_up()
