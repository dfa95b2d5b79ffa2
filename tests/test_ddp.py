"""Real data-parallel training on CPU with gloo, world size 2."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SMALL, metrics_rows

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.records import read_record
from harness.driver import launch

HERE = Path(__file__).resolve().parent


def test_gradients_and_parameters_identical_across_ranks(tmp_path):
    cfg = C.compose([*SMALL, "nproc=2", f"results_dir={tmp_path}"])
    run_dir = launch.prepare_run(cfg)
    out = tmp_path / "sync.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "dist_sync_check.py"),
        str(run_dir),
        str(out),
    ]
    proc = subprocess.run(
        cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["initial_param_diff"] == 0.0  # DDP broadcasts rank 0's weights at wrap time
    a, b = report["inputs_per_rank"]
    assert a != b  # the ranks really trained on different data
    for s in report["steps"]:
        assert s["grad_norm"] > 0
        assert s["grad_diff"] == 0.0 and s["param_diff"] == 0.0


def test_two_processes_match_one_process_with_same_global_batch(run_train):
    one = run_train("nproc=1", "train.micro_batch=8")
    two = run_train("nproc=2", "train.micro_batch=4")
    accum = run_train("nproc=1", "train.micro_batch=4", "train.grad_accum=2")
    for out in (one, two, accum):
        assert out.status == "completed", out.record.get("failure")
    curves = [[r["loss"] for r in metrics_rows(o.run_dir) if "loss" in r] for o in (one, two, accum)]
    assert len(curves[0]) == len(curves[1]) == len(curves[2]) == one.record["batch"]["steps"] > 10
    for other in curves[1:]:
        assert other == pytest.approx(curves[0], rel=1e-5, abs=1e-6)
    assert two.record["training"]["heldout_loss"] == pytest.approx(
        one.record["training"]["heldout_loss"], rel=1e-5
    )


def test_harness_train_cli_two_processes_leaves_complete_record(tmp_path):
    res = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "train",
        "nproc=2",
        "model=gpt-0.1m",
        "train.tokens=60000",
        "train.seq_len=64",
        f"results_dir={res}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [path] = list(res.rglob("record.json"))
    rec = read_record(path)
    assert rec["status"] == "completed" and rec["failure"] is None
    tr, ti, th = rec["training"], rec["timing"], rec["throughput"]
    assert tr["final_train_loss"] < tr["initial_loss"] - 0.5  # it learned
    assert 0 < tr["heldout_loss"] < tr["initial_loss"]
    assert tr["tokens_trained"] >= 60000 and rec["batch"]["global_batch_tokens"] == 2 * 8 * 64
    assert ti["timed_steps"] == rec["batch"]["steps"] - ti["timing_warmup_steps"]
    assert (
        len(ti["per_rank_step_time_median_s"]) == 2 and ti["step_time_p90_s"] >= ti["step_time_median_s"] > 0
    )
    assert ti["comm_bytes_per_step"] > 0 and ti["comm_time_median_s"] > 0
    assert th["tokens_per_s_per_device"] == pytest.approx(th["tokens_per_s"] / 2)
    assert th["peak_source"] == "measured_cpu_matmul_fp32" and 0 < th["mfu"] < 1
    assert rec["parallel"]["backend"] == "gloo" and rec["parallel"]["world_size"] == 2
    assert (
        len(rec["memory"]["peak_bytes_per_rank"]) == 2
        and rec["memory"]["optimizer_state_bytes_per_rank"][0] > 0
    )
    env = rec["environment"]
    assert env["packages"]["torch"] and env["hosts"] and env["world_size"] == 2 and "git_commit" in env
    assert (path.parent / "config.yaml").exists() and (path.parent / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    "fault, kind, message",
    [
        ("raise@1:2", "InjectedFault", "rank 1, step 2"),
        ("exit@1:2", "ProcessExit", "rank 1 exited with code 3"),
        ("kill@1:2", "Signal", "rank 1 was killed by SIGKILL"),
    ],
)
def test_failed_rank_leaves_failed_record_with_cause(run_train, monkeypatch, fault, kind, message):
    monkeypatch.setenv("HARNESS_FAULT", fault)
    out = run_train("nproc=2")
    assert out.status == "failed" and out.returncode != 0
    failure = read_record(out.run_dir)["failure"]
    assert failure["rank"] == 1 and failure["type"] == kind and message in failure["message"]
    assert failure["returncode"] != 0 and failure["log_tail"]


def test_nan_loss_is_recorded_as_diverged(run_train, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "nan@0:3")
    out = run_train("nproc=1")
    assert out.status == "diverged"
    assert out.record["failure"]["type"] == "Diverged" and "step 3" in out.record["failure"]["message"]


def test_run_id_is_stable_and_ignores_where_results_go():
    a = C.compose(["nproc=2", "results_dir=/a", "sweep_name=x"])
    b = C.compose(["nproc=2", "results_dir=/b", "sweep_name=y"])
    c = C.compose(["nproc=2", "train.seed=1"])
    assert plan.run_id(a) == plan.run_id(b) != plan.run_id(c)


def test_wandb_logs_offline_from_rank0_when_enabled(run_train, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = run_train("nproc=2", "wandb.enabled=true", "train.tokens=4096")
    assert out.status == "completed", out.record.get("failure")
    runs = list((out.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # rank 0 only


def test_out_of_memory_is_recorded_as_oom(run_train, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "oom@1:2")
    out = run_train("nproc=2")
    assert out.status == "oom"
    assert out.record["failure"]["rank"] == 1 and out.record["failure"]["type"] == "OutOfMemoryError"


def test_hung_rank_ends_within_collective_timeout(run_train, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "hang@1:2")
    start = time.time()
    out = run_train("nproc=2", "train.comm_timeout_s=10")
    assert out.status == "failed" and time.time() - start < 120
    failure = out.record["failure"]
    assert failure["returncode"] != 0
    assert (
        failure["rank"] == 1
        and failure["type"] == "Hang"
        and "rank 1 stopped in step 2" in failure["message"]
    )


def test_launcher_timeout_kills_a_silent_run(run_train, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "hang@0:2")
    out = run_train("nproc=1", "launcher.timeout_s=20")
    assert out.status == "timeout" and "launcher.timeout_s=20" in out.record["failure"]["message"]
