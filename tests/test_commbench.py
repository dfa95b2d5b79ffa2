"""Communication benchmark: nccl-tests formulas, the alpha-beta fit, and a real 2-rank gloo run."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from harness.analysis.throughput.collectives import fit_all, fit_alpha_beta, load_commbench
from harness.commands import commbench as commbench_cmd
from harness.core.collectives import (
    MEASUREMENT_COLUMNS,
    algbw,
    bus_factor,
    busbw,
    collective_time,
    latency_steps,
)
from harness.core.records import read_record, write_record
from harness.driver import commbench

# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 1024])
def test_bus_factors_match_nccl_tests(n):
    assert bus_factor("all_reduce", n) == pytest.approx(2 * (n - 1) / n)
    assert bus_factor("all_gather", n) == pytest.approx((n - 1) / n)
    assert bus_factor("reduce_scatter", n) == pytest.approx((n - 1) / n)


def test_bus_factor_known_values():
    assert bus_factor("all_reduce", 2) == 1.0
    assert bus_factor("all_reduce", 8) == 1.75
    assert bus_factor("all_gather", 4) == 0.75
    assert bus_factor("all_reduce", 1) == 0.0  # one rank moves nothing


def test_latency_steps():
    assert latency_steps("all_reduce", 8) == 14
    assert latency_steps("all_gather", 8) == 7
    assert latency_steps("reduce_scatter", 8) == 7
    assert latency_steps("all_reduce", 1) == 0


def test_collective_time_and_bandwidths():
    # 1 GB all-reduce over 4 ranks at alpha 10 us, 100 GB/s bus: 6 steps + 1.5 * S / B.
    t = collective_time("all_reduce", 1e9, 4, 10e-6, 100e9)
    assert t == pytest.approx(6 * 10e-6 + 1.5e9 / 100e9)
    assert collective_time("all_gather", 1e9, 4, 10e-6, 100e9) == pytest.approx(3 * 10e-6 + 0.75e9 / 100e9)
    # A model-generated time at zero latency gives back the bus bandwidth exactly.
    t0 = collective_time("reduce_scatter", 2**20, 8, 0.0, 5e9)
    assert busbw("reduce_scatter", 2**20, 8, t0) == pytest.approx(5e9)
    assert algbw(2**20, 0.5) == 2**21


@pytest.mark.parametrize(
    "call",
    [
        lambda: bus_factor("allreduce", 4),
        lambda: latency_steps("broadcast", 4),
        lambda: collective_time("alltoall", 1024, 4, 1e-6, 1e9),
    ],
)
def test_invalid_op_is_a_clear_error(call):
    with pytest.raises(
        ValueError, match=r"unknown collective op .*allowed: all_reduce, all_gather, reduce_scatter"
    ):
        call()


def test_invalid_world_size_and_bandwidth():
    with pytest.raises(ValueError, match="world size"):
        bus_factor("all_reduce", 0)
    with pytest.raises(ValueError, match="bandwidth"):
        collective_time("all_reduce", 1, 2, 1e-6, 0.0)


# ----------------------------------------------------------------------------- fitting


def synthetic(op, alpha, bw, ns=(2, 4, 8), nnodes=1, noise=0.05, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        for s in [16 * 4**k for k in range(13)]:  # 16 B .. 256 MiB
            t = collective_time(op, s, n, alpha, bw) * math.exp(rng.normal(0, noise))
            rows.append({"op": op, "world_size": n, "nnodes": nnodes, "size_bytes": s, "time_s_median": t})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter"])
def test_fit_recovers_alpha_and_bandwidth(op):
    alpha, bw = 25e-6, 80e9
    fit = fit_alpha_beta(synthetic(op, alpha, bw), op, n_bootstrap=200, seed=0)
    # 5% log-normal noise on 39 points: both within 10%, and inside their 95% intervals.
    assert fit["alpha_s"] == pytest.approx(alpha, rel=0.10)
    assert fit["busbw_Bps"] == pytest.approx(bw, rel=0.10)
    assert fit["alpha_s_ci"][0] <= alpha <= fit["alpha_s_ci"][1]
    assert fit["busbw_Bps_ci"][0] <= bw <= fit["busbw_Bps_ci"][1]
    assert fit["n_points"] == 39 and fit["tier"] == "intra-node" and fit["world_sizes"] == [2, 4, 8]


def test_fit_is_exact_without_noise_and_ignores_single_rank():
    df = synthetic("all_reduce", 3e-6, 400e9, noise=0.0)
    df = pd.concat(
        [
            df,
            pd.DataFrame(
                [{"op": "all_reduce", "world_size": 1, "nnodes": 1, "size_bytes": 1024, "time_s_median": 1.0}]
            ),
        ]
    )
    fit = fit_alpha_beta(df, n_bootstrap=10)
    assert fit["alpha_s"] == pytest.approx(3e-6, rel=1e-6)
    assert fit["busbw_Bps"] == pytest.approx(400e9, rel=1e-6)
    assert fit["rel_rmse"] < 1e-9


def test_fit_warns_when_sizes_are_latency_bound():
    df = synthetic("all_reduce", 50e-6, 100e9, noise=0.0)
    assert "warning" not in fit_alpha_beta(df, n_bootstrap=0)
    small = fit_alpha_beta(df[df["size_bytes"] <= 4096], n_bootstrap=0)
    assert "bandwidth not pinned" in small["warning"] and small["bandwidth_share_at_max_size"] < 0.01


def test_fit_separates_tiers():
    intra = synthetic("all_reduce", 5e-6, 300e9)
    inter = synthetic("all_reduce", 20e-6, 40e9, ns=(16, 32), nnodes=2)
    both = pd.concat([intra, inter])
    with pytest.raises(ValueError, match="tier"):
        fit_alpha_beta(both, n_bootstrap=0)
    fits = {f["tier"]: f for f in fit_all(both, n_bootstrap=20)}
    assert fits["intra-node"]["busbw_Bps"] == pytest.approx(300e9, rel=0.1)
    assert fits["inter-node"]["busbw_Bps"] == pytest.approx(40e9, rel=0.1)
    assert fits["inter-node"]["alpha_s"] == pytest.approx(20e-6, rel=0.15)


def test_fit_needs_enough_points():
    df = synthetic("all_gather", 1e-5, 1e9).head(2)
    with pytest.raises(ValueError, match="need at least 3"):
        fit_alpha_beta(df, "all_gather")
    with pytest.raises(ValueError, match="unknown collective op"):
        fit_alpha_beta(df, "gather")


# ----------------------------------------------------------------------------- driver pieces


def test_size_ladder_and_parse_size():
    assert commbench.size_ladder(16, 1024, 4) == [16, 64, 256, 1024]
    assert commbench.size_ladder(16, 256 << 20, 4)[-1] == 256 << 20
    assert commbench.parse_size("64M") == 64 << 20 and commbench.parse_size("8") == 8
    assert commbench.parse_size("512KiB") == 512 << 10 and commbench.parse_size("1g") == 1 << 30
    with pytest.raises(argparse.ArgumentTypeError):
        commbench.parse_size("lots")


def test_sharded_ops_round_to_a_multiple_of_ranks():
    from harness.worker.commbench import elements

    assert elements("all_gather", 16, 3, 4) == 3  # 4 floats -> 1 per rank x 3 ranks
    assert elements("reduce_scatter", 8, 4, 4) == 4  # at least one element per rank
    assert elements("all_reduce", 16, 3, 4) == 4


def test_unsupported_op_detection():
    from harness.worker.commbench import is_unsupported

    assert is_unsupported(RuntimeError("ProcessGroupGloo does not support reduce_scatter"))
    assert is_unsupported(RuntimeError("Backend gloo does not implement _reduce_scatter_base"))
    assert not is_unsupported(RuntimeError("reduce_scatter: wrong result on rank 1"))


def test_torchrun_command_standalone_and_multinode():
    args = commbench_cmd.settings([])
    cmd = commbench.torchrun_cmd(args, 2, ["--x"])
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[-3:] == ["-m", "harness.worker.commbench", "--x"]
    args = commbench_cmd.settings(["--nnodes", "2", "--rdzv-endpoint", "head:29400"])
    cmd = commbench.torchrun_cmd(args, 16, [])
    assert "--standalone" not in cmd
    assert (
        cmd[cmd.index("--nproc_per_node") + 1] == "8"
        and cmd[cmd.index("--rdzv-endpoint") + 1] == "head:29400"
    )


# ----------------------------------------------------------------------------- real runs


def test_real_two_rank_gloo_run(tmp_path, capsys):
    rc = commbench_cmd.main(
        [
            "--world-sizes",
            "2",
            "--device",
            "cpu",
            "--min-bytes",
            "16",
            "--max-bytes",
            "1M",
            "--factor",
            "16",
            "--warmup",
            "1",
            "--iters",
            "3",
            "--min-iters",
            "3",
            "--bootstrap",
            "20",
            "--results-root",
            str(tmp_path),
            "--run-id",
            "t1",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    run_dir = tmp_path / "commbench" / "t1"
    rec = read_record(run_dir)
    assert rec["kind"] == "commbench" and rec["status"] == "completed"
    assert rec["environment"]["hostname"] and rec["environment"]["torch_version"]
    rows = rec["measurements"]
    measured_ops = {r["op"] for r in rows}
    unsupported_ops = {u["op"] for u in rec["unsupported"]}
    assert measured_ops | unsupported_ops == {"all_reduce", "all_gather", "reduce_scatter"}
    assert not measured_ops & unsupported_ops
    assert len(rows) == 5 * len(measured_ops)  # 16 B, 256 B, 4 KiB, 64 KiB, 1 MiB
    for r in rows:
        assert set(MEASUREMENT_COLUMNS) <= set(r)
        assert r["backend"] == "gloo" and r["device"] == "cpu" and r["world_size"] == 2 and r["nnodes"] == 1
        assert r["iters"] == 3 and 0 < r["time_s_median"] <= r["time_s_p90"]
        assert r["algbw_Bps"] == pytest.approx(r["size_bytes"] / r["time_s_median"])
        assert r["busbw_Bps"] == pytest.approx(r["algbw_Bps"] * bus_factor(r["op"], 2))
    assert (run_dir / "commbench.csv").exists()
    fit = json.loads((run_dir / "fit.json").read_text())
    assert {f["op"] for f in fit["fits"]} == measured_ops
    assert "all_reduce" in out and "busbw" in out and "intra-node" in out
    # gloo's reduce_scatter is an all-reduce in disguise: measured, but flagged as such.
    for f in fit["fits"]:
        assert ("caveat" in f) == (f["op"] == "reduce_scatter")
    assert all(r.get("emulated_as") for r in rows if r["op"] == "reduce_scatter")

    df = load_commbench(tmp_path)
    assert len(df) == len(rows) and set(df["run_id"]) == {"t1"} and set(df["tier"]) == {"intra-node"}
    assert df["size_bytes"].max() == 1 << 20


def _fake_launch(monkeypatch, code: str) -> None:
    monkeypatch.setattr(commbench, "torchrun_cmd", lambda args, n, wargs: [sys.executable, "-c", code])


def test_failed_launch_leaves_failed_record_with_cause(tmp_path, monkeypatch):
    _fake_launch(monkeypatch, "import sys; print('RuntimeError: rendezvous exploded'); sys.exit(3)")
    rc = commbench_cmd.main(
        [
            "--device",
            "cpu",
            "--max-bytes",
            "64",
            "--results-root",
            str(tmp_path),
            "--run-id",
            "bad",
            "--quiet",
        ]
    )
    assert rc == 1
    rec = read_record(tmp_path / "commbench" / "bad")
    assert rec["status"] == "failed"
    assert "code 3" in rec["cause"] and "rendezvous exploded" in rec["cause"]
    assert rec["measurements"] == []
    assert load_commbench(tmp_path).empty  # failed records are not measurements
    assert len(load_commbench(tmp_path, status=None)) == 0


def test_hung_launch_is_killed_and_recorded(tmp_path, monkeypatch):
    _fake_launch(monkeypatch, "import time; time.sleep(120)")
    rc = commbench_cmd.main(
        [
            "--device",
            "cpu",
            "--max-bytes",
            "64",
            "--results-root",
            str(tmp_path),
            "--run-id",
            "hang",
            "--launch-timeout-s",
            "1",
            "--quiet",
        ]
    )
    assert rc == 1
    rec = read_record(tmp_path / "commbench" / "hang")
    assert rec["status"] == "failed" and "timed out" in rec["cause"]


def test_load_commbench_skips_other_kinds(tmp_path):
    row = {c: 1 for c in MEASUREMENT_COLUMNS} | {"op": "all_reduce", "backend": "nccl", "device": "cuda"}
    write_record(
        tmp_path / "commbench" / "a",
        {"kind": "commbench", "status": "completed", "run_id": "a", "measurements": [row | {"nnodes": 2}]},
    )
    write_record(tmp_path / "sweep" / "b", {"kind": "train", "status": "completed", "measurements": [row]})
    df = load_commbench(tmp_path)
    assert len(df) == 1 and df.loc[0, "tier"] == "inter-node" and df.loc[0, "run_id"] == "a"
