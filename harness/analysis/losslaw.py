"""Loss scaling laws with honest uncertainty (Chinchilla Approach 3, Kaplan, saturating L(C)).

The Chinchilla fit follows Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024
(Epoch): Huber loss (delta 1e-3) on log loss, *summed* over points, in log-sum-exp form

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

minimised by L-BFGS with analytic gradients from a grid of starts and polished with
scipy's L-BFGS-B at tight tolerances. Averaging the loss (Hoffmann's original) shrinks
the gradients ~240x, so default tolerances stop early; we sum, scale by 1/delta so the
objective is O(1), and test convergence on the gradient, not on the objective change.
Internally a and b are measured from the data's mean log N and log D (a linear
reparametrisation, same objective): with log N ~ 20, a and alpha are otherwise almost
perfectly correlated and L-BFGS crawls along the valley.

Uncertainty comes from the bootstrap: every resample is a weighted problem (weights =
multinomial counts) and all of them are solved together by one batched L-BFGS, so 1,000
resamples cost a few hundred vectorised objective evaluations rather than 1,000 Python
optimiser loops. Each resample is checked for convergence; failures are counted and
left out of the standard errors, never silently kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.analysis.lbfgs import BatchResult, batched_lbfgs, race  # noqa: F401 - batched_lbfgs: API

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
Vjp = Callable[[np.ndarray], np.ndarray]
DEFAULT_DELTA = 1e-3

# Published values, used only as references in the example and the tests.
EPOCH_REFIT = {"E": 1.817, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
EPOCH_REFIT_SE = {"E": 0.026, "A": 124.5, "B": 1293.0, "alpha": 0.015, "beta": 0.021}
HOFFMANN_APPROACH3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


class LossLawError(ValueError):
    """Data or a fit that a loss law cannot be built on; the message names the bad value."""


# --------------------------------------------------------------------------- input checks


def as_positive(name: str, values: Any) -> np.ndarray:
    """A 1-D float array of finite, strictly positive values, or a LossLawError naming the first bad one."""
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as e:
        raise LossLawError(f"{name}: values must be numbers ({e})") from None
    bad_nan = np.flatnonzero(np.isnan(arr))
    if bad_nan.size:
        i = int(bad_nan[0])
        raise LossLawError(
            f"{name}[{i}] is NaN ({bad_nan.size} NaN value(s) in all); allowed: finite values > 0"
        )
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        i = int(bad[0])
        raise LossLawError(
            f"{name}[{i}] = {float(arr[i])!r} is not allowed ({bad.size} bad value(s)); allowed: finite values > 0"
        )
    return arr


def check_same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise LossLawError(f"inputs differ in length: {lengths}; allowed: one value per run in each")
    return next(iter(lengths.values()))


def require_distinct(name: str, values: np.ndarray, minimum: int, form: str) -> None:
    """Too few distinct sizes cannot pin an exponent; say how many there are and how many are needed."""
    n = len(np.unique(np.round(np.log(values), 9)))
    if n < minimum:
        raise LossLawError(f"{form} needs at least {minimum} distinct values of {name}; the data has {n}")


def budget_groups(C: np.ndarray, span_dex: float = 0.1) -> np.ndarray:
    """Label runs that share a compute budget (IsoFLOP groups), 0 = smallest budget.

    Budgets in real data scatter (the Chinchilla points are read off a figure), so exact
    matching fails and gap-based chaining merges neighbouring budgets. Instead the densest
    window of width ``span_dex`` decades is taken as a group, then the next densest of the
    rest, until every run has a group.
    """
    x = np.log10(np.asarray(C, dtype=float))
    order = np.argsort(x, kind="stable")
    xs = x[order]
    labels_sorted = np.full(len(x), -1)
    label = 0
    while (labels_sorted < 0).any():
        idx = np.flatnonzero(labels_sorted < 0)
        xi = xs[idx]
        ends = np.searchsorted(xi, xi + span_dex * (1 + 1e-12), side="right")
        start = int(np.argmax(ends - np.arange(len(idx))))
        labels_sorted[idx[start : ends[start]]] = label
        label += 1
    labels = np.empty(len(x), dtype=int)
    labels[order] = labels_sorted
    # renumber by each group's median compute so labels increase with budget
    medians = np.array([np.median(x[labels == g]) for g in range(label)])
    rank = np.empty(label, dtype=int)
    rank[np.argsort(medians, kind="stable")] = np.arange(label)
    return rank[labels]


# ------------------------------------------------------------------ Huber on log loss


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative (psi) elementwise."""
    absr = np.abs(r)
    h = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))
    return h, np.clip(r, -delta, delta)


