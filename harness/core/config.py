"""The typed config tree (Hydra structured configs) and its validation.

Hydra composes YAML groups under ``harness/configs/`` (also reachable as ``configs/`` at
the repository root) onto these dataclasses, so a typo in a key or a wrong type fails at
composition time (``compose``, checked in ``harness.core.compose``). Each ``launcher``
option has its own schema (``LAUNCHERS``). The other commands' configs (plan, extrapolate,
commbench) are in ``harness.core.config_jobs``. ``validate`` then checks the cross-field
rules before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from harness.core.paths import CONFIG_DIR  # re-exported: callers use C.CONFIG_DIR

DTYPES = ("fp32", "bf16", "fp16")
ENGINES = ("ddp", "deepspeed")
DEVICES = ("cpu", "cuda")
SCHEDULES = ("cosine", "linear", "constant")


class ConfigError(ValueError):
    """A config value that is not allowed; the message names the value and what is allowed."""


@dataclass
class ModelConfig:
    name: str = MISSING
    n_layer: int = MISSING
    n_head: int = MISSING
    d_model: int = MISSING
    vocab_size: int = 256  # byte-level by default; the data's vocabulary must fit
    mlp_ratio: int = 4
    dropout: float = 0.0
    plan_only: bool = False  # true for shapes only planned and extrapolated, never trained (GPT-3 175B class)


@dataclass
class ClusterConfig:
    name: str = MISSING
    device: str = "cpu"  # cpu | cuda
    gpu_type: str = "cpu"  # names the device's figures in harness/core/hardware_specs.py (SPECS)
    gpus_per_node: int = 1
    num_nodes: int = 1
    # Device figures: null = gpu_type's in hardware_specs (read them through hardware_specs.peak_flops /
    # cluster_figures / from_cluster); set only to override. No spec and no figure (the CPU): the peak is
    # measured and labelled. Dense peak FLOP/s per device by dtype:
    peak_flops_bf16: float | None = None
    peak_flops_fp32: float | None = None
    memory_bytes_per_device: float | None = None
    intra_node_bw_bytes_per_s: float | None = None  # per direction, per GPU (NVLink)
    inter_node_bw_bytes_per_s: float | None = None  # per GPU (NIC)
    nic_effective_fraction: float = 1.0  # e.g. Spectrum-X's claimed 95%
    description: str = ""


@dataclass
class EngineConfig:
    name: str = "ddp"
    zero_stage: int = 0  # DeepSpeed only
    bucket_cap_mb: float = 25.0
    gradient_as_bucket_view: bool = True


@dataclass
class TrainConfig:
    micro_batch: int = 8  # sequences per rank per micro-step
    grad_accum: int = 1
    global_batch: int | None = None  # sequences per optimizer step; null = micro * accum * world
    seq_len: int = 128
    tokens: int = 1_000_000  # token budget D: steps = ceil(tokens / global batch tokens)
    lr: float = 1e-3
    lr_rule: str = "manual"  # what set lr and the batch: "manual" or a rule id from harness/lr_rules.py
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # applied identically by every engine; 0 disables
    dtype: str = "fp32"
    seed: int = 0
    compile: bool = False
    eval_interval: int = 0  # steps between held-out evaluations; 0 = only at the end
    eval_tokens: int = 65536  # held-out tokens per evaluation (fixed windows, sharded over ranks)
    timing_warmup_steps: int = 3  # excluded from step-time statistics
    log_interval: int = 10
    comm_timeout_s: float = 300.0
    checkpoint_interval_steps: int = 0  # 0 = none by step count
    checkpoint_interval_s: float = 0.0  # 0 = none by time; decided by rank 0 at log boundaries
    keep_checkpoints: int = 2  # retention: newest K kept
    resume: bool = True  # continue from the run folder's latest checkpoint when there is one


@dataclass
class DataConfig:
    source: str = "embedded"  # embedded (Python stdlib source, bytes) | path to a prepared token dir
    heldout_frac: float = 0.05
    cache_dir: str = ""  # empty = $HARNESS_CACHE or ~/.cache/harness


@dataclass
class LauncherConfig:
    """How the ranks are started: the fields every launcher has.

    Each option of the ``launcher`` group (``configs/launcher/<name>.yaml``) selects its own
    schema below through its defaults list; ``launch/README.md`` shows each on a real cluster.
    """

    name: str = MISSING
    timeout_s: float | None = None  # kill a run after this long and record it as timed out


@dataclass
class LocalLauncherConfig(LauncherConfig):
    """torchrun on this machine: nproc processes, --standalone rendezvous."""

    name: str = "local"


@dataclass
class NodesLauncherConfig(LauncherConfig):
    """What the launchers that span nodes share (multinode, deepspeed, slurm)."""

    # The interface gloo / NCCL bind to, e.g. ib0 (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME); empty = theirs.
    socket_ifname: str = ""
    # How long a driver whose node did not host rank 0 waits for the record on the shared filesystem.
    record_wait_s: float = 120.0


@dataclass
class MultinodeLauncherConfig(NodesLauncherConfig):
    """torchrun with c10d rendezvous, one driver per node."""

    name: str = "multinode"
    rdzv_endpoint: str = ""  # HOST:PORT every node reaches; the node owning HOST serves the rendezvous
    rdzv_id: str = ""  # empty = the run id (the same on every node)
    local_addr: str = ""  # this node's address as the others reach it (torchrun --local-addr)
    join_timeout_s: float = 600.0  # how long the agents wait for all nodes to join
    connect_timeout_s: float = 60.0  # how long a joining node waits for the rendezvous to answer


@dataclass
class DeepSpeedLauncherConfig(NodesLauncherConfig):
    """The DeepSpeed launcher with an MPI-style hostfile ("host slots=N" per line)."""

    name: str = "deepspeed"
    hostfile: str = ""  # empty with nnodes=1: "localhost slots=<nproc>" written into the run folder
    master_addr: str = ""  # rank 0's host; empty = the first host of the hostfile
    master_port: int = 29500
    node_rank: int = -1  # >= 0: no ssh, start one driver per node with its rank (like torchrun)
    ds_launcher: str = "pdsh"  # DeepSpeed's multi-node backend over ssh (DS_LAUNCHERS)
    connect_timeout_s: float = 60.0  # how long a node waits for rank 0's host / the ssh hosts to answer


@dataclass
class SlurmLauncherConfig(NodesLauncherConfig):
    """Hydra's submitit launcher: one SLURM job, one task per node running torchrun."""

    name: str = "slurm"
    record_wait_s: float = 30.0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60  # SLURM time limit of the job (timeout_s, when set, replaces it)
    cpus_per_task: int | None = None  # one task per node: the node's cores for its ranks
    gpus_per_node: int | None = None  # null = cluster.gpus_per_node on CUDA, none on CPU
    mem_gb: int | None = None
    rdzv_port: int = 29400  # rendezvous port on the job's first node
    join_timeout_s: float = 600.0
    submitit_folder: str = ""  # empty = <run dir>/slurm/submitit (fresh for every submission)
    setup: list[str] = field(default_factory=list)  # shell lines run in the job before srun
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # extra sbatch options


