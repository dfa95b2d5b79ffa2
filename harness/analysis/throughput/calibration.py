"""Replaying published large runs through the throughput law, and fitting its efficiencies once.

The cases live in ``harness/data/published_runs.yaml`` (each group cites its paper). One
hardware constant set per accelerator type (``hardware_specs``) and one coefficient set
for all cases: the compute-efficiency pair (e_mm, mem_bytes of ``step_model.Coefficients``)
is fitted once, by least squares on log(predicted/published) over every in-target case.
That in-sample error is reported beside two held-out ones: leave-one-case-out (each case
predicted by a fit that never saw it) and leave-one-source-out (a paper's rows predicted
from the other papers: closer to predicting a new stack). Bootstrap refits over cases give
the coefficient draws the extrapolation turns into intervals.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.throughput.layout import Layout
from harness.analysis.throughput.step_model import DEFAULT, Coefficients, StepPrediction, predict_step
from harness.core import flops, hardware_specs
from harness.core.hardware_specs import HardwareSpec
from harness.core.paths import DATA_DIR

DATA_FILE = DATA_DIR / "published_runs.yaml"
FITTED = ("e_mm", "mem_bytes")  # the coefficients fitted to the published cases
# (lower, upper, typical scale) of each coefficient a fit may move
FIT_RANGE = {
    "e_mm": (0.2, 1.0, 0.5),
    "mem_bytes": (0.0, 5000.0, 500.0),
    "straggler_cv": (0.0, 0.1, 0.01),
    "overlap": (0.0, 1.0, 0.5),
    "intra_bw_eff": (0.2, 1.0, 0.5),
    "inter_bw_eff": (0.2, 1.0, 0.5),
}
METRICS = ("tflops_hw_per_gpu", "mfu", "tokens_per_s_per_gpu")
SHAPE_KEYS = ("n_layer", "d_model", "n_head", "vocab_size", "seq_len")
LAYOUT_KEYS = (
    "tp",
    "pp",
    "virtual_stages",
    "zero_stage",
    "shard_degree",
    "micro_batch",
    "recompute",
    "sequence_parallel",
    "overlap_comm",
    "grad_bytes",
    "dp_collective",
)


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    source: str
    citation: str
    hw: HardwareSpec
    shape: flops.Shape
    layout: Layout
    gpus: int
    global_batch: int
    metric: str
    published: float
    derived: bool = False
    in_target: bool = True  # False: replayed and reported, but outside the fit and the error target
    assumed: str = ""
    note: str = ""


def equivalent_mlp_ratio(n_layer: int, d_model: int, params_nonembedding: float) -> float:
    """MLP width (in d_model) of the GPT block whose parameter count matches a published model.

    SwiGLU / grouped-query / multi-query blocks differ in layout but the FLOPs of the weight
    matmuls follow the parameter count, which is what the throughput law needs.
    """
    per_layer = (params_nonembedding - 2 * d_model) / n_layer
    base = flops.layer_params(d_model, 0)
    return (per_layer - base) / (2 * d_model * d_model + d_model)


def load_cases(path: str | Path = DATA_FILE) -> list[Case]:
    import yaml

    doc = yaml.safe_load(Path(path).read_text())
    sources = doc["sources"]
    cases = []
    for g in doc["groups"]:
        hw = hardware_specs.get(g["gpu"])
        if "devices_per_node" in g:
            hw = hw.with_domain(g["devices_per_node"])
        for row in g["cases"]:
            r = {**g.get("defaults", {}), **row}
            mlp: float = 4
            if "params_nonembedding" in r:
                mlp = equivalent_mlp_ratio(r["n_layer"], r["d_model"], float(r["params_nonembedding"]))
            shape = flops.Shape(**{k: int(r[k]) for k in SHAPE_KEYS}, mlp_ratio=mlp)
            tp, pp = int(r["tp"]), int(r["pp"])
            dp = int(r["gpus"]) // (tp * pp)
            lay_kw = {k: r[k] for k in LAYOUT_KEYS if k in r}
            m = int(r["global_batch"]) // (dp * int(r.get("micro_batch", 1)))
            layout = Layout(dp=dp, num_micro_batches=m, **lay_kw)
            if layout.world != int(r["gpus"]) or layout.global_batch_seqs != int(r["global_batch"]):
                raise ValueError(
                    f"case {r['id']}: layout {layout.describe()} does not give {r['gpus']} GPUs "
                    f"and batch {r['global_batch']}"
                )
            if g["metric"] not in METRICS:
                raise ValueError(f"case {r['id']}: metric {g['metric']!r} is not one of {METRICS}")
            cases.append(
                Case(
                    id=r["id"],
                    group=g["name"],
                    source=g["source"],
                    citation=" ".join(sources[g["source"]].split()),
                    hw=hw,
                    shape=shape,
                    layout=layout,
                    gpus=int(r["gpus"]),
                    global_batch=int(r["global_batch"]),
                    metric=g["metric"],
                    published=float(r["published"]),
                    derived=bool(r.get("derived", False)),
                    in_target=bool(r.get("in_target", True)),
                    assumed=" ".join(str(g.get("assumed", "")).split()),
                    note=str(r.get("note", "")),
                )
            )
    return cases


def predict_case(case: Case, c: Coefficients = DEFAULT) -> tuple[float, StepPrediction]:
    """The case's metric as the law predicts it. Memory is reported, not enforced: these runs happened."""
    pred = predict_step(case.shape, case.layout, case.hw, c, enforce_memory=False)
    if not pred.feasible:
        raise ValueError(f"case {case.id}: layout infeasible: {pred.reasons}")
    return float(getattr(pred, case.metric)), pred


