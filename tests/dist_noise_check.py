"""Run under torchrun by test_noise_scale.py: the DDP engine's comm hook on linear regression,
where |G|^2 and tr(Sigma) are known exactly.

Per-sample loss 0.5 (x.w - y)^2, x ~ N(0, I_d), y = x.w* + eps, eps ~ N(0, s^2). At a fixed w,
with delta = w - w*: G = delta, so |G|^2 = |delta|^2; and by Isserlis' theorem
Sigma = (|delta|^2 + s^2) I + delta delta^T, so tr(Sigma) = d (|delta|^2 + s^2) + |delta|^2.
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from harness.worker import distributed
from harness.worker.engines.ddp import CommTimer, timed_allreduce_hook
from harness.worker.noise_scale import two_batch_estimates

D, SIGMA, PER_RANK, STEPS = 16, 0.5, 8, 1500


def main(out: str) -> None:
    info = distributed.init("cpu", 120)
    torch.manual_seed(0)
    w_star = torch.randn(D)
    model = torch.nn.Linear(D, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star + 0.5 * torch.randn(D))
    delta = model.weight.detach()[0] - w_star
    ddp = DistributedDataParallel(model)
    comm = CommTimer(info.world_size, cuda=False)
    ddp.register_comm_hook(comm, timed_allreduce_hook)
    gen = torch.Generator().manual_seed(1000 + info.rank)
    b_small, b_big = PER_RANK, PER_RANK * info.world_size
    sums = torch.zeros(2, dtype=torch.float64)
    for _ in range(STEPS):
        comm.reset()
        x = torch.randn(PER_RANK, D, generator=gen)
        y = x @ w_star + SIGMA * torch.randn(PER_RANK, generator=gen)
        loss = 0.5 * (ddp(x).squeeze(1) - y).pow(2).mean()
        loss.backward()
        local_sq, global_sq = comm.grad_sq_norms()
        model.weight.grad = None
        local = torch.tensor([local_sq], dtype=torch.float64)
        dist.all_reduce(local)  # the trainer averages the local norms over ranks the same way
        sums += torch.tensor(
            two_batch_estimates(float(local) / info.world_size, global_sq, b_small, b_big),
            dtype=torch.float64,
        )
    g2, trace = (sums / STEPS).tolist()
    d2 = float(delta.pow(2).sum())
    if info.rank == 0:
        with open(out, "w") as f:
            json.dump({"g2": g2, "trace": trace, "g2_true": d2, "trace_true": D * (d2 + SIGMA**2) + d2}, f)
    distributed.shutdown(together=True)


if __name__ == "__main__":
    main(sys.argv[1])
