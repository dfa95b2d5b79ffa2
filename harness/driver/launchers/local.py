"""torchrun on this machine (``launcher=local``, the default): one node, standalone rendezvous."""

from __future__ import annotations

from pathlib import Path

from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.driver import supervisor, torchrun
from harness.driver.launchers import common
from harness.driver.supervisor import Outcome

LOG_FILE = "train.log"


def torchrun_command(cfg: HarnessConfig, run_dir: Path) -> list[str]:
    return torchrun.train_command(run_dir, nproc=int(cfg.nproc))


def run_local(cfg: HarnessConfig, *, timeout_s: float | None = None, quiet: bool = False) -> Outcome:
    """Run one training run with torchrun on this machine and return its final status."""
    with supervisor.run_lock(plan.run_dir(cfg)):
        run_dir = common.prepare_run(cfg)
        return supervisor.supervise(
            cfg,
            run_dir,
            torchrun_command(cfg, run_dir),
            common.worker_env(cfg),
            run_dir / LOG_FILE,
            timeout_s=timeout_s,
            quiet=quiet,
        )


def run(cfg: HarnessConfig, quiet: bool = False) -> Outcome:
    return run_local(cfg, timeout_s=cfg.launcher.timeout_s, quiet=quiet)


def dry_run(cfg: HarnessConfig) -> str:
    return common.shell_line(
        common.env_changes(common.worker_env(cfg)), torchrun_command(cfg, plan.run_dir(cfg))
    )
