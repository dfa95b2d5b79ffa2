"""``harness train [--dry-run] [--timeout S] [KEY=VALUE ...]``: one data-parallel training run.

The config is composed and validated here, once, and checked against this machine; the
launcher (``launcher=local|multinode|deepspeed|slurm``) starts the ranks, which read the
frozen ``config.yaml``. Exit 0 when the run completed, the pre-emption code when it was
checkpointed on SIGTERM, 1 when it failed, 2 when the command line or config was refused.
"""

from __future__ import annotations

from typing import cast

from harness.commands._hydra import Command, Flag, Invocation
from harness.core import config as C
from harness.core.config import HarnessConfig
from harness.core.rankfiles import PREEMPTED_EXIT
from harness.datasets import DataError
from harness.driver import launch, preflight

COMMAND = Command(
    "train",
    "One data-parallel training run (torchrun with nproc processes per node), ending in a run record.",
    flags=[
        Flag("--dry-run", "print the command and environment, start nothing", switch=True),
        Flag("--timeout", "kill the run after this many seconds", key="launcher.timeout_s", metavar="S"),
    ],
    errors=(DataError,),
    epilog="example: harness train model=gpt-0.8m nproc=2 train.tokens=2000000",
)


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


def run(inv: Invocation) -> int:
    cfg = cast(HarnessConfig, inv.cfg)  # a DictConfig typed by HarnessConfig
    C.validate(cfg)
    preflight.check(cfg)
    launch.forward_sigterm()
    if inv.args.dry_run:
        print(launch.dry_run(cfg))
        return 0
    outcome = launch.run(cfg)
    print(launch.summary_line(outcome.record))
    print(f"record: {outcome.run_dir / 'record.json'}")
    return {"completed": 0, "preempted": PREEMPTED_EXIT}.get(outcome.status, 1)
