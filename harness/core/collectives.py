"""nccl-tests definitions of the collectives: bandwidths, ring steps and the alpha-beta time.

Torch-free and below every other layer on purpose: the worker's benchmark computes its
bandwidths with these, and the analysis fits and predicts with the same ones. Definitions
follow nccl-tests' doc/PERFORMANCE.md:

- ``algbw = S / t`` where S is the total buffer in bytes (the *output* of all-gather,
  the *input* of reduce-scatter, the buffer of all-reduce);
- ``busbw = algbw * bus_factor(op, n)``, the per-link rate a ring achieves, comparable
  across rank counts and with the hardware's link bandwidth.

The ring model (per step: one latency alpha; bytes moved per rank: bus_factor * S):

- all-reduce:                  ``t = 2(n-1) * alpha + 2(n-1)/n * S / B``
- all-gather, reduce-scatter:  ``t =  (n-1) * alpha +  (n-1)/n * S / B``

A *tier* is the slowest link class a collective crosses: ``intra-node`` when every
rank is on one node (nnodes == 1), ``inter-node`` otherwise.
"""

from __future__ import annotations

OPS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter")
TIERS: tuple[str, ...] = ("intra-node", "inter-node")

# One measurement row of a commbench record (record["measurements"][i]).
MEASUREMENT_COLUMNS: tuple[str, ...] = (
    "op",
    "backend",
    "device",
    "world_size",
    "nnodes",
    "size_bytes",
    "time_s_median",
    "time_s_p90",
    "algbw_Bps",
    "busbw_Bps",
    "iters",
)


def _check(op: str, n: int) -> None:
    if op not in OPS:
        raise ValueError(f"unknown collective op {op!r}; allowed: {', '.join(OPS)}")
    if int(n) != n or n < 1:
        raise ValueError(f"world size must be a positive integer, got {n!r}")


def bus_factor(op: str, n: int) -> float:
    """busbw / algbw for op over n ranks: 2(n-1)/n for all-reduce, (n-1)/n otherwise."""
    _check(op, n)
    ring = (n - 1) / n
    return 2.0 * ring if op == "all_reduce" else ring


def latency_steps(op: str, n: int) -> int:
    """Sequential ring steps, each paying one alpha: 2(n-1) for all-reduce
    (reduce-scatter then all-gather), n-1 for all-gather and reduce-scatter."""
    _check(op, n)
    return 2 * (n - 1) if op == "all_reduce" else n - 1


def collective_time(op: str, size_bytes: float, n: int, alpha_s: float, busbw_Bps: float) -> float:
    """Predicted seconds for one collective of size_bytes (nccl-tests' S) over n ranks."""
    if busbw_Bps <= 0:
        raise ValueError(f"bus bandwidth must be positive, got {busbw_Bps!r}")
    return latency_steps(op, n) * alpha_s + bus_factor(op, n) * size_bytes / busbw_Bps


def algbw(size_bytes: float, time_s: float) -> float:
    """Algorithm bandwidth in bytes/s: S / t."""
    return size_bytes / time_s


def busbw(op: str, size_bytes: float, n: int, time_s: float) -> float:
    """Bus bandwidth in bytes/s: algbw x bus_factor (0 for a single rank: nothing moves)."""
    return algbw(size_bytes, time_s) * bus_factor(op, n)


def tier_of(nnodes: int) -> str:
    return TIERS[0] if int(nnodes) <= 1 else TIERS[1]
