#!/usr/bin/python3
"""bench-overhead: what a service is worth once it runs in its container, against the
same service in its own VM (the project's issue "Protect real workloads").

One run brings up the Debian 12 primary VM (lab/build-debian's primary.qcow2: nginx,
fio, iperf3) with a data volume, and the Debian 12 standby VM (lab/build-standby-disk)
whose warm container is built from the `ct-bench` image (ct-nginx + fio + iperf3), as the
server delivers it.  Both VMs have 1024 MB and 2 vCPUs, so that the container sees the
same virtual machine as the service did.  Then, --cycles times (default 3): the VM side
is measured; `vcr failover` moves the service into the container (the primary is fenced,
its data volume copied and attached in the container at the same path) and the
container side is measured; `vcr failback` brings it back (the container's data copied
back, the primary booted again).  Alternating the sides spreads the shared machine's
load drift over both.  Each side, each cycle: --rounds rounds (default 2) of HTTP and TCP,
the first of them with fio before (in the first --fio-runs cycles, default 3):
  fio      in the guest: 1 MiB sequential write
           and read of a --fio-size file (default 32M), 4 KiB random reads for
           --fio-runtime s (libaio, iodepth 8, direct I/O where the file system takes it),
           on the root file system (VM: ext4 on its virtio-blk qcow2 overlay; container:
           overlayfs over the image in the standby VM) and on the data volume (VM: ext4 on
           virtio-blk, cache=none; container: the volume's copy loop-mounted in the
           standby VM and bound in);
  HTTP     wrk -t1 -c8 -d--wrk-seconds --latency from the lab namespace (req/s, p50, p99);
  TCP      iperf3 -c for --iperf-seconds from the lab namespace to iperf3 -s in the guest.
How commands reach the guests, without anything added to the product: the script
bench/overhead-guest.sh is put on the data volume (its source_dir); the VM starts it from
its cloud-init user_data (`user_data`, docs/config-vm.md), the container from the
image's `cmd` (docs/server.md "Container images"), and both take their rounds' orders as
files the bench PUTs through nginx's WebDAV /data/ and answer with fio's JSON there.

Runs in its own lab namespace (VCR_LAB_NS, default vcrohbench), TCG.  Writes
bench/results/overhead.md, overhead.csv (one line per measurement) and overhead.png
(gnuplot: container/VM ratio per metric).  --report-only rewrites the .md and the plot
from the committed CSV.  `make bench-overhead`.
"""
import argparse
import csv
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrohbench")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
from harness import Daemons, machine_line, stats  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
GUEST_SCRIPT = os.path.join(ROOT, "bench", "overhead-guest.sh")
PRIMARY, P_INDEX, P_ADDR = "ohweb", 11, "10.77.0.51"
STANDBY, S_INDEX, S_ADDR = "ohsb", 12, "10.77.0.52"
SERVICE, CT, CT_ADDR = "www", "www-c", "10.77.0.53"
MEMORY_MB, VCPUS = 1024, 2
VOLUME_MB = 128
BOOT_TIMEOUT = 480
SIDES = {"vm": "VM", "ct": "container"}
# (key, label, unit, higher is better)
METRICS = [
    ("http_req_s", "HTTP requests/s (wrk -c8)", "req/s", True),
    ("http_p50_ms", "HTTP latency p50", "ms", False),
    ("http_p99_ms", "HTTP latency p99", "ms", False),
    ("tcp_mbit_s", "TCP throughput (iperf3, host -> guest)", "Mbit/s", True),
    ("rootfs_seqwrite_mb_s", "rootfs: sequential write 1 MiB", "MB/s", True),
    ("rootfs_seqread_mb_s", "rootfs: sequential read 1 MiB", "MB/s", True),
    ("rootfs_randread_iops", "rootfs: random read 4 KiB", "IOPS", True),
    ("volume_seqwrite_mb_s", "data volume: sequential write 1 MiB", "MB/s", True),
    ("volume_seqread_mb_s", "data volume: sequential read 1 MiB", "MB/s", True),
    ("volume_randread_iops", "data volume: random read 4 KiB", "IOPS", True),
]
FIELDS = ["side", "run", "metric", "value", "unit", "direct", "load1_start", "load1_end"]


