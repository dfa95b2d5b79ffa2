"""The DeepSpeed config (``ds_config``) as one pure function of the resolved harness config.

Torch-free, so the planner, the dry run and the tests can build and check it anywhere.
Every value that changes the maths is derived from the harness config, never left to a
DeepSpeed default, so that DeepSpeed and DDP train the same thing:

- batch sizes: ``train_batch_size = micro x accum x world size`` by construction;
- clipping: ``gradient_clipping = train.grad_clip`` (DeepSpeed would otherwise clip at 1.0);
- precision: ``bf16`` / ``fp16`` sections from ``train.dtype`` (fp32: both disabled);
- ZeRO stage from ``engine.zero_stage``.

The learning rate is not here: the training loop sets it on the optimizer every step.
"""

from __future__ import annotations

from typing import Any

from harness.core import config as C
from harness.core.config import HarnessConfig

# A step count DeepSpeed never reaches: the harness prints its own progress.
_NEVER = 2**31 - 1


def zero_section(stage: int, bucket_cap_mb: float, overlap_comm: bool) -> dict[str, Any]:
    """ZeRO settings; bucket sizes follow engine.bucket_cap_mb like DDP's gradient buckets.

    ``overlap_comm`` runs reductions on a side CUDA stream; on CPU there is no stream to
    overlap on, so it is only turned on for CUDA.
    """
    bucket = int(bucket_cap_mb * 2**20 // 4)  # DeepSpeed counts bucket sizes in elements (fp32)
    section: dict[str, Any] = {"stage": stage}
    if stage in (1, 2):
        section.update(
            reduce_bucket_size=bucket,
            allgather_bucket_size=bucket,
            contiguous_gradients=True,
            overlap_comm=overlap_comm,
        )
    elif stage == 3:
        section.update(
            reduce_bucket_size=bucket,
            stage3_prefetch_bucket_size=bucket,
            contiguous_gradients=True,
            overlap_comm=overlap_comm,
            # Partition every parameter: DeepSpeed's default (1e5 elements) would keep all of a
            # small model's tensors whole and make "stage 3" a stage 2 run. At billions of
            # parameters only LayerNorm and bias vectors fall under it, a negligible difference.
            stage3_param_persistence_threshold=0,
        )
    return section


def precision_sections(dtype: str) -> dict[str, Any]:
    """bf16 needs no loss scaling; fp16 uses DeepSpeed's dynamic loss scaler (as DDP's GradScaler)."""
    if dtype not in C.DTYPES:
        raise C.ConfigError(f"train.dtype={dtype!r} is not allowed: one of {', '.join(C.DTYPES)}")
    return {
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {
            "enabled": dtype == "fp16",
            "loss_scale": 0,  # 0 = dynamic
            "initial_scale_power": 16,  # 65536, torch.amp.GradScaler's initial scale
            "loss_scale_window": 2000,  # GradScaler's growth_interval
            "hysteresis": 1,  # back off at the first overflow, as GradScaler does
            "min_loss_scale": 1,
        },
    }


def ds_config(cfg: HarnessConfig) -> dict[str, Any]:
    """The DeepSpeed config for a resolved harness config (pure: same input, same dict)."""
    t, e = cfg.train, cfg.engine
    if e.zero_stage not in (0, 1, 2, 3):
        raise C.ConfigError(f"engine.zero_stage={e.zero_stage!r} is not allowed: 0, 1, 2 or 3")
    micro, accum, world = int(t.micro_batch), int(t.grad_accum), C.world_size(cfg)
    return {
        "train_batch_size": micro * accum * world,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": float(t.grad_clip),  # 0 disables, as in DDP
        **precision_sections(t.dtype),
        "zero_optimization": zero_section(
            int(e.zero_stage), float(e.bucket_cap_mb), cfg.cluster.device == "cuda"
        ),
        # The client optimizer is torch.optim.AdamW, the one DDP uses; ZeRO wraps it.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }
