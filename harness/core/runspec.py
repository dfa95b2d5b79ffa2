"""From a resolved config to a planned run: stable id, run folder, and the record's static part.

Torch-free: the driver, the sweep and the worker all use it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.core import config as C
from harness.core import flops, shapes
from harness.core.records import CONFIG_FILE

# Keys that name where a run is stored, how it is watched or recovered, or who chose a value:
# not what it computes (a resumed run equals an uninterrupted one), so not part of its id.
_NOT_IDENTITY = ("results_dir", "sweep_name", "run_id", "wandb", "launcher", "sweep")
_NOT_IDENTITY_TRAIN = (
    "lr_rule",
    "log_interval",
    "comm_timeout_s",
    "checkpoint_interval_steps",
    "checkpoint_interval_s",
    "keep_checkpoints",
    "resume",
)


def run_id(cfg: Any) -> str:
    """Stable id: model, world size and a hash of everything that determines the result."""
    if cfg.run_id:
        return str(cfg.run_id)
    ident = {k: v for k, v in C.to_container(cfg).items() if k not in _NOT_IDENTITY}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in _NOT_IDENTITY_TRAIN}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.model.name}-{cfg.engine.name}{cfg.engine.zero_stage if cfg.engine.name != 'ddp' else ''}-w{C.world_size(cfg)}-{digest}"


def run_dir(cfg: Any) -> Path:
    return Path(cfg.results_dir) / cfg.sweep_name / run_id(cfg)


def write_config(cfg: Any, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    from harness.core.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def model_facts(cfg: Any) -> dict:
    s = shapes.of_config(cfg)
    return {
        "name": cfg.model.name,
        "n_layer": s.n_layer,
        "n_head": s.n_head,
        "d_model": s.d_model,
        "vocab_size": s.vocab_size,
        "seq_len": s.seq_len,
        "params_total": flops.params_total(s),
        "params_nonembedding": flops.params_nonembedding(s),
        "flops_per_token": flops.flops_per_token(s),
        "flops_convention": "PaLM: 6*N_nonembed + 6*d_model*vocab + 12*n_layer*d_model*seq_len (fwd+bwd, no recompute)",
    }


def batch_facts(cfg: Any) -> dict:
    gb = C.global_batch(cfg)
    ws = C.world_size(cfg)
    return {
        "micro_batch": cfg.train.micro_batch,
        "grad_accum": cfg.train.grad_accum,
        "global_batch_seqs": gb,
        "global_batch_tokens": gb * cfg.train.seq_len,
        "tokens_per_device_per_step": gb * cfg.train.seq_len // ws,
        "steps": C.total_steps(cfg),
    }


def _created_at(cfg: Any) -> str:
    """When the run was first recorded (the driver's "running" record), else now."""
    from harness.core.records import RecordError, read_record

    try:
        return read_record(run_dir(cfg))["created_at"]
    except (RecordError, KeyError):
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def base_record(cfg: Any, status: str) -> dict:
    """The part of the record known before training: identity, config, model, batch, cluster."""
    return {
        "kind": "train",
        "run_id": run_id(cfg),
        "sweep": cfg.sweep_name,
        "status": status,
        "failure": None,
        "created_at": _created_at(cfg) if status != "running" else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_facts(cfg),
        "engine": {"name": cfg.engine.name, "zero_stage": cfg.engine.zero_stage},
        "parallel": {
            "world_size": C.world_size(cfg),
            "nnodes": cfg.nnodes,
            "nproc_per_node": cfg.nproc,
            "device": cfg.cluster.device,
            "backend": "nccl" if cfg.cluster.device == "cuda" else "gloo",
            "dtype": cfg.train.dtype,
        },
        "batch": batch_facts(cfg),
        "cluster": {"name": cfg.cluster.name, "gpu_type": cfg.cluster.gpu_type},
        "config": C.to_container(cfg),
    }


# How a failure's type maps to the record status: deterministic outcomes get their own status
# so a sweep does not re-run them by default; everything else is "failed" and is retried.
FAILURE_STATUS = {
    "Diverged": "diverged",
    "OutOfMemoryError": "oom",
    "MemoryError": "oom",
    "Timeout": "timeout",
}


def failed_record(cfg: Any, failure: dict | None, **extra: Any) -> dict:
    """A run that did not complete: the static part plus the cause (rank, exception, message)."""
    failure = failure or {}
    record = base_record(cfg, FAILURE_STATUS.get(failure.get("type", ""), "failed"))
    record["failure"] = failure or {
        "type": "unknown",
        "message": "the run ended without a record or an error",
    }
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record.update(extra)
    return record
