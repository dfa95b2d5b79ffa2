"""``harness validate [--out DIR] [--results DIR] [--bootstrap N]``: replay published runs.

Every case of ``harness/data/published_runs.yaml`` is replayed through the throughput law
from its configuration with one hardware constant set per accelerator and one fitted
coefficient set; prints predicted vs published with the error of each and writes
validate.csv, validate.json and validate.md under --out. Errors are given in-sample (the
efficiency curve is fitted over all cases), leave-one-out and leave-one-source-out. With
--results, the law and the USL baseline are also validated leave-largest-GPU-count-out on
this harness's measured runs. Exit status 1 when the target (median |error| <= 15%,
max <= 30%, in-sample and leave-one-out) is missed, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from harness.analysis.throughput.validation import meets_target, validate
from harness.core.io import atomic_write_text, write_json
from harness.report.validate_md import markdown

FLAGS = ("--out", "--results", "--bootstrap")
CSV_COLUMNS = (
    "id",
    "source",
    "gpu",
    "gpus",
    "layout",
    "global_batch",
    "metric",
    "published",
    "predicted",
    "error",
    "loo_error",
    "loso_error",
    "in_target",
    "derived",
    "memory_fits",
    "memory_gb",
    "share_compute",
    "share_bubble",
    "share_tp",
    "share_pp",
    "share_dp",
    "note",
)


def parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="harness validate",
        description=doc.split("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="results/validate", metavar="DIR", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--results", default=None, metavar="DIR", help="completed runs to validate leave-largest-out on"
    )
    p.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="bootstrap refits of the coefficients"
    )
    return p


def _flag_form(argv: list[str]) -> list[str]:
    """``out=DIR`` (the key=value form the other commands take) as ``--out=DIR``."""
    out = []
    for tok in argv:
        key, eq, _ = tok.partition("=")
        out.append(f"--{tok}" if eq and not key.startswith("-") and f"--{key}" in FLAGS else tok)
    return out


def rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    try:
        args, extra = parser().parse_known_args(_flag_form(argv))
    except SystemExit as e:  # --help, or a flag argparse could not read (it has printed why)
        return int(e.code or 0)
    if extra:
        print(
            f"harness validate: unknown argument {extra[0]!r}; allowed: {', '.join(FLAGS)}",
            file=sys.stderr,
        )
        return 2
    command = ("harness validate " + " ".join(argv)).strip()
    doc = validate(bootstrap=args.bootstrap, results=args.results, command=command)
    md = markdown(doc)
    out = Path(args.out)
    atomic_write_text(out / "validate.csv", rows_csv(doc["rows"]))
    write_json(out / "validate.json", doc)
    atomic_write_text(out / "validate.md", md)
    print(md)
    print(f"wrote {out / 'validate.csv'}, {out / 'validate.json'} and {out / 'validate.md'}")
    return 0 if meets_target(doc) else 1
