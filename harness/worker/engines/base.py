"""The engine interface: what the training loop needs from DDP, DeepSpeed, ..."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Engine(ABC):
    name: str
    zero_stage: int = 0
    comm_method: str = "not measured"  # how comm_intervals() are measured, for the record
    module: torch.nn.Module  # the bare model (unwrapped)

    @abstractmethod
    def micro_step(self, x: torch.Tensor, y: torch.Tensor, *, last: bool) -> torch.Tensor:
        """Forward + backward of one micro-batch; gradients are synchronised on the last one."""

    @abstractmethod
    def optimizer_step(self, lr: float) -> float:
        """Clip, step, zero the gradients; returns the global gradient norm before clipping."""

    @abstractmethod
    def eval_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch in eval mode (no gradients)."""

    @abstractmethod
    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer state held by this rank."""

    def full_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter, whole, on CPU (engines that shard parameters override it: a collective)."""
        return {n: p.detach().float().cpu().clone() for n, p in self.module.named_parameters()}

    def save_checkpoint(self, path: Path, rank: int) -> None:
        """Write this engine's state (model, optimizer, scaler) under path; called on every rank."""
        raise NotImplementedError(f"engine {self.name} cannot save checkpoints")

    def load_checkpoint(self, path: Path) -> None:
        raise NotImplementedError(f"engine {self.name} cannot load checkpoints")

    def begin_step(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called before each optimizer step's first micro-batch."""

    def comm_intervals(self) -> list[tuple[float, float]]:
        """Gradient-communication intervals of the last step (seconds, perf_counter clock)."""
        return []

    def grad_sq_norms(self) -> tuple[float, float] | None:
        """(|local gradient|^2, |all-reduced gradient|^2) of the last step, when the engine sees both."""
        return None

    def comm_bytes_per_step(self) -> int:
        return 0

    def last_comm_launch(self) -> float | None:
        return None


def autocast(device: torch.device, dtype: str):
    if dtype in AUTOCAST_DTYPES:
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[dtype])
    return contextlib.nullcontext()


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0
