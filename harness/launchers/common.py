"""What the cluster launchers share: the node environment, running a launcher command under
a watchdog, and settling the run record, whichever node's driver finishes first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import launch, plan
from harness.results import RecordError, read_record, write_record


def available_cpus() -> int:
    """CPUs for this node's ranks: the SLURM task's, else those this process may run on."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def node_env(cfg: Any, cpus: int | None = None) -> dict[str, str]:
    """The ranks' environment on one node: ``launch.worker_env`` plus the cluster networking."""
    env = launch.worker_env(cfg)
    if cfg.cluster.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # The node's allocated cores shared between its ranks (os.cpu_count() sees the whole host).
        env["OMP_NUM_THREADS"] = str(max(1, (cpus or available_cpus()) // int(cfg.nproc)))
    if cfg.launcher.socket_ifname:
        # Bind gloo and NCCL to the cluster network, not to whatever interface they pick first.
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = cfg.launcher.socket_ifname
    return env


def endpoint_error(host: str, port: int, timeout_s: float) -> str | None:
    """None once host:port accepts a TCP connection; else, after timeout_s of retries, why not.

    Refused connections are retried too: the node serving the endpoint may still be starting.
    """
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"{host}:{port} did not answer within {timeout_s:g} s (last attempt: {last})"
        try:
            with socket.create_connection((host, port), timeout=min(5.0, remaining)):
                return None
        except OSError as e:  # refused, unreachable, timed out, unknown host
            last = e.strerror or type(e).__name__
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def unreachable_outcome(cfg: Any, what: str, error: str) -> launch.Outcome:
    """A run that could not start because a peer did not answer: recorded as failed, nothing started."""
    run_dir = launch.prepare_run(cfg)
    record = plan.failed_record(cfg, {"type": "EndpointUnreachable", "message": f"{what}: {error}"})
    write_record(run_dir, record)
    return launch.Outcome(run_dir, "failed", 2, record)


def env_changes(env: dict[str, str]) -> dict[str, str]:
    """The variables a launcher sets on top of the caller's environment (what a dry run shows)."""
    return {k: v for k, v in sorted(env.items()) if os.environ.get(k) != v}


def shell_line(env: dict[str, str], cmd: list[str]) -> str:
    """``K=V ... cmd`` as one copy-pasteable shell line."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd)])


def node_name(cfg: Any) -> str:
    return cfg.launcher.local_addr or socket.gethostname()


def run_command(cmd: list[str], env: dict[str, str], log_path: Path, *, timeout_s: float | None,
                quiet: bool) -> tuple[int, bool]:
    """Run a launcher, teeing its output into log_path, as ``launch.run_local`` runs torchrun.

    Returns (exit status, timed out). A watchdog kills the whole process tree at timeout_s,
    so a silent hang (a peer node that never joins) ends too; a SIGTERM to the driver
    reaches the launcher (``launch.ACTIVE``), whose ranks then checkpoint and exit.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        launch.ACTIVE.add(proc.pid)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            launch.kill_tree(proc.pid)

        watchdog = threading.Timer(timeout_s, kill) if timeout_s else None
        if watchdog:
            watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if not quiet:
                    sys.stdout.write(line)
            rc = proc.wait()
        except BaseException:  # Ctrl-C in the driver: take the ranks down with it
            launch.kill_tree(proc.pid)
            raise
        finally:
            launch.ACTIVE.discard(proc.pid)
            if watchdog:
                watchdog.cancel()
    return rc, timed_out.is_set()


# Final records rank 0 writes itself (done, or checkpointed on SIGTERM): a driver never overwrites them.
FINAL = ("completed", "preempted")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _read(run_dir: Path) -> dict | None:
    try:
        return read_record(run_dir)
    except RecordError:
        return None


def failure_cause(run_dir: Path, logs: list[Path]) -> dict:
    """Which rank failed first and why: torchrun's root cause in a node log, that rank's error file,
    else the earliest error file any rank wrote."""
    from harness.train import ERRORS_DIR, first_error

    for log in logs:
        cause = launch.root_cause(tail(log, lines=200))
        if cause is None:
            continue
        own = run_dir / ERRORS_DIR / f"rank{cause['rank']}.json"
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return json.loads(own.read_text())
        return {"rank": cause["rank"], "type": "ProcessExit",
                "message": f"rank {cause['rank']} ended with exit code {cause['exitcode']} without a Python error"}
    return first_error(run_dir) or {}


def settle(cfg: Any, run_dir: Path, rc: int, *, logs: list[Path], start: float, timed_out: bool = False,
           wait_s: float = 0.0, cause: dict | None = None) -> launch.Outcome:
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
        return launch.Outcome(run_dir, record["status"], rc, record)
    if timed_out:
        failure = {"type": "Timeout", "message": f"run exceeded launcher.timeout_s={cfg.launcher.timeout_s} s "
                                                 "and was killed"}
    elif rc == 0:
        failure = {"type": "MissingRecord",
                   "message": f"every rank on this node exited cleanly but no completed record appeared in "
                              f"{run_dir} within {wait_s:g} s; results_dir must be on a filesystem all nodes share"}
    else:
        failure = failure_cause(run_dir, logs) or dict(cause or {})
    failure.update(returncode=rc, log_tail="".join(tail(p) for p in logs))
    record = plan.failed_record(cfg, failure, duration_s=time.time() - start)
    latest = _read(run_dir)
    if latest is not None and latest.get("status") in FINAL:
        return launch.Outcome(run_dir, latest["status"], rc, latest)
    write_record(run_dir, record)
    return launch.Outcome(run_dir, record["status"], rc, record)
