"""The grey-box step-time law of data, tensor and pipeline parallel training.

    T_step = T_compute                       FLOPs of the slowest pipeline stage / (peak x efficiency)
           + T_bubble = (p-1)/v * T_micro    pipeline fill and drain (interleaved 1F1B)
           + exposed(T_tp) + exposed(T_pp)   tensor-parallel all-reduces, stage-to-stage sends
           + exposed(T_dp)                   gradient all-reduce (ZeRO-3/FSDP: + parameter all-gathers)
           + T_straggler = cv * T * sqrt(2 ln n)

exposed(T) = T when the framework does not overlap that traffic, else max(0, T - overlap x window),
the window being the compute the traffic can hide behind (TP traffic is always exposed). Collective times come from
``harness.core.collectives`` (ring alpha-beta), per tier: a group confined to one node runs on
NVLink; a group spanning nodes runs hierarchically (the op inside the node, then on the
1/k shard across nodes, each GPU on its own NIC), so a DP group with one member per node
sees the NIC bandwidth of one GPU and a group with k members per node k NICs' worth.

Compute is a two-term roofline per micro-batch: hardware FLOPs (``harness.core.flops``:
model FLOPs plus recomputation) at e_mm of the dense peak, plus memory-bound
elementwise traffic (mem_bytes per token, layer and unit of per-GPU width) at the chip's
HBM bandwidth; the second term is what makes narrow layers, plain TP and high
FLOP-per-byte chips less efficient. e_mm and mem_bytes are fitted once to published runs
(``calibration``); this harness's own runs are fitted by ``measured``. The coefficients
are always passed in: ``calibration.calibrated()`` is the fitted set.
Sections: coefficients, compute, communication, prediction. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.analysis.throughput.layout import Feasibility, Layout, check
from harness.core import collectives, flops
from harness.core.hardware_specs import HardwareSpec, as_spec

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


# --------------------------------------------------------------------------- compute


def _stage_share(s: flops.Shape, lay: Layout) -> float:
    """Fraction of a replica's FLOPs that its slowest pipeline stage does: the last stage
    carries the LM head on top of its layers (Megatron splits layers evenly)."""
    total = flops.hardware_flops_per_token(s, lay.recompute)
    head = flops.head_flops_per_token(s)
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
    stage_flops = tokens * flops.hardware_flops_per_token(s, lay.recompute) * _stage_share(s, lay) / lay.tp
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
        return collectives.collective_time(op, size, group, hw.inter_alpha, inter_bw)
    intra_bw = hw.intra_bw * c.intra_bw_eff
    t = collectives.collective_time(op, size, k, hw.intra_alpha, intra_bw) if k > 1 else 0.0
    nodes = math.ceil(group / k)
    if nodes > 1:
        inter_bw = hw.inter_bw * c.inter_bw_eff * hw.nic_effective_fraction
        t += collectives.collective_time(op, size / k, nodes, hw.inter_alpha, inter_bw)
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
    c: Coefficients,
    *,
    critical_batch_tokens: float | None = None,
    enforce_memory: bool = True,
) -> StepPrediction:
    """Predicted step time and throughput of one layout, or the reasons it is infeasible.

    ``hw``: a HardwareSpec or a cluster preset; ``c``: coefficients (``calibration.calibrated()``
    is the set fitted to the published runs).
    ``enforce_memory=False`` still reports the memory verdict but predicts anyway: for
    replaying runs that did happen, where a memory miss is an error of the memory model.
    """
    hw = as_spec(hw)
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
        lay.micro_batch * s.seq_len * flops.hardware_flops_per_token(s, lay.recompute) / (lay.tp * lay.pp)
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
    hw_fpt = flops.hardware_flops_per_token(s, lay.recompute)
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
        hfu=flops.hfu(tps, s, lay.recompute, n, hw.peak_flops),
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
