"""The launchers: ``harness train launcher=<name>``, dispatched by ``harness.driver.launch``.

Each module exposes ``run(cfg, quiet=False) -> harness.driver.supervisor.Outcome`` and
``dry_run(cfg) -> str`` (the exact commands and environment, nothing started), and starts its
processes through ``harness.driver.supervisor`` (torchrun lines from ``harness.driver.torchrun``):

- ``local`` (the default): torchrun on this machine, standalone rendezvous.
- ``multinode``: torchrun with c10d rendezvous; one driver per node.
- ``deepspeed``: the DeepSpeed launcher with a hostfile (ssh/pdsh, or one driver per node).
- ``slurm``: Hydra's submitit launcher, one SLURM task per node running torchrun; the same
  node command backs ``launch/slurm/train.sbatch``.

Every node's ranks read the run folder the driver prepared, so ``results_dir`` must be on
a filesystem all nodes share (as on any SLURM cluster); rank 0 writes the record there.
"""
