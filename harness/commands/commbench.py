"""``harness commbench [FLAGS] [KEY=VALUE ...]``: all-reduce / all-gather / reduce-scatter benchmark.

One torchrun launch per world size runs ``harness.worker.commbench`` on every rank (gloo on
CPU, NCCL on CUDA); ``harness.driver.commbench`` launches them and prints nccl-tests-style
tables. The record goes to ``<results_root>/commbench/<run_id>/record.json`` (kind
"commbench") with ``commbench.csv`` and ``fit.json`` (alpha-beta per op and tier) beside it.
Every flag is a key of the config (``--world-sizes 2,4`` is ``world_sizes=[2,4]``).
Multi-node: run the same command on every node with ``--nnodes K --rdzv-endpoint host:port``;
world sizes are then totals over all nodes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from harness.analysis.throughput.collectives import fit_all
from harness.commands._hydra import Command, Flag, Invocation, UsageError
from harness.core.collectives import tier_of
from harness.core.config_jobs import COMM_DEVICES, COMM_DTYPES, CommbenchConfig, validate_commbench
from harness.core.records import write_record
from harness.driver import commbench as B


def _key(flag: str, help: str = "", metavar: str = "N", **kw: Any) -> Flag:
    return Flag(flag, help, key=flag.lstrip("-").replace("-", "_"), metavar=metavar, **kw)


COMMAND = Command(
    "commbench",
    "All-reduce / all-gather / reduce-scatter bus bandwidth over message and world sizes, and the "
    "alpha-beta fit.",
    config="commbench",
    flags=[
        _key("--ops", "comma list (default: all three)", "OPS", convert=B.op_list),
        _key(
            "--world-sizes",
            "total ranks per launch (default: 2 on CPU; 2,4,8.. GPUs on CUDA)",
            "N,...",
            convert=B.int_list,
        ),
        _key("--device", "auto: cuda when a GPU is visible", "DEVICE", choices=COMM_DEVICES),
        _key("--dtype", "element type of the buffers", "DTYPE", choices=COMM_DTYPES),
        _key("--min-bytes", "smallest message, e.g. 16, 512K", "SIZE", convert=B.parse_size),
        _key(
            "--max-bytes",
            f"largest message (default {B.GPU_MAX_BYTES >> 20}M on CUDA, {B.CPU_MAX_BYTES >> 20}M on CPU)",
            "SIZE",
            convert=B.parse_size,
        ),
        _key("--factor", "geometric step of the size ladder"),
        _key("--warmup", "untimed iterations"),
        _key("--iters", "timed iterations"),
        _key("--min-iters", "timed iterations at least"),
        _key("--time-budget-s", "per (op, size): timed iterations cut to fit it", "S"),
        _key("--nnodes", "nodes (run the command on each)"),
        _key("--rdzv-endpoint", "host:port of the rendezvous (multi-node)", "HOST:PORT"),
        _key("--rdzv-backend", "torchrun's rendezvous backend", "NAME"),
        _key("--rdzv-id", "rendezvous id (suffixed with the world size)", "ID"),
        _key("--results-root", "results folder", "DIR"),
        _key("--run-id", "default: time, host and a random suffix", "ID"),
        _key("--launch-timeout-s", "per world size", "S"),
        _key("--pg-timeout-s", "process-group timeout in the worker", "S"),
        _key("--bootstrap", "bootstrap resamples of the fit"),
        _key("--quiet", "do not echo the workers' progress", switch=True),
    ],
    epilog="example: harness commbench --world-sizes 2 --max-bytes 16M --quiet",
)


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


def settings(argv: list[str]) -> DictConfig:
    """The composed commbench config for a command line (what the driver's functions take as args)."""
    inv = COMMAND.parse(argv)
    if isinstance(inv, int):
        raise UsageError("--help and --cfg answer instead of composing")
    return inv.cfg


def run(inv: Invocation) -> int:
    args = cast(CommbenchConfig, inv.cfg)  # a DictConfig typed by CommbenchConfig
    validate_commbench(args)
    device, ngpu = B.resolve_device(args.device)
    max_bytes = args.max_bytes or (B.GPU_MAX_BYTES if device == "cuda" else B.CPU_MAX_BYTES)
    sizes = B.size_ladder(args.min_bytes, max_bytes, args.factor)
    world_sizes = list(args.world_sizes or B.default_world_sizes(device, ngpu, args.nnodes))
    bad = [n for n in world_sizes if n % args.nnodes]
    if bad:
        raise UsageError(f"world sizes {bad} are not multiples of --nnodes {args.nnodes}")
    if device == "cuda" and max(world_sizes) // args.nnodes > ngpu:
        raise UsageError(f"{max(world_sizes) // args.nnodes} ranks per node but {ngpu} GPUs visible")

    notes = B.describe_setup(device, world_sizes, args.nnodes)
    for note in notes:
        print(f"# note: {note}")
    run_id = args.run_id or B.new_run_id()
    run_dir = Path(args.results_root) / B.SWEEP / run_id
    record: dict[str, Any] = {
        "kind": "commbench",
        "sweep": B.SWEEP,
        "run_id": run_id,
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            **OmegaConf.to_container(args),  # type: ignore[dict-item]
            "device": device,
            "sizes": sizes,
            "world_sizes": world_sizes,
            "max_bytes": max_bytes,
        },
        "environment": B.driver_environment(device, ngpu),
        "notes": notes,
        "measurements": [],
    }
    write_record(run_dir, record)

    launches = [B.launch_one(args, n, sizes, device, run_dir) for n in world_sizes]
    rows = [r for ln in launches for r in ln.pop("measurements", [])]
    record["measurements"] = rows
    record["unsupported"] = [u for ln in launches for u in ln.pop("unsupported", [])]
    record["environment"]["workers"] = [ln.pop("environment") for ln in launches if "environment" in ln]
    record["launches"] = launches
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    failed = [ln for ln in launches if ln["cause"]]
    record["status"] = "failed" if failed else "completed"
    if failed:
        record["cause"] = "; ".join(f"world_size {ln['world_size']}: {ln['cause']}" for ln in failed)

    B.print_tables(rows)
    for u in record["unsupported"]:
        print(f"# {u['op']} is not supported by {u['backend']} (world_size {u['world_size']}): {u['error']}")
    fits = fit_all(pd.DataFrame(rows), n_bootstrap=args.bootstrap) if rows else []
    B.flag_emulated(rows, fits, notes)
    B.print_fits(fits)
    if sorted({tier_of(r["nnodes"]) for r in rows}) == ["intra-node"]:
        print(
            "# only the intra-node tier was measured (nnodes=1); the inter-node tier needs a multi-node"
            " run (--nnodes, --rdzv-endpoint)"
        )
    B.save_outputs(run_dir, rows, fits, notes)
    write_record(run_dir, record)  # inf/nan written as null
    print(f"\n# record: {run_dir / 'record.json'}  status={record['status']}")
    if failed:
        print(f"# cause: {record['cause']}", file=sys.stderr)
    return 1 if failed else 0
