"""Shared test set-up: a persistent cache for the prepared corpus and compiled ops, and a run helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Prepared corpus and JIT-compiled ops are paid for once per machine, not once per test.
os.environ.setdefault("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(os.environ["HARNESS_CACHE"]) / "torch_extensions"))
os.environ.setdefault("WANDB_MODE", "disabled")

# A run small enough for a test on 2 cores: ~0.1M-parameter model, a few dozen steps.
SMALL = [
    "model=gpt-0.1m",
    "train.seq_len=64",
    "train.micro_batch=4",
    "train.tokens=8192",
    "train.eval_tokens=4096",
    "train.log_interval=1",
    "train.timing_warmup_steps=1",
]


@pytest.fixture
def run_train(tmp_path):
    """Compose, validate and run one training run through the real driver; returns the Outcome."""
    from harness.core import config as C
    from harness.driver import launch, preflight

    def _run(*overrides: str, quiet: bool = True):
        cfg = C.compose([*SMALL, f"results_dir={tmp_path / 'results'}", *overrides])
        C.validate(cfg)
        preflight.check(cfg)
        return launch.run(cfg, quiet=quiet)

    return _run


def metrics_rows(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
