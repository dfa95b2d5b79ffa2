"""Timers and summary statistics for the run record, and the learning-rate schedule."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {
            "n": 0,
            "median": float("nan"),
            "p90": float("nan"),
            "mean": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
        }
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total time covered by possibly overlapping [start, end] intervals (bucket all-reduces in flight)."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def rank_spread(per_rank_medians: Sequence[float]) -> float:
    """(slowest - fastest) / median of the per-rank median step times: the straggler signal."""
    if len(per_rank_medians) < 2:
        return 0.0
    return (max(per_rank_medians) - min(per_rank_medians)) / statistics.median(per_rank_medians)


def lr_at(
    step: int, total_steps: int, peak: float, warmup_steps: int, schedule: str, min_ratio: float
) -> float:
    """Linear warm-up, then cosine / linear decay to min_ratio * peak (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return peak
    frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))
    decay = 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1 - frac
    return peak * (min_ratio + (1 - min_ratio) * decay)
