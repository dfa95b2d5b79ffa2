"""How long a planned run takes: a rate model fitted on the measured records, else assumed.

Seconds per run = tokens x (t0 + flops_per_token / R) x wall_factor + overhead, with t0 and R
fitted across model sizes on completed records of the same cluster (``rate_from_records``), or,
with no records, the cluster's peak (or a matmul peak measured now) x an assumed utilisation
(``rate_assumed``). Every estimate says which it is in its ``source``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import flops, hardware_specs

DEFAULT_MFU = 0.4  # assumed only when no record measured the rate (labelled as such)
DEFAULT_CPU_UTILISATION = 0.3  # of an on-the-spot matmul peak, assumed (labelled as such)
GPU_OVERHEAD_S = 30.0  # assumed launch + evaluation per run on GPU clusters (no records)


@dataclass(frozen=True)
class RateModel:
    """Seconds per run = tokens x (t0 + flops_per_token / R) x wall_factor + overhead.

    t0 is the per-token cost that does not scale with model FLOPs (data, optimizer, kernel
    launches: it dominates tiny models), R the effective model FLOP/s, wall_factor the measured
    ratio of a run's training wall time to its median-step time (evaluation, logging and
    whatever else shared the machine), overhead the launch and record writing per run.
    """

    t0: float
    flops_per_s: float
    wall_factor: float
    wall_factor_iqr: tuple[float, float]
    overhead_s: float
    source: str

    def seconds(self, s: flops.Shape, tokens: float, wall_factor: float | None = None) -> float:
        f = self.wall_factor if wall_factor is None else wall_factor
        return tokens * (self.t0 + flops.flops_per_token(s) / self.flops_per_s) * f + self.overhead_s


def _fit_rate(rows: list[dict]) -> tuple[float, float, int]:
    """(t0, 1/R, sizes): per shape the median of the runs' median-step tokens/s (robust to a run
    slowed by a neighbour), then 1/rate = t0 + fpt/R by non-negative least squares in relative error."""
    from scipy.optimize import nnls

    by_fpt: dict[float, list[float]] = {}
    for x in rows:
        by_fpt.setdefault(float(x["fpt"]), []).append(float(x["rate"]))
    fpt = np.array(sorted(by_fpt))
    rate = np.array([np.median(by_fpt[f]) for f in fpt])
    if len(fpt) == 1:
        return 0.0, 1.0 / (rate[0] * fpt[0]), 1
    (t0, k), _ = nnls(np.column_stack([rate, rate * fpt]), np.ones(len(fpt)))
    if k <= 0:  # no size dependence resolved: charge the median cost per token, all as overhead
        return float(np.median(1.0 / rate)), 1e-30, len(fpt)
    return float(t0), float(k), len(fpt)


def rate_from_records(root: str | Path, cluster: str, world: int, device: str) -> RateModel | None:
    """Fit t0 and R across model sizes on the completed records of this cluster and world size.

    With records at the planned world size for one size only, the 1-process fit across sizes
    is scaled to match them; with none, a CPU takes the 1-process rate as the machine's total
    (its processes share the same cores) and a GPU cluster scales it by the world size. Each
    fallback is stated in the source.
    """
    from harness.core.records import iter_records

    if not Path(root).is_dir():
        return None
    rows = []
    for _, r in iter_records(root, warn=False):
        if r.get("status") != "completed" or r.get("kind", "train") != "train":
            continue
        th, tm, tr = r.get("throughput") or {}, r.get("timing") or {}, r.get("training") or {}
        fpt = (r.get("model") or {}).get("flops_per_token")
        if (r.get("cluster") or {}).get("name") != cluster or not th.get("tokens_per_s") or not fpt:
            continue
        rows.append(
            {
                "world": (r.get("parallel") or {}).get("world_size"),
                "fpt": fpt,
                "rate": th["tokens_per_s"],
                "wall_rate": th.get("tokens_per_s_wall"),
                "tokens": tr.get("tokens_trained"),
                "overhead": (r.get("duration_s") or math.nan) - (tm.get("train_wall_s") or math.nan),
            }
        )
    same = [x for x in rows if x["world"] == world]
    one = [x for x in rows if x["world"] == 1]
    if not same and not one:
        return None
    n_same_sizes = len({x["fpt"] for x in same})
    if n_same_sizes >= 2 or (same and len({x["fpt"] for x in one}) < 2):
        t0, k, sizes = _fit_rate(same)
        how = f"{len(same)} records at {world} process(es), {sizes} size(s)"
        used = same
    elif same:  # one size measured at this world size: the 1-process size dependence, rescaled to it
        t0, k, sizes = _fit_rate(one)
        pred = [1.0 / (t0 + x["fpt"] * k) for x in same]
        scale = float(np.median([x["rate"] / p for x, p in zip(same, pred, strict=True)]))
        t0, k = t0 / scale, k / scale
        how = (
            f"{len(one)} 1-process records over {sizes} sizes, scaled x{scale:.2f} to match {len(same)} "
            f"record(s) of one size at {world} processes"
        )
        used = same
    else:
        t0, k, sizes = _fit_rate(one)
        used = one
        if device == "cpu" or world == 1:
            how = (
                f"{len(one)} 1-process records over {sizes} sizes; none at {world} processes, so the 1-process "
                "rate is taken as the machine's total (processes share its cores: assumed, not measured)"
            )
        else:
            t0, k = t0 / world, k / world
            how = (
                f"{len(one)} 1-process records over {sizes} sizes, x{world} for {world} devices "
                "(linear scaling assumed, not measured)"
            )
    ratios = [x["rate"] / x["wall_rate"] for x in used if x.get("wall_rate")]
    wf = float(np.median(ratios)) if ratios else 1.0
    iqr = (float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))) if ratios else (1.0, 1.0)
    over = [x["overhead"] for x in used if math.isfinite(x["overhead"])]
    ov = float(np.median(over)) if over else 0.0
    src = (
        f"measured: completed records under {root} (cluster {cluster}): {how}; median-step tokens/s per shape "
        f"fitted as 1/rate = t0 + flops_per_token/R: t0 = {t0 * 1e6:.2f} us/token, R = {1 / k:.3g} model FLOP/s; "
        f"wall/step-time factor {wf:.2f} (median, quartiles {iqr[0]:.2f}-{iqr[1]:.2f}); {ov:.1f} s launch "
        "overhead per run"
    )
    return RateModel(t0, 1.0 / k, max(1.0, wf), iqr, ov, src)


def rate_assumed(cluster_cfg: Any, nproc: int, nnodes: int = 1, mfu: float | None = None) -> RateModel:
    """No records: the cluster's dense peak x an assumed MFU; on a CPU a matmul peak measured now."""
    devices = nproc * nnodes
    peak = hardware_specs.peak_flops(cluster_cfg, "bf16") or hardware_specs.peak_flops(cluster_cfg, "fp32")
    if peak:
        u = DEFAULT_MFU if mfu is None else mfu
        return RateModel(
            0.0,
            peak * u * devices,
            1.0,
            (1.0, 1.0),
            GPU_OVERHEAD_S,
            f"assumed: {devices} x {cluster_cfg.get('gpu_type')} dense peak {peak:.4g} FLOP/s x an "
            f"assumed MFU of {u:.0%} (no measured records), {GPU_OVERHEAD_S:.0f} s assumed per-run overhead",
        )
    from harness.driver import preflight

    u = DEFAULT_CPU_UTILISATION if mfu is None else mfu
    measured = preflight.measure_matmul_peak("fp32", n=512, seconds=0.5)
    return RateModel(
        0.0,
        measured * u,
        1.0,
        (1.0, 1.0),
        3.0,
        f"assumed: fp32 matmul peak measured now ({measured:.3g} FLOP/s, the whole machine) x an "
        f"assumed utilisation of {u:.0%}, 3 s assumed per-run overhead (no measured records)",
    )
