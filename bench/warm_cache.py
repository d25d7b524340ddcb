#!/usr/bin/python3
"""bench-warm-cache: file reads and web throughput around a guest reboot, warm-cache
volume (virtio-pmem + DAX over its disk image, mapped shared) vs conventional disks.

File reads: one VM per method with one ext4 volume holding a FILE_MB file (built by
mkfs.ext4 -d from a host directory).  In the guest, /usr/bin/readtime (lab/guest/readtime.c)
reads the whole file in 1 MiB blocks and times its own read loop (CLOCK_MONOTONIC, as GNU
dd's report times its copy loop) and, apart, its open() of the file; both and the CGI's
clock around the process are kept in the CSV.  Before the reboot twice (1st: fresh boot, nothing cached; 2nd: warm), then
`vcr vm reboot VM` (guest reset, same QEMU), then twice again.
  warm-cache     volume on virtio-pmem, mounted -o dax (no guest page cache needed)
  blk-none       virtio-blk, cache=none (O_DIRECT on the host image)
  blk-writeback  virtio-blk, cache=writeback (host page cache keeps the image)
  prefetch       virtio-blk cache=none; the guest reads the files listed in
                 MOUNT/.vcr-prefetch at boot (lab/guest/init), the reads start after it
Web: WEB_FILES static files of 1 MB on the volume served by the guest's httpd; CLIENTS
clients fetch random ones for the whole run; completed requests counted per second
around a reboot: warm-cache (warm reboot, pmem) vs conventional (--cold, virtio-blk
cache=none: the page cache is empty after the reboot).

--guest debian (`make bench-warm-cache GUEST=debian`): the web part on the Debian 12 primary
guest of lab/build-debian (systemd, nginx-light with Debian's `sendfile on`), DEB_MEMORY_MB
of RAM, 1 vCPU: a site of DEB_FILES files of DEB_FILE_KB KB (600 MB, more than the guest's
page cache holds) on a DEB_VOLUME_MB volume that the guest mounts by its own fstab
(cloud-init user-data; `-o dax` on the warm-cache volume); DEB_CLIENTS keep-alive clients
(threads of one process in the lab namespace, time-bounded) GET random files from the
VM's boot until --web-after (20) seconds past ready; the reboot --web-before (40) seconds
into the load.  Per second: requests, bytes, the CPU of QEMU's busiest thread (the TCG
vCPU) and of all its threads, QEMU's reads from the host disk.  Writes
warm-cache-debian.md, warm-cache-debian-web.csv (per second), warm-cache-debian-web-runs.csv
(per run) and warm-cache-debian-web.png (the 10 s before the reboot order, the 10 s after
ready and the 10 s from nginx's first answer after the reboot, which comes before ready);
--deb-memory-mb N (not 384): warm-cache-debian-ramN.* instead, with
warm-cache-debian-ramN-notes.md, if present, appended to the report; --append adds to the
runs already there (one lab hold per run), --report-only rewrites them from the CSVs.  The
bench's user-data lets
cloud-init run on the VM's first boot only (--cloud-init-every-boot: on every boot, as
the image does), and a client's new connection has a 0.5 s timeout of its own.  --probe
samples the guest's CPU use per process every second of the reboot's boot
(warm-cache-debian-probe-METHOD-N.txt).  --reads (`READS=1`): the file reads instead:
GNU dd in the guest reads a DEB_READ_FILE_MB file of the volume twice, `vcr vm reboot`,
twice again (warm-cache vs blk-none, virtio-blk cache=none), into warm-cache-debian-read.csv,
its table in warm-cache-debian.md and warm-cache-debian-read.png.

Every point is measured --runs times (default 3), each run on a freshly started agent and
VM; the summary gives the median with min and max, and the host's load average at the
start and end of each run.  Runs inside its own lab namespace (VCR_LAB_NS, default
vcrwcbench), TCG only.  Writes bench/results/warm-cache.md, the raw per-run data
warm-cache.csv (file reads), warm-cache-web.csv (requests per second) and
warm-cache-web-runs.csv (one line per web run), and warm-cache-{read,web}.png (gnuplot).
"""
import argparse
import csv
import glob
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("VCR_LAB_NS", "vcrwcbench")
sys.path.insert(0, os.path.join(ROOT, "lab"))
import labkit  # noqa: E402
from harness import Daemons, agent_proc, machine_line, stats  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
FILE_MB = 128
VOLUME_MB = 320
MEMORY_MB = 512
WEB_FILES = 96
CLIENTS = 4
BOOT_TIMEOUT = 180
METHODS = ["warm-cache", "blk-none", "blk-writeback", "prefetch"]
PAPER = {
    "file_speedup": 15.0, "web_speedup": 3.0, "file_vs_2nd": 0.64, "web_vs_2nd": 0.92,
    "warm_drop": "6% lower for 20 s", "cold_drop": "44% lower for 33 s",
}


class Bench:
    def __init__(self, build, tmp):
        self.d = Daemons(tmp, build)
        self.tmp = tmp

    def agent(self, index, method, src):
        name, addr = f"b{index}", f"10.77.0.{40 + index}"
        host = f"wcb{index}"
        state = self.tmp / f"agent-{host}"
        state.mkdir(exist_ok=True)
        cfg = self.tmp / f"agent-{host}.yaml"
        vm = labkit.vm_entry(name, index, addr, memory_mb=MEMORY_MB)
        labkit.write_agent_config(cfg, host, str(state), [vm])
        warm = method == "warm-cache"
        cache = "writeback" if method == "blk-writeback" else "none"
        line = (f"      - {{name: vol, size_mb: {VOLUME_MB}, source_dir: {src}, "
                f"image: {state}/vol.img, mount: /data, "
                + ("warm_cache: true}" if warm else f"cache: {cache}}}"))
        with open(cfg, "a") as f:
            f.write("    volumes:\n" + line + "\n")
        p = agent_proc(self.d.build, cfg, self.tmp / f"{host}.log", "--log-level", "info")
        self.d.procs.append(p)
        return p, name, addr, state

    def vcr_json(self, *args, timeout=240):
        r = self.d.vcr.run(*args, "--json", timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"vcr {' '.join(args)}: {r.stderr.strip()}")
        return json.loads(r.stdout)


def wait_ready(b, name, addr):
    v = b.d.wait_vm_state(name, ["running", "failed"], BOOT_TIMEOUT)
    if v["state"] == "failed":
        raise RuntimeError(f"VM {name} failed: {v.get('cause')}")
    labkit.wait_for(f"{name}'s volume", lambda: "mount=/data" in (
        labkit.http_get(addr, "/cgi-bin/volumes", 2) or ""), BOOT_TIMEOUT, interval=0.2)


def guest_read(addr, path):
    """One read of path in the guest (/cgi-bin/readfile): seconds of the reader's own read
    loop, of its first 1 MiB read(), of its open() (outside the read loop, as in dd), and of
    the CGI's clock around the reader process."""
    out = labkit.http_get(addr, f"/cgi-bin/readfile?{path}", timeout=300)
    kv = dict(re.findall(r"\b(\w+)=(\d+)\b", out or ""))
    if not {"bytes", "ns", "first_ns", "open_ns", "outer_ns"} <= kv.keys() or \
            int(kv["bytes"]) != FILE_MB << 20:
        raise RuntimeError(f"readfile {path}: {out!r}")
    return (int(kv["ns"]) / 1e9, int(kv["first_ns"]) / 1e9, int(kv["open_ns"]) / 1e9,
            int(kv["outer_ns"]) / 1e9)


def make_source(tmp, prefetch):
    src = tmp / ("src-prefetch" if prefetch else "src")
    (src / "web").mkdir(parents=True)
    with open(src / "big", "wb") as f:
        for _ in range(FILE_MB):
            f.write(os.urandom(1 << 20))
    for i in range(WEB_FILES):
        with open(src / "web" / f"f{i}", "wb") as f:
            f.write(os.urandom(1 << 20))
    if prefetch:
        with open(src / ".vcr-prefetch", "w") as f:
            f.write("big\n" + "".join(f"web/f{i}\n" for i in range(WEB_FILES)))
    return src


def serial_has(state, name, text, since=0):
    try:
        with open(state / f"{name}.serial", errors="replace") as f:
            return text in f.read()[since:]
    except OSError:
        return False


def load1():
    return round(os.getloadavg()[0], 2)


def bench_reads(b, index, method, src, rep, rows):
    """One run: a fresh agent and VM, two reads, a warm reboot, two reads."""
    load_start = load1()
    agent, name, addr, state = b.agent(index, method, src)
    wait_ready(b, name, addr)
    if method == "prefetch":
        labkit.wait_for("the boot prefetch", lambda: serial_has(state, name, "prefetched"),
                        BOOT_TIMEOUT)
    res = {}

    def timed_reads(phase):
        for read in (1, 2):
            res[(phase, read)] = guest_read(addr, "/data/big")

    timed_reads("before")
    r = b.vcr_json("vm", "reboot", name)
    reboot_ms = r["ready_ms"]
    wait_ready(b, name, addr)
    if method == "prefetch":
        labkit.wait_for("the boot prefetch", lambda: serial_has(state, name, "prefetched"),
                        BOOT_TIMEOUT, interval=0.1)
    timed_reads("after")
    b.d.vcr.run("vm", "kill", name, timeout=30)
    b.d.wait_vm_state(name, ["stopped", "crashed"], 60)
    agent.stop()
    load_end = load1()
    for (phase, read), (sec, first, opened, cgi) in sorted(
            res.items(), key=lambda kv: (kv[0][0] != "before", kv[0][1])):
        rows.append({"method": method, "rep": rep, "phase": phase, "read": read,
                     "seconds": round(sec, 5), "mb_per_s": round(FILE_MB / sec, 1),
                     "first_block_seconds": round(first, 5), "open_seconds": round(opened, 6),
                     "cgi_seconds": round(cgi, 5),
                     "reboot_ready_ms": round(reboot_ms), "load1_start": load_start,
                     "load1_end": load_end})
        print(f"  {method:14} run {rep} {phase:6} read {read}: {sec:.4f} s "
              f"{FILE_MB / sec:8.1f} MB/s (1st MiB {first * 1000:.1f} ms; open "
              f"{opened * 1000:.2f} ms; timed by the "
              f"CGI {cgi:.4f} s)", flush=True)
    print(f"  {method:14} run {rep}: reboot until ready {reboot_ms / 1000:.1f} s, "
          f"load {load_start} -> {load_end}", flush=True)


def load(addr, stop, counts, t0):
    """One client: GET random volume files until stop; counts[second] += 1 per answer."""
    rnd = random.Random()
    script = ("import random,sys,time,urllib.request\n"
              "t0=float(sys.argv[1]);n=int(sys.argv[2])\n"
              "while True:\n"
              "  try:\n"
              f"    urllib.request.urlopen('http://{addr}/data/web/f%d'%random.randrange(n),"
              "timeout=5).read()\n"
              "    print(int(time.time()-t0),flush=True)\n"
              "  except Exception:\n"
              "    time.sleep(0.05)\n")
    p = subprocess.Popen(labkit.in_ns([sys.executable, "-c", script, str(t0), str(WEB_FILES)]),
                         stdout=subprocess.PIPE, text=True)
    rnd.random()
    for line in p.stdout:
        if stop.is_set():
            break
        s = int(line)
        counts[s] = counts.get(s, 0) + 1
    p.kill()
    p.wait()


