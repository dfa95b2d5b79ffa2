"""The files ranks leave in their run folder for the driver: the one protocol between them.

- ``errors/rank<r>.json``: a rank that failed writes its exception there, so the driver can say
  which rank failed and why (``first_error``).
- ``progress/rank<r>``: each rank's current step (``Heartbeat``), so that when a collective times
  out the driver can tell which rank stopped and which one merely waited (``last_progress``).
- exit status ``PREEMPTED_EXIT``: checkpointed on SIGTERM; the same command resumes.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from harness.core.io import write_json

ERRORS_DIR = "errors"
PROGRESS_DIR = "progress"
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: checkpointed on SIGTERM; run again to resume


class Heartbeat:
    """Each rank's current step in ``progress/rank<r>`` (one pwrite per step), so that when a
    collective times out the driver can tell which rank stopped and which one merely waited."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        (run_dir / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
        self.fd = os.open(
            run_dir / PROGRESS_DIR / f"rank{rank}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )

    def beat(self, step: int, done: bool = False) -> None:
        """Progress counter 2*step (step started) or 2*step + 1 (step's optimizer update done)."""
        os.pwrite(self.fd, f"{2 * step + int(done):>12d}\n".encode(), 0)


def last_progress(run_dir: Path) -> dict[int, int]:
    """Each rank's last progress counter (see Heartbeat.beat)."""
    out = {}
    for path in (run_dir / PROGRESS_DIR).glob("rank*"):
        try:
            out[int(path.name[4:])] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return out


def write_error(run_dir: Path, rank: int, exc: BaseException) -> None:
    err = {
        "rank": rank,
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
        "time": time.time(),
    }
    write_json(run_dir / ERRORS_DIR / f"rank{rank}.json", err)


def first_error(run_dir: Path) -> dict | None:
    """The earliest rank error: later ones are usually peers noticing the first one's death."""
    errors = []
    for path in sorted((run_dir / ERRORS_DIR).glob("rank*.json")):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return min(errors, key=lambda e: e.get("time", 0.0)) if errors else None
