"""Gradient noise scale from data-parallel training (McCandlish et al. 2018, appendix A.1).

Each rank's gradient before the all-reduce is a small-batch gradient (B_small = tokens per
rank per step); the all-reduced one is a large-batch gradient (B_big = global tokens).
Since E|g_B|^2 = |G|^2 + tr(Sigma)/B, two batch sizes give unbiased estimates of both:

    |G|^2     = (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small)
    tr(Sigma) = (|g_small|^2 - |g_big|^2) / (1/B_small - 1/B_big)

Each per-step estimate is noisy, so the two are smoothed separately (EMA) and their ratio
B_simple = tr(Sigma) / |G|^2 is the noise scale, in the unit of B (tokens here).
"""

from __future__ import annotations

from dataclasses import dataclass


def two_batch_estimates(
    g_small_sq: float, g_big_sq: float, b_small: float, b_big: float
) -> tuple[float, float]:
    """Unbiased (|G|^2, tr(Sigma)) from squared norms of a small- and a large-batch mean gradient."""
    if not b_big > b_small > 0:
        raise ValueError(f"need B_big > B_small > 0, got B_small={b_small}, B_big={b_big}")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


@dataclass
class NoiseScaleEMA:
    """Exponential moving averages of |G|^2 and tr(Sigma); B_simple is their ratio."""

    decay: float = 0.95
    g2: float | None = None
    trace: float | None = None

    def update(self, g2: float, trace: float) -> float | None:
        if self.g2 is None or self.trace is None:
            self.g2, self.trace = g2, trace
        else:
            self.g2 = self.decay * self.g2 + (1 - self.decay) * g2
            self.trace = self.decay * self.trace + (1 - self.decay) * trace
        return self.b_simple

    @property
    def b_simple(self) -> float | None:
        if self.g2 is None or self.trace is None or self.g2 <= 0:
            return None
        return self.trace / self.g2
