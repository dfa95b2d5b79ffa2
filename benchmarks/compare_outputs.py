"""Behaviour check for refactors: the analysis commands give the same numbers as the saved outputs.

    python benchmarks/compare_outputs.py [--saved results/reference/restructure] [--rtol 1e-9]

Runs ``harness validate``, ``harness fit results/reference/scaling-cpu/runs`` and
``harness extrapolate cluster=colossus`` into a temporary folder and compares every number
in their JSON with the saved copies (made before the restructure, see COMMAND.md there),
leaf by leaf. Wall-clock fields are not compared. Exit 1 and a list of differences if any.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Fields that measure this machine's wall clock or name this invocation, not the result.
IGNORED = re.compile(r"(^|\.)(elapsed_s|command|plots|out|source_paths)(\.|\[|$)")
COMMANDS = {
    "validate.json": ["validate"],
    "fit.json": ["fit", "results/reference/scaling-cpu/runs"],
    "extrapolate.json": ["extrapolate", "cluster=colossus"],
}


def leaves(obj: object, path: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def same(a: object, b: object, rtol: float) -> bool:
    if (
        isinstance(a, bool)
        or isinstance(b, bool)
        or not isinstance(a, int | float)
        or not isinstance(b, int | float)
    ):
        return a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300)


def compare(saved: dict, new: dict, rtol: float) -> list[str]:
    a = {p: v for p, v in leaves(saved) if not IGNORED.search(p)}
    b = {p: v for p, v in leaves(new) if not IGNORED.search(p)}
    out = [f"missing now: {p} (was {a[p]!r})" for p in sorted(a.keys() - b.keys())]
    out += [f"new field: {p} = {b[p]!r}" for p in sorted(b.keys() - a.keys())]
    out += [
        f"{p}: saved {a[p]!r}, now {b[p]!r}"
        for p in sorted(a.keys() & b.keys())
        if not same(a[p], b[p], rtol)
    ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saved", type=Path, default=ROOT / "results/reference/restructure")
    p.add_argument("--rtol", type=float, default=1e-9)
    a = p.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in COMMANDS.items():
            out = Path(tmp) / name.removesuffix(".json")
            cmd = [sys.executable, "-m", "harness.cli", *args, "--out", str(out)]
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"FAIL {name}: {' '.join(args)} exited {run.returncode}\n{run.stderr[-2000:]}")
                failures += 1
                continue
            diffs = compare(
                json.loads((a.saved / name).read_text()), json.loads((out / name).read_text()), a.rtol
            )
            print(
                f"{'same' if not diffs else 'DIFFERENT'}: harness {' '.join(args)} ({len(diffs)} differences)"
            )
            for d in diffs[:40]:
                print("   ", d)
            failures += bool(diffs)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
