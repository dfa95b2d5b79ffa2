"""torch DistributedDataParallel with a timed all-reduce communication hook."""

# No "from __future__ import annotations": DDP checks the comm hook's real annotations.
import contextlib
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from harness.core.config import HarnessConfig
from harness.worker.distributed import DistInfo
from harness.worker.engines.base import Engine, autocast, tensor_bytes
from harness.worker.model import param_groups


class CommTimer:
    """DDP comm hook state: wall intervals during which each gradient bucket's all-reduce was in flight.

    The hook does what DDP's default does (average by all-reduce) and notes when each
    bucket was launched and when its future completed. On gloo the completion callback
    runs when the work is done. On NCCL the callback only orders the CUDA stream, so
    CUDA events time the GPU side instead.
    """

    def __init__(self, world_size: int, cuda: bool) -> None:
        self.world_size, self.cuda = world_size, cuda
        self.reset()

    def reset(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.bytes = 0
        self.last_launch: float | None = None
        # Squared gradient norms before (this rank's batch) and after (global batch) the
        # all-reduce: the two-batch inputs of the gradient noise scale, almost for free.
        self.local_sq: list[torch.Tensor] = []
        self.global_sq: list[torch.Tensor] = []

    def grad_sq_norms(self) -> tuple[float, float] | None:
        if not self.local_sq:
            return None
        return float(torch.stack(self.local_sq).sum()), float(torch.stack(self.global_sq).sum())

    def step_intervals(self) -> list[tuple[float, float]]:
        if self.cuda:
            # Turn GPU event pairs into intervals on a common origin (the first start event).
            if not self.events:
                return []
            t0 = self.events[0][0]
            return [(t0.elapsed_time(s) / 1e3, t0.elapsed_time(e) / 1e3) for s, e in self.events]
        return list(self.intervals)


def timed_allreduce_hook(state: CommTimer, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    t0 = time.perf_counter()
    state.last_launch = t0
    tensor = bucket.buffer()
    state.bytes += tensor.numel() * tensor.element_size()
    state.local_sq.append(tensor.detach().float().pow(2).sum())
    start = None
    if state.cuda:
        start = torch.cuda.Event(enable_timing=True)
        start.record()
    tensor.div_(state.world_size)
    fut = dist.all_reduce(tensor, async_op=True).get_future()

    def done(f: torch.futures.Future) -> torch.Tensor:
        reduced = f.value()[0]
        state.global_sq.append(reduced.detach().float().pow(2).sum())
        if state.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            state.events.append((start, end))
        else:
            state.intervals.append((t0, time.perf_counter()))
        return reduced

    return fut.then(done)


class DDPEngine(Engine):
    name = "ddp"
    comm_method = "union of DDP bucket all-reduce in-flight intervals (comm hook)"

    def __init__(self, cfg: HarnessConfig, model: torch.nn.Module, info: DistInfo) -> None:
        t, e = cfg.train, cfg.engine
        self.device, self.dtype, self.grad_clip = info.device, t.dtype, t.grad_clip
        model.to(info.device)
        self.module = model
        self.comm = CommTimer(info.world_size, info.device.type == "cuda")
        self.model: torch.nn.Module = model
        if info.world_size == 1:  # nothing to all-reduce: no wrapper, no copies
            self.comm_method = "none: one process has no gradient communication"
        else:
            self.model = DistributedDataParallel(
                model,
                device_ids=[info.device.index] if info.device.type == "cuda" else None,
                bucket_cap_mb=e.bucket_cap_mb,
                gradient_as_bucket_view=e.gradient_as_bucket_view,
            )
            self.model.register_comm_hook(self.comm, timed_allreduce_hook)
        self.forward = torch.compile(self.model) if t.compile else self.model
        self.optimizer = torch.optim.AdamW(
            param_groups(model, t.weight_decay),
            lr=t.lr,
            betas=(t.beta1, t.beta2),
            fused=info.device.type == "cuda",
        )
        # fp16 needs loss scaling; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=t.dtype == "fp16")
        self.accum = t.grad_accum

    def micro_step(self, x: torch.Tensor, y: torch.Tensor, *, last: bool) -> torch.Tensor:
        sync = (
            self.model.no_sync()
            if not last and isinstance(self.model, DistributedDataParallel)
            else contextlib.nullcontext()
        )
        with sync:
            with autocast(self.device, self.dtype):
                loss = self.forward(x, y)
            self.scaler.scale(loss / self.accum).backward()
        return loss.detach()

    def optimizer_step(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @torch.no_grad()
    def eval_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        with autocast(self.device, self.dtype):
            loss = self.module(x, y)
        self.module.train()
        return loss.float()

    def save_checkpoint(self, path: Path, rank: int) -> None:
        if rank == 0:  # every rank holds the same replica
            state = {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
            }
            torch.save(state, path / "engine.pt")

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "engine.pt", map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])

    def optimizer_state_bytes(self) -> int:
        return tensor_bytes(list(self.optimizer.state.values()))

    def comm_intervals(self) -> list[tuple[float, float]]:
        return self.comm.step_intervals()

    def comm_bytes_per_step(self) -> int:
        return self.comm.bytes

    def last_comm_launch(self) -> float | None:
        return self.comm.last_launch

    def begin_step(self) -> None:
        self.comm.reset()

    def grad_sq_norms(self) -> tuple[float, float] | None:
        sq = self.comm.grad_sq_norms()
        if sq is None or not self.scaler.is_enabled():
            return sq
        scale = float(self.scaler.get_scale()) ** 2  # fp16: the hook saw loss-scaled gradients
        return sq[0] / scale, sq[1] / scale
