"""``harness extrapolate`` (interim: forwards to the library's old entry point until the command moves here)."""

from __future__ import annotations

from harness.analysis.extrapolate_cmd import main as main

__all__ = ["main"]
