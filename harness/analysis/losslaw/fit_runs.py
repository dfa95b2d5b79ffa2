"""Every requested loss law fitted to a table of runs, group by group (what ``harness fit`` computes).

A form the data cannot support is skipped with its reason instead of failing the whole fit.
The results come back as data: per group its fits, the flat summary table (one row per form,
quantity and target compute) and the JSON section; the command writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from harness.analysis.losslaw.chinchilla import ChinchillaFit, fit_chinchilla
from harness.analysis.losslaw.inputs import LossLawError
from harness.analysis.losslaw.isoflop import AllocationFit, fit_envelope, fit_isoflop, pareto_frontier
from harness.analysis.losslaw.laws import LawFit, fit_law
from harness.analysis.losslaw.validation import leave_largest_out

if TYPE_CHECKING:
    import pandas as pd

FORMS = ("chinchilla", "kaplan", "saturating", "isoflop", "envelope")
KAPLAN_LAWS = ("kaplan_N", "kaplan_D", "kaplan_ND")
AnyFit = ChinchillaFit | LawFit | AllocationFit
F = TypeVar("F", ChinchillaFit, LawFit, AllocationFit)


@dataclass
class FitSettings:
    """What to fit and how: the forms, the bootstrap, the interval and the IsoFLOP/validation knobs."""

    forms: list[str] = field(default_factory=lambda: list(FORMS))
    n_bootstrap: int = 1000
    seed: int = 0
    q: tuple[float, float] = (0.05, 0.95)
    span_dex: float = 0.1  # runs within this many decades of compute share an IsoFLOP budget
    holdout_frac: float = 0.1  # leave-largest-out holds out at least this fraction of runs
    target_compute: list[float] | None = None  # default: the largest budget in the data x1, x10, x100
    drop_highest_loss: int | None = None  # drop the K highest-loss runs of each group first


@dataclass
class GroupFit:
    """One group's fits, the forms skipped (with the reason), leave-largest-out and the frontier."""

    group: str
    data: dict[str, np.ndarray]  # N, D, C, loss as fitted
    targets: list[float]
    fits: dict[str, AnyFit]
    skipped: dict[str, str]
    validation: dict[str, Any] | None
    frontier: np.ndarray

    def get(self, name: str, kind: type[F]) -> F | None:
        """The fit of form ``name`` if it was fitted (and is a ``kind``), else None."""
        f = self.fits.get(name)
        return f if isinstance(f, kind) else None

    def to_json(self, q: tuple[float, float]) -> dict[str, Any]:
        forms = {
            name: f.to_dict() if isinstance(f, LawFit) else f.to_dict(self.targets, q)
            for name, f in self.fits.items()
        }
        return {
            "n_points": len(self.data["loss"]),
            "c_max": float(self.data["C"].max()),
            "targets": self.targets,
            "forms": forms,
            "skipped": self.skipped,
            "validation": self.validation,
        }


def parse_forms(spec: str) -> list[str]:
    forms = [f.strip() for f in spec.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise LossLawError(f"--forms {spec!r}: unknown {unknown}; allowed: {', '.join(FORMS)}")
    return forms


def drop_highest(table: pd.DataFrame, k: int | None) -> pd.DataFrame:
    if not k:
        return table
    if k < 0:
        raise LossLawError(f"--drop-highest-loss {k} is not allowed; allowed: >= 0")
    return table.drop(table.nlargest(k, "loss").index)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def fit_group(group: str, data: dict[str, np.ndarray], s: FitSettings) -> GroupFit:
    """Every requested form on one group's runs; a form that cannot be fitted is skipped with its reason."""
    N, D, loss = data["N"], data["D"], data["loss"]
    c_max = float(data["C"].max())
    targets = list(s.target_compute or [c_max, 10 * c_max, 100 * c_max])
    fits: dict[str, AnyFit] = {}
    skipped: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], AnyFit]) -> None:
        try:
            fits[name] = fn()
        except LossLawError as e:
            skipped[name] = _one_line(e)

    B, seed, q = s.n_bootstrap, s.seed, s.q
    if "chinchilla" in s.forms:
        attempt("chinchilla", lambda: fit_chinchilla(N, D, loss, n_bootstrap=B, seed=seed))
    if "kaplan" in s.forms:
        for law in KAPLAN_LAWS:
            attempt(law, partial(fit_law, law, N=N, D=D, loss=loss, n_bootstrap=B, seed=seed, q=q))
    if "isoflop" in s.forms:
        attempt(
            "isoflop", lambda: fit_isoflop(N, D, loss, span_dex=s.span_dex, n_bootstrap=B, seed=seed, q=q)
        )
    frontier = pareto_frontier(data["C"], loss)
    if "envelope" in s.forms:
        attempt("envelope", lambda: fit_envelope(N, D, loss, n_bootstrap=B, seed=seed))
    if "saturating" in s.forms:
        attempt(
            "saturating",
            lambda: fit_law(
                "saturating",
                C=data["C"][frontier],
                loss=loss[frontier],
                n_bootstrap=B,
                seed=seed,
                q=q,
                note="fitted to the lower-envelope (frontier) runs",
            ),
        )
        if "saturating" in skipped:
            skipped["saturating"] = f"on the lower-envelope runs: {skipped['saturating']}"
    validation = None
    chinchilla = fits.get("chinchilla")
    if isinstance(chinchilla, ChinchillaFit):
        try:
            validation = leave_largest_out(
                N, D, loss, holdout_frac=s.holdout_frac, span_dex=s.span_dex, full_fit=chinchilla
            )
        except LossLawError as e:
            skipped["leave_largest_out"] = _one_line(e)
    return GroupFit(group, data, targets, fits, skipped, validation, frontier)