@dataclass(frozen=True)
class Form:
    """A law written as log L_hat = f(theta; x), fitted by Huber on log loss.

    ``logpred(theta (K,p), X) -> (pred (K,n), vjp)`` where ``vjp(w (K,n)) -> (K,p)`` is
    sum_n w * d pred / d theta (the gradient's chain rule without building a (K,n,p) Jacobian);
    ``to_natural(theta (K,p))`` gives the named parameters (arrays of length K).
    """

    name: str
    theta_names: tuple[str, ...]
    natural_names: tuple[str, ...]
    xs: tuple[str, ...]
    logpred: Callable[
        [np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]
    ]
    to_natural: Callable[[np.ndarray], dict[str, np.ndarray]]
    formula: str


def _lse_terms(terms: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log-sum-exp of broadcastable terms and the softmax weights (shift by the max: no overflow)."""
    m = terms[0]
    for t in terms[1:]:
        m = np.maximum(m, t)
    exps = [np.exp(t - m) for t in terms]
    s = exps[0]
    for x in exps[1:]:
        s = s + x
    return m + np.log(s), [x / s for x in exps]


def _chinchilla_logpred(theta: np.ndarray, X: dict[str, np.ndarray]) -> tuple[np.ndarray, Vjp]:
    # theta = (a, b, e, alpha, beta) with a, b centred at the data's mean log N and log D
    # (a_c = a - alpha*mean log N): a and alpha are otherwise ~0.999 correlated because
    # log N ~ 20, which makes L-BFGS crawl. The objective is unchanged (a linear reparametrisation).
    lN, lD = X["cN"], X["cD"]
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    K, n = theta.shape[0], lN.shape[-1]
    lse, (pu, pv, pw) = _lse_terms([a - al * lN, b - be * lD, np.broadcast_to(e, (K, n))])

    def vjp(w: np.ndarray) -> np.ndarray:
        wu, wv = w * pu, w * pv
        return np.column_stack([wu.sum(1), wv.sum(1), (w * pw).sum(1), -(wu @ lN), -(wv @ lD)])

    return lse, vjp


def _chinchilla_natural(theta: np.ndarray, centre: tuple[float, float]) -> dict[str, np.ndarray]:
    a, b, e, al, be = theta.T
    return {
        "E": np.exp(e),
        "A": np.exp(a + al * centre[0]),
        "B": np.exp(b + be * centre[1]),
        "alpha": al,
        "beta": be,
    }


def _chinchilla_theta(natural: dict[str, float] | Sequence[float], centre: tuple[float, float]) -> np.ndarray:
    E, A, B, al, be = _natural_tuple(natural)
    for k, v in zip(PARAM_NAMES, (E, A, B), strict=False):
        if not v > 0:
            raise LossLawError(f"init {k} = {v!r} is not allowed; allowed: > 0")
    return np.array([math.log(A) - al * centre[0], math.log(B) - be * centre[1], math.log(E), al, be])


def _natural_tuple(natural: dict[str, float] | Sequence[float]) -> tuple[float, ...]:
    if isinstance(natural, dict):
        missing = [k for k in PARAM_NAMES if k not in natural]
        if missing:
            raise LossLawError(f"init is missing {missing}; expected keys {list(PARAM_NAMES)}")
        return tuple(float(natural[k]) for k in PARAM_NAMES)
    vals = tuple(float(v) for v in natural)
    if len(vals) != 5:
        raise LossLawError(f"init has {len(vals)} values; expected 5: {list(PARAM_NAMES)}")
    return vals


def chinchilla_form(centre: tuple[float, float]) -> Form:
    return Form(
        name="chinchilla",
        theta_names=("a", "b", "e", "alpha", "beta"),
        natural_names=PARAM_NAMES,
        xs=("cN", "cD"),
        logpred=_chinchilla_logpred,
        to_natural=lambda th: _chinchilla_natural(th, centre),
        formula="L = E + A/N^alpha + B/D^beta",
    )


def huber_objective(
    form: Form, X: dict[str, np.ndarray], y: np.ndarray, delta: float, weights: np.ndarray | None = None
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Batched summed-Huber objective f(theta (k,p), rows) -> (f (k,), grad (k,p)), scaled by 1/delta.

    ``rows`` picks each problem's weight vector (bootstrap counts); None weights are all ones.
    Scaling by 1/delta makes the objective ~ sum |residual| (O(1)), so gradient tolerances mean
    the same thing whatever delta is; report ``f * delta`` for the published objective.
    """

    def fg(theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, vjp = form.logpred(theta, X)
        h, psi = huber(pred - y, delta)
        if weights is not None:
            w = weights[rows]
            h, psi = h * w, psi * w
        f = h.sum(axis=1) / delta
        g = vjp(psi) / delta
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
        f[bad] = np.inf
        return f, g

    return fg


# ------------------------------------------------------------------ generic Huber fit + bootstrap

BOOT_GTOL = 1e-8  # on the 1/delta-scaled objective (O(1)); ~1e-11 on the published scale
FINAL_GTOL = 1e-6  # a full-data fit whose gradient is larger than this did not converge


@dataclass
class HuberFit:
    """The raw result of one form fitted by Huber on log loss: theta, objective and bootstrap draws."""

    form: Form
    theta: np.ndarray
    objective: float  # summed Huber on log loss (published scale, not divided by delta)
    grad_max: float  # max |gradient| of the scaled objective at theta
    n_points: int
    n_starts: int
    n_starts_at_optimum: int  # starts whose local optimum ties the best: how well the basin is found
    boot_theta: np.ndarray  # (n_ok, p) converged resamples only
    n_bootstrap_failed: int
    n_bootstrap_multimodal: int  # resamples where another start beat the warm start


def fit_huber_form(
    form: Form,
    X: dict[str, np.ndarray],
    y: np.ndarray,
    starts: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    n_bootstrap: int = 0,
    seed: int = 0,
    boot_starts: Callable[[np.ndarray], np.ndarray] | None = None,
    polish: bool = True,
) -> HuberFit:
    """Fit from every start at once, polish the best with scipy L-BFGS-B, then bootstrap.

    Raises LossLawError when the best optimum's gradient is not ~0 (the fit did not converge).
    """
    fg = huber_objective(form, X, y, delta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        starts = np.asarray(starts, dtype=float)
        # 100 iterations separate the basins on the Chinchilla grid (the optimum leads by then);
        # the 8 best are finished to full convergence.
        res = race(fg, starts, np.zeros(len(starts), dtype=int), keep=8, race_iter=100, gtol=BOOT_GTOL)
    finite = np.isfinite(res.f) & res.converged
    if not finite.any():
        raise LossLawError(
            f"{form.name} fit did not converge from any of {len(starts)} start(s) "
            f"(objective not finite or gradient not ~0); the data may not determine this form"
        )
    best = int(np.argmin(np.where(finite, res.f, np.inf)))
    theta, f_best = res.x[best], float(res.f[best])
    if polish:
        theta, f_best = _scipy_polish(fg, theta, f_best)
    _, g = fg(theta[None], np.zeros(1, dtype=int))
    grad_max = float(np.abs(g).max())
    if not grad_max <= FINAL_GTOL:
        raise LossLawError(
            f"{form.name} fit did not converge: max |gradient| = {grad_max:.3g} at the best of "
            f"{len(starts)} start(s) (allowed: <= {FINAL_GTOL:g}); the data may not determine this form"
        )
    tie = finite & (res.f <= f_best + 1e-6 * abs(f_best))  # starts that reached the optimum's basin
    boot, failed, multimodal = np.zeros((0, theta.size)), 0, 0
    if n_bootstrap > 0:
        extra = boot_starts(theta) if boot_starts is not None else np.zeros((0, theta.size))
        boot, failed, multimodal = bootstrap_huber(
            form, X, y, np.vstack([theta[None], extra]), n_bootstrap=n_bootstrap, seed=seed, delta=delta
        )
    return HuberFit(
        form=form,
        theta=theta,
        objective=f_best * delta,
        grad_max=grad_max,
        n_points=len(y),
        n_starts=len(starts),
        n_starts_at_optimum=int(tie.sum()),
        boot_theta=boot,
        n_bootstrap_failed=failed,
        n_bootstrap_multimodal=multimodal,
    )


def _scipy_polish(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], theta: np.ndarray, f0: float
) -> tuple[np.ndarray, float]:
    """scipy's L-BFGS-B from the batched optimum, tolerances tight: an independent second opinion.

    ftol=0 turns off the stop on small objective changes (what made Hoffmann's fit stall);
    it stops on the projected gradient or when the line search cannot improve any more.
    """
    from scipy.optimize import minimize

    zero = np.zeros(1, dtype=int)

    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fg(t[None], zero)
        return float(f[0]), g[0]

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = minimize(
            fun,
            theta,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "maxcor": 20, "ftol": 0.0, "gtol": 1e-12},
        )
    if np.isfinite(r.fun) and r.fun <= f0:
        return np.asarray(r.x, dtype=float), float(r.fun)
    return theta, f0


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


def jsonable(o: Any) -> Any:
    """numpy scalars/arrays to Python; NaN/inf to None (strict JSON: a missing interval is null)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


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


# ------------------------------------------------------------------ Chinchilla (Approach 3)


def default_grid(centre: tuple[float, float], size: str = "default") -> np.ndarray:
    """Starting points (a, b, e, alpha, beta), as Hoffmann/Epoch, in the centred parametrisation.

    "epoch" is their full 4,500-point grid; the default is a coarser subset that reaches the
    same optimum on the Chinchilla data at ~1/10 of the cost (exponent 0 is left out: it is a
    saddle where the a/b gradients vanish).
    """
    if size == "epoch":
        axes = (
            np.arange(0, 30, 5),
            np.arange(0, 30, 5),
            np.arange(-1, 1.5, 0.5),
            np.arange(0, 2.5, 0.5),
            np.arange(0, 2.5, 0.5),
        )
    elif size == "default":
        axes = (
            np.arange(0, 30, 5),
            np.arange(0, 30, 5),
            np.array([-1.0, 0.0, 1.0]),
            np.array([0.25, 0.75, 1.5]),
            np.array([0.25, 0.75, 1.5]),
        )
    else:
        raise LossLawError(f"grid {size!r} is not known; allowed: 'default', 'epoch'")
    a, b, e, al, be = (g.ravel() for g in np.meshgrid(*axes, indexing="ij"))
    return np.column_stack([a - al * centre[0], b - be * centre[1], e, al, be])


def _chinchilla_boot_starts(theta: np.ndarray) -> np.ndarray:
    """Extra starts per resample besides the warm start: exponents halved/doubled.

    In the centred parametrisation a and b are the log of each term at the data's centre,
    so keeping them fixed keeps the starts on the data's loss scale.
    """
    out = []
    for fa, fb in ((0.5, 0.5), (2.0, 2.0), (0.5, 2.0), (2.0, 0.5)):
        t = theta.copy()
        t[3] *= fa
        t[4] *= fb
        out.append(t)
    return np.array(out)


def chinchilla_optimum(P: np.ndarray, C: np.ndarray | float) -> dict[str, np.ndarray]:
    """Compute-optimal allocation under C = 6 N D for parameter rows P (K, 5) = (E, A, B, alpha, beta).

    Minimising E + A/N^alpha + B/D^beta with D = C/(6N) gives
    G = (alpha A / (beta B))^(1/(alpha+beta)), N* = G (C/6)^a, D* = (C/6)^b / G,
    a = beta/(alpha+beta), b = alpha/(alpha+beta). Returns (K, m) arrays for m budgets.
    """
    P = np.atleast_2d(np.asarray(P, dtype=float))
    E, A, B, al, be = (P[:, i : i + 1] for i in range(5))
    C = np.atleast_1d(np.asarray(C, dtype=float))[None, :]
    s = al + be
    a_exp, b_exp = be / s, al / s
    logG = (np.log(al * A) - np.log(be * B)) / s
    logC6 = np.log(C / 6.0)
    logN = logG + a_exp * logC6
    logD = -logG + b_exp * logC6
    loss = E + A * np.exp(-al * logN) + B * np.exp(-be * logD)
    shape = np.broadcast_shapes(logN.shape, loss.shape)
    return {
        "N_opt": np.exp(logN),
        "D_opt": np.exp(logD),
        "loss": loss,
        "tokens_per_param": np.exp(logD - logN),
        "a": np.broadcast_to(a_exp, shape),
        "b": np.broadcast_to(b_exp, shape),
        "G": np.broadcast_to(np.exp(logG), shape),
    }


@dataclass
class ChinchillaFit:
    """L = E + A/N^alpha + B/D^beta fitted as Epoch's refit of Hoffmann et al. (Approach 3)."""

    params: dict[str, float]
    se: dict[str, float]
    objective: float
    n_points: int
    n_bootstrap_ok: int
    n_bootstrap_failed: int
    c_max: float
    delta: float = DEFAULT_DELTA
    grad_max: float = math.nan
    n_starts: int = 1
    n_starts_at_optimum: int = 1
    n_bootstrap_multimodal: int = 0
    seed: int = 0
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)), repr=False)  # (n_ok, 5) natural
    data: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # N, D, loss as fitted

    @property
    def param_array(self) -> np.ndarray:
        return np.array([self.params[k] for k in PARAM_NAMES])

    def predict(self, N: Any, D: Any) -> np.ndarray:
        p = self.params
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]

    def interval(self, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, dict]:
        """Point estimate, bootstrap percentile interval and SE of each parameter."""
        return {
            k: quantile_summary(self.params[k], self.boot[:, i] if len(self.boot) else None, q)
            for i, k in enumerate(PARAM_NAMES)
        }

    def optimal(self, C: float, q: tuple[float, float] = (0.05, 0.95)) -> dict:
        """N*, D*, the loss there, tokens per parameter and a, b at compute C, with bootstrap intervals."""
        C = float(C)
        if not (math.isfinite(C) and C > 0):
            raise LossLawError(f"target compute C = {C!r} is not allowed; allowed: finite FLOP > 0")
        point = chinchilla_optimum(self.param_array[None], C)
        draws = chinchilla_optimum(self.boot, C) if len(self.boot) else None
        out: dict[str, Any] = {"C": C}
        for key in ("N_opt", "D_opt", "loss", "tokens_per_param", "a", "b", "G"):
            out[key] = quantile_summary(point[key][0, 0], None if draws is None else draws[key][:, 0], q)
        out["extrapolation_oom"] = math.log10(C / self.c_max)
        return out

    def residuals(self) -> np.ndarray:
        """log(observed) - log(predicted) on the fitted points."""
        return np.log(self.data["loss"]) - np.log(self.predict(self.data["N"], self.data["D"]))

    def to_dict(self, targets: Sequence[float] = (), q: tuple[float, float] = (0.05, 0.95)) -> dict:
        """JSON-ready summary; ``targets`` adds optimal(C) for each compute budget."""
        return jsonable(
            {
                "form": "chinchilla",
                "formula": "L = E + A/N^alpha + B/D^beta",
                "estimator": f"Huber(delta={self.delta:g}) on log loss, summed; L-BFGS from {self.n_starts} start(s)",
                "params": dict(self.params),
                "se": dict(self.se),
                "intervals": {k: {kk: v[kk] for kk in ("lo", "hi")} for k, v in self.interval(q).items()},
                "quantiles": list(q),
                "objective": self.objective,
                "grad_max": self.grad_max,
                "n_points": self.n_points,
                "n_starts": self.n_starts,
                "n_starts_at_optimum": self.n_starts_at_optimum,
                "n_bootstrap_ok": self.n_bootstrap_ok,
                "n_bootstrap_failed": self.n_bootstrap_failed,
                "n_bootstrap_multimodal": self.n_bootstrap_multimodal,
                "seed": self.seed,
                "c_max": self.c_max,
                "optimal": [self.optimal(C, q) for C in targets],
            }
        )


