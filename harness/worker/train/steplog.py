"""The log boundary: every ``log_interval`` steps the ranks agree, in one small all-reduce, on

- the logged loss of each pending step (the mean over ranks: the global batch's, whatever the
  world size), with the noise-scale estimate from the local and all-reduced gradient norms;
- whether any rank was asked to stop (SIGTERM), and rank 0's time-based checkpoint decision,

so that every rank acts on them at the same step.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from harness.worker.distributed import DistInfo
from harness.worker.noise_scale import two_batch_estimates
from harness.worker.train.sinks import MetricsSink
from harness.worker.train.state import Diverged, RunState
from harness.worker.train.step import Batching, StepOutcome


class StepLog:
    """The steps since the last boundary; ``flush`` reduces, checks and logs them."""

    def __init__(self, sink: MetricsSink, batching: Batching, info: DistInfo) -> None:
        self.sink, self.batching, self.info = sink, batching, info
        self.pending: list[StepOutcome] = []

    def add(self, out: StepOutcome) -> None:
        self.pending.append(out)

    def flush(self, state: RunState, stop_requested: bool, checkpoint_due: bool) -> tuple[bool, bool]:
        """Log the pending steps into state and the sink; returns (stop, checkpoint) as all ranks agree."""
        info, b = self.info, self.batching
        flags = [float(stop_requested), float(checkpoint_due)]
        local = torch.tensor(
            [[p.loss, 0.0 if p.grad_sq is None else p.grad_sq[0], *flags] for p in self.pending],
            dtype=torch.float64,
            device=info.device,
        )
        dist.all_reduce(local)
        stop, due = bool(local[-1, 2] > 0), bool(local[-1, 3] > 0)
        for p, (loss, local_sq, _, _) in zip(self.pending, (local / info.world_size).tolist(), strict=True):
            state.losses.append(loss)
            if not math.isfinite(loss):
                raise Diverged(f"loss became {loss} at step {p.step}")
            row = {
                "tokens": (p.step + 1) * b.tokens_per_step,
                "loss": loss,
                "lr": p.lr,
                "grad_norm": p.grad_norm,
                "step_time_s": p.step_time_s,
                "comm_time_s": p.comm_time_s,
            }
            if p.grad_sq is not None and b.b_big > b.b_small:
                g2, trace = two_batch_estimates(local_sq, p.grad_sq[1], b.b_small, b.b_big)
                row.update(grad_sq_G=g2, trace_sigma=trace, b_simple=state.noise.update(g2, trace))
            self.sink.log(p.step, row)
        if info.rank == 0:
            p = self.pending[-1]
            print(
                f"step {p.step + 1}/{b.steps} loss {state.losses[-1]:.4f} lr {p.lr:.2e} "
                f"step {p.step_time_s * 1e3:.1f} ms",
                flush=True,
            )
        self.pending.clear()
        return stop, due
