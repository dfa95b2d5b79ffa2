"""SLURM for real: a throwaway single-node cluster (munged, slurmctld, slurmd from Debian's
packages, started by ``tests/slurm/start_cluster.sh``) and 2-process training jobs submitted
through it, by the plain sbatch script and by Hydra's submitit launcher.

Needs root and the packages (``.ci/install-system.sh``); skips with the reason otherwise.
The cluster has no accounting database, so ``tests/slurm/bin/sacct`` (reading scontrol)
stands in for sacct, which submitit polls for job states.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SMALL, metrics_rows

from harness.core import config as C
from harness.core.records import read_record
from harness.driver import launch
from harness.driver.launchers.local import run_local

pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed"
)

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "tests" / "slurm"
SBATCH = REPO / "launch" / "slurm" / "train.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")


def _why_no_cluster() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run slurmctld/slurmd/munged"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing): run .ci/install-system.sh as root"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (the munge package creates it)"
    return None


@pytest.fixture(scope="module")
def slurm():
    """A fresh cluster for this module (job ids start at 1 again); stopped at the end."""
    why = _why_no_cluster()
    if why:
        pytest.skip(why)
    # Not under pytest's tmp dirs: munged refuses socket directories others could reach into
    # and pytest's are 0700 for root only, which slurmd's job steps must traverse.
    root = Path(tempfile.mkdtemp(prefix="harness-slurm-", dir="/tmp"))
    start = subprocess.run(
        [str(HERE / "start_cluster.sh"), str(root)], capture_output=True, text=True, timeout=60
    )
    try:
        if start.returncode != 0:
            pytest.fail(f"the test cluster did not start:\n{start.stdout}\n{start.stderr}")
        env = {}
        for line in start.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.replace("$PATH", os.environ["PATH"])
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            yield root
    finally:
        subprocess.run([str(HERE / "stop_cluster.sh"), str(root)], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _check_complete(rec: dict) -> None:
    assert rec["status"] == "completed" and rec["failure"] is None
    tr, ti = rec["training"], rec["timing"]
    assert tr["final_train_loss"] < tr["initial_loss"] and tr["heldout_loss"] > 0
    assert (
        ti["timed_steps"] > 0 and ti["comm_time_median_s"] > 0 and len(ti["per_rank_step_time_median_s"]) == 2
    )
    assert rec["parallel"]["world_size"] == 2 and rec["environment"]["world_size"] == 2


def _wait_for_job(job_id: str, timeout: float = 300) -> str:
    """Final state of a job, polled every 0.2 s (sbatch --wait polls far more slowly)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        state = out.split("JobState=", 1)[1].split()[0] if "JobState=" in out else "UNKNOWN"
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"SLURM job {job_id} did not finish in {timeout} s")


