"""The worker process: the frozen config the driver wrote in, the run record out.

Hydra runs once, in the driver; here the config is read back. Rank 0 writes the record:
completed, pre-empted (with its checkpoint), or failed; a rank that fails also writes
``errors/rank<r>.json`` (harness.core.rankfiles) so the driver can say which rank failed and why.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf

from harness.core import config as C
from harness.core import environment, runspec
from harness.core.config import HarnessConfig
from harness.core.rankfiles import PREEMPTED_EXIT, first_error, write_error
from harness.core.records import CONFIG_FILE, write_record
from harness.datasets import DataError
from harness.worker import distributed
from harness.worker.distributed import DistInfo
from harness.worker.train.loop import train
from harness.worker.train.state import Preempted, StopRequest


def load_config(run_dir: Path) -> HarnessConfig:
    # Merged onto the schema: a config frozen by an older version still gets every key's default.
    merged = OmegaConf.merge(OmegaConf.structured(C.HarnessConfig), OmegaConf.load(run_dir / CONFIG_FILE))
    return cast(HarnessConfig, merged)


def environment_facts(info: DistInfo, hosts: list[str], devices: list[str]) -> dict[str, Any]:
    return {
        **environment.git_state(),
        "packages": environment.package_versions(),
        **environment.host_facts(),
        "hosts": hosts,
        "device_names": devices,
        "world_size": info.world_size,
        "backend": info.backend,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run(run_dir: Path) -> int:
    cfg = load_config(run_dir)
    stop = StopRequest.on_sigterm()
    info = distributed.init(cfg.cluster.device, cfg.train.comm_timeout_s)
    start = time.time()
    clean = False
    try:
        result = train(cfg, run_dir, info, stop)
        if info.rank == 0:
            env = environment_facts(info, result.pop("hosts"), result.pop("device_names"))
            record = runspec.base_record(cfg, "completed")
            record.update(result, environment=env, finished_at=_now(), duration_s=time.time() - start)
            write_record(run_dir, record)
        clean = True
        return 0
    except Preempted as p:
        if info.rank == 0:
            record = runspec.base_record(cfg, "preempted")
            record.update(
                checkpoint={"path": str(p.path), "step": p.step},
                duration_s=time.time() - start,
                finished_at=_now(),
            )
            write_record(run_dir, record)
            print(f"pre-empted: checkpoint at step {p.step} in {p.path}; run again to resume", flush=True)
        return PREEMPTED_EXIT
    except BaseException as exc:
        write_error(run_dir, info.rank, exc)
        if info.rank == 0:  # also when no driver watches (multi-node, SLURM): never leave "running"
            write_record(run_dir, runspec.failed_record(cfg, first_error(run_dir)))
        raise
    finally:
        distributed.shutdown(together=clean)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m harness.worker.train RUN_DIR  (normally started by 'harness train')",
            file=sys.stderr,
        )
        return 2
    try:
        return run(Path(argv[0]))
    except (C.ConfigError, DataError) as e:
        print(f"harness train: {e}", file=sys.stderr)
        return 2
