"""The results store: atomic records, corrupt or foreign records skipped with a warning, one writer per run."""

import json
import subprocess
import sys
import threading

import pytest
from conftest import SMALL

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.records import SCHEMA_VERSION, RecordError, read_record, records_table, write_record
from harness.driver import supervisor
from harness.driver.launchers.local import run_local


def fake_completed(run_dir, n=1000, loss=3.0):
    write_record(
        run_dir,
        {
            "kind": "train",
            "run_id": run_dir.name,
            "sweep": "s",
            "status": "completed",
            "model": {"params_nonembedding": n},
            "training": {"final_train_loss": loss},
        },
    )


def test_atomic_write_leaves_no_temp_files_and_replaces_whole(tmp_path):
    fake_completed(tmp_path / "a")
    fake_completed(tmp_path / "a", loss=2.0)
    assert read_record(tmp_path / "a")["training"]["final_train_loss"] == 2.0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["record.json"]


def test_bad_status_is_refused(tmp_path):
    with pytest.raises(RecordError, match="status 'weird'"):
        write_record(tmp_path, {"status": "weird"})


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"schema_version": 1, "status": "compl', "unreadable run record"),
        ("", "unreadable run record"),
        ("\x00\x01garbage", "unreadable run record"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema_version": 0, "status": "completed"}', "schema_version=0 is not supported"),
        ('{"status": "completed"}', "schema_version=None is not supported"),
    ],
)
def test_corrupt_records_are_skipped_with_a_warning_naming_the_file(tmp_path, content, needle):
    fake_completed(tmp_path / "good")
    bad = tmp_path / "bad" / "record.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.warns(UserWarning, match=needle) as warned:
        df = records_table(tmp_path)
    assert str(bad) in str(warned[0].message)
    assert list(df["run_id"]) == ["good"]


def test_harness_fit_skips_corrupt_record_without_traceback(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text('{"truncated": ')
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fit", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "bad" / "record.json") in out.stderr
    assert out.returncode == 2  # nothing left to fit: one clear error


def test_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "status": "completed"}))
    with pytest.raises(
        RecordError,
        match=rf"schema_version={SCHEMA_VERSION + 1} is not supported; this harness "
        rf"reads version {SCHEMA_VERSION}",
    ):
        read_record(path)


def test_one_run_folder_one_writer(tmp_path):
    cfg = C.compose([*SMALL, f"results_dir={tmp_path}"])
    run_dir = plan.run_dir(cfg)
    with (
        supervisor.run_lock(run_dir),
        pytest.raises(supervisor.RunLocked, match="being run by another process"),
    ):
        run_local(cfg)


def test_two_sweeps_into_one_folder_do_not_clobber(tmp_path):
    """Two drivers start the same run at once: one runs it, the other is told it is taken."""
    from harness.driver.sweep import Point, run_point

    cfg = C.compose([*SMALL, f"results_dir={tmp_path}"])
    C.validate(cfg)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(run_point(Point([], cfg))[1])) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r["status"] for r in results)
    assert statuses == ["completed", "locked"]
    assert read_record(plan.run_dir(cfg))["status"] == "completed"
