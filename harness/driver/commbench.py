"""``harness commbench``: all-reduce / all-gather / reduce-scatter over message and world sizes.

One torchrun launch per world size runs ``harness.worker.commbench`` on every rank
(gloo on CPU, NCCL on CUDA). The driver collects rank 0's rows into a run record
``<results-root>/commbench/<run_id>/record.json`` (kind "commbench"), writes
``commbench.csv`` and ``fit.json`` (alpha-beta per op and tier) beside it, and prints
nccl-tests-style tables. Bandwidths follow nccl-tests' PERFORMANCE.md (see harness.core.collectives).

Multi-node: run the same command on every node with ``--nnodes K --rdzv-endpoint
host:port``; ``--world-sizes`` are then totals over all nodes. The node whose torchrun
hosts global rank 0 holds the measurements. The command line is ``harness.commands.commbench``;
the functions here take its composed config (``config_jobs.CommbenchConfig``) as ``args``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from harness.core.collectives import MEASUREMENT_COLUMNS, OPS
from harness.core.config_jobs import CommbenchConfig
from harness.core.io import atomic_write_text, write_json
from harness.core.paths import SOURCE_ROOT
from harness.driver import preflight, supervisor, torchrun

SWEEP = "commbench"
WORKER_MODULE = "harness.worker.commbench"
CPU_MAX_BYTES = 64 << 20  # keeps the default CPU run to about a minute
GPU_MAX_BYTES = 256 << 20
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


# ----------------------------------------------------------------------------- arguments


def parse_size(text: str) -> int:
    """'8', '512K', '64M', '1G' -> bytes (binary units, as nccl-tests' -b/-e take them)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}; use e.g. 8, 512K, 64M, 1G")
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def size_ladder(min_bytes: int, max_bytes: int, factor: int) -> list[int]:
    """min, min*f, min*f^2, ... up to and including max (nccl-tests' -b -e -f)."""
    if min_bytes < 1 or max_bytes < min_bytes or factor < 2:
        raise ValueError(f"need 1 <= min <= max and factor >= 2; got {min_bytes}, {max_bytes}, {factor}")
    sizes, s = [], min_bytes
    while s <= max_bytes:
        sizes.append(s)
        s *= factor
    return sizes


def int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def op_list(text: str) -> list[str]:
    ops = [o.strip().replace("-", "_") for o in text.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise argparse.ArgumentTypeError(f"unknown op(s) {bad}; allowed: {', '.join(OPS)}")
    return ops


# ----------------------------------------------------------------------------- launching


def resolve_device(choice: str) -> tuple[str, int]:
    """('cuda' | 'cpu', visible GPUs), probed through preflight."""
    ngpu = preflight.cuda_device_count()
    if choice == "cuda" and ngpu == 0:
        raise SystemExit("harness commbench: --device cuda but no CUDA device is visible")
    return ("cuda" if choice == "cuda" or (choice == "auto" and ngpu > 0) else "cpu"), ngpu


def default_world_sizes(device: str, ngpu: int, nnodes: int) -> list[int]:
    if device == "cpu":
        return [2 * nnodes]
    sizes = [2**k * nnodes for k in range(1, 8) if 2**k <= ngpu]
    return sizes or [nnodes * ngpu]  # one GPU per node: a single rank moves nothing, but say so


def torchrun_cmd(args: CommbenchConfig, world_size: int, worker_args: list[str]) -> list[str]:
    """One launch: standalone on one node, else c10d (or --rdzv-backend) across --nnodes nodes."""
    rdzv = None
    if args.nnodes > 1 or args.rdzv_endpoint:
        rdzv = torchrun.Rendezvous(
            args.rdzv_endpoint or "localhost:29500",
            f"{args.rdzv_id}-ws{world_size}",
            backend=args.rdzv_backend,
        )
    return torchrun.command(
        WORKER_MODULE,
        worker_args,
        nproc=world_size // args.nnodes,
        nnodes=args.nnodes,
        rdzv=rdzv,
        nproc_flag="--nproc_per_node",
    )


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # ranks share the cores; intra-op threads would fight
    env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they happen
    pkg_root = str(SOURCE_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


def run_logged(cmd: list[str], log_path: Path, timeout_s: float, echo: bool) -> tuple[int, str | None]:
    """Run one launch under the supervisor, its output in log_path (progress lines echoed if echo).

    Returns (exit code, cause or None). On timeout or Ctrl-C the whole process tree (torchrun
    and its ranks) is killed, so no rank is left behind holding a port.
    """
    try:
        rc, timed_out = supervisor.run_process(
            cmd,
            worker_env(),
            log_path,
            timeout_s=timeout_s,
            quiet=not echo,
            echo=lambda line: line.startswith("[commbench"),
        )
    except KeyboardInterrupt:  # the tree is down; record the launch as interrupted and go on
        return -1, "interrupted"
    if timed_out:
        return rc, f"timed out after {timeout_s:.0f} s"
    if rc != 0:
        return rc, f"torchrun exited with code {rc}: {error_summary(log_path)}"
    return rc, None


def error_summary(log_path: Path) -> str:
    """The most telling line of a failed launch's log: the last exception, else the last line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"(Error|Exception|error:)", ln) and "Traceback" not in ln]
    return (errors or lines or ["no output"])[-1][:500]


# ----------------------------------------------------------------------------- one run


def new_run_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{host}-{secrets.token_hex(2)}"


def driver_environment(device: str, ngpu: int) -> dict[str, Any]:
    from harness.core.environment import git_state, host_facts

    return {
        **host_facts(),
        "torch_version": preflight.torch_version(),
        "device": device,
        "device_name": preflight.device_name(device),
        "cuda_device_count": ngpu,
        **git_state(),
    }


def worker_args(args: CommbenchConfig, sizes: list[int], device: str, out: Path) -> list[str]:
    return [
        "--ops",
        ",".join(args.ops),
        "--sizes",
        ",".join(map(str, sizes)),
        "--device",
        device,
        "--dtype",
        args.dtype,
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
        "--min-iters",
        str(args.min_iters),
        "--time-budget-s",
        str(args.time_budget_s),
        "--timeout-s",
        str(args.pg_timeout_s),
        "--out",
        str(out),
    ]


def launch_one(
    args: CommbenchConfig, world_size: int, sizes: list[int], device: str, run_dir: Path
) -> dict[str, Any]:
    """One torchrun launch; returns its summary with the rows rank 0 wrote (if any)."""
    out = run_dir / f"ws{world_size}.json"
    log = run_dir / f"ws{world_size}.log"
    cmd = torchrun_cmd(args, world_size, worker_args(args, sizes, device, out))
    print(
        f"# launching world_size={world_size} nnodes={args.nnodes}: {' '.join(cmd[1:8])} ... (log {log})",
        flush=True,
    )
    t0 = time.perf_counter()
    rc, cause = run_logged(cmd, log, args.launch_timeout_s, echo=not args.quiet)
    summary: dict[str, Any] = {
        "world_size": world_size,
        "nproc_per_node": world_size // args.nnodes,
        "nnodes": args.nnodes,
        "rc": rc,
        "seconds": round(time.perf_counter() - t0, 2),
        "log": log.name,
        "cause": cause,
    }
    if cause is None and out.exists():
        payload = json.loads(out.read_text())
        summary.update(
            measurements=payload["measurements"],
            unsupported=payload["unsupported"],
            environment=payload["environment"],
        )
    elif cause is None:
        summary["note"] = "global rank 0 ran on another node; that node's driver holds the measurements"
    return summary


# ----------------------------------------------------------------------------- output


def print_tables(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(
            (r["op"], r["world_size"], r["nnodes"], r["backend"], r["device"], r["dtype"]), []
        ).append(r)
    for (op, n, nn, backend, device, dtype), rs in groups.items():
        print(f"\n# {op}  backend={backend}  device={device}  world_size={n}  nnodes={nn}  dtype={dtype}")
        print(f"# {'size':>11} {'count':>11} {'time':>11} {'p90':>11} {'algbw':>9} {'busbw':>9} {'iters':>6}")
        print(
            f"# {'(B)':>11} {'(elements)':>11} {'(us)':>11} {'(us)':>11} {'(GB/s)':>9} {'(GB/s)':>9} {'':>6}"
        )
        for r in sorted(rs, key=lambda r: r["size_bytes"]):
            print(
                f"  {r['size_bytes']:>11d} {r['count']:>11d} {r['time_s_median'] * 1e6:>11.1f} "
                f"{r['time_s_p90'] * 1e6:>11.1f} {r['algbw_Bps'] / 1e9:>9.4f} {r['busbw_Bps'] / 1e9:>9.4f} "
                f"{r['iters']:>6d}"
            )
        big = max(rs, key=lambda r: r["size_bytes"])
        print(
            f"# busbw at the largest size ({big['size_bytes']} B): {big['busbw_Bps'] / 1e9:.4f} GB/s; "
            f"avg over sizes: {sum(r['busbw_Bps'] for r in rs) / len(rs) / 1e9:.4f} GB/s"
        )


def print_fits(fits: list[dict[str, Any]]) -> None:
    print(
        "\n# alpha-beta fit per (op, tier): t = steps(op,n)*alpha + bus_factor(op,n)*S/B,"
        " WLS on relative time error, 95% bootstrap CI"
    )
    line = "{:<2}{:<15}{:<12}{:>11} {:<22}{:>10} {:<22}{:>7} {:>9}"
    print(
        line.format("#", "op", "tier", "alpha (us)", "[95% CI]", "B (GB/s)", "[95% CI]", "points", "rel.rmse")
    )
    for f in fits:
        if "error" in f:
            print(f"  {f['op']:<15}{f['tier']:<12} not fitted: {f['error']}")
            continue
        a0, a1 = (v * 1e6 for v in f["alpha_s_ci"])
        b0, b1 = (v / 1e9 for v in f["busbw_Bps_ci"])
        print(
            line.format(
                "",
                f["op"],
                f["tier"],
                f"{f['alpha_s'] * 1e6:.2f}",
                f"[{a0:.2f}, {a1:.2f}]",
                f"{f['busbw_Bps'] / 1e9:.4f}",
                f"[{b0:.4f}, {b1:.4f}]",
                f["n_points"],
                f"{f['rel_rmse']:.3f}",
            )
        )
        if "warning" in f:
            print(f"  {'':<27}warning: {f['warning']}")


def save_outputs(
    run_dir: Path, rows: list[dict[str, Any]], fits: list[dict[str, Any]], notes: list[str]
) -> None:
    import pandas as pd

    extra = [c for c in (rows[0] if rows else {}) if c not in MEASUREMENT_COLUMNS]
    df = pd.DataFrame(rows, columns=[*MEASUREMENT_COLUMNS, *extra])
    atomic_write_text(run_dir / "commbench.csv", df.to_csv(index=False))
    fit_doc = {
        "model": "ring alpha-beta: t = latency_steps(op,n)*alpha + bus_factor(op,n)*S/busbw",
        "method": "weighted least squares on relative time error (alpha, 1/B >= 0); case bootstrap",
        "fits": fits,
        "notes": notes,
    }
    write_json(run_dir / "fit.json", fit_doc)  # strict JSON: an unbounded interval is null


def describe_setup(device: str, world_sizes: list[int], nnodes: int) -> list[str]:
    notes = []
    cores = os.cpu_count() or 1
    over = [n for n in world_sizes if device == "cpu" and n // nnodes > cores]
    if over:
        notes.append(
            f"world sizes {over} put more ranks than the {cores} CPU cores on a node: oversubscribed,"
            " so those timings include time-slicing between ranks"
        )
    if device == "cpu":
        notes.append(
            "CPU ranks over gloo (shared memory / loopback TCP): bandwidths are memory-copy and"
            " loopback rates of this host, not a network's"
        )
    if 1 in world_sizes:
        notes.append("world_size 1 moves no data: its busbw is 0 by definition and it is left out of the fit")
    return notes


def flag_emulated(rows: list[dict[str, Any]], fits: list[dict[str, Any]], notes: list[str]) -> None:
    """Say so wherever an op was run by another algorithm (see commbench_worker.EMULATED)."""
    emulated = {(r["op"], r["backend"]): r["emulated_as"] for r in rows if r.get("emulated_as")}
    for (op, backend), how in sorted(emulated.items()):
        note = (
            f"{backend} runs {op} as {how}: it moves about twice a ring {op}'s bytes, so its busbw"
            f" (nccl-tests factor) and fitted B understate the link rate ~2x; not a ring {op} measurement"
        )
        notes.append(note)
        print(f"# note: {note}")
        for f in fits:
            if f["op"] == op:
                f["caveat"] = note
