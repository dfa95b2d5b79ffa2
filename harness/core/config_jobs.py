"""The configs of the commands that are not one training run: plan, extrapolate, commbench.

Each is the schema of a primary config (``configs/<name>.yaml``) composed by Hydra like the
training config (``harness.core.config``), sharing its groups: ``plan`` is the run config
every planned point shares plus a ``plan`` section; ``extrapolate`` takes the ``cluster`` and
``model`` presets and its assumptions at the top level (``harness extrapolate days=90``);
``commbench`` is flat. ``validate_*`` check the values before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from harness.core.collectives import OPS as COMM_OPS
from harness.core.config import ClusterConfig, ConfigError, HarnessConfig, ModelConfig, fail

LOSS_LAWS = ("auto", "chinchilla", "results")
CRITICAL_BATCH_LAWS = ("auto", "kaplan", "fit")
COMM_DEVICES = ("auto", "cpu", "cuda")
COMM_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class PlanConfig:
    """``harness plan``: an IsoFLOP grid around a prior law's optimum, written as a sweep preset."""

    budgets: list[float] = MISSING  # compute budgets C = 6ND in FLOPs (required)
    name: str | None = None  # sweep name; null = the out file's stem, else "isoflop"
    out: str | None = None  # YAML path; null = harness/configs/sweep/<name>.yaml
    description: str | None = None
    prior: str | None = None  # fit.json from harness fit; null = Epoch's Chinchilla refit
    prior_group: str | None = None  # which group of a multi-group fit.json
    spread: float = 4.0  # sizes from N*/spread to N* x spread
    sizes: int = 5  # model sizes per budget (at least 5)
    rule: str | None = None  # LR/batch rule id (harness/driver/lr_rules.py); null = its default
    lr_sweep: list[float] = field(default_factory=lambda: [1.0])  # LR multipliers per size
    batch: int = 16  # global batch (sequences) for rules that set none
    max_micro_batch: int = 32  # sequences per rank per micro-step, at most
    min_steps: int = 20  # the batch is capped so every run has this many steps
    aspect: float = 64.0  # d_model / n_layer of the family
    head_dim: int = 64  # target head width (n_head = d_model / head_dim)
    min_layers: int = 1
    results: str = "results"  # records whose measured tokens/s time the plan
    assume_mfu: float | None = None  # utilisation assumed when nothing was measured
    parallel: int = 1  # runs at once (the sweep's parallel)


@dataclass
class PlanJobConfig(HarnessConfig):
    """The plan's config: the run config every planned point shares, plus the ``plan`` section."""

    plan: PlanConfig = field(default_factory=PlanConfig)


@dataclass
class ExtrapolateConfig:
    """``harness extrapolate``: a cluster and model preset and the assumptions of the plan."""

    cluster: ClusterConfig = MISSING
    model: ModelConfig = MISSING
    days: float = 90.0
    checkpoint_s: float = 30.0  # time to write one checkpoint
    restart_s: float = 300.0  # time to restart after a failure
    batch_tokens: float = 16 * 2**20  # global batch requested, tokens
    critical_batch_tokens: float | None = None
    seq_len: int = 2048
    gpus: int | None = None  # null = the whole cluster
    n_bootstrap: int = 100  # resamples of the published-run calibration
    loss_bootstrap: int = 1000  # resamples of the loss-law fit
    seed: int = 0
    straggler_cv: float | None = None  # null = none (the published replays show no straggler signal)
    results: str | None = None  # completed runs to fit the loss and throughput laws to
    out: str = "results/extrapolate"
    loss_law: str = "auto"  # LOSS_LAWS
    critical_batch: str | None = None  # auto | kaplan | fit | a number of tokens; null = not capped


@dataclass
class CommbenchConfig:
    """``harness commbench``: collectives over message sizes and world sizes."""

    ops: list[str] = field(default_factory=lambda: list(COMM_OPS))
    world_sizes: list[int] | None = None  # total ranks per launch; null = 2 on CPU, 2,4,8.. GPUs on CUDA
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # COMM_DTYPES
    min_bytes: int = 16
    max_bytes: int | None = None  # null = 256 MiB on CUDA, 64 MiB on CPU
    factor: int = 4  # geometric step of the size ladder
    warmup: int = 5
    iters: int = 20
    min_iters: int = 5
    time_budget_s: float = 1.0  # per (op, size): timed iterations cut to fit it, never below min_iters
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (multi-node)
    rdzv_backend: str = "c10d"
    rdzv_id: str = "harness-commbench"
    results_root: str = "results"
    run_id: str | None = None
    launch_timeout_s: float = 1800.0  # per world size
    pg_timeout_s: float = 300.0  # process-group timeout in the worker
    bootstrap: int = 500  # bootstrap resamples of the fit
    quiet: bool = False  # do not echo the workers' progress


