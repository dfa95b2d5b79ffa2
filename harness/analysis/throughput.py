"""The throughput law: a grey-box step-time model of data, tensor and pipeline parallel training.

    T_step = T_compute                       FLOPs of the slowest pipeline stage / (peak x efficiency)
           + T_bubble = (p-1)/v * T_micro    pipeline fill and drain (interleaved 1F1B)
           + exposed(T_tp) + exposed(T_pp)   tensor-parallel all-reduces, stage-to-stage sends
           + exposed(T_dp)                   gradient all-reduce (ZeRO-3/FSDP: + parameter all-gathers)
           + T_straggler = cv * T * sqrt(2 ln n)

exposed(T) = T when the framework does not overlap that traffic, else max(0, T - overlap x window),
the window being the compute the traffic can hide behind (TP traffic is always exposed). Collective times come from
``harness.analysis.commmodel`` (ring alpha-beta), per tier: a group confined to one node runs on
NVLink; a group spanning nodes runs hierarchically (the op inside the node, then on the
1/k shard across nodes, each GPU on its own NIC), so a DP group with one member per node
sees the NIC bandwidth of one GPU and a group with k members per node k NICs' worth.

Compute is a two-term roofline per micro-batch: hardware FLOPs (model FLOPs from
``harness.core.flops`` plus recomputation) at e_mm of the dense peak, plus memory-bound
elementwise traffic (mem_bytes per token, layer and unit of per-GPU width) at the chip's
HBM bandwidth; the second term is what makes narrow layers, plain TP and high
FLOP-per-byte chips less efficient. e_mm and mem_bytes are fitted once to published runs
(``harness.analysis.published``); this harness's own runs are fitted by ``fit_measured``.
Sections: FLOPs, communication, prediction, layout search, measured runs.
Torch-free: the run record is the contract.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.analysis import commmodel
from harness.analysis.layout import Feasibility, Layout, check
from harness.core import flops, hardware_specs
from harness.core.hardware_specs import HardwareSpec

ACT_BYTES = 2.0  # bf16 activations on the wire (TP all-reduces, PP sends)


@dataclass(frozen=True)
class Coefficients:
    """The fitted efficiencies: one set for every case and GPU type (never tuned per case)."""

    e_mm: float = 0.75  # fraction of the dense peak the matmuls reach
    mem_bytes: float = (
        0.0  # memory-bound (elementwise) bytes per token, per layer, per unit of d_model on a GPU
    )
    overlap: float = 1.0  # fraction of the overlap window that hides communication (when overlapped)
    straggler_cv: float = 0.0  # per-rank step-time jitter, relative (extreme of n: cv*sqrt(2 ln n))
    intra_bw_eff: float = 0.75  # achieved NCCL busbw / nominal NVLink (nccl-tests: ~230 of 300 GB/s on A100)
    inter_bw_eff: float = 0.80  # achieved busbw / nominal NIC line rate (IB/RoCE, nccl-tests class)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT = Coefficients()  # the fit's starting point and fixed values, not a calibration


@functools.lru_cache(maxsize=1)
def calibrated() -> Coefficients:
    """The one coefficient set fitted to the published runs (what predictions use by default)."""
    from harness.analysis import published  # published imports this module

    return published.fit_coefficients([k for k in published.load_cases() if k.in_target])


def _hw(cluster: HardwareSpec | Any) -> HardwareSpec:
    return cluster if isinstance(cluster, HardwareSpec) else hardware_specs.from_cluster(cluster)


# --------------------------------------------------------------------------- FLOPs


def recompute_flops_per_token(s: flops.Shape, recompute: str) -> float:
    """Extra (hardware) FLOPs per token that activation recomputation adds to the model FLOPs.

    full: every transformer layer's forward runs twice (the LM head is not recomputed),
    so + 1/3 of the layers' fwd+bwd FLOPs (Narayanan et al. 2021 count this in their
    "% of peak"). selective: only the attention core (QK^T, softmax, AV) re-runs:
    + 4 * n_layer * d_model * seq_len (a third of the 12 L d T attention FLOPs).
    selective_op (torchtitan's op-level policy, "save all compute ops except every second
    mm"): half of the layers' forward weight matmuls re-run, + N_nonembed.
    """
    if recompute == "full":
        return (flops.flops_per_token(s) - 6.0 * s.d_model * s.vocab_size) / 3.0
    if recompute == "selective":
        return 4.0 * s.n_layer * s.d_model * s.seq_len
    if recompute == "selective_op":
        return float(flops.params_nonembedding(s))
    return 0.0


def hardware_flops_per_token(s: flops.Shape, recompute: str) -> float:
    return flops.flops_per_token(s) + recompute_flops_per_token(s, recompute)


def _stage_share(s: flops.Shape, lay: Layout) -> float:
    """Fraction of a replica's FLOPs that its slowest pipeline stage does: the last stage
    carries the LM head on top of its layers (Megatron splits layers evenly)."""
    total = hardware_flops_per_token(s, lay.recompute)
    head = 6.0 * s.d_model * s.vocab_size
    layers = total - head
    if lay.pp == 1:
        return 1.0
    return (layers / lay.pp + head) / total


def memory_width(s: flops.Shape, lay: Layout) -> float:
    """Per-GPU width of the elementwise work (LayerNorm, GELU, dropout, residuals, softmax).

    With sequence parallelism (or no TP) every GPU touches h/t per token; plain TP
    replicates the LayerNorm/dropout regions, leaving h(10 + 24/t)/34 (Korthikanti 2022's
    activation split, used as the proxy for elementwise traffic).
    """
    t = lay.tp
    if lay.sequence_parallel or t == 1:
        return s.d_model / t
    return s.d_model * (10.0 + 24.0 / t) / 34.0


def micro_batch_compute_time(s: flops.Shape, lay: Layout, hw: HardwareSpec, c: Coefficients) -> float:
    """Seconds of one micro-batch on the slowest stage: matmul FLOPs at e_mm of the dense peak,
    plus memory-bound elementwise traffic at the HBM bandwidth (a two-term roofline: the
    second term is why small widths, plain TP and high FLOP/byte chips lose efficiency)."""
    tokens = lay.micro_batch * s.seq_len
    stage_flops = tokens * hardware_flops_per_token(s, lay.recompute) * _stage_share(s, lay) / lay.tp
    t = stage_flops / (hw.peak_flops * c.e_mm)
    if c.mem_bytes > 0 and hw.hbm_bw > 0:
        rerun = 4.0 / 3.0 if lay.recompute in ("full", "selective_op") else 1.0  # elementwise forward re-runs
        t += tokens * (s.n_layer / lay.pp) * c.mem_bytes * memory_width(s, lay) * rerun / hw.hbm_bw
    return t


# --------------------------------------------------------------------------- communication


def _members_per_node(group: int, stride: int, devices_per_node: int) -> int:
    """Members of a rank group (ranks stride apart) that share one node."""
    if stride >= devices_per_node:
        return 1
    return max(1, min(group, devices_per_node // stride))


def hierarchical_time(
    op: str, size: float, group: int, stride: int, hw: HardwareSpec, c: Coefficients, flat: bool = False
) -> float:
    """One collective of nccl-tests size S over a group whose ranks are stride apart.

    Inside a node: the ring on NVLink. Across nodes: the same op within each node over
    its k members, then on the 1/k shard across nodes, each GPU on its own NIC. ``flat``:
    a single ring over all members whose every byte crosses the GPU's own NIC.
    """
    if group <= 1 or size <= 0:
        return 0.0
    k = _members_per_node(group, stride, hw.devices_per_node)
    if flat and k < group:
        inter_bw = hw.inter_bw * c.inter_bw_eff * hw.nic_effective_fraction
        return commmodel.collective_time(op, size, group, hw.inter_alpha, inter_bw)
    intra_bw = hw.intra_bw * c.intra_bw_eff
    t = commmodel.collective_time(op, size, k, hw.intra_alpha, intra_bw) if k > 1 else 0.0
    nodes = math.ceil(group / k)
    if nodes > 1:
        inter_bw = hw.inter_bw * c.inter_bw_eff * hw.nic_effective_fraction
        t += commmodel.collective_time(op, size / k, nodes, hw.inter_alpha, inter_bw)
    return t


def params_per_gpu(s: flops.Shape, lay: Layout) -> float:
    """Parameters one GPU holds before ZeRO sharding: its stage's layers (and the embedding) over TP."""
    layers = s.n_layer / lay.pp * flops.layer_params(s.d_model, s.mlp_ratio)
    return (layers + flops.params_embedding(s)) / lay.tp


def dp_comm_time(s: flops.Shape, lay: Layout, hw: HardwareSpec, c: Coefficients) -> float:
    """Seconds of data-parallel traffic per step (Megatron rank order: TP fastest, then DP, then PP).

    ZeRO 0-2: one gradient all-reduce (ZeRO-1/2's reduce-scatter + all-gather move the same
    bytes). ZeRO-3/FSDP: every micro-batch all-gathers the parameters for forward and for
    backward (again for the recomputed forward) and reduce-scatters the gradients, ~1.5x
    the all-reduce bytes; with HSDP the shards are then all-reduced across replica groups.
    """
    n_par = params_per_gpu(s, lay)
    grads = n_par * lay.grad_bytes
    flat = lay.dp_collective == "flat" or (lay.dp_collective == "auto" and lay.zero_stage >= 3)
    if lay.zero_stage < 3:
        return hierarchical_time("all_reduce", grads, lay.dp, lay.tp, hw, c, flat)
    shard = lay.shard
    gathers = 3 if lay.recompute == "full" else 2
    per_micro = gathers * hierarchical_time("all_gather", n_par * 2.0, shard, lay.tp, hw, c, flat)
    per_micro += hierarchical_time("reduce_scatter", grads, shard, lay.tp, hw, c, flat)
    t = lay.num_micro_batches * per_micro
    if shard < lay.dp:
        t += hierarchical_time("all_reduce", grads / shard, lay.dp // shard, lay.tp * shard, hw, c, flat)
    return t


def tp_comm_time(s: flops.Shape, lay: Layout, hw: HardwareSpec, c: Coefficients) -> float:
    """Megatron TP: 4 all-reduces of b*s*h activations per layer and micro-batch (2 forward,
    2 backward; + 2 for a recomputed forward); sequence parallelism swaps each for an
    all-gather + reduce-scatter pair of the same bus bytes."""
    if lay.tp == 1:
        return 0.0
    size = lay.micro_batch * s.seq_len * s.d_model * ACT_BYTES
    n_ar = 6 if lay.recompute == "full" else 4
    one = hierarchical_time("all_reduce", size, lay.tp, 1, hw, c)
    return lay.num_micro_batches * (s.n_layer / lay.pp) * n_ar * one


def pp_comm_time(s: flops.Shape, lay: Layout, hw: HardwareSpec, c: Coefficients) -> float:
    """Stage-to-stage sends: activations forward and gradients backward per micro-batch and
    virtual stage, b*s*h/t bytes each (Megatron's scatter-gather split over the TP ranks)."""
    if lay.pp == 1:
        return 0.0
    size = lay.micro_batch * s.seq_len * s.d_model * ACT_BYTES / lay.tp
    same_node = lay.tp * lay.dp < hw.devices_per_node
    if same_node:
        one = hw.intra_alpha + size / (hw.intra_bw * c.intra_bw_eff)
    else:
        one = hw.inter_alpha + size / (hw.inter_bw * c.inter_bw_eff * hw.nic_effective_fraction)
    return lay.num_micro_batches * 2 * lay.virtual_stages * one


# --------------------------------------------------------------------------- prediction


@dataclass
class StepPrediction:
    feasible: bool
    reasons: list[str]
    layout: Layout
    n_gpus: int
    memory: dict[str, float] = field(default_factory=dict)
    t_compute: float = math.nan
    t_bubble: float = math.nan
    t_tp: float = math.nan
    t_pp: float = math.nan
    t_dp: float = math.nan
    exposed_tp: float = math.nan
    exposed_pp: float = math.nan
    exposed_dp: float = math.nan
    t_straggler: float = math.nan
    t_step: float = math.nan
    efficiency: float = math.nan
    tokens_per_step: float = math.nan
    tokens_per_s: float = math.nan
    tokens_per_s_per_gpu: float = math.nan
    mfu: float = math.nan
    hfu: float = math.nan
    tflops_model_per_gpu: float = math.nan
    tflops_hw_per_gpu: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layout"] = self.layout.to_dict()
        d["layout_text"] = self.layout.describe()
        return d


def predict_step(
    s: flops.Shape,
    lay: Layout,
    hw: HardwareSpec | Any,
    c: Coefficients | None = None,
    *,
    critical_batch_tokens: float | None = None,
    enforce_memory: bool = True,
) -> StepPrediction:
    """Predicted step time and throughput of one layout, or the reasons it is infeasible.

    ``hw``: a HardwareSpec or a cluster preset; ``c``: coefficients (default: ``calibrated()``).
    ``enforce_memory=False`` still reports the memory verdict but predicts anyway: for
    replaying runs that did happen, where a memory miss is an error of the memory model.
    """
    hw, c = _hw(hw), (calibrated() if c is None else c)
    feas: Feasibility = check(
        s, lay, hw.memory_bytes, hw.devices_per_node, critical_batch_tokens=critical_batch_tokens
    )
    blocking = [r for r in feas.reasons if enforce_memory or not r.startswith("memory")]
    if blocking:
        return StepPrediction(
            feasible=False, reasons=feas.reasons, layout=lay, n_gpus=lay.world, memory=feas.memory
        )

    m = lay.num_micro_batches
    t_micro = micro_batch_compute_time(s, lay, hw, c)
    flops_gpu_micro = (
        lay.micro_batch * s.seq_len * hardware_flops_per_token(s, lay.recompute) / (lay.tp * lay.pp)
    )
    e = flops_gpu_micro / (hw.peak_flops * t_micro)  # achieved fraction of peak while computing
    t_compute = m * t_micro
    t_bubble = (lay.pp - 1) / lay.virtual_stages * t_micro

    t_tp, t_pp, t_dp = tp_comm_time(s, lay, hw, c), pp_comm_time(s, lay, hw, c), dp_comm_time(s, lay, hw, c)
    # TP all-reduces sit between the matmuls that need their results: on the critical path
    # (the design's "+ T_tp"), even where a framework pipelines them in chunks.
    exposed_tp = t_tp
    exposed_dp, exposed_pp = t_dp, t_pp
    if lay.overlap_comm:
        exposed_dp = max(0.0, t_dp - c.overlap * _dp_window(lay, t_micro, t_compute))
        exposed_pp = max(0.0, t_pp - c.overlap * t_compute)
    n = lay.world
    t_strag = c.straggler_cv * (t_compute + t_bubble) * math.sqrt(2.0 * math.log(n)) if n > 1 else 0.0
    t_step = t_compute + t_bubble + exposed_tp + exposed_pp + exposed_dp + t_strag

    tokens = lay.global_batch_seqs * s.seq_len
    tps = tokens / t_step
    hw_fpt = hardware_flops_per_token(s, lay.recompute)
    return StepPrediction(
        feasible=True,
        reasons=feas.reasons,
        layout=lay,
        n_gpus=n,
        memory=feas.memory,
        t_compute=t_compute,
        t_bubble=t_bubble,
        t_tp=t_tp,
        t_pp=t_pp,
        t_dp=t_dp,
        exposed_tp=exposed_tp,
        exposed_pp=exposed_pp,
        exposed_dp=exposed_dp,
        t_straggler=t_strag,
        t_step=t_step,
        efficiency=e,
        tokens_per_step=tokens,
        tokens_per_s=tps,
        tokens_per_s_per_gpu=tps / n,
        mfu=flops.mfu(tps, s, n, hw.peak_flops),
        hfu=tps * hw_fpt / (n * hw.peak_flops),
        tflops_model_per_gpu=tps * flops.flops_per_token(s) / n / 1e12,
        tflops_hw_per_gpu=tps * hw_fpt / n / 1e12,
    )


def _dp_window(lay: Layout, t_micro: float, t_compute: float) -> float:
    """Compute that DP traffic can hide behind when the framework overlaps it.

    Gradients are final only in the last micro-batch's backward, so a gradient all-reduce
    hides behind that alone (on the first stage, which finishes last, the pipeline drain
    does not help). ZeRO-1/2 split it into a reduce-scatter there and a parameter
    all-gather behind the next step's first forward; ZeRO-3 prefetches its gathers under
    all of the compute.
    """
    if lay.zero_stage >= 3:
        return t_compute
    if lay.zero_stage >= 1:
        return t_micro
    return (0.75 if lay.recompute == "full" else 2.0 / 3.0) * t_micro


# --------------------------------------------------------------------------- layout search

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
    c: Coefficients | None = None,
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
    preset (dict / DictConfig); ``c``: coefficients (default: ``calibrated()``).
    """
    hw, c = _hw(hw), (calibrated() if c is None else c)
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
):
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


# --------------------------------------------------------------------------- measured runs

MEASURED_PARAMS = ("rate", "overlap", "straggler_cv", "alpha", "busbw")


@dataclass
class MeasuredFit:
    """Coefficients of the step-time law fitted to this harness's own (data-parallel) runs.

    T(n) = c/R + max(0, T_dp(n) - overlap * (2/3) c/R) + cv * c/R * sqrt(2 ln n),
    c = tokens per device per step x FLOPs per token, T_dp = ring all-reduce of the
    gradients (alpha, busbw of the one tier the runs used: fit single-node and multi-node
    runs separately).
    """

    params: dict[str, float]
    boot: np.ndarray  # (n_ok, 5) in MEASURED_PARAMS order
    n_points: int
    rel_rmse: float
    grad_bytes: float
    comm_source: str
    world_sizes: list[int]

    def predict(
        self,
        n: Any,
        tokens_per_device: Any,
        flops_per_token: Any,
        n_params: Any,
        q: tuple[float, float] = (0.05, 0.95),
    ) -> dict[str, np.ndarray]:
        """Step time (s) with a bootstrap interval that also carries the fit's residual scatter."""
        x = _measured_inputs(n, tokens_per_device, flops_per_token, n_params, self.grad_bytes)
        point = _measured_model(np.array([self.params[k] for k in MEASURED_PARAMS]), *x)
        out = {"value": point}
        if len(self.boot):
            draws = np.array([_measured_model(b, *x) for b in self.boot])
            rng = np.random.default_rng(0)
            draws = draws * np.exp(rng.normal(0.0, self.rel_rmse, draws.shape))
            out["lo"], out["hi"] = np.quantile(draws, q[0], axis=0), np.quantile(draws, q[1], axis=0)
        return out

    def to_dict(self) -> dict[str, Any]:
        ci = {}
        for i, k in enumerate(MEASURED_PARAMS):
            col = self.boot[:, i] if len(self.boot) else np.array([self.params[k]])
            ci[k] = [float(np.quantile(col, 0.05)), float(np.quantile(col, 0.95))]
        return {
            "form": "T = c/R + max(0, T_dp - overlap*(2/3)c/R) + cv*(c/R)*sqrt(2 ln n)",
            "params": self.params,
            "intervals_90": ci,
            "n_points": self.n_points,
            "rel_rmse": self.rel_rmse,
            "comm_source": self.comm_source,
            "world_sizes": self.world_sizes,
            "n_bootstrap_ok": len(self.boot),
        }


def _grad_bytes(d) -> np.ndarray:
    """Bytes per gradient element each run reduced: DDP keeps fp32 parameters (so fp32
    gradients, autocast or not); DeepSpeed in bf16/fp16 reduces half-precision gradients."""
    eng, dt = d.get("engine"), d.get("dtype")
    out = np.full(len(d), 4.0)
    if eng is not None and dt is not None:
        half = (eng.to_numpy() == "deepspeed") & np.isin(dt.to_numpy(), ["bf16", "fp16"])
        out[half] = 2.0
    return out


def _measured_inputs(n, tok, fpt, npar, grad_bytes):
    n = np.asarray(n, float)
    work = np.asarray(tok, float) * np.asarray(fpt, float)
    nbytes = np.asarray(npar, float) * grad_bytes
    steps = np.array([commmodel.latency_steps("all_reduce", int(k)) for k in np.atleast_1d(n)], float)
    factor = np.array([commmodel.bus_factor("all_reduce", int(k)) for k in np.atleast_1d(n)], float)
    return n, work, nbytes, steps.reshape(n.shape), factor.reshape(n.shape)


def _measured_model(p: np.ndarray, n, work, nbytes, steps, factor) -> np.ndarray:
    rate, overlap, cv, alpha, busbw = p
    tc = work / rate
    tdp = steps * alpha + factor * nbytes / busbw
    strag = cv * tc * np.sqrt(2.0 * np.log(np.maximum(n, 1.0)))
    return tc + np.maximum(0.0, tdp - overlap * (2.0 / 3.0) * tc) + strag


def _fit_measured_once(x, t, comm, fixed_comm: tuple[float, float] | None, p0: np.ndarray) -> np.ndarray:
    from scipy.optimize import least_squares

    n, work, nbytes, steps, factor = x

    # Parameters in log space where they are scales (rate, alpha, busbw); overlap, cv bounded.
    def unpack(z):
        rate, ov, cv = math.exp(z[0]), z[1], z[2]
        alpha, busbw = fixed_comm if fixed_comm else (math.exp(z[3]), math.exp(z[4]))
        return np.array([rate, ov, cv, alpha, busbw])

    def resid(z):
        p = unpack(z)
        r = np.log(_measured_model(p, *x)) - np.log(t)
        if comm is not None and fixed_comm is None:
            ok = np.isfinite(comm) & (comm > 0) & (n > 1)
            if ok.any():
                tdp = steps[ok] * p[3] + factor[ok] * nbytes[ok] / p[4]
                r = np.concatenate([r, np.log(tdp) - np.log(comm[ok])])
        return r

    # Log-space bounds keep scales physical (and exp() finite) where the data cannot pin them.
    z0 = [math.log(p0[0]), p0[1], p0[2]]
    lo, hi = [math.log(1e3), 0.0, 0.0], [math.log(1e18), 1.0, 1.0]
    if fixed_comm is None:
        z0 += [math.log(p0[3]), math.log(p0[4])]
        lo += [math.log(1e-9), math.log(1e3)]
        hi += [math.log(10.0), math.log(1e13)]
    z0 = list(np.clip(z0, lo, hi))
    sol = least_squares(
        resid, np.array(z0), bounds=(lo, hi), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12
    )
    return unpack(sol.x)


def fit_measured(
    df,
    comm_df=None,
    *,
    grad_bytes: float | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> MeasuredFit:
    """Fit the step-time law to measured runs (``harness.core.records.records_table``).

    Needs columns world_size, tokens_per_device_per_step, flops_per_token, N_total (or N)
    and step_time_s; comm_time_s (measured gradient all-reduce time) pins alpha and busbw
    when present, and a commbench table (``commmodel.load_commbench``) fixes them outright.
    Case bootstrap (runs resampled) for intervals.
    """
    need = ["world_size", "tokens_per_device_per_step", "flops_per_token", "step_time_s"]
    d = df.dropna(subset=need)
    d = d[d["step_time_s"] > 0]
    if len(d) < 4 or d["world_size"].nunique() < 2:
        raise ValueError(
            f"need >= 4 runs over >= 2 world sizes with step times to fit the throughput law; "
            f"got {len(d)} runs, world sizes {sorted(d['world_size'].unique().tolist())}"
        )
    npar_col = "N_total" if "N_total" in d and d["N_total"].notna().all() else "N"
    gb = _grad_bytes(d) if grad_bytes is None else np.full(len(d), float(grad_bytes))
    x = _measured_inputs(
        d["world_size"].to_numpy(),
        d["tokens_per_device_per_step"].to_numpy(),
        d["flops_per_token"].to_numpy(),
        d[npar_col].to_numpy(),
        gb,
    )
    t = d["step_time_s"].to_numpy(float)
    comm = d["comm_time_s"].to_numpy(float) if "comm_time_s" in d else None

    fixed = None
    source = "fitted from step times"
    if comm_df is not None and len(comm_df):
        try:
            ab = commmodel.fit_alpha_beta(comm_df, "all_reduce", n_bootstrap=0)
            fixed = (ab["alpha_s"], ab["busbw_Bps"])
            source = f"commbench all_reduce fit ({ab['tier']}, {ab['n_points']} points)"
        except ValueError:
            fixed = None
    if fixed is None and comm is not None and np.isfinite(comm[x[0] > 1]).any():
        source = "fitted from step times and measured comm times"

    one = x[0] == x[0].min()
    rate0 = float(np.median(x[1][one] / t[one]))
    p0 = np.array([rate0, 0.5, 0.01, 1e-5, 1e9])
    p = _fit_measured_once(x, t, comm, fixed, p0)
    pred = _measured_model(p, *x)
    rel_rmse = float(np.sqrt(np.mean((np.log(pred) - np.log(t)) ** 2)))

    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(t), len(t))
        if len(np.unique(x[0][idx])) < 2:
            continue
        xi = tuple(a[idx] for a in x)
        try:
            boot.append(_fit_measured_once(xi, t[idx], None if comm is None else comm[idx], fixed, p))
        except (ValueError, FloatingPointError, OverflowError):
            continue
    return MeasuredFit(
        dict(zip(MEASURED_PARAMS, map(float, p), strict=True)),
        np.array(boot) if boot else np.zeros((0, 5)),
        len(t),
        rel_rmse,
        float(np.median(gb)),
        source,
        sorted(int(k) for k in np.unique(x[0])),
    )


def leave_largest_out(df, *, n_bootstrap: int = 100, seed: int = 0) -> dict[str, Any]:
    """Fit the grey-box law and the USL on runs below the largest world size; predict the largest.

    The USL is fitted per weak-scaling series (same model and tokens per device); the
    grey-box law on all smaller runs at once. Errors are (predicted - measured)/measured of
    tokens/s at the held-out world size.
    """
    from harness.analysis import usl

    d = df.dropna(subset=["world_size", "step_time_s", "tokens_per_device_per_step", "flops_per_token"])
    n_max = int(d["world_size"].max())
    train = d[d["world_size"] < n_max]
    out: dict[str, Any] = {"held_out_world_size": n_max, "rows": []}
    try:
        gf = fit_measured(train, n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
        out["greybox_fit_failed"] = str(e)
        gf = None
    npar_col = "N_total" if "N_total" in d and d["N_total"].notna().all() else "N"
    for key, series in d.groupby(["model", "tokens_per_device_per_step"], dropna=False):
        held = series[series["world_size"] == n_max]
        small = series[series["world_size"] < n_max]
        if held.empty:
            continue
        x_meas = (
            float(held["tokens_per_s"].median())
            if "tokens_per_s" in held
            else float(held["tokens_per_device_per_step"].iloc[0] * n_max / held["step_time_s"].median())
        )
        row: dict[str, Any] = {
            "model": key[0],
            "tokens_per_device_per_step": key[1],
            "measured_tokens_per_s": x_meas,
        }
        if gf is not None:
            t_pred = gf.predict(n_max, key[1], held["flops_per_token"].iloc[0], held[npar_col].iloc[0])
            x_pred = key[1] * n_max / float(np.squeeze(t_pred["value"]))
            row["greybox_tokens_per_s"] = x_pred
            row["greybox_error"] = x_pred / x_meas - 1.0
        per_n = small.groupby("world_size")["tokens_per_s"].median() if "tokens_per_s" in small else None
        if per_n is not None and len(per_n) >= 3:
            try:
                u = usl.fit_usl(per_n.index.to_numpy(), per_n.to_numpy(), n_bootstrap=0)
                row["usl_tokens_per_s"] = float(u.predict(n_max))
                row["usl_error"] = row["usl_tokens_per_s"] / x_meas - 1.0
            except ValueError as e:
                row["usl_note"] = str(e)
        else:
            row["usl_note"] = "fewer than 3 smaller world sizes in this series"
        out["rows"].append(row)
    for k in ("greybox_error", "usl_error"):
        errs = [abs(r[k]) for r in out["rows"] if k in r]
        out[f"median_abs_{k}"] = float(np.median(errs)) if errs else None
    return out
