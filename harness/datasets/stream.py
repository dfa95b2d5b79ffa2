"""Reading a prepared token dir: memory-mapped streams, deterministic per-rank batches, held-out windows.

Batches are a pure function of (seed, step, rank): sample ``g`` of the run is window
``perm_epoch(g)``, where the windows are non-overlapping ``seq_len + 1`` slices of the
train stream and each epoch has its own seeded permutation. Rank ``r`` takes its slice
of every global batch, so any world size with the same global batch sees the same data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.datasets.format import META_FILE, DataError


@dataclass
class TokenData:
    """Memory-mapped train and held-out streams of one prepared dir."""

    path: Path
    meta: dict
    train: np.ndarray
    heldout: np.ndarray

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenData:
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            dtype = np.dtype(meta["dtype"])
            train = np.memmap(path / "train.bin", dtype=dtype, mode="r")
            heldout = np.memmap(path / "heldout.bin", dtype=dtype, mode="r")
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise DataError(f"cannot open prepared token dir {str(path)!r}: {e}") from None
        return cls(path, meta, train, heldout)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])


class BatchSampler:
    """Deterministic global batches of non-overlapping windows, sliced per rank."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(f"train split has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _window(self, g: int) -> int:
        epoch, i = divmod(g, self.n_windows)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return int(self._perm[i])

    def sample_ids(self, step: int, global_batch: int, rank: int, per_rank: int) -> range:
        start = step * global_batch + rank * per_rank
        return range(start, start + per_rank)

    def get(self, sample_ids: range | list[int]) -> np.ndarray:
        """[len(ids), seq_len + 1] tokens (inputs are [:, :-1], targets [:, 1:])."""
        out = np.empty((len(sample_ids), self.seq_len + 1), dtype=np.int64)
        for row, g in enumerate(sample_ids):
            s = self._window(g) * self.seq_len
            out[row] = self.tokens[s : s + self.seq_len + 1]
        return out

    def epochs(self, n_samples: int) -> float:
        return n_samples / self.n_windows


def heldout_windows(tokens: np.ndarray, seq_len: int, n_seq: int) -> np.ndarray:
    """n_seq evenly spaced windows over the held-out stream: fixed, seed-independent."""
    n_avail = (len(tokens) - 1) // seq_len
    if n_avail < 1:
        raise DataError(f"held-out split has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
    starts = np.linspace(0, n_avail - 1, num=min(n_seq, n_avail)).astype(np.int64) * seq_len
    return np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts])
