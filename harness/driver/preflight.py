"""Checks that need the machine the ranks will run on: is the device there, does it support the dtype.

The driver's one door to this machine's devices. The probes themselves live on the worker side
(``harness.worker.hardware``, torch) and are imported lazily, only when a local launch asks.
"""

from __future__ import annotations

from typing import cast

from harness.core import config as C
from harness.core.config import HarnessConfig


def load_validated(overrides: list[str]) -> HarnessConfig:
    """Compose the run config from Hydra overrides, validate it, and check this machine can run it."""
    cfg = cast(HarnessConfig, C.compose(overrides))  # a DictConfig with HarnessConfig's fields
    C.validate(cfg)
    check(cfg)
    return cfg


def check(cfg: HarnessConfig) -> None:
    """Raise ConfigError when this machine cannot run cfg's ranks (device count, dtype support)."""
    from harness.worker import hardware

    c, t = cfg.cluster, cfg.train
    if c.device == "cuda":
        n = hardware.cuda_device_count()
        if n == 0:
            C.fail("cluster", c.name, "needs CUDA devices and this machine has none; use cluster=cpu here")
        if cfg.nproc > n:
            C.fail("nproc", cfg.nproc, f"at most {n} (CUDA devices on this machine)")
    if t.dtype in ("bf16", "fp16") and not hardware.supports_dtype(c.device, t.dtype):
        C.fail(
            "train.dtype",
            t.dtype,
            f"this {c.device} has no native {t.dtype} support; allowed here: "
            + ", ".join(d for d in C.DTYPES if hardware.supports_dtype(c.device, d)),
        )


def torch_version() -> str:
    """The installed torch's version, without importing torch."""
    from importlib.metadata import version

    return version("torch")


def cuda_device_count() -> int:
    from harness.worker import hardware

    return hardware.cuda_device_count()


def device_name(device: str) -> str:
    from harness.worker import hardware

    return hardware.device_name(device)


def measure_matmul_peak(dtype: str = "fp32", n: int = 1024, seconds: float = 1.0) -> float:
    from harness.worker import hardware

    return hardware.measure_matmul_peak(dtype, n=n, seconds=seconds)
