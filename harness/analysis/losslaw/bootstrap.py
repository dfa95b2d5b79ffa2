"""Bootstrap resampling of a Huber fit, all resamples in one batch, and percentile summaries.

Every resample is a weighted problem (weights = multinomial counts) and all of them are solved
together by one batched L-BFGS, so 1,000 resamples cost a few hundred vectorised objective
evaluations rather than 1,000 Python optimiser loops. Each resample is checked for convergence;
failures are counted and left out of the standard errors, never silently kept.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.losslaw.forms import Form
from harness.analysis.losslaw.lbfgs import race
from harness.analysis.losslaw.objective import BOOT_GTOL, DEFAULT_DELTA, huber_objective


def bootstrap_huber(
    form: Form,
    X: dict[str, np.ndarray],
    y: np.ndarray,
    starts: np.ndarray,
    *,
    n_bootstrap: int,
    seed: int,
    delta: float = DEFAULT_DELTA,
) -> tuple[np.ndarray, int, int]:
    """Refit every resample (weights = multinomial counts) from each start, all in one batch.

    starts[0] is the full-data optimum (the warm start). A resample is kept when its best
    start converged (max |gradient| <= BOOT_GTOL, or <= 1e-6 where double precision allows
    no further descent: see batched_lbfgs) to finite parameters. Returns the kept thetas,
    how many resamples failed, and how many had a better optimum than the warm start.
    """
    n, S = len(y), len(starts)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_bootstrap).astype(float)
    weights = np.repeat(counts, S, axis=0)  # problem k = resample k // S, start k % S
    fg = huber_objective(form, X, y, delta, weights)
    x0 = np.tile(starts, (n_bootstrap, 1))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = race(fg, x0, np.repeat(np.arange(n_bootstrap), S), keep=1, gtol=BOOT_GTOL)
    f = np.where(res.converged, res.f, np.inf).reshape(n_bootstrap, S)
    best = np.argmin(f, axis=1)
    k = np.arange(n_bootstrap) * S + best
    theta = res.x[k]
    nat = form.to_natural(theta)
    ok = np.isfinite(f[np.arange(n_bootstrap), best])
    ok &= np.all([np.isfinite(v) for v in nat.values()], axis=0)
    warm = f[:, 0]
    with np.errstate(invalid="ignore"):  # warm may be inf (the warm start did not converge)
        better = f[np.arange(n_bootstrap), best] < warm - 1e-9 * np.maximum(1.0, np.abs(warm))
    multimodal = int(np.sum(ok & better))
    return theta[ok], int((~ok).sum()), multimodal


def quantile_summary(point: np.ndarray | float, draws: np.ndarray | None, q: tuple[float, float]) -> dict:
    """{"value", "lo", "hi", "se", "undefined_frac"} with the bootstrap percentile interval.

    Resamples whose value is not finite (e.g. an exponent near 0 puts the optimum at infinity)
    are counted in ``undefined_frac``. When more of them than the interval's tails hold, the
    interval is unbounded and lo/hi are NaN; otherwise it is taken over the finite draws.
    """
    value = float(point)
    if draws is None or len(draws) < 2:
        return {"value": value, "lo": math.nan, "hi": math.nan, "se": math.nan, "undefined_frac": math.nan}
    d = np.asarray(draws, dtype=float)
    finite = d[np.isfinite(d)]
    bad = 1.0 - len(finite) / len(d)
    if len(finite) < 2 or bad > q[0] + (1.0 - q[1]):
        return {"value": value, "lo": math.nan, "hi": math.nan, "se": math.nan, "undefined_frac": bad}
    lo, hi = np.quantile(finite, q)
    return {
        "value": value,
        "lo": float(lo),
        "hi": float(hi),
        "se": float(np.std(finite, ddof=1)),
        "undefined_frac": bad,
    }
