"""The fitting objective: Huber loss on log loss, summed over points, batched over problems."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.analysis.losslaw.forms import Form

DEFAULT_DELTA = 1e-3
BOOT_GTOL = 1e-8  # on the 1/delta-scaled objective (O(1)); ~1e-11 on the published scale

# fg(theta (k,p), rows (k,)) -> (f (k,), grad (k,p)): what batched_lbfgs minimises
Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative (psi) elementwise."""
    absr = np.abs(r)
    h = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))
    return h, np.clip(r, -delta, delta)


def huber_objective(
    form: Form, X: dict[str, np.ndarray], y: np.ndarray, delta: float, weights: np.ndarray | None = None
) -> Objective:
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
