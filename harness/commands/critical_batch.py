"""``harness critical-batch RESULTS``: fit B_crit(L) = B*/L^(1/alpha_B) to the runs' gradient noise scales.

    harness critical-batch results/scaling-cpu --at-loss 2.0 --out critical_batch.json
    harness critical-batch results/scaling-cpu --trajectories   # also the per-step b_simple

Prints the law with its 90% bootstrap intervals and B_crit at each --at-loss; --out writes the
fit and the predictions as JSON. Runs without a measured noise scale (world size 1) are skipped;
none at all is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.analysis.critical_batch import CriticalBatchError, fit_from_records
from harness.core.io import write_json
from harness.report.losslaw_text import critical_batch_lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness critical-batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="results folder with run records")
    p.add_argument("--loss-column", default="heldout_loss")
    p.add_argument(
        "--trajectories", action="store_true", help="also use the per-step b_simple along training"
    )
    p.add_argument("--at-loss", type=float, action="append", default=[], help="predict B_crit at this loss")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--out", type=Path, default=None, help="write the fit as JSON here")
    return p


def main(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    try:
        law = fit_from_records(
            a.root, loss_col=a.loss_column, trajectories=a.trajectories, n_bootstrap=a.bootstrap
        )
        predictions = [law.predict(L) for L in a.at_loss]
    except CriticalBatchError as e:
        print(f"harness critical-batch: {e}", file=sys.stderr)
        return 2
    print("\n".join(critical_batch_lines(law, predictions)))
    if a.out:
        write_json(a.out, {**law.to_dict(), "predictions": predictions})
    return 0
