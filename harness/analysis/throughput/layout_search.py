"""Layout search: the fastest feasible TP x PP x DP x ZeRO layout for a model, GPU count and batch.

Every candidate is predicted by the step-time law (``step_model.predict_step``); infeasible
ones are counted by their first reason, and the choice comes with a sentence saying why
(what pure data parallelism would give, GPUs left idle, the batch actually used).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.analysis.throughput.layout import Layout
from harness.analysis.throughput.step_model import Coefficients, StepPrediction, predict_step
from harness.core import flops
from harness.core.hardware_specs import HardwareSpec, as_spec

TP_CHOICES = (1, 2, 4, 8)
MAX_PP = 64
ZERO_CHOICES = (0, 1, 3)
MICRO_CHOICES = (1, 2, 4, 8)
RECOMPUTE_CHOICES = ("none", "selective", "full")


@dataclass
class LayoutChoice:
    best: StepPrediction | None
    n_gpus: int
    global_batch_seqs: int  # requested
    explanation: str
    evaluated: int
    feasible: int
    rejected: dict[str, int]  # kind of the first reason -> count
    pure_dp: StepPrediction | None  # what pure data parallelism gives (or why it cannot)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_gpus": self.n_gpus,
            "global_batch_seqs_requested": self.global_batch_seqs,
            "best": self.best.to_dict() if self.best else None,
            "explanation": self.explanation,
            "evaluated": self.evaluated,
            "feasible": self.feasible,
            "rejected": self.rejected,
            "pure_dp": self.pure_dp.to_dict() if self.pure_dp else None,
        }


def _reason_kind(reason: str) -> str:
    for key in ("memory", "critical batch", "less than one sequence", "TP", "layers", "interleaved", "shard"):
        if key in reason:
            return key
    return reason.split(":")[0]


def on_allocation(pred: StepPrediction, n_allocated: int) -> StepPrediction:
    """Per-GPU figures over all allocated GPUs when the layout leaves some idle (tp*pp*dp < n)."""
    used = pred.layout.world
    if n_allocated == used or not pred.feasible:
        return pred
    f = used / n_allocated
    pred.n_gpus = n_allocated
    pred.tokens_per_s_per_gpu *= f
    pred.mfu *= f
    pred.hfu *= f
    pred.tflops_model_per_gpu *= f
    pred.tflops_hw_per_gpu *= f
    pred.reasons = [
        *pred.reasons,
        f"{n_allocated - used} of {n_allocated} GPUs idle (TP x PP does not divide n)",
    ]
    return pred


def choose_layout(
    s: flops.Shape,
    n_gpus: int,
    global_batch_tokens: float,
    hw: HardwareSpec | Any,
    c: Coefficients,
    *,
    critical_batch_tokens: float | None = None,
    overlap_comm: bool = True,
    grad_bytes: int = 2,
    tp_choices: tuple[int, ...] = TP_CHOICES,
    zero_choices: tuple[int, ...] = ZERO_CHOICES,
) -> LayoutChoice:
    """The fastest feasible layout for a model on n_gpus at a global batch, and why.

    Searches TP in {1,2,4,8} (inside a node), PP over the divisors of the layer count (up
    to 64, interleaved where the layers allow), ZeRO stage, micro-batch and recomputation;
    dp = floor(n / (tp*pp)) (or fewer replicas when that allows interleaving), any
    remainder left idle and counted against per-GPU throughput. The global batch is held
    (strong scaling): each replica gets floor(B/dp) sequences, so more replicas than
    sequences is infeasible (less than one sequence per replica), which is what stops pure
    data parallelism at scale and forces TP/PP groups. ``hw``: a HardwareSpec or a cluster
    preset (dict / DictConfig); ``c``: coefficients (``calibration.calibrated()`` is the fitted set).
    """
    hw = as_spec(hw)
    b_seqs = max(1, int(global_batch_tokens // s.seq_len))
    best: StepPrediction | None = None
    rejected: dict[str, int] = {}
    evaluated = feasible = 0
    pure_dp: StepPrediction | None = None
    pp_choices = [p for p in range(1, min(MAX_PP, s.n_layer) + 1) if s.n_layer % p == 0]
    for tp in tp_choices:
        if tp > hw.devices_per_node:
            continue
        for pp in pp_choices:
            for dp, per_replica in _dp_candidates(n_gpus // (tp * pp), b_seqs, pp):
                for lay in _layouts(s, tp, pp, dp, per_replica, zero_choices, overlap_comm, grad_bytes):
                    pred = predict_step(s, lay, hw, c, critical_batch_tokens=critical_batch_tokens)
                    if per_replica == 0:
                        pred.feasible = False
                        pred.reasons = [
                            f"global batch {b_seqs} sequences < DP{dp} replicas: less than one "
                            "sequence per model replica",
                            *pred.reasons,
                        ]
                    pred = on_allocation(pred, n_gpus)
                    evaluated += 1
                    if (
                        tp == 1
                        and pp == 1
                        and lay.zero_stage == 0
                        and (pure_dp is None or _better(pred, pure_dp))
                    ):
                        pure_dp = pred
                    if not pred.feasible:
                        kind = _reason_kind(pred.reasons[0])
                        rejected[kind] = rejected.get(kind, 0) + 1
                        continue
                    feasible += 1
                    if best is None or pred.tokens_per_s > best.tokens_per_s:
                        best = pred
    explanation = _explain(n_gpus, b_seqs, best, pure_dp, rejected)
    return LayoutChoice(best, n_gpus, b_seqs, explanation, evaluated, feasible, rejected, pure_dp)


def _dp_candidates(dp_max: int, b_seqs: int, pp: int) -> list[tuple[int, int]]:
    """(dp, sequences per replica) pairs worth trying: all the replicas that fit, and fewer
    replicas (idle GPUs) when that makes the per-replica batch a multiple of pp (interleaving)."""
    if dp_max < 1:
        return []
    r0 = b_seqs // dp_max
    out = {(dp_max, r0)}
    if pp > 1:
        r1 = max(pp, -(-max(r0, 1) // pp) * pp)  # next multiple of pp
        dp1 = min(dp_max, b_seqs // r1)
        if dp1 >= 1:
            out.add((dp1, b_seqs // dp1))
    return sorted(out, reverse=True)


def _layouts(
    s: flops.Shape,
    tp: int,
    pp: int,
    dp: int,
    per_replica: int,
    zero_choices: tuple[int, ...],
    overlap_comm: bool,
    grad_bytes: int,
) -> Iterator[Layout]:
    """Every ZeRO stage, micro-batch, interleaving and recomputation for one TP x PP x DP."""
    per_stage = s.n_layer // pp
    for zero in zero_choices:
        if zero and dp == 1:
            continue
        for mb in MICRO_CHOICES:
            if (per_replica and (mb > per_replica or per_replica % mb)) or (not per_replica and mb > 1):
                continue
            m = max(1, per_replica // mb)
            vs = (
                [1] + [v for v in range(2, min(per_stage, 16) + 1) if per_stage % v == 0 and m % pp == 0]
                if pp > 1
                else [1]
            )
            for v in vs:
                for rc in RECOMPUTE_CHOICES:
                    yield Layout(
                        tp=tp,
                        pp=pp,
                        dp=dp,
                        zero_stage=zero,
                        micro_batch=mb,
                        num_micro_batches=m,
                        virtual_stages=v,
                        recompute=rc,
                        sequence_parallel=tp > 1,
                        overlap_comm=overlap_comm,
                        grad_bytes=grad_bytes,
                    )


def _better(a: StepPrediction, b: StepPrediction) -> bool:
    if a.feasible != b.feasible:
        return a.feasible
    if a.feasible:
        return a.tokens_per_s > b.tokens_per_s
    return a.memory.get("total_bytes", math.inf) < b.memory.get("total_bytes", math.inf)


def _explain(
    n: int, b_seqs: int, best: StepPrediction | None, pure_dp: StepPrediction | None, rejected: dict[str, int]
) -> str:
    parts = []
    if pure_dp is None:
        parts.append("pure data parallelism was not evaluated")
    elif not pure_dp.feasible:
        parts.append(f"pure data parallelism (TP1 PP1 DP{n}) is infeasible: {pure_dp.reasons[0]}")
    elif best is not None and best.layout.tp == 1 and best.layout.pp == 1 and best.layout.zero_stage == 0:
        parts.append("pure data parallelism is feasible and fastest")
    elif best is not None:
        parts.append(
            f"pure data parallelism is feasible but slower ({pure_dp.tokens_per_s_per_gpu:.0f} vs "
            f"{best.tokens_per_s_per_gpu:.0f} tokens/s/GPU)"
        )
    if best is None:
        parts.append(
            f"no feasible layout for {n} GPUs at {b_seqs} sequences per step "
            f"(rejections by first reason: {rejected})"
        )
    else:
        lay = best.layout
        parts.append(
            f"assumed layout: {lay.describe()}; {best.tokens_per_step / n:.0f} tokens per GPU per step"
        )
        if lay.global_batch_seqs != b_seqs:
            parts.append(
                f"global batch {lay.global_batch_seqs} sequences (requested {b_seqs}: "
                f"floor(B/dp) per replica)"
            )
        if lay.world != n:
            parts.append(f"{n - lay.world} GPUs idle")
    return "; ".join(parts)
