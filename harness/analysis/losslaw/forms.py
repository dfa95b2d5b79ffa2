"""The law forms: Chinchilla, Kaplan and saturating, each written as log L_hat = f(theta; x).

Every form is fitted in a centred parametrisation (scales measured from the data's mean log
input): with log N ~ 20 a scale and its exponent are otherwise almost perfectly correlated and
L-BFGS crawls along the valley. ``to_natural`` maps back to the published parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from harness.analysis.losslaw.inputs import LossLawError

PARAM_NAMES = ("E", "A", "B", "alpha", "beta")
Vjp = Callable[[np.ndarray], np.ndarray]
LogPred = Callable[[np.ndarray, dict[str, np.ndarray]], tuple[np.ndarray, Vjp]]

# Published values, used only as references in the example and the tests.
EPOCH_REFIT = {"E": 1.817, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
EPOCH_REFIT_SE = {"E": 0.026, "A": 124.5, "B": 1293.0, "alpha": 0.015, "beta": 0.021}
HOFFMANN_APPROACH3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


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
    logpred: LogPred
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


# ------------------------------------------------------------------ Chinchilla: E + A/N^alpha + B/D^beta


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


def chinchilla_theta(natural: dict[str, float] | Sequence[float], centre: tuple[float, float]) -> np.ndarray:
    """Natural parameters (E, A, B, alpha, beta) -> the centred theta (a, b, e, alpha, beta)."""
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


# ------------------------------------------------------------------ Kaplan and saturating


def _power_logpred(xkey: str) -> LogPred:
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


LAW_FORMS = {
    "kaplan_N": ("L = (N_c/N)^alpha_N", ("N",)),
    "kaplan_D": ("L = (D_c/D)^alpha_D", ("D",)),
    "kaplan_ND": ("L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D", ("N", "D")),
    "saturating": ("L = E + A*C^-gamma", ("C",)),
}


def law_predict(name: str, p: dict[str, Any], x: dict[str, np.ndarray]) -> np.ndarray:
    """A Kaplan or saturating law's loss at inputs ``x`` (broadcasts over parameter draws)."""
    if name == "kaplan_N":
        return (p["N_c"] / x["N"]) ** p["alpha_N"]
    if name == "kaplan_D":
        return (p["D_c"] / x["D"]) ** p["alpha_D"]
    if name == "kaplan_ND":
        return ((p["N_c"] / x["N"]) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / x["D"]) ** p["alpha_D"]
    if name == "saturating":
        return p["E"] + p["A"] * x["C"] ** (-p["gamma"])
    raise LossLawError(f"unknown law {name!r}")


def _grid(*axes: np.ndarray) -> np.ndarray:
    return np.column_stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])


def law_setup(name: str, data: dict[str, np.ndarray]) -> tuple[Form, dict[str, np.ndarray], np.ndarray]:
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
            partial(_power_natural, centre=centre[k], scale=scale, exponent=expo),
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
        scales, exponents = np.array([2.0, 10.0, 25.0]), np.array([0.05, 0.1, 0.3])
        starts = _grid(scales, scales, exponents, exponents)
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
        starts = _grid(
            np.array([-3.0, -1.0, 0.5]), np.array([-1.0, 0.0, 0.7]), np.array([0.02, 0.05, 0.1, 0.3])
        )
    return form, X, starts
