"""Loss scaling laws with honest uncertainty (Chinchilla Approaches 1-3, Kaplan, saturating L(C)).

Modules, lowest first:

- ``inputs``: LossLawError, the input checks, compute-budget groups.
- ``forms``: the law forms (Chinchilla, Kaplan, saturating) in their centred parametrisation,
  the compute-optimal allocation ``chinchilla_optimum`` and the published reference values.
- ``lbfgs``: a batched L-BFGS (many independent problems as one vectorised iteration).
- ``objective``: Huber on log loss, summed, batched over problems.
- ``bootstrap``: every resample refitted in one batch; percentile summaries.
- ``fitting``: a form fitted from a grid of starts, polished, then bootstrapped.
- ``chinchilla`` (Approach 3) and ``laws`` (Kaplan, saturating): the fits and their results.
- ``isoflop``: Approaches 1 (lower envelope) and 2 (IsoFLOP parabolas), no parametric law.
- ``validation``: leave-largest-out.
- ``tables`` and ``fit_runs``: run records or a CSV -> every requested form, group by group
  (what ``harness fit`` computes); ``plots``: its figures (matplotlib, imported on use).

The names below are re-exported so ``from harness.analysis import losslaw; losslaw.fit_chinchilla``
works; ``tables``, ``fit_runs`` and ``plots`` are imported only by those who need them (pandas,
matplotlib).
"""

from __future__ import annotations

from harness.analysis.losslaw.bootstrap import bootstrap_huber, quantile_summary
from harness.analysis.losslaw.chinchilla import ChinchillaFit, default_grid, fit_chinchilla
from harness.analysis.losslaw.fitting import FINAL_GTOL, HuberFit, fit_huber_form
from harness.analysis.losslaw.forms import (
    EPOCH_REFIT,
    EPOCH_REFIT_SE,
    HOFFMANN_APPROACH3,
    LAW_FORMS,
    PARAM_NAMES,
    Form,
    chinchilla_form,
    chinchilla_optimum,
    law_predict,
    law_setup,
)
from harness.analysis.losslaw.inputs import (
    LossLawError,
    as_positive,
    budget_groups,
    check_runs,
    check_same_length,
    require_distinct,
)
from harness.analysis.losslaw.isoflop import AllocationFit, fit_envelope, fit_isoflop, pareto_frontier
from harness.analysis.losslaw.laws import LawFit, fit_law
from harness.analysis.losslaw.lbfgs import BatchResult, batched_lbfgs, race
from harness.analysis.losslaw.objective import BOOT_GTOL, DEFAULT_DELTA, huber, huber_objective
from harness.analysis.losslaw.validation import leave_largest_out, prediction_errors

__all__ = [
    "BOOT_GTOL",
    "DEFAULT_DELTA",
    "EPOCH_REFIT",
    "EPOCH_REFIT_SE",
    "FINAL_GTOL",
    "HOFFMANN_APPROACH3",
    "LAW_FORMS",
    "PARAM_NAMES",
    "AllocationFit",
    "BatchResult",
    "ChinchillaFit",
    "Form",
    "HuberFit",
    "LawFit",
    "LossLawError",
    "as_positive",
    "batched_lbfgs",
    "bootstrap_huber",
    "budget_groups",
    "check_runs",
    "check_same_length",
    "chinchilla_form",
    "chinchilla_optimum",
    "default_grid",
    "fit_chinchilla",
    "fit_envelope",
    "fit_huber_form",
    "fit_isoflop",
    "fit_law",
    "huber",
    "huber_objective",
    "law_predict",
    "law_setup",
    "leave_largest_out",
    "pareto_frontier",
    "prediction_errors",
    "quantile_summary",
    "race",
    "require_distinct",
]
