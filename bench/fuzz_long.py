#!/usr/bin/env python3
"""make fuzz-long: a longer libFuzzer campaign over every harness of tests/fuzz (each
parser of untrusted input: agent link frames, QMP, the inventory's handlers of agent
messages, health-check answers, DNS replies and key files, HTTP heads, standby orders,
server and agent YAML configurations, ...).

Each harness runs from its seed corpus (tests/fuzz/corpus/NAME, copied: the campaign's
finds are not committed) until EXECS executions (default 10^7) or CAP seconds of fuzzing
(default 1800), whichever comes first: the whole campaign is bounded by 14 x 1800 s = 7 h;
at the rates of bench/results/fuzz.md it takes about 2 h.  --session S splits a harness's
fuzzing into sessions of at most S seconds, each continuing on the corpus the earlier ones
grew, and --lock FILE makes each session hold flock(2) on FILE: on a shared machine
(`make fuzz-long SESSION=540 LOCK=/tmp/vcr-lab.lock`, not itself under flock) no session
holds the lab's lock for more than S seconds, and the others' work runs in between.
Writes bench/results/fuzz.{csv,md,png}: harness, execs, seconds, crashes (crash-, leak-,
timeout-, oom- artifacts and sanitizer reports), coverage (libFuzzer's `cov:`, edges
reached), plus the load average before the run.  Goal: >= 10^7 executions per harness
and 0 crashes.  A harness that crashes keeps its artifacts under ARTIFACTS/NAME.

--jobs N runs N harnesses at a time (each libFuzzer process is one thread); --merge keeps
the rows of harnesses not run this time (with --only), so that a harness can be run again
on its own.  Run it under `nice -n 19` on a shared machine: the load average is recorded.
"""
import argparse
import concurrent.futures
import contextlib
import csv
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|"
                       r"runtime error:")


@contextlib.contextmanager
def held(lock):
    """flock(2) on the file `lock` for the duration (nothing when None): the lab's lock
    on a shared machine (`/tmp/vcr-lab.lock`), so that a session runs alone."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_one(path, execs, cap, artifacts, session=None, lock=None):
    """Fuzzes one harness until `execs` executions or `cap` seconds of fuzzing, in
    sessions of at most `session` seconds (each under `lock`, when given): every session
    after the first continues on the corpus the earlier ones grew (libFuzzer replays it
    first; those runs count).  Returns the row: executions and seconds summed over the
    sessions, coverage as the last one ended."""
    name = os.path.basename(path)[len("fuzz_"):]
    seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", name)
    os.makedirs(artifacts, exist_ok=True)
    session = session or cap
    total, seconds, sessions, cov, rc, sanitizer = 0, 0.0, 0, [], 0, False
    with tempfile.TemporaryDirectory() as work:
        if os.path.isdir(seeds):
            shutil.copytree(seeds, work, dirs_exist_ok=True)
        env = dict(os.environ, UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        while total < execs and seconds < cap - 1:
            budget = int(min(session, cap - seconds))
            with held(lock):
                t0 = time.monotonic()
                r = subprocess.run([path, f"-runs={execs - total}", f"-max_total_time={budget}",
                                    "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
                                    work], capture_output=True, text=True, env=env)
                seconds += time.monotonic() - t0
            sessions += 1
            done = re.search(r"stat::number_of_executed_units:\s+(\d+)", r.stderr)
            total += int(done.group(1)) if done else 0
            cov = re.findall(r"cov: (\d+)", r.stderr) or cov
            rc = r.returncode
            sanitizer |= bool(SANITIZER.search(r.stderr))
            if rc != 0 or done is None:
                break  # a crash (its artifact is kept), or libFuzzer did not finish
    found = [f for f in os.listdir(artifacts)
             if f.split("-")[0] in ("crash", "leak", "timeout", "oom")]
    crashes = len(found) + (1 if sanitizer and not found else 0)
    if crashes == 0:
        shutil.rmtree(artifacts, ignore_errors=True)
    return {"harness": name, "execs": total, "seconds": round(seconds, 1), "crashes": crashes,
            "coverage": int(cov[-1]) if cov else 0, "sessions": sessions, "rc": rc}


def plot(rows):
    """bench/results/fuzz.png: executions per harness (log scale) against the 10^7 goal,
    with gnuplot (gnuplot-nox); skipped with a note when it is not installed."""
    if shutil.which("gnuplot") is None:
        print("fuzz-long: no gnuplot: fuzz.png not drawn", file=sys.stderr)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as dat:
        for i, r in enumerate(rows):
            dat.write(f"{i} {r['harness']} {max(1, int(r['execs']))}\n")
    script = f"""
