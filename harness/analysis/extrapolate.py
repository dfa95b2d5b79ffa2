"""The Grok-scale question: budget, model, loss, time and goodput on a target cluster.

Puts together the throughput law (calibrated once on published runs), the layout search,
the goodput model and a loss-law fit (passed in, so any object with ``optimal(C, q)``
will do). Every number carries an interval and, where it extrapolates, how many orders of
magnitude beyond its data it reaches.

Intervals on throughput: the layout is chosen with the point coefficients, then evaluated
under every bootstrap refit of the coefficients, each multiplied by a log-normal draw of
the held-out (leave-one-source-out) residual scatter of the published replay: model
error, not just parameter error. Efficiency ratios carry the coefficient part only (a
common model error cancels in a ratio).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from harness.analysis import goodput as G
from harness.analysis.throughput.calibration import Calibration
from harness.analysis.throughput.layout import Layout
from harness.analysis.throughput.layout_search import choose_layout, on_allocation
from harness.analysis.throughput.step_model import StepPrediction, predict_step
from harness.core import flops, shapes
from harness.core.hardware_specs import HardwareSpec

SECONDS_PER_DAY = 86_400.0
DEFAULT_BATCH_TOKENS = 16 * 2**20  # Llama 3 405B's final batch, 16M tokens (Dubey et al. 2024)
EFFICIENCY_FLOOR = 0.9


class LossFit(Protocol):
    """What the extrapolation needs of a loss law (e.g. ``losslaw.ChinchillaFit``); ``source`` and
    ``data`` (the fitted N and D) are read when present."""

    def optimal(self, C: float, q: tuple[float, float]) -> dict[str, Any]: ...


def gpu_counts(cluster_gpus: int, first: int = 8) -> list[int]:
    """One node, doubling, up to the cluster (which is always included)."""
    out, n = [], first
    while n < cluster_gpus:
        out.append(n)
        n *= 2
    return [*out, cluster_gpus]


def data_parallel_limit(
    critical_batch_tokens: float,
    seq_len: int,
    n_gpus: int,
    batch_tokens: float = DEFAULT_BATCH_TOKENS,
    min_seqs_per_gpu: int = 1,
) -> dict[str, Any]:
    """What the critical batch allows: the useful global batch, how many GPUs pure data parallelism
    can use, and the model-parallel degree (TP x PP) the rest of the cluster needs.

    Beyond B_crit a larger batch buys few fewer steps (McCandlish et al. 2018; Kaplan et al. 2020,
    Sec. 5.1), so the useful global batch is B_crit in whole sequences. Pure DP gives every GPU at
    least ``min_seqs_per_gpu`` sequences of that batch, hence at most B_crit / (seq_len x min) GPUs;
    n GPUs then need model-parallel groups of ceil(n / that) GPUs each.
    """
    if not (critical_batch_tokens > 0 and seq_len >= 1 and n_gpus >= 1 and min_seqs_per_gpu >= 1):
        raise ValueError(
            f"critical batch {critical_batch_tokens}, seq_len {seq_len}, n_gpus {n_gpus}, "
            f"min_seqs_per_gpu {min_seqs_per_gpu}; allowed: all > 0"
        )
    seqs = max(1, int(critical_batch_tokens // seq_len))
    max_dp = max(1, seqs // min_seqs_per_gpu)
    mp = -(-n_gpus // max_dp)
    used = min(float(batch_tokens), float(seqs * seq_len))
    return {
        "critical_batch_tokens": float(critical_batch_tokens),
        "useful_global_batch_seqs": seqs,
        "useful_global_batch_tokens": seqs * seq_len,
        "max_pure_dp_gpus": max_dp,
        "model_parallel_degree": mp,
        "pure_dp_suffices": mp == 1,
        "n_gpus": n_gpus,
        "requested_batch_tokens": float(batch_tokens),
        "global_batch_tokens_used": used,
        "min_seqs_per_gpu": min_seqs_per_gpu,
    }


def _q(values: np.ndarray, point: float, q: tuple[float, float]) -> dict[str, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"value": point, "lo": point, "hi": point}
    return {"value": point, "lo": float(np.quantile(v, q[0])), "hi": float(np.quantile(v, q[1]))}


def _draws(
    s: flops.Shape,
    lay: Layout,
    hw: HardwareSpec,
    cal: Calibration,
    n_alloc: int,
    rng: np.random.Generator,
    *,
    noise: bool,
) -> dict[str, np.ndarray]:
    """tokens/s and MFU of one fixed layout under every bootstrap coefficient set."""
    tps, mfu = [], []
    for c in cal.boot:
        p = on_allocation(predict_step(s, lay, hw, c, enforce_memory=False), n_alloc)
        if p.feasible:
            tps.append(p.tokens_per_s)
            mfu.append(p.mfu)
    tps_a, mfu_a = np.array(tps), np.array(mfu)
    if noise and len(tps_a):
        eps = np.exp(rng.normal(0.0, cal.residual_sd(), len(tps_a)))
        tps_a, mfu_a = tps_a * eps, mfu_a * eps
    return {"tokens_per_s": tps_a, "mfu": mfu_a}


def _point(p: StepPrediction) -> dict[str, Any]:
    t = p.t_step
    return {
        "layout": p.layout.describe(),
        "layout_fields": p.layout.to_dict(),
        "global_batch_tokens": p.tokens_per_step,
        "tokens_per_gpu_per_step": p.tokens_per_step / p.n_gpus,
        "step_time_s": t,
        "shares": {
            "compute": p.t_compute / t,
            "bubble": p.t_bubble / t,
            "tp": p.exposed_tp / t,
            "pp": p.exposed_pp / t,
            "dp": p.exposed_dp / t,
            "straggler": p.t_straggler / t,
        },
        "memory_gb": p.memory.get("total_bytes", math.nan) / 1e9,
        "idle_gpus": p.n_gpus - p.layout.world,
    }


def scaling_curve(
    s: flops.Shape,
    hw: HardwareSpec,
    cal: Calibration,
    counts: list[int],
    *,
    batch_tokens: float = DEFAULT_BATCH_TOKENS,
    critical_batch_tokens: float | None = None,
    q: tuple[float, float] = (0.05, 0.95),
    seed: int = 0,
) -> dict[str, Any]:
    """Predicted tokens/s, MFU and strong-scaling efficiency (global batch held) at each GPU count.

    Efficiency is relative to the smallest count with a feasible layout (one node when the
    model fits there): (X(n)/n) / (X(n0)/n0), ``flops.scaling_efficiency``.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    ref: tuple[int, float, np.ndarray] | None = None
    for n in counts:
        ch = choose_layout(s, n, batch_tokens, hw, cal.coeffs, critical_batch_tokens=critical_batch_tokens)
        row: dict[str, Any] = {"n_gpus": n, "feasible": ch.best is not None, "explanation": ch.explanation}
        if ch.best is None:
            rows.append(row)
            continue
        p = ch.best
        coef = _draws(s, p.layout, hw, cal, n, rng, noise=False)
        noisy = _draws(s, p.layout, hw, cal, n, rng, noise=True)
        row.update(_point(p))
        row["tokens_per_s"] = _q(noisy["tokens_per_s"], p.tokens_per_s, q)
        row["tokens_per_s_per_gpu"] = {k: v / n for k, v in row["tokens_per_s"].items()}
        row["mfu"] = _q(noisy["mfu"], p.mfu, q)
        if ref is None:
            ref = (n, p.tokens_per_s, coef["tokens_per_s"])
        eff_point = flops.scaling_efficiency(p.tokens_per_s, n, ref[1], ref[0])
        k = min(len(coef["tokens_per_s"]), len(ref[2]))
        eff_draws = (coef["tokens_per_s"][:k] / n) / (ref[2][:k] / ref[0]) if k else np.array([])
        row["efficiency"] = _q(eff_draws, eff_point, q)
        rows.append(row)
    below = next(
        (r["n_gpus"] for r in rows if r.get("efficiency") and r["efficiency"]["value"] < EFFICIENCY_FLOOR),
        None,
    )
    return {
        "reference_gpus": ref[0] if ref else None,
        "global_batch_tokens_requested": batch_tokens,
        "critical_batch_tokens": critical_batch_tokens,
        "rows": rows,
        "first_below_90pct": below,
        "kind": "strong scaling (global batch held)",
    }


