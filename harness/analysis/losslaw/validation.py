"""Out-of-sample validation: fit on the smaller compute budgets, predict the largest ones."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from harness.analysis.losslaw.chinchilla import ChinchillaFit, fit_chinchilla
from harness.analysis.losslaw.inputs import LossLawError, budget_groups, check_runs
from harness.analysis.losslaw.objective import DEFAULT_DELTA
from harness.core.flops import training_flops_6nd


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
    N: ArrayLike,
    D: ArrayLike,
    loss: ArrayLike,
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
    N, D, loss = check_runs(N, D, loss)
    n = len(loss)
    if not 0 < holdout_frac < 1:
        raise LossLawError(f"holdout_frac = {holdout_frac!r} is not allowed; allowed: 0 < frac < 1")
    C = training_flops_6nd(N, D)
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
