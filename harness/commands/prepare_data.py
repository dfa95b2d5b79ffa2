"""``harness prepare-data FILES... --out DIR``: text files -> a prepared (memory-mapped) token dir."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.datasets import DataError, prepare


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="harness prepare-data",
        description="Byte-tokenise text files into train.bin / heldout.bin / meta.json (split by document).",
    )
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
