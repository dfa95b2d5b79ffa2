"""Goodput, the 100k-GPU extrapolation (with a stub loss law) and the extrapolate command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.analysis import extrapolate as X
from harness.analysis import extrapolate_run
from harness.analysis import goodput as G
from harness.analysis.throughput import calibration
from harness.commands import extrapolate as extrapolate_cmd
from harness.core import flops, hardware_specs, shapes
from harness.core.records import write_record

GPT3 = flops.Shape(n_layer=96, d_model=12288, n_head=96, vocab_size=50257, seq_len=2048)


class StubLossFit:
    """The shape of losslaw.ChinchillaFit that the extrapolation uses: optimal(C, q) and data."""

    source = "stub: L = 1.8 + C^-0.05, N* = 0.1 C^0.5"

    def __init__(self):
        self.calls: list[float] = []
        self.data = {"N": np.array([1e9, 1e10]), "D": np.array([1e10, 2e11])}

    def optimal(self, C, q=(0.05, 0.95)):
        self.calls.append(C)
        n = 0.1 * C**0.5
        d = C / (6 * n)
        iv = lambda v: {"value": v, "lo": 0.5 * v, "hi": 2 * v}  # noqa: E731
        return {
            "C": C,
            "N_opt": iv(n),
            "D_opt": iv(d),
            "loss": iv(1.8 + C**-0.05),
            "tokens_per_param": iv(d / n),
            "extrapolation_oom": math.log10(C / 1e22),
        }


# --------------------------------------------------------------------------- goodput


def test_llama3_failure_rate_and_mtbf_at_100k_gpus():
    rate = G.failure_rate_per_gpu_hour()
    assert rate == pytest.approx(2e-5, rel=0.02)
    assert G.mtbf_s(100_000) / 60 == pytest.approx(30, rel=0.05)  # "one every ~30 minutes"
    assert G.mtbf_s(16_384) / 3600 == pytest.approx(54 * 24 / 419, rel=1e-9)


def test_young_daly_goodput_formula():
    g = G.goodput(100_000, checkpoint_s=30, restart_s=300)
    m = g["mtbf_s"]
    tau = math.sqrt(2 * 30 * m)
    assert g["checkpoint_interval_s"] == pytest.approx(tau)
    assert g["goodput"] == pytest.approx(1 - 30 / tau - tau / (2 * m) - 300 / m)
    assert g["valid"]
    # Defaults reproduce Llama 3's ">90% effective training time" at 16,384 GPUs.
    assert G.goodput(16_384, G.DEFAULT_CHECKPOINT_S, G.DEFAULT_RESTART_S)["goodput"] == pytest.approx(
        0.9, abs=0.01
    )
    # More GPUs, more failures, less goodput; and it never goes below zero.
    assert G.goodput(10_000, 30, 300)["goodput"] > g["goodput"]
    dead = G.goodput(10_000_000, 600, 3600)
    assert dead["goodput"] == 0.0 and not dead["valid"]
    with pytest.raises(ValueError):
        G.goodput(8, 0, 1)


# --------------------------------------------------------------------------- extrapolation


@pytest.fixture(scope="module")
def cal():
    return calibration.calibrate(n_bootstrap=8, loo=False)


@pytest.fixture(scope="module")
def result(cal):
    hw = hardware_specs.get("H100-SXM")
    return X.extrapolate(
        GPT3,
        hw,
        cal,
        StubLossFit(),
        n_gpus=100_000,
        days=90,
        counts=[64, 1024, 16384, 100_000],
        calibration_max_gpus=6144,
        measured_max_gpus=8,
    )


def test_budget_is_gpus_times_peak_times_mfu_times_days(result):
    mfu = result["throughput"]["mfu"]
    assert 0 < mfu["lo"] <= mfu["value"] <= mfu["hi"] < 1
    budget = result["budget_flops"]["value"]
    assert budget == pytest.approx(100_000 * 989.4e12 * mfu["value"] * 90 * 86400)
    assert result["delivered_flops"]["value"] == pytest.approx(budget * result["goodput"]["goodput"])
    assert result["loss_law"]["C"] == result["delivered_flops"]["value"]


def test_every_number_carries_an_interval_and_its_extrapolation_distance(result):
    ll = result["loss_law"]
    for k in ("N_opt", "D_opt", "loss"):
        assert ll[k]["lo"] <= ll[k]["value"] <= ll[k]["hi"]
    assert ll["extrapolation_oom_N"] == pytest.approx(math.log10(ll["N_opt"]["value"] / 1e10))
    assert ll["extrapolation_oom_D"] == pytest.approx(math.log10(ll["D_opt"]["value"] / 2e11))
    assert ll["extrapolation_oom_C"] > 0
    thr = result["throughput"]
    assert thr["extrapolation_oom_gpus_vs_published"] == pytest.approx(math.log10(100_000 / 6144))
    assert thr["extrapolation_oom_gpus_vs_measured"] == pytest.approx(4.0969, abs=1e-3)
    assert "no GPU" in result["compute_rate_source"]
    ttt = result["time_to_train"]
    assert ttt["days"]["lo"] <= ttt["days"]["value"] <= ttt["days"]["hi"]


def test_scaling_curve_reference_and_drop(result):
    sc = result["scaling"]
    assert sc["reference_gpus"] == 64  # one node cannot hold 175B: the smallest feasible count
    rows = {r["n_gpus"]: r for r in sc["rows"]}
    assert rows[64]["efficiency"]["value"] == pytest.approx(1.0)
    assert rows[100_000]["efficiency"]["value"] < rows[1024]["efficiency"]["value"]
    assert sc["first_below_90pct"] in (16384, 100_000)
    assert "pure data parallelism" in rows[100_000]["explanation"]


def test_shape_for_params_is_close_to_the_target():
    for n in (1e11, 1e12, 5e12):
        s = shapes.shape_for_params(n, 2048, 50257)
        assert flops.params_total(s) == pytest.approx(n, rel=0.25)
        assert s.n_layer % 8 == 0 and s.n_head % 8 == 0


# --------------------------------------------------------------------------- the command


def test_extrapolate_cmd_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    stub = StubLossFit()
    monkeypatch.setattr(extrapolate_run, "chinchilla_loss_fit", lambda n_bootstrap, seed: stub)
    monkeypatch.setattr(X, "gpu_counts", lambda n, first=8: [64, 4096, n])
    rc = extrapolate_cmd.main(
        [
            "cluster=colossus",
            "model=gpt3-175b",
            "days=30",
            "checkpoint_s=20",
            "n_bootstrap=4",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "extrapolate.json").read_text())
    assert res["days"] == 30 and res["goodput"]["checkpoint_s"] == 20
    assert res["cluster"]["n_gpus"] == 100_000
    assert res["loss_law"]["source"] == stub.source
    md = (tmp_path / "extrapolate.md").read_text()
    assert "MFU at 100,000 GPUs" in md and "goodput" in md and "compute-optimal N*" in md
    assert "no GPU measured in this session" in capsys.readouterr().out


def test_extrapolate_cmd_reports_an_infeasible_cluster_instead_of_predicting(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extrapolate_run, "chinchilla_loss_fit", lambda n_bootstrap, seed: StubLossFit())
    rc = extrapolate_cmd.main(["gpus=8", "n_bootstrap=0", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no feasible layout" in err and "memory" in err
    assert not (tmp_path / "extrapolate.json").exists()


def test_extrapolate_cmd_rejects_bad_arguments(capsys):
    assert extrapolate_cmd.main(["cluster=nowhere"]) == 2
    assert "not a preset" in capsys.readouterr().err
    assert extrapolate_cmd.main(["days=ninety"]) == 2
    assert extrapolate_cmd.main(["bogus=1"]) == 2
    assert extrapolate_cmd.main(["--help"]) == 0


def _record(tmp, i, n, tok, step, comm):
    s = flops.Shape(2, 64, 2, 256, 128)
    write_record(
        tmp / f"r{i}",
        {
            "status": "completed",
            "kind": "train",
            "run_id": f"r{i}",
            "model": {
                "name": "gpt-tiny",
                "params_nonembedding": flops.params_nonembedding(s),
                "params_total": flops.params_total(s),
                "flops_per_token": flops.flops_per_token(s),
            },
            "parallel": {"world_size": n, "nnodes": 1, "device": "cpu", "dtype": "fp32"},
            "batch": {"global_batch_tokens": tok * n, "tokens_per_device_per_step": tok},
            "timing": {"step_time_median_s": step, "comm_time_median_s": comm},
            "throughput": {"tokens_per_s": tok * n / step},
        },
    )


def test_measured_records_are_fitted_through_the_record_contract(tmp_path):
    # Synthetic records in the run-record format: the analysis reads them via records_table only.
    i = 0
    for n in (1, 2, 4):
        for tok in (512, 2048):
            comm = 0.002 * (n - 1) / n if n > 1 else None
            _record(tmp_path, i, n, tok, tok * 1e-5 * (1 + 0.05 * math.log(n + 1)) + (comm or 0), comm)
            i += 1
    measured, table, max_n = extrapolate_run.measured_section(str(tmp_path))
    assert len(table) == 6 and max_n == 4
    assert "fit" in measured and measured["fit"]["n_points"] == 6
    assert measured["leave_largest_out"]["held_out_world_size"] == 4
