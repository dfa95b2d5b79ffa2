"""What this machine has: devices, dtype support, and a measured CPU matmul peak."""

from __future__ import annotations

import functools
import time


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def supports_dtype(device: str, dtype: str) -> bool:
    if dtype == "fp32":
        return True
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return False
        return torch.cuda.is_bf16_supported() if dtype == "bf16" else True
    # CPU: torch emulates bf16 anywhere, but only native support makes it a fair benchmark.
    if dtype == "bf16":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return bool(cpu_flags() & {"avx512_fp16", "amx_fp16"})


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def measure_matmul_peak(dtype: str = "fp32", n: int = 1024, seconds: float = 1.0) -> float:
    """Best FLOP/s of square matmuls on the CPU in this process's thread setting.

    Used as the MFU denominator on CPUs, whose dense peak we do not know; always
    labelled 'measured' in the record. Best of repeated trials, so it is an upper
    reference that the training step can be compared against.
    """
    import torch

    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, dtype=tdtype)
    b = torch.randn(n, n, dtype=tdtype)
    for _ in range(2):
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        dt = time.perf_counter() - t0
        best = max(best, 2.0 * n**3 / dt)
    return best
