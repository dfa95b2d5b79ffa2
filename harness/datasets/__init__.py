"""Token data, torch-free: prepared token dirs (``format``), making them (``build``), the
embedded default corpus and ``data.source`` lookup (``corpus``), reading and batching (``stream``)."""

from harness.datasets.build import prepare
from harness.datasets.corpus import default_cache_dir, embedded_corpus_files, embedded_dir, resolve_source
from harness.datasets.format import META_FILE, DataError
from harness.datasets.stream import BatchSampler, TokenData, heldout_windows

__all__ = [
    "META_FILE",
    "BatchSampler",
    "DataError",
    "TokenData",
    "default_cache_dir",
    "embedded_corpus_files",
    "embedded_dir",
    "heldout_windows",
    "prepare",
    "resolve_source",
]
