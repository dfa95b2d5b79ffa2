"""Where per-step metrics go: ``metrics.jsonl`` always (rank 0), wandb when enabled (offline by default).

Every sink takes rows ``log(step, row)`` and is ``close``d once with the run's summary; the
other ranks get no sink (``NullSink``): only rank 0 logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from harness.core import config as C
from harness.core import runspec
from harness.core.config import HarnessConfig
from harness.core.io import atomic_write_text
from harness.core.records import METRICS_FILE, append_jsonl


class MetricsSink(Protocol):
    def log(self, step: int, row: Mapping[str, Any]) -> None: ...

    def close(self, summary: Mapping[str, Any] | None = None) -> None: ...


class NullSink:
    def log(self, step: int, row: Mapping[str, Any]) -> None:
        pass

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        pass


class JsonlSink:
    """One JSON object a line, ``{"step": ..., **row}``. On resume, the rows logged after the
    checkpoint (steps >= resume_step) are dropped first, so the file holds each step once."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        kept = []
        if resume_step and path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] < resume_step
            ]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        append_jsonl(self.path, {"step": step, **row})

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        pass


class WandbSink:
    """A wandb run in the run folder (``wandb.mode``, offline by default), named by the run id."""

    def __init__(self, cfg: HarnessConfig, run_dir: Path) -> None:
        import wandb

        self.run = wandb.init(
            project=cfg.wandb.project,
            mode=cfg.wandb.mode,
            dir=str(run_dir),
            name=runspec.run_id(cfg),
            config=C.to_container(cfg),
        )

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        self.run.log(dict(row), step=step)

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        if summary:
            self.run.summary.update(dict(summary))
        self.run.finish()


class FanOut:
    """Every row to each of several sinks, in order."""

    def __init__(self, sinks: list[MetricsSink]) -> None:
        self.sinks = sinks

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(step, row)

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        for sink in self.sinks:
            sink.close(summary)


def open_sinks(cfg: HarnessConfig, run_dir: Path, rank: int, resume_step: int = 0) -> MetricsSink:
    """The run's sinks: on rank 0 the JSONL file (and wandb when enabled); elsewhere none."""
    if rank != 0:
        return NullSink()
    sinks: list[MetricsSink] = [JsonlSink(run_dir / METRICS_FILE, resume_step)]
    if cfg.wandb.enabled:
        sinks.append(WandbSink(cfg, run_dir))
    return FanOut(sinks)