def load1():
    return round(os.getloadavg()[0], 2)


def http(address, path, method="GET", body=None, timeout=5):
    argv = ["curl", "-s", "-f", "-m", str(timeout), "-X", method]
    if body is not None:
        argv += ["--data-binary", body]
    r = labkit.ns_run(argv + [f"http://{address}{path}"], timeout=timeout + 5)
    return r.stdout if r.returncode == 0 else None


def service(d):
    return next(s for s in d.vcr.json("services")["services"] if s["name"] == SERVICE)


def qemu_cpu_s(pid):
    """CPU seconds (user + system) a process has used, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(address, seconds):
    r = labkit.ns_run(["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency",
                       f"http://{address}/"], timeout=seconds + 60)
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk against {address}: rc {r.returncode}\n{out}\n{r.stderr}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        raise RuntimeError(f"wrk against {address} saw errors: {errors.group(0)}")

    def lat(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"wrk: no {pct}% latency in\n{out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return {"http_req_s": float(m.group(1)), "http_p50_ms": lat(50), "http_p99_ms": lat(99)}


def iperf(address, seconds):
    r = labkit.ns_run(["iperf3", "-c", address, "-t", str(seconds), "-O", "1", "-J"],
                      timeout=seconds + 60)
    try:
        res = json.loads(r.stdout)
        bps = res["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"iperf3 to {address}: rc {r.returncode} ({e})\n{r.stdout[-2000:]}")
    return {"tcp_mbit_s": bps / 1e6}


def fio_round(address, side, n, size, runtime, timeout):
    """One round of fio in the guest (overhead-guest.sh): the metrics and whether each
    target ran with direct I/O."""
    if http(address, f"/data/overhead/go-{side}-{n}", "PUT", f"{size} {runtime}\n") is None:
        raise RuntimeError(f"PUT go-{side}-{n} to {address} failed")
    labkit.wait_for(f"fio round {n} in the {SIDES[side]}",
                    lambda: http(address, f"/data/overhead/out-{side}/done-{n}"), timeout,
                    interval=1)
    errors = http(address, f"/data/overhead/out-{side}/errors")
    if errors:
        raise RuntimeError(f"{SIDES[side]}: {errors}")
    values, direct = {}, {}
    for target in ("rootfs", "volume"):
        direct[target] = http(address, f"/data/overhead/out-{side}/{target}-direct").strip()
        for job in ("seqwrite", "seqread", "randread"):
            text = http(address, f"/data/overhead/out-{side}/{target}-{job}-{n}.json")
            # fio may print notes before its JSON
            res = json.loads(text[text.index("{"):])["jobs"][0]
            io = res["write" if job == "seqwrite" else "read"]
            if job == "randread":
                values[f"{target}_{job}_iops"] = io["iops"]
            else:
                values[f"{target}_{job}_mb_s"] = io["bw_bytes"] / 1e6
    return values, direct


def measure_side(b, side, address, args, rows, other_pid, first, fio_first):
    """args.rounds rounds on one side, numbered from `first`; fio in the first one when
    fio_first.  Returns (CPU seconds the other VM's QEMU used meanwhile, or None when it
    does not run; seconds elapsed)."""
    def ready():
        text = http(address, f"/data/overhead/out-{side}/ready")
        return text is not None and text.strip() == str(first)
    labkit.wait_for(f"overhead-guest.sh ready for round {first} in the {SIDES[side]}",
                    ready, 300, interval=1)
    env = http(address, f"/data/overhead/out-{side}/env.txt") or ""
    if first == 1:
        print(f"{SIDES[side]}:\n{env}", flush=True)
    cpu0, t0 = (qemu_cpu_s(other_pid) if other_pid else None), time.monotonic()
    for n in range(first, first + args.rounds):
        start = load1()
        values, direct = {}, {}
        if fio_first and n == first:
            values, direct = fio_round(address, side, n, args.fio_size, args.fio_runtime,
                                       args.fio_timeout)
        values.update(wrk(address, args.wrk_seconds))
        values.update(iperf(address, args.iperf_seconds))
        end = load1()
        for key, _label, unit, _up in METRICS:
            if key in values:
                target = key.split("_", 1)[0]
                rows.append({"side": side, "run": n, "metric": key,
                             "value": f"{values[key]:.3f}", "unit": unit,
                             "direct": direct.get(target, ""), "load1_start": start,
                             "load1_end": end})
        print(f"  {SIDES[side]} run {n}: "
              + ", ".join(f"{k} {v:.1f}" for k, v in values.items())
              + f"; load {start} -> {end}", flush=True)
        write_csv(rows)
    cpu1 = qemu_cpu_s(other_pid) if other_pid else None
    used = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return used, time.monotonic() - t0


def user_data(path):
    """The primary's cloud-init user-data: at every boot (bootcmd: the VM boots again at each
    failback), start overhead-guest.sh once its data volume is mounted, as a transient
    systemd unit (nothing of it stays in the image).  --no-block: cloud-init's bootcmd runs
    before sysinit.target, which the unit waits for; waiting for it hung the boot."""
    path.write_text(
        "#cloud-config\n"
        "bootcmd:\n"
        "  - [systemd-run, --no-block, --unit=vcr-overhead, sh, -c, 'until [ -f "
        "/srv/data/overhead/overhead-guest.sh ]; do sleep 1; done; exec sh "
        "/srv/data/overhead/overhead-guest.sh vm']\n")
    return str(path)


def bring_up(d, tmp):
    meta_path = labkit.debian_image("ct-bench.json")
    disk = labkit.debian_image("primary.qcow2")
    standby, why = labkit.debian_standby_image()
    if not meta_path or not disk or not standby:
        sys.exit(f"bench-overhead needs the Debian images: {why or 'make image-debian'}")
    with open(meta_path) as f:
        meta = json.load(f)
    # The image's own command (nginx in the foreground) with the guest script beside it;
    # the script is on the data volume, so it starts only once the volume is attached.
    cmd = (f"sh -c 'sh /srv/data/overhead/overhead-guest.sh ct >/dev/null 2>&1 & "
           f"exec {meta['cmd'].replace(chr(39), chr(34))}'")
    image = {"name": "ct-bench", "file": labkit.debian_image("ct-bench.tar.gz"),
             "sha256": meta["sha256"], "cmd": cmd}
    src = tmp / "volume"
    (src / "overhead").mkdir(parents=True)
    (src / "overhead").chmod(0o777)  # nginx (www-data) takes the bench's PUTs there
    shutil.copy(GUEST_SCRIPT, src / "overhead" / "overhead-guest.sh")
    vm = labkit.debian_primary_entry(PRIMARY, P_INDEX, P_ADDR, memory_mb=MEMORY_MB,
                                     network="nocloud")
    vm["vcpus"] = VCPUS
    vm["user_data"] = user_data(tmp / "user-data.yaml")
    vm["volumes"] = [{"name": "vcrdata", "size_mb": VOLUME_MB, "source_dir": str(src),
                      "image": str(tmp / "vcrdata.img"), "mount": "/srv/data",
                      "cache": "none"}]
    svc = labkit.service_entry(SERVICE, "ohhost", PRIMARY, P_ADDR, "warm", STANDBY, CT,
                               CT_ADDR)
    svc["standby"]["image"] = "ct-bench"
    svc["data"] = {"volume": "vcrdata", "path": "/srv/data", "interval_s": 0}
    d.server(heartbeat_ms=500, host_timeout_ms=5000, dns=True, images=[image], services=[svc])
    d.agent("ohhost", [vm])
    d.agent("ohsbhost", [labkit.debian_standby_vm_entry(STANDBY, S_INDEX, S_ADDR, standby,
                                                        memory_mb=MEMORY_MB, vcpus=VCPUS)])

    def booted(name, check):
        def f():
            v = d.vcr.vm(name) or {}
            if v.get("state") in ("failed", "crashed"):
                raise SystemExit(f"VM {name}: {v}")
            return check()
        return f
    t0 = time.monotonic()
    labkit.wait_for("nginx of the Debian primary with its volume",
                    booted(PRIMARY, lambda: http(P_ADDR, "/data/overhead/overhead-guest.sh")),
                    BOOT_TIMEOUT, interval=1)
    labkit.wait_for("the warm container from ct-bench",
                    booted(STANDBY, lambda: http(CT_ADDR, "/", timeout=3)), BOOT_TIMEOUT,
                    interval=1)
    labkit.wait_for(f"service {SERVICE} ok", lambda: service(d)["state"] == "ok", 120,
                    interval=1)
    print(f"both VMs up, service ok: {time.monotonic() - t0:.0f} s", flush=True)


def failover(d):
    t0 = time.monotonic()
    r = d.vcr.run("failover", SERVICE)
    if r.returncode != 0:
        raise RuntimeError(f"vcr failover: {r.stderr}")
    labkit.wait_for(f"{SERVICE} served by its container",
                    lambda: service(d)["state"] == "recovered", 300, interval=1)
    labkit.wait_for("the data volume in the container",
                    lambda: http(CT_ADDR, "/data/overhead/overhead-guest.sh"), 120, interval=1)
    s = service(d)
    print(f"failover done in {time.monotonic() - t0:.0f} s; data {s.get('data')}", flush=True)


def failback(d):
    """The service back in its VM (the container's data copied back, the primary booted)."""
    t0 = time.monotonic()
    r = d.vcr.run("failback", SERVICE)
    if r.returncode != 0:
        raise RuntimeError(f"vcr failback: {r.stderr}")
    labkit.wait_for(f"{SERVICE} back in its VM",
                    lambda: service(d)["state"] == "ok"
                    and http(P_ADDR, "/data/overhead/overhead-guest.sh") is not None,
                    BOOT_TIMEOUT, interval=1)
    print(f"failback done in {time.monotonic() - t0:.0f} s", flush=True)


def values_of(rows, side, metric):
    return [float(r["value"]) for r in rows if r["side"] == side and r["metric"] == metric]


def fmt(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def cell(values):
    med, lo, hi = stats(values)
    return f"{fmt(med)} [{fmt(lo)}-{fmt(hi)}]"


def write_csv(rows):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "overhead.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def ratios(rows):
    """{metric: (ratio of the medians container/VM, lowest, highest over the runs)}."""
    out = {}
    for key, _label, _unit, _up in METRICS:
        vm, ct = values_of(rows, "vm", key), values_of(rows, "ct", key)
        if vm and ct:
            out[key] = (statistics.median(ct) / statistics.median(vm), min(ct) / max(vm),
                        max(ct) / min(vm))
    return out


def plot(rows):
    if not shutil.which("gnuplot"):
        return
    r = ratios(rows)
    data = os.path.join(RESULTS, "overhead-plot.dat")
    with open(data, "w") as f:
        for i, (key, _label, _unit, _up) in enumerate(METRICS):
            if key in r:
                f.write(f'{i} "{key}" {r[key][0]:.4f} {r[key][1]:.4f} {r[key][2]:.4f}\n')
    subprocess.run(["gnuplot"], text=True, check=True, input=f"""
set terminal pngcairo size 1000,520 noenhanced
set output '{os.path.join(RESULTS, "overhead.png")}'
set title 'Container in the standby VM vs the service in its own VM (ratio of medians, bars: run extremes)'
set ylabel 'container / VM'
set yrange [0:*]
set offsets 0.5,0.5,0.1,0
set style fill solid 0.5
set boxwidth 0.6
set xtics rotate by 30 right
set grid ytics
set key off
plot '{data}' using 1:3:xtic(2) with boxes lc rgb '#4477aa', \\
     '' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 0, \\
     1 with lines lc rgb 'red' dt 2
""")
    os.unlink(data)


def pct(ratio):
    """A container/VM ratio of a throughput as "x0.81 (19% lower)"."""
    d = (1 - ratio) * 100
    return f"x{ratio:.2f} ({abs(d):.0f}% {'lower' if d >= 0 else 'higher'})"


def compare_with_paper(r):
    """Sentences that set our ratios beside the paper's figures."""
    out = ["## Beside the paper", ""]
    if "http_req_s" in r:
        out.append(
            f"- HTTP: requests per second in the container {pct(r['http_req_s'][0])} against "
            "the VM (p50 latency x"
            f"{r['http_p50_ms'][0]:.2f}, p99 x{r['http_p99_ms'][0]:.2f}).  The paper measured "
            "its containers 14-31% slower with UnixBench (CPU-bound work, no network); our "
            "figure is a whole request path: the container's packets cross one more bridge "
            "(br0 in the standby VM) and a veth pair, and nginx runs in a cgroup of a VM "
            "that also runs the standby agent and LXC's monitor.")
    if "tcp_mbit_s" in r:
        out.append(f"- TCP: throughput into the container {pct(r['tcp_mbit_s'][0])} against "
                   "the VM (the paper: no loss).")
    disk = [(k, v[0]) for k, v in r.items() if k.startswith(("rootfs_", "volume_"))]
    if disk:
        lo, hi = min(disk, key=lambda x: x[1]), max(disk, key=lambda x: x[1])
        out.append(
            f"- Disk: container/VM from {lo[1]:.2f} ({lo[0]}) to {hi[1]:.2f} ({hi[0]}); the "
            "paper measured 3-47% lower disk throughput with fio.  Under TCG each I/O costs "
            "mostly emulated CPU time (the guest's block layer and virtio), not the disk, and "
            "both root disks sit in the host's page cache (qcow2, cache writeback): these "
            "ratios say what the container's layers (overlayfs, the loop device over a file "
            "of the standby's root) add in guest CPU, not what a slow disk would show.  The "
            "data volume's reads in the container may be served from the standby VM's page "
            "cache of `data.img` (a loop device without direct I/O on its backing file), "
            "where the VM's volume reads go to the host (cache none).")
    return out + [""]


def write_md(rows, info):
    r = ratios(rows)
    loads = [float(x[k]) for x in rows for k in ("load1_start", "load1_end")]
    runs = {s: len({x["run"] for x in rows if x["side"] == s}) for s in SIDES}
    fio_runs = {s: len({x["run"] for x in rows if x["side"] == s and "_" in x["metric"]
                        and x["metric"].split("_")[0] in ("rootfs", "volume")}) for s in SIDES}
    direct = {(x["side"], x["metric"].split("_")[0]): x["direct"] for x in rows if x["direct"]}
    out = ["# Overhead: the service in its container vs in its own VM", "",
           f"Machine: {machine_line()}.  No KVM: both guests run under TCG (QEMU's emulator), which "
           "makes every guest-side cost larger than on KVM; the ratios are what compares.  "
           "The machine is shared with other jobs: the load average below says how "
           "busy it was.", "",
           f"Runs: {runs['vm']} on the VM side, {runs['ct']} on the container side for HTTP and "
           f"TCP, fio in {fio_runs['vm']} / {fio_runs['ct']} of them, in "
           f"{info.get('cycles', '?')} cycle(s) of VM side, failover, container side, failback "
           "(so that both sides share the machine's load drift).  Cells: median "
           "[min-max] over the runs.  Host load average (1 min) at the start and end of the "
           "runs: " + (f"median {statistics.median(loads):.2f}, min {min(loads):.2f}, max "
                       f"{max(loads):.2f}" if loads else "not recorded") + ".", "",
           "Setup (`make bench-overhead`, `bench/overhead.py`): the Debian 12 primary VM "
           "(`primary.qcow2` of `lab/build-debian`: nginx-light, fio, iperf3) and the Debian "
           f"12 standby VM (`lab/build-standby-disk`), both {MEMORY_MB} MB and {VCPUS} vCPUs "
           "(TCG, `thread=multi`).  The container is the service's warm container, built "
           "from the **`ct-bench`** image (`ct-nginx` + fio + iperf3; `ct-nginx` itself has "
           "no benchmark tools) delivered by the server; the same nginx site, the same "
           "nginx configuration.  `vcr failover www` fences the primary, copies its data "
           "volume to the standby and attaches it in the container at `/srv/data` (the "
           "container restarts with it); `vcr failback www` copies it back and boots the "
           "primary again.  Clients run "
           "on the host in the lab namespace (bridge + taps): wrk -t1 -c8 for "
           f"{info.get('wrk_seconds', '?')} s against `/` (nginx's index.html), iperf3 "
           f"-c for {info.get('iperf_seconds', '?')} s (the first second omitted), host -> "
           "guest.  fio runs in the guest (`bench/overhead-guest.sh`, libaio, iodepth 8, "
           f"file {info.get('fio_size', '?')}, random reads for "
           f"{info.get('fio_runtime', '?')} s, zero-filled buffers), with nothing else "
           "running.", "",
           *([f"**A short run: {min(runs.values())} run(s) per point, fewer than the 3 "
              "this benchmark is meant to have (`make bench-overhead`); read its ratios as "
              "indications only.**", ""] if min(runs.values()) < 3 else []),
           "What the storage is on each side:", "",
           "| target | VM | container |", "|---|---|---|",
           "| rootfs | ext4 on virtio-blk (the VM's qcow2 overlay, host cache writeback) | "
           "overlayfs (upper on the standby VM's ext4 root, lower the unpacked image) on "
           "virtio-blk (the standby VM's qcow2 overlay, host cache writeback) |",
           "| data volume | ext4 on its own virtio-blk disk (raw image, host cache none, "
           "mounted `sync` by the image's fstab) | the volume's copy (`data.img` on the "
           "standby VM's root) loop-mounted in the standby VM, bound in at `/srv/data` "
           "(docs/data.md) |", "",
           "Direct I/O (O_DIRECT probe with dd, then fio `--direct`): "
           + ", ".join(f"{SIDES[s]} {t}: {'yes' if direct.get((s, t)) == '1' else 'no'}"
                       for s in SIDES for t in ("rootfs", "volume")
                       if (s, t) in direct) + ".", "",
           "| metric | unit | VM | container | container / VM | paper |",
           "|---|---|---|---|---|---|"]
    paper = {"http_req_s": "14-31% slower (UnixBench, CPU)", "tcp_mbit_s": "no loss",
             "rootfs_seqwrite_mb_s": "3-47% lower (fio)", "rootfs_seqread_mb_s": "3-47% lower",
             "rootfs_randread_iops": "3-47% lower", "volume_seqwrite_mb_s": "3-47% lower",
             "volume_seqread_mb_s": "3-47% lower", "volume_randread_iops": "3-47% lower"}
    for key, label, unit, _up in METRICS:
        vm, ct = values_of(rows, "vm", key), values_of(rows, "ct", key)
        if not vm or not ct:
            continue
        q = r[key]
        out.append(f"| {label} | {unit} | {cell(vm)} | {cell(ct)} | **{q[0]:.2f}** "
                   f"[{q[1]:.2f}-{q[2]:.2f}] | {paper.get(key, '')} |")
    out += ["", "container / VM: the ratio of the medians (in brackets: the lowest container "
            "run over the highest VM run, and the other way round).  Above 1 is better for "
            "the container on throughput and IOPS, worse on latency.", ""]
    if info.get("other_cpu"):
        out += ["The other VM meanwhile (CPU of its QEMU process, share of one host core): "
                + "; ".join(f"during the {SIDES[s]} side: {v * 100:.0f}%"
                            for s, v in info["other_cpu"].items() if v is not None)
                + " (while the VM side runs, the standby VM idles beside it with its warm "
                "container; while the container side runs, the primary is fenced: gone).", ""]
    out += compare_with_paper(r)
    out += ["", "Raw data: `bench/results/overhead.csv` (one line per measurement), plot "
            "`overhead.png`.  Rerun: `make bench-overhead`; "
            "`bench/overhead.py --help` for the knobs, `--report-only` to rewrite this "
            "file from the CSV."]
    with open(os.path.join(RESULTS, "overhead.md"), "w") as f:
        f.write("\n".join(out) + "\n")


def load_rows():
    with open(os.path.join(RESULTS, "overhead.csv")) as f:
        return list(csv.DictReader(f))


INFO = os.path.join(RESULTS, "overhead-run.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cycles", type=int, default=3,
                    help="VM side, failover, container side, failback: this many times (3)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="HTTP and TCP rounds per side in each cycle (2)")
    ap.add_argument("--fio-runs", type=int, default=3,
                    help="cycles whose first round runs fio too (the first 3)")
    ap.add_argument("--fio-size", default="32M")
    ap.add_argument("--fio-runtime", type=int, default=10)
    ap.add_argument("--fio-timeout", type=int, default=600,
                    help="deadline for one fio round in a guest (s)")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--iperf-seconds", type=int, default=6)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite overhead.md and overhead.png from the committed CSV")
    args = ap.parse_args()
    if args.report_only:
        rows = load_rows()
        info = json.load(open(INFO)) if os.path.exists(INFO) else {}
        write_md(rows, info)
        plot(rows)
        print(open(os.path.join(RESULTS, "overhead.md")).read())
        return
    if os.geteuid() != 0:
        sys.exit("bench-overhead needs root (lab namespace, taps)")
    # SIGTERM (timeout(1), Ctrl-C's cousin) tears the lab down like any other exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = {k: getattr(args, k) for k in ("wrk_seconds", "iperf_seconds", "fio_size",
                                          "fio_runtime", "cycles")}
    labkit.lab_up()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="vcr-bench-oh-"))
    d = Daemons(tmp, os.path.abspath(args.build))
    rows, info["other_cpu"] = [], {}
    try:
        bring_up(d, tmp)
        standby_pid = d.vcr.vm(STANDBY)["pid"]
        used = {"vm": [0.0, 0.0]}
        for cycle in range(args.cycles):
            first = 1 + cycle * args.rounds
            cpu, secs = measure_side(d, "vm", P_ADDR, args, rows, standby_pid, first,
                                     cycle < args.fio_runs)
            used["vm"] = [used["vm"][0] + (cpu or 0), used["vm"][1] + secs]
            failover(d)
            measure_side(d, "ct", CT_ADDR, args, rows, None, first, cycle < args.fio_runs)
            if cycle + 1 < args.cycles:
                failback(d)
        info["other_cpu"]["vm"] = used["vm"][0] / used["vm"][1]
    finally:
        reports = d.stop_all()
        labkit.lab_down()
        if reports:
            print("problems:\n" + "\n".join(reports), file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(INFO, "w") as f:
        json.dump(info, f, indent=1)
    write_md(rows, info)
    plot(rows)
    print(open(os.path.join(RESULTS, "overhead.md")).read())


if __name__ == "__main__":
    main()
