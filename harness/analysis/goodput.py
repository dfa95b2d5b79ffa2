"""Goodput once failures are counted: failure rate, MTBF, Young/Daly checkpoint interval.

Failure rate from Llama 3 (Dubey et al. 2024, sec. 3.3.4): 419 unexpected interruptions
in a 54-day snapshot of pre-training on 16,384 H100s, i.e. ~2e-5 per GPU-hour. Failures
are assumed independent across GPUs, so a job on n GPUs fails at n times that rate.

With checkpoint cost delta (seconds the job stalls per checkpoint) and restart cost R
(detect, reschedule, reload), the first-order Young/Daly optimum checkpoint interval is
tau = sqrt(2 delta MTBF) and the fraction of wall time doing useful work is

    goodput ~ 1 - delta/tau - tau/(2 MTBF) - R/MTBF

(checkpoint overhead, expected recomputation of the lost half interval, restarts),
clamped to [0, 1]; the approximation needs delta, R << MTBF and fails gracefully to 0.
"""

from __future__ import annotations

import math
from typing import Any

LLAMA3_INTERRUPTIONS = 419
LLAMA3_DAYS = 54
LLAMA3_GPUS = 16_384
# Planning defaults, not measurements: a 30 s blocking checkpoint and a 5 min restart give
# ~90% goodput at 16,384 GPUs with the Llama 3 failure rate, Llama 3's reported ">90%
# effective training time" (Dubey et al. 2024, sec. 3.3.4). Override per cluster.
DEFAULT_CHECKPOINT_S = 30.0
DEFAULT_RESTART_S = 300.0


def failure_rate_per_gpu_hour(
    interruptions: int = LLAMA3_INTERRUPTIONS, days: float = LLAMA3_DAYS, gpus: int = LLAMA3_GPUS
) -> float:
    return interruptions / (days * 24.0 * gpus)


def mtbf_s(n_gpus: int, rate_per_gpu_hour: float | None = None) -> float:
    """Mean time between failures of a job on n GPUs, in seconds."""
    rate = failure_rate_per_gpu_hour() if rate_per_gpu_hour is None else rate_per_gpu_hour
    if n_gpus < 1 or rate <= 0:
        raise ValueError(f"mtbf needs n_gpus >= 1 and a positive failure rate; got {n_gpus}, {rate}")
    return 3600.0 / (rate * n_gpus)


def young_daly_interval_s(checkpoint_s: float, mtbf: float) -> float:
    return math.sqrt(2.0 * checkpoint_s * mtbf)


def goodput(
    n_gpus: int, checkpoint_s: float, restart_s: float, rate_per_gpu_hour: float | None = None
) -> dict[str, Any]:
    """Goodput and its three losses at the Young/Daly interval, with the inputs that produced it."""
    if checkpoint_s <= 0 or restart_s < 0:
        raise ValueError(f"checkpoint_s must be > 0 and restart_s >= 0; got {checkpoint_s}, {restart_s}")
    rate = failure_rate_per_gpu_hour() if rate_per_gpu_hour is None else rate_per_gpu_hour
    m = mtbf_s(n_gpus, rate)
    tau = young_daly_interval_s(checkpoint_s, m)
    loss_ckpt, loss_rework, loss_restart = checkpoint_s / tau, tau / (2.0 * m), restart_s / m
    g = 1.0 - loss_ckpt - loss_rework - loss_restart
    return {
        "n_gpus": n_gpus,
        "failure_rate_per_gpu_hour": rate,
        "failure_rate_source": (
            f"Llama 3: {LLAMA3_INTERRUPTIONS} unexpected interruptions in {LLAMA3_DAYS} days "
            f"on {LLAMA3_GPUS:,} H100 (Dubey et al. 2024)"
        ),
        "mtbf_s": m,
        "checkpoint_s": checkpoint_s,
        "restart_s": restart_s,
        "checkpoint_interval_s": tau,
        "loss_checkpointing": loss_ckpt,
        "loss_rework": loss_rework,
        "loss_restart": loss_restart,
        "goodput": min(1.0, max(0.0, g)),
        "valid": bool(g > 0 and checkpoint_s < m and restart_s < m),
    }
