"""The DeepSpeed launcher (``deepspeed --hostfile ... --module harness.worker.train RUN_DIR``).

Two ways to use it, both from an MPI-style hostfile (``host slots=N`` per line):

- one driver, DeepSpeed reaches the other hosts over ssh (``launcher.ds_launcher``: pdsh,
  openmpi, ...). The variables the ranks need travel in a DeepSpeed env file written into the
  run folder (``DS_ENV_FILE``): DeepSpeed exports only a few prefixes to remote hosts by itself.
- ``launcher.node_rank=K``: no ssh; start one driver per node with its rank, as with torchrun.

With ``nnodes=1`` and no hostfile, ``localhost slots=<nproc>`` is written into the run folder.
DeepSpeed does not set OMP_NUM_THREADS, so the node environment does (cores / nproc).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.driver import supervisor
from harness.driver.launchers import common
from harness.driver.supervisor import Outcome

HOSTFILE = "hostfile"
SSH_PORT = 22
ENV_FILE = "deepspeed_env"
# What the ranks on a remote host need from the driver's environment.
_EXPORTED = (
    "OMP_NUM_THREADS",
    "DS_ACCELERATOR",
    "TORCH_EXTENSIONS_DIR",
    "HARNESS_CACHE",
    "PYTHONUNBUFFERED",
    "GLOO_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME",
    "PATH",
    "WANDB_MODE",
)


def read_hostfile(text: str) -> list[tuple[str, int]]:
    """[(host, slots)] from ``host slots=N`` lines (comments and blank lines skipped)."""
    hosts = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host, *rest = line.split()
        slots = [int(r.split("=", 1)[1]) for r in rest if r.startswith("slots=")]
        if not slots:
            raise C.ConfigError(f"hostfile line {raw!r} is not allowed: 'HOST slots=N'")
        hosts.append((host, slots[0]))
    return hosts


def hostfile_text(cfg: HarnessConfig) -> str:
    """The hostfile this run uses: launcher.hostfile, else localhost with nproc slots (one node)."""
    lc = cfg.launcher
    if lc.hostfile:
        try:
            text = Path(lc.hostfile).expanduser().read_text()
        except OSError as e:
            raise C.ConfigError(f"launcher.hostfile={lc.hostfile!r} cannot be read: {e.strerror}") from None
    elif cfg.nnodes == 1:
        text = f"localhost slots={cfg.nproc}\n"
    else:
        raise C.ConfigError(
            f"launcher.hostfile is required with nnodes={cfg.nnodes}: allowed: a file with one "
            "'HOST slots=N' line per node"
        )
    hosts = read_hostfile(text)
    if len(hosts) < cfg.nnodes or any(slots < cfg.nproc for _, slots in hosts[: cfg.nnodes]):
        raise C.ConfigError(
            f"launcher.hostfile lists {hosts}: allowed: at least nnodes={cfg.nnodes} hosts with "
            f"slots >= nproc={cfg.nproc}"
        )
    if not 0 <= lc.node_rank < cfg.nnodes and lc.node_rank != -1:
        raise C.ConfigError(
            f"launcher.node_rank={lc.node_rank} is not allowed: -1 (ssh) or 0..{cfg.nnodes - 1}"
        )
    return text


def master_addr(cfg: HarnessConfig, text: str) -> str:
    """Rank 0's address: launcher.master_addr, else the first host (DeepSpeed would ask it over ssh)."""
    first = read_hostfile(text)[0][0]
    return cfg.launcher.master_addr or ("127.0.0.1" if first == "localhost" else first)


