"""``harness prepare-data`` (interim: forwards to the library's old entry point until the command moves here)."""

from __future__ import annotations

from harness.datasets.tokens import prepare_main as main

__all__ = ["main"]
