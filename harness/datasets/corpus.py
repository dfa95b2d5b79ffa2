"""Where a run's tokens come from: ``data.source`` is ``embedded`` or a prepared token dir.

The embedded default corpus is this Python's own standard library source, byte-level
(vocab 256): present on every machine, no download. It is prepared once into the cache.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from harness.datasets.build import prepare
from harness.datasets.format import META_FILE, DataError


def default_cache_dir(configured: str = "") -> Path:
    return Path(
        configured or os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness"
    ).expanduser()


def embedded_corpus_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files (not site-packages), in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts
    )
    if not files:
        raise DataError(f"no Python source found under the standard library at {root}")
    return root, files


def embedded_dir(cache_dir: str = "", heldout_frac: float = 0.05) -> Path:
    """The embedded corpus, prepared once into the cache (keyed by Python version and split)."""
    v = sys.version_info
    out = default_cache_dir(cache_dir) / f"embedded-stdlib-py{v.major}.{v.minor}.{v.micro}-h{heldout_frac:g}"
    if not (out / META_FILE).exists():
        root, files = embedded_corpus_files()
        prepare(files, out, heldout_frac, root=root)
    return out


def resolve_source(source: str, cache_dir: str = "", heldout_frac: float = 0.05) -> Path:
    """Path of the prepared token dir named by data.source (preparing the embedded one if needed)."""
    if source == "embedded":
        return embedded_dir(cache_dir, heldout_frac)
    path = Path(source).expanduser()
    if not (path / META_FILE).is_file():
        raise DataError(
            f"data.source={source!r} is not a prepared token dir (no {META_FILE}); allowed: 'embedded' or a "
            f"directory made by 'harness prepare-data --out DIR FILES...'"
        )
    return path
