"""One optimizer step on this rank: its micro-batches, its timing, the noise-scale inputs.

Nothing here talks to the other ranks beyond what the engine does (the gradient all-reduce);
the loss is this rank's until the log boundary averages it (``steplog``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from harness.core import config as C
from harness.core.config import HarnessConfig
from harness.core.rankfiles import Heartbeat
from harness.datasets import BatchSampler
from harness.worker import faults, metrics
from harness.worker.distributed import DistInfo
from harness.worker.engines import Engine


@dataclass(frozen=True)
class Batching:
    """How many steps, and how one step's global batch splits into ranks and micro-batches."""

    steps: int
    global_batch: int  # sequences per step, all ranks
    seq_len: int
    micro_batch: int
    grad_accum: int
    warmup_steps: int  # of the learning-rate schedule

    @classmethod
    def of_config(cls, cfg: HarnessConfig) -> Batching:
        t = cfg.train
        steps = C.total_steps(cfg)
        return cls(
            steps, C.global_batch(cfg), t.seq_len, t.micro_batch, t.grad_accum, int(t.warmup_frac * steps)
        )

    @property
    def per_rank(self) -> int:
        return self.micro_batch * self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def b_small(self) -> int:
        """Tokens behind one rank's local gradient (the noise scale's small batch)."""
        return self.per_rank * self.seq_len

    @property
    def b_big(self) -> int:
        """Tokens behind the all-reduced gradient (the noise scale's big batch)."""
        return self.tokens_per_step


@dataclass(frozen=True)
class StepOutcome:
    """One step as this rank saw it."""

    step: int
    loss: float  # mean over this rank's micro-batches
    lr: float
    grad_norm: float
    step_time_s: float
    comm_time_s: float  # union of the gradient-communication intervals
    compute_time_s: float | None  # until the last gradient communication was launched, if known
    grad_sq: tuple[float, float] | None  # (|local gradient|^2, |all-reduced gradient|^2), if seen


@dataclass
class Timings:
    """The timed steps (those after the timing warm-up) of this rank."""

    step: list[float] = field(default_factory=list)
    comm: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)

    def add(self, out: StepOutcome) -> None:
        self.step.append(out.step_time_s)
        self.comm.append(out.comm_time_s)
        if out.compute_time_s is not None:
            self.compute.append(out.compute_time_s)


def run_step(
    engine: Engine,
    sampler: BatchSampler,
    batching: Batching,
    step: int,
    lr: float,
    info: DistInfo,
    heartbeat: Heartbeat,
) -> StepOutcome:
    """Forward/backward over this rank's micro-batches (gradients synchronised on the last), then
    the optimizer update."""
    mb = batching.micro_batch
    heartbeat.beat(step)
    engine.begin_step()
    t0 = time.perf_counter()
    ids = sampler.sample_ids(step, batching.global_batch, info.rank, batching.per_rank)
    micro_losses = []
    for k in range(batching.grad_accum):
        batch = torch.from_numpy(sampler.get(ids[k * mb : (k + 1) * mb])).to(info.device)
        last = k == batching.grad_accum - 1
        micro_losses.append(engine.micro_step(batch[:, :-1], batch[:, 1:], last=last))
    if faults.inject(step, info.rank):
        micro_losses[-1] = torch.full_like(micro_losses[-1], float("nan"))
    grad_norm = engine.optimizer_step(lr)
    heartbeat.beat(step, done=True)
    if info.device.type == "cuda":
        torch.cuda.synchronize(info.device)
    dt = time.perf_counter() - t0
    comm = metrics.union_length(engine.comm_intervals())
    launch = engine.last_comm_launch()
    return StepOutcome(
        step=step,
        loss=float(torch.stack(micro_losses).float().mean()),
        lr=lr,
        grad_norm=grad_norm,
        step_time_s=dt,
        comm_time_s=comm,
        compute_time_s=None if launch is None else launch - t0,
        grad_sq=engine.grad_sq_norms(),
    )
