"""Published-run replay: the cases, the hardware constants, and the validation target."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
from omegaconf import OmegaConf

from harness.analysis import throughput as T
from harness.analysis.throughput import calibration
from harness.commands import validate as validate_cmd
from harness.core import flops, hardware_specs
from harness.core.config import CONFIG_DIR


@pytest.fixture(scope="module")
def cases():
    return calibration.load_cases()


def test_every_case_cites_its_source_and_matches_its_gpu_count_and_batch(cases):
    assert len(cases) >= 25
    for k in cases:
        assert "et al." in k.citation or "NVIDIA" in k.citation
        assert k.layout.world == k.gpus
        assert k.layout.global_batch_seqs == k.global_batch
        assert k.metric in calibration.METRICS
    ids = [k.id for k in cases]
    assert len(ids) == len(set(ids))


def test_every_published_run_in_the_reference_is_replayed(cases):
    sources = {k.source for k in cases}
    assert sources == {"narayanan2021", "korthikanti2022", "chowdhery2022", "liang2024", "megatron_core"}
    assert sum(k.id.startswith("zero3-") for k in cases) == 3


def test_h100_constants_agree_with_the_cluster_preset():
    h = hardware_specs.get("H100-SXM")
    for preset in ("h100-node", "colossus"):
        c = OmegaConf.create(
            hardware_specs.cluster_figures(OmegaConf.load(CONFIG_DIR / "cluster" / f"{preset}.yaml"))
        )
        assert h.peak_flops == c.peak_flops_bf16
        assert h.memory_bytes == c.memory_bytes_per_device
        assert h.intra_bw == c.intra_node_bw_bytes_per_s
        assert h.inter_bw == c.inter_node_bw_bytes_per_s
        assert h.devices_per_node == c.gpus_per_node
        spec = hardware_specs.from_cluster(OmegaConf.to_container(c))
        assert spec.hbm_bw == h.hbm_bw and spec.nic_effective_fraction == c.nic_effective_fraction
    assert hardware_specs.get("A100-80GB").peak_flops == 312e12
    assert hardware_specs.get("TPU-v4").peak_flops == 275e12


def test_cluster_presets_take_their_device_figures_from_the_spec():
    h100 = OmegaConf.load(CONFIG_DIR / "cluster" / "h100-node.yaml")
    assert "peak_flops_bf16" not in h100 and "memory_bytes_per_device" not in h100  # one source: the spec
    assert hardware_specs.peak_flops(h100, "bf16") == 989.4e12
    assert hardware_specs.peak_flops(h100, "fp16") == 989.4e12
    assert hardware_specs.peak_flops(h100, "fp32") == 66.9e12
    assert hardware_specs.peak_flops(OmegaConf.load(CONFIG_DIR / "cluster" / "cpu.yaml"), "fp32") is None
    own = {**OmegaConf.to_container(h100), "peak_flops_bf16": 1e15, "inter_node_bw_bytes_per_s": 25e9}
    assert hardware_specs.peak_flops(own, "bf16") == 1e15  # a preset's own figure overrides the spec's
    spec = hardware_specs.from_cluster(own)
    assert spec.peak_flops == 1e15 and spec.inter_bw == 25e9 and spec.intra_bw == 450e9
    with pytest.raises(ValueError, match="lacks"):
        hardware_specs.from_cluster({"name": "mystery", "gpu_type": "XPU-1"})


def test_equivalent_shape_matches_the_published_parameter_count():
    r = calibration.equivalent_mlp_ratio(32, 4096, 6.979e9)  # Llama 3.1 8B
    s = flops.Shape(32, 4096, 32, 128256, 8192, mlp_ratio=r)
    assert flops.params_nonembedding(s) == pytest.approx(6.979e9, rel=1e-9)


def test_fit_recovers_known_efficiencies_from_synthetic_published_values(cases):
    truth = replace(T.DEFAULT, e_mm=0.66, mem_bytes=900.0)
    fake = [replace(k, published=calibration.predict_case(k, truth)[0]) for k in cases if k.in_target]
    got = calibration.fit_coefficients(fake)
    assert got.e_mm == pytest.approx(0.66, rel=1e-3)
    assert got.mem_bytes == pytest.approx(900.0, rel=1e-2)


def test_validate_meets_its_target_and_writes_its_outputs(tmp_path, capsys):
    rc = validate_cmd.main(["--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "validate.json").read_text())
    s = doc["summary"]
    assert s["median_abs_error"] <= 0.15 and s["max_abs_error"] <= 0.30
    assert s["loo_median_abs_error"] <= 0.15 and s["loo_max_abs_error"] <= 0.30
    assert "loso_median_abs_error" in s
    with open(tmp_path / "validate.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["rows"]) >= 25
    md = (tmp_path / "validate.md").read_text()
    assert "zero3-174.6b-1536" in md and "leave-one-out" in md.replace("leave-one-case-out", "leave-one-out")
    assert "wrote" in capsys.readouterr().out


def test_zero3_collapse_is_reproduced(cases):
    cal = calibration.Calibration(calibration.fit_coefficients([k for k in cases if k.in_target]))
    rows = {r["id"]: r for r in calibration.replay(cases, cal)}
    t = [rows[f"zero3-174.6b-{n}"]["predicted"] for n in (384, 768, 1536)]
    assert t[0] > 1.5 * t[1] > 2.5 * t[2]  # published 144 / 88 / 44
    ptdp = [rows[f"megatron21-ptdp-{n}"]["predicted"] for n in (384, 768, 1536)]
    assert min(ptdp) > 0.85 * max(ptdp)  # published 153 / 149 / 141


def test_validate_rejects_unknown_arguments(capsys):
    assert validate_cmd.main(["--nope", "x"]) == 2
    assert "unknown argument" in capsys.readouterr().err
