"""Sweeps: stable ids, skip completed, record failures and go on, re-run only what is missing."""

import pytest
from conftest import SMALL

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.records import read_record
from harness.driver.sweep import expand, run_sweep


def sweep_cfg(**kw):
    base = C.compose(["sweep=smoke"]).sweep
    for k, v in kw.items():
        setattr(base, k, v)
    return base


def test_expand_grid_ids_are_stable_and_distinct(tmp_path):
    sw = sweep_cfg(models=["gpt-0.03m", "gpt-0.1m"], tokens=[8192, 16384], nproc=[1, 2])
    a = expand(sw, [f"results_dir={tmp_path}"])
    b = expand(sw, [f"results_dir={tmp_path}"])
    assert len(a) == 8 and all(p.cfg is not None for p in a)
    ids = [plan.run_id(p.cfg) for p in a]
    assert ids == [plan.run_id(p.cfg) for p in b] and len(set(ids)) == 8


def test_tokens_per_param_and_invalid_points(tmp_path):
    sw = sweep_cfg(
        models=["gpt-0.1m"],
        tokens=[],
        tokens_per_param=[2.0],
        nproc=[1],
        points=["model=gpt-0.1m train.global_batch=7"],
    )
    pts = expand(sw, [f"results_dir={tmp_path}"])
    assert pts[0].cfg.train.tokens == 2 * 100_096
    assert pts[1].cfg is None and "train.global_batch=7" in pts[1].error


def test_failed_point_is_recorded_others_finish_rerun_runs_only_it(tmp_path, monkeypatch):
    sw = sweep_cfg(
        models=[], tokens=[], points=["model=gpt-0.03m nproc=1", "model=gpt-0.03m nproc=2"], overrides=SMALL
    )
    user = [f"results_dir={tmp_path}"]
    monkeypatch.setenv("HARNESS_FAULT", "raise@1:1")  # only the 2-process point has a rank 1
    first = run_sweep(sw, user, log=lambda *_: None)
    assert sorted(r["status"] for r in first) == ["completed", "failed"]
    failed = next(r for r in first if r["status"] == "failed")
    assert failed["failure"]["rank"] == 1 and failed["failure"]["type"] == "InjectedFault"
    done = next(r for r in first if r["status"] == "completed")
    done_mtime = (tmp_path / "smoke" / done["run_id"] / "record.json").stat().st_mtime_ns

    monkeypatch.delenv("HARNESS_FAULT")
    logs: list[str] = []
    second = run_sweep(sw, user, log=logs.append)
    assert all(r["status"] == "completed" for r in second)
    assert "1 already recorded, 1 to run" in logs[0]
    assert (tmp_path / "smoke" / done["run_id"] / "record.json").stat().st_mtime_ns == done_mtime
    assert read_record(tmp_path / "smoke" / failed["run_id"])["status"] == "completed"

    third_logs: list[str] = []
    run_sweep(sw, user, log=third_logs.append)
    assert "2 already recorded, 0 to run" in third_logs[0]


@pytest.mark.parametrize("name", ["smoke", "scaling-cpu", "default", "h100-node", "h100-multinode"])
def test_presets_expand(name, tmp_path):
    sw = C.compose([f"sweep={name}"]).sweep
    pts = expand(sw, [f"results_dir={tmp_path}"])
    assert pts
    if name in ("smoke", "scaling-cpu", "default"):
        assert all(p.cfg is not None for p in pts), [p.error for p in pts if p.cfg is None]
    if name == "scaling-cpu":
        ns = sorted({plan.model_facts(p.cfg)["params_nonembedding"] for p in pts})
        assert len(ns) >= 5 and ns[-1] / ns[0] > 10**1.5
        ratios = {p.cfg.train.tokens / plan.model_facts(p.cfg)["params_nonembedding"] for p in pts}
        assert min(ratios) < 1 < 20 < max(ratios)


def test_runs_recorded_by_an_older_version_are_found_not_rerun(tmp_path):
    """A completed record whose stored config predates a config key, under another folder name."""
    from harness.core.records import write_record

    sw = sweep_cfg(models=[], tokens=[], points=["model=gpt-0.03m nproc=1"], overrides=SMALL)
    [point] = expand(sw, [f"results_dir={tmp_path}"])
    old_config = C.to_container(point.cfg)
    del old_config["train"]["lr_rule"], old_config["train"]["resume"]  # keys added later
    write_record(
        tmp_path / "smoke" / "renamed-old-id",
        {"kind": "train", "run_id": "renamed-old-id", "status": "completed", "config": old_config},
    )
    logs: list[str] = []
    records = run_sweep(sw, [f"results_dir={tmp_path}"], log=logs.append)
    assert "1 already recorded, 0 to run" in logs[0] and records[0]["run_id"] == "renamed-old-id"


def test_several_points_at_once(tmp_path):
    sw = sweep_cfg(
        models=[],
        tokens=[],
        points=["model=gpt-0.03m nproc=1", "model=gpt-0.03m nproc=1 train.seed=1"],
        overrides=SMALL,
        parallel=2,
    )
    logs: list[str] = []
    records = run_sweep(sw, [f"results_dir={tmp_path}"], log=logs.append)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert any("ETA" in line for line in logs)
    from datetime import datetime

    recs = [read_record(tmp_path / "smoke" / r["run_id"]) for r in records]
    starts = [datetime.strptime(r["created_at"], "%Y-%m-%dT%H:%M:%S%z") for r in recs]
    ends = [datetime.strptime(r["finished_at"], "%Y-%m-%dT%H:%M:%S%z") for r in recs]
    assert max(starts) < min(ends)  # they ran at the same time
