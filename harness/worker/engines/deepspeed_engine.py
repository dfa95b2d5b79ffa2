"""DeepSpeed (ZeRO stage 0-3) behind the same Engine interface as DDP.

Same model, same ``torch.optim.AdamW`` with the same param groups, betas and weight
decay, same clipping, same learning rate per step: DeepSpeed only changes where the
optimizer state, gradients and (stage 3) parameters live and how they are communicated.

Gradient accumulation: ``engine.backward`` divides the loss by the accumulation steps and
ZeRO / DeepSpeed's all-reduce average the gradients over the data-parallel ranks, so the
gradient is the mean over the global batch, as in DDP (``loss / accum`` + averaging
all-reduce). ``engine.step()`` is called once per micro-batch: before the boundary it only
advances DeepSpeed's micro-step counter; at the boundary (``optimizer_step``) it clips,
steps and zeroes, after the training loop's learning rate has been set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from harness.core.config import HarnessConfig
from harness.worker.distributed import DistInfo
from harness.worker.engines.base import Engine, tensor_bytes
from harness.worker.engines.ds_config import ds_config
from harness.worker.model import param_groups

# deepspeed.comm backend methods that move data; DeepSpeed's ZeRO code reaches the
# process group only through these.
_COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "reduce", "reduce_scatter", "reduce_scatter_tensor",
    "all_gather", "all_gather_into_tensor", "all_gather_coalesced", "broadcast", "all_to_all_single",
)  # fmt: skip

COMM_METHOD = (
    "union of in-flight intervals (launch to completion) of every deepspeed.comm collective in the step: "
    "gradient all-reduce / reduce-scatter, ZeRO parameter all-gathers, grad-norm all-reduce"
)


def _payload_bytes(args: tuple, kwargs: dict) -> int:
    """Largest tensor (or tensor list) handed to a collective: the nccl-tests message size."""
    sizes = [tensor_bytes(v) for v in (*args, *kwargs.values())]
    return max(sizes, default=0)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class CommRecorder:
    """Wall intervals during which DeepSpeed's collectives were in flight, on the perf_counter clock.

    DeepSpeed has no communication hook like DDP's, and its comms logger times only the
    launch of asynchronous ops on CPU (its device synchronize is a no-op there). So the
    backend object every ``deepspeed.comm`` call goes through is wrapped: a synchronous
    call is timed around the call; an asynchronous one from launch to its future's
    completion (on gloo the callback runs when the work is done). On CUDA, completion of
    the future only orders the stream, so the same numbers would be launch times: there
    the recorder is off and the record's comm time stays 0.
    """

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self.bytes = 0

    def reset(self) -> None:
        self.intervals, self.bytes = [], 0

    def install(self, backend: Any) -> None:
        for name in _COLLECTIVES:
            method = getattr(backend, name, None)
            if method is not None:
                setattr(backend, name, self._wrap(method))

    def _wrap(self, method):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            self.bytes += _payload_bytes(args, kwargs)
            work = method(*args, **kwargs)
            if work is not None and hasattr(work, "get_future"):
                work.get_future().then(lambda _f: self.intervals.append((t0, time.perf_counter())))
            else:
                self.intervals.append((t0, time.perf_counter()))
            return work

        return timed


class DeepSpeedEngine(Engine):
    name = "deepspeed"
    comm_method = COMM_METHOD

    def __init__(self, cfg: HarnessConfig, model: torch.nn.Module, info: DistInfo) -> None:
        import deepspeed
        from deepspeed import comm as ds_comm

        t = cfg.train
        self.zero_stage = int(cfg.engine.zero_stage)
        model.to(info.device)
        self.config = ds_config(cfg)
        self.optimizer = torch.optim.AdamW(
            param_groups(model, t.weight_decay),
            lr=t.lr,
            betas=(t.beta1, t.beta2),
            fused=info.device.type == "cuda",
        )
        # The process group exists already (harness.worker.distributed.init); DeepSpeed wraps it.
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=self.optimizer, config=self.config, dist_init_required=False
        )
        self.module = self.engine.module
        # fp32 without ZeRO steps the client optimizer directly and records no gradient norm.
        self._own_norm = self.zero_stage == 0 and t.dtype == "fp32"
        self.comm = CommRecorder()
        if info.device.type == "cpu":
            self.comm.install(ds_comm.comm.cdb)
        else:
            self.comm_method = "not measured under DeepSpeed on CUDA (comm time 0)"

    def micro_step(self, x: torch.Tensor, y: torch.Tensor, *, last: bool) -> torch.Tensor:
        if last != self.engine.is_gradient_accumulation_boundary():
            raise RuntimeError("the training loop and DeepSpeed disagree on the accumulation boundary")
        loss = self.engine(x, y)
        self.engine.backward(loss)  # divides by the accumulation steps; reduces at the boundary
        if not last:
            self.engine.step()  # before the boundary: counts the micro-step, no update
        return loss.detach().float()

    def optimizer_step(self, lr: float) -> float:
        # ZeRO puts its flat fp32 partitions into the client optimizer's param groups, so
        # setting the rate here reaches the optimizer that steps, at every stage.
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        norm = self._grad_norm() if self._own_norm else None
        self.engine.step()  # the boundary: clip (gradient_clipping), step, zero the gradients
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def _grad_norm(self) -> float:
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    @torch.no_grad()
    def eval_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.engine.eval()
        loss = self.engine(x, y)  # under ZeRO-3 the forward hooks gather the parameters
        self.engine.train()
        return loss.float()

    def optimizer_state_bytes(self) -> int:
        """AdamW moments plus any fp32 master copy, as held by this rank (ZeRO-partitioned).

        ZeRO keeps an fp32 copy of the rank's parameter partition for the optimizer to
        update, even in fp32 (stages 1-3), and bf16/fp16 keep fp32 masters at every stage:
        counted here, since this rank holds it only for the optimizer (the ZeRO paper's
        "optimizer states"). Tensors that are the model's own parameters are not counted.
        """
        state = self.optimizer.state
        # The tensors the optimizer updates: its param groups, and (ZeRO-3 empties the groups
        # between steps) the keys of its state.
        updated = {id(p): p for g in self.optimizer.param_groups for p in g["params"]}
        updated.update({id(p): p for p in state})
        model = {_storage(p) for p in self.module.parameters()}
        model |= {_storage(p.ds_tensor) for p in self.module.parameters() if hasattr(p, "ds_tensor")}
        masters = [p for p in updated.values() if _storage(p) not in model]
        return tensor_bytes(list(state.values())) + tensor_bytes(masters)

    def save_checkpoint(self, path: Path, rank: int) -> None:
        # Collective: every rank writes its own ZeRO partitions (model, optimizer, scheduler state).
        self.engine.save_checkpoint(str(path), tag="engine", save_latest=False)

    def load_checkpoint(self, path: Path) -> None:
        load_path, _ = self.engine.load_checkpoint(
            str(path), tag="engine", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {path}")

    def full_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter, whole, on CPU. A collective under ZeRO-3: call it on every rank."""
        import deepspeed

        params = dict(self.module.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values()), enabled=self.zero_stage == 3):
            return {n: p.detach().float().cpu().clone() for n, p in params.items()}

    def begin_step(self) -> None:
        self.comm.reset()

    def comm_intervals(self) -> list[tuple[float, float]]:
        return list(self.comm.intervals)

    def comm_bytes_per_step(self) -> int:
        return self.comm.bytes