def _oom(x: float, ref: float | None) -> float | None:
    return None if not ref or ref <= 0 or x <= 0 else math.log10(x / ref)


def extrapolate(
    s: flops.Shape,
    hw: HardwareSpec,
    cal: Calibration,
    loss_fit: LossFit,
    *,
    n_gpus: int,
    days: float = 90.0,
    checkpoint_s: float = G.DEFAULT_CHECKPOINT_S,
    restart_s: float = G.DEFAULT_RESTART_S,
    batch_tokens: float = DEFAULT_BATCH_TOKENS,
    critical_batch_tokens: float | None = None,
    q: tuple[float, float] = (0.05, 0.95),
    calibration_max_gpus: int | None = None,
    measured_max_gpus: int | None = None,
    seed: int = 0,
    counts: list[int] | None = None,
) -> dict[str, Any]:
    """The extrapolation result dict (JSON-ready); see ``harness extrapolate``."""
    counts = sorted(set(counts or gpu_counts(n_gpus)) | {n_gpus})
    curve = scaling_curve(
        s,
        hw,
        cal,
        counts,
        batch_tokens=batch_tokens,
        critical_batch_tokens=critical_batch_tokens,
        q=q,
        seed=seed,
    )
    full = next(r for r in curve["rows"] if r["n_gpus"] == n_gpus)
    if not full["feasible"]:
        raise ValueError(f"no feasible layout for the model on {n_gpus} GPUs: {full['explanation']}")
    mfu = full["mfu"]
    secs = days * SECONDS_PER_DAY
    budget = {k: n_gpus * hw.peak_flops * v * secs for k, v in mfu.items()}  # model FLOPs, PaLM convention
    gp = G.goodput(n_gpus, checkpoint_s, restart_s)
    if gp["goodput"] <= 0:
        raise ValueError(
            f"goodput is zero on {n_gpus} GPUs (MTBF {gp['mtbf_s']:.0f} s, checkpoint {checkpoint_s} s, "
            f"restart {restart_s} s): no compute is delivered"
        )
    delivered = {k: v * gp["goodput"] for k, v in budget.items()}

    opt = loss_fit.optimal(delivered["value"], q)
    opt_lo, opt_hi = loss_fit.optimal(delivered["lo"], q), loss_fit.optimal(delivered["hi"], q)
    data = getattr(loss_fit, "data", None) or {}
    n_max = float(np.max(data["N"])) if "N" in data else None
    d_max = float(np.max(data["D"])) if "D" in data else None
    n_star, d_star = opt["N_opt"]["value"], opt["D_opt"]["value"]

    # The model that budget should train: its own layout and rate on the full cluster.
    s_star = shapes.shape_for_params(n_star, s.seq_len, s.vocab_size)
    ch_star = choose_layout(
        s_star, n_gpus, batch_tokens, hw, cal.coeffs, critical_batch_tokens=critical_batch_tokens
    )
    time_to_train: dict[str, Any] = {
        "model": {
            "n_layer": s_star.n_layer,
            "d_model": s_star.d_model,
            "params_total": flops.params_total(s_star),
        },
        "explanation": ch_star.explanation,
    }
    if ch_star.best is not None:
        rng = np.random.default_rng(seed + 1)
        draws = _draws(s_star, ch_star.best.layout, hw, cal, n_gpus, rng, noise=True)["tokens_per_s"]
        wall = lambda tps: d_star / (tps * gp["goodput"]) / SECONDS_PER_DAY if gp["goodput"] > 0 else math.inf  # noqa: E731
        days_draws = np.array([wall(x) for x in draws])
        time_to_train.update(_point(ch_star.best))
        time_to_train["mfu"] = ch_star.best.mfu
        time_to_train["tokens"] = d_star
        time_to_train["days"] = _q(days_draws, wall(ch_star.best.tokens_per_s), q)

    model_rate = full["tokens_per_s"]["value"]
    return {
        "cluster": {
            "gpu": hw.name,
            "n_gpus": n_gpus,
            "peak_flops_per_gpu": hw.peak_flops,
            "devices_per_node": hw.devices_per_node,
            "inter_bw_per_gpu": hw.inter_bw,
            "nic_effective_fraction": hw.nic_effective_fraction,
        },
        "model": {
            "n_layer": s.n_layer,
            "d_model": s.d_model,
            "n_head": s.n_head,
            "vocab_size": s.vocab_size,
            "seq_len": s.seq_len,
            "params_total": flops.params_total(s),
            "params_nonembedding": flops.params_nonembedding(s),
            "flops_per_token": flops.flops_per_token(s),
        },
        "days": days,
        "quantiles": list(q),
        "compute_rate_source": (
            "no GPU measured in this session: the H100 rate is the efficiency curve fitted once to published runs "
            "(incl. the single-node torchtitan Llama 3.1 8B and Megatron-Core's 96-GPU GPT-3 175B H100 figures), "
            "with H100 SXM datasheet constants"
        ),
        "calibration": cal.to_dict(),
        "throughput": {
            "layout": full["layout"],
            "explanation": full["explanation"],
            "mfu": mfu,
            "tokens_per_s": full["tokens_per_s"],
            "tokens_per_s_per_gpu": full["tokens_per_s_per_gpu"],
            "shares": full["shares"],
            "step_time_s": full["step_time_s"],
            "extrapolation_oom_gpus_vs_published": _oom(n_gpus, calibration_max_gpus),
            "extrapolation_oom_gpus_vs_measured": _oom(n_gpus, measured_max_gpus),
        },
        "budget_flops": budget,
        "budget_note": "model FLOPs (PaLM convention) = n x peak x MFU x days; used as C in C = 6ND",
        "goodput": gp,
        "delivered_flops": delivered,
        "tokens_in_days_at_model": model_rate * secs * gp["goodput"],
        "scaling": curve,
        "loss_law": {
            "source": getattr(loss_fit, "source", type(loss_fit).__name__),
            "C": delivered["value"],
            "N_opt": opt["N_opt"],
            "D_opt": opt["D_opt"],
            "loss": opt["loss"],
            "tokens_per_param": opt.get("tokens_per_param"),
            "loss_at_budget_interval": {
                "lo_budget": opt_lo["loss"]["value"],
                "hi_budget": opt_hi["loss"]["value"],
            },
            "extrapolation_oom_C": opt.get("extrapolation_oom"),
            "extrapolation_oom_N": _oom(n_star, n_max),
            "extrapolation_oom_D": _oom(d_star, d_max),
        },
        "time_to_train": time_to_train,
    }


def with_straggler(cal: Calibration, cv: float) -> Calibration:
    """The same calibration with a straggler jitter (e.g. measured across ranks) put in."""
    return Calibration(
        replace(cal.coeffs, straggler_cv=cv),
        [replace(b, straggler_cv=cv) for b in cal.boot],
        cal.loo_log_errors,
        cal.in_sample_log_errors,
    )
