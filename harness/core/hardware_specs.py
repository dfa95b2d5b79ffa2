"""Nominal hardware constants per accelerator type: one set per type, cited, never tuned per case.

The throughput law divides FLOPs by ``peak_flops`` (dense bf16) and bytes by the tier
bandwidths below; how much of each a real run achieves is the job of the fitted
efficiencies (``throughput.Coefficients``), not of these numbers.

Tiers: ``intra`` is the scale-up domain (NVLink/NVSwitch inside a node, ICI inside a TPU
pod slice), ``inter`` the scale-out fabric (InfiniBand/RoCE NICs, TPU data-centre
network), given per device as each device drives its own NIC ("rail") in these systems.

This table is the one source of device figures: a cluster preset
(``harness/configs/cluster/*.yaml``) names its device by ``gpu_type`` and carries only
what is about the cluster (nodes, GPUs per node, the fabric's delivered fraction);
``cluster_figures``, ``peak_flops`` and ``from_cluster`` read the device's figures here,
a figure the preset sets itself overriding the table's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    peak_flops: float  # dense bf16 FLOP/s per device (sparsity figures excluded)
    memory_bytes: float  # device memory
    devices_per_node: int  # size of the scale-up (NVLink / ICI) domain
    intra_bw: float  # bytes/s per direction per device in the scale-up domain (nominal)
    inter_bw: float  # bytes/s per device on the scale-out fabric (nominal NIC line rate)
    intra_alpha: float  # s per ring step inside the scale-up domain (nominal NCCL-class latency)
    inter_alpha: float  # s per ring step across nodes
    hbm_bw: float = 0.0  # device memory bandwidth, bytes/s (the memory-bound ops' roofline)
    nic_effective_fraction: float = 1.0  # a fabric's own claimed delivered fraction (Spectrum-X: 0.95)
    source: str = ""
    peak_flops_fp32: float | None = None  # dense FP32 (non-tensor-core) FLOP/s per device, where known

    def with_domain(self, devices_per_node: int) -> HardwareSpec:
        """The same hardware with a different scale-up domain (e.g. a 3,072-chip TPU slice)."""
        return replace(self, devices_per_node=int(devices_per_node))


# Latency per ring step: NCCL's small-message all-reduce on one NVSwitch node is ~10-20 us
# over 2(n-1)=14 steps (~1 us/step); across InfiniBand nodes a step costs a few us more
# (nccl-tests small-message latencies). Nominal; the fit of measured collectives
# (harness.analysis.throughput.collectives.fit_alpha_beta) replaces them where a cluster was measured.
_NVLINK_ALPHA = 1.0e-6
_IB_ALPHA = 5.0e-6

SPECS: dict[str, HardwareSpec] = {
    # NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s bf16 dense tensor core; NVLink 3 600 GB/s
    # bidirectional = 300 GB/s per direction per GPU; DGX A100 / Selene: 8 x 200 Gb/s HDR
    # InfiniBand compute NICs per node, i.e. 25 GB/s per GPU (Narayanan et al. 2021, sec. 5).
    "A100-80GB": HardwareSpec(
        name="A100-80GB",
        peak_flops=312e12,
        memory_bytes=80 * 2**30,
        devices_per_node=8,
        intra_bw=300e9,
        inter_bw=200e9 / 8,
        intra_alpha=_NVLINK_ALPHA,
        inter_alpha=_IB_ALPHA,
        hbm_bw=2.039e12,  # A100 SXM4 80GB: 2,039 GB/s HBM2e
        source="NVIDIA A100 datasheet; DGX A100 / Selene (Narayanan et al. 2021)",
        peak_flops_fp32=19.5e12,  # FP32 (non-tensor-core) dense
    ),
    # NVIDIA H100 SXM5 datasheet: 989.4 TFLOP/s bf16 dense (1979 is the 2:4-sparsity figure);
    # 80 GB HBM3; NVLink 4 900 GB/s bidirectional = 450 GB/s per direction; one 400 Gb/s
    # ConnectX-7 per GPU (DGX H100). The H100 cluster presets (h100-node, colossus) use these.
    "H100-SXM": HardwareSpec(
        name="H100-SXM",
        peak_flops=989.4e12,
        memory_bytes=85.9e9,
        devices_per_node=8,
        intra_bw=450e9,
        inter_bw=400e9 / 8,
        intra_alpha=_NVLINK_ALPHA,
        inter_alpha=_IB_ALPHA,
        hbm_bw=3.35e12,  # H100 SXM5: 3.35 TB/s HBM3
        source="NVIDIA H100 datasheet; DGX H100 (8 x 400 Gb/s ConnectX-7)",
        peak_flops_fp32=66.9e12,  # FP32 (non-tensor-core) dense
    ),
    # Google Cloud TPU v4 system architecture: 275 TFLOP/s bf16 per chip, 32 GiB HBM2,
    # 4,096-chip pod, "all-reduce bandwidth per pod 1.1 PB/s" = 1.1e15/4096 = 269 GB/s per
    # chip on ICI. Across pods PaLM (Chowdhery et al. 2022, sec. 4) reports 81 Tbps of
    # pod-to-pod DCN bandwidth for 2 x 3,072 chips: 81e12/8/3072 = 3.3 GB/s per chip.
    "TPU-v4": HardwareSpec(
        name="TPU-v4",
        peak_flops=275e12,
        memory_bytes=32 * 2**30,
        devices_per_node=4096,
        intra_bw=1.1e15 / 4096,
        inter_bw=81e12 / 8 / 3072,
        intra_alpha=_NVLINK_ALPHA,
        inter_alpha=_IB_ALPHA,
        hbm_bw=1.2e12,  # 1,200 GB/s HBM2
        source="cloud.google.com/tpu/docs/v4; PaLM (Chowdhery et al. 2022) sec. 4",
    ),
}

ALIASES = {"A100": "A100-80GB", "H100": "H100-SXM", "TPUv4": "TPU-v4", "TPU v4": "TPU-v4"}


def get(name: str) -> HardwareSpec:
    key = ALIASES.get(name, name)
    if key not in SPECS:
        raise KeyError(f"unknown accelerator {name!r}; allowed: {', '.join(SPECS)}")
    return SPECS[key]


# Preset key -> the HardwareSpec field it overrides (a preset may set any of them; None = the spec's).
CLUSTER_FIGURES: dict[str, str] = {
    "peak_flops_bf16": "peak_flops",
    "peak_flops_fp32": "peak_flops_fp32",
    "memory_bytes_per_device": "memory_bytes",
    "intra_node_bw_bytes_per_s": "intra_bw",
    "inter_node_bw_bytes_per_s": "inter_bw",
    "hbm_bw_bytes_per_s": "hbm_bw",
}


def spec_of(cluster: Any) -> HardwareSpec | None:
    """The spec a cluster preset names by ``gpu_type`` (None for the CPU or an unknown type)."""
    name = str(dict(cluster).get("gpu_type"))
    return SPECS.get(ALIASES.get(name, name))


def cluster_figures(cluster: Any) -> dict[str, Any]:
    """The preset (a dict or DictConfig) with its device figures filled in from its spec.

    A figure the preset sets (not None) wins over the spec's; one neither gives stays None.
    """
    c = dict(cluster)
    base = spec_of(c)
    for key, attr in CLUSTER_FIGURES.items():
        if c.get(key) is None:
            value = getattr(base, attr) if base else None
            c[key] = float(value) if value else None
    return c


def peak_flops(cluster: Any, dtype: str = "bf16") -> float | None:
    """Dense peak FLOP/s per device for a dtype (fp16 uses the bf16 tensor-core peak): the preset's
    own figure if it sets one, else its spec's; None where there is none (the CPU: measure it)."""
    key = "peak_flops_fp32" if dtype == "fp32" else "peak_flops_bf16"
    return cluster_figures(cluster)[key]


