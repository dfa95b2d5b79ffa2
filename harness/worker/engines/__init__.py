"""Training engines behind one interface: ``build_engine(cfg, model, dist_info)``."""

from __future__ import annotations

import torch

from harness.core.config import HarnessConfig
from harness.worker.distributed import DistInfo
from harness.worker.engines.base import Engine


def build_engine(cfg: HarnessConfig, model: torch.nn.Module, info: DistInfo) -> Engine:
    name = cfg.engine.name
    if name == "ddp":
        from harness.worker.engines.ddp import DDPEngine

        return DDPEngine(cfg, model, info)
    if name == "deepspeed":
        from harness.worker.engines.deepspeed_engine import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model, info)
    raise ValueError(f"engine.name={name!r} is not allowed: one of ddp, deepspeed")