def fit_chinchilla(
    N: Any,
    D: Any,
    loss: Any,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    init: dict[str, float] | Sequence[float] | Sequence[dict[str, float]] | None = None,
    grid: str = "default",
) -> ChinchillaFit:
    """Fit L = E + A/N^alpha + B/D^beta (Approach 3) with bootstrap standard errors.

    ``init`` (natural parameters E, A, B, alpha, beta, or a list of them) replaces the grid of
    starts; e.g. Hoffmann's published values, from which the fit must still reach the optimum.
    """
    N, D, loss = as_positive("N", N), as_positive("D", D), as_positive("loss", loss)
    n = check_same_length(N=N, D=D, loss=loss)
    if not (delta > 0 and math.isfinite(delta)):
        raise LossLawError(f"delta = {delta!r} is not allowed; allowed: finite > 0")
    if n_bootstrap < 0:
        raise LossLawError(f"n_bootstrap = {n_bootstrap} is not allowed; allowed: >= 0")
    if n < 6:
        raise LossLawError(f"the Chinchilla form has 5 parameters and needs at least 6 points; got {n}")
    require_distinct("N (model size)", N, 3, "the Chinchilla form")
    require_distinct("D (tokens)", D, 3, "the Chinchilla form")
    lN, lD = np.log(N), np.log(D)
    centre = (float(lN.mean()), float(lD.mean()))
    X = {"cN": lN - centre[0], "cD": lD - centre[1]}
    form = chinchilla_form(centre)
    if init is None:
        starts = default_grid(centre, grid)
    else:
        inits = init if (isinstance(init, Sequence) and init and isinstance(init[0], dict)) else [init]
        starts = np.array([_chinchilla_theta(i, centre) for i in inits])
    hf = fit_huber_form(
        form,
        X,
        np.log(loss),
        starts,
        delta=delta,
        n_bootstrap=n_bootstrap,
        seed=seed,
        boot_starts=_chinchilla_boot_starts,
    )
    params = {k: float(v[0]) for k, v in form.to_natural(hf.theta[None]).items()}
    boot_nat = form.to_natural(hf.boot_theta) if len(hf.boot_theta) else None
    boot = np.column_stack([boot_nat[k] for k in PARAM_NAMES]) if boot_nat else np.zeros((0, 5))
    se = {k: float(np.std(boot[:, i], ddof=1)) for i, k in enumerate(PARAM_NAMES)} if len(boot) > 1 else {}
    return ChinchillaFit(
        params=params,
        se=se,
        objective=hf.objective,
        n_points=n,
        n_bootstrap_ok=len(boot),
        n_bootstrap_failed=hf.n_bootstrap_failed,
        c_max=float(np.max(6.0 * N * D)),
        delta=delta,
        grad_max=hf.grad_max,
        n_starts=hf.n_starts,
        n_starts_at_optimum=hf.n_starts_at_optimum,
        n_bootstrap_multimodal=hf.n_bootstrap_multimodal,
        seed=seed,
        boot=boot,
        data={"N": N, "D": D, "loss": loss},
    )


