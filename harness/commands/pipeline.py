"""``harness pipeline``: the main job, end to end on the embedded default.

sweep (CPU runs) -> commbench -> loss-law fit -> published-run replay -> extrapolation to
colossus -> report. Each step is the same command a user would run by hand, reading the
files the previous step wrote. A step that fails is reported and the rest still run, so
the report shows what exists and says what is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path


def _step(name: str, fn: Callable[[], int], status: dict[str, str]) -> None:
    print(f"\n=== {name} ===", flush=True)
    start = time.time()
    try:
        rc = fn()
        status[name] = f"exit {rc} in {time.time() - start:.0f} s"
    except Exception as e:  # one broken step must not lose the others' results
        traceback.print_exc()
        status[name] = f"error {type(e).__name__}: {e}"
    print(f"=== {name}: {status[name]} ===", flush=True)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="harness pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--sweep", default="default", help="sweep preset to run (default: default)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where fit/validate/extrapolate/report go (default: <results>/pipeline)",
    )
    p.add_argument("--cluster", default="colossus")
    p.add_argument("--model", default="gpt3-175b", help="model shape for the throughput extrapolation")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--skip-sweep", action="store_true", help="use the runs already under <results>/<sweep>")
    a = p.parse_args(argv)
    from harness.commands import commbench, report, sweep
    from harness.commands import extrapolate as extrapolate_cmd
    from harness.commands import fit as fit_cmd
    from harness.commands import validate as validate_cmd

    out = a.out or a.results / "pipeline"
    runs = a.results / a.sweep
    status: dict[str, str] = {}
    start = time.time()
    if not a.skip_sweep:
        _step("sweep", lambda: sweep.main([f"sweep={a.sweep}", f"results_dir={a.results}"]), status)
    _step(
        "commbench",
        lambda: commbench.main(
            [
                "--world-sizes",
                "2",
                "--max-bytes",
                str(16 << 20),
                "--results-root",
                str(a.results / "commbench"),
                "--quiet",
            ]
        ),
        status,
    )
    _step(
        "fit",
        lambda: fit_cmd.main([str(runs), "--out", str(out / "fit"), "--bootstrap", str(a.bootstrap)]),
        status,
    )
    _step(
        "validate",
        lambda: validate_cmd.main(["--out", str(out / "validate"), "--results", str(runs)]),
        status,
    )
    _step(
        "extrapolate",
        lambda: extrapolate_cmd.main(
            [
                f"cluster={a.cluster}",
                f"model={a.model}",
                "--results",
                str(runs),
                "--critical-batch",
                "auto",
                "--out",
                str(out / "extrapolate"),
            ]
        ),
        status,
    )
    _step(
        "report",
        lambda: report.main(
            [
                "--results",
                str(runs),
                "--commbench",
                str(a.results / "commbench"),
                "--fit",
                str(out / "fit"),
                "--validate",
                str(out / "validate"),
                "--extrapolate",
                str(out / "extrapolate"),
                "--out",
                str(out / "report"),
            ]
        ),
        status,
    )
    print(f"\npipeline finished in {time.time() - start:.0f} s")
    for name, st in status.items():
        print(f"  {name:12s} {st}")
    print(f"report: {out / 'report' / 'report.md'}")
    return 0 if (out / "report" / "report.md").exists() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
