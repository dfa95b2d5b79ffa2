"""The one process supervisor: every launcher (and commbench) starts its processes through it.

- ``run_process``: start a launcher (torchrun, deepspeed, ...) in a session of its own, tee its
  output into a log, kill the whole process tree at a timeout (a watchdog, so a silent hang ends
  too) or when the driver itself is interrupted.
- ``forward_sigterm``: a SIGTERM to the driver reaches the launchers in flight, whose ranks then
  checkpoint and exit (pre-emption) instead of being orphaned.
- ``run_lock``: one process at a time per run folder.
- ``settle``: the run's final record from the driver's point of view, with the failure's cause
  (``failure_cause``: torchrun's root cause, the ranks' error files, a hung rank named).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.core import rankfiles
from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.core.records import RecordError, read_record, write_record


@dataclass
class Outcome:
    run_dir: Path
    status: str
    returncode: int
    record: dict


# ----------------------------------------------------------------------------- processes

# Launcher processes in flight; a SIGTERM to the driver is passed on to them once, so their
# ranks checkpoint and exit (pre-emption), instead of the driver dying and orphaning them.
ACTIVE: set[int] = set()
STOPPING = threading.Event()


def forward_sigterm() -> None:
    """Install (in the main thread) the handler that passes SIGTERM on to the runs in flight."""

    def handler(signum: int, frame: Any) -> None:
        if STOPPING.is_set():
            return
        STOPPING.set()
        for pid in list(ACTIVE):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


class RunLocked(RuntimeError):
    """Another process (another sweep, another node's driver) is running this run right now."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock per run folder, held while the run is in flight (released if the holder dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is being run by another process") from None
        yield


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_tree(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM torchrun (it forwards to its ranks), then SIGKILL whatever is left of the tree.

    torchrun starts each rank in a session of its own, so killing its process group is not enough.
    """
    procs = [pid, *_descendants(pid)]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in procs):
        time.sleep(0.1)
    for p in [*procs, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def open_log(log_path: Path, cmd: list[str]) -> IO[str]:
    """A launcher's log, opened for writing, that starts with the command line (``$ cmd``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - the caller closes it
    log.write("$ " + shlex.join(cmd) + "\n")
    log.flush()
    return log


def run_process(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    timeout_s: float | None,
    quiet: bool = False,
    echo: Callable[[str], bool] | None = None,
) -> tuple[int, bool]:
    """Run a launcher (torchrun, deepspeed, ...), teeing its output into log_path.

    Returns (exit status, timed out). A watchdog kills the whole process tree at timeout_s,
    so a silent hang ends too; a SIGTERM to the driver reaches the launcher (``ACTIVE``),
    whose ranks then checkpoint and exit. Unless quiet, the output is echoed to stdout
    (only the lines ``echo`` accepts, when given).
    """
    with open_log(log_path, cmd) as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        ACTIVE.add(proc.pid)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            kill_tree(proc.pid)

        watchdog = threading.Timer(timeout_s, kill) if timeout_s else None
        if watchdog:
            watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if not quiet and (echo is None or echo(line)):
                    sys.stdout.write(line)
                    sys.stdout.flush()
            rc = proc.wait()
        except BaseException:  # Ctrl-C in the driver: take the ranks down with it
            kill_tree(proc.pid)
            raise
        finally:
            ACTIVE.discard(proc.pid)
            if watchdog:
                watchdog.cancel()
    return rc, timed_out.is_set()


def supervise(
    cfg: HarnessConfig,
    run_dir: Path,
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    *,
    quiet: bool,
    timeout_s: float | None = None,
    wait_s: float = 0.0,
) -> Outcome:
    """Run one launcher command for a prepared run folder and settle its record."""
    start = time.time()
    rc, timed_out = run_process(cmd, env, log, timeout_s=timeout_s, quiet=quiet)
    return settle(cfg, run_dir, rc, logs=[log], start=start, timed_out=timed_out, wait_s=wait_s)


# ----------------------------------------------------------------------------- the final record

# Final records rank 0 writes itself (done, or checkpointed on SIGTERM): a driver never overwrites them.
FINAL = ("completed", "preempted")


def _read(run_dir: Path) -> dict | None:
    try:
        return read_record(run_dir)
    except RecordError:
        return None


def settle(
    cfg: HarnessConfig,
    run_dir: Path,
    rc: int,
    *,
    logs: list[Path],
    start: float,
    timed_out: bool = False,
    wait_s: float = 0.0,
    cause: dict | None = None,
) -> Outcome:
    """The run's final record, from this driver's point of view.

    Rank 0 writes the completed (or preempted) record on whichever node it ran. When this
    node's ranks all exited cleanly, wait up to ``wait_s`` for it on the shared filesystem.
    Otherwise record the failure with its cause (a rank's error, else ``cause``: what the
    launcher itself saw), but never overwrite a completed record: another node's driver can
    finish after rank 0 wrote it.
    """
    record = _read(run_dir)
    deadline = time.time() + (wait_s if rc == 0 and not timed_out else 0.0)
    while (record is None or record.get("status") not in FINAL) and time.time() < deadline:
        time.sleep(0.5)
        record = _read(run_dir)
    if record is not None and record.get("status") in FINAL:
        return Outcome(run_dir, record["status"], rc, record)
    failure: dict[str, Any]
    if timed_out:
        failure = {
            "type": "Timeout",
            "message": f"run exceeded launcher.timeout_s={cfg.launcher.timeout_s} s and was killed",
        }
    elif rc == 0:
        failure = {
            "type": "MissingRecord",
            "message": f"every rank on this node exited cleanly but no completed record appeared in "
            f"{run_dir} within {wait_s:g} s; results_dir must be on a filesystem all nodes share",
        }
    else:
        failure = failure_cause(run_dir, logs) or dict(cause or {})
    failure.update(returncode=rc, log_tail="".join(tail(p) for p in logs))
    record = plan.failed_record(cfg, failure, duration_s=time.time() - start)
    latest = _read(run_dir)
    if latest is not None and latest.get("status") in FINAL:
        return Outcome(run_dir, latest["status"], rc, latest)
    write_record(run_dir, record)
    return Outcome(run_dir, record["status"], rc, record)


def summary_line(rec: dict) -> str:
    """One line saying how a run ended: its losses and throughput, or its failure and cause."""
    if rec["status"] == "preempted":
        return f"PRE-EMPTED {rec['run_id']}: checkpoint at step {rec['checkpoint']['step']}; run the same command to resume"
    if rec["status"] != "completed":
        f = rec.get("failure") or {}
        where = f"rank {f['rank']}: " if "rank" in f else ""
        return f"FAILED {rec['run_id']}: {where}{f.get('type', '?')}: {f.get('message', '')}"
    tr, th, ti = rec["training"], rec["throughput"], rec["timing"]
    return (
        f"completed {rec['run_id']}: loss {tr['initial_loss']:.3f} -> {tr['final_train_loss']:.3f}, "
        f"held-out {tr['heldout_loss']:.3f}; {th['tokens_per_s']:,.0f} tok/s "
        f"({th['tokens_per_s_per_device']:,.0f}/device), {th['model_tflops_per_device']:.3f} TFLOP/s/device, "
        f"MFU {th['mfu']:.1%} vs {th['peak_source']}; step median {ti['step_time_median_s'] * 1e3:.1f} ms, "
        f"comm {ti['comm_time_median_s'] * 1e3:.1f} ms"
    )


# ----------------------------------------------------------------------------- failure analysis


def root_cause(log_text: str) -> dict | None:
    """torchrun's "Root Cause (first observed failure)": the rank whose process ended first, and how."""
    _, sep, rest = log_text.partition("Root Cause (first observed failure)")
    if not sep:
        return None
    rank = re.search(r"rank\s*:\s*(\d+)", rest)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", rest)
    if not rank or not code:
        return None
    return {"rank": int(rank.group(1)), "exitcode": int(code.group(1))}


def failure_cause(run_dir: Path, logs: list[Path]) -> dict:
    """Which rank failed first and why, with a hung rank named instead of the peer that timed out on it."""
    cause = _first_failure(run_dir, logs)
    progress = rankfiles.last_progress(run_dir)
    if progress and min(progress.values()) < max(progress.values()):
        cause["last_step_per_rank"] = {r: p // 2 for r, p in progress.items()}
        behind = sorted(r for r, p in progress.items() if p == min(progress.values()))
        if (
            re.search(r"timed? ?out", cause.get("message", ""), re.IGNORECASE)
            and cause.get("rank") not in behind
        ):
            step = progress[behind[0]] // 2
            cause.update(
                waiting_rank=cause.get("rank"),
                rank=behind[0],
                type="Hang",
                message=f"rank {behind[0]} stopped in step {step} while rank {cause.get('rank')} "
                f"waited for it: {cause.get('message', '')[:300]}",
            )
    return cause


def _first_failure(run_dir: Path, logs: list[Path]) -> dict:
    """The rank whose process ended first (torchrun's root cause, from any node's log): its error
    file, else how its process ended; else the earliest error file any rank wrote."""
    for log in logs:
        rc = root_cause(tail(log, lines=200))
        if rc is None:
            continue
        own = run_dir / rankfiles.ERRORS_DIR / f"rank{rc['rank']}.json"
        if own.exists():
            try:
                return json.loads(own.read_text())
            except (OSError, json.JSONDecodeError):
                pass
        code = rc["exitcode"]
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            return {
                "rank": rc["rank"],
                "type": "Signal",
                "message": f"rank {rc['rank']} was killed by {name}",
            }
        return {
            "rank": rc["rank"],
            "type": "ProcessExit",
            "message": f"rank {rc['rank']} exited with code {code} without a Python error",
        }
    return rankfiles.first_error(run_dir) or {}


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""