# Primary config (configs/<name>.yaml) -> its schema, registered as base_<name>.
ROOTS: dict[str, type] = {
    "config": HarnessConfig,
    "plan": PlanJobConfig,
    "extrapolate": ExtrapolateConfig,
    "commbench": CommbenchConfig,
}


def _finite(key: str, v: Any, lo: float, strict: bool = False, optional: bool = False) -> None:
    if v is None and optional:
        return
    ok = v is not None and math.isfinite(v) and (v > lo if strict else v >= lo)
    if not ok:
        fail(key, v, f"a finite number {'>' if strict else '>='} {lo:g}" + (" or null" if optional else ""))


def positive_number(text: Any) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except (TypeError, ValueError):
        return False


def validate_extrapolate(cfg: Any) -> None:
    for key, lo, strict, optional in (
        ("days", 0, True, False),
        ("checkpoint_s", 0, False, False),
        ("restart_s", 0, False, False),
        ("batch_tokens", 1, False, False),
        ("critical_batch_tokens", 0, True, True),
        ("seq_len", 1, False, False),
        ("gpus", 1, False, True),
        ("n_bootstrap", 0, False, False),
        ("loss_bootstrap", 0, False, False),
        ("straggler_cv", 0, False, True),
    ):
        _finite(key, cfg[key], lo, strict, optional)
    if cfg.loss_law not in LOSS_LAWS:
        fail("loss_law", cfg.loss_law, f"one of {', '.join(LOSS_LAWS)}")
    cb = cfg.critical_batch
    if cb is not None and cb not in CRITICAL_BATCH_LAWS and not positive_number(cb):
        fail("critical_batch", cb, f"{', '.join(CRITICAL_BATCH_LAWS)}, a number of tokens > 0, or null")


def validate_commbench(cfg: Any) -> None:
    bad = [o for o in cfg.ops if o not in COMM_OPS]
    if bad or not cfg.ops:
        fail("ops", list(cfg.ops), f"a non-empty list of {', '.join(COMM_OPS)}")
    if cfg.world_sizes is not None and (not cfg.world_sizes or min(cfg.world_sizes) < 1):
        fail("world_sizes", list(cfg.world_sizes), "positive integers, or null")
    if cfg.device not in COMM_DEVICES:
        fail("device", cfg.device, f"one of {', '.join(COMM_DEVICES)}")
    if cfg.dtype not in COMM_DTYPES:
        fail("dtype", cfg.dtype, f"one of {', '.join(COMM_DTYPES)}")
    for key in ("min_bytes", "warmup", "iters", "min_iters", "nnodes"):
        if cfg[key] < (0 if key == "warmup" else 1):
            fail(key, cfg[key], f"must be >= {0 if key == 'warmup' else 1}")
    if cfg.max_bytes is not None and cfg.max_bytes < cfg.min_bytes:
        fail("max_bytes", cfg.max_bytes, f"at least min_bytes={cfg.min_bytes}, or null")
    if cfg.factor < 2:
        fail("factor", cfg.factor, "must be >= 2")
    for key in ("time_budget_s", "launch_timeout_s", "pg_timeout_s"):
        _finite(key, cfg[key], 0, strict=True)
    if cfg.bootstrap < 0:
        fail("bootstrap", cfg.bootstrap, "must be >= 0")


def validate_plan(cfg: Any) -> None:
    """The plan section (each planned point is validated as a run by the planner)."""
    from omegaconf import OmegaConf

    p = cfg.plan
    for key in ("nproc", "train.seq_len", "model.vocab_size"):
        if OmegaConf.select(cfg, key) < 1:
            fail(key, OmegaConf.select(cfg, key), "must be >= 1")
    if OmegaConf.is_missing(p, "budgets") or not p.budgets:
        raise ConfigError("plan.budgets is required: compute budgets in FLOPs, e.g. --budgets 1e13,3e13,1e14")
    for key in ("budgets", "lr_sweep"):
        if not all(positive_number(v) for v in p[key]) or not p[key]:
            fail(f"plan.{key}", list(p[key]), "positive finite numbers")
    _finite("plan.aspect", p.aspect, 0, strict=True)
    _finite("plan.assume_mfu", p.assume_mfu, 0, strict=True, optional=True)
    for key in ("batch", "max_micro_batch", "min_steps", "head_dim", "min_layers", "parallel"):
        if p[key] < 1:
            fail(f"plan.{key}", p[key], "must be >= 1")
