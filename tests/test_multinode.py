"""A real two-node rendezvous: two hosts made of network namespaces joined by a veth pair.

Node A is 10.200.0.1, node B is 10.200.0.2; each namespace has only its veth end and a
loopback, so every byte between the nodes' ranks crosses the veth link. In each namespace
the real driver (``harness train launcher=multinode`` or ``launcher=deepspeed``) starts one
agent; together they train one run of world size 2. Needs root and iproute2 (``ip netns``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import netns
import pytest
from conftest import SMALL, metrics_rows

from harness.core import config as C
from harness.core import runspec as plan
from harness.core.records import read_record
from harness.datasets import resolve_source
from harness.driver import launch
from harness.driver.launchers.local import run_local

ADDRS = ("10.200.0.1", "10.200.0.2")
RUN = [*SMALL, "nnodes=2", "nproc=1"]


two_hosts = netns.hosts_fixture(ADDRS, "h")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tx_bytes(ns: str, ifname: str) -> int:
    out = subprocess.run(
        ["ip", "-n", ns, "-s", "link", "show", ifname], capture_output=True, text=True, check=True
    ).stdout
    # "TX:  bytes packets ..." followed by the numbers line
    return int(re.search(r"TX:.*\n\s*(\d+)", out).group(1))


def _drivers(hosts: dict, overrides_for, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Start ``harness train`` in every namespace at once; wait for all."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    procs = []
    for k, (ns, (addr, ifname)) in enumerate(hosts.items()):
        cmd = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "harness.cli",
            "train",
            *overrides_for(k, addr, ifname),
        ]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    return outs


@pytest.fixture(scope="module")
def prepared_data():
    """Both drivers would prepare the corpus cache at once; do it once first."""
    resolve_source("embedded")


def test_two_node_torchrun_rendezvous_across_namespaces(two_hosts, prepared_data, tmp_path):
    results = tmp_path / "results"
    port = _free_port()
    (ns_a, (_, if_a)), (ns_b, (_, if_b)) = two_hosts.items()
    tx_before = _tx_bytes(ns_b, if_b)

    def overrides(k: int, addr: str, ifname: str) -> list[str]:
        return [
            *RUN,
            "launcher=multinode",
            f"results_dir={results}",
            f"launcher.rdzv_endpoint={ADDRS[0]}:{port}",
            f"launcher.local_addr={addr}",
            f"launcher.socket_ifname={ifname}",
            "launcher.timeout_s=180",
            "launcher.join_timeout_s=120",
        ]

    outs = _drivers(two_hosts, overrides)
    for out in outs:
        assert out.returncode == 0, out.stdout[-3000:]
        assert "completed" in out.stdout
    [rec_path] = list(results.rglob("record.json"))
    rec = read_record(rec_path)
    assert rec["status"] == "completed" and rec["failure"] is None
    par = rec["parallel"]
    assert (par["world_size"], par["nnodes"], par["nproc_per_node"]) == (2, 2, 1)
    assert rec["environment"]["world_size"] == 2
    run_dir = rec_path.parent
    assert {p.name for p in run_dir.glob("train.*.log")} == {f"train.{a}.log" for a in ADDRS}  # one per node
    # The gradients really crossed the link: node B sent at least its share of every all-reduce.
    sent = _tx_bytes(ns_b, if_b) - tx_before
    assert sent > rec["batch"]["steps"] * rec["timing"]["comm_bytes_per_step"] / 2

    # One run of world size 2 across two nodes trains exactly as world size 2 on one node.
    local = C.compose([*SMALL, "nproc=2", f"results_dir={tmp_path / 'local'}"])
    C.validate(local)
    one_node = run_local(local, quiet=True)
    assert one_node.status == "completed"
    curve = [r["loss"] for r in metrics_rows(run_dir) if "loss" in r]
    assert curve == pytest.approx(
        [r["loss"] for r in metrics_rows(one_node.run_dir) if "loss" in r], rel=1e-6
    )


def test_deepspeed_launcher_two_nodes_without_ssh(two_hosts, prepared_data, tmp_path):
    """The DeepSpeed launcher with a two-host hostfile, one driver per node (--no_ssh --node_rank)."""
    results = tmp_path / "results"
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(f"{a} slots=1\n" for a in ADDRS))
    port = _free_port()

    def overrides(k: int, addr: str, ifname: str) -> list[str]:
        return [
            *RUN,
            "launcher=deepspeed",
            "engine.name=deepspeed",
            "engine.zero_stage=2",
            f"results_dir={results}",
            f"launcher.hostfile={hostfile}",
            f"launcher.node_rank={k}",
            f"launcher.master_addr={ADDRS[0]}",
            f"launcher.master_port={port}",
            f"launcher.socket_ifname={ifname}",
            "launcher.timeout_s=180",
        ]

    outs = _drivers(two_hosts, overrides)
    for out in outs:
        assert out.returncode == 0, out.stdout[-3000:]
    [rec_path] = list(results.rglob("record.json"))
    rec = read_record(rec_path)
    assert rec["status"] == "completed", rec["failure"]
    assert rec["engine"] == {"name": "deepspeed", "zero_stage": 2}
    assert rec["parallel"]["world_size"] == 2 and rec["parallel"]["nnodes"] == 2
    assert {p.name for p in rec_path.parent.glob("train.node*.log")} == {"train.node0.log", "train.node1.log"}


# ----------------------------------------------------------------------------- dry runs (no root)


def test_multinode_dry_run_prints_the_node_command(tmp_path):
    cfg = C.compose(
        [
            *RUN,
            "launcher=multinode",
            "launcher.rdzv_endpoint=node0:29400",
            "launcher.local_addr=node1",
            "launcher.socket_ifname=ib0",
            f"results_dir={tmp_path}",
        ]
    )
    text = launch.dry_run(cfg)
    assert "--nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint node0:29400" in text
    assert (
        f"--rdzv-id {plan.run_id(cfg)}" in text and "is_host=false" in text and "--local-addr node1" in text
    )
    assert "GLOO_SOCKET_IFNAME=ib0" in text and "NCCL_SOCKET_IFNAME=ib0" in text
    assert not plan.run_dir(cfg).exists()  # started nothing, wrote nothing


def test_multinode_needs_an_endpoint_with_several_nodes():
    cfg = C.compose([*RUN, "launcher=multinode"])
    with pytest.raises(C.ConfigError, match="rdzv_endpoint"):
        launch.dry_run(cfg)


def test_deepspeed_dry_run_with_hostfile(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nworker-0 slots=8\nworker-1 slots=8\n")
    cfg = C.compose(
        [
            *SMALL,
            "nnodes=2",
            "nproc=8",
            "launcher=deepspeed",
            f"launcher.hostfile={hostfile}",
            f"results_dir={tmp_path / 'r'}",
        ]
    )
    text = launch.dry_run(cfg)
    assert "deepspeed.launcher.runner --hostfile" in text and "--num_nodes 2 --num_gpus 8" in text
    assert "--master_addr worker-0" in text and "--launcher pdsh" in text
    assert "--no_local_rank --module harness.worker.train" in text and "OMP_NUM_THREADS=" in text
    assert "env file" in text  # the variables exported to the other host
    bad = C.compose([*SMALL, "nnodes=3", "nproc=8", "launcher=deepspeed", f"launcher.hostfile={hostfile}"])
    with pytest.raises(C.ConfigError, match="at least nnodes=3"):
        launch.dry_run(bad)


def test_deepspeed_launcher_single_node_run(run_train):
    """launcher=deepspeed on this machine: a generated localhost hostfile, no ssh."""
    out = run_train("nproc=2", "launcher=deepspeed", f"launcher.master_port={_free_port()}")
    assert out.status == "completed", out.record.get("failure")
    assert (Path(out.run_dir) / "hostfile").read_text() == "localhost slots=2\n"
    assert out.record["parallel"]["world_size"] == 2


def test_multinode_failing_rank_leaves_failed_record(run_train, monkeypatch):
    """The multinode driver's failure path (one node on loopback: no root needed)."""
    monkeypatch.setenv("HARNESS_FAULT", "raise@1:2")
    out = run_train("nproc=2", "launcher=multinode", f"launcher.rdzv_endpoint=127.0.0.1:{_free_port()}")
    assert out.status == "failed" and out.returncode != 0
    failure = read_record(out.run_dir)["failure"]
    assert failure["rank"] == 1 and failure["type"] == "InjectedFault", failure
    assert failure["log_tail"] and (Path(out.run_dir) / f"train.{socket.gethostname()}.log").exists()
