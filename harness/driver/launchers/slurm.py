"""SLURM through Hydra's submitit launcher: one task per node, each running torchrun.

``harness train launcher=slurm nnodes=2 nproc=8 launcher.partition=gpu ...`` composes and
validates the config here, prepares the run folder (on the shared filesystem), and hands
one job to ``hydra_submitit_launcher``'s ``SlurmLauncher``: ``nodes=nnodes``,
``tasks_per_node=1``. Each task runs :class:`NodeTask`, which starts torchrun for its node
with c10d rendezvous on the job's first node. The driver waits for the job (submitit polls
``sacct``) and settles the record.

Why one task per node running torchrun rather than one task per GPU: the ranks then start
exactly as under ``launcher=local`` and ``multinode`` (torchrun sets RANK, LOCAL_RANK,
WORLD_SIZE; the worker has no SLURM-specific path), torchrun's agent takes down a node's
ranks as soon as one dies (a failure ends the job instead of hanging peers until the
collective timeout), the node's CPU threads are split between its ranks in one place, and
the same node command serves the plain ``launch/slurm/train.sbatch``. Per-GPU tasks would
also make the Hydra plugin recompose the config once per GPU.

``python -m harness.driver.launchers.slurm prepare|finalize`` are the harness steps of the sbatch script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.config import HarnessConfig
from harness.driver import preflight, supervisor, torchrun
from harness.driver.launchers import common
from harness.driver.supervisor import Outcome

SLURM_DIR = "slurm"  # <run dir>/slurm: submitit's files and Hydra's job output, fresh per submission


@dataclass(frozen=True)
class SlurmNode:
    head: str  # address of the job's first node: it serves the rendezvous
    addr: str  # this node's address
    nnodes: int
    node_id: int
    job_id: str


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True).stdout


def node_addr(name: str) -> str:
    """The address SLURM itself reaches a node at (NodeAddr; usually its hostname)."""
    found = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", "-o", name))
    return found.group(1) if found else name


def slurm_node() -> SlurmNode:
    """This task's place in the job, from SLURM's environment."""
    env = os.environ
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
    hosts = _scontrol("show", "hostnames", nodelist).split()
    here = env.get("SLURMD_NODENAME") or socket.gethostname()
    return SlurmNode(
        node_addr(hosts[0]),
        node_addr(here),
        int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES", "1")),
        int(env.get("SLURM_NODEID", "0")),
        env["SLURM_JOB_ID"],
    )


def node_command(cfg: HarnessConfig, run_dir: Path, node: SlurmNode) -> list[str]:
    """torchrun for one node of the job: c10d rendezvous on the first node, id = the job id."""
    rdzv = torchrun.Rendezvous(
        f"{node.head}:{cfg.launcher.rdzv_port}",
        f"slurm-{node.job_id}",
        # The first node serves the rendezvous; saying so spares torchrun its hostname guess.
        conf=f"join_timeout={int(cfg.launcher.join_timeout_s)},is_host={str(node.node_id == 0).lower()}",
        # The address other nodes reach this node at (torchrun would use its hostname).
        local_addr=node.addr,
    )
    return torchrun.train_command(run_dir, nproc=int(cfg.nproc), nnodes=node.nnodes, rdzv=rdzv)


def frozen_config(run_dir: Path) -> HarnessConfig:
    """The run's config as the driver froze it into the run folder (``config.yaml``)."""
    from omegaconf import OmegaConf

    from harness.core.records import CONFIG_FILE

    return cast(HarnessConfig, OmegaConf.load(run_dir / CONFIG_FILE))


@dataclass(frozen=True)
class NodeTask:
    """The Hydra task function of a SLURM job: start this node's ranks and wait for them.

    The run's config is the frozen ``config.yaml`` the driver wrote; the Hydra config the
    plugin recomposes in the job only names the run (Hydra's own bookkeeping).
    """

    run_dir: str

    def __call__(self, _hydra_cfg: Any = None) -> int:
        run_dir = Path(self.run_dir)
        cfg = frozen_config(run_dir)
        node = slurm_node()
        if node.nnodes != cfg.nnodes:
            raise C.ConfigError(f"nnodes={cfg.nnodes} but the SLURM job has {node.nnodes} nodes")
        cmd = node_command(cfg, run_dir, node)
        # Not supervisor.run_process (a session of its own): torchrun stays in this task's process
        # group, so SLURM's signals (scancel, the time limit) reach it however the cluster tracks
        # processes. SLURM itself supervises the job; the driver settles the record afterwards.
        with supervisor.open_log(run_dir / f"train.node{node.node_id}.log", cmd) as log:
            return subprocess.call(cmd, env=common.node_env(cfg), stdout=log, stderr=subprocess.STDOUT)


