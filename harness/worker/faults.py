"""Test-only fault injection, so the failure paths are exercised by real runs.

``HARNESS_FAULT=<kind>@<rank>:<step>`` makes that rank misbehave at that step:
``raise`` (an exception), ``exit`` (os._exit(3), a crash with no traceback),
``kill`` (SIGKILL to itself), ``hang`` (sleep forever), ``nan`` (a NaN loss),
``oom`` (the allocator's out-of-memory error: torch.OutOfMemoryError).
Unset in normal use; read once per process.
"""

from __future__ import annotations

import os
import signal
import time

KINDS = ("raise", "exit", "kill", "hang", "nan", "oom")


class InjectedFault(RuntimeError):
    pass


def _parse(spec: str) -> tuple[str, int, int] | None:
    if not spec:
        return None
    try:
        kind, where = spec.split("@")
        rank, step = where.split(":")
        if kind not in KINDS:
            raise ValueError
        return kind, int(rank), int(step)
    except ValueError:
        raise ValueError(
            f"HARNESS_FAULT={spec!r} is not allowed: '<kind>@<rank>:<step>', kind in {KINDS}"
        ) from None


_SPEC = _parse(os.environ.get("HARNESS_FAULT", ""))


def inject(step: int, rank: int) -> bool:
    """Misbehave if this (rank, step) is the configured one; returns True when the loss should be NaN."""
    if _SPEC is None or (_SPEC[1], _SPEC[2]) != (rank, step):
        return False
    kind = _SPEC[0]
    if kind == "raise":
        raise InjectedFault(f"injected fault at rank {rank}, step {step}")
    if kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"injected out-of-memory at rank {rank}, step {step}")
    if kind == "exit":
        os._exit(3)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while True:
            time.sleep(60)
    return kind == "nan"