def deepspeed_command(cfg: HarnessConfig, run_dir: Path, hostfile: Path, text: str) -> list[str]:
    lc = cfg.launcher
    if lc.node_rank >= 0:
        mode = ["--no_ssh", "--node_rank", str(lc.node_rank)]
    elif cfg.nnodes == 1:
        mode = ["--no_ssh_check"]  # one host: launched locally, no ssh needed
    else:
        mode = ["--launcher", lc.ds_launcher]
    return [
        sys.executable, "-u", "-m", "deepspeed.launcher.runner",
        "--hostfile", str(hostfile), "--num_nodes", str(cfg.nnodes), "--num_gpus", str(cfg.nproc),
        "--master_addr", master_addr(cfg, text), "--master_port", str(lc.master_port), *mode,
        "--no_local_rank", "--module", "harness.worker.train", str(run_dir),
    ]  # fmt: skip


def launcher_env(cfg: HarnessConfig, run_dir: Path) -> dict[str, str]:
    env = common.node_env(cfg)
    if cfg.cluster.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # the runner itself asks DeepSpeed's accelerator for the slots
    env["DS_ENV_FILE"] = str(
        (run_dir / ENV_FILE).resolve()
    )  # absolute: DeepSpeed joins it to its search dirs
    return env


def env_file_text(env: dict[str, str]) -> str:
    return "".join(f"{k}={env[k]}\n" for k in _EXPORTED if k in env)


def preflight(cfg: HarnessConfig, text: str) -> tuple[str, str] | None:
    """(what, why) when a peer this node depends on does not answer: every host's ssh port when
    DeepSpeed will ssh to them, rank 0's master port for a joining node without ssh."""
    lc = cfg.launcher
    if cfg.nnodes == 1 or lc.node_rank == 0:
        return None
    if lc.node_rank > 0:
        addr = master_addr(cfg, text)
        error = common.endpoint_error(addr, lc.master_port, lc.connect_timeout_s)
        return (f"launcher.master_addr={addr}:{lc.master_port}", error) if error else None
    for host, _ in read_hostfile(text)[: cfg.nnodes]:
        error = common.endpoint_error(host, SSH_PORT, lc.connect_timeout_s)
        if error:
            return f"hostfile host {host} (ssh)", error
    return None


def run(cfg: HarnessConfig, quiet: bool = False) -> Outcome:
    text = hostfile_text(cfg)  # checks the config before touching the folder
    unreachable = preflight(cfg, text)
    if unreachable:
        return common.unreachable_outcome(cfg, *unreachable)
    # One driver per node (node_rank mode) share the run folder: no exclusive lock there.
    lock = supervisor.run_lock(plan.run_dir(cfg)) if cfg.launcher.node_rank < 0 else contextlib.nullcontext()
    with lock:
        run_dir = common.prepare_run(cfg)
        hostfile = run_dir / HOSTFILE
        hostfile.write_text(text)
        env = launcher_env(cfg, run_dir)
        (run_dir / ENV_FILE).write_text(env_file_text(env))
        name = "train.log" if cfg.launcher.node_rank < 0 else f"train.node{cfg.launcher.node_rank}.log"
        return supervisor.supervise(
            cfg,
            run_dir,
            deepspeed_command(cfg, run_dir, hostfile, text),
            env,
            run_dir / name,
            quiet=quiet,
            timeout_s=cfg.launcher.timeout_s,
            wait_s=cfg.launcher.record_wait_s,
        )


def dry_run(cfg: HarnessConfig) -> str:
    run_dir = plan.run_dir(cfg)
    text = hostfile_text(cfg)
    env = launcher_env(cfg, run_dir)
    lines = [f"# deepspeed launcher; hostfile {run_dir / HOSTFILE}:"]
    lines += [f"#   {line}" for line in text.splitlines()]
    if cfg.nnodes > 1 and cfg.launcher.node_rank < 0:
        lines.append(
            f"# env file {run_dir / ENV_FILE} (exported to every host): "
            + " ".join(env_file_text(env).split())
        )
    lines.append(
        common.shell_line(common.env_changes(env), deepspeed_command(cfg, run_dir, run_dir / HOSTFILE, text))
    )
    return "\n".join(lines)
