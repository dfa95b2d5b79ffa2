"""The fitting engine: a form fitted by Huber on log loss from a grid of starts, then bootstrapped.

Following Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024 (Epoch): Huber loss
(delta 1e-3) on log loss, *summed* over points, minimised by L-BFGS with analytic gradients from
a grid of starts and polished with scipy's L-BFGS-B at tight tolerances. Averaging the loss
(Hoffmann's original) shrinks the gradients ~240x, so default tolerances stop early; we sum,
scale by 1/delta so the objective is O(1), and test convergence on the gradient, not on the
objective change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.analysis.losslaw.bootstrap import bootstrap_huber
from harness.analysis.losslaw.forms import Form
from harness.analysis.losslaw.inputs import LossLawError
from harness.analysis.losslaw.lbfgs import race
from harness.analysis.losslaw.objective import BOOT_GTOL, DEFAULT_DELTA, Objective, huber_objective

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


def _scipy_polish(fg: Objective, theta: np.ndarray, f0: float) -> tuple[np.ndarray, float]:
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
