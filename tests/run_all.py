#!/usr/bin/env python3
"""Runs every test suite and ends with one line: "N passed, N failed".

Stages: clang-format check, static checks (no src/ file over 800 lines, no benchmark
importing another, cppcheck, clang-tidy (.clang-tidy)), cmocka unit tests (ASan+UBSan build), short libFuzzer runs,
integration tests (pytest, real QEMU + BIND9 in the lab namespace).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Debian's interpreter: pytest comes from python3-pytest, not from whatever python3 is first
# on PATH.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []

    def add(self, name, ok, skipped=False):
        if skipped:
            self.skipped += 1
        elif ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(name)


def stage(title):
    print(f"\n=== {title} ===", flush=True)


def run_format_check(t):
    stage("format (clang-format)")
    files = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    r = subprocess.run(["clang-format", "--dry-run", "--Werror"] + files, cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-4000:])
    print("format:", "ok" if r.returncode == 0 else "FAILED")
    t.add("format", r.returncode == 0)


# cppcheck knows nothing of __attribute__((cleanup)): its leak checks would report every
# cleanup_free / cleanup_close local (docs/conventions.md), so those are off; the rest is on.
CPPCHECK = ["cppcheck", "--quiet", "--enable=warning,portability", "--inline-suppr", "-I", "src",
            "--std=c11", "--include=/usr/include/x86_64-linux-gnu/sys/queue.h",
            "--error-exitcode=1", "--suppress=missingIncludeSystem", "--suppress=memleak",
            "--suppress=resourceLeak", "--suppress=leakReturnValNotUsed",
            "--suppress=leakNoVarFunctionCall", "--suppress=memleakOnRealloc", "src"]


def run_static_analysis(t, build):
    stage("static analysis (file length, bench imports, cppcheck, clang-tidy)")
    # No file of src/ over 800 lines (tests/static/file_length.py says why).
    r = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "static", "file_length.py")],
                       cwd=ROOT, capture_output=True, text=True)
    print((r.stdout + r.stderr).strip())
    t.add("file length", r.returncode == 0)
    # No benchmark imports another or the tests' conftest (tests/static/bench_imports.py).
    r = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "static", "bench_imports.py")],
                       cwd=ROOT, capture_output=True, text=True)
    print((r.stdout + r.stderr).strip())
    t.add("bench imports", r.returncode == 0)
    r = subprocess.run(CPPCHECK, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr[-6000:])
    print("cppcheck:", "ok" if r.returncode == 0 else "FAILED")
    t.add("cppcheck", r.returncode == 0)
    # clang-tidy: the checks of .clang-tidy over every file of src/ in the build's
    # compile_commands.json (meson writes it); a finding is an error.
    db = os.path.join(ROOT, build)
    if not os.path.exists(os.path.join(db, "compile_commands.json")):
        t.add("clang-tidy: build missing", False)
        return
    r = subprocess.run(["run-clang-tidy", "-quiet", "-p", db, "-j", str(os.cpu_count() or 1),
                        os.path.join(ROOT, "src") + "/"], cwd=ROOT, capture_output=True,
                       text=True)
    if r.returncode != 0:
        print((r.stdout + r.stderr)[-6000:])
    print("clang-tidy:", "ok" if r.returncode == 0 else "FAILED")
    t.add("clang-tidy", r.returncode == 0)


CMOCKA_PASSED = re.compile(r"\[\s*PASSED\s*\]\s+(\d+) test")
CMOCKA_FAILED = re.compile(r"\[\s*FAILED\s*\]\s+(\d+) test")
CMOCKA_SKIPPED = re.compile(r"\[\s*SKIPPED\s*\]\s+(\d+) test")
SANITIZER = re.compile(r"(ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer)")


def run_unit(t, build):
    stage(f"unit tests (cmocka, {build})")
    unit_dir = os.path.join(ROOT, build, "tests", "unit")
    if not os.path.isdir(unit_dir):
        t.add("unit: build missing", False)
        return
    env = dict(os.environ, VCR_TEST_DATA=os.path.join(ROOT, "tests", "unit", "data"),
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    for name in sorted(os.listdir(unit_dir)):
        path = os.path.join(unit_dir, name)
        if not name.startswith("test_") or not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        try:
            r = subprocess.run([path], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
            out = r.stdout + r.stderr
            rc = r.returncode
        except subprocess.TimeoutExpired as e:
            out = f"timeout after {e.timeout}s"
            rc = -1
        passed = sum(int(m) for m in CMOCKA_PASSED.findall(out))
        failed = sum(int(m) for m in CMOCKA_FAILED.findall(out))
        skipped = sum(int(m) for m in CMOCKA_SKIPPED.findall(out))
        sanitizer = SANITIZER.search(out)
        if rc != 0 and failed == 0:
            failed = 1  # a crash or sanitizer abort ends the binary before its summary
        if sanitizer and failed == 0:
            failed = 1
        for _ in range(passed):
            t.add(name, True)
        for _ in range(skipped):
            t.add(name, True, skipped=True)
        for _ in range(failed):
            t.add(name, False)
        status = "ok" if failed == 0 else "FAILED"
        print(f"{name}: {passed} passed, {failed} failed, {skipped} skipped: {status}")
        if failed:
            print(out[-6000:])


def run_fuzz(t, build, seconds):
    stage(f"fuzz (libFuzzer, {seconds}s each)")
    fuzz_dir = os.path.join(ROOT, build, "tests", "fuzz")
    if not os.path.isdir(fuzz_dir):
        t.add("fuzz: build missing", False)
        return
    for name in sorted(os.listdir(fuzz_dir)):
        path = os.path.join(fuzz_dir, name)
        if not name.startswith("fuzz_") or not os.access(path, os.X_OK) or os.path.isdir(path):
            continue
        target = name[len("fuzz_"):]
        seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", target)
        with tempfile.TemporaryDirectory() as work:
            if os.path.isdir(seeds):
                shutil.copytree(seeds, work, dirs_exist_ok=True)
            env = dict(os.environ, UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
                       ASAN_OPTIONS="abort_on_error=0")
            r = subprocess.run([path, f"-max_total_time={seconds}", "-print_final_stats=1",
                                f"-artifact_prefix={work}/", work],
                               capture_output=True, text=True, env=env)
        # A report that did not stop the run (a recoverable check) fails it too.
        ok = r.returncode == 0 and not SANITIZER.search(r.stderr)
        execs = re.search(r"stat::number_of_executed_units:\s+(\d+)", r.stderr)
        print(f"{name}: {execs.group(1) if execs else '?'} runs: {'ok' if ok else 'FAILED'}")
        if not ok:
            print(r.stderr[-6000:])
        t.add(name, ok)


def run_integration(t, build, asan_build):
    stage("integration (pytest: real QEMU, BIND9, lab namespace)")
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        env = dict(os.environ, VCR_BUILD=os.path.join(ROOT, build),
                   VCR_ASAN_BUILD=os.path.join(ROOT, asan_build))
        subprocess.run([PYTHON, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                        f"--junitxml={junit}", "tests/integration"], cwd=ROOT, env=env)
        if not os.path.exists(junit):
            t.add("integration: pytest did not run", False)
            return
        cases = list(ET.parse(junit).getroot().iter("testcase"))
        if not cases:
            t.add("integration: pytest collected no test", False)
            return
        # Where the suite's time goes (fixtures included), to keep `make check` short.
        per_file = {}
        for case in cases:
            f = case.get("file") or case.get("classname") or "?"
            per_file[f] = per_file.get(f, 0.0) + float(case.get("time") or 0)
        print("integration time by module (s):")
        for f, secs in sorted(per_file.items(), key=lambda kv: -kv[1]):
            print(f"  {secs:7.1f}  {f}")
        for case in cases:
            name = f"{case.get('classname')}.{case.get('name')}"
            if case.find("skipped") is not None:
                t.add(name, True, skipped=True)
            else:
                bad = case.find("failure") is not None or case.find("error") is not None
                t.add(name, not bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--asan-build", default="build-asan")
    ap.add_argument("--fuzz-build", default="build-fuzz")
    ap.add_argument("--fuzz-seconds", type=int, default=20)
    ap.add_argument("--only", choices=["format", "static", "unit", "fuzz", "integration"],
                    action="append", help="run only these stages (repeatable)")
    args = ap.parse_args()
    only = set(args.only or ["format", "static", "unit", "fuzz", "integration"])
    t = Tally()
    start = time.monotonic()
    if "format" in only:
        run_format_check(t)
    if "static" in only:
        run_static_analysis(t, args.build)
    if "unit" in only:
        run_unit(t, args.asan_build)
    if "fuzz" in only:
        run_fuzz(t, args.fuzz_build, args.fuzz_seconds)
    if "integration" in only:
        run_integration(t, args.build, args.asan_build)
    print(f"\nelapsed {time.monotonic() - start:.0f}s")
    if t.failures:
        print("failed: " + ", ".join(t.failures))
    skipped = f", {t.skipped} skipped" if t.skipped else ""
    print(f"{t.passed} passed, {t.failed} failed{skipped}")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
