"""Input checks shared by every loss law, and the grouping of runs into compute budgets."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


class LossLawError(ValueError):
    """Data or a fit that a loss law cannot be built on; the message names the bad value."""


def as_positive(name: str, values: ArrayLike) -> np.ndarray:
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


def check_runs(N: ArrayLike, D: ArrayLike, loss: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D and loss as positive float arrays of one length (one value per run)."""
    N, D, loss = as_positive("N", N), as_positive("D", D), as_positive("loss", loss)
    check_same_length(N=N, D=D, loss=loss)
    return N, D, loss


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
