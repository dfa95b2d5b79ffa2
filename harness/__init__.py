"""harness: distributed-training scaling-law benchmark harness (the ``harness`` command: harness.cli)."""

__version__ = "0.1.0"  # the fallback of ``harness --version`` when the package metadata is missing