def test_sbatch_script_runs_a_two_process_job(slurm, tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, HARNESS_PYTHON=sys.executable)
    submit = subprocess.run(
        ["sbatch", "--parsable", f"--output={slurm}/sbatch-%j.out", str(SBATCH), *SMALL, "nproc=2",
         f"results_dir={results}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job_id = submit.stdout.strip().split(";")[0]
    state = _wait_for_job(job_id)
    log = (slurm / f"sbatch-{job_id}.out").read_text()
    assert state == "COMPLETED", log
    [path] = list(results.rglob("record.json"))
    rec = read_record(path)
    _check_complete(rec)
    assert rec["environment"]["slurm_job_id"] == job_id  # the ranks ran inside that SLURM job
    assert (path.parent / "train.node0.log").exists() and "completed" in log


def test_hydra_submitit_launcher_runs_a_two_process_job(slurm, tmp_path):
    cfg = C.compose([*SMALL, "nproc=2", "launcher=slurm", f"results_dir={tmp_path}"])
    C.validate(cfg)
    out = launch.run(cfg, quiet=True)
    assert out.status == "completed", out.record.get("failure")
    rec = read_record(out.run_dir)
    _check_complete(rec)
    job_id = rec["environment"]["slurm_job_id"]
    assert job_id and (out.run_dir / "slurm" / "submitit" / f"{job_id}_0_log.out").exists()
    assert (out.run_dir / "slurm" / "hydra" / ".hydra" / "config.yaml").exists()  # Hydra ran the job
    assert (out.run_dir / "train.node0.log").exists()
    # Same run as on this machine without SLURM: the same losses.
    local = C.compose([*SMALL, "nproc=2", f"results_dir={tmp_path / 'local'}"])
    C.validate(local)
    here = run_local(local, quiet=True)
    curve = [r["loss"] for r in metrics_rows(out.run_dir) if "loss" in r]
    assert curve == pytest.approx([r["loss"] for r in metrics_rows(here.run_dir) if "loss" in r], rel=1e-6)


def test_failing_rank_in_slurm_job_leaves_failed_record(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_FAULT", "raise@1:2")  # exported by sbatch into the job, down to the ranks
    cfg = C.compose([*SMALL, "nproc=2", "launcher=slurm", f"results_dir={tmp_path}"])
    C.validate(cfg)
    out = launch.run(cfg, quiet=True)
    assert out.status == "failed"
    failure = read_record(out.run_dir)["failure"]
    assert failure["rank"] == 1 and failure["type"] == "InjectedFault", failure


# ----------------------------------------------------------------------------- dry run (no cluster)


def test_slurm_dry_run_prints_the_batch_script_and_node_command(tmp_path):
    cfg = C.compose(
        [
            *SMALL,
            "nnodes=2",
            "nproc=4",
            "launcher=slurm",
            "launcher.partition=gpu",
            "launcher.cpus_per_task=16",
            "launcher.time_min=30",
            f"results_dir={tmp_path}",
        ]
    )
    text = launch.dry_run(cfg)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --time=30",
    ):
        assert line in text
    assert "srun" in text and "submitit.core._submit" in text
    assert "--nnodes 2 --nproc-per-node 4 --rdzv-backend c10d" in text and "OMP_NUM_THREADS=4" in text
    assert not any(tmp_path.iterdir())  # started nothing, wrote nothing


# ----------------------------------------------------------------------------- two SLURM nodes


@pytest.fixture(scope="module")
def two_node_slurm():
    """Two SLURM nodes, each slurmd in its own network namespace (10.200.0.1, 10.200.0.2, joined
    by a veth pair whose ends are both named hsv0, as a cluster's nodes share interface names);
    slurmctld lives in the first. Yields (first namespace, cluster dir)."""
    why = _why_no_cluster() or (
        None if shutil.which("ip") and shutil.which("nsenter") else "needs ip and nsenter"
    )
    if why:
        pytest.skip(why)
    tag = f"s{os.getpid() % 100000}"
    ns = (f"{tag}a", f"{tag}b")
    root = Path(tempfile.mkdtemp(prefix="harness-slurm2-", dir="/tmp"))

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    try:
        for n in ns:
            ip("netns", "add", n)
        ip("link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb")
        for n, end, addr in zip(ns, (f"{tag}va", f"{tag}vb"), ("10.200.0.1", "10.200.0.2"), strict=True):
            ip("link", "set", end, "netns", n)
            ip("-n", n, "link", "set", end, "name", "hsv0")
            ip("-n", n, "addr", "add", f"{addr}/24", "dev", "hsv0")
            ip("-n", n, "link", "set", "hsv0", "up")
            ip("-n", n, "link", "set", "lo", "up")
        nodes = f"nodea=10.200.0.1@{ns[0]} nodeb=10.200.0.2@{ns[1]}"
        start = subprocess.run(
            [str(HERE / "start_cluster.sh"), str(root), "1"],
            env=dict(os.environ, NODES=nodes),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if start.returncode != 0:
            pytest.fail(f"the two-node test cluster did not start:\n{start.stdout}\n{start.stderr}")
        env = dict(
            os.environ, SLURM_CONF=str(root / "slurm.conf"), PATH=f"{HERE / 'bin'}:{os.environ['PATH']}"
        )
        yield ns[0], env
    finally:
        subprocess.run([str(HERE / "stop_cluster.sh"), str(root)], capture_output=True, timeout=60)
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_srun_spans_two_nodes_in_two_namespaces(two_node_slurm):
    ns, env = two_node_slurm
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "srun",
            "-N2",
            "-n2",
            "sh",
            "-c",
            "echo $SLURMD_NODENAME $(ip -4 -o addr show dev hsv0)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = sorted(out.splitlines())
    assert lines[0].startswith("nodea") and "10.200.0.1/24" in lines[0]
    assert lines[1].startswith("nodeb") and "10.200.0.2/24" in lines[1]


def test_hydra_submitit_launcher_two_node_job(two_node_slurm, tmp_path):
    """Hydra's submitit launcher, nnodes=2: one task per node, torchrun rendezvous across the link."""
    ns, env = two_node_slurm
    cmd = [
        "ip",
        "netns",
        "exec",
        ns,
        sys.executable,
        "-m",
        "harness.cli",
        "train",
        *SMALL,
        "nnodes=2",
        "nproc=1",
        "launcher=slurm",
        "launcher.cpus_per_task=1",
        "launcher.socket_ifname=hsv0",
        f"results_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [path] = list(tmp_path.rglob("record.json"))
    rec = read_record(path)
    _check_complete(rec)
    assert rec["parallel"]["nnodes"] == 2 and rec["environment"]["slurm_job_id"]
    node1 = (path.parent / "train.node1.log").read_text()
    assert "--rdzv-endpoint 10.200.0.1:" in node1 and "--local-addr 10.200.0.2" in node1