def bench_web(b, index, method, src, before_s, after_s):
    load_start = load1()
    agent, name, addr, state = b.agent(index, "warm-cache" if method == "warm-cache"
                                       else "blk-none", src)
    wait_ready(b, name, addr)
    # Warm the guest's cache as a running server's would be.
    for i in range(WEB_FILES):
        labkit.ns_run(["curl", "-s", "-o", "/dev/null", "-m", "30",
                       f"http://{addr}/data/web/f{i}"], timeout=40)
    t0 = time.time()
    stop, counts = threading.Event(), {}
    threads = [threading.Thread(target=load, args=(addr, stop, counts, t0), daemon=True)
               for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(before_s)  # load phase of fixed length (measured, not waited on)
    reboot_at = time.time() - t0
    r = b.vcr_json("vm", "reboot", name, *([] if method == "warm-cache" else ["--cold"]))
    ready_at = reboot_at + r["ready_ms"] / 1000
    end = ready_at + after_s
    while time.time() - t0 < end:
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(10)
    b.d.vcr.run("vm", "kill", name, timeout=30)
    b.d.wait_vm_state(name, ["stopped", "crashed"], 60)
    agent.stop()
    series = [counts.get(s, 0) for s in range(int(end))]
    return {"series": series, "reboot_at": reboot_at, "ready_at": ready_at,
            "load1_start": load_start, "load1_end": load1()}


def gnuplot(script):
    if shutil.which("gnuplot"):
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def cell(values, fmt="{:.3f}"):
    med, lo, hi = stats(values)
    return f"{fmt.format(med)} [{fmt.format(lo)}-{fmt.format(hi)}]"


def read_rows(rows, method, phase, read):
    return [r for r in rows
            if r["method"] == method and r["phase"] == phase and int(r["read"]) == read]


def read_values(rows, method, phase, read, key="seconds"):
    return [float(r[key]) for r in read_rows(rows, method, phase, read)]


def open_read_values(rows, method, phase, read):
    """The reader's open() plus its read loop (open_seconds + seconds), for rows that have
    open_seconds (readtime's open_ns)."""
    return [float(r["seconds"]) + float(r["open_seconds"])
            for r in read_rows(rows, method, phase, read)
            if r.get("open_seconds") not in ("", None)]


def cgi_excess_values(rows, method, phase, read):
    """Seconds of the CGI's time around the reader beyond the reader's open() and read loop:
    starting and ending the reader process and the CGI's own clock reads."""
    return [float(r["cgi_seconds"]) - float(r["seconds"]) - float(r["open_seconds"])
            for r in read_rows(rows, method, phase, read)
            if r.get("open_seconds") not in ("", None) and r.get("cgi_seconds")]


def page_cache_reference(rows):
    """(median seconds, method, phase) of the fastest virtio-blk 2nd read: served by the
    guest's page cache, a memory copy in the guest with no warm-cache volume involved; None
    without such reads."""
    pc = [(statistics.median(read_values(rows, m, p, 2)), m, p)
          for m in ("blk-none", "blk-writeback") for p in ("before", "after")
          if read_values(rows, m, p, 2)]
    return min(pc) if pc else None


def per_run_ratios(rows, method, num, den, key=read_values):
    """Per run (in rep order): key(num) / key(den) of the same run, num and den being
    (phase, read)."""
    out = []
    for rep in sorted({int(r["rep"]) for r in rows if r["method"] == method}):
        one = [r for r in rows if r["method"] == method and int(r["rep"]) == rep]
        a, b = key(one, method, *num), key(one, method, *den)
        if a and b:
            out.append(a[0] / b[0])
    return out


def web_origin(web_loaded):
    """When the web rows were kept from an earlier run (--no-web, or --report-only after
    one): (commit, date, that run's Machine line or None) of warm-cache-web-runs.csv's last
    commit; else None.  The web rows are older than the reads when the web CSV is committed
    unchanged and the reads' CSV was changed after it (in the work tree or a later commit)."""
    if not web_loaded:
        return None
    rel = os.path.relpath(RESULTS, ROOT)
    web_csv, read_csv = f"{rel}/warm-cache-web-runs.csv", f"{rel}/warm-cache.csv"

    def git(*a):
        r = subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    if git("status", "--porcelain", "--", web_csv) != "":
        return None  # new web rows (or no git): this run's
    web_c = git("log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M UTC", "--",
                web_csv)
    read_c = git("log", "-1", "--format=%h", "--", read_csv)
    read_dirty = git("status", "--porcelain", "--", read_csv)
    if not web_c or (not read_dirty and read_c == web_c.split()[0]):
        return None
    commit, date = web_c.split(" ", 1)
    old = git("show", f"{commit}:{rel}/warm-cache.md") or ""
    m = re.search(r"^Machine: (.*?; TCG)\.", old, re.M)
    return commit, date, (m.group(1) if m else None)


def reboot_values(rows, method):
    """reboot_ready_ms of each run of a method (one per run)."""
    seen = {}
    for r in rows:
        if r["method"] == method:
            seen[int(r["rep"])] = float(r["reboot_ready_ms"])
    return list(seen.values())


PHASES = (("before", 1), ("before", 2), ("after", 1), ("after", 2))


def plot_reads(rows, methods, png, title):
    """MB/s per method and read (PHASES): medians with min-max bars, log scale."""
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    dat = os.path.join(tmp, "read.dat")
    with open(dat, "w") as f:
        for m in methods:
            if not read_values(rows, m, "before", 1):
                continue
            cols = []
            for p, r in PHASES:
                cols += list(stats(read_values(rows, m, p, r, "mb_per_s")))
            f.write(m + " " + " ".join(f"{c}" for c in cols) + "\n")
    gnuplot(f"""
set terminal pngcairo size 960,560 font 'sans,11'
set output '{RESULTS}/{png}'
set title '{title}'
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set logscale y
set ylabel 'MB/s (log scale)'
set key top left
set grid ytics
plot '{dat}' using 2:3:4:xtic(1) title 'before, 1st', '' using 5:6:7 title 'before, 2nd', \\
     '' using 8:9:10 title 'after reboot, 1st', '' using 11:12:13 title 'after reboot, 2nd'
""")
    shutil.rmtree(tmp, ignore_errors=True)


def plot(rows, web):
    plot_reads(rows, METHODS, "warm-cache-read.png",
               f"Reading a {FILE_MB} MB file before and after a guest reboot (TCG; median, "
               "min-max bars)")
    plot_web(web, "warm-cache-web.png",
             f"Web requests/s (1 MB files, {CLIENTS} clients) around a guest reboot (TCG)")


def plot_web(web, png, title):
    """Requests/s per second from the reboot order: median of the runs, min-max band."""
    tmp = tempfile.mkdtemp(prefix="vcr-plot-")
    plots = []
    colours = {"warm-cache": "#1f77b4", "conventional": "#d62728"}
    for m, runs in web.items():
        if not runs:
            continue
        # Per second from the reboot order: median and range over the runs.
        per = {}
        for w in runs:
            for sec, c in enumerate(w["series"]):
                per.setdefault(sec - int(round(w["reboot_at"])), []).append(c)
        p = os.path.join(tmp, f"web-{m}.dat")
        with open(p, "w") as f:
            for t in sorted(per):
                if len(per[t]) == len(runs):
                    med, lo, hi = stats(per[t])
                    f.write(f"{t} {med} {lo} {hi}\n")
        col = colours.get(m, "black")
        plots.append(f"'{p}' using 1:3:4 with filledcurves fs transparent solid 0.2 "
                     f"lc rgb '{col}' notitle")
        plots.append(f"'{p}' using 1:2 with lines lw 2 lc rgb '{col}' "
                     f"title '{m} (median of {len(runs)}; band: min-max)'")
    if plots:
        gnuplot(f"""
set terminal pngcairo size 960,480 font 'sans,11'
set output '{RESULTS}/{png}'
set title '{title}'
set xlabel 'seconds from the reboot order'
set ylabel 'requests/s'
set grid
plot {', '.join(plots)}
""")
    shutil.rmtree(tmp, ignore_errors=True)


def web_stats(w, window=10):
    s = w["series"]
    pre = s[max(0, int(w["reboot_at"]) - window):int(w["reboot_at"])]
    ready = int(w["ready_at"]) + 1
    post = s[ready:ready + window]
    late = s[-window:]
    avg = lambda x: sum(x) / len(x) if x else 0.0  # noqa: E731
    return avg(pre), avg(post), avg(late)


READ_FIELDS = ["method", "rep", "phase", "read", "seconds", "mb_per_s", "first_block_seconds",
               "open_seconds", "cgi_seconds", "reboot_ready_ms", "load1_start", "load1_end"]
WEB_RUN_FIELDS = ["method", "rep", "reboot_at_s", "ready_at_s", "req_s_10s_before",
                  "req_s_10s_after_ready", "req_s_last_10s", "load1_start", "load1_end"]


def write_csvs(rows, web):
    with open(os.path.join(RESULTS, "warm-cache.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, READ_FIELDS, restval="")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(RESULTS, "warm-cache-web.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "rep", "second", "s_from_reboot_order", "requests"])
        for m, runs in web.items():
            for rep, run in enumerate(runs, 1):
                for sec, c in enumerate(run["series"]):
                    w.writerow([m, rep, sec, round(sec - run["reboot_at"], 1), c])
    with open(os.path.join(RESULTS, "warm-cache-web-runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, WEB_RUN_FIELDS)
        w.writeheader()
        for m, runs in web.items():
            for rep, run in enumerate(runs, 1):
                pre, post, late = web_stats(run)
                w.writerow({"method": m, "rep": rep, "reboot_at_s": round(run["reboot_at"], 1),
                            "ready_at_s": round(run["ready_at"], 1),
                            "req_s_10s_before": round(pre, 2),
                            "req_s_10s_after_ready": round(post, 2),
                            "req_s_last_10s": round(late, 2),
                            "load1_start": run["load1_start"], "load1_end": run["load1_end"]})


def first_read_loss(rows):
    """Whether and where the warm-cache first read after the reboot loses against the warm
    2nd read before it, from the reader's own times, its first 1 MiB, its open() and the
    CGI's time around it."""
    runs = {}
    for r in rows:
        if r["method"] == "warm-cache" and r.get("cgi_seconds"):
            runs.setdefault(r["rep"], {})[(r["phase"], int(r["read"]))] = r
    pairs = [(float(d[("before", 2)]["seconds"]), float(d[("after", 1)]["seconds"]))
             for d in runs.values() if ("before", 2) in d and ("after", 1) in d]
    if not pairs or not open_read_values(rows, "warm-cache", "after", 1):
        return []
    med = lambda p, r, k: statistics.median(  # noqa: E731
        float(d[(p, r)][k]) for d in runs.values() if (p, r) in d)
    rest = lambda p, r: statistics.median(  # noqa: E731
        float(d[(p, r)]["seconds"]) - float(d[(p, r)]["first_block_seconds"])
        for d in runs.values() if (p, r) in d)
    excess = lambda m, p, r: statistics.median(  # noqa: E731
        cgi_excess_values(rows, m, p, r)) * 1000
    wa1, wb2 = med("after", 1, "seconds"), med("before", 2, "seconds")
    ratios = [b / a for b, a in pairs]
    low = sum(1 for x in ratios if x < 0.9)
    verdict = (f"at the median it does not lose: its own read loop takes {wa1:.4f} s against "
               f"{wb2:.4f} s" if wa1 <= wb2 else
               f"at the median its own read loop takes {wa1:.4f} s against {wb2:.4f} s")
    others = [m for m in ("blk-none", "blk-writeback")
              if cgi_excess_values(rows, m, "after", 1)]
    return [
        "Whether the warm-cache first read after the reboot loses against the warm 2nd read "
        f"before it: {verdict} (medians; per run, the 2nd read before over the 1st after: "
        + ", ".join(f"{x:.2f}" for x in ratios) + f"; {low} of {len(ratios)} runs below "
        f"0.9).  Its first 1 MiB read() takes "
        f"{med('after', 1, 'first_block_seconds') * 1000:.1f} ms against "
        f"{med('before', 2, 'first_block_seconds') * 1000:.1f} ms (the guest kernel's read "
        "path, ext4 DAX and the copy to the reader's buffer, runs for the first time after "
        "the reset; TCG translating it afresh is the likely cost, not measured apart); the "
        f"other {FILE_MB - 1} MiB take {rest('after', 1):.4f} s against "
        f"{rest('before', 2):.4f} s.  Its open(), outside the reader's time, takes "
        f"{med('after', 1, 'open_seconds') * 1000:.2f} ms against "
        f"{med('before', 2, 'open_seconds') * 1000:.2f} ms (the path lookup and the inode, "
        "not cached in the guest after the reset).  The CGI's time around the reader has, "
        f"beyond the open() and the read loop, {excess('warm-cache', 'after', 1):.0f} ms in "
        f"the 1st read of the boot against {excess('warm-cache', 'before', 2):.0f} ms in the "
        "2nd read before it: starting and ending the reader process (and the CGI's clock "
        "reads), whose code TCG likewise runs for the first time since the reset"
        + ("; in the first read after the reboot of the other methods it is "
           + ", ".join(f"{excess(m, 'after', 1):.0f} ms ({m})" for m in others)
           + " (medians)" if others else "")
        + ".  That excess of the first read of a boot is what the earlier method (busybox dd "
        "timed by the CGI, less an empty-file read taken after the first read) charged to "
        "the first read; a read timed by the reading process itself, as GNU dd times itself "
        "on the Debian guest, carries only the first-block part, and the open() is in "
        "neither (the ratio table gives the two ratios with it).  QEMU's "
        "mapping of the image is not it: it outlives `vcr vm reboot` (same QEMU), and a probe "
        "counting QEMU's page faults during each read "
        "(`warm-cache-first-read-probe.md`, 8 runs) found 53-327 minor and no major faults "
        "in the first read after the reboot, against 2070-2480 minor and up to 32 major in "
        "a first read of a file QEMU had not mapped yet (the \"before 1st\" read, slower "
        "for that, or another 128 MB file read for the first time after the reboot); in "
        "the same probe the first read after the reboot, timed by the reader, read at the "
        "speed of a later read of the file in the same boot.", ""]


def write_results(rows, web, web_loaded=False):
    """warm-cache.md, the CSVs and the plots; web_loaded: the web runs were read from the
    CSVs (--no-web, --report-only), so they may come from an earlier run (web_origin)."""
    os.makedirs(RESULTS, exist_ok=True)
    origin = web_origin(web_loaded and bool(web))
    write_csvs(rows, web)
    read_loads = [float(r[k]) for r in rows for k in ("load1_start", "load1_end")]
    web_loads = [float(run[k]) for runs in web.values() for run in runs
                 for k in ("load1_start", "load1_end")]
    loads = read_loads + web_loads

    def load_range(xs):
        return (f"median {statistics.median(xs):.2f}, min {min(xs):.2f}, max {max(xs):.2f}"
                if xs else "not recorded")

    reps = sorted({int(r["rep"]) for r in rows})
    out = ["# Warm-cache reboot: file reads and web throughput after a guest reboot", "",
           f"Machine: {machine_line()}.  No KVM: every guest runs under TCG, so absolute numbers"
           " are far below the paper's; the ratios are what compares.", "",
           f"Runs: {len(reps)} per method for the file reads, "
           + ", ".join(f"{len(runs)} for the web part ({m})" for m, runs in web.items())
           + "; each run on a freshly started agent and VM.  Cells: median [min-max] over "
           "the runs.  Host load average (1 min) at the start and end of the runs: file "
           f"reads {load_range(read_loads)}; web {load_range(web_loads)}."
           + (f"  The web runs are not this run's: they were kept from the run committed in "
              f"{origin[0]} ({origin[1]})"
              + (f", on another host ({origin[2]})" if origin[2] and origin[2] != machine_line()
                 else "") + "; the Machine line is the file reads' host." if origin else ""),
           ""]
    if loads and max(loads) > 3:
        part = ("the web runs" if web_loads and max(web_loads) > 3 and
                (not read_loads or max(read_loads) <= 3) else "part of the runs")
        out += [f"**The host was busy during {part} (load average up to "
                f"{max(loads):.1f} on {os.cpu_count()} CPUs; other TCG guests share "
                "it): the spread of the runs shows how much that moved the numbers.**", ""]
    out += [f"File: {FILE_MB} MB of random data on an ext4 volume of {VOLUME_MB} MB (4 KiB "
            f"blocks); guest RAM {MEMORY_MB} MB.  Read in the guest by `/usr/bin/readtime` "
            "(lab/guest/readtime.c, a static C program in the image), which opens the file, "
            "read()s it in 1 MiB blocks to its end and reports the CLOCK_MONOTONIC time of that "
            "loop: the time of a read is the read of the whole file and nothing else, timed by "
            "the reading process itself, as GNU dd's own report (which the Debian guest's reads "
            "use) times its copy loop; like dd's, that time leaves out the open() of the file.  "
            "The CSV also has the first 1 MiB read() alone (first_block_seconds, part of the "
            "read loop), the reader's open() alone (open_seconds: CLOCK_MONOTONIC around "
            "open(); the tables below show it and the ratios with it) and the same read "
            "timed by the CGI around the reader (cgi_seconds: the guest's monotonic clock, "
            "`now at N nsecs` of /proc/timer_list read with sed, before and after the readtime "
            "process; it adds the open() and starting and ending the process).  Nothing is "
            "subtracted.  Reboot: `vcr vm reboot VM` (guest reset "
            "in the same "
            "QEMU; the guest kernel and its page cache start empty).  The warm-cache volume is "
            "its image file mapped shared by QEMU: the data it serves after the reboot comes "
            "from the host page cache.", "",
            "| method | before 1st (s) | before 2nd (s) | after 1st (s) | after 2nd (s) | "
            "reboot until ready (s) |",
            "|---|---|---|---|---|---|"]
    for m in METHODS:
        if not read_values(rows, m, "before", 1):
            continue
        cells = [cell(read_values(rows, m, p, r), "{:.4f}") for p, r in PHASES]
        out.append(f"| {m} | " + " | ".join(cells) + " | "
                   + cell([x / 1000 for x in reboot_values(rows, m)], "{:.1f}") + " |")
    if open_read_values(rows, "warm-cache", "before", 1):
        ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
        out += ["", "Where a warm-cache read's time goes (median [min-max]): the reader's own "
                "time (its read loop, the time of the table above), its first 1 MiB read() "
                "alone (part of the reader's time), its open() of the file (outside the "
                "reader's time, as dd's open is outside dd's: the path lookup and the inode, "
                "which after the reset the guest kernel has not cached), the same read timed "
                "by the CGI around the reader process, and what the CGI's time has beyond the "
                "open() and the read loop (starting and ending the reader process, the CGI's "
                "clock reads):", "",
                "| warm-cache read | reader (s) | first 1 MiB (ms) | open() (ms) | "
                "CGI around the reader (s) | CGI minus open() and reader (ms) |",
                "|---|---|---|---|---|---|"]
        for p, r in PHASES:
            out.append(f"| {p} {'1st' if r == 1 else '2nd'} | "
                       f"{cell(read_values(rows, 'warm-cache', p, r), '{:.4f}')} | "
                       + cell(ms(read_values(rows, "warm-cache", p, r, "first_block_seconds")),
                              "{:.1f}")
                       + " | " + cell(ms(read_values(rows, "warm-cache", p, r,
                                                     "open_seconds")), "{:.2f}")
                       + " | " + cell(read_values(rows, "warm-cache", p, r, "cgi_seconds"),
                                      "{:.4f}")
                       + " | " + cell(ms(cgi_excess_values(rows, "warm-cache", p, r)), "{:.0f}")
                       + " |")
        out += ["", "The reader's open() (ms) and the CGI's time beyond the open() and the "
                "read loop (ms) for every method (median [min-max]):", "",
                "| method | open() before 1st | open() before 2nd | open() after 1st | "
                "open() after 2nd | CGI excess before 2nd | CGI excess after 1st |",
                "|---|---|---|---|---|---|---|"]
        for m in METHODS:
            if open_read_values(rows, m, "before", 1):
                out.append(f"| {m} | " + " | ".join(
                    cell(ms(read_values(rows, m, p, r, "open_seconds")), "{:.2f}")
                    for p, r in PHASES) + " | "
                    + cell(ms(cgi_excess_values(rows, m, "before", 2)), "{:.0f}") + " | "
                    + cell(ms(cgi_excess_values(rows, m, "after", 1)), "{:.0f}") + " |")
    out += ["", "The same as throughput (MB/s, median [min-max]):", "",
            "| method | before 1st | before 2nd | after 1st | after 2nd |", "|---|---|---|---|---|"]
    for m in METHODS:
        if read_values(rows, m, "before", 1):
            out.append(f"| {m} | " + " | ".join(cell(read_values(rows, m, p, r, "mb_per_s"),
                                                     "{:.0f}") for p, r in PHASES) + " |")
    out.append("")
    med = lambda m, p, r: statistics.median(read_values(rows, m, p, r))  # noqa: E731
    if read_values(rows, "warm-cache", "after", 1) and read_values(rows, "blk-none", "after", 1):
        wa1, wb2 = med("warm-cache", "after", 1), med("warm-cache", "before", 2)
        out += ["Ratios of the medians (ours vs the paper's, Pentium 4 / Xen 3.0, httperf + "
                "Apache):", "", "| (time of the conventional read / time of the warm-cache read) | ours | paper |",
                "|---|---|---|",
                f"| first read after reboot, warm-cache vs conventional (blk cache=none) | "
                f"{med('blk-none', 'after', 1) / wa1:.1f}x | "
                f"{PAPER['file_speedup']:.0f}x |"]
        if read_values(rows, "blk-writeback", "after", 1):
            out.append(f"| ... vs blk cache=writeback (host page cache warm) | "
                       f"{med('blk-writeback', 'after', 1) / wa1:.1f}x | - |")
        if read_values(rows, "prefetch", "after", 1):
            out.append(f"| ... vs in-guest prefetch at boot (cat of the files at boot; the read "
                       f"may overlap the prefetch) | {med('prefetch', 'after', 1) / wa1:.1f}x | - |")
        share = per_run_ratios(rows, "warm-cache", ("before", 2), ("after", 1))
        out.append(f"| first read after reboot as a share of the warm 2nd run before it "
                   f"(throughput) | {wb2 / wa1 * 100:.0f}% (per run "
                   f"{min(share) * 100:.0f}-{max(share) * 100:.0f}%) | "
                   f"{PAPER['file_vs_2nd'] * 100:.0f}% |")
        if open_read_values(rows, "warm-cache", "after", 1) and \
                open_read_values(rows, "blk-none", "after", 1):
            omed = lambda m, p, r: statistics.median(  # noqa: E731
                open_read_values(rows, m, p, r))
            oshare = per_run_ratios(rows, "warm-cache", ("before", 2), ("after", 1),
                                    open_read_values)
            out.append(f"| the same two with open() + read (`ns + open_ns`): first read after "
                       f"reboot, warm-cache vs blk cache=none | "
                       f"{omed('blk-none', 'after', 1) / omed('warm-cache', 'after', 1):.1f}x "
                       f"| - |")
            oratio = omed("warm-cache", "before", 2) / omed("warm-cache", "after", 1)
            out.append(f"| ... share of the warm 2nd run before it | {oratio * 100:.0f}% "
                       f"(per run {min(oshare) * 100:.0f}-{max(oshare) * 100:.0f}%) | - |")
        # A reference from reads that do not involve the mechanism.
        ref = page_cache_reference(rows)
        if ref:
            fastest, fm, fp = ref
            out.append(f"| reference: the fastest guest page-cache read of the table ({fm} "
                       f"{fp} 2nd, {FILE_MB / fastest:.0f} MB/s: a memory copy in the guest, no "
                       f"warm-cache volume involved) vs blk cache=none after the reboot | "
                       f"{med('blk-none', 'after', 1) / fastest:.1f}x | - |")
        if web.get("warm-cache") and web.get("conventional"):
            ws = [web_stats(w) for w in web["warm-cache"]]
            cs = [web_stats(w) for w in web["conventional"]]
            wq = statistics.median(x[1] for x in ws)
            cq = statistics.median(x[1] for x in cs)
            wp = statistics.median(x[0] for x in ws)
            cp = statistics.median(x[0] for x in cs)
            out.append(f"| web req/s, first 10 s after the guest is ready, warm vs conventional "
                       f"| {wq / cq if cq else float('inf'):.1f}x | "
                       f"{PAPER['web_speedup']:.0f}x |")
            out.append(f"| web req/s, first 10 s after ready, as a share of the 10 s before "
                       f"the reboot (warm-cache) | {wq / wp * 100 if wp else 0:.0f}% | "
                       f"{PAPER['web_vs_2nd'] * 100:.0f}% (of the 2nd run) |")
            out.append(f"| ... conventional | {cq / cp * 100 if cp else 0:.0f}% | - |")
        out.append("")
    if web:
        out += ["Web (median [min-max] over the runs; req/s averaged over 10 s windows):", "",
                "| method | reboot order at (s) | ready at (s) | req/s 10 s before | "
                "req/s 10 s after ready | req/s last 10 s |", "|---|---|---|---|---|---|"]
        for m, runs in web.items():
            st = [web_stats(w) for w in runs]
            out.append(f"| {m} | {cell([w['reboot_at'] for w in runs], '{:.0f}')} | "
                       f"{cell([w['ready_at'] for w in runs], '{:.0f}')} | "
                       f"{cell([x[0] for x in st], '{:.1f}')} | "
                       f"{cell([x[1] for x in st], '{:.1f}')} | "
                       f"{cell([x[2] for x in st], '{:.1f}')} |")
        if origin:
            out += ["", f"These web runs are from an earlier run, committed in {origin[0]} "
                    f"({origin[1]}), kept by --no-web"
                    + (f", on another host ({origin[2]})" if origin[2] and
                       origin[2] != machine_line() else "")
                    + ": their ratios above compare with the file reads of another run."]
        out += ["", f"The paper: throughput {PAPER['warm_drop']} after a warm-cache reboot, "
                f"{PAPER['cold_drop']} after a conventional one; prefetching hurt the web "
                "server.  The conventional reboot here is `--cold` (QEMU restarted, virtio-blk "
                "cache=none: nothing cached anywhere).", ""]
    out += first_read_loss(rows)
    ref = page_cache_reference(rows)
    every = [(statistics.median(read_values(rows, m, p, r)), m, p, r)
             for m in METHODS for p, r in PHASES if read_values(rows, m, p, r)]
    bound = ""
    if ref and every and read_values(rows, "blk-none", "after", 1):
        fastest, fm, fp = ref
        top = min(every)
        blk = statistics.median(read_values(rows, "blk-none", "after", 1))
        wa1 = read_values(rows, "warm-cache", "after", 1)
        seconds = [x[0] for x in every if x[3] == 2 and x[1] != "prefetch"]
        bound = ("a first read after the reboot can at best run at the guest's memory-copy "
                 "speed (its page cache, or the host pages a DAX read copies from), which TCG "
                 f"gives here at {FILE_MB / fastest:.0f} MB/s in the fastest guest page-cache "
                 f"read ({fm} {fp} 2nd: no warm-cache volume involved; the reference row, "
                 f"{blk / fastest:.1f}x against blk cache=none) and {FILE_MB / top[0]:.0f} MB/s "
                 f"in the fastest median read of the table ({top[1]} {top[2]} "
                 f"{'1st' if top[3] == 1 else '2nd'}), while this host's disk serves "
                 f"cache=none first reads after the reboot at {FILE_MB / blk:.0f} MB/s (the "
                 "blk-none row).  ")
        if wa1 and (top[1], top[2], top[3]) == ("warm-cache", "after", 1):
            bound += ("The warm-cache first read after the reboot is itself the fastest median "
                      "read of the table: no method beats the guest's copy from memory, and the "
                      "first ratio is at that bound on this host.  ")
        elif wa1 and statistics.median(wa1) < fastest:
            bound += (f"The warm-cache first read after the reboot "
                      f"({FILE_MB / statistics.median(wa1):.0f} MB/s) is faster than that "
                      f"page-cache read ({statistics.median(wa1) / fastest:.2f}x its time), so "
                      "the first ratio is above the reference row; copies from memory vary "
                      "that much between runs here (the medians of the 2nd reads of "
                      "warm-cache, blk-none and blk-writeback range over "
                      f"{FILE_MB / max(seconds):.0f}-{FILE_MB / min(seconds):.0f} MB/s), so the "
                      "reference is a scale, not a sharp bound.  ")
        elif wa1:
            bound += (f"The warm-cache first read after the reboot "
                      f"({FILE_MB / statistics.median(wa1):.0f} MB/s) takes "
                      f"{statistics.median(wa1) / fastest:.2f}x the time of that page-cache "
                      "read.  ")
    out += ["Reading the numbers:",
            "- DAX reads bypass the guest page cache, so a warm-cache volume has no faster "
            "2nd read: every read is a copy from the host page cache pages of the image "
            "(through TCG's softmmu here), while a virtio-blk 2nd read comes from the guest "
            "page cache.  That is why the warm-cache \"share of the 2nd run\" is not "
            "comparable with the paper's 64%.",
            "- The warm-cache reads after the reboot are warm only while the host keeps the "
            "image's pages cached: memory pressure or proactive reclaim (such as DAMON "
            "reclaim, which pages out what is idle) sends them back to the disk.  Here the reads "
            "before the reboot had touched them seconds earlier.",
            "- The prefetch method's volume lists the file in `.vcr-prefetch`, so its "
            "\"before\" reads are already cached, and its first read after the reboot may "
            "overlap the boot prefetch.",
            "- The first ratio is bounded by this host, not by the mechanism: " + bound
            + "The paper's 15x means its disk was at least 15x "
            "slower than its memory copy.  With KVM (not usable on this machine) the guest's copy "
            "would run at host memory speed.",
            ""]
    out += ["The web part on the Debian 12 guest (nginx with sendfile, a site larger than "
            "the guest's page cache, 16 clients): `warm-cache-debian.md` (`--guest debian`).",
            "",
            "Plots: `warm-cache-read.png` (MB/s per method and read, medians with min-max "
            "bars, log scale), `warm-cache-web.png` (requests/s around the reboot: median "
            "of the runs, min-max band).", "",
            "Raw data, one line per measurement: `warm-cache.csv` (" + ", ".join(READ_FIELDS)
            + "), `warm-cache-web.csv` (method, rep, second, s_from_reboot_order, requests), "
            "`warm-cache-web-runs.csv` (" + ", ".join(WEB_RUN_FIELDS) + ").", ""]
    with open(os.path.join(RESULTS, "warm-cache.md"), "w") as f:
        f.write("\n".join(out))
    plot(rows, web)


def load_reads():
    """The file-read rows of an earlier run (--web-only, --report-only)."""
    with open(os.path.join(RESULTS, "warm-cache.csv")) as f:
        return list(csv.DictReader(f))


def load_web():
    """The web runs of an earlier run, from its CSVs (--report-only)."""
    web = {}
    with open(os.path.join(RESULTS, "warm-cache-web-runs.csv")) as f:
        for r in csv.DictReader(f):
            web.setdefault(r["method"], []).append({
                "series": [], "reboot_at": float(r["reboot_at_s"]),
                "ready_at": float(r["ready_at_s"]), "load1_start": float(r["load1_start"]),
                "load1_end": float(r["load1_end"])})
    with open(os.path.join(RESULTS, "warm-cache-web.csv")) as f:
        for r in csv.DictReader(f):
            web[r["method"]][int(r["rep"]) - 1]["series"].append(int(r["requests"]))
    return web


# --------------------------------------------------------------------------- Debian web
# The Debian 12 primary guest (lab/build-debian: systemd, nginx-light with sendfile on)
# serving a site larger than its page cache, many keep-alive clients (--guest debian).
DEB_MEMORY_MB = 384
# The web results' file names: warm-cache-debian.md, warm-cache-debian-web*.csv; with
# --deb-memory-mb N (not 384) warm-cache-debian-ramN.md and -ramN-web*.csv (main_debian).
DEB_BASE = "warm-cache-debian"
DEB_FILES = 2400
DEB_FILE_KB = 256
DEB_VOLUME_MB = 768
DEB_CLIENTS = 16
DEB_BOOT_TIMEOUT = 320
DEB_READ_MEMORY_MB = 768
DEB_READ_FILE_MB = 256
DEB_READ_VOLUME_MB = 320
DEB_PROBE_S = 110
# cloud-init runs on the bench VM's first boot only: its runcmd ends by writing
# /etc/cloud/cloud-init.disabled (cloud-init's own switch), so the reboot does not re-run
# its four Python stages (12-15 s of the vCPU under TCG, lab/README.md); what they wrote
# (fstab, units, the address from the seed in /etc/network/interfaces.d) stays.  Both
# methods get the same user-data.
DEB_USER_DATA = """#cloud-config
write_files:
  - path: /etc/fstab
    append: true
    content: |
      LABEL=site  /srv/site  ext4  defaults{dax},nofail,x-systemd.device-timeout=60s  0 0
  - path: /etc/systemd/system/boot-report.service
    content: |
      [Unit]
      Description=Boot id and mounts of this boot, served by nginx
      RequiresMountsFor=/srv/site
      [Service]
      Type=oneshot
      ExecStart=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id /proc/mounts > /srv/www/boot.txt'
      [Install]
      WantedBy=multi-user.target
{extra_files}runcmd:
  # boot-report last: the bench takes its first report as "the guest is set up".
  - [sh, -c, 'mkdir -p /srv/site /srv/data && systemctl daemon-reload && mount /srv/site && ln -sfn /srv/site/web /srv/data/web{extra_cmd} && systemctl enable --now boot-report.service && touch /etc/cloud/cloud-init.disabled && sync']
"""
# --probe: from early in every boot, once a second for DEB_PROBE_S s, the guest's
# /proc/stat cpu line, the CPU ticks of every process, TCP counters; then
# systemd-analyze; into /srv/www/probe-BOOT_ID.txt (fetched by the bench).
DEB_PROBE_FILES = """  - path: /usr/local/sbin/vcr-boot-probe
    permissions: '0755'
    content: |
      #!/bin/sh
      out=/srv/www/probe-$(cat /proc/sys/kernel/random/boot_id).txt
      i=0
      while [ $i -lt {probe_s} ]; do
        {{ echo "T $(cut -d' ' -f1 /proc/uptime)"; head -n1 /proc/stat
          for f in /proc/[0-9]*/stat; do read -r l < $f && echo "P $l"; done
          grep '^Tcp:' /proc/net/snmp | tail -n1; grep '^TcpExt:' /proc/net/netstat | tail -n1
        }} >> $out 2>/dev/null
        i=$((i + 1)); sleep 1
      done
      {{ echo "A"; systemd-analyze; systemd-analyze blame | head -n 25
        systemd-analyze critical-chain nginx.service; echo END; }} >> $out 2>&1
  - path: /etc/systemd/system/vcr-boot-probe.service
    content: |
      [Unit]
      Description=Per-second CPU use of the boot (bench-warm-cache --probe)
      DefaultDependencies=no
      After=local-fs.target
      [Service]
      Type=simple
      ExecStart=/usr/local/sbin/vcr-boot-probe
      [Install]
      WantedBy=sysinit.target
"""
# --reads: dd of the volume's file on demand: a PUT of /data/ddreq/NAME (nginx WebDAV;
# /srv/data/ddreq is a link to /var/lib/vcr-ddreq: a path unit under /srv/data would wait
# for the image's optional data volume, absent here) starts the path unit, which writes
# GNU dd's report to /srv/www/dd-NAME.txt.
DEB_READ_FILES = """  - path: /usr/local/sbin/vcr-ddreq
    permissions: '0755'
    content: |
      #!/bin/sh
      for f in /var/lib/vcr-ddreq/*; do
        [ -e "$f" ] || continue
        n=${f##*/}; rm -f "$f"
        systemctl is-system-running --wait > /dev/null 2>&1
        dd if=/srv/site/big of=/dev/null bs=1M > /srv/www/dd-$n.tmp 2>&1
        mv /srv/www/dd-$n.tmp /srv/www/dd-$n.txt
      done
  - path: /etc/systemd/system/vcr-ddreq.service
    content: |
      [Service]
      Type=simple
      ExecStart=/usr/local/sbin/vcr-ddreq
  - path: /etc/systemd/system/vcr-ddreq.path
    content: |
      [Path]
      DirectoryNotEmpty=/var/lib/vcr-ddreq
      [Install]
      WantedBy=multi-user.target
"""


def deb_user_data(warm, probe=False, reads=False):
    files = (DEB_PROBE_FILES.format(probe_s=DEB_PROBE_S) if probe else "") + (
        DEB_READ_FILES if reads else "")
    cmd = ((" && systemctl enable vcr-boot-probe.service" if probe else "")
           + (" && mkdir -p /var/lib/vcr-ddreq && chown www-data: /var/lib/vcr-ddreq"
              " && ln -sfn /var/lib/vcr-ddreq /srv/data/ddreq"
              " && systemctl enable --now vcr-ddreq.path" if reads else ""))
    return (DEB_USER_DATA.replace("{dax}", ",dax" if warm else "")
            .replace("{extra_files}", files).replace("{extra_cmd}", cmd))
# One process in the lab namespace, DEB_CLIENTS threads, each on a keep-alive connection
# (reconnecting after an error), GETs random files for at most argv[4] seconds; prints
# "SECOND BYTES" per answer and "SECOND -1" per failed attempt (SECOND counted from the
# wall time argv[1]).  Like httperf's, a new connection has a short timeout of its own
# (DEB_CONNECT_TIMEOUT): with one 5 s timeout for connect and request, a client whose SYN
# was sent while the guest was down sat in SYN back-off (retries at 1 s, 3 s) up to 5 s
# after nginx answered again; an established request keeps 5 s.
DEB_CONNECT_TIMEOUT = 0.5
DEB_CLIENT = r'''
import http.client, random, socket, sys, threading, time
t0, addr, n, dur, clients = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
connect_timeout = float(sys.argv[6])
lock = threading.Lock()
def client():
    rnd, conn = random.Random(), None
    while time.time() - t0 < dur:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(addr, 80, timeout=5)
                conn.sock = socket.create_connection((addr, 80), connect_timeout)
                conn.sock.settimeout(5)
            conn.request("GET", "/data/web/f%d" % rnd.randrange(n))
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise OSError(r.status)
            with lock:
                print(int(time.time() - t0), len(body), flush=True)
        except Exception:
            with lock:
                print(int(time.time() - t0), -1, flush=True)
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
for _ in range(clients):
    threading.Thread(target=client, daemon=True).start()
time.sleep(max(0.0, dur - (time.time() - t0)) + 6)
'''


def make_site(tmp):
    src = tmp / "site"
    (src / "web").mkdir(parents=True, exist_ok=True)
    for i in range(DEB_FILES):
        with open(src / "web" / f"f{i}", "wb") as f:
            f.write(os.urandom(DEB_FILE_KB << 10))
    return src


def thread_ticks(pid):
    """{thread id: CPU ticks (user + system)} of QEMU pid's threads, or None.  QEMU runs
    without debug-threads, so its threads carry no names: under TCG the vCPU thread is
    the busiest one (a halted vCPU sleeps), the main loop does the device emulation."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            f = open(f"{task}/stat").read().rsplit(")", 1)[1].split()
            out[int(os.path.basename(task))] = int(f[11]) + int(f[12])
        except (OSError, ValueError):
            continue
    return out or None


def qemu_read_bytes(pid):
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def deb_boot_report(addr):
    """The /proc/mounts line of /srv/site of the guest's current boot (boot id, line)."""
    text = labkit.http_get(addr, "/boot.txt", timeout=3)
    if not text:
        return None
    lines = text.splitlines()
    return lines[0], next((x for x in lines[1:] if x.split()[1:2] == ["/srv/site"]), "")


def deb_vm_start(b, name, index, addr, host, warm, ud, user_data, memory_mb, volume_mb, src,
                 image):
    """A fresh agent (state dir agent-HOST) with Debian VM name: user_data written to ud,
    one volume `site` (src's files) at /srv/site, warm-cache or virtio-blk cache=none.
    Returns (agent, state dir)."""
    state = b.tmp / f"agent-{host}"
    state.mkdir(exist_ok=True)
    ud.write_text(user_data)
    vm = labkit.debian_primary_entry(name, index, addr, memory_mb=memory_mb, network="nocloud")
    if vm is None:
        raise RuntimeError("the Debian images are not built (make image-debian)")
    vm["user_data"] = str(ud)
    vm["volumes"] = [{"name": "site", "size_mb": volume_mb, "source_dir": str(src),
                      "image": str(state / image), "mount": "/srv/site",
                      **({"warm_cache": "true"} if warm else {"cache": "none"})}]
    cfg = b.tmp / f"agent-{host}.yaml"
    labkit.write_agent_config(cfg, host, str(state), [vm])
    agent = agent_proc(b.d.build, cfg, b.tmp / f"{host}.log", "--log-level", "info")
    b.d.procs.append(agent)
    return agent, state


def deb_vm_first_report(b, name, addr, warm, what):
    """Waits for VM name to run and report its first boot (deb_boot_report), its /srv/site
    mounted with DAX when warm; returns the report."""
    v = b.d.wait_vm_state(name, ["running", "failed"], DEB_BOOT_TIMEOUT)
    if v["state"] == "failed":
        raise RuntimeError(f"VM {name} failed: {v.get('cause')}")
    first = labkit.wait_for(f"{name}'s {what}", lambda: (
        lambda r: r if r and r[1] else None)(deb_boot_report(addr)), DEB_BOOT_TIMEOUT,
        interval=1)
    if warm and "dax=always" not in first[1]:
        raise RuntimeError(f"{name}: /srv/site is not mounted with DAX: {first[1]}")
    return first


def bench_web_debian(b, index, method, site, before_s, after_s, probe=False,
                     cloud_init_every_boot=False):
    """One run: a fresh agent and Debian VM; load from the start, the reboot after
    before_s of it (warm: `vcr vm reboot`; conventional: `--cold` on virtio-blk
    cache=none); the load goes on until after_s past ready.  probe: the guest's
    per-second CPU use during the reboot's boot, summarised (deb_probe_summary)."""
    load_start = load1()
    name, addr, host = f"d{index}", f"10.77.0.{40 + index}", f"wcd{index}"
    warm = method == "warm-cache"
    text = deb_user_data(warm, probe=probe)
    if cloud_init_every_boot:
        text = text.replace(" && touch /etc/cloud/cloud-init.disabled", "")
    agent, state = deb_vm_start(b, name, index, addr, host, warm, b.tmp / f"user-data-{method}",
                                text, DEB_MEMORY_MB, DEB_VOLUME_MB, site, "site.img")
    image = state / "site.img"
    try:
        first = deb_vm_first_report(b, name, addr, warm, "site mounted")
        # The image's pages in the host page cache, as on a host that has served the site
        # (cache=none reads past them: O_DIRECT).
        subprocess.run(["dd", f"if={image}", "of=/dev/null", "bs=4M", "status=none"],
                       check=True)
        pid = [b.d.vcr.vm(name)["pid"]]
        samples = []
        stop = threading.Event()
        t0 = time.time()

        def sampler():
            while not stop.is_set():
                p = pid[0]
                samples.append((time.time() - t0, p, thread_ticks(p), qemu_read_bytes(p)))
                stop.wait(1.0)
        threading.Thread(target=sampler, daemon=True).start()
        counts, nbytes, errors = {}, {}, {}
        dur = before_s + DEB_BOOT_TIMEOUT + after_s
        client = subprocess.Popen(labkit.in_ns([sys.executable, "-c", DEB_CLIENT, str(t0), addr,
                                                str(DEB_FILES), str(dur), str(DEB_CLIENTS),
                                                str(DEB_CONNECT_TIMEOUT)]),
                                  stdout=subprocess.PIPE, text=True)

        def reader():
            for line in client.stdout:
                parts = line.split()
                if len(parts) != 2:  # the last line, cut when the client is killed
                    continue
                s, n = (int(x) for x in parts)
                if n < 0:
                    errors[s] = errors.get(s, 0) + 1
                    continue
                counts[s] = counts.get(s, 0) + 1
                nbytes[s] = nbytes.get(s, 0) + n
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        time.sleep(before_s)  # load phase of fixed length (measured, not waited on)
        reboot_at = time.time() - t0
        r = b.vcr_json("vm", "reboot", name, *([] if warm else ["--cold"]),
                       timeout=DEB_BOOT_TIMEOUT)
        ready_at = reboot_at + r["ready_ms"] / 1000
        pid[0] = b.d.vcr.vm(name)["pid"]
        end = ready_at + after_s
        while time.time() - t0 < end:
            time.sleep(0.5)
        client.kill()
        client.wait()
        stop.set()
        rt.join(10)
        after = deb_boot_report(addr)
        probe_text = None
        if probe and after:
            path = f"/probe-{after[0].strip()}.txt"
            probe_text = labkit.wait_for(f"{name}'s boot probe", lambda: (
                lambda t: t if t and "\nEND" in t else None)(
                    labkit.http_get(addr, path, timeout=30)), DEB_PROBE_S + 120, interval=5)
    finally:
        b.d.vcr.run("vm", "kill", name, timeout=30)
        try:
            b.d.wait_vm_state(name, ["stopped", "crashed"], 60)
        finally:
            agent.stop()
    n = int(end)
    hz = os.sysconf("SC_CLK_TCK")
    cpu, qcpu, rd = [None] * n, [None] * n, [None] * n
    for (ta, pa, ca, ra), (tb, pb, cb, rb) in zip(samples, samples[1:]):
        s = int(tb)
        if s < n and pa == pb and None not in (ca, cb, ra, rb) and tb > ta:
            d = [cb[t] - ca[t] for t in cb if t in ca]
            cpu[s] = round(max(d) / hz / (tb - ta) * 100, 1)
            qcpu[s] = round(sum(d) / hz / (tb - ta) * 100, 1)
            rd[s] = round((rb - ra) / (tb - ta) / 1e6, 2)
    return {"series": [counts.get(s, 0) for s in range(n)],
            "bytes": [nbytes.get(s, 0) for s in range(n)], "vcpu_pct": cpu, "qemu_cpu_pct": qcpu,
            "qemu_read_mb": rd, "errors": [errors.get(s, 0) for s in range(n)],
            "probe": probe_text,
            "reboot_at": reboot_at, "ready_at": ready_at, "load1_start": load_start,
            "load1_end": load1(), "mount_before": first[1],
            "mount_after": after[1] if after else ""}


def deb_probe_summary(text):
    """The --probe file of one boot as one line a second: guest uptime, the guest's CPU
    busy % (/proc/stat: not idle, not iowait) and iowait %, the processes that used the
    most CPU in that second (% of the second), TCP: established, new passive opens,
    retransmitted segments, listen drops; then systemd-analyze's report."""
    samples, tail, cur = [], [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "A":
            tail = lines[i + 1:]
            break
        if line.startswith("T "):
            cur = {"t": float(line.split()[1]), "procs": {}, "cpu": None, "tcp": None,
                   "ext": None}
            samples.append(cur)
        elif cur is None:
            continue
        elif line.startswith("cpu "):
            cur["cpu"] = [int(x) for x in line.split()[1:]]
        elif line.startswith("P "):
            head, _, rest = line[2:].rpartition(")")
            pid, _, comm = head.partition(" (")
            f = rest.split()
            try:
                cur["procs"][int(pid)] = (comm, int(f[11]) + int(f[12]))
            except (ValueError, IndexError):
                pass
        elif line.startswith("Tcp:"):
            cur["tcp"] = line.split()
        elif line.startswith("TcpExt:"):
            cur["ext"] = line.split()
    # Field positions of the header lines of /proc/net/snmp and /proc/net/netstat.
    tcp_hdr = ["Tcp:", "RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens",
               "PassiveOpens", "AttemptFails", "EstabResets", "CurrEstab", "InSegs",
               "OutSegs", "RetransSegs"]
    out = ["uptime_s busy% iowait% tcp_estab new_passive retrans | top processes (% of the s)"]
    for a, b in zip(samples, samples[1:]):
        if not (a["cpu"] and b["cpu"]):
            continue
        d = [y - x for x, y in zip(a["cpu"], b["cpu"])]
        tot = sum(d[:8]) or 1
        busy = (tot - d[3] - d[4]) / tot * 100
        dt = b["t"] - a["t"]
        hz = os.sysconf("SC_CLK_TCK")  # the guest's USER_HZ is 100 as well
        top = sorted(((t - a["procs"][p][1], c) for p, (c, t) in b["procs"].items()
                      if p in a["procs"]), reverse=True)[:5]
        tcp = ""
        if a["tcp"] and b["tcp"] and len(b["tcp"]) >= len(tcp_hdr):
            ix = {k: n for n, k in enumerate(tcp_hdr)}
            tcp = (f"{b['tcp'][ix['CurrEstab']]} {int(b['tcp'][ix['PassiveOpens']]) - int(a['tcp'][ix['PassiveOpens']])} "
                   f"{int(b['tcp'][ix['RetransSegs']]) - int(a['tcp'][ix['RetransSegs']])}")
        out.append(f"{b['t']:7.1f} {busy:5.1f} {d[4] / tot * 100:5.1f} {tcp} | " + ", ".join(
            f"{c} {x / hz / dt * 100:.0f}" for x, c in top if x > 0))
    return "\n".join(out + [""] + tail) + "\n"


# --------------------------------------------------------------------------- Debian reads
DEB_READ_METHODS = ["warm-cache", "blk-none"]
DEB_READ_FIELDS = ["method", "rep", "phase", "read", "seconds", "mb_per_s", "reboot_ready_ms",
                   "load1_start", "load1_end"]


def make_read_source(tmp):
    src = tmp / "readsrc"
    src.mkdir(exist_ok=True)
    with open(src / "big", "wb") as f:
        for _ in range(DEB_READ_FILE_MB):
            f.write(os.urandom(1 << 20))
    return src


def deb_dd(addr, name):
    """Seconds GNU dd took to read /srv/site/big in the guest (its own report, ns
    resolution), on request: a PUT of /data/ddreq/NAME starts the guest's vcr-ddreq."""
    r = labkit.ns_run(["curl", "-s", "-f", "-m", "10", "-X", "PUT", "--data-binary", name,
                       f"http://{addr}/data/ddreq/{name}"], timeout=20)
    if r.returncode != 0:
        raise RuntimeError(f"PUT /data/ddreq/{name}: curl exit {r.returncode}")
    out = labkit.wait_for(f"dd {name}", lambda: labkit.http_get(addr, f"/dd-{name}.txt", 5),
                          300, interval=0.5)
    m = re.search(r"(\d+) bytes .* copied, ([0-9.e+-]+) s", out)
    if not m or int(m.group(1)) != DEB_READ_FILE_MB << 20:
        raise RuntimeError(f"dd {name}: {out!r}")
    return float(m.group(2))


def bench_reads_debian(b, index, method, src, rep, rows):
    """One run: a fresh agent and Debian VM; GNU dd reads the file twice once the boot is
    over, `vcr vm reboot` (guest reset, same QEMU), twice again."""
    load_start = load1()
    name, addr, host = f"r{index}", f"10.77.0.{40 + index}", f"wcr{index}"
    warm = method == "warm-cache"
    agent, _ = deb_vm_start(b, name, index, addr, host, warm,
                            b.tmp / f"user-data-read-{method}", deb_user_data(warm, reads=True),
                            DEB_READ_MEMORY_MB, DEB_READ_VOLUME_MB, src, "read.img")
    res = {}
    try:
        first = deb_vm_first_report(b, name, addr, warm, "volume mounted")
        for read in (1, 2):
            res[("before", read)] = deb_dd(addr, f"b{read}")
        r = b.vcr_json("vm", "reboot", name, timeout=DEB_BOOT_TIMEOUT)
        reboot_ms = r["ready_ms"]
        labkit.wait_for(f"{name}'s reboot", lambda: (
            lambda x: x if x and x[0] != first[0] and x[1] else None)(deb_boot_report(addr)),
            DEB_BOOT_TIMEOUT, interval=1)
        for read in (1, 2):
            res[("after", read)] = deb_dd(addr, f"a{read}")
    finally:
        b.d.vcr.run("vm", "kill", name, timeout=30)
        try:
            b.d.wait_vm_state(name, ["stopped", "crashed"], 60)
        finally:
            agent.stop()
    load_end = load1()
    for (phase, read), sec in sorted(res.items(), key=lambda kv: (kv[0][0] != "before",
                                                                  kv[0][1])):
        rows.append({"method": method, "rep": rep, "phase": phase, "read": read,
                     "seconds": round(sec, 6), "mb_per_s": round(DEB_READ_FILE_MB / sec, 1),
                     "reboot_ready_ms": round(reboot_ms), "load1_start": load_start,
                     "load1_end": load_end})
        print(f"  {method:10} run {rep} {phase:6} read {read}: {sec:.4f} s "
              f"{DEB_READ_FILE_MB / sec:8.1f} MB/s", flush=True)


def load_reads_debian():
    path = os.path.join(RESULTS, "warm-cache-debian-read.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def reads_section_debian(rows):
    """The file-read table of warm-cache-debian.md, its CSV and plot."""
    with open(os.path.join(RESULTS, "warm-cache-debian-read.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, DEB_READ_FIELDS)
        wr.writeheader()
        wr.writerows(rows)
    methods = [m for m in DEB_READ_METHODS if read_values(rows, m, "before", 1)]
    if not methods:
        return []
    reps = {m: len({r["rep"] for r in rows if r["method"] == m}) for m in methods}
    out = ["## File reads", "",
           "Runs: " + ", ".join(f"{n} {m}" for m, n in reps.items()) + ", each on a freshly "
           f"started agent and Debian VM ({DEB_READ_MEMORY_MB} MB of RAM, 1 vCPU, the same "
           f"image and cloud-init user-data).  File: {DEB_READ_FILE_MB} MB of random data "
           f"on an ext4 volume of {DEB_READ_VOLUME_MB} MB; read in the guest by GNU dd "
           "(`bs=1M`, to /dev/null; the time is dd's own report, ns resolution), started on "
           "request once the boot is over (a WebDAV PUT of /data/ddreq/NAME starts a "
           "systemd path unit that runs `systemctl is-system-running --wait` first).  "
           "Twice after the first boot (1st: nothing cached; 2nd: warm), `vcr vm reboot` "
           "(guest reset in the same QEMU, for both methods), twice again.  warm-cache: "
           "virtio-pmem over the image, mounted `-o dax`; blk-none: virtio-blk cache=none "
           "(O_DIRECT: QEMU reads the host's disk whatever its page cache holds).", "",
           "| method | before 1st (s) | before 2nd (s) | after 1st (s) | after 2nd (s) | "
           "reboot until ready (s) |", "|---|---|---|---|---|---|"]
    for m in methods:
        out.append(f"| {m} | " + " | ".join(cell(read_values(rows, m, p, r), "{:.4f}")
                                             for p, r in PHASES) + " | "
                   + cell([x / 1000 for x in reboot_values(rows, m)], "{:.1f}") + " |")
    out += ["", "| method | before 1st MB/s | before 2nd MB/s | after 1st MB/s | "
            "after 2nd MB/s |", "|---|---|---|---|---|"]
    for m in methods:
        out.append(f"| {m} | " + " | ".join(cell(read_values(rows, m, p, r, "mb_per_s"),
                                                 "{:.0f}") for p, r in PHASES) + " |")
    if set(methods) >= {"warm-cache", "blk-none"}:
        med = lambda m, p, r: statistics.median(read_values(rows, m, p, r))  # noqa: E731
        w1, w2, n1 = med("warm-cache", "after", 1), med("warm-cache", "before", 2), \
            med("blk-none", "after", 1)
        out += ["", "| ratio of the medians | ours | paper | goal |", "|---|---|---|---|",
                f"| first read after the reboot, blk-none / warm-cache (time) | "
                f"{n1 / w1:.2f}x | {PAPER['file_speedup']:.0f}x | >= 15x |",
                f"| warm-cache first read after the reboot as a share of its warm (2nd) read "
                f"before the reboot (speed) | {w2 / w1:.2f} | {PAPER['file_vs_2nd']:.2f} | >= 0.9 |"]
    plot_reads(rows, methods, "warm-cache-debian-read.png",
               f"Debian guest: GNU dd of a {DEB_READ_FILE_MB} MB file before and after a reboot "
               "(TCG; median, min-max bars)")
    return out + ["", "Plot: `warm-cache-debian-read.png`.  Raw data: "
                  "`warm-cache-debian-read.csv` (" + ", ".join(DEB_READ_FIELDS) + ").", ""]


def mean_window(values, start, length=10):
    xs = [x for x in values[max(0, start):start + length] if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def deb_stats(w):
    """(req/s, MB/s, vCPU %, QEMU read MB/s) in the 10 s before the reboot order and in
    the first 10 s after ready."""
    pre, post = int(w["reboot_at"]) - 10, int(w["ready_at"]) + 1
    out = {}
    for key, vals in (("req_s", w["series"]), ("mb_s", [x / 1e6 for x in w["bytes"]]),
                      ("vcpu_pct", w["vcpu_pct"]), ("qemu_cpu_pct", w["qemu_cpu_pct"]),
                      ("qemu_read_mb_s", w["qemu_read_mb"])):
        out[key + "_before"] = mean_window(vals, pre)
        out[key + "_after"] = mean_window(vals, post)
    # nginx answers some seconds before the login prompt (`ready`), and a conventional
    # guest refills its page cache from then on: the first second after the reboot order
    # with answers, and the 10 s from it.
    answered = next((s for s in range(int(w["reboot_at"]) + 1, len(w["series"]))
                     if w["series"][s] > 0), None)
    out["answered_at_s"] = float("nan") if answered is None else float(answered)
    out["req_s_answered"] = (float("nan") if answered is None
                             else mean_window(w["series"], answered))
    return out


DEB_RUN_FIELDS = ["method", "rep", "reboot_at_s", "ready_at_s", "req_s_before", "req_s_after",
                  "mb_s_before", "mb_s_after", "vcpu_pct_before", "vcpu_pct_after",
                  "qemu_cpu_pct_before", "qemu_cpu_pct_after", "qemu_read_mb_s_before",
                  "qemu_read_mb_s_after", "answered_at_s", "req_s_answered", "load1_start",
                  "load1_end", "mount_after"]
DEB_SERIES_FIELDS = ["method", "rep", "second", "s_from_reboot_order", "requests", "bytes",
                     "client_errors", "vcpu_pct", "qemu_cpu_pct", "qemu_read_mb_s"]


def load_web_debian():
    """The Debian web runs of earlier invocations (--append, --report-only), or {}."""
    web = {}
    path = os.path.join(RESULTS, f"{DEB_BASE}-web-runs.csv")
    if not os.path.exists(path):
        return web
    with open(path) as f:
        for r in csv.DictReader(f):
            web.setdefault(r["method"], []).append({
                "series": [], "bytes": [], "vcpu_pct": [], "qemu_cpu_pct": [],
                "qemu_read_mb": [], "errors": [],
                "reboot_at": float(r["reboot_at_s"]), "ready_at": float(r["ready_at_s"]),
                "load1_start": float(r["load1_start"]), "load1_end": float(r["load1_end"]),
                "mount_after": r["mount_after"]})
    num = lambda x: float(x) if x != "" else None  # noqa: E731
    with open(os.path.join(RESULTS, f"{DEB_BASE}-web.csv")) as f:
        for r in csv.DictReader(f):
            w = web[r["method"]][int(r["rep"]) - 1]
            w["series"].append(int(r["requests"]))
            w["bytes"].append(int(r["bytes"]))
            w["errors"].append(int(r.get("client_errors") or 0))
            w["vcpu_pct"].append(num(r["vcpu_pct"]))
            w["qemu_cpu_pct"].append(num(r["qemu_cpu_pct"]))
            w["qemu_read_mb"].append(num(r["qemu_read_mb_s"]))
    return web


def write_results_debian(web, reads):
    with open(os.path.join(RESULTS, f"{DEB_BASE}-web-runs.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, DEB_RUN_FIELDS)
        wr.writeheader()
        for m, runs in web.items():
            for rep, w in enumerate(runs, 1):
                st = deb_stats(w)
                wr.writerow({"method": m, "rep": rep, "reboot_at_s": round(w["reboot_at"], 2),
                             "ready_at_s": round(w["ready_at"], 2),
                             **{k: round(v, 2) for k, v in st.items()},
                             "load1_start": w["load1_start"], "load1_end": w["load1_end"],
                             "mount_after": w["mount_after"]})
    with open(os.path.join(RESULTS, f"{DEB_BASE}-web.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, DEB_SERIES_FIELDS)
        wr.writeheader()
        for m, runs in web.items():
            for rep, w in enumerate(runs, 1):
                for s, c in enumerate(w["series"]):
                    cpu, qc, rd = w["vcpu_pct"][s], w["qemu_cpu_pct"][s], w["qemu_read_mb"][s]
                    wr.writerow({"method": m, "rep": rep, "second": s,
                                 "s_from_reboot_order": s - int(round(w["reboot_at"])),
                                 "requests": c, "bytes": w["bytes"][s],
                                 "client_errors": w["errors"][s],
                                 "vcpu_pct": "" if cpu is None else cpu,
                                 "qemu_cpu_pct": "" if qc is None else qc,
                                 "qemu_read_mb_s": "" if rd is None else rd})
    loads = [x for runs in web.values() for w in runs for x in (w["load1_start"], w["load1_end"])]
    m0 = machine_line() if loads else ""
    nruns = ", ".join(f"{len(r)} {m}" for m, r in web.items())
    site_mb = DEB_FILES * DEB_FILE_KB // 1024
    out = ["# Warm-cache reboot on the Debian guest: nginx (sendfile) serving a site larger "
           "than the guest's page cache" if site_mb >= DEB_MEMORY_MB else
           f"# Warm-cache reboot on the Debian guest: nginx (sendfile) serving a {site_mb} MB "
           f"site that a {DEB_MEMORY_MB} MB guest's page cache holds once warm", "", m0, "",
           f"Runs: {nruns}; each run on a freshly started agent and Debian 12 VM "
           "(lab/build-debian's primary image, systemd, nginx-light with Debian's `sendfile on`), "
           f"{DEB_MEMORY_MB} MB of guest RAM, 1 vCPU, TCG.  Cells: median [min-max] over the "
           "runs.  Host load average (1 min) at the start and end of the runs: "
           + (f"median {statistics.median(loads):.2f}, min {min(loads):.2f}, max {max(loads):.2f}."
              if loads else "-"), "",
           "**The machine is shared (2 CPUs; other engineers' TCG guests and benchmarks run "
           "beside this one), so absolute numbers move with its load; compare the methods "
           "within the table.**", "",
           f"Site: {DEB_FILES} files of {DEB_FILE_KB} KB of random data "
           f"({DEB_FILES * DEB_FILE_KB // 1024} MB) on an ext4 volume of {DEB_VOLUME_MB} MB "
           "(built by the agent with mkfs.ext4 -d), mounted at /srv/site by the guest's own "
           "fstab (cloud-init user-data) and served by nginx at /data/web/ (a symlink to it "
           "in /srv/data, the image's /data/ location).  Load: "
           f"{DEB_CLIENTS} keep-alive clients (one Python process in the lab namespace, one "
           "thread each) GET random files from the VM's boot until 10 s-plus after the "
           "reboot; each run's time is bounded.  warm-cache: virtio-pmem over the image, "
           "mounted `-o dax`, reboot `vcr vm reboot` (same QEMU).  conventional: virtio-blk "
           "cache=none, reboot `vcr vm reboot --cold` (QEMU restarted).  Before the load the "
           "image is read once on the host (its pages in the host page cache, as on a host "
           "that has served the site; cache=none reads past them).  `ready` is the agent's "
           "answer to the reboot (the guest's login prompt on its console); `nginx answered "
           "again` is the first second after the reboot order in which a request was answered "
           "(nginx starts some seconds before the login prompt).", "",
           "Boot work and client, the same for both methods: the bench's user-data lets "
           "cloud-init run on the VM's first boot only (its runcmd ends with `touch "
           "/etc/cloud/cloud-init.disabled`).  Measured before that change "
           "(`warm-cache-debian-probe-warm-cache-1.txt`, `--probe --cloud-init-every-boot`): "
           "in the boot after the reboot cloud-init's four Python stages held 15-81% of the "
           "vCPU from guest uptime 15 s to 40 s, nginx got 34-41% of it while cloud-config and "
           "cloud-final ran beside it, and 77-79% once they were done: that was the slow "
           "stretch (~256 req/s warm-cache, ~190 conventional) after nginx answered again.  "
           f"A client's new connection has a {DEB_CONNECT_TIMEOUT} s timeout of its own "
           "(a request on an open connection keeps 5 s), so no client waits in SYN back-off "
           "once the guest answers; client_errors in the CSV counts failed attempts per "
           "second.", "",
           "vCPU % is the CPU time of QEMU's busiest thread per second of wall time: under "
           "TCG that is the vCPU thread, and a halted vCPU sleeps, so 100% means the guest's "
           "CPU is the limit; QEMU CPU % is all of QEMU's threads (vCPU and the main loop, "
           "which emulates the devices); QEMU read is "
           "`read_bytes` of /proc/PID/io (reads that went to the host's disk).", ""]
    if web.get("warm-cache") and web.get("conventional"):
        med = lambda m, k: statistics.median(deb_stats(w)[k] for w in web[m])  # noqa: E731
        wq, cq = med("warm-cache", "req_s_after"), med("conventional", "req_s_after")
        out += ["| ratio of the medians | ours | paper |", "|---|---|---|",
                f"| web req/s, first 10 s after ready, warm-cache vs conventional | "
                f"{wq / cq if cq else float('inf'):.2f}x | {PAPER['web_speedup']:.0f}x |",
                f"| ... warm-cache, as a share of its 10 s before the reboot | "
                f"{wq / med('warm-cache', 'req_s_before') * 100:.0f}% | "
                f"{PAPER['web_vs_2nd'] * 100:.0f}% |",
                f"| ... conventional, as a share of its 10 s before the reboot | "
                f"{cq / med('conventional', 'req_s_before') * 100:.0f}% | - |",
                "| web req/s, first 10 s from nginx's first answer after the reboot, "
                "warm-cache vs conventional | "
                f"{med('warm-cache', 'req_s_answered') / med('conventional', 'req_s_answered'):.2f}x"
                " | - |", ""]
    if web:
        out += ["| method | reboot order at (s) | ready at (s) | req/s 10 s before | req/s 10 s "
                "after ready | MB/s before | MB/s after | vCPU % before | vCPU % after | QEMU "
                "CPU % before | QEMU CPU % after | QEMU read MB/s before | QEMU read MB/s after | "
                "nginx answered again at (s) | req/s 10 s from then |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, runs in web.items():
            st = [deb_stats(w) for w in runs]
            c = lambda k, f="{:.1f}": cell([x[k] for x in st], f)  # noqa: E731
            out.append(f"| {m} | {cell([w['reboot_at'] for w in runs], '{:.0f}')} | "
                       f"{cell([w['ready_at'] for w in runs], '{:.0f}')} | "
                       + " | ".join(c(k) for k in ("req_s_before", "req_s_after", "mb_s_before",
                                                   "mb_s_after", "vcpu_pct_before",
                                                   "vcpu_pct_after", "qemu_cpu_pct_before",
                                                   "qemu_cpu_pct_after", "qemu_read_mb_s_before",
                                                   "qemu_read_mb_s_after", "answered_at_s",
                                                   "req_s_answered")) + " |")
        out += ["", "The guest's mount of /srv/site after the reboot (each run): "
                + "; ".join(f"{m} {n}: `{w['mount_after']}`" for m, runs in web.items()
                            for n, w in enumerate(runs, 1)), ""]
    out += [f"Plot: `{DEB_BASE}-web.png` (requests/s around the reboot, aligned on the "
            "reboot order: median of the runs, min-max band).", "",
            f"Raw data: `{DEB_BASE}-web.csv` (" + ", ".join(DEB_SERIES_FIELDS)
            + f"), `{DEB_BASE}-web-runs.csv` (" + ", ".join(DEB_RUN_FIELDS) + ").", ""]
    # The file reads belong to warm-cache-debian.md only: another RAM size's report must not
    # rewrite their CSV (with no rows).
    if DEB_BASE == "warm-cache-debian":
        out += reads_section_debian(reads)
    # What the runs show, written by hand beside the CSVs, kept when the report is rewritten.
    notes = os.path.join(RESULTS, f"{DEB_BASE}-notes.md")
    if os.path.exists(notes):
        out += ["", open(notes).read().rstrip("\n"), ""]
    with open(os.path.join(RESULTS, f"{DEB_BASE}.md"), "w") as f:
        f.write("\n".join(out))
    plot_web(web, f"{DEB_BASE}-web.png",
             f"nginx on Debian, {DEB_FILES} x {DEB_FILE_KB} KB files, {DEB_CLIENTS} clients: "
             "requests/s around a guest reboot (TCG)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated (default: {','.join(METHODS)}; --guest debian: "
                         "warm-cache,conventional)")
    ap.add_argument("--runs", type=int, default=3, help="runs per point (default 3)")
    ap.add_argument("--web-before", type=float, default=None,
                    help="seconds of load before the reboot (default 15; Debian 40)")
    ap.add_argument("--web-after", type=float, default=None,
                    help="seconds of load after ready (default 40; Debian 20)")
    ap.add_argument("--no-web", action="store_true",
                    help="run the file reads only; keep the web results of warm-cache-web*.csv "
                         "(the report names the commit and host they come from)")
    ap.add_argument("--web-only", action="store_true",
                    help="keep the file-read results of warm-cache.csv; run the web part")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite warm-cache.md and the plots from the committed CSVs")
    ap.add_argument("--guest", choices=["busybox", "debian"], default="busybox",
                    help="busybox: file reads and web on the lab guest (default); debian: "
                         "the web part on the Debian 12 guest (nginx)")
    ap.add_argument("--deb-memory-mb", type=int, default=None,
                    help="--guest debian web: the guest's RAM (default 384: the 600 MB site "
                         "does not fit its page cache); another size writes "
                         "warm-cache-debian-ramN.md and -ramN-web*.csv")
    ap.add_argument("--append", action="store_true",
                    help="--guest debian: add the runs to those already in the CSVs")
    ap.add_argument("--reads", action="store_true",
                    help="--guest debian: the file reads (GNU dd in the guest; methods "
                         "warm-cache,blk-none) instead of the web part")
    ap.add_argument("--probe", action="store_true",
                    help="--guest debian web: sample the guest's CPU use per process every "
                         "second of the reboot's boot; summaries into "
                         "warm-cache-debian-probe-METHOD-REP.txt (a diagnosis, not a result: "
                         "the sampling costs guest CPU)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="--guest debian: keep the run's directory (agent logs, guest consoles)")
    ap.add_argument("--cloud-init-every-boot", action="store_true",
                    help="--guest debian: let cloud-init run on every boot, as the image does "
                         "by default (the bench disables it after the first boot)")
    args = ap.parse_args()
    debian = args.guest == "debian"
    if args.web_before is None:
        args.web_before = 40 if debian else 15
    if args.web_after is None:
        args.web_after = 20 if debian else 40
    if debian:
        return main_debian(args)
    args.methods = args.methods or ",".join(METHODS)
    if args.report_only:
        write_results(load_reads(), load_web(), web_loaded=True)
        print(open(os.path.join(RESULTS, "warm-cache.md")).read())
        return
    if os.geteuid() != 0:
        sys.exit("bench-warm-cache needs root (lab namespace, taps)")
    labkit.lab_up()
    tmp = tempfile.mkdtemp(prefix="vcr-bench-wc-")
    import pathlib
    b = Bench(os.path.abspath(args.build), pathlib.Path(tmp))
    rows, web = [], (load_web() if args.no_web else {})
    try:
        b.d.server(heartbeat_ms=500)
        src = make_source(b.tmp, False)
        src_pf = make_source(b.tmp, True) if not args.web_only else None
        if args.web_only:
            rows = load_reads()
        for rep in range(1, args.runs + 1):
            for i, m in enumerate([] if args.web_only else args.methods.split(",")):
                print(f"{m} run {rep}/{args.runs}:", flush=True)
                bench_reads(b, i, m, src_pf if m == "prefetch" else src, rep, rows)
                write_results(rows, web, web_loaded=args.no_web)
        if not args.no_web:
            for rep in range(1, args.runs + 1):
                for i, m in enumerate(["warm-cache", "conventional"]):
                    print(f"web {m} run {rep}/{args.runs}:", flush=True)
                    w = bench_web(b, 4 + i, m, src, args.web_before, args.web_after)
                    web.setdefault(m, []).append(w)
                    print(f"  {web_stats(w)}, load {w['load1_start']} -> {w['load1_end']}",
                          flush=True)
                    write_results(rows, web)
    finally:
        b.d.stop_all()
        for f in glob.glob("/dev/shm/vcr-wcb*"):
            os.unlink(f)
        labkit.lab_down()
        shutil.rmtree(tmp, ignore_errors=True)
    print(open(os.path.join(RESULTS, "warm-cache.md")).read())


def main_debian(args):
    global DEB_MEMORY_MB, DEB_BASE
    if args.deb_memory_mb is not None and args.deb_memory_mb != DEB_MEMORY_MB:
        if args.reads or args.deb_memory_mb < 256:
            sys.exit(f"--deb-memory-mb {args.deb_memory_mb}: the web part only, and 256 MB "
                     "or more")
        DEB_MEMORY_MB = args.deb_memory_mb
        DEB_BASE = f"warm-cache-debian-ram{DEB_MEMORY_MB}"
    keep = args.append or args.report_only
    web = load_web_debian() if keep or args.reads else {}
    reads = (load_reads_debian() if (keep or not args.reads) and
             DEB_BASE == "warm-cache-debian" else [])
    if args.report_only:
        write_results_debian(web, reads)
        print(open(os.path.join(RESULTS, f"{DEB_BASE}.md")).read())
        return
    allowed = DEB_READ_METHODS if args.reads else ["warm-cache", "conventional"]
    methods = (args.methods or ",".join(allowed)).split(",")
    if not set(methods) <= set(allowed):
        sys.exit(f"--guest debian: --methods `{args.methods}`; allowed: {', '.join(allowed)}")
    if os.geteuid() != 0:
        sys.exit("bench-warm-cache needs root (lab namespace, taps)")
    labkit.lab_up()
    tmp = tempfile.mkdtemp(prefix="vcr-bench-wcd-")
    import pathlib
    b = Bench(os.path.abspath(args.build), pathlib.Path(tmp))
    ok = False
    try:
        b.d.server(heartbeat_ms=500)
        if args.reads:
            src = make_read_source(b.tmp)
            for rep in range(1, args.runs + 1):
                for i, m in enumerate(methods):
                    n = len({r["rep"] for r in reads if r["method"] == m}) + 1
                    print(f"debian reads {m} run {n}:", flush=True)
                    bench_reads_debian(b, 4 + i, m, src, n, reads)
                    write_results_debian(web, reads)
            ok = True
            return
        site = make_site(b.tmp)
        for rep in range(1, args.runs + 1):
            for i, m in enumerate(methods):
                print(f"debian web {m} run {rep}/{args.runs}:", flush=True)
                w = bench_web_debian(b, 4 + i, m, site, args.web_before, args.web_after,
                                     args.probe, args.cloud_init_every_boot)
                if args.probe and w["probe"]:
                    n = len(web.get(m, [])) + 1
                    with open(os.path.join(RESULTS, f"warm-cache-debian-probe-{m}-{n}.txt"),
                              "w") as f:
                        f.write(f"# bench-warm-cache --guest debian --probe, {m} run {n}: "
                                f"reboot order at {w['reboot_at']:.1f} s, ready at "
                                f"{w['ready_at']:.1f} s of the run\n" + deb_probe_summary(
                                    w["probe"]))
                web.setdefault(m, []).append(w)
                st = deb_stats(w)
                print("  " + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
                      + f", ready at {w['ready_at']:.0f} s, load {w['load1_start']} -> "
                      f"{w['load1_end']}, mount {w['mount_after']}", flush=True)
                write_results_debian(web, reads)
        ok = True
    finally:
        b.d.stop_all()
        labkit.lab_down()
        if ok and not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # the agents' logs and the guests' consoles, for the failed run
            subprocess.run(["rm", "-rf", "--one-file-system", *glob.glob(f"{tmp}/*/*.img"),
                            *glob.glob(f"{tmp}/*/*.qcow2"), f"{tmp}/site", f"{tmp}/readsrc"])
            print(f"kept {tmp} (logs, consoles)", file=sys.stderr)
    print(open(os.path.join(RESULTS, f"{DEB_BASE}.md")).read())


if __name__ == "__main__":
    main()
