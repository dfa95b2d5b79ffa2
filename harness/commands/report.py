"""``harness report`` (interim: forwards to the library's old entry point until the command moves here)."""

from __future__ import annotations

from harness.analysis.report import main as main

__all__ = ["main"]