def submitit_params(cfg: HarnessConfig, run_dir: Path) -> dict[str, Any]:
    """Parameters of hydra_submitit_launcher's SlurmLauncher (its SlurmQueueConf fields)."""
    lc = cfg.launcher
    gpus = lc.gpus_per_node
    if gpus is None and cfg.cluster.device == "cuda":
        gpus = cfg.nproc
    params: dict[str, Any] = {
        "submitit_folder": lc.submitit_folder or str(run_dir / SLURM_DIR / "submitit"),
        "name": f"harness-{plan.run_id(cfg)}",
        "nodes": int(cfg.nnodes),
        "tasks_per_node": 1,  # one torchrun per node (see the module docstring)
        "timeout_min": int(lc.time_min if lc.timeout_s is None else max(1, -(-int(lc.timeout_s) // 60))),
        "cpus_per_task": lc.cpus_per_task,
        "gpus_per_node": gpus,
        "mem_gb": lc.mem_gb,
        "partition": lc.partition,
        "account": lc.account,
        "qos": lc.qos,
        "setup": list(lc.setup) or None,
        "additional_parameters": dict(lc.additional_parameters),
        "stderr_to_stdout": True,
    }
    return {k: v for k, v in params.items() if v is not None}


def _quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_overrides(cfg: HarnessConfig, run_dir: Path) -> tuple[list[str], list[str]]:
    """(Hydra's own overrides, the job's overrides): the job's Hydra output goes into the run folder."""
    hydra = [
        f"hydra.sweep.dir={_quote(run_dir / SLURM_DIR)}",
        "hydra.sweep.subdir=hydra",
        f"hydra.job.name={_quote('harness-' + plan.run_id(cfg))}",
    ]
    job = [
        f"results_dir={_quote(Path(cfg.results_dir).resolve())}",
        f"sweep_name={_quote(cfg.sweep_name)}",
        f"run_id={_quote(plan.run_id(cfg))}",
    ]
    return hydra, job


def _hydra_launcher(cfg: HarnessConfig, run_dir: Path):
    """Hydra's SlurmLauncher, set up the way Hydra's multirun sets it up (config loader + context)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.experimental.callback import Callback
    from hydra.types import HydraContext, RunMode
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    hydra, job = hydra_overrides(cfg, run_dir)
    C.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(C.CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [*hydra, *job], run_mode=RunMode.MULTIRUN)
    launcher = SlurmLauncher(**submitit_params(cfg, run_dir))
    # The job runs no Hydra callbacks (the harness config configures none): the public no-op
    # Callback answers run_job's on_job_start/on_job_end where Hydra's private Callbacks would.
    launcher.setup(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callback()),  # type: ignore[arg-type]
        task_function=NodeTask(str(run_dir.resolve())),
        config=master,
    )
    return launcher, job


def run(cfg: HarnessConfig, quiet: bool = False) -> Outcome:
    """Submit the run as one SLURM job and wait for it; the record says completed or failed."""
    with supervisor.run_lock(plan.run_dir(cfg)):
        run_dir = common.prepare_run(cfg).resolve()
        # A fresh submitit folder: job ids restart at 1 on a new cluster, and stale result
        # files of an earlier submission must not answer for this one.
        shutil.rmtree(run_dir / SLURM_DIR, ignore_errors=True)
        for old in run_dir.glob("train.node*.log"):
            old.unlink()
        start = time.time()
        launcher, job = _hydra_launcher(cfg, run_dir)
        rc, job_error = 1, None
        try:
            [result] = launcher.launch([job], initial_job_idx=0)
            rc = int(result.return_value)  # raises the task's exception if it failed
        except Exception as exc:  # the job failed, timed out or could not be submitted
            job_error = {"type": type(exc).__name__, "message": str(exc)[-2000:]}
            if not quiet:
                print(f"slurm job: {type(exc).__name__}: {exc}", file=sys.stderr)
        logs = sorted(run_dir.glob("train.node*.log")) + sorted((run_dir / SLURM_DIR).rglob("*.out"))
        if not quiet:
            for log in logs:
                sys.stdout.write(supervisor.tail(log))
        # The job is over; only a shared filesystem's caching can still hide rank 0's record.
        return supervisor.settle(
            cfg,
            run_dir,
            rc,
            logs=logs,
            start=start,
            wait_s=min(cfg.launcher.record_wait_s, 30),
            cause=job_error,
        )


def sbatch_script(cfg: HarnessConfig, run_dir: Path) -> str:
    """The batch script submitit would submit for this run (through Hydra's launcher)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = submitit_params(cfg, run_dir)
    # The same translation SlurmLauncher.launch makes from its parameters to submitit's.
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    # submitit has no public API for the script it would submit (checked for submitit 1.5): the one
    # private call left, read-only, for dry runs only.
    inner: Any = executor._executor
    return inner._make_submission_file_text(inner._submitit_command_str, "dry-run")


def dry_run(cfg: HarnessConfig) -> str:
    run_dir = plan.run_dir(cfg).resolve()
    node = SlurmNode("<first-node>", "<this-node>", int(cfg.nnodes), 0, "<job-id>")
    env = common.env_changes(common.node_env(cfg, cpus=cfg.launcher.cpus_per_task))
    return "\n".join([
        "# slurm via Hydra's submitit launcher: one job, one task per node. The batch script:",
        sbatch_script(cfg, run_dir).rstrip(),
        "# each task (node k of the job) then runs, with is_host=true on the first node only:",
        common.shell_line(env, node_command(cfg, run_dir, node)),
    ])  # fmt: skip


# ----------------------------------------------------------------------------- sbatch helpers


def prepare_main(overrides: list[str]) -> int:
    """Compose + validate + prepare the run once; print ``RUN_DIR=...`` for the batch script."""
    from harness.core.compose import key_of

    try:
        # The batch script runs this launcher's node command, whose settings (rdzv_port, ...) the
        # frozen config holds only when composed with launcher=slurm.
        if not any(key_of(o) == "launcher" for o in overrides):
            overrides = ["launcher=slurm", *overrides]
        cfg = preflight.load_validated(overrides)
        run_dir = common.prepare_run(cfg).resolve()
    except (C.ConfigError, ValueError) as e:  # DataError is a ValueError
        print(f"harness slurm prepare: {e}", file=sys.stderr)
        return 2
    print(f"RUN_DIR={shlex.quote(str(run_dir))}")
    return 0


def finalize_main(run_dir: Path, rc: int) -> int:
    """After srun: make the record say completed or failed (with the failing rank's error)."""
    cfg = frozen_config(run_dir)
    logs = sorted(run_dir.glob("train.node*.log"))
    outcome = supervisor.settle(cfg, run_dir, rc, logs=logs, start=time.time(), wait_s=30)
    print(supervisor.summary_line(outcome.record))
    return 0 if outcome.status == "completed" else 1


def node_main(run_dir: Path) -> int:
    """One node's torchrun (what each Hydra task runs), for batch scripts: srun ... node RUN_DIR."""
    return NodeTask(str(run_dir.resolve()))()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m harness.driver.launchers.slurm",
        description="The harness steps of launch/slurm/train.sbatch.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "prepare", help="compose, validate, prepare the run folder; print shell variables"
    ).add_argument("overrides", nargs="*")
    node = sub.add_parser("node", help="this node's torchrun (inside srun, one task per node)")
    node.add_argument("run_dir", type=Path)
    fin = sub.add_parser("finalize", help="settle the record after srun")
    fin.add_argument("run_dir", type=Path)
    fin.add_argument("returncode", type=int)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        return prepare_main(args.overrides)
    if args.cmd == "node":
        return node_main(args.run_dir)
    with contextlib.suppress(BrokenPipeError):
        return finalize_main(args.run_dir, args.returncode)
    return 1


if __name__ == "__main__":
    sys.exit(main())