# launcher option -> its schema (registered as schema/launcher/<name>; the YAML's defaults select it).
LAUNCHERS: dict[str, type[LauncherConfig]] = {
    "local": LocalLauncherConfig,
    "multinode": MultinodeLauncherConfig,
    "deepspeed": DeepSpeedLauncherConfig,
    "slurm": SlurmLauncherConfig,
}
DS_LAUNCHERS = ("pdsh", "openmpi", "mvapich", "mpich", "impi", "slurm")


@dataclass
class SweepConfig:
    """A grid of runs: models x token budgets x process counts x variants (e.g. engines).

    Token budgets are absolute (``tokens``) or per non-embedding parameter
    (``tokens_per_param``); ``points`` lists extra runs as override strings.
    """

    name: str = ""
    description: str = ""
    models: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    tokens_per_param: list[float] = field(default_factory=list)
    nproc: list[int] = field(default_factory=lambda: [1])
    variants: list[str] = field(default_factory=lambda: [""])  # e.g. "engine=deepspeed engine.zero_stage=2"
    points: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # applied to every run
    parallel: int = 1  # runs at once on this machine


@dataclass
class WandbConfig:
    enabled: bool = False
    mode: str = "offline"
    project: str = "harness"


@dataclass
class HarnessConfig:
    model: ModelConfig = MISSING
    cluster: ClusterConfig = MISSING
    engine: EngineConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # One of LAUNCHERS, typed by the schema its option selects when composed; Any here so a stored
    # config of any launcher merges back onto this class (records, the worker's frozen config).
    launcher: Any = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    nproc: int = 1  # processes per node ("GPU count" on one node)
    nnodes: int = 1
    results_dir: str = "results"
    sweep_name: str = "adhoc"
    run_id: str | None = None  # null = hash of the resolved config


