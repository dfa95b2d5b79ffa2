"""``harness commbench``: all-reduce / all-gather / reduce-scatter over message and world sizes.

One torchrun launch per world size runs ``harness.worker.commbench`` on every rank
(gloo on CPU, NCCL on CUDA). The driver collects rank 0's rows into a run record
``<results-root>/commbench/<run_id>/record.json`` (kind "commbench"), writes
``commbench.csv`` and ``fit.json`` (alpha-beta per op and tier) beside it, and prints
nccl-tests-style tables. Bandwidths follow nccl-tests' PERFORMANCE.md (see commmodel).

Multi-node: run the same command on every node with ``--nnodes K --rdzv-endpoint
host:port``; ``--world-sizes`` are then totals over all nodes. The node whose torchrun
hosts global rank 0 holds the measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness.analysis.commmodel import MEASUREMENT_COLUMNS, OPS, fit_all, tier_of
from harness.core.io import atomic_write_text
from harness.core.paths import SOURCE_ROOT
from harness.core.records import write_record

SWEEP = "commbench"
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness commbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=op_list, default=list(OPS), help="comma list (default: all three)")
    p.add_argument(
        "--world-sizes",
        type=int_list,
        default=None,
        help="total ranks per launch, comma list (default: 2 on CPU; 2,4,8.. up to the GPUs on CUDA)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--min-bytes", type=parse_size, default=16)
    p.add_argument(
        "--max-bytes",
        type=parse_size,
        default=None,
        help=f"default {GPU_MAX_BYTES >> 20}M on CUDA, {CPU_MAX_BYTES >> 20}M on CPU",
    )
    p.add_argument("--factor", type=int, default=4, help="geometric step of the size ladder")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--min-iters", type=int, default=5)
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=1.0,
        help="per (op, size): timed iterations are cut to fit it, never below --min-iters",
    )
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--rdzv-endpoint", default=None, help="host:port of the rendezvous (multi-node)")
    p.add_argument("--rdzv-backend", default="c10d")
    p.add_argument("--rdzv-id", default="harness-commbench")
    p.add_argument("--results-root", default="results")
    p.add_argument("--run-id", default=None)
    p.add_argument("--launch-timeout-s", type=float, default=1800.0, help="per world size")
    p.add_argument("--pg-timeout-s", type=float, default=300.0, help="process-group timeout in the worker")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples of the fit")
    p.add_argument("--quiet", action="store_true", help="do not echo the workers' progress")
    return p


# ----------------------------------------------------------------------------- launching


def resolve_device(choice: str) -> tuple[str, int]:
    """('cuda' | 'cpu', visible GPUs). Importing torch here is fine: this is the driver."""
    from harness.driver.preflight import cuda_device_count

    ngpu = cuda_device_count()
    if choice == "cuda" and ngpu == 0:
        raise SystemExit("harness commbench: --device cuda but no CUDA device is visible")
    return ("cuda" if choice == "cuda" or (choice == "auto" and ngpu > 0) else "cpu"), ngpu


def default_world_sizes(device: str, ngpu: int, nnodes: int) -> list[int]:
    if device == "cpu":
        return [2 * nnodes]
    sizes = [2**k * nnodes for k in range(1, 8) if 2**k <= ngpu]
    return sizes or [nnodes * ngpu]  # one GPU per node: a single rank moves nothing, but say so


def torchrun_cmd(args: argparse.Namespace, world_size: int, worker_args: list[str]) -> list[str]:
    nproc = world_size // args.nnodes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if args.nnodes == 1 and not args.rdzv_endpoint:
        cmd += ["--standalone"]  # free port on localhost: parallel runs do not collide
    else:
        cmd += [
            "--nnodes",
            str(args.nnodes),
            "--rdzv-backend",
            args.rdzv_backend,
            "--rdzv-endpoint",
            args.rdzv_endpoint or "localhost:29500",
            "--rdzv-id",
            f"{args.rdzv_id}-ws{world_size}",
        ]
    return [*cmd, "-m", "harness.worker.commbench", *worker_args]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # ranks share the cores; intra-op threads would fight
    env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they happen
    pkg_root = str(SOURCE_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


def run_logged(cmd: list[str], log_path: Path, timeout_s: float, echo: bool) -> tuple[int, str | None]:
    """Run cmd in its own process group, teeing output to log_path (and stdout if echo).

    Returns (exit code, cause or None). On timeout the whole group (torchrun and its
    ranks) is terminated, so no rank is left behind holding a port.
    """
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=worker_env(),
            start_new_session=True,
        )

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                if echo and line.startswith("[commbench"):
                    print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout_s)
            cause = None
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
            _kill_group(proc)
            rc = proc.returncode if proc.returncode is not None else -1
            cause = (
                f"timed out after {timeout_s:.0f} s"
                if isinstance(e, subprocess.TimeoutExpired)
                else "interrupted"
            )
        reader.join(timeout=10)
    if cause is None and rc != 0:
        cause = f"torchrun exited with code {rc}: {error_summary(log_path)}"
    return rc, cause


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


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
    import torch

    from harness.core.environment import git_state, host_facts
    from harness.driver.preflight import device_name

    return {
        **host_facts(),
        "torch_version": torch.__version__,
        "device": device,
        "device_name": device_name(device),
        "cuda_device_count": ngpu,
        **git_state(),
    }


def worker_args(args: argparse.Namespace, sizes: list[int], device: str, out: Path) -> list[str]:
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


def launch_one(args, world_size: int, sizes: list[int], device: str, run_dir: Path) -> dict[str, Any]:
    """One torchrun launch; returns its summary with the rows rank 0 wrote (if any)."""
    out = run_dir / f"ws{world_size}.json"
    log = run_dir / f"ws{world_size}.log"
    cmd = torchrun_cmd(args, world_size, worker_args(args, sizes, device, out))
    print(
        f"# launching world_size={world_size} nnodes={args.nnodes}: {' '.join(cmd[1:5])} ... (log {log})",
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


def finite(x: Any) -> Any:
    """JSON has no inf/nan: replace them by None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x


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
    atomic_write_text(run_dir / "fit.json", json.dumps(finite(fit_doc), indent=2) + "\n")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    device, ngpu = resolve_device(args.device)
    max_bytes = args.max_bytes or (GPU_MAX_BYTES if device == "cuda" else CPU_MAX_BYTES)
    sizes = size_ladder(args.min_bytes, max_bytes, args.factor)
    world_sizes = args.world_sizes or default_world_sizes(device, ngpu, args.nnodes)
    bad = [n for n in world_sizes if n % args.nnodes]
    if bad:
        print(
            f"harness commbench: world sizes {bad} are not multiples of --nnodes {args.nnodes}",
            file=sys.stderr,
        )
        return 2
    if device == "cuda" and max(world_sizes) // args.nnodes > ngpu:
        print(
            f"harness commbench: {max(world_sizes) // args.nnodes} ranks per node but {ngpu} GPUs visible",
            file=sys.stderr,
        )
        return 2

    notes = describe_setup(device, world_sizes, args.nnodes)
    for note in notes:
        print(f"# note: {note}")
    run_id = args.run_id or new_run_id()
    run_dir = Path(args.results_root) / SWEEP / run_id
    record: dict[str, Any] = {
        "kind": "commbench",
        "sweep": SWEEP,
        "run_id": run_id,
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            **{k: v for k, v in vars(args).items()},
            "device": device,
            "sizes": sizes,
            "world_sizes": world_sizes,
            "max_bytes": max_bytes,
        },
        "environment": driver_environment(device, ngpu),
        "notes": notes,
        "measurements": [],
    }
    write_record(run_dir, record)

    launches = [launch_one(args, n, sizes, device, run_dir) for n in world_sizes]
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

    print_tables(rows)
    for u in record["unsupported"]:
        print(f"# {u['op']} is not supported by {u['backend']} (world_size {u['world_size']}): {u['error']}")
    fits = fit_all(_frame(rows), n_bootstrap=args.bootstrap) if rows else []
    flag_emulated(rows, fits, notes)
    print_fits(fits)
    tiers = sorted({tier_of(r["nnodes"]) for r in rows})
    if tiers == ["intra-node"]:
        print(
            "# only the intra-node tier was measured (nnodes=1); the inter-node tier needs a multi-node"
            " run (--nnodes, --rdzv-endpoint)"
        )
    save_outputs(run_dir, rows, fits, notes)
    write_record(run_dir, finite(record))
    print(f"\n# record: {run_dir / 'record.json'}  status={record['status']}")
    if failed:
        print(f"# cause: {record['cause']}", file=sys.stderr)
    return 1 if failed else 0


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


def _frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