# ------------------------------------------------------------------ Kaplan and saturating forms


def _power_logpred(xkey: str) -> Callable[[np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, Vjp]]:
    """log L = k - alpha * (log x - centre): Kaplan's L(N) = (N_c/N)^alpha_N (and L(D)), linear in theta."""

    def logpred(theta: np.ndarray, X: dict[str, np.ndarray]) -> tuple[np.ndarray, Vjp]:
        cx = X[xkey]
        k, al = theta[:, :1], theta[:, 1:2]

        def vjp(w: np.ndarray) -> np.ndarray:
            return np.column_stack([w.sum(1), -(w @ cx)])

        return k - al * cx, vjp

    return logpred


def _power_natural(theta: np.ndarray, centre: float, scale: str, exponent: str) -> dict[str, np.ndarray]:
    k, al = theta.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return {scale: np.exp(k / al + centre), exponent: al}


def _kaplan_nd_logpred(theta: np.ndarray, X: dict[str, np.ndarray]) -> tuple[np.ndarray, Vjp]:
    # L = [(N_c/N)^(aN/aD) + D_c/D]^aD  ->  log L = aD * LSE(r (nc - cN), dc - cD), r = aN/aD,
    # with nc, dc = log N_c, log D_c measured from the data's centre.
    cN, cD = X["cN"], X["cD"]
    nc, dc, aN, aD = (theta[:, i : i + 1] for i in range(4))
    ratio = aN / aD
    u = ratio * (nc - cN)
    s, (pu, pv) = _lse_terms([u, np.broadcast_to(dc, u.shape) - cD])

    def vjp(w: np.ndarray) -> np.ndarray:
        wu = w * pu
        return np.column_stack(
            [
                (wu * aN).sum(1),  # d/d nc = aD * pu * ratio
                (w * pv * aD).sum(1),  # d/d dc
                (wu * (nc - cN)).sum(1),  # d/d aN = aD * pu * (nc - cN) / aD
                (w * s).sum(1) - (wu * u).sum(1),  # d/d aD = s + aD pu du/daD = s - pu u
            ]
        )

    return aD * s, vjp


