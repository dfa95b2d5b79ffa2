"""Fits of the alpha-beta ring model to measured collectives, and loading commbench records.

The definitions (ops, bus factors, ring steps, tiers, the measurement columns) are
``harness.core.collectives``, shared with the worker's benchmark; this module fits a
latency alpha and a bus bandwidth B per (op, tier) to the measured times.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.core.collectives import MEASUREMENT_COLUMNS, OPS, TIERS, bus_factor, latency_steps, tier_of

if TYPE_CHECKING:
    import pandas as pd

# ----------------------------------------------------------------------------- fitting


def _design(ops: np.ndarray, ns: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Columns multiplying (alpha, 1/B): latency steps and bus bytes of each row."""
    steps = [latency_steps(o, int(n)) for o, n in zip(ops, ns, strict=True)]
    bus_bytes = [bus_factor(o, int(n)) * s for o, n, s in zip(ops, ns, sizes, strict=True)]
    return np.column_stack([np.asarray(steps, float), np.asarray(bus_bytes, float)])


def _wls_nonneg(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Minimise sum(((t - X@p) / t)^2) with p >= 0.

    Relative error, because times span ~7 decades: an unweighted fit would let the
    largest messages decide alpha too. Non-negative, because a negative latency or
    inverse bandwidth is not physical (noise can push unconstrained fits there).
    """
    from scipy.optimize import nnls

    A = X / t[:, None]
    # Scale columns to unit norm so nnls sees a well-conditioned problem (alpha ~1e-5,
    # 1/B ~1e-10 differ by orders of magnitude).
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    p, _ = nnls(A / scale, np.ones_like(t))
    return p / scale


def _busbw_from_inv(inv_b: float) -> float:
    return math.inf if inv_b <= 0 else 1.0 / inv_b


def _select(rows: pd.DataFrame, op: str, tier: str | None) -> tuple[pd.DataFrame, str]:
    """Rows of op with more than one rank (a single rank moves nothing) in one tier."""
    if tier is not None and tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; allowed: {', '.join(TIERS)}")
    df = rows[(rows["op"] == op) & (rows["world_size"] > 1)]
    df = df[np.isfinite(df["time_s_median"].astype(float)) & (df["time_s_median"] > 0)]
    tiers = df["nnodes"].map(tier_of)
    present = sorted(set(tiers))
    if tier is None:
        if len(present) > 1:
            raise ValueError(f"rows mix tiers {present}; pass tier= (one of {TIERS}) to fit one of them")
        tier = present[0] if present else TIERS[0]
    return df[tiers == tier], tier


def fit_alpha_beta(
    rows: pd.DataFrame,
    op: str = "all_reduce",
    n_bootstrap: int = 500,
    seed: int = 0,
    *,
    tier: str | None = None,
) -> dict[str, Any]:
    """Fit the ring model's latency alpha (s per step) and bus bandwidth B (bytes/s).

    rows: a DataFrame with columns op, world_size, nnodes, size_bytes, time_s_median
    (e.g. from ``load_commbench``), pooled over world sizes of one tier. Weighted least
    squares on relative time error; 95% intervals from a case bootstrap (rows resampled
    with replacement, refitted). Raises ValueError if the rows cannot identify both; adds
    a "warning" when the largest messages are still latency-bound (B then means little,
    and may be inf when the bandwidth term fits as zero).
    """
    if op not in OPS:
        raise ValueError(f"unknown collective op {op!r}; allowed: {', '.join(OPS)}")
    df, tier = _select(rows, op, tier)
    if len(df) < 3 or df["size_bytes"].nunique() < 2:
        raise ValueError(
            f"need at least 3 {op} points over 2+ message sizes with world_size > 1 in tier "
            f"{tier!r} to fit alpha and B; got {len(df)}"
        )
    X = _design(df["op"].to_numpy(), df["world_size"].to_numpy(), df["size_bytes"].to_numpy(float))
    t = df["time_s_median"].to_numpy(float)
    alpha, inv_b = _wls_nonneg(X, t)
    rel_resid = (t - X @ np.array([alpha, inv_b])) / t
    # How much of the largest message's time the bandwidth term explains: near 0, the
    # sizes were too small to pin B (latency-bound), and B's value means little.
    big = int(np.argmax(X[:, 1]))
    bw_share = float(X[big, 1] * inv_b / (X[big] @ np.array([alpha, inv_b])))

    rng = np.random.default_rng(seed)
    boot = np.empty((n_bootstrap, 2))
    for i in range(n_bootstrap):
        idx = rng.integers(0, len(t), len(t))
        boot[i] = _wls_nonneg(X[idx], t[idx])
    alpha_ci = np.percentile(boot[:, 0], [2.5, 97.5]) if n_bootstrap else [alpha, alpha]
    # 1/B is what the fit estimates; its interval maps to B's with the ends swapped.
    inv_ci = np.percentile(boot[:, 1], [2.5, 97.5]) if n_bootstrap else [inv_b, inv_b]
    fit: dict[str, Any] = {
        "op": op,
        "tier": tier,
        "alpha_s": float(alpha),
        "busbw_Bps": _busbw_from_inv(inv_b),
        "alpha_s_ci": [float(alpha_ci[0]), float(alpha_ci[1])],
        "busbw_Bps_ci": [_busbw_from_inv(inv_ci[1]), _busbw_from_inv(inv_ci[0])],
        "n_points": len(t),
        "world_sizes": sorted(int(n) for n in df["world_size"].unique()),
        "size_range_bytes": [int(df["size_bytes"].min()), int(df["size_bytes"].max())],
        "rel_rmse": float(np.sqrt(np.mean(rel_resid**2))),
        "n_bootstrap": n_bootstrap,
        "ci_level": 0.95,
        "bandwidth_share_at_max_size": bw_share,
    }
    if bw_share < 0.5:
        fit["warning"] = (
            f"bandwidth not pinned: it explains {bw_share:.0%} of the largest message's time; "
            "measure larger messages"
        )
    return fit


def fit_all(rows: pd.DataFrame, n_bootstrap: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """fit_alpha_beta for every (op, tier) present in rows that has enough points to fit.

    Combinations that cannot be fitted come back with an "error" key instead of numbers,
    so a report can say why rather than drop them silently.
    """
    fits: list[dict[str, Any]] = []
    if len(rows) == 0:
        return fits
    multi = rows[rows["world_size"] > 1]
    present = {(op, tier_of(nn)) for op, nn in zip(multi["op"], multi["nnodes"], strict=True)}
    for op in OPS:
        for tier in TIERS:
            if (op, tier) not in present:
                continue
            try:
                fits.append(fit_alpha_beta(rows, op, n_bootstrap, seed, tier=tier))
            except ValueError as e:
                fits.append({"op": op, "tier": tier, "error": str(e)})
    return fits


# ----------------------------------------------------------------------------- loading


def load_commbench(root: str | os.PathLike, *, status: str | None = "completed") -> pd.DataFrame:
    """All measurement rows of commbench records under root, one row per (op, size, world size).

    Adds dtype, tier, run_id and path columns. ``status`` None also keeps rows that failed
    records still carry (e.g. the world sizes that succeeded before one failed).
    """
    import pandas as pd

    from harness.core.records import iter_records

    out: list[dict[str, Any]] = []
    for path, rec in iter_records(root):
        if rec.get("kind") != "commbench":
            continue
        if status is not None and rec.get("status") != status:
            continue
        for m in rec.get("measurements") or []:
            row = {c: m.get(c) for c in MEASUREMENT_COLUMNS}
            row["dtype"] = m.get("dtype")
            row["tier"] = tier_of(row["nnodes"] or 1)
            row["run_id"] = rec.get("run_id", path.parent.name)
            row["path"] = str(path.parent)
            out.append(row)
    return pd.DataFrame(out, columns=[*MEASUREMENT_COLUMNS, "dtype", "tier", "run_id", "path"])
