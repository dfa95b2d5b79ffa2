"""Where the package's own files are: the config presets and the bundled data (one definition each)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # harness/
SOURCE_ROOT = PACKAGE_DIR.parent  # the checkout (or site-packages) that holds harness/
CONFIG_DIR = PACKAGE_DIR / "configs"
DATA_DIR = PACKAGE_DIR / "data"
