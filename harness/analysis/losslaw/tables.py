"""The runs a loss law is fitted to: run records, a CSV or a built-in data set, as one checked table.

Every source becomes a table with columns N, D, C (= 6ND), loss and group, with each value
checked (finite, > 0) and the first bad one named by its column (and run, for records).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.analysis.losslaw.inputs import LossLawError, as_positive
from harness.core.flops import tokens_from_6nd, training_flops_6nd

if TYPE_CHECKING:
    import pandas as pd

MAPPING_KEYS = ("N", "D", "C", "loss", "group")
EXAMPLES: dict[str, dict[str, Any]] = {
    "chinchilla": {
        "file": "chinchilla_epoch_svg_extracted.csv",
        "columns": {"N": "Model Size", "C": "Training FLOP", "loss": "loss"},
        "drop_highest_loss": 5,  # as Epoch's refit: the five highest-loss runs are outliers
    }
}


def parse_columns(spec: str | None) -> dict[str, str]:
    """'N=Model Size,C=Training FLOP,loss=loss' -> {"N": "Model Size", ...}; keys checked."""
    if not spec:
        return {}
    mapping = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not key or not col:
            raise LossLawError(
                f"--columns entry {part!r} is not KEY=COLUMN; allowed keys: {', '.join(MAPPING_KEYS)}"
            )
        if key not in MAPPING_KEYS:
            raise LossLawError(f"--columns key {key!r} is not known; allowed keys: {', '.join(MAPPING_KEYS)}")
        mapping[key] = col
    return mapping


def _expected() -> str:
    return "N, loss and D or C (map them with --columns 'N=...,C=...,loss=...')"


def table_from_frame(frame: pd.DataFrame, mapping: dict[str, str], source: str) -> pd.DataFrame:
    """Rename mapped columns to N, D, loss (D = C / 6N when only C is given) and check them."""
    import pandas as pd

    found = list(frame.columns)
    mapping = dict(mapping)
    for key in ("N", "D", "C", "loss"):  # unmapped keys default to a column of that name
        if key not in mapping and key in found:
            mapping[key] = key
    missing_cols = [f"{k}={c!r}" for k, c in mapping.items() if c not in found]
    if missing_cols:
        raise LossLawError(
            f"{source}: mapped column(s) {', '.join(missing_cols)} not found; "
            f"columns found: {found}; expected: {_expected()}"
        )
    lacking = [k for k in ("N", "loss") if k not in mapping]
    if "D" not in mapping and "C" not in mapping:
        lacking.append("D or C")
    if lacking:
        raise LossLawError(
            f"{source}: no column for {', '.join(lacking)}; columns found: {found}; expected: {_expected()}"
        )
    out = pd.DataFrame(index=frame.index)
    for key in ("N", "loss", "D", "C"):
        if key in mapping:
            out[key] = pd.to_numeric(frame[mapping[key]], errors="coerce")
    if "D" not in out:
        out["D"] = tokens_from_6nd(out["C"], out["N"])
    out["C"] = training_flops_6nd(out["N"], out["D"])
    out["group"] = frame[mapping["group"]].astype(str) if "group" in mapping else "all"
    labels: dict[str, str] = {k: mapping[k] for k in ("N", "D", "C", "loss") if k in mapping}
    for key in ("N", "D", "loss"):
        name = f"{source}: column {labels.get(key, 'C / 6N')!r} ({key})"
        as_positive(name, out[key].to_numpy())  # raises naming the first bad row
    return out


def example_table(name: str) -> tuple[pd.DataFrame, dict[str, Any], int]:
    """A built-in data set: the table, where it came from, and how many highest-loss runs to drop."""
    from importlib.resources import files

    import pandas as pd

    ex = EXAMPLES[name]
    with (files("harness") / "data" / ex["file"]).open() as f:
        frame = pd.read_csv(f)
    table = table_from_frame(frame, ex["columns"], f"example {name}")
    meta = {"source": f"example:{name}", "file": ex["file"], "columns": ex["columns"]}
    return table, meta, ex["drop_highest_loss"]


def csv_table(
    path: Path, columns: str | None = None, group_by: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A CSV with one row per run; ``columns`` maps N, D or C, loss (and group) to its columns."""
    import pandas as pd

    if not path.is_file():
        raise LossLawError(f"--csv {path}: no such file")
    mapping = parse_columns(columns)
    if group_by:
        mapping["group"] = group_by
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise LossLawError(f"--csv {path}: not a readable CSV ({type(e).__name__}: {e})") from None
    return table_from_frame(frame, mapping, str(path)), {"source": str(path), "columns": mapping}


def records_fit_table(
    root: Path,
    *,
    loss_column: str | None = None,
    n_column: str = "N",
    group_by: str | None = None,
    best_lr: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The completed training runs under ``root`` (heldout_loss by default); a bad value names its run.

    ``best_lr`` keeps only the best learning rate per (size, budget) of an LR sweep.
    """
    from harness.core.records import records_table

    if not root.is_dir():
        raise LossLawError(f"results folder {root} does not exist")
    frame = records_table(root)
    if frame.empty:
        raise LossLawError(f"{root}: no completed training run records (record.json) found")
    loss_col = loss_column or "heldout_loss"
    if best_lr:  # a learning-rate sweep per size: keep each (size, budget)'s best run
        from harness.analysis.best_lr import select_best_lr

        frame = select_best_lr(frame, loss_col)
    for col, flag in ((loss_col, "--loss-column"), (n_column, "--n-column")):
        if col not in frame.columns:
            raise LossLawError(f"{flag} {col!r} is not a record column; columns found: {list(frame.columns)}")
    if group_by and group_by not in frame.columns:
        raise LossLawError(
            f"--group-by {group_by!r} is not a record column; columns found: {list(frame.columns)}"
        )
    for col in (n_column, "D", loss_col):  # name the run, not just the row
        vals = frame[col].astype(float)
        bad = ~np.isfinite(vals) | (vals <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise LossLawError(
                f"run {frame['path'].iloc[i]}: {col} = {frame[col].iloc[i]!r} "
                f"({int(bad.sum())} run(s) like it); allowed: finite values > 0"
                + ("; try --loss-column loss" if col == "heldout_loss" else "")
            )
    mapping = {"N": n_column, "D": "D", "loss": loss_col}
    if group_by:
        mapping["group"] = group_by
    return table_from_frame(frame, mapping, str(root)), {"source": str(root), "columns": mapping}
