"""The run record: the only contract between training and analysis.

``results/<sweep>/<run_id>/record.json`` (see ``results/README.md`` for every field),
written atomically (temp file + fsync + rename), so a reader sees the old record or the
new one, never half of one. No torch here: the analysis imports this module.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.core import io
from harness.core.io import atomic_write_text

SCHEMA_VERSION = 1
# completed: finished and measured. failed: crashed (retried by sweeps). diverged: NaN/Inf loss.
# oom: out of memory. timeout: killed at the launcher's time limit. preempted: checkpointed on
# SIGTERM, to be resumed.
STATUSES = ("running", "completed", "failed", "diverged", "oom", "timeout", "preempted")
RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


class RecordError(ValueError):
    """A record that cannot be read: corrupt, truncated or of an unknown schema version."""


def write_record(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    if record.get("status") not in STATUSES:
        raise RecordError(f"record status {record.get('status')!r} is not one of {STATUSES}")
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(run_dir) / RECORD_FILE
    atomic_write_text(path, io.dumps(record) + "\n")
    return path


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable run record ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict):
        raise RecordError(f"{path}: run record is not a JSON object")
    version = rec.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(
            f"{path}: schema_version={version!r} is not supported; this harness reads version {SCHEMA_VERSION}"
        )
    return rec


def iter_records(root: str | os.PathLike, *, warn: bool = True) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every readable record under root; unreadable ones are skipped with a warning naming the file."""
    for path in sorted(Path(root).rglob(RECORD_FILE)):
        try:
            yield path, read_record(path)
        except RecordError as e:
            if warn:
                warnings.warn(f"skipping {e}", stacklevel=2)


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(io.dumps(row, indent=None) + "\n")


# The flat columns the analysis reads: one row per run. Names are the analysis's
# vocabulary (N, D, C, loss, ...); the nested record keeps the full detail.
TABLE_COLUMNS: dict[str, str] = {
    "run_id": "run_id",
    "kind": "kind",
    "sweep": "sweep",
    "status": "status",
    "model": "model.name",
    "N": "model.params_nonembedding",
    "N_total": "model.params_total",
    "flops_per_token": "model.flops_per_token",
    "D": "training.tokens_trained",
    "C": "training.compute_6nd",
    "loss": "training.final_train_loss",
    "heldout_loss": "training.heldout_loss",
    "b_simple": "training.noise_scale.b_simple_tokens",
    "engine": "engine.name",
    "zero_stage": "engine.zero_stage",
    "world_size": "parallel.world_size",
    "nnodes": "parallel.nnodes",
    "device": "parallel.device",
    "dtype": "parallel.dtype",
    "global_batch_tokens": "batch.global_batch_tokens",
    "tokens_per_device_per_step": "batch.tokens_per_device_per_step",
    "step_time_s": "timing.step_time_median_s",
    "step_time_p90_s": "timing.step_time_p90_s",
    "comm_time_s": "timing.comm_time_median_s",
    "tokens_per_s": "throughput.tokens_per_s",
    "tokens_per_s_per_device": "throughput.tokens_per_s_per_device",
    "tflops_per_device": "throughput.model_tflops_per_device",
    "mfu": "throughput.mfu",
    "peak_source": "throughput.peak_source",
    "gpu_type": "cluster.gpu_type",
    "lr": "config.train.lr",
    "lr_rule": "config.train.lr_rule",
}


def _get(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def records_table(root: str | os.PathLike, *, status: str | None = "completed", kind: str | None = "train"):
    """One row per run under root with TABLE_COLUMNS (pandas DataFrame).

    ``kind`` selects training runs ("train") or other record kinds (e.g. "commbench");
    None keeps all. ``status`` None keeps failed and running records too.
    """
    import pandas as pd

    rows = []
    for path, rec in iter_records(root):
        if status is not None and rec.get("status") != status:
            continue
        if kind is not None and rec.get("kind", "train") != kind:
            continue
        row = {col: _get(rec, key) for col, key in TABLE_COLUMNS.items()}
        row["path"] = str(path.parent)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "path"])
