"""Token streams: prepared token dirs, the embedded default corpus, deterministic per-rank batches.

A prepared dir holds ``train.bin`` and ``heldout.bin`` (memory-mapped tokens) and
``meta.json``. Held-out documents are chosen by a hash of their path, so training never
sees them. The embedded default corpus is this Python's own standard library source,
byte-level (vocab 256): present on every machine, no download.

Batches are a pure function of (seed, step, rank): sample ``g`` of the run is window
``perm_epoch(g)``, where the windows are non-overlapping ``seq_len + 1`` slices of the
train stream and each epoch has its own seeded permutation. Rank ``r`` takes its slice
of every global batch, so any world size with the same global batch sees the same data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.core.io import atomic_write_text

META_FILE = "meta.json"
FORMAT_VERSION = 1


class DataError(ValueError):
    """A missing, unreadable or unusable data source; the message names it."""


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


def _is_heldout(rel_path: str, heldout_frac: float) -> bool:
    h = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:8], "little")
    return (h % 1_000_000) < heldout_frac * 1_000_000


def _collect(sources: list[Path]) -> list[tuple[str, Path]]:
    docs: list[tuple[str, Path]] = []
    for src in sources:
        if src.is_dir():
            docs += [(str(p.relative_to(src)), p) for p in sorted(src.rglob("*")) if p.is_file()]
        elif src.is_file():
            docs.append((src.name, src))
        else:
            raise DataError(f"data source {str(src)!r} does not exist (expected a text file or a directory)")
    if not docs:
        raise DataError(f"no files found in {[str(s) for s in sources]}")
    return docs


def prepare(
    sources: list[Path], out_dir: Path, heldout_frac: float = 0.05, *, root: Path | None = None
) -> dict:
    """Byte-tokenise files into out_dir/{train,heldout}.bin + meta.json (written last, atomically)."""
    if not 0.0 < heldout_frac < 0.5:
        raise DataError(f"heldout_frac={heldout_frac} is not allowed: must be in (0, 0.5)")
    docs = [(str(p.relative_to(root)), p) for p in sources] if root else _collect(sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    counts = {"train": 0, "heldout": 0}
    n_docs = {"train": 0, "heldout": 0}
    # Per-process temp names: ranks that prepare the same dir at once each replace atomically.
    tmp = {split: out_dir / f".{split}.bin.{os.getpid()}.tmp" for split in counts}
    with open(tmp["train"], "wb") as f_train, open(tmp["heldout"], "wb") as f_held:
        for rel, path in docs:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DataError(f"cannot read data file {str(path)!r}: {e.strerror}") from None
            split = "heldout" if _is_heldout(rel, heldout_frac) else "train"
            (f_held if split == "heldout" else f_train).write(data + b"\n")
            digest.update(rel.encode() + b"\0" + data)
            counts[split] += len(data) + 1
            n_docs[split] += 1
    if counts["heldout"] == 0 or counts["train"] == 0:
        _split_tail(tmp, counts, heldout_frac)  # too few documents for a by-document split
    for split, path in tmp.items():
        os.replace(path, out_dir / f"{split}.bin")
    meta = {
        "format_version": FORMAT_VERSION,
        "tokenizer": "bytes",
        "vocab_size": 256,
        "dtype": "uint8",
        "n_train_tokens": counts["train"],
        "n_heldout_tokens": counts["heldout"],
        "n_train_documents": n_docs["train"],
        "n_heldout_documents": n_docs["heldout"],
        "heldout_rule": f"sha256(relative path) < {heldout_frac} (by document)",
        "sha256": digest.hexdigest(),
    }
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def _split_tail(tmp: dict[str, Path], counts: dict[str, int], heldout_frac: float) -> None:
    data = tmp["train"].read_bytes() + tmp["heldout"].read_bytes()
    cut = int(len(data) * (1 - heldout_frac))
    tmp["train"].write_bytes(data[:cut])
    tmp["heldout"].write_bytes(data[cut:])
    counts["train"], counts["heldout"] = cut, len(data) - cut


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


def prepare_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="harness prepare-data", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", type=Path, help="text files or directories (recursed)")
    p.add_argument("--out", type=Path, required=True, help="output dir; use it as data.source=DIR")
    p.add_argument("--heldout-frac", type=float, default=0.05)
    args = p.parse_args(argv)
    try:
        meta = prepare(args.inputs, args.out, args.heldout_frac)
    except DataError as e:
        print(f"harness prepare-data: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {meta['n_train_tokens']:,} train / {meta['n_heldout_tokens']:,} held-out byte tokens "
        f"({meta['n_train_documents']} / {meta['n_heldout_documents']} documents); use data.source={args.out}"
    )
    return 0
