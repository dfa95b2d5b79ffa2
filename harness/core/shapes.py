"""Model shapes: the one place a shape is built, from a model preset or from a target size.

Every consumer (trainer, sweep, planner, extrapolation) gets its ``Shape`` from here, and counts
its parameters and FLOPs with ``harness.core.flops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.core.flops import Shape, params_nonembedding


def from_model(model: Any, seq_len: int) -> Shape:
    """The shape of a model preset (``cfg.model`` or its YAML) at a sequence length."""
    return Shape(
        int(model.n_layer),
        int(model.d_model),
        int(model.n_head),
        int(model.vocab_size),
        int(seq_len),
        int(model.get("mlp_ratio", 4)),
    )


def of_config(cfg: Any) -> Shape:
    """The shape a resolved run config trains."""
    return from_model(cfg.model, cfg.train.seq_len)


@dataclass(frozen=True)
class Family:
    """GPT shapes of any size: n_layer from a fixed aspect ratio d_model / n_layer, then d_model
    chosen on a grid (a multiple of max(8, 2^floor(log2(d/8))): within ~12% of the ideal width,
    and a power-of-two multiple at scale) to hit the target non-embedding N; n_head is the
    divisor of d_model nearest d_model / head_dim. Kaplan et al. 2020 (Sec. 3.1, Fig. 5) found
    loss within a few percent over aspect ratios 20-200, so one ratio per family is enough."""

    aspect: float = 64.0
    head_dim: int = 64
    vocab_size: int = 256
    seq_len: int = 128
    mlp_ratio: int = 4
    min_layers: int = 1

    def _shape(self, n_layer: int, d_model: int) -> Shape:
        h = _nearest_divisor(d_model, d_model / self.head_dim)
        return Shape(n_layer, d_model, h, self.vocab_size, self.seq_len, self.mlp_ratio)

    def shape(self, n_target: float) -> Shape:
        if not n_target > 0:
            raise ValueError(f"target size {n_target!r}; allowed: > 0")
        per = 2 * (2 + self.mlp_ratio)  # ~12 d^2 per layer for the 4x MLP
        n_layer = max(self.min_layers, round((n_target / (per * self.aspect**2)) ** (1 / 3)))
        d_approx = math.sqrt(n_target / (per * n_layer))
        q = max(8, 2 ** int(math.floor(math.log2(max(d_approx, 8) / 8))))
        cands = range(q, q * (int(2 * d_approx / q) + 3), q)

        def n_of(d: int) -> int:  # N does not depend on the head count
            return params_nonembedding(Shape(n_layer, d, 1, self.vocab_size, self.seq_len, self.mlp_ratio))

        return self._shape(n_layer, min(cands, key=lambda x: abs(math.log(n_of(x) / n_target))))

    def grid_step(self, s: Shape) -> int:
        return max(8, 2 ** int(math.floor(math.log2(max(s.d_model, 8) / 8))))

    @staticmethod
    def name(s: Shape) -> str:
        return f"gpt-{_human(params_nonembedding(s))}-l{s.n_layer}d{s.d_model}h{s.n_head}"


def _nearest_divisor(n: int, target: float) -> int:
    small = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
    divs = sorted({*small, *(n // k for k in small)})
    return min(divs, key=lambda k: (abs(math.log(k / max(target, 1e-9))), -k))


def _human(n: float) -> str:
    for div, unit in ((1e9, "b"), (1e6, "m"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.2g}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def shape_for_params(n_params: float, seq_len: int, vocab_size: int) -> Shape:
    """A GPT-3-proportioned shape (d_model = 128 n_layer, 128-wide heads) of about n_params total.

    Layers rounded to a multiple of 8 (pipeline splits), d_model to a multiple of 1024
    (heads divisible by TP 8).
    """
    layers = (n_params / (12.0 * 128.0**2)) ** (1.0 / 3.0)
    n_layer = max(8, int(round(layers / 8.0)) * 8)
    d_model = max(1024, int(round(128 * layers / 1024.0)) * 1024)
    return Shape(
        n_layer=n_layer, d_model=d_model, n_head=d_model // 128, vocab_size=vocab_size, seq_len=seq_len
    )