def as_spec(hw: HardwareSpec | Any) -> HardwareSpec:
    """A HardwareSpec as is; a cluster preset (dict / DictConfig) through ``from_cluster``."""
    return hw if isinstance(hw, HardwareSpec) else from_cluster(hw)


def from_cluster(cluster: Any) -> HardwareSpec:
    """A spec from a cluster preset (``harness/configs/cluster/*.yaml``, a dict or DictConfig).

    Device figures are the spec's that ``gpu_type`` names, overridden by any the preset sets
    (``cluster_figures``); latencies (which presets do not carry) come from the known type,
    and the preset's ``gpus_per_node`` and ``nic_effective_fraction`` (e.g. Spectrum-X's 95%)
    are kept.
    """
    c = cluster_figures(cluster)
    missing = [
        k
        for k in (
            "peak_flops_bf16",
            "memory_bytes_per_device",
            "intra_node_bw_bytes_per_s",
            "inter_node_bw_bytes_per_s",
        )
        if c.get(k) is None
    ]
    if missing:
        raise ValueError(
            f"cluster {c.get('name')!r} lacks {', '.join(missing)}; the throughput law needs them"
        )
    base = spec_of(c)
    return HardwareSpec(
        name=str(c.get("gpu_type", c.get("name"))),
        peak_flops=float(c["peak_flops_bf16"]),
        memory_bytes=float(c["memory_bytes_per_device"]),
        devices_per_node=int(c.get("gpus_per_node", 8)),
        intra_bw=float(c["intra_node_bw_bytes_per_s"]),
        inter_bw=float(c["inter_node_bw_bytes_per_s"]),
        intra_alpha=base.intra_alpha if base else _NVLINK_ALPHA,
        inter_alpha=base.inter_alpha if base else _IB_ALPHA,
        hbm_bw=float(c.get("hbm_bw_bytes_per_s") or 0.0),
        nic_effective_fraction=float(c.get("nic_effective_fraction", 1.0)),
        source=f"cluster preset {c.get('name')}",
        peak_flops_fp32=c.get("peak_flops_fp32"),
    )
