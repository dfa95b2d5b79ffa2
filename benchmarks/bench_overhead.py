"""Harness overhead: `harness train` vs a bare hand-written PyTorch loop, one process, side by side.

Both train the same GPT on the same embedded corpus with the same batch, AdamW and
clipping, in fresh subprocesses with the same thread count, alternating A B A B so that
machine noise hits both. Each side's figure is its median step time after warm-up;
the printed ratio is harness tokens/s over bare tokens/s (target >= 0.95).

    python benchmarks/bench_overhead.py [--rounds 3] [--model gpt-1.2m] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_LOOP = r"""
import json, sys, time
import numpy as np, torch
from harness.core import shapes
from harness.core import config as C
from harness.core import runspec as plan
from harness.datasets import TokenData, resolve_source
from harness.worker.model import GPT, param_groups

cfg = C.compose(sys.argv[1:])
t = cfg.train
torch.manual_seed(t.seed)
data = TokenData.open(resolve_source("embedded"))
model = GPT(shapes.of_config(cfg))
opt = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))
rng = np.random.default_rng(t.seed)
n_windows = (len(data.train) - 1) // t.seq_len
times = []
for step in range(C.total_steps(cfg)):
    t0 = time.perf_counter()
    starts = rng.integers(0, n_windows, size=t.micro_batch) * t.seq_len
    batch = torch.from_numpy(np.stack([data.train[s:s + t.seq_len + 1] for s in starts]).astype(np.int64))
    loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0)
times = times[t.timing_warmup_steps:]
print(json.dumps({"step_time_median_s": float(np.median(times)), "tokens_per_step": t.micro_batch * t.seq_len}))
"""


def overrides(model: str, steps: int, micro: int, seq: int) -> list[str]:
    return [
        f"model={model}",
        f"train.micro_batch={micro}",
        f"train.seq_len={seq}",
        f"train.tokens={steps * micro * seq}",
        "train.timing_warmup_steps=5",
        "train.eval_tokens=8192",
    ]


def run_bare(ov: list[str], env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, *ov], env=env, capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["tokens_per_step"] / res["step_time_median_s"]


def run_harness(ov: list[str], env: dict, results: Path) -> float:
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "train",
        "nproc=1",
        *ov,
        f"results_dir={results}",
        "run_id=bench",
    ]
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rec = json.loads((results / "adhoc" / "bench" / "record.json").read_text())
    return rec["throughput"]["tokens_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="gpt-1.2m")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    args = p.parse_args()
    ov = overrides(args.model, args.steps, args.micro_batch, args.seq_len)
    threads = str(os.cpu_count() or 1)
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    bare, harness = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            t0 = time.time()
            bare.append(run_bare(ov, env))
            harness.append(run_harness(ov, env, Path(tmp) / f"r{r}"))
            print(
                f"round {r + 1}: bare {bare[-1]:,.0f} tok/s, harness {harness[-1]:,.0f} tok/s "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    b, h = statistics.median(bare), statistics.median(harness)
    print(
        f"model {args.model}, micro batch {args.micro_batch} x seq {args.seq_len}, {args.steps} steps, "
        f"1 process, {threads} threads, {args.rounds} alternating rounds"
    )
    print(f"bare loop median: {b:,.0f} tok/s; harness median: {h:,.0f} tok/s")
    print(f"ratio harness/bare: {h / b:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
