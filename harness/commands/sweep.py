"""``harness sweep`` (interim: forwards to the library's old entry point until the command moves here)."""

from __future__ import annotations

from harness.driver.sweep import main as main

__all__ = ["main"]
