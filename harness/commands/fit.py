"""``harness fit``: loss scaling laws with bootstrap intervals from run records or a CSV.

    harness fit results/sweep1                      # run records (heldout_loss by default)
    harness fit --csv runs.csv --columns "N=Model Size,C=Training FLOP,loss=loss"
    harness fit --example chinchilla                # the Chinchilla points, Epoch's refit

Writes fit.json, fit_table.csv and PNG plots to --out (default results/fit/) and prints the
table. Forms the data cannot support are reported as skipped with the reason; bad data
(NaN or non-positive values, missing columns) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.analysis.best_lr import BestLrError
from harness.analysis.losslaw import EPOCH_REFIT, EPOCH_REFIT_SE, ChinchillaFit, LossLawError
from harness.analysis.losslaw.fit_runs import FORMS, FitSettings, fit_table, parse_forms, summary_rows
from harness.analysis.losslaw.tables import EXAMPLES, csv_table, example_table, records_fit_table
from harness.core.io import atomic_write_text, write_json
from harness.report.losslaw_text import epoch_reference
from harness.report.losslaw_text import fit_table as fit_table_text

if TYPE_CHECKING:
    import pandas as pd


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump (see main)
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="harness fit",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("root", nargs="?", help="results folder with run records (record.json)")
    src.add_argument("--csv", type=Path, help="CSV file, one row per run")
    src.add_argument("--example", choices=sorted(EXAMPLES), help="a built-in data set")
    p.add_argument(
        "--columns",
        help="CSV column mapping, e.g. 'N=Model Size,C=Training FLOP,loss=loss' "
        "(keys: N, D or C, loss, optional group)",
    )
    p.add_argument("--loss-column", default=None, help="records: loss column (default heldout_loss)")
    p.add_argument(
        "--n-column", default="N", help="records: parameter-count column (default N, non-embedding)"
    )
    p.add_argument(
        "--group-by", default=None, help="fit each value of this column separately (dataset, seed, ...)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/fit"), help="output folder (default results/fit/)"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-compute",
        type=float,
        action="append",
        default=None,
        metavar="C",
        help="compute budget (FLOP) to predict at; repeatable (default: largest in data x1, x10, x100)",
    )
    p.add_argument(
        "--drop-highest-loss",
        type=int,
        default=None,
        metavar="K",
        help="drop the K highest-loss runs (per group) before fitting",
    )
    p.add_argument("--forms", default=",".join(FORMS), help=f"comma list from {','.join(FORMS)}")
    p.add_argument("--ci", type=float, default=0.9, help="central bootstrap interval (default 0.9: 5%%-95%%)")
    p.add_argument(
        "--span-dex",
        type=float,
        default=0.1,
        help="runs whose compute is within this many decades share an IsoFLOP budget (default 0.1)",
    )
    p.add_argument(
        "--holdout-frac",
        type=float,
        default=0.1,
        help="leave-largest-out: hold out the largest budgets, at least this fraction of runs",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--best-lr",
        action="store_true",
        help="records: keep only the best learning rate per (size, budget) of an LR sweep",
    )
    return p


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        return _run(args)
    except _UsageError as e:
        print(f"harness fit: usage error: {e} (see harness fit --help)", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (LossLawError, BestLrError, OSError) as e:
        print(f"harness fit: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace) -> FitSettings:
    """The flags checked and gathered; a bad value is a LossLawError naming the flag."""
    forms = parse_forms(args.forms)
    if args.bootstrap < 0:
        raise LossLawError(f"--bootstrap {args.bootstrap} is not allowed; allowed: >= 0")
    if not 0 < args.ci < 1:
        raise LossLawError(f"--ci {args.ci} is not allowed; allowed: 0 < ci < 1")
    for C in args.target_compute or []:
        if not (math.isfinite(C) and C > 0):
            raise LossLawError(f"--target-compute {C!r} is not allowed; allowed: finite FLOP > 0")
    return FitSettings(
        forms=forms,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        q=((1 - args.ci) / 2, (1 + args.ci) / 2),
        span_dex=args.span_dex,
        holdout_frac=args.holdout_frac,
        target_compute=args.target_compute,
        drop_highest_loss=args.drop_highest_loss,
    )


def _load(args: argparse.Namespace, s: FitSettings) -> tuple[pd.DataFrame, dict[str, Any]]:
    if args.example:
        table, meta, drop = example_table(args.example)
        if s.drop_highest_loss is None:
            s.drop_highest_loss = drop
        return table, meta
    if args.csv:
        return csv_table(args.csv, args.columns, args.group_by)
    return records_fit_table(
        Path(args.root),
        loss_column=args.loss_column,
        n_column=args.n_column,
        group_by=args.group_by,
        best_lr=args.best_lr,
    )


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    s = _settings(args)
    table, meta = _load(args, s)
    out_json: dict[str, Any] = {
        **meta,
        "n_runs": len(table),
        "dropped_highest_loss": s.drop_highest_loss or 0,
        "bootstrap": s.n_bootstrap,
        "seed": s.seed,
        "quantiles": list(s.q),
        "forms": s.forms,
        "groups": {},
    }
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    groups = fit_table(table, s)
    rows: list[dict] = []
    plots: list[str] = []
    reference: list[str] = []
    for g in groups:
        out_json["groups"][g.group] = g.to_json(s.q)
        rows += summary_rows(g, s.q)
        if not args.no_plots:
            from harness.analysis.losslaw.plots import plot_group

            plots += plot_group(out, g, s.q, single=len(groups) == 1)
        chinchilla = g.get("chinchilla", ChinchillaFit)
        if args.example == "chinchilla" and chinchilla is not None:
            out_json["reference"] = {"epoch_refit": EPOCH_REFIT, "epoch_refit_se": EPOCH_REFIT_SE}
            reference = epoch_reference(chinchilla)
    out_json["plots"] = plots
    out_json["elapsed_s"] = time.perf_counter() - t0
    _write(out, out_json, rows)  # written even when nothing fitted: it records why
    if not any(g.fits for g in groups):
        reasons = "; ".join(f"{r['form']}: {r['note']}" for r in rows if r["quantity"] == "skipped")
        raise LossLawError(f"no requested form could be fitted ({reasons})")
    print(fit_table_text(rows))
    if reference:
        print("\n".join(reference))
    print(
        f"\nwrote {out / 'fit.json'}, {out / 'fit_table.csv'}"
        + (f" and {len(plots)} plot(s)" if plots else "")
        + f" in {out_json['elapsed_s']:.1f} s"
    )
    return 0


def _write(out: Path, out_json: dict[str, Any], rows: list[dict]) -> None:
    import pandas as pd

    write_json(out / "fit.json", out_json)
    atomic_write_text(out / "fit_table.csv", pd.DataFrame(rows).to_csv(index=False))
