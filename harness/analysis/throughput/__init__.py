"""The throughput side of the analysis: how fast a layout trains, and how sure we are.

Modules by job (torch-free; the run record is the contract):

- ``step_model``: the grey-box step-time law (compute roofline, bubble, TP/PP/DP traffic,
  stragglers) and its ``Coefficients``;
- ``layout``: TP x PP x DP x ZeRO layouts, their memory per GPU and every hard limit;
- ``layout_search``: the fastest feasible layout for a model, GPU count and batch;
- ``collectives``: alpha-beta fits to measured collectives, loading commbench records
  (the nccl-tests definitions themselves are ``harness.core.collectives``);
- ``calibration``: the published runs, replayed, and the one coefficient set fitted to them;
- ``measured``: the law fitted to this harness's own runs, and leave-largest-out;
- ``usl``: the Universal Scalability Law baseline.

The names below are re-exported for callers that want the package's main entry points.
"""

from __future__ import annotations

from harness.analysis.throughput.calibration import Calibration, Case, calibrate, calibrated, load_cases
from harness.analysis.throughput.collectives import fit_all, fit_alpha_beta, load_commbench
from harness.analysis.throughput.layout import Feasibility, Layout, check, memory_per_gpu
from harness.analysis.throughput.layout_search import LayoutChoice, choose_layout, on_allocation
from harness.analysis.throughput.measured import MEASURED_PARAMS, MeasuredFit, fit_measured, leave_largest_out
from harness.analysis.throughput.step_model import (
    DEFAULT,
    Coefficients,
    StepPrediction,
    dp_comm_time,
    params_per_gpu,
    pp_comm_time,
    predict_step,
    tp_comm_time,
)
from harness.analysis.throughput.usl import USLFit, fit_usl

__all__ = [
    "DEFAULT",
    "MEASURED_PARAMS",
    "Calibration",
    "Case",
    "Coefficients",
    "Feasibility",
    "Layout",
    "LayoutChoice",
    "MeasuredFit",
    "StepPrediction",
    "USLFit",
    "calibrate",
    "calibrated",
    "check",
    "choose_layout",
    "dp_comm_time",
    "fit_all",
    "fit_alpha_beta",
    "fit_measured",
    "fit_usl",
    "leave_largest_out",
    "load_cases",
    "load_commbench",
    "memory_per_gpu",
    "on_allocation",
    "params_per_gpu",
    "pp_comm_time",
    "predict_step",
    "tp_comm_time",
]