def log_errors(cases: list[Case], c: Coefficients) -> np.ndarray:
    return np.array([math.log(predict_case(k, c)[0] / k.published) for k in cases])


def fit_coefficients(
    cases: list[Case], base: Coefficients = DEFAULT, names: tuple[str, ...] = FITTED
) -> Coefficients:
    """Least squares on log(predicted/published) over the cases, for the named coefficients only."""
    from scipy.optimize import least_squares

    def coeffs(z: np.ndarray) -> Coefficients:
        return replace(base, **dict(zip(names, map(float, z), strict=True)))

    lo = np.array([FIT_RANGE[k][0] for k in names])
    hi = np.array([FIT_RANGE[k][1] for k in names])
    scale = np.array([FIT_RANGE[k][2] for k in names])
    z0 = np.array(
        [getattr(base, k) or FIT_RANGE[k][2] for k in names]
    )  # an unset (0) value starts at its scale
    sol = least_squares(
        lambda z: log_errors(cases, coeffs(z)),
        np.clip(z0, lo, hi),
        bounds=(lo, hi),
        x_scale=scale,
        xtol=1e-10,
        ftol=1e-10,
    )
    return coeffs(sol.x)


@functools.lru_cache(maxsize=1)
def calibrated() -> Coefficients:
    """The one coefficient set fitted to the published runs (what predictions use by default)."""
    return fit_coefficients([k for k in load_cases() if k.in_target])


@dataclass
class Calibration:
    """The one coefficient set, its bootstrap draws and its leave-one-out residuals."""

    coeffs: Coefficients
    boot: list[Coefficients] = field(default_factory=list)
    loo_log_errors: dict[str, float] = field(default_factory=dict)
    in_sample_log_errors: dict[str, float] = field(default_factory=dict)
    loso_log_errors: dict[str, float] = field(default_factory=dict)  # leave-one-source(paper)-out

    def residual_sd(self) -> float:
        """RMS of out-of-sample log errors: the scatter a new prediction carries beyond the coefficients'.

        Leave-one-source-out when available (rows of one paper share a software stack and
        GPU type, so their errors are correlated and leave-one-row-out is optimistic).
        """
        e = np.array(
            list(self.loso_log_errors.values())
            or list(self.loo_log_errors.values())
            or list(self.in_sample_log_errors.values())
        )
        return float(np.sqrt(np.mean(e**2))) if len(e) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "coefficients": self.coeffs.to_dict(),
            "fitted": list(FITTED),
            "n_bootstrap": len(self.boot),
            "bootstrap_90": {
                k: [float(np.quantile([getattr(b, k) for b in self.boot], q)) for q in (0.05, 0.95)]
                for k in FITTED
            }
            if self.boot
            else {},
            "residual_sd_log": self.residual_sd(),
            "residual_sd_from": "leave-one-source-out"
            if self.loso_log_errors
            else ("leave-one-out" if self.loo_log_errors else "in-sample"),
        }


