#!/usr/bin/env python3
"""Fails when a benchmark imports another benchmark or the tests' conftest.

docs/conventions.md, "Tests": one harness (lab/harness.py, on lab/labkit.py) serves the
tests, the benchmarks and lab/demo; what several benchmarks share lives in a lab module
(e.g. lab/recovery_lab.py); each benchmark keeps its measuring logic in its file and
imports no other benchmark and no pytest conftest.  Reads the imports of every
bench/*.py (ast: `import X`, `from X import ...`, at any depth).  The static stage of
tests/run_all.py runs it; `--root DIR` checks another checkout.
"""
import argparse
import ast
import os
import sys


def bad_imports(root):
    bench = os.path.join(root, "bench")
    files = sorted(f for f in os.listdir(bench) if f.endswith(".py"))
    forbidden = {f[:-3] for f in files} | {"conftest"}
    found = []
    for name in files:
        path = os.path.join(bench, name)
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for m in mods:
                if m.split(".")[0] in forbidden:
                    found.append((f"bench/{name}", node.lineno, m))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), help="the checkout to check (default: this one)")
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.root, "bench")):
        print(f"bench imports: no bench/ in {args.root}", file=sys.stderr)
        return 2
    found = bad_imports(args.root)
    for path, line, mod in found:
        print(f"{path}:{line}: imports `{mod}`, a benchmark or the tests' conftest; "
              "move what is shared into lab/")
    print("bench imports:", "ok" if not found else f"FAILED ({len(found)} import(s))")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
