"""Checkpoints: written atomically, found again on restart, pruned to a retention limit.

Layout: ``<run_dir>/checkpoints/step_<N>/`` holds the engine's state (model, optimizer,
loss scaler; DeepSpeed writes its own sharded files there) and ``trainer.pt`` (step,
loss history, noise-scale averages, RNG states). A checkpoint is first written to a
temporary folder and renamed into place; ``latest`` (a one-line file, itself replaced
atomically) names the newest complete one. A crash mid-save leaves the previous one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.core.io import atomic_write_text
from harness.worker.engines.base import Engine

CKPT_DIR = "checkpoints"
LATEST = "latest"
TRAINER_FILE = "trainer.pt"


def root(run_dir: Path) -> Path:
    return run_dir / CKPT_DIR


def latest(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; if it is missing or incomplete, the newest complete one."""
    pointer = root(run_dir) / LATEST
    if pointer.exists():
        path = root(run_dir) / pointer.read_text().strip()
        if (path / TRAINER_FILE).exists():
            return path
    complete = sorted(p for p in root(run_dir).glob("step_*") if (p / TRAINER_FILE).exists())
    return complete[-1] if complete else None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for p in [*path.rglob("*"), path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(
    run_dir: Path, step: int, engine: Engine, trainer_state: dict[str, Any], rank: int, keep: int
) -> Path:
    """Collective: every rank calls it (DeepSpeed saves shards from every rank)."""
    final = root(run_dir) / f"step_{step:08d}"
    tmp = root(run_dir) / f".tmp_step_{step:08d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(tmp, rank)
    if rank == 0:
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / TRAINER_FILE)
    dist.barrier()
    if rank == 0:
        _fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(root(run_dir) / LATEST, final.name + "\n")
        prune(run_dir, keep)
    dist.barrier()
    return final


def prune(run_dir: Path, keep: int) -> None:
    done = sorted(p for p in root(run_dir).glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def load(path: Path, engine: Engine) -> dict[str, Any]:
    engine.load_checkpoint(path)
    state = torch.load(path / TRAINER_FILE, map_location="cpu", weights_only=False)
    set_rng_state(state["rng"])
    return state