def calibrate(
    cases: list[Case] | None = None, *, n_bootstrap: int = 50, loo: bool = True, seed: int = 0
) -> Calibration:
    """Fit the efficiency curve over all cases; optionally leave-one-out and bootstrap refits."""
    cases = [k for k in (load_cases() if cases is None else cases) if k.in_target]
    c = fit_coefficients(cases)
    cal = Calibration(
        c, in_sample_log_errors=dict(zip([k.id for k in cases], log_errors(cases, c), strict=True))
    )
    if loo:
        for i, k in enumerate(cases):
            ci = fit_coefficients(cases[:i] + cases[i + 1 :], base=c)
            cal.loo_log_errors[k.id] = math.log(predict_case(k, ci)[0] / k.published)
        for src in sorted({k.source for k in cases}):
            cs = fit_coefficients([k for k in cases if k.source != src], base=c)
            for k in cases:
                if k.source == src:
                    cal.loso_log_errors[k.id] = math.log(predict_case(k, cs)[0] / k.published)
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(cases), len(cases))
        cal.boot.append(fit_coefficients([cases[j] for j in idx], base=c))
    return cal


def replay(cases: list[Case] | None = None, cal: Calibration | None = None) -> list[dict[str, Any]]:
    """One row per case: published vs predicted metric, errors (in-sample and leave-one-out), breakdown."""
    cases = load_cases() if cases is None else cases
    cal = calibrate(cases, n_bootstrap=0) if cal is None else cal
    rows = []
    for k in cases:
        value, p = predict_case(k, cal.coeffs)
        loo = cal.loo_log_errors.get(k.id)
        loso = cal.loso_log_errors.get(k.id)
        rows.append(
            {
                "id": k.id,
                "group": k.group,
                "source": k.source,
                "gpu": k.hw.name,
                "gpus": k.gpus,
                "layout": k.layout.describe(),
                "global_batch": k.global_batch,
                "metric": k.metric,
                "published": k.published,
                "predicted": value,
                "error": value / k.published - 1.0,
                "loo_predicted": None if loo is None else k.published * math.exp(loo),
                "loo_error": None if loo is None else math.exp(loo) - 1.0,
                "loso_error": None if loso is None else math.exp(loso) - 1.0,
                "derived": k.derived,
                "in_target": k.in_target,
                "mfu_pred": p.mfu,
                "efficiency": p.efficiency,
                "t_step_s": p.t_step,
                "share_compute": p.t_compute / p.t_step,
                "share_bubble": p.t_bubble / p.t_step,
                "share_tp": p.exposed_tp / p.t_step,
                "share_pp": p.exposed_pp / p.t_step,
                "share_dp": p.exposed_dp / p.t_step,
                "share_straggler": p.t_straggler / p.t_step,
                "memory_gb": p.memory.get("total_bytes", math.nan) / 1e9,
                "memory_fits": not any(r.startswith("memory") for r in p.reasons),
                "assumed": k.assumed,
                "note": k.note,
            }
        )
    return rows


TARGET_MEDIAN, TARGET_MAX = 0.15, 0.30


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Error statistics over the in-target cases (in-sample and leave-one-out) against the target."""
    tgt = [r for r in rows if r["in_target"]]
    err = np.abs([r["error"] for r in tgt])
    out: dict[str, Any] = {
        "n_cases": len(tgt),
        "n_out_of_scope": len(rows) - len(tgt),
        "median_abs_error": float(np.median(err)),
        "max_abs_error": float(np.max(err)),
        "worst_case": tgt[int(np.argmax(err))]["id"],
        "target": {"median_abs_error": TARGET_MEDIAN, "max_abs_error": TARGET_MAX},
        "memory_model_rejects": [r["id"] for r in rows if not r["memory_fits"]],
    }
    out["meets_target"] = bool(
        out["median_abs_error"] <= TARGET_MEDIAN and out["max_abs_error"] <= TARGET_MAX
    )
    loo_rows = [r for r in tgt if r["loo_error"] is not None]
    if loo_rows:
        loo = np.abs([r["loo_error"] for r in loo_rows])
        out["loo_median_abs_error"] = float(np.median(loo))
        out["loo_max_abs_error"] = float(np.max(loo))
        out["loo_worst_case"] = loo_rows[int(np.argmax(loo))]["id"]
        out["loo_meets_target"] = bool(
            out["loo_median_abs_error"] <= TARGET_MEDIAN and out["loo_max_abs_error"] <= TARGET_MAX
        )
    loso_rows = [r for r in tgt if r.get("loso_error") is not None]
    if loso_rows:
        loso = np.abs([r["loso_error"] for r in loso_rows])
        out["loso_median_abs_error"] = float(np.median(loso))
        out["loso_max_abs_error"] = float(np.max(loso))
        out["loso_worst_case"] = loso_rows[int(np.argmax(loso))]["id"]
    return out
