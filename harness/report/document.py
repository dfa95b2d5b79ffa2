"""The scaling report: one Markdown file with the plots a researcher would put in a paper.

It only reads what the other steps wrote: run records (a sweep folder), commbench records,
and the output folders of ``harness fit``, ``harness validate`` and ``harness extrapolate``.
A missing input becomes a line in the report saying what is missing, not a crash.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.io import atomic_write_text
from harness.core.records import records_table


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def runs_section(results: Path) -> tuple[list[str], Any]:
    df = records_table(results, status=None)
    if df.empty:
        return [f"No run records under `{results}`."], df
    done = df[df["status"] == "completed"]
    lines = [
        f"{len(df)} runs under `{results}`: {len(done)} completed, {len(df) - len(done)} not "
        f"({', '.join(sorted(set(df['status']) - {'completed'})) or 'none'}).",
        "",
        "| run | N (non-emb.) | world | tokens | train loss | held-out loss | tokens/s | MFU | peak used |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.sort_values(["N", "D", "world_size"]).iterrows():
        if r["status"] != "completed":
            lines.append(
                f"| {r['run_id']} | {r['N'] or ''} | {r['world_size'] or ''} | | {r['status']} | | | | |"
            )
            continue
        lines.append(
            f"| {r['run_id']} | {r['N']:,} | {r['world_size']} | {r['D']:,} | {r['loss']:.3f} | "
            f"{r['heldout_loss']:.3f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['peak_source']} |"
        )
    return lines, done


def throughput_section(done, out: Path) -> list[str]:
    """Measured tokens/s per device vs process count, with the fitted step-time law and its band."""
    if done.empty or done["world_size"].nunique() < 2:
        return ["Fewer than two process counts were measured: no throughput-vs-scale plot."]
    from harness.analysis import throughput

    lines: list[str] = []
    fig = _figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    series = done.groupby(["model", "tokens_per_device_per_step"])
    for (model, tpd), g in series:
        if g["world_size"].nunique() < 2:
            continue
        g = g.sort_values("world_size")
        base = g.iloc[0]
        eff = (g["tokens_per_s"] / g["world_size"]) / (base["tokens_per_s"] / base["world_size"])
        ax1.plot(g["world_size"], g["tokens_per_s_per_device"], "o", label=f"{model} measured")
        ax2.plot(g["world_size"], eff, "o-", label=f"{model} measured")
        try:
            fit = throughput.fit_measured(g, n_bootstrap=200)
            n = np.arange(1, int(g["world_size"].max()) * 2 + 1)
            pred = fit.predict(
                n,
                np.full(n.shape, tpd),
                np.full(n.shape, base["flops_per_token"]),
                np.full(n.shape, base["N_total"]),
            )
            rate = tpd / pred["value"]
            ax1.plot(n, rate, "-", label=f"{model} step-time law")
            if "lo" in pred:
                ax1.fill_between(n, tpd / pred["hi"], tpd / pred["lo"], alpha=0.2)
            lines.append(
                f"- {model}: step-time law fitted on {fit.n_points} runs, relative RMSE {fit.rel_rmse:.1%}; "
                f"parameters {', '.join(f'{k}={v:.3g}' for k, v in fit.params.items())}."
            )
        except Exception as e:  # too few points for the law's parameters: say so, keep the measured points
            lines.append(f"- {model}: step-time law not fitted ({type(e).__name__}: {e}).")
    ax1.set(xlabel="processes (CPU ranks)", ylabel="tokens/s per process", title="Throughput per device")
    ax2.set(xlabel="processes (CPU ranks)", ylabel="weak-scaling efficiency", title="Efficiency vs 1 process")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput_measured.png")
    try:
        llo = throughput.leave_largest_out(done)
        for r in llo["rows"]:
            parts = [
                f"{name} {r[key]:+.1%}"
                for name, key in (("grey-box law", "greybox_error"), ("USL", "usl_error"))
                if key in r
            ]
            lines.append(
                f"- Leave-largest-process-count-out, {r['model']} at n = {llo['held_out_world_size']}: "
                f"measured {r['measured_tokens_per_s']:,.0f} tokens/s; predicted error "
                + (", ".join(parts) or "none (" + r.get("usl_note", "") + ")")
                + "."
            )
    except Exception as e:
        lines.append(f"- Leave-largest-out validation not possible here ({type(e).__name__}: {e}).")
    return ["![measured throughput](throughput_measured.png)", "", *lines]


def scaling_curve_section(ex: dict, out: Path) -> list[str]:
    rows = [r for r in ex.get("scaling", {}).get("rows", []) if r.get("feasible")]
    if not rows:
        return ["No feasible point on the predicted scaling curve."]
    n = np.array([r["n_gpus"] for r in rows])
    fig = _figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for ax, key, label in ((ax1, "mfu", "MFU"), (ax2, "efficiency", "scaling efficiency")):
        v = np.array([r[key]["value"] for r in rows])
        lo = np.array([r[key].get("lo", np.nan) for r in rows])
        hi = np.array([r[key].get("hi", np.nan) for r in rows])
        ax.plot(n, v, "o-", label="throughput law")
        ax.fill_between(n, lo, hi, alpha=0.25, label="90% interval")
        ax.set_xscale("log")
        model = ex.get("inputs", {}).get("model") or ex["model"].get("name", "model")
        ax.set(xlabel="GPUs", ylabel=label, title=f"{model} on {ex['cluster']['gpu']} (predicted)")
        ax.grid(alpha=0.3)
    ax2.axhline(0.9, color="grey", ls="--", lw=0.8, label="90%")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scaling_curve.png")
    below = ex["scaling"].get("first_below_90pct")
    return [
        "![predicted scaling](scaling_curve.png)",
        "",
        f"Efficiency is relative to {ex['scaling'].get('reference_gpus')} GPUs; it first drops below 90% at "
        f"{below if below else 'no GPU count in the range'}.",
    ]


def commbench_section(root: Path, out: Path) -> list[str]:
    from harness.analysis.throughput.collectives import load_commbench

    try:
        df = load_commbench(root)
    except Exception as e:
        return [f"No communication benchmark read from `{root}` ({type(e).__name__}: {e})."]
    if df.empty:
        return [f"No communication benchmark under `{root}`: run `harness commbench`."]
    fig = _figure()
    ax = fig.subplots()
    for (op, ws, backend), g in df.groupby(["op", "world_size", "backend"]):
        g = g.sort_values("size_bytes")
        ax.plot(g["size_bytes"], g["busbw_Bps"] / 1e9, "o-", ms=3, label=f"{op} n={ws} {backend}")
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="message size (bytes)",
        ylabel="bus bandwidth (GB/s)",
        title="Collective bus bandwidth (nccl-tests definition)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "busbw.png")
    best = df.loc[df.groupby("op")["busbw_Bps"].idxmax()]
    lines = [
        "![bus bandwidth](busbw.png)",
        "",
        "| op | backend | device | world | best busbw | at size |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['op']} | {r['backend']} | {r['device']} | {r['world_size']} | {r['busbw_Bps'] / 1e9:.2f} GB/s | "
        f"{int(r['size_bytes']):,} B |"
        for _, r in best.iterrows()
    ]
    return lines


def fit_section(fit_dir: Path, out: Path) -> list[str]:
    fit_json = fit_dir / "fit.json"
    if not fit_json.exists():
        return [f"No loss-law fit in `{fit_dir}`: run `harness fit`."]
    fit = json.loads(fit_json.read_text())
    lines = []
    for png in ("loss_vs_compute.png", "isoflop.png", "optimal_allocation.png", "residuals.png"):
        if (fit_dir / png).exists():
            shutil.copy(fit_dir / png, out / f"fit_{png}")
            lines += [f"![{png[:-4]}](fit_{png})", ""]
    table = fit_dir / "fit_table.csv"
    if table.exists():
        import pandas as pd

        t = pd.read_csv(table)
        keep = t[t["form"].isin(["chinchilla", "isoflop", "envelope", "saturating", "leave_largest_out"])]
        lines += [
            "| group | form | quantity | at C | value | 90% interval | extrapolation (orders of C) |",
            "|---|---|---|---|---|---|---|",
        ]
        for _, r in keep.iterrows():
            iv = f"[{r['lo']:.4g}, {r['hi']:.4g}]" if np.isfinite(r["lo"]) else ""
            c = f"{r['C']:.3g}" if np.isfinite(r["C"]) else ""
            oom = f"{r['extrapolation_oom']:.2f}" if np.isfinite(r["extrapolation_oom"]) else ""
            lines.append(
                f"| {r['group']} | {r['form']} | {r['quantity']} | {c} | {r['value']:.4g} | {iv} | {oom} |"
            )
    for group, g in (fit.get("groups") or {}).items():
        lines += [f"- {group}: form {name} skipped: {why}" for name, why in (g.get("skipped") or {}).items()]
    return lines


def include(path: Path, what: str, command: str) -> list[str]:
    if not path.exists():
        return [f"No {what} in `{path.parent}`: run `{command}`."]
    text = path.read_text().strip().splitlines()
    # Demote headings so they nest under the report's own.
    return [("#" + line) if line.startswith("#") else line for line in text]


def build(
    results: Path, commbench: Path, fit_dir: Path, validate_dir: Path, extrapolate_dir: Path, out: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    ex_path = extrapolate_dir / "extrapolate.json"
    ex = json.loads(ex_path.read_text()) if ex_path.exists() else None
    runs, done = runs_section(results)
    doc = [
        "# Scaling report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `harness report` from `{results}`.",
        "",
        "## 1. The runs", "", *runs, "",
        "## 2. Loss vs compute", "", *fit_section(fit_dir, out), "",
        "## 3. Throughput vs process count (measured here)", "", *throughput_section(done, out), "",
        "## 4. Communication", "", *commbench_section(commbench, out), "",
        "## 5. Published runs replayed through the throughput law", "",
        *include(validate_dir / "validate.md", "replay", "harness validate"), "",
        "## 6. The 100k-GPU extrapolation", "",
        *(scaling_curve_section(ex, out) if ex else []), "",
        *include(extrapolate_dir / "extrapolate.md", "extrapolation", "harness extrapolate cluster=colossus"), "",
    ]  # fmt: skip
    path = out / "report.md"
    atomic_write_text(path, "\n".join(doc) + "\n")
    return path