def register() -> None:
    from harness.core.config_jobs import ROOTS

    cs = ConfigStore.instance()
    for name, schema in ROOTS.items():
        cs.store(name=f"base_{name}", node=schema)
    for name, schema in LAUNCHERS.items():
        cs.store(group="schema/launcher", name=name, node=schema)


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the config once, in the driver (never in the torchrun ranks); ``harness.core.compose``.

    config_name: config (train, sweep), plan, extrapolate or commbench. Raises ConfigError (one line).
    """
    from harness.core.compose import compose as checked_compose

    return checked_compose(overrides, config_name)


def world_size(cfg: Any) -> int:
    return int(cfg.nproc) * int(cfg.nnodes)


def global_batch(cfg: Any) -> int:
    t = cfg.train
    return (
        int(t.global_batch) if t.global_batch is not None else t.micro_batch * t.grad_accum * world_size(cfg)
    )


def total_steps(cfg: Any) -> int:
    tokens_per_step = global_batch(cfg) * cfg.train.seq_len
    return max(1, -(-int(cfg.train.tokens) // tokens_per_step))


def fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate(cfg: Any) -> None:
    """Cross-field rules, checked before anything starts (no probing of this machine: see
    ``harness.driver.preflight``). Raises ConfigError."""
    m, t, c, e = cfg.model, cfg.train, cfg.cluster, cfg.engine
    for key, v in (
        ("model.n_layer", m.n_layer),
        ("model.n_head", m.n_head),
        ("model.d_model", m.d_model),
        ("model.vocab_size", m.vocab_size),
        ("model.mlp_ratio", m.mlp_ratio),
        ("nproc", cfg.nproc),
        ("nnodes", cfg.nnodes),
        ("train.micro_batch", t.micro_batch),
        ("train.grad_accum", t.grad_accum),
        ("train.seq_len", t.seq_len),
        ("train.tokens", t.tokens),
        ("train.eval_tokens", t.eval_tokens),
        ("train.log_interval", t.log_interval),
        ("train.keep_checkpoints", t.keep_checkpoints),
    ):
        if v < 1:
            fail(key, v, "must be >= 1")
    for key, f in (
        ("train.lr", t.lr),
        ("train.warmup_frac", t.warmup_frac),
        ("train.min_lr_ratio", t.min_lr_ratio),
        ("train.grad_clip", t.grad_clip),
        ("model.dropout", m.dropout),
        ("data.heldout_frac", cfg.data.heldout_frac),
        ("train.weight_decay", t.weight_decay),
    ):
        if not math.isfinite(f):
            fail(key, f, "must be a finite number")
    if m.d_model % m.n_head:
        fail("model.d_model", m.d_model, f"must be divisible by model.n_head={m.n_head}")
    if not 0.0 <= m.dropout < 1.0:
        fail("model.dropout", m.dropout, "must be in [0, 1)")
    if t.dtype not in DTYPES:
        fail("train.dtype", t.dtype, f"one of {', '.join(DTYPES)}")
    if t.schedule not in SCHEDULES:
        fail("train.schedule", t.schedule, f"one of {', '.join(SCHEDULES)}")
    if e.name not in ENGINES:
        fail("engine.name", e.name, f"one of {', '.join(ENGINES)}")
    if e.name == "deepspeed" and e.zero_stage not in (0, 1, 2, 3):
        fail("engine.zero_stage", e.zero_stage, "0, 1, 2 or 3")
    if e.name == "ddp" and e.zero_stage != 0:
        fail("engine.zero_stage", e.zero_stage, "0 with engine=ddp (ZeRO stages need engine=deepspeed)")
    if c.device not in DEVICES:
        fail("cluster.device", c.device, f"one of {', '.join(DEVICES)}")
    if t.lr <= 0:
        fail("train.lr", t.lr, "must be > 0")
    if not 0.0 <= t.warmup_frac < 1.0:
        fail("train.warmup_frac", t.warmup_frac, "must be in [0, 1)")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        fail("train.min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]")
    if t.grad_clip < 0:
        fail("train.grad_clip", t.grad_clip, "must be >= 0 (0 disables clipping)")
    if t.checkpoint_interval_steps < 0 or t.checkpoint_interval_s < 0:
        fail(
            "train.checkpoint_interval_*",
            (t.checkpoint_interval_steps, t.checkpoint_interval_s),
            "must be >= 0",
        )
    if t.timing_warmup_steps < 0:
        fail("train.timing_warmup_steps", t.timing_warmup_steps, "must be >= 0")
    if not 0.0 < cfg.data.heldout_frac < 0.5:
        fail("data.heldout_frac", cfg.data.heldout_frac, "must be in (0, 0.5)")
    ws = world_size(cfg)
    per_step = t.micro_batch * t.grad_accum * ws
    if t.global_batch is not None and t.global_batch != per_step:
        raise ConfigError(
            f"train.global_batch={t.global_batch} is not micro_batch x grad_accum x world_size = "
            f"{t.micro_batch} x {t.grad_accum} x {ws} = {per_step}; allowed: a global batch equal to that product "
            f"(change train.micro_batch, train.grad_accum or nproc, or leave train.global_batch=null)"
        )
    if c.device == "cuda" and cfg.nproc > c.gpus_per_node:
        fail("nproc", cfg.nproc, f"at most cluster.gpus_per_node={c.gpus_per_node} on cluster {c.name}")
    validate_launcher(cfg.launcher)
    if m.plan_only:
        fail(
            "model",
            m.name,
            "a planning-only shape (model.plan_only=true); train one of: "
            + ", ".join(n for n in available("model") if not _plan_only(n)),
        )


def validate_launcher(lc: Any) -> None:
    """The launcher's name matches the schema its option selected; its own values are sane."""
    if lc.name not in LAUNCHERS:
        fail("launcher.name", lc.name, f"one of {', '.join(LAUNCHERS)}, chosen with launcher=<name>")
    chosen = next((n for n, s in LAUNCHERS.items() if s is OmegaConf.get_type(lc)), lc.name)
    if chosen != lc.name:
        fail("launcher.name", lc.name, f"{chosen!r} (launcher={chosen}); choose another with launcher=<name>")
    if lc.timeout_s is not None and not (math.isfinite(lc.timeout_s) and lc.timeout_s > 0):
        fail("launcher.timeout_s", lc.timeout_s, "a number of seconds > 0, or null (no limit)")
    if lc.name == "deepspeed" and lc.ds_launcher not in DS_LAUNCHERS:
        fail("launcher.ds_launcher", lc.ds_launcher, f"one of {', '.join(DS_LAUNCHERS)}")


def _plan_only(name: str) -> bool:
    preset = OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")
    return isinstance(preset, DictConfig) and bool(preset.get("plan_only", False))


def to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
