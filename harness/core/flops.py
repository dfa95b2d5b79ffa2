"""Parameter counts, model and hardware FLOPs per token, 6ND and MFU: the one place each is defined.

Plain Python on purpose: the trainer, the sweep planner and the 100k-GPU extrapolation
all use these, and the analysis must not need torch for them.

Architecture counted (matches ``harness.worker.model.GPT``): GPT-2-style pre-norm decoder,
learned positional embeddings, LayerNorm with bias, biased linear layers, 4x GELU MLP,
LM head tied to the token embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

# 6ND and its inverse take scalars or, elementwise, arrays (a whole sweep's N and D at once).
Num = TypeVar("Num", float, "np.ndarray")


@dataclass(frozen=True)
class Shape:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int
    mlp_ratio: float = 4  # fractional for gated (SwiGLU) MLPs expressed as an equivalent width


def layer_params(d_model: int, mlp_ratio: float = 4) -> int:
    """One transformer block: attention (qkv + proj), MLP, two LayerNorms, all with biases."""
    d, h = d_model, mlp_ratio * d_model
    attn = (d * 3 * d + 3 * d) + (d * d + d)
    mlp = (d * h + h) + (h * d + d)
    norms = 2 * (2 * d)
    return round(attn + mlp + norms)


def params_nonembedding(s: Shape) -> int:
    """Kaplan's N: every parameter except token and position embeddings (final LayerNorm included)."""
    return s.n_layer * layer_params(s.d_model, s.mlp_ratio) + 2 * s.d_model


def params_embedding(s: Shape) -> int:
    """Token embedding (tied with the LM head, so counted once) plus learned positions."""
    return s.vocab_size * s.d_model + s.seq_len * s.d_model


def params_total(s: Shape) -> int:
    return params_nonembedding(s) + params_embedding(s)


def flops_per_token(s: Shape) -> float:
    """Model FLOPs per trained token, forward + backward (PaLM appendix B convention).

    6 N_nonembed for the weight matmuls, 6 d V for the LM head, and 12 L d T for the
    attention score and value matmuls over the full T x T square (no causal halving).
    Recomputation is not counted (that would be hardware FLOPs).
    """
    return 6.0 * params_nonembedding(s) + head_flops_per_token(s) + 12.0 * s.n_layer * s.d_model * s.seq_len


def head_flops_per_token(s: Shape) -> float:
    """The LM head's share of ``flops_per_token``: 6 d V (forward + backward)."""
    return 6.0 * s.d_model * s.vocab_size


def recompute_flops_per_token(s: Shape, recompute: str) -> float:
    """Extra (hardware) FLOPs per token that activation recomputation adds to the model FLOPs.

    full: every transformer layer's forward runs twice (the LM head is not recomputed),
    so + 1/3 of the layers' fwd+bwd FLOPs (Narayanan et al. 2021 count this in their
    "% of peak"). selective: only the attention core (QK^T, softmax, AV) re-runs:
    + 4 * n_layer * d_model * seq_len (a third of the 12 L d T attention FLOPs).
    selective_op (torchtitan's op-level policy, "save all compute ops except every second
    mm"): half of the layers' forward weight matmuls re-run, + N_nonembed.
    """
    if recompute == "full":
        return (flops_per_token(s) - head_flops_per_token(s)) / 3.0
    if recompute == "selective":
        return 4.0 * s.n_layer * s.d_model * s.seq_len
    if recompute == "selective_op":
        return float(params_nonembedding(s))
    return 0.0


def hardware_flops_per_token(s: Shape, recompute: str = "none") -> float:
    """FLOPs the devices execute per trained token: the model FLOPs plus recomputation."""
    return flops_per_token(s) + recompute_flops_per_token(s, recompute)


def training_flops_6nd(n_params: Num, tokens: Num) -> Num:
    """C = 6 N D, the compute axis of the loss laws (state which N is used beside it)."""
    return 6.0 * n_params * tokens


def tokens_from_6nd(compute: Num, n_params: Num) -> Num:
    """D = C / (6 N): the tokens that C = 6 N D spends on a model of N parameters."""
    return compute / (6.0 * n_params)


def model_flops_per_s(tokens_per_s: float, s: Shape) -> float:
    return tokens_per_s * flops_per_token(s)


def mfu(tokens_per_s: float, s: Shape, devices: int, peak_flops_per_device: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the devices' dense peak."""
    if devices <= 0 or peak_flops_per_device <= 0:
        raise ValueError(
            f"mfu needs devices > 0 and peak > 0, got devices={devices}, peak={peak_flops_per_device}"
        )
    return model_flops_per_s(tokens_per_s, s) / (devices * peak_flops_per_device)


def hfu(tokens_per_s: float, s: Shape, recompute: str, devices: int, peak_flops_per_device: float) -> float:
    """Hardware FLOPs utilisation: MFU with recomputation counted (``hardware_flops_per_token``)."""
    return tokens_per_s * hardware_flops_per_token(s, recompute) / (devices * peak_flops_per_device)


def scaling_efficiency(x_n: float, n: int, x_ref: float, n_ref: int) -> float:
    """Scaling efficiency (X(n)/n) / (X(n0)/n0) with X = tokens/s; weak or strong depending on what was held."""
    return (x_n / n) / (x_ref / n_ref)
