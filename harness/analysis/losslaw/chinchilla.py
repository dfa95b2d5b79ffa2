"""Chinchilla Approach 3: L = E + A/N^alpha + B/D^beta with bootstrap intervals (Epoch's refit).

The fit follows Hoffmann et al. 2022 as corrected by Besiroglu et al. 2024 (Epoch), in
log-sum-exp form

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,

from a grid of starts (``default_grid``); see ``fitting`` for the estimator and ``bootstrap``
for the intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from harness.analysis.losslaw.bootstrap import quantile_summary
from harness.analysis.losslaw.fitting import fit_huber_form
from harness.analysis.losslaw.forms import PARAM_NAMES, chinchilla_form, chinchilla_optimum, chinchilla_theta
from harness.analysis.losslaw.inputs import LossLawError, check_runs, require_distinct
from harness.analysis.losslaw.objective import DEFAULT_DELTA
from harness.core.flops import training_flops_6nd
from harness.core.io import to_jsonable


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


def _inits(
    init: dict[str, float] | Sequence[float] | Sequence[dict[str, float]],
) -> list[dict[str, float] | Sequence[float]]:
    """One start or a list of them (a sequence of dicts) -> a list of starts."""
    if isinstance(init, Sequence) and init and isinstance(init[0], dict):
        return list(cast("Sequence[dict[str, float]]", init))
    return [cast("dict[str, float] | Sequence[float]", init)]


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

    def predict(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
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
        return to_jsonable(
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
    N: ArrayLike,
    D: ArrayLike,
    loss: ArrayLike,
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
    N, D, loss = check_runs(N, D, loss)
    n = len(loss)
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
        starts = np.array([chinchilla_theta(i, centre) for i in _inits(init)])
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
        c_max=float(np.max(training_flops_6nd(N, D))),
        delta=delta,
        grad_max=hf.grad_max,
        n_starts=hf.n_starts,
        n_starts_at_optimum=hf.n_starts_at_optimum,
        n_bootstrap_multimodal=hf.n_bootstrap_multimodal,
        seed=seed,
        boot=boot,
        data={"N": N, "D": D, "loss": loss},
    )
