"""Parallel layouts (TP x PP x DP, ZeRO, micro-batching, recomputation) and their memory per GPU.

A layout is the input of the throughput law; before a step time is predicted the layout
must be feasible: it must fit the device memory, stay within the critical batch, and give
every model replica at least one sequence. An infeasible layout is reported with its
reasons, never predicted.

Memory follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", sec. 4 and Table 2) for activations and Rajbhandari et al. 2020
(ZeRO) for model states: mixed-precision Adam keeps 2 (bf16 weights) + 2 (bf16 grads,
4 where the framework keeps fp32 main grads) + 12 (fp32 master, momentum, variance)
bytes per parameter; ZeRO-1 shards the 12, ZeRO-2 also the grads, ZeRO-3 everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.core import flops

# none | selective (Megatron: the attention core re-runs) | full (every layer's forward re-runs) |
# selective_op (torchtitan's per-op policy: every second matmul and all elementwise ops re-run)
RECOMPUTE = ("none", "selective", "full", "selective_op")
DP_COLLECTIVES = ("auto", "hierarchical", "flat")
ZERO_STAGES = (0, 1, 2, 3)
OPTIMIZER_BYTES_PER_PARAM = 12.0  # fp32 master weights + Adam m + v
WEIGHT_BYTES_PER_PARAM = 2.0  # bf16 working copy
# Kept free of tensors: CUDA context, NCCL buffers, allocator fragmentation. A round
# planning figure (frameworks commonly OOM above ~90% of nominal memory), not a fit.
MEMORY_RESERVE_FRACTION = 0.10
LOGITS_BYTES_PER_ELEMENT = 6.0  # bf16 logits + fp32 copy for the softmax cross-entropy


@dataclass(frozen=True)
class Layout:
    """How one training step is spread over tp * pp * dp devices.

    ``micro_batch`` is in sequences; ``num_micro_batches`` (m) is the gradient-accumulation
    count per replica and step, so the global batch is micro_batch * m * dp sequences.
    The ``overlap_comm`` / ``grad_bytes`` / ``shard_degree`` fields describe the framework
    (what it overlaps, in what precision it reduces gradients, HSDP shard groups): they
    come from a run's configuration, never from fitting.
    """

    tp: int = 1
    pp: int = 1
    dp: int = 1
    zero_stage: int = 0
    micro_batch: int = 1
    num_micro_batches: int = 1
    virtual_stages: int = 1
    recompute: str = "none"
    sequence_parallel: bool = False
    overlap_comm: bool = True  # DP traffic and PP sends overlapped with compute (TP traffic never is)
    grad_bytes: int = 2  # bytes per gradient element in the DP reduction (4 = fp32 main grads)
    shard_degree: int = 0  # ZeRO/FSDP shard group size; 0 = the whole DP group (HSDP when < dp)
    # How DP collectives cross nodes: "hierarchical" (a node's k group members share its k
    # NICs, as NCCL's multi-channel rings do for gradient all-reduces), "flat" (each GPU's
    # traffic only through its own NIC), or "auto": flat for ZeRO-3/FSDP parameter traffic,
    # the only at-scale published evidence (Narayanan et al. 2021's ZeRO-3 collapse) being
    # consistent with flat and not with hierarchical; hierarchical otherwise.
    dp_collective: str = "auto"

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def global_batch_seqs(self) -> int:
        return self.micro_batch * self.num_micro_batches * self.dp

    @property
    def shard(self) -> int:
        return self.shard_degree or self.dp

    def describe(self) -> str:
        z = f" ZeRO-{self.zero_stage}" if self.zero_stage else ""
        if self.zero_stage and self.shard_degree and self.shard_degree < self.dp:
            z += f" (shard {self.shard_degree}, {self.dp // self.shard_degree} replicas)"
        v = f" v{self.virtual_stages}" if self.virtual_stages > 1 else ""
        sp = "+SP" if self.sequence_parallel else ""
        return (
            f"TP{self.tp}{sp} PP{self.pp}{v} DP{self.dp}{z}, micro {self.micro_batch} x {self.num_micro_batches}, "
            f"recompute {self.recompute}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "world": self.world, "global_batch_seqs": self.global_batch_seqs}


@dataclass
class Feasibility:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- memory


def activation_bytes_per_layer(s: flops.Shape, lay: Layout) -> float:
    """Activation bytes one transformer layer keeps for one micro-batch (Korthikanti 2022, Table 2).

    sbh(34 + 5as/h) without parallelism; the 5as/h term is the a x s x s attention
    scores, removed by selective recompute (selective_op is given the same footprint, an
    upper bound: it saves fewer tensors); tensor parallelism divides the parallel part
    (24 + 5as/h) by t and sequence parallelism the rest too; full recomputation keeps only
    the layer input (2sbh, / t under sequence parallelism).
    """
    sbh = float(s.seq_len) * lay.micro_batch * s.d_model
    t = lay.tp
    attn = 0.0 if lay.recompute.startswith("selective") else 5.0 * s.n_head * s.seq_len / s.d_model
    if lay.recompute == "full":
        return 2.0 * sbh / (t if lay.sequence_parallel else 1)
    if lay.sequence_parallel or t == 1:
        return sbh * (34.0 + attn) / t
    return sbh * (10.0 + (24.0 + attn) / t)


def memory_per_gpu(s: flops.Shape, lay: Layout) -> dict[str, float]:
    """Bytes on the most loaded device: the first pipeline stage (embedding + most micro-batches
    in flight) or the last (LM head copy + logits), whichever is larger."""
    t, p = lay.tp, lay.pp
    layers = s.n_layer / p
    layer_params = layers * flops.layer_params(s.d_model, s.mlp_ratio) / t
    embed_params = flops.params_embedding(s) / t  # tied head: Megatron keeps a copy on the last stage
    params = layer_params + embed_params

    shard = lay.shard if lay.zero_stage else 1
    grad = float(lay.grad_bytes)
    w = WEIGHT_BYTES_PER_PARAM / (shard if lay.zero_stage >= 3 else 1)
    g = grad / (shard if lay.zero_stage >= 2 else 1)
    o = OPTIMIZER_BYTES_PER_PARAM / (shard if lay.zero_stage >= 1 else 1)
    states = params * (w + g + o)
    if lay.zero_stage >= 3:  # one layer's full weights are gathered at a time (plus a prefetched one)
        states += 2 * flops.layer_params(s.d_model, s.mlp_ratio) / t * WEIGHT_BYTES_PER_PARAM

    per_layer = activation_bytes_per_layer(s, lay)
    in_flight = min(p, lay.num_micro_batches) if p > 1 else 1
    interleave = 1.0 + (p - 1) / (p * lay.virtual_stages) if (p > 1 and lay.virtual_stages > 1) else 1.0
    act_first = per_layer * layers * in_flight * interleave
    logits = float(s.seq_len) * lay.micro_batch * s.vocab_size * LOGITS_BYTES_PER_ELEMENT / t
    act_last = per_layer * layers + logits
    if p == 1:
        act_first = act_last = per_layer * layers + logits
    activations = max(act_first, act_last)
    return {
        "params_per_gpu": params,
        "model_states_bytes": states,
        "activations_bytes": activations,
        "total_bytes": states + activations,
    }


# --------------------------------------------------------------------------- feasibility


def check(
    s: flops.Shape,
    lay: Layout,
    memory_bytes: float,
    devices_per_node: int,
    *,
    n_gpus: int | None = None,
    global_batch_seqs: int | None = None,
    critical_batch_tokens: float | None = None,
) -> Feasibility:
    """Every hard limit a layout can break, each with a reason that names the numbers."""
    r: list[str] = []
    if lay.recompute not in RECOMPUTE:
        r.append(f"recompute={lay.recompute!r} is not one of {RECOMPUTE}")
    if lay.dp_collective not in DP_COLLECTIVES:
        r.append(f"dp_collective={lay.dp_collective!r} is not one of {DP_COLLECTIVES}")
    if lay.zero_stage not in ZERO_STAGES:
        r.append(f"zero_stage={lay.zero_stage} is not one of {ZERO_STAGES}")
    if min(lay.tp, lay.pp, lay.dp, lay.micro_batch, lay.num_micro_batches, lay.virtual_stages) < 1:
        r.append("tp, pp, dp, micro_batch, num_micro_batches and virtual_stages must all be >= 1")
        return Feasibility(False, r)
    if n_gpus is not None and lay.world != n_gpus:
        r.append(f"tp*pp*dp = {lay.world} is not the GPU count {n_gpus}")
    if lay.tp > devices_per_node:
        r.append(f"TP{lay.tp} exceeds the {devices_per_node} devices of one node (TP stays on NVLink)")
    if s.n_head % lay.tp or s.d_model % lay.tp:
        r.append(f"TP{lay.tp} does not divide {s.n_head} heads / d_model {s.d_model}")
    if s.n_layer % (lay.pp * lay.virtual_stages):
        r.append(f"{s.n_layer} layers do not split into PP{lay.pp} x v{lay.virtual_stages} equal stages")
    if lay.virtual_stages > 1 and lay.num_micro_batches % lay.pp:
        r.append(
            f"interleaved schedule needs micro-batches ({lay.num_micro_batches}) divisible by PP{lay.pp}"
        )
    if lay.zero_stage and lay.shard_degree and lay.dp % lay.shard_degree:
        r.append(f"shard degree {lay.shard_degree} does not divide DP{lay.dp}")
    if global_batch_seqs is not None:
        if global_batch_seqs < lay.dp:
            r.append(
                f"global batch {global_batch_seqs} sequences < DP{lay.dp} replicas: "
                "less than one sequence per model replica"
            )
        elif lay.global_batch_seqs != global_batch_seqs:
            r.append(
                f"micro {lay.micro_batch} x {lay.num_micro_batches} x DP{lay.dp} = {lay.global_batch_seqs} "
                f"is not the global batch {global_batch_seqs}"
            )
    if critical_batch_tokens is not None and lay.global_batch_seqs * s.seq_len > critical_batch_tokens:
        r.append(
            f"global batch {lay.global_batch_seqs * s.seq_len:.3g} tokens exceeds the critical batch "
            f"{critical_batch_tokens:.3g}"
        )
    mem = memory_per_gpu(s, lay)
    usable = memory_bytes * (1.0 - MEMORY_RESERVE_FRACTION)
    mem["usable_bytes"] = usable
    if mem["total_bytes"] > usable:
        r.append(
            f"memory {mem['total_bytes'] / 1e9:.1f} GB per GPU (states {mem['model_states_bytes'] / 1e9:.1f}"
            f" + activations {mem['activations_bytes'] / 1e9:.1f}) > {usable / 1e9:.1f} GB usable"
        )
    return Feasibility(not r, r, mem)