def _kaplan_nd_natural(theta: np.ndarray, centre: tuple[float, float]) -> dict[str, np.ndarray]:
    nc, dc, aN, aD = theta.T
    with np.errstate(over="ignore"):
        return {"N_c": np.exp(nc + centre[0]), "D_c": np.exp(dc + centre[1]), "alpha_N": aN, "alpha_D": aD}


def _saturating_logpred(theta: np.ndarray, X: dict[str, np.ndarray]) -> tuple[np.ndarray, Vjp]:
    # L = E + A C^-gamma  ->  log L = LSE(a - gamma cC, e), a measured from the data's centre
    cC = X["cC"]
    a, e, ga = (theta[:, i : i + 1] for i in range(3))
    lse, (pa, pe) = _lse_terms([a - ga * cC, np.broadcast_to(e, (theta.shape[0], cC.shape[-1]))])

    def vjp(w: np.ndarray) -> np.ndarray:
        wa = w * pa
        return np.column_stack([wa.sum(1), (w * pe).sum(1), -(wa @ cC)])

    return lse, vjp


def _saturating_natural(theta: np.ndarray, centre: float) -> dict[str, np.ndarray]:
    a, e, ga = theta.T
    with np.errstate(over="ignore"):
        return {"E": np.exp(e), "A": np.exp(a + ga * centre), "gamma": ga}


