"""``harness fit``: loss scaling laws with bootstrap intervals from run records or a CSV.

    harness fit results/sweep1                      # run records (heldout_loss by default)
    harness fit --csv runs.csv --columns "N=Model Size,C=Training FLOP,loss=loss"
    harness fit --example chinchilla                # the Chinchilla points, Epoch's refit

Writes fit.json, fit_table.csv and PNG plots to --out (default results/fit/) and prints the
table. Forms the data cannot support are reported as skipped with the reason; bad data
(NaN or non-positive values, missing columns) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.losslaw import (
    EPOCH_REFIT,
    EPOCH_REFIT_SE,
    PARAM_NAMES,
    LossLawError,
    as_positive,
    fit_chinchilla,
    fit_law,
    jsonable,
    leave_largest_out,
)

FORMS = ("chinchilla", "kaplan", "saturating", "isoflop", "envelope")
KAPLAN_LAWS = ("kaplan_N", "kaplan_D", "kaplan_ND")
MAPPING_KEYS = ("N", "D", "C", "loss", "group")
EXAMPLES = {
    "chinchilla": {
        "file": "chinchilla_epoch_svg_extracted.csv",
        "columns": {"N": "Model Size", "C": "Training FLOP", "loss": "loss"},
        "drop_highest_loss": 5,  # as Epoch's refit: the five highest-loss runs are outliers
    }
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump (see main)
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="harness fit",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("root", nargs="?", help="results folder with run records (record.json)")
    src.add_argument("--csv", type=Path, help="CSV file, one row per run")
    src.add_argument("--example", choices=sorted(EXAMPLES), help="a built-in data set")
    p.add_argument(
        "--columns",
        help="CSV column mapping, e.g. 'N=Model Size,C=Training FLOP,loss=loss' "
        "(keys: N, D or C, loss, optional group)",
    )
    p.add_argument("--loss-column", default=None, help="records: loss column (default heldout_loss)")
    p.add_argument(
        "--n-column", default="N", help="records: parameter-count column (default N, non-embedding)"
    )
    p.add_argument(
        "--group-by", default=None, help="fit each value of this column separately (dataset, seed, ...)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/fit"), help="output folder (default results/fit/)"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--target-compute",
        type=float,
        action="append",
        default=None,
        metavar="C",
        help="compute budget (FLOP) to predict at; repeatable (default: largest in data x1, x10, x100)",
    )
    p.add_argument(
        "--drop-highest-loss",
        type=int,
        default=None,
        metavar="K",
        help="drop the K highest-loss runs (per group) before fitting",
    )
    p.add_argument("--forms", default=",".join(FORMS), help=f"comma list from {','.join(FORMS)}")
    p.add_argument("--ci", type=float, default=0.9, help="central bootstrap interval (default 0.9: 5%%-95%%)")
    p.add_argument(
        "--span-dex",
        type=float,
        default=0.1,
        help="runs whose compute is within this many decades share an IsoFLOP budget (default 0.1)",
    )
    p.add_argument(
        "--holdout-frac",
        type=float,
        default=0.1,
        help="leave-largest-out: hold out the largest budgets, at least this fraction of runs",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--best-lr",
        action="store_true",
        help="records: keep only the best learning rate per (size, budget) of an LR sweep",
    )
    return p


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        return _run(args)
    except _UsageError as e:
        print(f"harness fit: usage error: {e} (see harness fit --help)", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (LossLawError, OSError) as e:
        print(f"harness fit: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ inputs


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


def table_from_frame(frame: Any, mapping: dict[str, str], source: str) -> Any:
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
        out["D"] = out["C"] / (6.0 * out["N"])
    out["C"] = 6.0 * out["N"] * out["D"]
    out["group"] = frame[mapping["group"]].astype(str) if "group" in mapping else "all"
    labels = {k: mapping[k] for k in ("N", "D", "C", "loss") if k in mapping}
    for key in ("N", "D", "loss"):
        name = f"{source}: column {labels.get(key, 'C / 6N')!r} ({key})"
        as_positive(name, out[key].to_numpy())  # raises naming the first bad row
    return out


def load_table(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The runs to fit (columns N, D, C, loss, group) and a description of where they came from."""
    import pandas as pd

    if args.example:
        from importlib.resources import files

        ex = EXAMPLES[args.example]
        path = files("harness") / "data" / ex["file"]
        with path.open() as f:
            frame = pd.read_csv(f)
        if args.drop_highest_loss is None:
            args.drop_highest_loss = ex["drop_highest_loss"]
        table = table_from_frame(frame, ex["columns"], f"example {args.example}")
        return table, {"source": f"example:{args.example}", "file": ex["file"], "columns": ex["columns"]}
    if args.csv:
        if not args.csv.is_file():
            raise LossLawError(f"--csv {args.csv}: no such file")
        mapping = parse_columns(args.columns)
        if args.group_by:
            mapping["group"] = args.group_by
        try:
            frame = pd.read_csv(args.csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise LossLawError(f"--csv {args.csv}: not a readable CSV ({type(e).__name__}: {e})") from None
        return table_from_frame(frame, mapping, str(args.csv)), {"source": str(args.csv), "columns": mapping}
    return _records_table(args)


def _records_table(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from harness.core.records import records_table

    root = Path(args.root)
    if not root.is_dir():
        raise LossLawError(f"results folder {root} does not exist")
    frame = records_table(root)
    if frame.empty:
        raise LossLawError(f"{root}: no completed training run records (record.json) found")
    loss_col = args.loss_column or "heldout_loss"
    if args.best_lr:  # a learning-rate sweep per size: keep each (size, budget)'s best run
        from harness.driver.lr_rules import select_best_lr

        frame = select_best_lr(frame, loss_col)
    for col, flag in ((loss_col, "--loss-column"), (args.n_column, "--n-column")):
        if col not in frame.columns:
            raise LossLawError(f"{flag} {col!r} is not a record column; columns found: {list(frame.columns)}")
    if args.group_by and args.group_by not in frame.columns:
        raise LossLawError(
            f"--group-by {args.group_by!r} is not a record column; columns found: {list(frame.columns)}"
        )
    for col in (args.n_column, "D", loss_col):  # name the run, not just the row
        vals = frame[col].astype(float)
        bad = ~np.isfinite(vals) | (vals <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise LossLawError(
                f"run {frame['path'].iloc[i]}: {col} = {frame[col].iloc[i]!r} "
                f"({int(bad.sum())} run(s) like it); allowed: finite values > 0"
                + ("; try --loss-column loss" if col == "heldout_loss" else "")
            )
    mapping = {"N": args.n_column, "D": "D", "loss": loss_col}
    if args.group_by:
        mapping["group"] = args.group_by
    return table_from_frame(frame, mapping, str(root)), {"source": str(root), "columns": mapping}


# ------------------------------------------------------------------ fitting


def _forms(spec: str) -> list[str]:
    forms = [f.strip() for f in spec.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise LossLawError(f"--forms {spec!r}: unknown {unknown}; allowed: {', '.join(FORMS)}")
    return forms


def _drop_highest(table: Any, k: int | None) -> Any:
    if not k:
        return table
    if k < 0:
        raise LossLawError(f"--drop-highest-loss {k} is not allowed; allowed: >= 0")
    return table.drop(table.nlargest(k, "loss").index)


def fit_group(
    data: dict[str, np.ndarray],
    forms: list[str],
    args: argparse.Namespace,
    targets: list[float],
    q: tuple[float, float],
) -> dict[str, Any]:
    """Every requested form on one group's runs; a form that cannot be fitted is skipped with its reason."""
    from harness.analysis import isoflop as iso

    N, D, loss = data["N"], data["D"], data["loss"]
    fits: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def attempt(name: str, fn: Any) -> None:
        try:
            fits[name] = fn()
        except LossLawError as e:
            skipped[name] = " ".join(str(e).split())

    B, seed = args.bootstrap, args.seed
    if "chinchilla" in forms:
        attempt("chinchilla", lambda: fit_chinchilla(N, D, loss, n_bootstrap=B, seed=seed))
    if "kaplan" in forms:
        for law in KAPLAN_LAWS:
            attempt(law, lambda law=law: fit_law(law, N=N, D=D, loss=loss, n_bootstrap=B, seed=seed, q=q))
    if "isoflop" in forms:
        attempt(
            "isoflop",
            lambda: iso.fit_isoflop(N, D, loss, span_dex=args.span_dex, n_bootstrap=B, seed=seed, q=q),
        )
    frontier = iso.pareto_frontier(data["C"], loss)
    if "envelope" in forms:
        attempt("envelope", lambda: iso.fit_envelope(N, D, loss, n_bootstrap=B, seed=seed))
    if "saturating" in forms:
        attempt(
            "saturating",
            lambda: fit_law(
                "saturating",
                C=data["C"][frontier],
                loss=loss[frontier],
                n_bootstrap=B,
                seed=seed,
                q=q,
                note="fitted to the lower-envelope (frontier) runs",
            ),
        )
        if "saturating" in skipped:
            skipped["saturating"] = f"on the lower-envelope runs: {skipped['saturating']}"
    validation = None
    if "chinchilla" in fits:
        try:
            validation = leave_largest_out(
                N,
                D,
                loss,
                holdout_frac=args.holdout_frac,
                span_dex=args.span_dex,
                full_fit=fits["chinchilla"],
            )
        except LossLawError as e:
            skipped["leave_largest_out"] = " ".join(str(e).split())
    return {"fits": fits, "skipped": skipped, "validation": validation, "frontier": frontier}


def _summary_rows(
    group: str, result: dict[str, Any], targets: list[float], q: tuple[float, float]
) -> list[dict]:
    """The flat table: one row per (form, quantity[, target compute])."""
    rows: list[dict] = []

    def row(
        form: str,
        quantity: str,
        s: dict | float,
        C: float = math.nan,
        extra: float = math.nan,
        note: str = "",
    ) -> None:
        s = s if isinstance(s, dict) else {"value": s}
        rows.append(
            {
                "group": group,
                "form": form,
                "quantity": quantity,
                "C": C,
                "value": s.get("value"),
                "se": s.get("se", math.nan),
                "lo": s.get("lo", math.nan),
                "hi": s.get("hi", math.nan),
                "extrapolation_oom": extra,
                "note": note,
            }
        )

    fits = result["fits"]
    if "chinchilla" in fits:
        f = fits["chinchilla"]
        for k, s in f.interval(q).items():
            row("chinchilla", k, s)
        row(
            "chinchilla",
            "objective",
            f.objective,
            note=f"bootstrap ok {f.n_bootstrap_ok}, failed {f.n_bootstrap_failed}",
        )
        for i, C in enumerate(targets):
            o = f.optimal(C, q)
            if i == 0:
                row("chinchilla", "a", o["a"])
                row("chinchilla", "b", o["b"])
            for k in ("N_opt", "D_opt", "tokens_per_param", "loss"):
                row("chinchilla", k, o[k], C, o["extrapolation_oom"])
    for law in (*KAPLAN_LAWS, "saturating"):
        if law in fits:
            f = fits[law]
            for k, v in f.params.items():
                row(law, k, {"value": v, "se": f.se.get(k, math.nan), **f.intervals.get(k, {})}, note=f.note)
            if law == "saturating":
                for C in targets:
                    b = f.predict_band(q, C=C)
                    row(law, "loss", {k: float(v[0]) for k, v in b.items()}, C, math.log10(C / f.x_max["C"]))
    for name in ("isoflop", "envelope"):
        if name in fits:
            f = fits[name]
            for i, C in enumerate(targets):
                o = f.optimal(C, q)
                if i == 0:
                    row(name, "a", o["a"], note=f.note)
                    row(name, "b", o["b"])
                for k in ("N_opt", "D_opt", "tokens_per_param"):
                    row(name, k, o[k], C, o["extrapolation_oom"])
    v = result["validation"]
    if v:
        note = f"fit on {v['n_train']} runs up to C={v['c_max_train']:.3g}, predict {v['n_test']} larger"
        for k, val in v["errors"].items():
            row("leave_largest_out", k, val, v["c_max_test"], v["extrapolation_oom"], note)
    for name, reason in result["skipped"].items():
        row(name, "skipped", math.nan, note=reason)
    return rows


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def format_table(rows: list[dict]) -> str:
    """Aligned text table: form, quantity, C, value [lo, hi], se, extrapolation."""
    header = ["group", "form", "quantity", "C", "value", "interval", "se", "extrap_oom"]
    lines = []
    for r in rows:
        interval = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if _fmt(r["lo"]) else ""
        if r["quantity"] == "skipped":
            lines.append([r["group"], r["form"], "skipped", "", r["note"], "", "", ""])
            continue
        lines.append(
            [
                r["group"],
                r["form"],
                r["quantity"],
                _fmt(r["C"]),
                _fmt(r["value"]),
                interval,
                _fmt(r["se"]),
                _fmt(r["extrapolation_oom"]),
            ]
        )
    fitted = [line for line in lines if line[2] != "skipped"]  # skipped rows carry a free-text reason
    widths = [max([len(h)] + [len(line[i]) for line in fitted]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for line in lines:
        if line[2] == "skipped":
            out.append(f"{line[0].ljust(widths[0])}  {line[1].ljust(widths[1])}  skipped: {line[4]}")
        else:
            out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
    return "\n".join(out)


def _group_json(
    result: dict[str, Any], data: dict[str, np.ndarray], targets: list[float], q: tuple[float, float]
) -> dict[str, Any]:
    fits = result["fits"]
    forms = {}
    for name, f in fits.items():
        forms[name] = f.to_dict(targets, q) if name in ("chinchilla", "isoflop", "envelope") else f.to_dict()
    return {
        "n_points": len(data["loss"]),
        "c_max": float(data["C"].max()),
        "targets": targets,
        "forms": forms,
        "skipped": result["skipped"],
        "validation": result["validation"],
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _plots(
    out: Path,
    group: str,
    data: dict[str, np.ndarray],
    result: dict[str, Any],
    targets: list[float],
    q: tuple[float, float],
    single: bool,
) -> list[str]:
    from harness.analysis import losslaw_plots as lp

    fits = result["fits"]
    suffix = "" if single else f"_{_safe(group)}"
    title = "" if single else f" ({group})"
    paths = [
        lp.plot_loss_vs_compute(
            out / f"loss_vs_compute{suffix}.png",
            data,
            chinchilla=fits.get("chinchilla"),
            saturating=fits.get("saturating"),
            frontier=result["frontier"],
            targets=tuple(targets),
            q=q,
            title=f"loss vs compute{title}",
        )
    ]
    if "isoflop" in fits:
        paths.append(
            lp.plot_isoflop(
                out / f"isoflop{suffix}.png", data, fits["isoflop"], title=f"IsoFLOP curves{title}"
            )
        )
    if any(k in fits for k in ("chinchilla", "isoflop", "envelope")):
        paths.append(
            lp.plot_allocation(
                out / f"optimal_allocation{suffix}.png",
                (float(data["C"].min()), float(data["C"].max())),
                chinchilla=fits.get("chinchilla"),
                isoflop=fits.get("isoflop"),
                envelope=fits.get("envelope"),
                targets=tuple(targets),
                q=q,
                title=f"compute-optimal N* and D*{title}",
            )
        )
    if "chinchilla" in fits:
        paths.append(
            lp.plot_residuals(
                out / f"residuals{suffix}.png", fits["chinchilla"], title=f"Chinchilla-fit residuals{title}"
            )
        )
    return [str(p) for p in paths]


def _reference_lines(fit: Any) -> list[str]:
    """Fitted vs Epoch's published refit (shown for --example chinchilla)."""
    lines = [
        "",
        "vs Epoch's published refit (Besiroglu et al. 2024):",
        f"  {'param':<6} {'fitted':>10} {'published':>10} {'diff':>8}   {'SE':>9} {'pub SE':>9} {'diff':>8}",
    ]
    for k in PARAM_NAMES:
        v, ref, se, ref_se = fit.params[k], EPOCH_REFIT[k], fit.se.get(k, math.nan), EPOCH_REFIT_SE[k]
        lines.append(
            f"  {k:<6} {v:>10.4g} {ref:>10.4g} {100 * (v / ref - 1):>7.1f}%   "
            f"{se:>9.4g} {ref_se:>9.4g} {100 * (se / ref_se - 1):>7.1f}%"
        )
    return lines


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    forms = _forms(args.forms)
    if args.bootstrap < 0:
        raise LossLawError(f"--bootstrap {args.bootstrap} is not allowed; allowed: >= 0")
    if not 0 < args.ci < 1:
        raise LossLawError(f"--ci {args.ci} is not allowed; allowed: 0 < ci < 1")
    for C in args.target_compute or []:
        if not (math.isfinite(C) and C > 0):
            raise LossLawError(f"--target-compute {C!r} is not allowed; allowed: finite FLOP > 0")
    q = ((1 - args.ci) / 2, (1 + args.ci) / 2)
    table, meta = load_table(args)
    out_json: dict[str, Any] = {
        **meta,
        "n_runs": len(table),
        "dropped_highest_loss": args.drop_highest_loss or 0,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "quantiles": list(q),
        "forms": forms,
        "groups": {},
    }
    rows: list[dict] = []
    plots: list[str] = []
    groups = sorted(table["group"].unique())
    args.out.mkdir(parents=True, exist_ok=True)
    any_fit = False
    for group in groups:
        sub = _drop_highest(table[table["group"] == group], args.drop_highest_loss)
        data = {k: sub[k].to_numpy(dtype=float) for k in ("N", "D", "C", "loss")}
        c_max = float(data["C"].max())
        targets = list(args.target_compute or [c_max, 10 * c_max, 100 * c_max])
        result = fit_group(data, forms, args, targets, q)
        any_fit |= bool(result["fits"])
        out_json["groups"][group] = _group_json(result, data, targets, q)
        rows += _summary_rows(group, result, targets, q)
        if not args.no_plots:
            plots += _plots(args.out, group, data, result, targets, q, single=len(groups) == 1)
        if args.example == "chinchilla" and "chinchilla" in result["fits"]:
            out_json["reference"] = {"epoch_refit": EPOCH_REFIT, "epoch_refit_se": EPOCH_REFIT_SE}
            reference = _reference_lines(result["fits"]["chinchilla"])
    out_json["plots"] = plots
    out_json["elapsed_s"] = time.perf_counter() - t0
    _write(args.out, out_json, rows)  # written even when nothing fitted: it records why
    if not any_fit:
        reasons = "; ".join(f"{r['form']}: {r['note']}" for r in rows if r["quantity"] == "skipped")
        raise LossLawError(f"no requested form could be fitted ({reasons})")
    print(format_table(rows))
    if args.example == "chinchilla" and "reference" in out_json:
        print("\n".join(reference))
    print(
        f"\nwrote {args.out / 'fit.json'}, {args.out / 'fit_table.csv'}"
        + (f" and {len(plots)} plot(s)" if plots else "")
        + f" in {out_json['elapsed_s']:.1f} s"
    )
    return 0


def _write(out: Path, out_json: dict[str, Any], rows: list[dict]) -> None:
    import pandas as pd

    from harness.core.io import atomic_write_text

    atomic_write_text(out / "fit.json", json.dumps(jsonable(out_json), indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "fit_table.csv", pd.DataFrame(rows).to_csv(index=False))
