"""Process-group set-up from the launcher's environment (torchrun, SLURM, DeepSpeed launcher)."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str


def env_rank_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun / DeepSpeed launcher, else SLURM, else a single process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def init(device_kind: str, timeout_s: float) -> DistInfo:
    rank, local_rank, world_size = env_rank_info()
    if device_kind == "cuda":
        # Only on CUDA machines, and only from LOCAL_RANK: one process per GPU.
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    return DistInfo(rank, local_rank, world_size, device, backend)


def shutdown(together: bool = False) -> None:
    """Destroy the process group. ``together`` (after a clean run): a barrier first, so no rank
    tears gloo down while a peer's last collective or DDP comm-hook callback is still in flight,
    seen here as an abort at exit ("terminate called without an active exception"). Not after
    a failure: the failing rank must exit at once so torchrun ends the others."""
    if dist.is_initialized():
        if together:
            import gc

            with contextlib.suppress(Exception):
                dist.barrier()
            gc.collect()  # DDP reducers and their hook futures go before the process group they use
        dist.destroy_process_group()