@dataclass
class LawFit:
    """A fitted Kaplan or saturating law with bootstrap SEs and intervals of its parameters."""

    name: str
    formula: str
    inputs: tuple[str, ...]  # which of N, D, C it takes
    params: dict[str, float]
    se: dict[str, float]
    intervals: dict[str, dict[str, float]]
    objective: float
    n_points: int
    n_bootstrap_ok: int
    n_bootstrap_failed: int
    x_max: dict[str, float]  # the largest value of each input in the data (extrapolation reference)
    note: str = ""
    boot: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def predict(self, **x: Any) -> np.ndarray:
        return _law_predict(self.name, self.params, {k: np.asarray(v, dtype=float) for k, v in x.items()})

    def predict_band(self, q: tuple[float, float] = (0.05, 0.95), **x: Any) -> dict[str, np.ndarray]:
        """Point prediction and bootstrap percentile band on a grid of inputs."""
        xs = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in x.items()}
        value = self.predict(**xs)
        if not self.boot:
            return {"value": value, "lo": np.full_like(value, np.nan), "hi": np.full_like(value, np.nan)}
        draws = _law_predict(
            self.name, {k: v[:, None] for k, v in self.boot.items()}, {k: v[None, :] for k, v in xs.items()}
        )
        lo, hi = np.quantile(draws, q, axis=0)
        return {"value": value, "lo": lo, "hi": hi, "se": np.std(draws, axis=0, ddof=1)}

    def to_dict(self) -> dict:
        return jsonable(
            {
                "form": self.name,
                "formula": self.formula,
                "params": dict(self.params),
                "se": dict(self.se),
                "intervals": self.intervals,
                "objective": self.objective,
                "n_points": self.n_points,
                "n_bootstrap_ok": self.n_bootstrap_ok,
                "n_bootstrap_failed": self.n_bootstrap_failed,
                "x_max": dict(self.x_max),
                "note": self.note,
            }
        )


