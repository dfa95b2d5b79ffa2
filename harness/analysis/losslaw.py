"""Loss scaling laws with honest uncertainty (Chinchilla Approach 3, Kaplan, saturating L(C)).

The Chinchilla fit follows Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024
(Epoch): Huber loss (delta 1e-3) on log loss, *summed* over points, in log-sum-exp form

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

minimised by L-BFGS with analytic gradients from a grid of starts and polished with
scipy's L-BFGS-B at tight tolerances. Averaging the loss (Hoffmann's original) shrinks
the gradients ~240x, so default tolerances stop early; we sum, scale by 1/delta so the
objective is O(1), and test convergence on the gradient, not on the objective change.

Uncertainty comes from the bootstrap: every resample is a weighted problem (weights =
multinomial counts) and all of them are solved together by one batched L-BFGS, so 1,000
resamples cost a few hundred vectorised objective evaluations rather than 1,000 Python
optimiser loops. Each resample is checked for convergence; failures are counted and
left out of the standard errors, never silently kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
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
            f"{name}[{i}] = {arr[i]!r} is not allowed ({bad.size} bad value(s)); allowed: finite values > 0"
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
        raise LossLawError(
            f"{form} needs at least {minimum} distinct values of {name}; the data has {n}"
        )


# ------------------------------------------------------------------ Huber on log loss


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative (psi) elementwise."""
    absr = np.abs(r)
    h = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))
    return h, np.clip(r, -delta, delta)


