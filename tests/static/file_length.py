#!/usr/bin/env python3
"""Fails when a C file of src/ (*.c, *.h) is longer than the limit (800 lines).

A file past it holds more than one unit: split it along a unit (docs/conventions.md,
"Layout"), with the functions its parts share declared in the folder's private header.
The static stage of tests/run_all.py runs it; `--root DIR` checks another checkout.
"""
import argparse
import os
import sys

LIMIT = 800


def long_files(root, limit):
    found = []
    for folder, dirs, files in os.walk(os.path.join(root, "src")):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                lines = sum(1 for _ in f)
            if lines > limit:
                found.append((os.path.relpath(path, root), lines))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), help="the checkout to check (default: this one)")
    ap.add_argument("--limit", type=int, default=LIMIT)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.root, "src")):
        print(f"file length: no src/ in {args.root}", file=sys.stderr)
        return 2
    found = long_files(args.root, args.limit)
    for path, lines in found:
        print(f"{path}: {lines} lines, more than {args.limit}")
    print("file length:", "ok" if not found else f"FAILED ({len(found)} file(s))")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
