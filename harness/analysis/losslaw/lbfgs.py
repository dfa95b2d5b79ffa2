"""A batched L-BFGS: many independent smooth problems (bootstrap resamples, starting points)
solved as one vectorised iteration, so no per-problem Python loop dominates the time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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
    rows: np.ndarray | None = None,
    gtol: float = 1e-8,
    gtol_stall: float = 1e-6,
    stall_iter: int = 25,
    max_iter: int = 3000,
    memory: int = 10,
    max_ls: int = 40,
) -> BatchResult:
    """Minimise K independent smooth problems at once (L-BFGS, backtracking Armijo line search).

    Problems that converge (max |grad| <= gtol) leave the active set, so late iterations only
    pay for the stragglers. Near the optimum f stops changing in double precision before the
    gradient reaches gtol (Huber's curvature jumps where a residual crosses delta); the Armijo
    test therefore allows rounding noise (1e-14 relative). A problem whose f has not improved
    for ``stall_iter`` iterations, or whose line search fails twice in a row, is stopped and
    counts as converged only if max |grad| <= ``gtol_stall`` (at the floating-point limit of
    an optimum, not stranded on a slope). ``rows`` are the problem ids passed to fg (default
    0..K-1), so a subset of a weighted batch can be resumed.
    """
    K, p = x0.shape
    rows = np.arange(K) if rows is None else np.asarray(rows)
    x = np.array(x0, dtype=float)
    f, g = fg(x, rows)
    S = np.zeros((K, memory, p))
    Y = np.zeros((K, memory, p))
    rho = np.zeros((K, memory))
    fresh = np.ones(K, dtype=bool)  # no curvature pair yet: take a scaled gradient step
    n_iter = np.zeros(K, dtype=int)
    converged = np.isfinite(f) & (np.abs(g).max(axis=1) <= gtol)
    active = np.isfinite(f) & ~converged
    stuck = np.zeros(K, dtype=int)
    f_ref, since = f.copy(), np.zeros(K, dtype=int)  # last real improvement, iterations since
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
        x_new, f_new, g_new, ok = _backtrack(fg, x[idx], fi, gd, d, t, rows[idx], max_ls)
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
        gmax = np.abs(g[idx]).max(axis=1)
        progress = f[idx] < f_ref[idx] - 1e-12 * np.abs(f_ref[idx])
        f_ref[idx[progress]] = f[idx[progress]]
        since[idx] = np.where(progress, 0, since[idx] + 1)
        stalled = (stuck[idx] >= 2) | (since[idx] >= stall_iter)
        done = (gmax <= gtol) | (stalled & (gmax <= gtol_stall))
        converged[idx[done]] = True
        active[idx[done | stalled]] = False
    return BatchResult(x=x, f=f, g=g, converged=converged, n_iter=n_iter)


def race(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    group: np.ndarray,
    *,
    keep: int = 1,
    race_iter: int = 300,
    gtol: float = 1e-8,
    max_iter: int = 3000,
) -> BatchResult:
    """Run every start for ``race_iter`` iterations, then finish only the ``keep`` best per group.

    Starts stranded on a plateau (a term that has vanished) crawl for thousands of iterations
    without ever becoming competitive; racing stops paying for them. ``group`` labels the
    problems that are starts of the same fit (one resample, or one grid).
    """
    r = batched_lbfgs(fg, x0, gtol=gtol, max_iter=race_iter)
    f = np.where(np.isfinite(r.f), r.f, np.inf)
    order = np.lexsort((f, group))
    g_sorted = group[order]
    first = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    finalists = order[(rank < keep) & np.isfinite(f[order])]
    todo = finalists[~r.converged[finalists]]
    if todo.size:
        r2 = batched_lbfgs(fg, r.x[todo], rows=todo, gtol=gtol, max_iter=max_iter - race_iter)
        r.x[todo], r.f[todo], r.g[todo] = r2.x, r2.f, r2.g
        r.converged[todo] = r2.converged
        r.n_iter[todo] += r2.n_iter
    return r


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
    """Batched Armijo backtracking for the problems whose trial point is not good enough.

    The next step minimises the quadratic through f(0), f'(0) and f(t), kept within
    [0.1 t, 0.5 t]: fewer rounds than plain halving when the first step overshoots by far.
    """
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
        bad = ~good
        pending, ft, tp = pending[bad], ft[bad], t[pending[bad]]
        if pending.size == 0:
            break
        curv = ft - f[pending] - gd[pending] * tp
        with np.errstate(divide="ignore", invalid="ignore"):
            t_quad = -gd[pending] * tp * tp / (2.0 * curv)
        t_quad = np.where(np.isfinite(t_quad) & (curv > 0), t_quad, 0.1 * tp)
        t[pending] = np.clip(t_quad, 0.1 * tp, 0.5 * tp)
    return x_new, f_new, g_new, ok
