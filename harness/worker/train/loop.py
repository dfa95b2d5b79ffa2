"""The training loop, top to bottom: setup, the steps (checkpoints and pre-emption at log
boundaries), the final evaluation and the run's measurements."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.core import config as C
from harness.core import hardware_specs, shapes
from harness.core.config import HarnessConfig
from harness.core.rankfiles import Heartbeat
from harness.datasets import BatchSampler, TokenData, resolve_source
from harness.worker import hardware, metrics
from harness.worker.distributed import DistInfo
from harness.worker.engines import Engine, build_engine
from harness.worker.model import GPT
from harness.worker.train.evaluation import eval_windows, evaluate
from harness.worker.train.sinks import open_sinks
from harness.worker.train.state import Checkpointer, Preempted, RunState, StopRequest, resume
from harness.worker.train.step import Batching, Timings, run_step
from harness.worker.train.steplog import StepLog
from harness.worker.train.summary import Peak, gather_rank_stats, summarize_run

DUMP_PARAMS_ENV = "HARNESS_DUMP_PARAMS"  # path: rank 0 saves the final parameters there (tests)


def train(cfg: HarnessConfig, run_dir: Path, info: DistInfo, stop: StopRequest) -> dict[str, Any]:
    """Train to the token budget and evaluate; returns the measured part of the record (every rank)."""
    t = cfg.train
    # --- setup: data, model and engine, the peak FLOP/s, where to start
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    data = open_data(cfg)
    shape = shapes.of_config(cfg)
    engine = build_engine(cfg, GPT(shape, cfg.model.dropout), info)
    peak = peak_flops(cfg, info)
    sampler = BatchSampler(data.train, t.seq_len, t.seed)
    windows = eval_windows(data, t.seq_len, t.eval_tokens)
    batching = Batching.of_config(cfg)
    steps = batching.steps
    state = resume(run_dir, engine, info.rank) if t.resume else RunState()
    sink = open_sinks(cfg, run_dir, info.rank, state.start_step)
    checkpoints = Checkpointer(run_dir, engine, info.rank, t)
    heartbeat = Heartbeat(run_dir, info.rank)
    log = StepLog(sink, batching, info)
    timings = Timings()

    # --- the steps
    train_start = time.perf_counter()
    for step in range(state.start_step, steps):
        lr = metrics.lr_at(step, steps, t.lr, batching.warmup_steps, t.schedule, t.min_lr_ratio)
        out = run_step(engine, sampler, batching, step, lr, info, heartbeat)
        if step >= state.start_step + t.timing_warmup_steps:
            timings.add(out)
        log.add(out)
        last = step == steps - 1
        stop_now = due = False
        if (step + 1) % t.log_interval == 0 or last:
            stop_now, due = log.flush(state, stop.requested, checkpoints.time_due())
        if not last and (stop_now or due or checkpoints.step_due(step)):
            path = checkpoints.save(step + 1, state)
            if stop_now:
                raise Preempted(step + 1, path)
        if t.eval_interval and (step + 1) % t.eval_interval == 0 and not last:
            state.heldout.append((step + 1, evaluate(engine, windows, t.micro_batch, info)))
            sink.log(step, {"heldout_loss": state.heldout[-1][1]})
    train_wall = time.perf_counter() - train_start

    # --- finish: the final held-out loss, every rank's statistics, the summary
    state.heldout.append((steps, evaluate(engine, windows, t.micro_batch, info)))
    sink.log(steps - 1, {"heldout_loss": state.heldout[-1][1]})
    dump_parameters(engine, info.rank)
    result = summarize_run(
        cfg,
        shape,
        gather_rank_stats(engine, timings, info),
        state,
        batching,
        train_wall=train_wall,
        peak=peak,
        comm_bytes=engine.comm_bytes_per_step(),
        comm_method=engine.comm_method,
        epochs=sampler.epochs(steps * batching.global_batch),
        heldout_tokens=len(windows) * t.seq_len,
    )
    sink.close({"heldout_loss": state.heldout[-1][1], "tokens_per_s": result["throughput"]["tokens_per_s"]})
    return result


def open_data(cfg: HarnessConfig) -> TokenData:
    data = TokenData.open(resolve_source(cfg.data.source, cfg.data.cache_dir, cfg.data.heldout_frac))
    if data.vocab_size > cfg.model.vocab_size:
        raise C.ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's vocabulary "
            f"({data.vocab_size}); allowed: >= {data.vocab_size}"
        )
    return data


def peak_flops(cfg: HarnessConfig, info: DistInfo) -> Peak:
    """Per-device dense peak of the run's dtype: the cluster spec's, else measured here and labelled."""
    c, dtype = cfg.cluster, cfg.train.dtype
    spec = hardware_specs.peak_flops(c, dtype)  # the preset's override, else its gpu_type's spec
    if spec:
        return Peak(float(spec), f"cluster:{c.name}:{c.gpu_type}:{dtype}:dense")
    if info.device.type == "cuda":
        raise C.ConfigError(f"cluster={c.name} gives no dense peak for {dtype}; set cluster.peak_flops_*")
    # All ranks measure at once, so each sees the contention it trains under.
    dist.barrier()
    local = hardware.measure_matmul_peak(dtype)
    peaks = [None] * info.world_size
    dist.all_gather_object(peaks, local)
    return Peak(float(sorted(peaks)[len(peaks) // 2]), f"measured_cpu_matmul_{dtype}")


def dump_parameters(engine: Engine, rank: int) -> None:
    """Test-only (``HARNESS_DUMP_PARAMS``): the final parameters, to compare engines."""
    if os.environ.get(DUMP_PARAMS_ENV):
        params = engine.full_parameters()  # a collective under ZeRO-3: every rank calls it
        if rank == 0:
            torch.save(params, os.environ[DUMP_PARAMS_ENV])
