"""Compute-optimal allocation without a parametric loss law: Chinchilla Approaches 1 and 2.

Approach 2 (IsoFLOP): runs that share a compute budget form a curve of loss against
log N; a parabola through each gives that budget's optimal N, and a straight line through
log N_opt against log C gives the allocation exponent a (D_opt = C / (6 N_opt), so b = 1 - a).

Approach 1 (lower envelope): with final losses only (no training curves) the envelope is
the Pareto frontier of (compute, loss), the runs no cheaper run beats; log N and log D of
the frontier runs against log C give a and b.

Both are bootstrapped by resampling runs (within each budget for IsoFLOP), all resamples
at once with weighted least squares, and report how many resamples could not be fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from harness.analysis.losslaw.bootstrap import quantile_summary
from harness.analysis.losslaw.inputs import LossLawError, budget_groups, check_runs
from harness.core.flops import tokens_from_6nd, training_flops_6nd
from harness.core.io import to_jsonable


@dataclass
class AllocationFit:
    """log10 N_opt = k_N + a log10 C and log10 D_opt = k_D + b log10 C, with bootstrap draws."""

    name: str  # "isoflop" or "envelope"
    a: float
    b: float
    k_N: float
    k_D: float
    points: list[dict[str, Any]]  # the optima (IsoFLOP) or frontier runs the lines were fitted to
    c_max: float
    n_bootstrap_ok: int
    n_bootstrap_failed: int
    note: str = ""
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), repr=False)  # (a, k_N, b, k_D)

    def optimal(self, C: float, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, Any]:
        C = float(C)
        if not (math.isfinite(C) and C > 0):
            raise LossLawError(f"target compute C = {C!r} is not allowed; allowed: finite FLOP > 0")
        lc = math.log10(C)
        point = {"N_opt": 10 ** (self.k_N + self.a * lc), "D_opt": 10 ** (self.k_D + self.b * lc)}
        point["tokens_per_param"] = point["D_opt"] / point["N_opt"]
        draws = None
        if len(self.boot) > 1:
            a, kN, b, kD = self.boot.T
            draws = {"N_opt": 10 ** (kN + a * lc), "D_opt": 10 ** (kD + b * lc)}
            draws["tokens_per_param"] = draws["D_opt"] / draws["N_opt"]
            draws["a"], draws["b"] = a, b
        point["a"], point["b"] = self.a, self.b
        out: dict[str, Any] = {"C": C}
        for key, value in point.items():
            out[key] = quantile_summary(value, None if draws is None else draws[key], q)
        out["extrapolation_oom"] = math.log10(C / self.c_max)
        return out

    def band(self, C: np.ndarray, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, dict[str, np.ndarray]]:
        """N_opt and D_opt with bootstrap percentile bands on a grid of budgets (for plots)."""
        lc = np.log10(np.asarray(C, dtype=float))
        out = {}
        for key, k, s, col in (("N_opt", self.k_N, self.a, (0, 1)), ("D_opt", self.k_D, self.b, (2, 3))):
            value = 10 ** (k + s * lc)
            if len(self.boot) > 1:
                draws = 10 ** (self.boot[:, col[1], None] + self.boot[:, col[0], None] * lc[None, :])
                lo, hi = np.quantile(draws, q, axis=0)
            else:
                lo = hi = np.full_like(value, np.nan)
            out[key] = {"value": value, "lo": lo, "hi": hi}
        return out

    def to_dict(
        self, targets: tuple[float, ...] | list[float] = (), q: tuple[float, float] = (0.05, 0.95)
    ) -> dict:
        summary = self.optimal(self.c_max, q)
        return to_jsonable(
            {
                "form": self.name,
                "formula": "log10 N_opt = k_N + a log10 C;  log10 D_opt = k_D + b log10 C",
                "a": summary["a"],
                "b": summary["b"],
                "k_N": self.k_N,
                "k_D": self.k_D,
                "points": self.points,
                "c_max": self.c_max,
                "n_bootstrap_ok": self.n_bootstrap_ok,
                "n_bootstrap_failed": self.n_bootstrap_failed,
                "note": self.note,
                "optimal": [self.optimal(C, q) for C in targets],
            }
        )


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept of y on x for each row of weights w (K, n); NaN where < 2 distinct x."""
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(1) / sw
        my = (w * y).sum(1) / sw
        sxx = (w * (x - mx[:, None]) ** 2).sum(1)
        sxy = (w * (x - mx[:, None]) * (y - my[:, None])).sum(1)
        slope = np.where(sxx > 1e-12 * np.maximum(sw, 1.0), sxy / sxx, np.nan)
    return slope, my - slope * mx


