"""Hosts of a test's own making: network namespaces joined by a veth pair (root + iproute2)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest


def why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's 'ip' (apt-get install iproute2)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def two_hosts(addrs: tuple[str, str], tag: str) -> Iterator[dict[str, tuple[str, str]]]:
    """{namespace: (address, interface)} for two namespaces on one /24 link; removed on exit.

    Raises RuntimeError with the reason when they cannot be made (callers skip on it).
    """
    hosts = {f"{tag}a": (addrs[0], f"{tag}va"), f"{tag}b": (addrs[1], f"{tag}vb")}
    (ns_a, (_, if_a)), (ns_b, (_, if_b)) = hosts.items()
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", if_a, "type", "veth", "peer", "name", if_b)
        for ns, (addr, ifname) in hosts.items():
            _ip("link", "set", ifname, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        for ns in hosts:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        raise RuntimeError(f"cannot make network namespaces here: {e.stderr.strip()}") from None
    try:
        yield hosts
    finally:
        for ns in hosts:  # deleting a namespace also deletes its veth end (and so the pair)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def hosts_fixture(addrs: tuple[str, str], prefix: str) -> Callable:
    """A module-scoped pytest fixture yielding two_hosts(addrs), skipped with the reason where it cannot be made."""

    @pytest.fixture(scope="module")
    def _hosts():
        why = why_no_namespaces()
        if why:
            pytest.skip(why)
        try:
            with two_hosts(addrs, f"{prefix}{os.getpid() % 100000}") as hosts:
                yield hosts
        except RuntimeError as e:
            pytest.skip(str(e))

    return _hosts
