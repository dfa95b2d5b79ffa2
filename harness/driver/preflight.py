"""Checks that need the machine the ranks will run on: is the device there, does it support the dtype.

The driver's one door to this machine's devices. The probes themselves live on the worker side
(``harness.worker.hardware``, torch) and are imported lazily, only when a local launch asks.
"""

from __future__ import annotations

from typing import Any

from harness.core import config as C


def check(cfg: Any) -> None:
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


def cuda_device_count() -> int:
    from harness.worker import hardware

    return hardware.cuda_device_count()


def device_name(device: str) -> str:
    from harness.worker import hardware

    return hardware.device_name(device)


def measure_matmul_peak(dtype: str = "fp32", n: int = 1024, seconds: float = 1.0) -> float:
    from harness.worker import hardware

    return hardware.measure_matmul_peak(dtype, n=n, seconds=seconds)
