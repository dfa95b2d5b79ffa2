"""How tightly different sweeps pin the same loss law (what ``harness compare-fits`` computes).

Each sweep's completed runs get the same Approach-3 Chinchilla fit with the same bootstrap;
the result gives, per sweep, its total compute (sum of 6ND) and the 90% interval of the
exponents and of N*, D* and the loss at shared target budgets, with the interval widths
(in decades for positive quantities) and their ratio to the first sweep's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.analysis.losslaw import ChinchillaFit, LossLawError, fit_chinchilla
from harness.core.records import records_table

QUANTITIES = ("a", "N_opt", "D_opt", "loss")


def fit_sweep(root: Path, loss_column: str, n_bootstrap: int, seed: int) -> tuple[ChinchillaFit, int, float]:
    """The sweep's Chinchilla fit, its number of runs and its total compute."""
    df = records_table(root).dropna(subset=["N", "D", loss_column])
    if df.empty:
        raise LossLawError(f"{root}: no completed runs with N, D and {loss_column}")
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
) -> dict[str, Any]:
    """{"sweeps": per-sweep summary, "rows": one per (sweep, C, quantity), ...}; the first sweep is the reference."""
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
