"""What the cluster launchers share: the node environment, running a launcher command under
a watchdog, and settling the run record, whichever node's driver finishes first.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from typing import Any

from harness.core import runspec as plan
from harness.core.records import write_record
from harness.driver import launch


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
