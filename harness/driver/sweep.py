"""Sweeps: expand a grid into runs with stable ids, run what is missing, go on past failures.

``harness sweep sweep=<name> [key=value ...] [--parallel K] [--dry-run] [--retry R]`` (harness.commands)

Each point is a full config composed from: the sweep's common overrides, then the
user's, then the point's own axes. Its id is a hash of that resolved config, so a
re-run finds the runs that completed before and skips them; killing a sweep and
starting it again finishes only what is missing. Invalid points, failures, timeouts
and out-of-memory runs are recorded with their cause and the sweep goes on.
"""

from __future__ import annotations

import csv
import itertools
import shlex
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.core import config as C
from harness.core import flops, shapes
from harness.core import runspec as plan
from harness.core.config import HarnessConfig, SweepConfig
from harness.core.records import RecordError, iter_records, read_record
from harness.driver import launch, preflight, supervisor


def load_sweep(spec: str) -> SweepConfig:
    """A sweep preset: by name (``configs/sweep/<name>.yaml``), or the path of a preset file
    (``harness plan`` writes them under ``<results>/plans/``)."""
    path = Path(spec).expanduser()
    if not (spec.endswith((".yaml", ".yml")) or "/" in spec):
        return C.compose([f"sweep={spec}"]).sweep
    if not path.is_file():
        raise C.ConfigError(
            f"sweep={spec!r}: no such preset file; allowed: a YAML file, or one of "
            + ", ".join(C.available("sweep"))
        )
    try:
        sweep = OmegaConf.merge(OmegaConf.structured(SweepConfig), OmegaConf.load(path))
    except OmegaConfBaseException as e:
        raise C.ConfigError(f"sweep={spec}: not a sweep preset: {e}") from None
    return cast(SweepConfig, sweep)  # a DictConfig with SweepConfig's fields


@dataclass
class Point:
    overrides: list[str]
    cfg: HarnessConfig | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


def expand(sweep: SweepConfig, user_overrides: list[str]) -> list[Point]:
    """The sweep's points as override lists (grid x variants x nproc, plus explicit points)."""
    common = [*sweep.overrides, *user_overrides, f"sweep_name={sweep.name}"]
    axes: list[list[str]] = []
    for model in sweep.models:
        budgets = [f"train.tokens={int(t)}" for t in sweep.tokens]
        if sweep.tokens_per_param:
            n = flops.params_nonembedding(shapes.of_config(C.compose([*common, f"model={model}"])))
            budgets += [f"train.tokens={int(r * n)}" for r in sweep.tokens_per_param]
        axes += [[f"model={model}", b] for b in budgets]
    grid = [
        [*a, f"nproc={n}", *shlex.split(v)]
        for a, n, v in itertools.product(axes, sweep.nproc, sweep.variants)
    ]
    grid += [shlex.split(p) for p in sweep.points]
    points = []
    for axes_overrides in grid:
        ov = [*common, *axes_overrides]
        try:
            cfg = cast(HarnessConfig, C.compose(ov))
            C.validate(cfg)
            preflight.check(cfg)
            points.append(Point(axes_overrides, cfg))
        except C.ConfigError as e:
            points.append(Point(axes_overrides, None, str(e)))
    return _dedupe(points)


def _dedupe(points: list[Point]) -> list[Point]:
    seen, out = set(), []
    for p in points:
        key = plan.run_id(p.cfg) if p.cfg is not None else p.label
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def existing_runs(folder: Path) -> dict[str, dict]:
    """Records under folder keyed by the id their stored config has today.

    A record's config is merged onto the current schema before hashing, so runs made before
    a new config key existed (or stored under an older id) are still found and not re-run.
    """
    from omegaconf import OmegaConf

    out: dict[str, dict] = {}
    for _, rec in iter_records(folder, warn=False):
        if rec.get("kind", "train") != "train" or not isinstance(rec.get("config"), dict):
            continue
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(C.HarnessConfig), rec["config"])
        except Exception:  # a config from an incompatible version: not a match for anything
            continue
        rid = plan.run_id(cfg)
        if rid not in out or rec.get("status") == "completed":
            out[rid] = rec
    return out


def status_of(cfg: HarnessConfig) -> str | None:
    try:
        return read_record(plan.run_dir(cfg)).get("status")
    except RecordError:
        return None


class Progress:
    def __init__(self, total: int, parallel: int) -> None:
        self.total, self.parallel = total, parallel
        self.done = self.failed = 0
        self.durations: list[float] = []
        self.start = time.time()

    def update(self, ok: bool, duration: float) -> str:
        self.done += ok
        self.failed += not ok
        self.durations.append(duration)
        remaining = self.total - self.done - self.failed
        mean = sum(self.durations) / len(self.durations)
        eta = remaining * mean / self.parallel
        return (
            f"[sweep] {self.done} done, {self.failed} failed, {remaining} remaining; "
            f"elapsed {time.time() - self.start:.0f} s, ETA {eta:.0f} s"
        )


