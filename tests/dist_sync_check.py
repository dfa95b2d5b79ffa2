"""Run under torchrun by test_ddp.py: train a few steps with the real DDP engine and report,
after every step, the largest difference across ranks of the synchronised gradients and of the
parameters. Usage: python -m torch.distributed.run --nproc-per-node 2 tests/dist_sync_check.py RUN_DIR OUT"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from harness.core import config as C
from harness.core import shapes
from harness.datasets import BatchSampler, TokenData, resolve_source
from harness.worker import distributed
from harness.worker.engines import build_engine
from harness.worker.model import GPT


def max_diff_across_ranks(vec: torch.Tensor, world: int) -> float:
    gathered = [torch.empty_like(vec) for _ in range(world)]
    dist.all_gather(gathered, vec)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def main(run_dir: Path, out: Path) -> None:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    info = distributed.init("cpu", 120)
    torch.manual_seed(cfg.train.seed + info.rank)  # different local seeds: DDP must still agree
    engine = build_engine(cfg, GPT(shapes.of_config(cfg)), info)
    data = TokenData.open(resolve_source(cfg.data.source, cfg.data.cache_dir, cfg.data.heldout_frac))
    sampler = BatchSampler(data.train, cfg.train.seq_len, cfg.train.seed)
    gb = C.global_batch(cfg)
    report = {
        "initial_param_diff": max_diff_across_ranks(
            torch.cat([p.detach().flatten() for p in engine.module.parameters()]), info.world_size
        )
    }
    steps = []
    for step in range(4):
        ids = sampler.sample_ids(step, gb, info.rank, cfg.train.micro_batch)
        batch = torch.from_numpy(sampler.get(ids))
        local_input_sum = float(batch.sum())
        engine.micro_step(batch[:, :-1], batch[:, 1:], last=True)
        grads = torch.cat([p.grad.flatten() for p in engine.module.parameters()])
        grad_diff = max_diff_across_ranks(grads, info.world_size)
        engine.optimizer_step(1e-3)
        params = torch.cat([p.detach().flatten() for p in engine.module.parameters()])
        steps.append(
            {
                "grad_diff": grad_diff,
                "param_diff": max_diff_across_ranks(params, info.world_size),
                "grad_norm": float(grads.norm()),
                "local_input_sum": local_input_sum,
            }
        )
    inputs = [None] * info.world_size
    dist.all_gather_object(inputs, [s["local_input_sum"] for s in steps])
    report["steps"], report["inputs_per_rank"] = steps, inputs
    if info.rank == 0:
        out.write_text(json.dumps(report))
    distributed.shutdown(together=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
