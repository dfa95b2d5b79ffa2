"""The driver's entry: compose + validate the config once, then start the ranks through a launcher.

``harness train`` (``harness.commands.train``) composes in the driver only; the ranks read the
frozen ``config.yaml``. Whatever happens to the ranks, the run folder ends with a record
that says completed or failed (with the failing rank and its error).

``run(cfg)`` and ``dry_run(cfg)`` dispatch to ``harness.driver.launchers.<cfg.launcher.name>``
(local, multinode, deepspeed, slurm), which start their processes through ``supervisor``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from harness.core import config as C
from harness.core.config import HarnessConfig
from harness.driver.launchers.common import prepare_run
from harness.driver.launchers.local import run_local
from harness.driver.preflight import load_validated
from harness.driver.supervisor import Outcome, RunLocked, forward_sigterm, run_lock, summary_line

# Importable from here as before: the launchers' shared pieces that callers of run() use.
__all__ = [
    "Outcome",
    "RunLocked",
    "dry_run",
    "forward_sigterm",
    "launcher",
    "load_validated",
    "prepare_run",
    "run",
    "run_local",
    "run_lock",
    "summary_line",
]


def launcher(cfg: HarnessConfig) -> ModuleType:
    """The launcher module of cfg.launcher.name: ``run(cfg, quiet)`` and ``dry_run(cfg)``."""
    name = cfg.launcher.name
    try:
        return importlib.import_module(f"harness.driver.launchers.{name}")
    except ModuleNotFoundError:
        raise C.ConfigError(
            f"launcher={name!r} is not available; allowed: {', '.join(C.available('launcher'))}"
        ) from None


def run(cfg: HarnessConfig, *, quiet: bool = False) -> Outcome:
    """Run one config through its launcher (cfg.launcher.name)."""
    return launcher(cfg).run(cfg, quiet=quiet)


def dry_run(cfg: HarnessConfig) -> str:
    """The exact commands and environment the launcher would use; starts nothing."""
    return launcher(cfg).dry_run(cfg)