# Statuses a re-run repeats by default: crashes and time-outs may pass next time; a diverged or
# out-of-memory run would fail the same way (re-run those with --retry-all).
RETRY = {None, "running", "failed", "timeout", "preempted"}


def run_point(point: Point) -> tuple[Point, dict, float]:
    assert point.cfg is not None  # invalid points are never run
    start = time.time()
    if supervisor.STOPPING.is_set():  # SIGTERM: start nothing new; a re-run picks these up
        return (
            point,
            {
                "run_id": plan.run_id(point.cfg),
                "status": "not started",
                "failure": {"type": "Stopped", "message": "sweep received SIGTERM"},
            },
            0.0,
        )
    try:
        record = launch.run(point.cfg, quiet=True).record
    except supervisor.RunLocked as e:
        record = {
            "run_id": plan.run_id(point.cfg),
            "status": "locked",
            "failure": {"type": "RunLocked", "message": str(e)},
        }
    return point, record, time.time() - start


def run_sweep(
    sweep: SweepConfig,
    user_overrides: list[str],
    *,
    parallel: int | None = None,
    retry: str = "failed",
    log=print,
) -> list[dict]:
    """Run the sweep's missing points. retry: "failed" (crashes, time-outs), "all" (also diverged, oom), "none"."""
    points = expand(sweep, user_overrides)
    records: dict[str, dict] = {}
    valid = [p.cfg for p in points if p.cfg is not None]
    existing = existing_runs(Path(valid[0].results_dir) / sweep.name) if valid else {}
    todo: list[Point] = []
    for p in points:
        if p.cfg is None:
            log(f"[sweep] invalid point {p.label}: {p.error}")
            continue
        rid = plan.run_id(p.cfg)
        st = existing.get(rid, {}).get("status")
        rerun = st is None or (st != "completed" and (retry == "all" or (retry == "failed" and st in RETRY)))
        if rerun:
            todo.append(p)
        else:
            records[rid] = existing[rid]
    invalid = [p for p in points if p.cfg is None]
    log(
        f"[sweep] {sweep.name}: {len(points)} points, {len(records)} already recorded, {len(todo)} to run"
        + (f", {len(invalid)} invalid" if invalid else "")
    )
    k = max(1, parallel or sweep.parallel)
    progress = Progress(len(todo), k)

    with ThreadPoolExecutor(max_workers=k) as pool:
        futures = [pool.submit(run_point, p) for p in todo]
        for fut in as_completed(futures):
            point, record, duration = fut.result()
            records[record["run_id"]] = record
            ok = record["status"] == "completed"
            if not ok:
                f = record.get("failure") or {}
                log(
                    f"[sweep] FAILED {record['run_id']} ({point.label}): {f.get('type')}: {f.get('message', '')[:200]}"
                )
            log(progress.update(ok, duration))
    ordered = [
        records[plan.run_id(p.cfg)] for p in points if p.cfg is not None and plan.run_id(p.cfg) in records
    ]
    ordered += [_invalid_record(p, sweep) for p in invalid]
    return ordered


def _invalid_record(point: Point, sweep: SweepConfig) -> dict:
    return {
        "run_id": "-",
        "status": "invalid",
        "sweep": sweep.name,
        "failure": {"type": "ConfigError", "message": point.error},
        "label": point.label,
    }


SUMMARY_COLUMNS = (
    "run_id",
    "status",
    "model",
    "N",
    "world",
    "tokens",
    "loss",
    "heldout",
    "tok/s",
    "MFU",
    "cause",
)


def summary_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        tr, th = r.get("training") or {}, r.get("throughput") or {}
        f = r.get("failure") or {}
        rows.append({
            "run_id": r["run_id"], "status": r["status"], "model": (r.get("model") or {}).get("name", r.get("label")),
            "N": (r.get("model") or {}).get("params_nonembedding"), "world": (r.get("parallel") or {}).get("world_size"),
            "tokens": tr.get("tokens_trained"), "loss": tr.get("final_train_loss"), "heldout": tr.get("heldout_loss"),
            "tok/s": th.get("tokens_per_s"), "MFU": th.get("mfu"),
            "cause": f"{f.get('type')}: {str(f.get('message', ''))[:80]}" if f else "",
        })  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    def fmt(col: str, v: Any) -> str:
        if v is None:
            return ""
        if col == "MFU":
            return f"{v:.1%}"
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[fmt(c, r[c]) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
        for i, c in enumerate(SUMMARY_COLUMNS)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(SUMMARY_COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_summary(results_dir: Path, sweep_name: str, rows: list[dict]) -> Path:
    from io import StringIO

    from harness.core.io import atomic_write_text

    buf = StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS))
    w.writeheader()
    w.writerows(rows)
    path = results_dir / sweep_name / "summary.csv"
    atomic_write_text(path, buf.getvalue())
    return path
