"""``harness report``: one Markdown file with plots, from what the other commands wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.report.document import build


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="harness report", description=__doc__.splitlines()[0])
    p.add_argument(
        "--results", type=Path, default=Path("results/default"), help="sweep folder of run records"
    )
    p.add_argument("--commbench", type=Path, default=Path("results/commbench"))
    p.add_argument("--fit", type=Path, default=Path("results/fit"))
    p.add_argument("--validate", type=Path, default=Path("results/validate"))
    p.add_argument("--extrapolate", type=Path, default=Path("results/extrapolate"))
    p.add_argument("--out", type=Path, default=Path("results/report"))
    a = p.parse_args(argv)
    path = build(a.results, a.commbench, a.fit, a.validate, a.extrapolate, a.out)
    print(f"wrote {path}")
    return 0
