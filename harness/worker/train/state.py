"""What the training loop carries from step to step, what a checkpoint saves of it, and when.

A checkpoint's ``trainer.pt`` holds ``RunState.trainer_state()`` (loss history, held-out curve,
noise-scale averages) beside the step and RNG states that ``checkpoint.save`` adds.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from harness.core.config import TrainConfig
from harness.worker import checkpoint
from harness.worker.engines import Engine
from harness.worker.noise_scale import NoiseScaleEMA


class Diverged(RuntimeError):
    """The loss became NaN or Inf."""


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written at ``step`` and the run should be resumed."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"pre-empted: checkpoint at step {step}")
        self.step, self.path = step, path


class StopRequest:
    """Set by SIGTERM (SLURM's pre-emption warning; torchrun forwards it). The loop acts on it at
    the next log boundary, where the ranks agree on it."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    @classmethod
    def on_sigterm(cls) -> StopRequest:
        stop = cls()
        signal.signal(signal.SIGTERM, stop._handle)
        return stop


@dataclass
class RunState:
    """The run's history so far; ``start_step`` is where this process began (0, or a checkpoint's)."""

    start_step: int = 0
    losses: list[float] = field(default_factory=list)  # the logged (all-ranks mean) loss of every step
    heldout: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    noise: NoiseScaleEMA = field(default_factory=NoiseScaleEMA)

    def trainer_state(self) -> dict[str, Any]:
        return {"losses": self.losses, "heldout": self.heldout, "noise": (self.noise.g2, self.noise.trace)}

    @classmethod
    def from_trainer_state(cls, saved: dict[str, Any]) -> RunState:
        state = cls(saved["step"], saved["losses"], saved["heldout"])
        state.noise.g2, state.noise.trace = saved["noise"]
        return state


def resume(run_dir: Path, engine: Engine, rank: int) -> RunState:
    """The latest checkpoint's state, loaded into engine; a fresh state when there is none."""
    path = checkpoint.latest(run_dir)
    if path is None:
        return RunState()
    state = RunState.from_trainer_state(checkpoint.load(path, engine))
    if rank == 0:
        print(f"resuming from {path} (step {state.start_step})", flush=True)
    return state


class Checkpointer:
    """When a checkpoint is due (every N steps, or rank 0's wall clock), and saving one (a collective)."""

    def __init__(self, run_dir: Path, engine: Engine, rank: int, t: TrainConfig) -> None:
        self.run_dir, self.engine, self.rank = run_dir, engine, rank
        self.interval_s, self.interval_steps, self.keep = (
            t.checkpoint_interval_s,
            t.checkpoint_interval_steps,
            t.keep_checkpoints,
        )
        self.last_save = time.time()

    def time_due(self) -> bool:
        """Rank 0's decision (the others follow it at the log boundary): the interval has passed."""
        return self.rank == 0 and self.interval_s > 0 and time.time() - self.last_save > self.interval_s

    def step_due(self, step: int) -> bool:
        return bool(self.interval_steps and (step + 1) % self.interval_steps == 0)

    def save(self, next_step: int, state: RunState) -> Path:
        path = checkpoint.save(
            self.run_dir, next_step, self.engine, state.trainer_state(), self.rank, self.keep
        )
        self.last_save = time.time()
        return path
