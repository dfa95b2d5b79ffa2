"""One training run on every rank: ``python -m harness.worker.train RUN_DIR`` under torchrun.

Reads the frozen config the driver wrote (Hydra runs once, in the driver), trains to the
token budget, evaluates held-out loss, and rank 0 writes the run record. A rank that
fails writes ``errors/rank<r>.json`` so the driver can say which rank failed and why.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from harness.core import config as C
from harness.core import environment, flops, shapes
from harness.core import runspec as plan
from harness.core.io import atomic_write_text
from harness.core.rankfiles import PREEMPTED_EXIT, Heartbeat, first_error, write_error
from harness.core.records import CONFIG_FILE, METRICS_FILE, append_jsonl, write_record
from harness.datasets.tokens import BatchSampler, DataError, TokenData, heldout_windows, resolve_source
from harness.worker import checkpoint, distributed, faults, hardware, metrics
from harness.worker.engines import build_engine
from harness.worker.model import GPT
from harness.worker.noise_scale import NoiseScaleEMA, two_batch_estimates

DUMP_PARAMS_ENV = "HARNESS_DUMP_PARAMS"  # path: rank 0 saves the final parameters there (tests)


class Diverged(RuntimeError):
    """The loss became NaN or Inf."""


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written at ``step`` and the run should be resumed."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"pre-empted: checkpoint at step {step}")
        self.step, self.path = step, path


_STOP = {"requested": False}


def _request_stop(signum: int, frame: Any) -> None:
    _STOP["requested"] = True  # acted on at the next log boundary, where the ranks agree on it


def peak_flops(cfg: Any, info: distributed.DistInfo) -> tuple[float, str]:
    """Per-device dense peak of the run's dtype: the cluster spec's, else measured here and labelled."""
    c, dtype = cfg.cluster, cfg.train.dtype
    spec = c.peak_flops_fp32 if dtype == "fp32" else c.peak_flops_bf16
    if spec:
        return float(spec), f"cluster:{c.name}:{c.gpu_type}:{dtype}:dense"
    if info.device.type == "cuda":
        raise C.ConfigError(f"cluster={c.name} gives no dense peak for {dtype}; set cluster.peak_flops_*")
    # All ranks measure at once, so each sees the contention it trains under.
    dist.barrier()
    local = hardware.measure_matmul_peak(dtype)
    peaks = [None] * info.world_size
    dist.all_gather_object(peaks, local)
    return float(sorted(peaks)[len(peaks) // 2]), f"measured_cpu_matmul_{dtype}"


def evaluate(engine, windows: torch.Tensor, micro_batch: int, info: distributed.DistInfo) -> float:
    """Mean held-out loss over fixed windows, sharded across ranks and summed exactly.

    Every rank runs the same number of forward passes (a rank out of windows repeats one with
    weight 0): under ZeRO-3 each forward is a collective that gathers the parameters.
    """
    mine = windows[info.rank :: info.world_size]
    per_rank = math.ceil(len(windows) / info.world_size)  # the most windows any rank holds
    n_batches = math.ceil(per_rank / micro_batch)
    total = torch.zeros(2, dtype=torch.float64)
    for i in range(n_batches):
        batch = mine[i * micro_batch : (i + 1) * micro_batch]
        weight = len(batch)
        if weight == 0:
            batch = windows[:1]
        batch = batch.to(info.device)
        loss = engine.eval_loss(batch[:, :-1], batch[:, 1:])
        total += torch.tensor([float(loss) * weight, weight], dtype=torch.float64)
    total = total.to(info.device)
    dist.all_reduce(total)
    return float(total[0] / total[1])


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_process_max_rss"


class MetricsSink:
    """metrics.jsonl always (rank 0), wandb when enabled."""

    def __init__(self, cfg: Any, run_dir: Path, rank: int, resume_step: int = 0) -> None:
        self.path = run_dir / METRICS_FILE
        self.enabled = rank == 0
        self.wandb = None
        if self.enabled:
            kept = []
            if resume_step and self.path.exists():  # drop what was logged after the checkpoint
                kept = [
                    line
                    for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] < resume_step
                ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
            if cfg.wandb.enabled:
                import wandb

                self.wandb = wandb.init(
                    project=cfg.wandb.project,
                    mode=cfg.wandb.mode,
                    dir=str(run_dir),
                    name=plan.run_id(cfg),
                    config=C.to_container(cfg),
                )

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, row)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self, summary: dict | None = None) -> None:
        if self.wandb is not None:
            if summary:
                self.wandb.summary.update(summary)
            self.wandb.finish()


def train(cfg: Any, run_dir: Path, info: distributed.DistInfo) -> dict:
    t, m = cfg.train, cfg.model
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    data = TokenData.open(resolve_source(cfg.data.source, cfg.data.cache_dir, cfg.data.heldout_frac))
    if data.vocab_size > m.vocab_size:
        raise C.ConfigError(
            f"model.vocab_size={m.vocab_size} is smaller than the data's vocabulary ({data.vocab_size}); "
            f"allowed: >= {data.vocab_size}"
        )
    shape = shapes.of_config(cfg)
    engine = build_engine(cfg, GPT(shape, m.dropout), info)
    peak, peak_source = peak_flops(cfg, info)

    sampler = BatchSampler(data.train, t.seq_len, t.seed)
    windows = torch.from_numpy(heldout_windows(data.heldout, t.seq_len, max(1, t.eval_tokens // t.seq_len)))
    steps, gb = C.total_steps(cfg), C.global_batch(cfg)
    per_rank = t.micro_batch * t.grad_accum
    warmup = int(t.warmup_frac * steps)
    start_step = 0
    losses: list[float] = []
    heldout: list[tuple[int, float]] = []
    noise = NoiseScaleEMA()
    ckpt = checkpoint.latest(run_dir) if t.resume else None
    if ckpt is not None:
        state = checkpoint.load(ckpt, engine)
        start_step, losses, heldout = state["step"], state["losses"], state["heldout"]
        noise.g2, noise.trace = state["noise"]
        if info.rank == 0:
            print(f"resuming from {ckpt} (step {start_step})", flush=True)
    sink = MetricsSink(cfg, run_dir, info.rank, start_step)
    last_ckpt_time = time.time()
    heartbeat = Heartbeat(run_dir, info.rank)
    step_times: list[float] = []
    comm_times: list[float] = []
    compute_times: list[float] = []
    pending: list[dict] = []
    b_small, b_big = per_rank * t.seq_len, gb * t.seq_len  # tokens behind the local and global gradients

    def flush() -> tuple[bool, bool]:
        """Average the pending per-rank losses (and local gradient norms) across ranks in one small
        all-reduce, then log them: the logged loss is the global batch's, whatever the world size.
        The same all-reduce carries the ranks' stop requests (SIGTERM) and rank 0's time-based
        checkpoint decision, so every rank acts on them at the same step. Returns (stop, checkpoint)."""
        due = (
            info.rank == 0
            and t.checkpoint_interval_s > 0
            and time.time() - last_ckpt_time > t.checkpoint_interval_s
        )
        flags = [float(_STOP["requested"]), float(due)]
        local = torch.tensor(
            [[p["loss"], p.get("local_sq", 0.0), *flags] for p in pending],
            dtype=torch.float64,
            device=info.device,
        )
        dist.all_reduce(local)
        stop, due = bool(local[-1, 2] > 0), bool(local[-1, 3] > 0)
        for p, (loss, local_sq, _, _) in zip(pending, (local / info.world_size).tolist(), strict=True):
            losses.append(loss)
            if not math.isfinite(loss):
                raise Diverged(f"loss became {loss} at step {p['step']}")
            row = {
                "step": p["step"],
                "tokens": (p["step"] + 1) * gb * t.seq_len,
                "loss": loss,
                "lr": p["lr"],
                "grad_norm": p["grad_norm"],
                "step_time_s": p["step_time_s"],
                "comm_time_s": p["comm_time_s"],
            }
            if "global_sq" in p and b_big > b_small:
                g2, trace = two_batch_estimates(local_sq, p["global_sq"], b_small, b_big)
                row.update(grad_sq_G=g2, trace_sigma=trace, b_simple=noise.update(g2, trace))
            sink.log(row)
        if info.rank == 0:
            p = pending[-1]
            print(
                f"step {p['step'] + 1}/{steps} loss {losses[-1]:.4f} lr {p['lr']:.2e} "
                f"step {p['step_time_s'] * 1e3:.1f} ms",
                flush=True,
            )
        pending.clear()
        return stop, due

    def save(next_step: int) -> Path:
        state = {"losses": losses, "heldout": heldout, "noise": (noise.g2, noise.trace)}
        return checkpoint.save(run_dir, next_step, engine, state, info.rank, t.keep_checkpoints)

    train_start = time.perf_counter()
    for step in range(start_step, steps):
        lr = metrics.lr_at(step, steps, t.lr, warmup, t.schedule, t.min_lr_ratio)
        heartbeat.beat(step)
        engine.begin_step()
        t0 = time.perf_counter()
        ids = sampler.sample_ids(step, gb, info.rank, per_rank)
        micro_losses = []
        for k in range(t.grad_accum):
            batch = torch.from_numpy(sampler.get(ids[k * t.micro_batch : (k + 1) * t.micro_batch])).to(
                info.device
            )
            micro_losses.append(engine.micro_step(batch[:, :-1], batch[:, 1:], last=k == t.grad_accum - 1))
        if faults.inject(step, info.rank):
            micro_losses[-1] = torch.full_like(micro_losses[-1], float("nan"))
        gnorm = engine.optimizer_step(lr)
        heartbeat.beat(step, done=True)
        if info.device.type == "cuda":
            torch.cuda.synchronize(info.device)
        dt = time.perf_counter() - t0
        comm = metrics.union_length(engine.comm_intervals())
        launch = engine.last_comm_launch()
        if step >= start_step + t.timing_warmup_steps:
            step_times.append(dt)
            comm_times.append(comm)
            if launch is not None:
                compute_times.append(launch - t0)
        entry = {
            "step": step,
            "loss": float(torch.stack(micro_losses).float().mean()),
            "lr": lr,
            "grad_norm": gnorm,
            "step_time_s": dt,
            "comm_time_s": comm,
        }
        sq = engine.grad_sq_norms()
        if sq is not None:
            entry["local_sq"], entry["global_sq"] = sq
        pending.append(entry)
        stop = due = False
        if (step + 1) % t.log_interval == 0 or step == steps - 1:
            stop, due = flush()
        due = due or bool(t.checkpoint_interval_steps and (step + 1) % t.checkpoint_interval_steps == 0)
        if step < steps - 1 and (stop or due):
            path = save(step + 1)
            last_ckpt_time = time.time()
            if stop:
                raise Preempted(step + 1, path)
        if t.eval_interval and (step + 1) % t.eval_interval == 0 and step != steps - 1:
            heldout.append((step + 1, evaluate(engine, windows, t.micro_batch, info)))
            sink.log({"step": step, "heldout_loss": heldout[-1][1]})
    train_wall = time.perf_counter() - train_start
    heldout.append((steps, evaluate(engine, windows, t.micro_batch, info)))
    sink.log({"step": steps - 1, "heldout_loss": heldout[-1][1]})
    if os.environ.get(DUMP_PARAMS_ENV):  # test-only: the final parameters, to compare engines
        params = engine.full_parameters()  # a collective under ZeRO-3: every rank calls it
        if info.rank == 0:
            torch.save(params, os.environ[DUMP_PARAMS_ENV])

    per_rank_stats = {
        "step": metrics.summarize(step_times),
        "comm": metrics.summarize(comm_times),
        "compute": metrics.summarize(compute_times),
        "memory": peak_memory_bytes(info.device),
        "host": environment.host_facts()["hostname"],
        "device_name": hardware.device_name(info.device.type),
        "optimizer_state_bytes": engine.optimizer_state_bytes(),
    }
    gathered: list[dict] = [None] * info.world_size  # type: ignore[list-item]
    dist.all_gather_object(gathered, per_rank_stats)
    result = summarize_run(
        cfg,
        shape,
        gathered,
        losses,
        heldout,
        steps,
        train_wall,
        peak,
        peak_source,
        engine.comm_bytes_per_step(),
        sampler,
    )
    result["timing"]["comm_method"] = engine.comm_method
    result["training"]["heldout_tokens"] = len(windows) * t.seq_len
    result["training"]["resumed_from_step"] = start_step or None
    result["training"]["noise_scale"] = {
        "b_simple_tokens": noise.b_simple,
        "grad_sq_G": noise.g2,
        "trace_sigma": noise.trace,
        "b_small_tokens": b_small,
        "b_big_tokens": b_big,
        "method": "McCandlish et al. 2018 two-batch estimator: per-rank vs all-reduced gradient norms from the DDP "
        f"comm hook, EMA decay {noise.decay}"
        if noise.g2 is not None
        else "not measured (needs world size > 1)",
    }
    sink.close({"heldout_loss": heldout[-1][1], "tokens_per_s": result["throughput"]["tokens_per_s"]})
    return result


def summarize_run(
    cfg, shape, per_rank, losses, heldout, steps, train_wall, peak, peak_source, comm_bytes, sampler
) -> dict:
    """The measured part of the record, from every rank's statistics."""
    t = cfg.train
    ws = C.world_size(cfg)
    gb_tokens = C.global_batch(cfg) * t.seq_len
    medians = [r["step"]["median"] for r in per_rank]
    step_median = sorted(medians)[len(medians) // 2]
    step_p90 = max(r["step"]["p90"] for r in per_rank)
    tokens_per_s = gb_tokens / step_median if step_median > 0 else float("nan")
    per_device = tokens_per_s / ws
    comm_median = sum(r["comm"]["median"] for r in per_rank) / ws
    tail = max(1, min(10, len(losses) // 20))
    tokens_trained = steps * gb_tokens
    return {
        "training": {
            "steps": steps,
            "tokens_budget": int(t.tokens),
            "tokens_trained": tokens_trained,
            "compute_6nd": flops.training_flops_6nd(flops.params_nonembedding(shape), tokens_trained),
            "compute_model_flops": flops.flops_per_token(shape) * tokens_trained,
            "epochs": sampler.epochs(steps * C.global_batch(cfg)),
            "initial_loss": losses[0],
            "final_train_loss": sum(losses[-tail:]) / tail,
            "final_train_loss_window": tail,
            "last_step_loss": losses[-1],
            "heldout_loss": heldout[-1][1],
            "heldout_tokens": None,
            "heldout_curve": [{"step": s, "loss": v} for s, v in heldout],
        },
        "timing": {
            "timing_warmup_steps": t.timing_warmup_steps,
            "timed_steps": per_rank[0]["step"]["n"],
            "step_time_median_s": step_median,
            "step_time_p90_s": step_p90,
            "step_time_mean_s": sum(r["step"]["mean"] for r in per_rank) / ws,
            "per_rank_step_time_median_s": medians,
            "rank_spread": metrics.rank_spread(medians),
            "per_rank_compute_time_median_s": [r["compute"]["median"] for r in per_rank],
            "comm_time_median_s": comm_median,
            "comm_fraction": comm_median / step_median if step_median > 0 else None,
            "comm_bytes_per_step": comm_bytes,
            "train_wall_s": train_wall,
        },
        "throughput": {
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_per_device": per_device,
            "tokens_per_s_wall": tokens_trained / train_wall,
            "model_tflops_per_device": flops.model_flops_per_s(per_device, shape) / 1e12,
            "mfu": flops.mfu(tokens_per_s, shape, ws, peak),
            "peak_flops_per_device": peak,
            "peak_source": peak_source,
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


def environment_facts(info: distributed.DistInfo, hosts: list[str], devices: list[str]) -> dict:
    return {
        **environment.git_state(),
        "packages": environment.package_versions(),
        **environment.host_facts(),
        "hosts": hosts,
        "device_names": devices,
        "world_size": info.world_size,
        "backend": info.backend,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
    }


def run(run_dir: Path) -> int:
    # Merged onto the schema: a config frozen by an older version still gets every key's default.
    cfg = OmegaConf.merge(OmegaConf.structured(C.HarnessConfig), OmegaConf.load(run_dir / CONFIG_FILE))
    signal.signal(signal.SIGTERM, _request_stop)  # SLURM's pre-emption warning; torchrun forwards it
    info = distributed.init(cfg.cluster.device, cfg.train.comm_timeout_s)
    start = time.time()
    clean = False
    try:
        result = train(cfg, run_dir, info)
        if info.rank == 0:
            env = environment_facts(info, result.pop("hosts"), result.pop("device_names"))
            record = plan.base_record(cfg, "completed")
            record.update(
                result,
                environment=env,
                finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                duration_s=time.time() - start,
            )
            write_record(run_dir, record)
        clean = True
        return 0
    except Preempted as p:
        if info.rank == 0:
            record = plan.base_record(cfg, "preempted")
            record.update(
                checkpoint={"path": str(p.path), "step": p.step},
                duration_s=time.time() - start,
                finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            )
            write_record(run_dir, record)
            print(f"pre-empted: checkpoint at step {p.step} in {p.path}; run again to resume", flush=True)
        return PREEMPTED_EXIT
    except BaseException as exc:
        write_error(run_dir, info.rank, exc)
        if info.rank == 0:  # also when no driver watches (multi-node, SLURM): never leave "running"
            write_record(run_dir, plan.failed_record(cfg, first_error(run_dir)))
        raise
    finally:
        distributed.shutdown(together=clean)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m harness.worker.train RUN_DIR  (normally started by 'harness train')",
            file=sys.stderr,
        )
        return 2
    try:
        return run(Path(argv[0]))
    except (C.ConfigError, DataError) as e:
        print(f"harness train: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
