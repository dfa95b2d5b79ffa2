"""``harness compare-fits NAME=RESULTS ...``: how tightly different sweeps pin the same loss law.

Each sweep's completed runs get the same Approach-3 Chinchilla fit with the same bootstrap;
the table gives, per sweep, its total compute (sum of 6ND) and the 90% interval of the
exponents and of N*, D* and the loss at shared target budgets, with the interval widths
(in decades for positive quantities) and their ratio to the first sweep's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.analysis.compare_fits import compare
from harness.core.io import atomic_write_text, write_json
from harness.report.losslaw_text import compare_markdown


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness compare-fits", description=__doc__.splitlines()[0])
    p.add_argument(
        "sweeps", nargs="+", help="NAME=RESULTS_DIR (the first is the reference for the width ratios)"
    )
    p.add_argument(
        "--target-compute", type=float, action="append", required=True, help="budget C; repeatable"
    )
    p.add_argument("--loss-column", default="heldout_loss")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write compare.json and compare.md here")
    return p


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    sweeps = {}
    for spec in a.sweeps:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_dir():
            print(
                f"harness compare-fits: {spec!r} is not NAME=RESULTS_DIR with an existing folder",
                file=sys.stderr,
            )
            return 2
        sweeps[name] = Path(path)
    try:
        res = compare(sweeps, a.target_compute, a.loss_column, a.bootstrap, a.seed)
    except ValueError as e:  # LossLawError included: bad or too few runs
        print(f"harness compare-fits: {e}", file=sys.stderr)
        return 2
    md = compare_markdown(res)
    print(md)
    if a.out:
        write_json(a.out / "compare.json", res)
        atomic_write_text(a.out / "compare.md", md)
    return 0
