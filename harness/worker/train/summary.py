"""The measured part of the run record, from every rank's statistics and the run's history."""

from __future__ import annotations

import resource
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from harness.core import config as C
from harness.core import environment, flops
from harness.core.config import HarnessConfig
from harness.core.flops import Shape
from harness.worker import hardware, metrics
from harness.worker.distributed import DistInfo
from harness.worker.engines import Engine
from harness.worker.noise_scale import NoiseScaleEMA
from harness.worker.train.state import RunState
from harness.worker.train.step import Batching, Timings


class Peak(NamedTuple):
    """Per-device dense peak FLOP/s of the run's dtype (the MFU denominator) and where it came from."""

    flops: float
    source: str


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_process_max_rss"


def gather_rank_stats(engine: Engine, timings: Timings, info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's timing summaries, memory and host, on every rank (a collective)."""
    mine = {
        "step": metrics.summarize(timings.step),
        "comm": metrics.summarize(timings.comm),
        "compute": metrics.summarize(timings.compute),
        "memory": peak_memory_bytes(info.device),
        "host": environment.host_facts()["hostname"],
        "device_name": hardware.device_name(info.device.type),
        "optimizer_state_bytes": engine.optimizer_state_bytes(),
    }
    gathered: list[dict[str, Any]] = [None] * info.world_size  # type: ignore[list-item]
    dist.all_gather_object(gathered, mine)
    return gathered


def noise_scale_summary(noise: NoiseScaleEMA, batching: Batching) -> dict[str, Any]:
    return {
        "b_simple_tokens": noise.b_simple,
        "grad_sq_G": noise.g2,
        "trace_sigma": noise.trace,
        "b_small_tokens": batching.b_small,
        "b_big_tokens": batching.b_big,
        "method": "McCandlish et al. 2018 two-batch estimator: per-rank vs all-reduced gradient norms from the DDP "
        f"comm hook, EMA decay {noise.decay}"
        if noise.g2 is not None
        else "not measured (needs world size > 1)",
    }


def summarize_run(
    cfg: HarnessConfig,
    shape: Shape,
    per_rank: list[dict[str, Any]],
    state: RunState,
    batching: Batching,
    *,
    train_wall: float,
    peak: Peak,
    comm_bytes: int,
    comm_method: str,
    epochs: float,
    heldout_tokens: int,
) -> dict[str, Any]:
    """The record's training, timing, throughput and memory sections (plus hosts and device names)."""
    t = cfg.train
    ws = C.world_size(cfg)
    losses, steps = state.losses, batching.steps
    medians = [r["step"]["median"] for r in per_rank]
    step_median = sorted(medians)[len(medians) // 2]
    tokens_per_s = batching.tokens_per_step / step_median if step_median > 0 else float("nan")
    per_device = tokens_per_s / ws
    comm_median = sum(r["comm"]["median"] for r in per_rank) / ws
    tail = max(1, min(10, len(losses) // 20))
    tokens_trained = steps * batching.tokens_per_step
    return {
        "training": {
            "steps": steps,
            "tokens_budget": int(t.tokens),
            "tokens_trained": tokens_trained,
            "compute_6nd": flops.training_flops_6nd(flops.params_nonembedding(shape), tokens_trained),
            "compute_model_flops": flops.flops_per_token(shape) * tokens_trained,
            "epochs": epochs,
            "initial_loss": losses[0],
            "final_train_loss": sum(losses[-tail:]) / tail,
            "final_train_loss_window": tail,
            "last_step_loss": losses[-1],
            "heldout_loss": state.heldout[-1][1],
            "heldout_tokens": heldout_tokens,
            "heldout_curve": [{"step": s, "loss": v} for s, v in state.heldout],
            "resumed_from_step": state.start_step or None,
            "noise_scale": noise_scale_summary(state.noise, batching),
        },
        "timing": {
            "timing_warmup_steps": t.timing_warmup_steps,
            "timed_steps": per_rank[0]["step"]["n"],
            "step_time_median_s": step_median,
            "step_time_p90_s": max(r["step"]["p90"] for r in per_rank),
            "step_time_mean_s": sum(r["step"]["mean"] for r in per_rank) / ws,
            "per_rank_step_time_median_s": medians,
            "rank_spread": metrics.rank_spread(medians),
            "per_rank_compute_time_median_s": [r["compute"]["median"] for r in per_rank],
            "comm_time_median_s": comm_median,
            "comm_fraction": comm_median / step_median if step_median > 0 else None,
            "comm_bytes_per_step": comm_bytes,
            "train_wall_s": train_wall,
            "comm_method": comm_method,
        },
        "throughput": {
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": per_device,
            "tokens_per_s_wall": tokens_trained / train_wall,
            "model_tflops_per_device": flops.model_flops_per_s(per_device, shape) / 1e12,
            "mfu": flops.mfu(tokens_per_s, shape, ws, peak.flops),
            "peak_flops_per_device": peak.flops,
            "peak_source": peak.source,
        },
        "memory": {
            "peak_bytes_per_rank": [r["memory"][0] for r in per_rank],
            "peak_bytes_max": max(r["memory"][0] for r in per_rank),
            "kind": per_rank[0]["memory"][1],
            "optimizer_state_bytes_per_rank": [r["optimizer_state_bytes"] for r in per_rank],
        },
        "hosts": sorted({r["host"] for r in per_rank}),
        "device_names": sorted({r["device_name"] for r in per_rank}),
    }