# ------------------------------------------------------------------ Approach 2: IsoFLOP


def _parabola_vertices(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted parabola y = c0 + c1 x + c2 x^2 per weight row; returns (vertex x, loss there).

    NaN where the parabola opens downwards or its minimum lies outside the sampled sizes:
    an optimum that was not bracketed by runs on both sides is an extrapolation, not a measurement.
    """
    xm = x.mean()
    xc = x - xm  # centring keeps the 3x3 normal equations well conditioned
    V = np.stack([np.ones_like(xc), xc, xc * xc], axis=1)  # (n, 3)
    M = np.einsum("kn,ni,nj->kij", w, V, V)
    rhs = np.einsum("kn,ni,n->ki", w, V, y)
    det = np.linalg.det(M)
    ok = np.abs(det) > 1e-12 * np.maximum(np.abs(M).max(axis=(1, 2)), 1.0) ** 3
    M[~ok] = np.eye(3)
    c = np.linalg.solve(M, rhs[..., None])[..., 0]
    c[~ok] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        vx = -c[:, 1] / (2 * c[:, 2])
        vy = c[:, 0] + c[:, 1] * vx + c[:, 2] * vx * vx
        inside = (c[:, 2] > 0) & (vx >= xc.min()) & (vx <= xc.max())
    return np.where(inside, vx + xm, np.nan), np.where(inside, vy, np.nan)


def fit_isoflop(
    N: ArrayLike,
    D: ArrayLike,
    loss: ArrayLike,
    *,
    span_dex: float = 0.1,
    min_sizes: int = 4,
    min_budgets: int = 3,
    n_bootstrap: int = 1000,
    seed: int = 0,
    q: tuple[float, float] = (0.05, 0.95),
) -> AllocationFit:
    """Approach 2: parabola per compute budget, then log N_opt against log C.

    Budgets come from ``budget_groups`` (runs within ``span_dex`` decades share one). A budget
    is used when it has ``min_sizes`` distinct model sizes and its parabola has a bracketed
    minimum; fewer than ``min_budgets`` usable budgets raise LossLawError with the reasons.
    """
    N, D, loss = check_runs(N, D, loss)
    C = training_flops_6nd(N, D)
    labels = budget_groups(C, span_dex)
    x_all = np.log10(N)
    budgets: list[dict[str, Any]] = []
    rejected: list[str] = []
    members: list[np.ndarray] = []
    for g in range(labels.max() + 1):
        m = np.flatnonzero(labels == g)
        c_g = float(10 ** np.mean(np.log10(C[m])))
        n_sizes = len(np.unique(np.round(x_all[m], 9)))
        if n_sizes < min_sizes:
            rejected.append(f"C~{c_g:.2g}: {n_sizes} size(s)")
            continue
        vx, vy = _parabola_vertices(x_all[m], loss[m], np.ones((1, len(m))))
        if not np.isfinite(vx[0]):
            rejected.append(f"C~{c_g:.2g}: minimum not bracketed by the sizes run")
            continue
        n_opt = float(10 ** vx[0])
        coef = np.polyfit(x_all[m], loss[m], 2)  # same parabola, in log10 N, for plots
        budgets.append(
            {
                "C": c_g,
                "group": g,
                "n_runs": len(m),
                "n_sizes": n_sizes,
                "N_opt": n_opt,
                "D_opt": tokens_from_6nd(c_g, n_opt),
                "loss_min": float(vy[0]),
                "parabola_log10N": [float(v) for v in coef],
                "log10N_range": [float(x_all[m].min()), float(x_all[m].max())],
                "runs": [int(i) for i in m],
            }
        )
        members.append(m)
    if len(budgets) < min_budgets:
        shown = "; ".join(rejected[:6]) + ("; ..." if len(rejected) > 6 else "")
        raise LossLawError(
            f"IsoFLOP needs at least {min_budgets} compute budgets with >= {min_sizes} distinct model sizes "
            f"and a bracketed minimum; found {len(budgets)} usable of {labels.max() + 1} budget(s) ({shown})"
        )
    lc = np.log10([b["C"] for b in budgets])
    ln = np.log10([b["N_opt"] for b in budgets])
    ld = np.log10([b["D_opt"] for b in budgets])
    one = np.ones((1, len(lc)))
    a, kN = (v[0] for v in _weighted_line(lc, ln, one))
    b, kD = (v[0] for v in _weighted_line(lc, ld, one))
    boot, failed = _isoflop_bootstrap(x_all, loss, C, members, min_budgets, n_bootstrap, seed)
    note = f"{len(budgets)} budgets used" + (f"; skipped: {'; '.join(rejected)}" if rejected else "")
    return AllocationFit(
        "isoflop",
        float(a),
        float(b),
        float(kN),
        float(kD),
        budgets,
        float(C.max()),
        len(boot),
        failed,
        note,
        boot,
    )


def _isoflop_bootstrap(
    x: np.ndarray,
    loss: np.ndarray,
    C: np.ndarray,
    members: list[np.ndarray],
    min_budgets: int,
    n_bootstrap: int,
    seed: int,
) -> tuple[np.ndarray, int]:
    """Resample runs within each budget; refit every parabola and both lines for all resamples at once."""
    if n_bootstrap <= 0:
        return np.zeros((0, 4)), 0
    rng = np.random.default_rng(seed)
    G = len(members)
    vx = np.full((n_bootstrap, G), np.nan)
    lc = np.array([np.mean(np.log10(C[m])) for m in members])
    for j, m in enumerate(members):
        w = rng.multinomial(len(m), np.full(len(m), 1.0 / len(m)), size=n_bootstrap).astype(float)
        vx[:, j], _ = _parabola_vertices(x[m], loss[m], w)
    valid = np.isfinite(vx)
    w = valid.astype(float)
    ln = np.where(valid, vx, 0.0)
    ld = np.where(valid, lc[None, :] - math.log10(6.0) - ln, 0.0)
    a, kN = _weighted_line(lc, ln, w)
    b, kD = _weighted_line(lc, ld, w)
    ok = (valid.sum(1) >= min_budgets) & np.isfinite(a) & np.isfinite(b)
    return np.column_stack([a, kN, b, kD])[ok], int((~ok).sum())


# ------------------------------------------------------------------ Approach 1: lower envelope


def pareto_frontier(C: np.ndarray, loss: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mask of runs on the lower envelope: lower loss than every run of smaller (or equal) compute.

    ``weights`` (K, n) gives one mask per bootstrap resample (runs with weight 0 are absent).
    """
    order = np.argsort(C, kind="stable")
    w = np.ones((1, len(C))) if weights is None else np.atleast_2d(weights)
    ls = np.where(w[:, order] > 0, loss[order][None, :], np.inf)
    prev_min = np.minimum.accumulate(
        np.concatenate([np.full((len(w), 1), np.inf), ls[:, :-1]], axis=1), axis=1
    )
    on = (w[:, order] > 0) & (ls < prev_min)
    mask = np.empty_like(on)
    mask[:, order] = on
    return mask[0] if weights is None else mask


def fit_envelope(
    N: ArrayLike,
    D: ArrayLike,
    loss: ArrayLike,
    *,
    min_points: int = 3,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> AllocationFit:
    """Approach 1 on final losses: fit log N and log D of the Pareto-frontier runs against log C."""
    N, D, loss = check_runs(N, D, loss)
    C = training_flops_6nd(N, D)
    front = pareto_frontier(C, loss)
    if front.sum() < min_points:
        raise LossLawError(
            f"the lower envelope needs at least {min_points} frontier runs (runs that beat every cheaper run); "
            f"the data has {int(front.sum())}"
        )
    n_sizes = len(np.unique(np.round(np.log(N[front]), 9)))
    if n_sizes < 3:
        raise LossLawError(
            f"the lower envelope needs at least 3 distinct model sizes among its frontier runs "
            f"to fit N_opt(C); it has {n_sizes}"
        )
    lc, ln, ld = np.log10(C), np.log10(N), np.log10(D)
    one = front[None, :].astype(float)
    a, kN = (float(v[0]) for v in _weighted_line(lc, ln, one))
    b, kD = (float(v[0]) for v in _weighted_line(lc, ld, one))
    boot, failed = np.zeros((0, 4)), 0
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(len(C), np.full(len(C), 1.0 / len(C)), size=n_bootstrap)
        fw = pareto_frontier(C, loss, counts).astype(float)
        ba, bkN = _weighted_line(lc, ln, fw)
        bb, bkD = _weighted_line(lc, ld, fw)
        ok = (fw.sum(1) >= min_points) & np.isfinite(ba) & np.isfinite(bb)
        boot, failed = np.column_stack([ba, bkN, bb, bkD])[ok], int((~ok).sum())
    idx = np.flatnonzero(front)
    points = [{"C": float(C[i]), "N": float(N[i]), "D": float(D[i]), "loss": float(loss[i])} for i in idx]
    note = (
        f"{len(idx)} frontier runs of {len(C)}; final losses only, so the envelope is over runs, not curves"
    )
    return AllocationFit("envelope", a, b, kN, kD, points, float(C.max()), len(boot), failed, note, boot)
