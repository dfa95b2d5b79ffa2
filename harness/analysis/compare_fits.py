"""``harness compare-fits NAME=RESULTS ...``: how tightly different sweeps pin the same loss law.

Each sweep's completed runs get the same Approach-3 Chinchilla fit with the same bootstrap;
the table gives, per sweep, its total compute (sum of 6ND) and the 90% interval of the
exponents and of N*, D* and the loss at shared target budgets, with the interval widths
(in decades for positive quantities) and their ratio to the first sweep's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from harness.core.io import atomic_write_text
from harness.core.records import records_table

QUANTITIES = ("a", "N_opt", "D_opt", "loss")


def fit_sweep(root: Path, loss_column: str, n_bootstrap: int, seed: int):
    from harness.analysis.losslaw import fit_chinchilla

    df = records_table(root).dropna(subset=["N", "D", loss_column])
    if df.empty:
        raise ValueError(f"{root}: no completed runs with N, D and {loss_column}")
    fit = fit_chinchilla(
        df["N"].to_numpy(float),
        df["D"].to_numpy(float),
        df[loss_column].to_numpy(float),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return fit, len(df), float(df["C"].sum())


def width(q: str, iv: dict[str, float]) -> float:
    """Interval width: in decades for N*, D* (log-normal-ish), absolute for the exponent and the loss."""
    lo, hi = iv.get("lo"), iv.get("hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return float("nan")
    if q in ("N_opt", "D_opt"):
        return math.log10(hi / lo) if lo > 0 else float("nan")
    return hi - lo


def compare(
    sweeps: dict[str, Path], targets: list[float], loss_column: str, n_bootstrap: int, seed: int
) -> dict:
    rows: list[dict[str, Any]] = []
    info = {}
    for name, root in sweeps.items():
        fit, n_runs, total_c = fit_sweep(root, loss_column, n_bootstrap, seed)
        info[name] = {
            "root": str(root),
            "runs": n_runs,
            "total_compute_6nd": total_c,
            "c_max": fit.c_max,
            "params": fit.params,
            "se": fit.se,
            "bootstrap_ok": fit.n_bootstrap_ok,
        }
        for c in targets:
            opt = fit.optimal(c)
            for q in QUANTITIES:
                iv = opt[q]
                rows.append(
                    {
                        "sweep": name,
                        "C": c,
                        "quantity": q,
                        "value": iv["value"],
                        "lo": iv.get("lo"),
                        "hi": iv.get("hi"),
                        "width": width(q, iv),
                        "undefined_frac": iv.get("undefined_frac"),
                        "extrapolation_oom": opt["extrapolation_oom"],
                    }
                )
    first = next(iter(sweeps))
    base = {(r["C"], r["quantity"]): r["width"] for r in rows if r["sweep"] == first}
    for r in rows:
        b = base.get((r["C"], r["quantity"]))
        r["width_vs_" + first] = r["width"] / b if b and math.isfinite(b) and b > 0 else float("nan")
    return {"sweeps": info, "rows": rows, "loss_column": loss_column, "n_bootstrap": n_bootstrap}


def markdown(res: dict) -> str:
    first = next(iter(res["sweeps"]))
    lines = ["| sweep | runs | total compute (6ND) | largest run C |", "|---|---|---|---|"]
    lines += [
        f"| {n} | {s['runs']} | {s['total_compute_6nd']:.3g} | {s['c_max']:.3g} |"
        for n, s in res["sweeps"].items()
    ]
    lines += [
        "",
        f"| C | quantity | sweep | value | 90% interval | width | width / {first}'s | orders of C beyond data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["C"], QUANTITIES.index(r["quantity"]))):
        unit = " dec" if r["quantity"] in ("N_opt", "D_opt") else ""
        if r["lo"] is not None and math.isfinite(r["lo"]):
            iv = f"[{r['lo']:.3g}, {r['hi']:.3g}]"
        else:  # too many resamples without an interior optimum: no finite interval
            iv = (
                f"unbounded ({r['undefined_frac']:.0%} of resamples undefined)"
                if r.get("undefined_frac")
                else "n/a"
            )
        lines.append(
            f"| {r['C']:.3g} | {r['quantity']} | {r['sweep']} | {r['value']:.3g} | {iv} | "
            f"{r['width']:.3g}{unit} | {r['width_vs_' + first]:.2f} | {r['extrapolation_oom']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
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
    a = p.parse_args(argv)
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
    md = markdown(res)
    print(md)
    if a.out:
        atomic_write_text(a.out / "compare.json", json.dumps(res, indent=2, default=float) + "\n")
        atomic_write_text(a.out / "compare.md", md)
    return 0