def fit_table(table: pd.DataFrame, s: FitSettings) -> list[GroupFit]:
    """``fit_group`` for each value of the table's ``group`` column, in sorted order."""
    out = []
    for group in sorted(table["group"].unique()):
        sub = drop_highest(table[table["group"] == group], s.drop_highest_loss)
        data = {k: sub[k].to_numpy(dtype=float) for k in ("N", "D", "C", "loss")}
        out.append(fit_group(group, data, s))
    return out


def summary_rows(g: GroupFit, q: tuple[float, float]) -> list[dict]:
    """The flat table: one row per (form, quantity[, target compute])."""
    rows: list[dict] = []

    def row(
        form: str,
        quantity: str,
        s: dict | float,
        C: float = math.nan,
        extra: float = math.nan,
        note: str = "",
    ) -> None:
        s = s if isinstance(s, dict) else {"value": s}
        rows.append(
            {
                "group": g.group,
                "form": form,
                "quantity": quantity,
                "C": C,
                "value": s.get("value"),
                "se": s.get("se", math.nan),
                "lo": s.get("lo", math.nan),
                "hi": s.get("hi", math.nan),
                "extrapolation_oom": extra,
                "note": note,
            }
        )

    targets = g.targets
    chin = g.get("chinchilla", ChinchillaFit)
    if chin is not None:
        for k, s in chin.interval(q).items():
            row("chinchilla", k, s)
        row(
            "chinchilla",
            "objective",
            chin.objective,
            note=f"bootstrap ok {chin.n_bootstrap_ok}, failed {chin.n_bootstrap_failed}",
        )
        for i, C in enumerate(targets):
            o = chin.optimal(C, q)
            if i == 0:
                row("chinchilla", "a", o["a"])
                row("chinchilla", "b", o["b"])
            for k in ("N_opt", "D_opt", "tokens_per_param", "loss"):
                row("chinchilla", k, o[k], C, o["extrapolation_oom"])
    for law in (*KAPLAN_LAWS, "saturating"):
        lf = g.get(law, LawFit)
        if lf is not None:
            for k, v in lf.params.items():
                row(
                    law,
                    k,
                    {"value": v, "se": lf.se.get(k, math.nan), **lf.intervals.get(k, {})},
                    note=lf.note,
                )
            if law == "saturating":
                for C in targets:
                    b = lf.predict_band(q, C=C)
                    row(law, "loss", {k: float(v[0]) for k, v in b.items()}, C, math.log10(C / lf.x_max["C"]))
    for name in ("isoflop", "envelope"):
        af = g.get(name, AllocationFit)
        if af is not None:
            for i, C in enumerate(targets):
                o = af.optimal(C, q)
                if i == 0:
                    row(name, "a", o["a"], note=af.note)
                    row(name, "b", o["b"])
                for k in ("N_opt", "D_opt", "tokens_per_param"):
                    row(name, k, o[k], C, o["extrapolation_oom"])
    held = g.validation
    if held:
        note = f"fit on {held['n_train']} runs up to C={held['c_max_train']:.3g}, predict {held['n_test']} larger"
        for k, err in held["errors"].items():
            row("leave_largest_out", k, err, held["c_max_test"], held["extrapolation_oom"], note)
    for name, reason in g.skipped.items():
        row(name, "skipped", math.nan, note=reason)
    return rows
