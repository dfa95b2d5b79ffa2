"""Kaplan's critical-batch law fitted to noise scales, and what it means for data parallelism at scale."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.analysis import critical_batch as CB
from harness.analysis import extrapolate as X
from harness.core.records import write_record

B_STAR, ALPHA_B = 2e8, 0.21


class StubLossFit:
    """What the extrapolation needs of a loss law: optimal(C, q) and data (as in test_extrapolate)."""

    source = "stub"
    data = {"N": np.array([1e9, 1e10]), "D": np.array([1e10, 2e11])}

    def optimal(self, C, q=(0.05, 0.95)):
        n = 0.1 * C**0.5
        iv = lambda v: {"value": v, "lo": 0.9 * v, "hi": 1.1 * v}  # noqa: E731
        return {
            "C": C,
            "N_opt": iv(n),
            "D_opt": iv(C / (6 * n)),
            "loss": iv(1.8 + C**-0.05),
            "tokens_per_param": iv(C / (6 * n * n)),
            "extrapolation_oom": 1.0,
        }


def synthetic(n: int = 24, noise: float = 0.1, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    loss = np.exp(rng.uniform(math.log(2.0), math.log(5.0), n))
    b = B_STAR / loss ** (1 / ALPHA_B) * np.exp(rng.normal(0, noise, n))
    return loss, b


def test_fit_recovers_b_star_and_alpha_b_from_noisy_synthetic_runs():
    loss, b = synthetic()
    law = CB.fit_critical_batch(loss, b, n_bootstrap=1000, seed=0)
    assert law.alpha_B == pytest.approx(ALPHA_B, rel=0.05)
    assert law.B_star == pytest.approx(B_STAR, rel=0.35)
    iv = law.interval()
    assert iv["B_star"]["lo"] < B_STAR < iv["B_star"]["hi"]
    assert iv["alpha_B"]["lo"] < ALPHA_B < iv["alpha_B"]["hi"]
    assert law.resid_sd == pytest.approx(0.1, rel=0.4)
    p = law.predict(3.0)
    truth = B_STAR / 3.0 ** (1 / ALPHA_B)
    assert p["lo"] < truth < p["hi"] and p["extrapolated"] is False
    wide = law.predict(3.0, scatter=True)
    assert wide["hi"] - wide["lo"] > p["hi"] - p["lo"]  # one run's scatter widens the band
    far = law.predict(1.0)
    assert far["extrapolated"] and far["loss_factor_beyond_data"] == pytest.approx(law.loss_range[0])
    assert far["hi"] / far["lo"] > p["hi"] / p["lo"]  # wider the further it extrapolates
    d = law.to_dict()
    assert d["n_points"] == 24 and d["form"].startswith("B_crit(L)")


def test_fit_refuses_data_that_cannot_carry_the_law():
    with pytest.raises(CB.CriticalBatchError, match="need >= 3"):
        CB.fit_critical_batch([2.0, 3.0], [1e4, 5e3])
    with pytest.raises(CB.CriticalBatchError, match="need >= 3"):
        CB.fit_critical_batch([2.0, 2.0, 2.0], [1e4, 2e4, 3e4])
    with pytest.raises(CB.CriticalBatchError, match="does not grow"):
        CB.fit_critical_batch([2.0, 3.0, 4.0], [1e3, 2e3, 3e3])
    with pytest.raises(CB.CriticalBatchError, match="loss"):
        CB.fit_critical_batch([2.0, 3.0, 4.0], [3e3, 2e3, 1e3]).predict(-1.0)


def test_kaplan_published_constants_are_labelled():
    law = CB.kaplan_published()
    p = law.predict(1.878)
    assert p["value"] == pytest.approx(2e8 / 1.878 ** (1 / 0.21))
    assert p["lo"] == p["hi"] == p["value"] and p["extrapolated"] is None
    assert "BPE" in law.loss_unit and "arXiv:2001.08361" in law.source


def _record(root, i, loss, b, vocab=256, with_metrics=False):
    run = root / f"r{i}"
    write_record(
        run,
        {
            "status": "completed",
            "kind": "train",
            "run_id": f"r{i}",
            "sweep": "s",
            "model": {"name": "m", "params_nonembedding": 1000 * (i + 1), "vocab_size": vocab},
            "parallel": {"world_size": 2},
            "training": {
                "tokens_trained": 1e6,
                "heldout_loss": loss,
                "final_train_loss": loss,
                "noise_scale": {"b_simple_tokens": b},
            },
        },
    )
    if with_metrics:  # a falling loss with the law's noise scale at each step
        steps = np.linspace(loss * 1.6, loss, 50)
        lines = [
            json.dumps({"step": k, "loss": float(L), "b_simple": float(B_STAR / L ** (1 / ALPHA_B))})
            for k, L in enumerate(steps)
        ]
        (run / "metrics.jsonl").write_text(
            "\n".join([*lines, json.dumps({"step": 49, "heldout_loss": loss})]) + "\n"
        )


def test_fit_from_records_reads_the_noise_scale_field(tmp_path):
    loss, b = synthetic(8, noise=0.05)
    for i, (lo, bb) in enumerate(zip(loss, b, strict=True)):
        _record(tmp_path, i, float(lo), float(bb), with_metrics=True)
    write_record(
        tmp_path / "w1",
        {
            "status": "completed",
            "kind": "train",
            "run_id": "w1",
            "model": {"name": "m"},
            "training": {"heldout_loss": 3.0, "noise_scale": {"b_simple_tokens": None}},
        },
    )
    law = CB.fit_from_records(tmp_path, n_bootstrap=200)
    assert law.n_points == 8 and law.alpha_B == pytest.approx(ALPHA_B, rel=0.15)
    assert "nats per byte" in law.loss_unit and "b_simple_tokens" in law.source
    traj = CB.fit_from_records(tmp_path, trajectories=True, n_bootstrap=200)
    assert traj.n_points == 8 * 5 and traj.alpha_B == pytest.approx(ALPHA_B, rel=0.02)
    with pytest.raises(CB.CriticalBatchError, match="world size > 1"):
        CB.fit_from_records(tmp_path / "w1")


def test_choose_law_prefers_the_runs_own_fit_only_in_the_same_loss_unit(tmp_path):
    law, why = CB.choose_law("auto", None, loss_from_results=False)
    assert law.B_star == CB.KAPLAN_B_STAR and "BPE" in why and "roughly" in why
    loss, b = synthetic(6)
    for i, (lo, bb) in enumerate(zip(loss, b, strict=True)):
        _record(tmp_path, i, float(lo), float(bb))
    law, why = CB.choose_law("auto", str(tmp_path), loss_from_results=True, n_bootstrap=50)
    assert law.n_points == 6 and "fitted" in why
    law, why = CB.choose_law("auto", str(tmp_path), loss_from_results=False, n_bootstrap=50)
    assert law.B_star == CB.KAPLAN_B_STAR and "Chinchilla" in why
    law, why = CB.choose_law("kaplan", str(tmp_path), loss_from_results=True)
    assert "not comparable" in why and "nats per byte" in why
    with pytest.raises(CB.CriticalBatchError):
        CB.choose_law("fit", None, loss_from_results=True)


def test_data_parallel_limit_arithmetic():
    lim = X.data_parallel_limit(16 * 2**20, seq_len=2048, n_gpus=100_000)
    assert lim["useful_global_batch_seqs"] == 8192 and lim["max_pure_dp_gpus"] == 8192
    assert lim["model_parallel_degree"] == math.ceil(100_000 / 8192) == 13 and not lim["pure_dp_suffices"]
    assert lim["global_batch_tokens_used"] == 16 * 2**20
    two = X.data_parallel_limit(16 * 2**20, seq_len=2048, n_gpus=100_000, min_seqs_per_gpu=2)
    assert two["max_pure_dp_gpus"] == 4096 and two["model_parallel_degree"] == 25
    small = X.data_parallel_limit(5e6, seq_len=2048, n_gpus=1024, batch_tokens=16e6)
    assert small["useful_global_batch_seqs"] == 2441 and small["global_batch_tokens_used"] == 2441 * 2048
    assert small["pure_dp_suffices"] and small["model_parallel_degree"] == 1
    tiny = X.data_parallel_limit(100.0, seq_len=2048, n_gpus=8)
    assert tiny["useful_global_batch_seqs"] == 1 and tiny["model_parallel_degree"] == 8
    with pytest.raises(ValueError):
        X.data_parallel_limit(0.0, 2048, 8)


def test_extrapolate_cmd_caps_the_batch_at_the_critical_batch(tmp_path, monkeypatch):
    from harness.analysis import extrapolate_run
    from harness.commands import extrapolate as extrapolate_cmd

    monkeypatch.setattr(extrapolate_run, "chinchilla_loss_fit", lambda n_bootstrap, seed: StubLossFit())
    monkeypatch.setattr(X, "gpu_counts", lambda n, first=8: [64, n])
    rc = extrapolate_cmd.main(["n_bootstrap=4", "--critical-batch", "8e6", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "extrapolate.json").read_text())
    cb = res["critical_batch"]
    assert cb["critical_batch_tokens"] == 8e6 and cb["useful_global_batch_seqs"] == int(8e6 // 2048)
    assert cb["max_pure_dp_gpus"] == 3906 and cb["model_parallel_degree"] == math.ceil(100_000 / 3906)
    assert res["scaling"]["global_batch_tokens_requested"] == 3906 * 2048
    assert res["scaling"]["critical_batch_tokens"] == 8e6
    md = (tmp_path / "extrapolate.md").read_text()
    assert "## Critical batch" in md and "model-parallel degree" in md
    assert extrapolate_cmd.main(["--critical-batch", "lots"]) == 2