def _law_predict(name: str, p: dict[str, Any], x: dict[str, np.ndarray]) -> np.ndarray:
    if name == "kaplan_N":
        return (p["N_c"] / x["N"]) ** p["alpha_N"]
    if name == "kaplan_D":
        return (p["D_c"] / x["D"]) ** p["alpha_D"]
    if name == "kaplan_ND":
        return ((p["N_c"] / x["N"]) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / x["D"]) ** p["alpha_D"]
    if name == "saturating":
        return p["E"] + p["A"] * x["C"] ** (-p["gamma"])
    raise LossLawError(f"unknown law {name!r}")


LAW_FORMS = {
    "kaplan_N": ("L = (N_c/N)^alpha_N", ("N",)),
    "kaplan_D": ("L = (D_c/D)^alpha_D", ("D",)),
    "kaplan_ND": ("L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D", ("N", "D")),
    "saturating": ("L = E + A*C^-gamma", ("C",)),
}


def _law_setup(name: str, data: dict[str, np.ndarray]) -> tuple[Form, dict[str, np.ndarray], np.ndarray]:
    """The Form, centred inputs and grid of starts for one Kaplan/saturating law."""
    formula, inputs = LAW_FORMS[name]
    logs = {k: np.log(data[k]) for k in inputs}
    centre = {k: float(v.mean()) for k, v in logs.items()}
    X = {f"c{k}": logs[k] - centre[k] for k in inputs}
    if name in ("kaplan_N", "kaplan_D"):
        k = inputs[0]
        scale, expo = f"{k}_c", f"alpha_{k}"
        form = Form(
            name,
            ("k", expo),
            (scale, expo),
            (f"c{k}",),
            _power_logpred(f"c{k}"),
            lambda th, c=centre[k], s=scale, e=expo: _power_natural(th, c, s, e),
            formula,
        )
        starts = np.array([[0.5, 0.05], [1.0, 0.1], [1.0, 0.5]])
    elif name == "kaplan_ND":
        cN, cD = centre["N"], centre["D"]
        form = Form(
            name,
            ("nc", "dc", "alpha_N", "alpha_D"),
            ("N_c", "D_c", "alpha_N", "alpha_D"),
            ("cN", "cD"),
            _kaplan_nd_logpred,
            lambda th: _kaplan_nd_natural(th, (cN, cD)),
            formula,
        )
        axes = (
            np.array([2.0, 10.0, 25.0]),
            np.array([2.0, 10.0, 25.0]),
            np.array([0.05, 0.1, 0.3]),
            np.array([0.05, 0.1, 0.3]),
        )
        starts = np.column_stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])
    else:
        cC = centre["C"]
        form = Form(
            name,
            ("a", "e", "gamma"),
            ("E", "A", "gamma"),
            ("cC",),
            _saturating_logpred,
            lambda th: _saturating_natural(th, cC),
            formula,
        )
        axes = (np.array([-3.0, -1.0, 0.5]), np.array([-1.0, 0.0, 0.7]), np.array([0.02, 0.05, 0.1, 0.3]))
        starts = np.column_stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])
    return form, X, starts


