"""What the launchers share: the run folder they prepare, the ranks' environment on a node, and
the checks and shell lines around a launcher command.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
from pathlib import Path

from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.core.records import write_record
from harness.datasets import default_cache_dir, resolve_source
from harness.driver.supervisor import Outcome


def prepare_run(cfg: HarnessConfig) -> Path:
    """Folder, frozen config and a 'running' record; data prepared once here, not in every rank."""
    resolve_source(cfg.data.source, cfg.data.cache_dir, cfg.data.heldout_frac)
    run_dir = plan.run_dir(cfg)
    shutil.rmtree(run_dir / "errors", ignore_errors=True)
    plan.write_config(cfg, run_dir)
    write_record(run_dir, plan.base_record(cfg, "running"))
    return run_dir


def worker_env(cfg: HarnessConfig) -> dict[str, str]:
    """The ranks' environment on this machine (``launcher=local``)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cfg.cluster.device == "cpu":
        # Share the cores between the ranks instead of oversubscribing them.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(cfg.nproc))))
    if cfg.engine.name == "deepspeed":
        if cfg.cluster.device == "cpu":
            env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed would otherwise look for CUDA
        # DeepSpeed JIT-compiles small ops with g++ (~20 s on CPU): compile once, into the cache.
        env.setdefault(
            "TORCH_EXTENSIONS_DIR", str(default_cache_dir(cfg.data.cache_dir) / "torch_extensions")
        )
    return env


def available_cpus() -> int:
    """CPUs for this node's ranks: the SLURM task's, else those this process may run on."""
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def node_env(cfg: HarnessConfig, cpus: int | None = None) -> dict[str, str]:
    """The ranks' environment on one node of a cluster: ``worker_env`` plus the cluster networking."""
    env = worker_env(cfg)
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


def unreachable_outcome(cfg: HarnessConfig, what: str, error: str) -> Outcome:
    """A run that could not start because a peer did not answer: recorded as failed, nothing started."""
    run_dir = prepare_run(cfg)
    record = plan.failed_record(cfg, {"type": "EndpointUnreachable", "message": f"{what}: {error}"})
    write_record(run_dir, record)
    return Outcome(run_dir, "failed", 2, record)


def env_changes(env: dict[str, str]) -> dict[str, str]:
    """The variables a launcher sets on top of the caller's environment (what a dry run shows)."""
    return {k: v for k, v in sorted(env.items()) if os.environ.get(k) != v}


def shell_line(env: dict[str, str], cmd: list[str]) -> str:
    """``K=V ... cmd`` as one copy-pasteable shell line."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(cmd)])


def node_name(cfg: HarnessConfig) -> str:
    return cfg.launcher.local_addr or socket.gethostname()
