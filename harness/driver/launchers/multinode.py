"""Multi-node torchrun: c10d rendezvous across nodes, one driver per node.

On every node, the same command with that node's own address::

    harness train launcher=multinode nnodes=2 nproc=8 \\
        launcher.rdzv_endpoint=node0:29400 launcher.local_addr=<this node> ...

Each driver prepares the (shared) run folder and starts one torchrun agent; the agents
meet at the rendezvous endpoint, which the node owning its host serves, and agree on the
ranks. Rank 0's node writes the record; the other drivers wait for it (``settle``).
"""

from __future__ import annotations

from pathlib import Path

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.driver import supervisor, torchrun
from harness.driver.launchers import common
from harness.driver.supervisor import Outcome

DEFAULT_ENDPOINT = "127.0.0.1:29400"


def rendezvous(cfg: HarnessConfig) -> tuple[str, int]:
    """(host, port) of the c10d rendezvous; required with more than one node."""
    endpoint = cfg.launcher.rdzv_endpoint
    if not endpoint:
        if cfg.nnodes > 1:
            raise C.ConfigError(
                f"launcher.rdzv_endpoint is required with nnodes={cfg.nnodes}: allowed: HOST:PORT "
                "of one of the nodes, the same on every node (e.g. node0:29400)"
            )
        endpoint = DEFAULT_ENDPOINT
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise C.ConfigError(
            f"launcher.rdzv_endpoint={endpoint!r} is not allowed: HOST:PORT, e.g. node0:29400"
        )
    return host.strip("[]"), int(port)


def torchrun_command(cfg: HarnessConfig, run_dir: Path) -> list[str]:
    host, port = rendezvous(cfg)
    lc = cfg.launcher
    conf = [f"join_timeout={int(lc.join_timeout_s)}"]
    if lc.local_addr:
        # torchrun guesses whether this node serves the rendezvous from its hostname's addresses,
        # which misses an endpoint on a second interface; with the address known, say it.
        conf.append(f"is_host={str(lc.local_addr == host).lower()}")
    rdzv = torchrun.Rendezvous(
        f"{host}:{port}", lc.rdzv_id or plan.run_id(cfg), conf=",".join(conf), local_addr=lc.local_addr or ""
    )
    return torchrun.train_command(run_dir, nproc=int(cfg.nproc), nnodes=int(cfg.nnodes), rdzv=rdzv)


def log_path(cfg: HarnessConfig, run_dir: Path) -> Path:
    return run_dir / f"train.{common.node_name(cfg)}.log"  # one per node: the folder is shared


def run(cfg: HarnessConfig, quiet: bool = False) -> Outcome:
    """This node's part of a multi-node run; returns when its agent ends."""
    cmd = torchrun_command(cfg, plan.run_dir(cfg))  # checks the config before touching the folder
    host, port = rendezvous(cfg)
    if cfg.nnodes > 1 and cfg.launcher.local_addr != host:  # a joining node: is the host there at all?
        error = common.endpoint_error(host, port, cfg.launcher.connect_timeout_s)
        if error:
            return common.unreachable_outcome(cfg, f"launcher.rdzv_endpoint={host}:{port}", error)
    run_dir = common.prepare_run(cfg)
    return supervisor.supervise(
        cfg,
        run_dir,
        cmd,
        common.node_env(cfg),
        log_path(cfg, run_dir),
        quiet=quiet,
        timeout_s=cfg.launcher.timeout_s,
        wait_s=cfg.launcher.record_wait_s,
    )


def dry_run(cfg: HarnessConfig) -> str:
    run_dir = plan.run_dir(cfg)
    host, port = rendezvous(cfg)
    return "\n".join([
        f"# multinode: run this on each of the {cfg.nnodes} nodes (launcher.local_addr = that node's address);",
        f"# the node owning {host} serves the rendezvous on port {port}. Shared run folder: {run_dir}",
        common.shell_line(common.env_changes(common.node_env(cfg)), torchrun_command(cfg, run_dir)),
    ])  # fmt: skip