def fit_law(
    name: str,
    *,
    N: Any = None,
    D: Any = None,
    C: Any = None,
    loss: Any,
    n_bootstrap: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    q: tuple[float, float] = (0.05, 0.95),
    note: str = "",
) -> LawFit:
    """Fit a Kaplan form (kaplan_N, kaplan_D, kaplan_ND) or the saturating L(C) by Huber on log loss."""
    if name not in LAW_FORMS:
        raise LossLawError(f"law {name!r} is not known; allowed: {', '.join(LAW_FORMS)}")
    formula, inputs = LAW_FORMS[name]
    given = {"N": N, "D": D, "C": C}
    missing = [k for k in inputs if given[k] is None]
    if missing:
        raise LossLawError(f"{name} needs {', '.join(inputs)}; missing: {', '.join(missing)}")
    data = {k: as_positive(k, given[k]) for k in inputs}
    y = as_positive("loss", loss)
    n = check_same_length(**data, loss=y)
    n_params = {"kaplan_N": 2, "kaplan_D": 2, "kaplan_ND": 4, "saturating": 3}[name]
    if n <= n_params:
        raise LossLawError(
            f"{name} has {n_params} parameters and needs at least {n_params + 1} points; got {n}"
        )
    for k in inputs:  # one more distinct value than parameters, else the curve just joins the dots
        require_distinct(k, data[k], n_params + 1 if name != "kaplan_ND" else 3, name)
    form, X, starts = _law_setup(name, data)
    hf = fit_huber_form(form, X, np.log(y), starts, delta=delta, n_bootstrap=n_bootstrap, seed=seed)
    params = {k: float(v[0]) for k, v in form.to_natural(hf.theta[None]).items()}
    boot = form.to_natural(hf.boot_theta) if len(hf.boot_theta) else {}
    return LawFit(
        name=name,
        formula=formula,
        inputs=inputs,
        params=params,
        se={k: float(np.std(v, ddof=1)) for k, v in boot.items()} if len(hf.boot_theta) > 1 else {},
        intervals={
            k: {kk: quantile_summary(params[k], boot.get(k), q)[kk] for kk in ("lo", "hi")} for k in params
        },
        objective=hf.objective,
        n_points=n,
        n_bootstrap_ok=len(hf.boot_theta),
        n_bootstrap_failed=hf.n_bootstrap_failed,
        x_max={k: float(v.max()) for k, v in data.items()},
        note=note,
        boot=boot,
    )


# ------------------------------------------------------------------ validation


def prediction_errors(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Relative errors of predicted loss: mean |%|, max |%|, mean signed % (bias), RMSE of log."""
    rel = predicted / observed - 1.0
    return {
        "mean_abs_pct": float(100 * np.mean(np.abs(rel))),
        "max_abs_pct": float(100 * np.max(np.abs(rel))),
        "bias_pct": float(100 * np.mean(rel)),
        "rmse_log": float(np.sqrt(np.mean(np.log(predicted / observed) ** 2))),
    }


def leave_largest_out(
    N: Any,
    D: Any,
    loss: Any,
    *,
    holdout_frac: float = 0.1,
    span_dex: float = 0.1,
    delta: float = DEFAULT_DELTA,
    full_fit: ChinchillaFit | None = None,
) -> dict[str, Any]:
    """Fit the Chinchilla form on the smaller budgets and predict the held-out largest ones.

    Whole compute budgets (``budget_groups``) are held out, largest first, until at least
    ``holdout_frac`` of the runs are out, so no budget is split between train and test.
    With ``full_fit`` the same errors of the all-data fit are given as the in-sample baseline.
    """
    N, D, loss = as_positive("N", N), as_positive("D", D), as_positive("loss", loss)
    n = check_same_length(N=N, D=D, loss=loss)
    if not 0 < holdout_frac < 1:
        raise LossLawError(f"holdout_frac = {holdout_frac!r} is not allowed; allowed: 0 < frac < 1")
    C = 6.0 * N * D
    labels = budget_groups(C, span_dex)
    test = np.zeros(n, dtype=bool)
    for g in range(labels.max(), 0, -1):  # never hold out the smallest budget: nothing left to fit
        test |= labels == g
        if test.sum() >= holdout_frac * n:
            break
    if not test.any():
        raise LossLawError("leave-largest-out needs at least 2 compute budgets; the data has 1")
    train = ~test
    fit = fit_chinchilla(N[train], D[train], loss[train], n_bootstrap=0, delta=delta)
    pred = fit.predict(N[test], D[test])
    out: dict[str, Any] = {
        "form": "chinchilla",
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "c_max_train": float(C[train].max()),
        "c_min_test": float(C[test].min()),
        "c_max_test": float(C[test].max()),
        "extrapolation_oom": float(np.log10(C[test].max() / C[train].max())),
        "params_train": fit.params,
        "errors": prediction_errors(loss[test], pred),
        "train_errors": prediction_errors(loss[train], fit.predict(N[train], D[train])),
    }
    if full_fit is not None:
        out["in_sample_errors"] = prediction_errors(loss[test], full_fit.predict(N[test], D[test]))
    return out
