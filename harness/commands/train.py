"""``harness train`` (interim: forwards to the library's old entry point until the command moves here)."""

from __future__ import annotations

from harness.driver.launch import train_main as main

__all__ = ["main"]