@dataclass(frozen=True)
class Form:
    """A law written as log L_hat = f(theta; x) with its Jacobian, fitted by Huber on log loss.

    ``logpred(theta (K,p), X) -> (pred (K,n), jac (K,n,p))``; ``to_natural(theta (K,p))`` gives
    the named parameters (arrays of length K). ``xs`` names the inputs in X.
    """

    name: str
    theta_names: tuple[str, ...]
    natural_names: tuple[str, ...]
    xs: tuple[str, ...]
    logpred: Callable[[np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
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


def _chinchilla_logpred(theta: np.ndarray, X: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    # theta = (a, b, e, alpha, beta) with a, b centred at the data's mean log N and log D
    # (a_c = a - alpha*mean log N): a and alpha are otherwise ~0.999 correlated because
    # log N ~ 20, which makes L-BFGS crawl. The objective is unchanged (a linear reparametrisation).
    lN, lD = X["cN"], X["cD"]
    a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
    K, n = theta.shape[0], lN.shape[-1]
    lse, (pu, pv, pw) = _lse_terms([a - al * lN, b - be * lD, np.broadcast_to(e, (K, n))])
    jac = np.stack([pu, pv, pw, -pu * lN, -pv * lD], axis=-1)
    return lse, jac


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
        pred, jac = form.logpred(theta, X)
        h, psi = huber(pred - y, delta)
        if weights is not None:
            w = weights[rows]
            h, psi = h * w, psi * w
        f = h.sum(axis=1) / delta
        g = np.einsum("kn,knp->kp", psi, jac) / delta
        bad = ~np.isfinite(f) | ~np.isfinite(g).all(axis=1)
        f[bad] = np.inf
        return f, g

    return fg


# ------------------------------------------------------------------ batched L-BFGS


@dataclass
class BatchResult:
    x: np.ndarray  # (K, p)
    f: np.ndarray  # (K,)
    g: np.ndarray  # (K, p)
    converged: np.ndarray  # (K,) bool
    n_iter: np.ndarray  # (K,)


def _two_loop(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """L-BFGS direction -H g for a batch; history slots with rho == 0 are empty and skipped."""
    q = g.copy()
    m = S.shape[1]
    alphas = np.zeros((g.shape[0], m))
    for j in range(m - 1, -1, -1):  # newest first
        alphas[:, j] = rho[:, j] * np.einsum("kp,kp->k", S[:, j], q)
        q -= alphas[:, j, None] * Y[:, j]
    # initial Hessian scale from the newest pair (standard gamma = s.y / y.y)
    sy = np.einsum("kp,kp->k", S[:, -1], Y[:, -1])
    yy = np.einsum("kp,kp->k", Y[:, -1], Y[:, -1])
    gamma = np.where((rho[:, -1] > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for j in range(m):
        beta = rho[:, j] * np.einsum("kp,kp->k", Y[:, j], r)
        r += S[:, j] * (alphas[:, j] - beta)[:, None]
    return -r


def batched_lbfgs(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    gtol: float = 1e-8,
    max_iter: int = 3000,
    memory: int = 10,
    max_ls: int = 40,
) -> BatchResult:
    """Minimise K independent smooth problems at once (L-BFGS, backtracking Armijo line search).

    Problems that converge (max |grad| <= gtol) leave the active set, so late iterations only
    pay for the stragglers. Near the optimum f stops changing in double precision before the
    gradient reaches gtol; the Armijo test therefore allows rounding noise (1e-14 relative)
    and a problem counts as converged only on the gradient.
    """
    K, p = x0.shape
    x = np.array(x0, dtype=float)
    f, g = fg(x, np.arange(K))
    S = np.zeros((K, memory, p))
    Y = np.zeros((K, memory, p))
    rho = np.zeros((K, memory))
    fresh = np.ones(K, dtype=bool)  # no curvature pair yet: take a scaled gradient step
    n_iter = np.zeros(K, dtype=int)
    converged = np.isfinite(f) & (np.abs(g).max(axis=1) <= gtol)
    active = np.isfinite(f) & ~converged
    stuck = np.zeros(K, dtype=int)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        gi, fi = g[idx], f[idx]
        d = _two_loop(gi, S[idx], Y[idx], rho[idx])
        gd = np.einsum("kp,kp->k", gi, d)
        reset = ~(gd < 0) | fresh[idx]
        d[reset] = -gi[reset]
        gd[reset] = -np.einsum("kp,kp->k", gi[reset], gi[reset])
        gnorm = np.sqrt(-gd[reset])
        t = np.ones(idx.size)
        t[reset] = np.minimum(1.0, 1.0 / np.maximum(gnorm, 1e-300))
        x_new, f_new, g_new, ok = _backtrack(fg, x[idx], fi, gd, d, t, idx, max_ls)
        n_iter[idx] += 1
        # curvature pairs only where the step was accepted and s.y > 0 (keeps H positive definite)
        s, yv = x_new - x[idx], g_new - gi
        sy = np.einsum("kp,kp->k", s, yv)
        upd = ok & (sy > 1e-12 * np.sqrt(np.einsum("kp,kp->k", s, s) * np.einsum("kp,kp->k", yv, yv)))
        ui = idx[upd]
        S[ui] = np.roll(S[ui], -1, axis=1)
        Y[ui] = np.roll(Y[ui], -1, axis=1)
        rho[ui] = np.roll(rho[ui], -1, axis=1)
        S[ui, -1], Y[ui, -1], rho[ui, -1] = s[upd], yv[upd], 1.0 / sy[upd]
        fresh[ui] = False
        x[idx[ok]], f[idx[ok]], g[idx[ok]] = x_new[ok], f_new[ok], g_new[ok]
        # a failed line search wipes the history and retries from a gradient step; twice in a
        # row means no descent is left at double precision: stop that problem.
        stuck[idx[ok]] = 0
        stuck[idx[~ok]] += 1
        fresh[idx[~ok]] = True
        rho[idx[~ok]] = 0.0
        done = np.abs(g[idx]).max(axis=1) <= gtol
        converged[idx[done]] = True
        active[idx[done | (stuck[idx] >= 2)]] = False
    return BatchResult(x=x, f=f, g=g, converged=converged, n_iter=n_iter)


def _backtrack(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x: np.ndarray,
    f: np.ndarray,
    gd: np.ndarray,
    d: np.ndarray,
    t: np.ndarray,
    rows: np.ndarray,
    max_ls: int,
    c1: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched Armijo backtracking: halve t for the problems whose trial point is not good enough."""
    x_new, f_new, g_new = x.copy(), f.copy(), np.zeros_like(x)
    ok = np.zeros(len(f), dtype=bool)
    pending = np.arange(len(f))
    for _ in range(max_ls):
        xt = x[pending] + t[pending, None] * d[pending]
        ft, gt = fg(xt, rows[pending])
        noise = 1e-14 * np.abs(f[pending])
        good = ft <= f[pending] + c1 * t[pending] * gd[pending] + noise
        acc = pending[good]
        x_new[acc], f_new[acc], g_new[acc], ok[acc] = xt[good], ft[good], gt[good], True
        pending = pending[~good]
        if pending.size == 0:
            break
        t[pending] *= 0.5
    return x_new, f_new, g_new, ok
