"""Per-rank worker of ``harness commbench``, started by torchrun (one process per rank).

``python -m torch.distributed.run ... -m harness.worker.commbench --sizes ... --out f.json``

Every rank runs the same sequence of collectives; rank 0 gathers the per-iteration
times of all ranks and writes the rows to ``--out`` (atomically). Timing follows the
brief: barrier (and CUDA synchronize) before each timed op, time per iteration = the
slowest rank's, reported time = median (and p90) over iterations.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from harness.core.collectives import OPS, algbw, busbw
from harness.core.io import write_json
from harness.worker import distributed

# Ops a backend runs by another algorithm than its name says. Measured all the same
# (the semantics are right), but flagged: their busbw is not a ring's link rate.
# Gloo's reduce_scatter_tensor clones the input, all-reduces the *full* buffer and
# copies out the shard (ProcessGroupGloo::reduce_scatter_tensor_coalesced), so it moves
# 2(n-1)/n S per rank, twice a ring reduce-scatter's (n-1)/n S.
EMULATED = {("gloo", "reduce_scatter"): "all_reduce of the full buffer + local copy of the shard"}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="harness.worker.commbench")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--sizes", required=True, help="comma-separated message sizes in bytes")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument("--time-budget-s", type=float, default=1.0, help="per (op, size): caps timed iterations")
    p.add_argument("--timeout-s", type=float, default=300.0, help="process-group timeout")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- setup


def device_kind(choice: str) -> str:
    """'cuda' when asked for or (auto) when CUDA is present, else 'cpu'."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def nnodes_from_env() -> int:
    """Nodes in the job, from torchrun's env (homogeneous nodes assumed, as torchrun does)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return max(1, world // max(1, local))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- collectives


def _fn(name: str) -> Callable:
    """Newer torch renames the *_tensor collectives *_single and deprecates the old names."""
    new = {"reduce_scatter_tensor": "reduce_scatter_single", "all_gather_into_tensor": "all_gather_single"}
    return getattr(dist, new[name], None) or getattr(dist, name)


def elements(op: str, size_bytes: int, n: int, elem: int) -> int:
    """Total elements of nccl-tests' S: a multiple of n for the sharded ops (as nccl-tests rounds)."""
    count = max(1, size_bytes // elem)
    if op != "all_reduce":
        count = max(1, count // n) * n
    return count


class Collective:
    """Buffers and one call of op; check() verifies the result once with known values."""

    def __init__(self, op: str, count: int, n: int, rank: int, dtype: torch.dtype, device: torch.device):
        self.op, self.n, self.rank = op, n, rank
        shard = count // n
        if op == "all_reduce":
            self.inp = torch.full((count,), float(rank + 1), dtype=dtype, device=device)
            self.out = self.inp  # in place, as torch's all_reduce is
        elif op == "all_gather":
            self.inp = torch.full((shard,), float(rank + 1), dtype=dtype, device=device)
            self.out = torch.empty(count, dtype=dtype, device=device)
        else:  # reduce_scatter
            self.inp = torch.full((count,), float(rank + 1), dtype=dtype, device=device)
            self.out = torch.empty(shard, dtype=dtype, device=device)

    def __call__(self) -> None:
        if self.op == "all_reduce":
            dist.all_reduce(self.inp)
        elif self.op == "all_gather":
            _fn("all_gather_into_tensor")(self.out, self.inp)
        else:
            _fn("reduce_scatter_tensor")(self.out, self.inp)

    def check(self) -> None:
        """Right values after the first call; then all-reduce works on zeros so repeated
        in-place sums cannot grow to inf (whose arithmetic may be timed differently)."""
        if self.op == "all_gather":  # pure copies: exact, once the inputs are rounded to dtype
            ranks = torch.arange(1, self.n + 1, dtype=torch.float64).to(self.out.dtype).double()
            expect = ranks.repeat_interleave(self.out.numel() // self.n)
        else:
            expect = torch.full((self.out.numel(),), self.n * (self.n + 1) / 2, dtype=torch.float64)
        # 16-bit sums round their partial sums (integers are exact only up to 256 in bf16).
        rtol = 1e-6 if self.out.dtype == torch.float32 else 2e-2
        if not torch.allclose(self.out.double().cpu(), expect, rtol=rtol, atol=0.0):
            raise RuntimeError(f"{self.op}: wrong result on rank {self.rank}")
        if self.op == "all_reduce":
            self.inp.zero_()


def timed(call: Callable[[], None], device: torch.device) -> float:
    """Seconds of one op, started right after a barrier so ranks begin together."""
    dist.barrier()
    sync(device)
    t0 = time.perf_counter()
    call()
    sync(device)
    return time.perf_counter() - t0


def max_over_ranks(x: float, device: torch.device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def iteration_counts(first_s: float, args: argparse.Namespace) -> tuple[int, int]:
    """(extra warm-ups, timed iterations) within the time budget; every rank passes the
    same max-reduced first_s, so every rank runs the same number of collectives."""
    per = max(first_s, 1e-9)
    warm = min(max(args.warmup - 1, 0), int(0.25 * args.time_budget_s / per))
    iters = min(args.iters, max(args.min_iters, int(args.time_budget_s / per)))
    return warm, iters


def measure(op: str, size: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    n, rank = dist.get_world_size(), dist.get_rank()
    dtype = DTYPES[args.dtype]
    elem = torch.empty((), dtype=dtype).element_size()
    count = elements(op, size, n, elem)
    coll = Collective(op, count, n, rank, dtype, device)
    first = timed(coll, device)  # also the first warm-up
    coll.check()
    warm, iters = iteration_counts(max_over_ranks(first, device), args)
    for _ in range(warm):
        coll()
    sync(device)
    mine = torch.tensor([timed(coll, device) for _ in range(iters)], dtype=torch.float64, device=device)
    every = [torch.empty_like(mine) for _ in range(n)]
    dist.all_gather(every, mine)
    table = torch.stack(every).cpu()  # [rank, iteration]
    per_iter = table.max(dim=0).values.tolist()  # the slowest rank decides each iteration
    spread = (table.max(dim=0).values - table.min(dim=0).values).tolist()
    t_med = statistics.median(per_iter)
    s = count * elem
    return {
        "op": op,
        "size_bytes": s,
        "size_requested_bytes": size,
        "dtype": args.dtype,
        "count": count,
        "time_s_median": t_med,
        "time_s_p90": float(torch.quantile(torch.tensor(per_iter, dtype=torch.float64), 0.9)),
        "time_s_rank_spread_median": statistics.median(spread),
        "algbw_Bps": algbw(s, t_med),
        "busbw_Bps": busbw(op, s, n, t_med),
        "iters": iters,
        "warmup": warm + 1,
    }


def is_unsupported(e: Exception) -> bool:
    """Backends reject ops they lack up front on every rank (e.g. older gloo: reduce_scatter)."""
    msg = str(e).lower()
    return isinstance(e, NotImplementedError) or any(
        k in msg for k in ("not support", "unsupported", "not implement")
    )


# ----------------------------------------------------------------------------- main


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from harness.worker.hardware import device_name as cpu_name

    return cpu_name("cpu")


def nccl_version() -> str:
    v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The harness's one init: gloo on CPU, NCCL on CUDA with cuda:LOCAL_RANK only there.
    info = distributed.init(device_kind(args.device), args.timeout_s)
    device, backend = info.device, info.backend
    n, rank, nnodes = info.world_size, info.rank, nnodes_from_env()
    ops = [o for o in args.ops.split(",") if o]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    unsupported: list[dict[str, Any]] = []
    for op in ops:
        for size in sizes:
            try:
                row = measure(op, size, args, device)
            except (RuntimeError, NotImplementedError, ValueError) as e:
                if not is_unsupported(e):
                    raise
                unsupported.append({"op": op, "backend": backend, "world_size": n, "error": str(e)[:300]})
                break  # the backend lacks the op at every size; do not fake it
            row.update(backend=backend, device=device.type, world_size=n, nnodes=nnodes)
            if (backend, op) in EMULATED:
                row["emulated_as"] = EMULATED[(backend, op)]
            rows.append(row)
            if rank == 0:
                print(
                    f"[commbench n={n}] {op:<14} {row['size_bytes']:>11d} B  "
                    f"{row['time_s_median'] * 1e6:>11.1f} us  busbw {row['busbw_Bps'] / 1e9:8.3f} GB/s",
                    flush=True,
                )
    if rank == 0:
        env = {
            "hostname": socket.gethostname(),
            "torch_version": torch.__version__,
            "device_name": device_name(device),
            "backend": backend,
            "world_size": n,
            "nnodes": nnodes,
            "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", n)),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda_version": torch.version.cuda,
            "nccl_version": nccl_version() if device.type == "cuda" else None,
        }
        payload = {"measurements": rows, "unsupported": unsupported, "environment": env}
        write_json(args.out, payload)
    dist.barrier()
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
