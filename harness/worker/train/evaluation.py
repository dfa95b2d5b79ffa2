"""Held-out loss: fixed windows of the held-out stream, sharded across ranks, summed exactly."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from harness.datasets import TokenData, heldout_windows
from harness.worker.distributed import DistInfo
from harness.worker.engines import Engine


def eval_windows(data: TokenData, seq_len: int, eval_tokens: int) -> torch.Tensor:
    """The held-out windows every evaluation of the run uses (seed-independent)."""
    return torch.from_numpy(heldout_windows(data.heldout, seq_len, max(1, eval_tokens // seq_len)))


def evaluate(engine: Engine, windows: torch.Tensor, micro_batch: int, info: DistInfo) -> float:
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