set terminal pngcairo size 1000,500 noenhanced
set output '{os.path.join(RESULTS, "fuzz.png")}'
set title 'make fuzz-long: executions per harness (goal 1e7, 0 crashes)'
set logscale y
set yrange [1e5:2e7]
set ylabel 'executions'
set style fill solid 0.6
set boxwidth 0.7
set xtics rotate by -35
set key off
plot '{dat.name}' using 1:3:xtic(2) with boxes, 1e7 with lines dashtype 2 lw 2
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=False)
    os.unlink(dat.name)


NOTES = "## Notes"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build-fuzz", help="the -Dfuzz=true build (make build-fuzz)")
    ap.add_argument("--execs", type=int, default=10_000_000, help="executions per harness")
    ap.add_argument("--cap", type=int, default=1800,
                    help="seconds of fuzzing per harness at most (all its sessions)")
    ap.add_argument("--session", type=int,
                    help="seconds per session at most (default: the cap, one session)")
    ap.add_argument("--lock", help="a file each session holds flock(2) on, e.g. the lab's "
                    "/tmp/vcr-lab.lock: sessions of all harnesses then run one at a time, "
                    "between other users of the lock")
    ap.add_argument("--only", help="comma-separated harness names (without fuzz_)")
    ap.add_argument("--artifacts", default="/tmp/vcr-fuzz-long")
    ap.add_argument("--jobs", type=int, default=1, help="harnesses run at a time")
    ap.add_argument("--merge", action="store_true",
                    help="keep bench/results/fuzz.csv rows of harnesses not run now")
    ap.add_argument("--plot-only", action="store_true",
                    help="draw bench/results/fuzz.png from fuzz.csv and run nothing")
    args = ap.parse_args()
    if args.plot_only:
        with open(os.path.join(RESULTS, "fuzz.csv")) as f:
            plot([dict(r, execs=int(r["execs"])) for r in csv.DictReader(f)])
        return 0
    fuzz_dir = os.path.join(ROOT, args.build, "tests", "fuzz")
    if not os.path.isdir(fuzz_dir):
        sys.exit(f"fuzz-long: no {fuzz_dir}: run `make build-fuzz` first")
    only = set(args.only.split(",")) if args.only else None
    harnesses = sorted(os.path.join(fuzz_dir, f) for f in os.listdir(fuzz_dir)
                       if f.startswith("fuzz_") and not f.endswith(".p")
                       and os.access(os.path.join(fuzz_dir, f), os.X_OK)
                       and (only is None or f[len("fuzz_"):] in only))
    load = open("/proc/loadavg").read().split()[:3]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    def one(path):
        name = os.path.basename(path)
        print(f"fuzz-long: {name}: up to {args.execs} runs or {args.cap} s"
              + (f" in sessions of {args.session} s" if args.session else "") + " ...",
              flush=True)
        row = run_one(path, args.execs, args.cap, os.path.join(args.artifacts, name),
                      args.session, args.lock)
        row["load1"] = open("/proc/loadavg").read().split()[0]
        row["started"] = started
        print(f"fuzz-long:   {name}: {row['execs']} runs in {row['seconds']} s "
              f"({row['sessions']} session(s)), coverage "
              f"{row['coverage']}, crashes {row['crashes']}, load {row['load1']}", flush=True)
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, harnesses))
    fields = ["harness", "execs", "seconds", "crashes", "coverage", "sessions", "load1",
              "started"]
    csv_path = os.path.join(RESULTS, "fuzz.csv")
    if args.merge and os.path.exists(csv_path):
        ran = {r["harness"] for r in rows}
        # Rows of harnesses that no longer exist are dropped.
        exist = {f[len("fuzz_"):] for f in os.listdir(fuzz_dir) if f.startswith("fuzz_")}
        with open(csv_path) as f:
            for old in csv.DictReader(f):
                if old["harness"] not in ran and old["harness"] in exist:
                    rows.append({"harness": old["harness"], "execs": int(old["execs"]),
                                 "seconds": float(old["seconds"]),
                                 "crashes": int(old["crashes"]),
                                 "coverage": int(old["coverage"]),
                                 "sessions": int(old.get("sessions") or 1),
                                 "load1": old["load1"],
                                 "started": old.get("started") or "?"})
    rows.sort(key=lambda r: r["harness"])
    os.makedirs(RESULTS, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in w.fieldnames})
    goal = [r for r in rows if r["execs"] >= 10_000_000 and r["crashes"] == 0]
    md_path = os.path.join(RESULTS, "fuzz.md")
    # Written by hand below NOTES (profiles, what changed in a harness): kept.
    notes = ""
    if os.path.exists(md_path):
        with open(md_path) as f:
            old_md = f.read()
        if NOTES in old_md:
            notes = old_md[old_md.index(NOTES):]
    with open(md_path, "w") as f:
        f.write("# Fuzzing campaign (`make fuzz-long`)\n\n")
        f.write(f"Run {started} (`make fuzz-long`, {args.jobs} harness(es) at a time, "
                "under `nice -n 19`) on a machine of 2 cores shared with other work (QEMU "
                "guests of integration tests), so executions per second vary with the load; "
                f"load average before it {' '.join(load)}, after each harness in the table. "
                "Each harness from its seed corpus (`tests/fuzz/corpus`) "
                f"until {args.execs:,} executions or {args.cap} s of fuzzing"
                + (f", in sessions of at most {args.session} s, each continuing on the corpus "
                   "the earlier ones grew" if args.session else "")
                + (f", each session holding `{args.lock}` (run alone, between other users "
                   "of the lock; the seconds are fuzzing time, not waiting)"
                   if args.lock else "") + ". Coverage is libFuzzer's "
                "`cov:` (edges reached). Goal: >= 10^7 executions per harness and 0 crashes: "
                f"{len(goal)} of {len(rows)} harnesses reached it."
                + (" With `MERGE=1` only some harnesses ran then; the others' rows are "
                   "from the runs their `run started` names, at that run's load."
                   if args.merge else "") + "\n\n")
        f.write("| harness | executions | seconds | exec/s | crashes | coverage | sessions "
                "| load1 after | run started |\n")
        f.write("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for r in rows:
            rate = r["execs"] / r["seconds"] if r["seconds"] else 0
            f.write(f"| `{r['harness']}` | {r['execs']:,} | {r['seconds']} | {rate:,.0f} | "
                    f"{r['crashes']} | {r['coverage']} | {r['sessions']} | {r['load1']} | "
                    f"{r['started']} |\n")
        f.write("\n![executions per harness](fuzz.png)\n")
        f.write("\nSource of truth: `bench/results/fuzz.csv`; the harnesses and what each one "
                "asserts: the comment at the top of `tests/fuzz/fuzz_NAME.c`.\n")
        if notes:
            f.write("\n" + notes)
    plot(rows)
    bad = [r["harness"] for r in rows if r["crashes"]]
    print(f"fuzz-long: {len(rows)} harnesses, crashes in: {', '.join(bad) or 'none'}; "
          f"bench/results/fuzz.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
