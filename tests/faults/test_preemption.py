"""Pre-emption (SIGTERM) writes a checkpoint; the resumed run's loss curve equals an uninterrupted one."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import SMALL, metrics_rows

from harness.core.records import read_record
from harness.worker import checkpoint

OVERRIDES = [*SMALL, "nproc=2", "train.tokens=30720"]  # 60 steps of 2 x 4 x 64 tokens


def harness_train(results, *extra):
    cmd = [sys.executable, "-m", "harness.cli", "train", *OVERRIDES, f"results_dir={results}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(run_dir):
    return [r["loss"] for r in metrics_rows(run_dir) if "loss" in r]


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    full = harness_train(tmp_path / "full")
    assert full.wait(timeout=600) == 0, full.stdout.read()
    [full_dir] = (tmp_path / "full" / "adhoc").iterdir()

    proc = harness_train(tmp_path / "pre")
    metrics = None
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until some steps are logged, then pre-empt
        found = list((tmp_path / "pre").rglob("metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 12:
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, out  # EX_TEMPFAIL: resume me
    run_dir = metrics.parent
    rec = read_record(run_dir)
    assert rec["status"] == "preempted" and 12 <= rec["checkpoint"]["step"] < 60
    assert checkpoint.latest(run_dir) is not None

    resumed = harness_train(tmp_path / "pre")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert f"(step {rec['checkpoint']['step']})" in out
    done = read_record(run_dir)
    assert (
        done["status"] == "completed" and done["training"]["resumed_from_step"] == rec["checkpoint"]["step"]
    )
    # fp32 on CPU: the resumed curve equals the uninterrupted one step for step.
    assert losses(run_dir) == losses(full_dir)
    assert [r["step"] for r in metrics_rows(run_dir) if "loss" in r] == list(range(60))
    assert done["training"]["heldout_loss"] == read_record(full_dir)["training"]["heldout_loss"]


def test_periodic_checkpoints_keep_the_newest(run_train):
    out = run_train("nproc=1", "train.checkpoint_interval_steps=5", "train.keep_checkpoints=2")
    assert out.status == "completed"
    kept = sorted(p.name for p in (out.run_dir / "checkpoints").glob("step_*"))
    steps = out.record["batch"]["steps"]
    last = (steps - 1) // 5 * 5
    assert kept == [f"step_{last - 5:08d}", f"step_{last:08d}"]
    assert (out.run_dir / "checkpoints" / "latest").read_text().strip() == kept[-1]
    assert not list((out.run_dir / "checkpoints").glob(".tmp*"))


def test_resume_from_periodic_checkpoint_after_a_crash(run_train, monkeypatch):
    ref = run_train("nproc=1", "train.seed=3")
    monkeypatch.setenv("HARNESS_FAULT", "raise@0:17")
    crashed = run_train("nproc=1", "train.seed=3", "train.checkpoint_interval_steps=5", "run_id=crash")
    assert crashed.status == "failed"
    monkeypatch.delenv("HARNESS_FAULT")
    resumed = run_train("nproc=1", "train.seed=3", "train.checkpoint_interval_steps=5", "run_id=crash")
    assert resumed.status == "completed" and resumed.record["training"]["resumed_from_step"] == 15
    assert losses(resumed.run_dir) == pytest.approx(losses(ref.run_dir), abs=0)


def test_checkpoint_pointer_survives_a_half_written_checkpoint(tmp_path):
    ck = tmp_path / "checkpoints"
    (ck / "step_00000005").mkdir(parents=True)
    (ck / "step_00000005" / checkpoint.TRAINER_FILE).write_bytes(b"x")
    (ck / "latest").write_text("step_00000005\n")
    (ck / ".tmp_step_00000010").mkdir()  # a save that died before its rename
    assert checkpoint.latest(tmp_path) == ck / "step_00000005"
    (ck / "latest").write_text("step_00000010\n")  # a pointer to a checkpoint that never completed
    assert checkpoint.latest(tmp_path) == ck / "step_00000005"  # the newest complete one instead


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_resume_matches_uninterrupted(run_train, monkeypatch, stage):
    pytest.importorskip("deepspeed")
    ds = ["nproc=2", "engine=deepspeed", f"engine.zero_stage={stage}", "train.seed=5"]
    ref = run_train(*ds)
    assert ref.status == "completed", ref.record.get("failure")
    monkeypatch.setenv("HARNESS_FAULT", "raise@1:12")
    crashed = run_train(*ds, "train.checkpoint_interval_steps=10", "run_id=ds-crash")
    assert crashed.status == "failed"
    monkeypatch.delenv("HARNESS_FAULT")
    resumed = run_train(*ds, "train.checkpoint_interval_steps=10", "run_id=ds-crash")
    assert resumed.status == "completed" and resumed.record["training"]["resumed_from_step"] == 10
    assert losses(resumed.run_dir) == pytest.approx(losses(ref.run_dir), rel=1e-6)
