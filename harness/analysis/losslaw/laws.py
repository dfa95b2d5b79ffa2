"""Kaplan's L(N), L(D), L(N, D) and the saturating L(C) = E + A C^-gamma, with bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from harness.analysis.losslaw.bootstrap import quantile_summary
from harness.analysis.losslaw.fitting import fit_huber_form
from harness.analysis.losslaw.forms import LAW_FORMS, law_predict, law_setup
from harness.analysis.losslaw.inputs import LossLawError, as_positive, check_same_length, require_distinct
from harness.analysis.losslaw.objective import DEFAULT_DELTA
from harness.core.io import to_jsonable

N_PARAMS = {"kaplan_N": 2, "kaplan_D": 2, "kaplan_ND": 4, "saturating": 3}


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

    def predict(self, **x: ArrayLike) -> np.ndarray:
        return law_predict(self.name, self.params, {k: np.asarray(v, dtype=float) for k, v in x.items()})

    def predict_band(self, q: tuple[float, float] = (0.05, 0.95), **x: ArrayLike) -> dict[str, np.ndarray]:
        """Point prediction and bootstrap percentile band on a grid of inputs."""
        xs = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in x.items()}
        value = self.predict(**xs)
        if not self.boot:
            return {"value": value, "lo": np.full_like(value, np.nan), "hi": np.full_like(value, np.nan)}
        draws = law_predict(
            self.name, {k: v[:, None] for k, v in self.boot.items()}, {k: v[None, :] for k, v in xs.items()}
        )
        lo, hi = np.quantile(draws, q, axis=0)
        return {"value": value, "lo": lo, "hi": hi, "se": np.std(draws, axis=0, ddof=1)}

    def to_dict(self) -> dict:
        return to_jsonable(
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


def fit_law(
    name: str,
    *,
    N: ArrayLike | None = None,
    D: ArrayLike | None = None,
    C: ArrayLike | None = None,
    loss: ArrayLike,
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
    data = {k: as_positive(k, v) for k in inputs if (v := given[k]) is not None}  # none missing: checked
    y = as_positive("loss", loss)
    n = check_same_length(**data, loss=y)
    n_params = N_PARAMS[name]
    if n <= n_params:
        raise LossLawError(
            f"{name} has {n_params} parameters and needs at least {n_params + 1} points; got {n}"
        )
    for k in inputs:  # one more distinct value than parameters, else the curve just joins the dots
        require_distinct(k, data[k], n_params + 1 if name != "kaplan_ND" else 3, name)
    form, X, starts = law_setup(name, data)
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
