"""Peers that do not answer: a bounded wait, then a clear error and a failed record.

From the root namespace a TCP connect to an outside address may appear to succeed and then
hang, so the endpoints live in network namespaces of the test's own making, where refused
and unreachable behave as on a real network.
"""

import subprocess
import sys
import time

import netns
import pytest
from conftest import SMALL

from harness.core.records import read_record

ADDRS = ("10.200.1.1", "10.200.1.2")  # a link of its own: does not collide with test_multinode's
UNUSED = "10.200.1.9"  # on the link, but no host answers ARP for it


hosts = netns.hosts_fixture(ADDRS, "u")


def driver_in(
    ns: str, tmp_path, *overrides: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
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
        "nproc=1",
        f"results_dir={tmp_path}",
        "launcher.connect_timeout_s=4",
        *overrides,
    ]
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out, time.time() - start


@pytest.mark.parametrize(
    "endpoint, why", [(f"{ADDRS[1]}:29411", "refused"), (f"{UNUSED}:29411", "unreachable")]
)
def test_rendezvous_endpoint_that_does_not_answer(hosts, tmp_path, endpoint, why):
    ns_a = next(iter(hosts))
    out, elapsed = driver_in(
        ns_a,
        tmp_path,
        "launcher=multinode",
        "nnodes=2",
        f"launcher.rdzv_endpoint={endpoint}",
        f"launcher.local_addr={ADDRS[0]}",
    )
    assert out.returncode == 1 and elapsed < 60, (why, out.stdout[-1500:], out.stderr[-1500:])
    assert f"launcher.rdzv_endpoint={endpoint}" in out.stdout and "did not answer within 4 s" in out.stdout
    [rec_path] = list(tmp_path.rglob("record.json"))
    failure = read_record(rec_path)["failure"]
    assert failure["type"] == "EndpointUnreachable" and endpoint in failure["message"]


def test_hostfile_host_that_does_not_answer(hosts, tmp_path):
    ns_a = next(iter(hosts))
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(f"{ADDRS[1]} slots=1\n{UNUSED} slots=1\n")
    out, elapsed = driver_in(
        ns_a, tmp_path, "launcher=deepspeed", "nnodes=2", f"launcher.hostfile={hostfile}"
    )
    assert out.returncode == 1 and elapsed < 60, (out.stdout[-1500:], out.stderr[-1500:])
    assert f"hostfile host {ADDRS[1]} (ssh)" in out.stdout and "did not answer" in out.stdout


def test_endpoint_error_returns_once_the_endpoint_answers():
    import socket

    from harness.driver.launchers.common import endpoint_error

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert endpoint_error("127.0.0.1", port, 5) is None
    assert "did not answer within 1 s" in endpoint_error("127.0.0.1", port, 1)
