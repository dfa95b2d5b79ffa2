"""Building a prepared token dir: byte-tokenise text files, split by document into train and held-out.

Held-out documents are chosen by a hash of their path, so training never sees them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harness.core.io import write_json
from harness.datasets.format import FORMAT_VERSION, META_FILE, SPLITS, DataError


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
    counts = dict.fromkeys(SPLITS, 0)
    n_docs = dict.fromkeys(SPLITS, 0)
    # Per-process temp names: ranks that prepare the same dir at once each replace atomically.
    tmp = {split: out_dir / f".{split}.bin.{os.getpid()}.tmp" for split in SPLITS}
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
    write_json(out_dir / META_FILE, meta)
    return meta


def _split_tail(tmp: dict[str, Path], counts: dict[str, int], heldout_frac: float) -> None:
    data = tmp["train"].read_bytes() + tmp["heldout"].read_bytes()
    cut = int(len(data) * (1 - heldout_frac))
    tmp["train"].write_bytes(data[:cut])
    tmp["heldout"].write_bytes(data[cut:])
    counts["train"], counts["heldout"] = cut, len(data) - cut
