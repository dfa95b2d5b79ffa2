"""The one torchrun command line: standalone on one node, or agents meeting at a rendezvous.

Every torchrun the harness starts is built here: ``launcher=local`` (standalone),
``launcher=multinode`` and each SLURM node (c10d rendezvous), and commbench's launches.
No restarts: a rank that fails ends the run, and the driver records why.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TRAIN_MODULE = "harness.worker.train"


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes' torchrun agents meet and agree on the ranks."""

    endpoint: str  # HOST:PORT, the same on every node
    id: str  # the same on every node, different per run
    backend: str = "c10d"
    conf: str = ""  # --rdzv-conf key=value,... (join_timeout, is_host); empty: none
    local_addr: str = ""  # the address the other nodes reach this node at; empty: torchrun's guess


def command(
    module: str,
    args: Sequence[str],
    *,
    nproc: int,
    nnodes: int = 1,
    rdzv: Rendezvous | None = None,
    nproc_flag: str = "--nproc-per-node",
) -> list[str]:
    """``python -m torch.distributed.run ... -m module args`` for ``nproc`` ranks on this node.

    Without ``rdzv``: standalone (one node, rendezvous on a free local port, so parallel runs do
    not collide). With it: one of ``nnodes`` agents meeting at ``rdzv``. ``nproc_flag`` is the
    spelling of the ranks-per-node option (torchrun takes ``--nproc_per_node`` too).
    """
    if rdzv is None:
        where = ["--standalone", "--nnodes", "1", nproc_flag, str(nproc)]
    else:
        where = [
            "--nnodes", str(nnodes), nproc_flag, str(nproc),
            "--rdzv-backend", rdzv.backend, "--rdzv-endpoint", rdzv.endpoint, "--rdzv-id", rdzv.id,
        ]  # fmt: skip
        if rdzv.conf:
            where += ["--rdzv-conf", rdzv.conf]
        if rdzv.local_addr:
            where += ["--local-addr", rdzv.local_addr]
    return [sys.executable, "-m", "torch.distributed.run", *where, "--max-restarts", "0", "-m", module, *args]


def train_command(run_dir: Path, *, nproc: int, nnodes: int = 1, rdzv: Rendezvous | None = None) -> list[str]:
    """torchrun starting ``harness.worker.train RUN_DIR`` on this node's ``nproc`` ranks."""
    return command(TRAIN_MODULE, [str(run_dir)], nproc=nproc, nnodes=nnodes, rdzv=rdzv)
