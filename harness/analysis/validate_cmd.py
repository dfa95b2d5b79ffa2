"""``harness validate [--out DIR] [--results DIR] [--bootstrap N]``: replay published runs.

Every case of ``harness/data/published_runs.yaml`` is replayed through the throughput law
from its configuration with one hardware constant set per accelerator and one fitted
coefficient set; prints predicted vs published with the error of each and writes
validate.csv, validate.json and validate.md under --out (default ``results/validate/``).
Errors are given in-sample (the efficiency curve is fitted over all cases), leave-one-out
and leave-one-source-out. With --results, the law and the USL baseline are also validated
leave-largest-GPU-count-out on this harness's measured runs. Exit status 1 when the
target (median |error| <= 15%, max <= 30%, in-sample and leave-one-out) is missed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

FLAGS = {"--out": "out", "--results": "results", "--bootstrap": "bootstrap"}
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


def parse_args(argv: list[str]) -> dict[str, Any] | None:
    """Options from --flag value / --flag=value (or flag=value); None when help was asked for."""
    opts: dict[str, Any] = {"out": "results/validate", "results": None, "bootstrap": 0}
    it = iter(argv)
    for tok in it:
        if tok in ("-h", "--help"):
            return None
        key, _, val = tok.partition("=")
        if key.startswith("--") and key in FLAGS:
            val = val or next(it, "")
        elif not key.startswith("--") and f"--{key}" in FLAGS and val:
            key = f"--{key}"
        else:
            raise ValueError(f"unknown argument {tok!r}; allowed: {', '.join(FLAGS)}")
        if not val:
            raise ValueError(f"{key} needs a value")
        opts[FLAGS[key]] = int(val) if key == "--bootstrap" else val
    return opts


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}%"


def _val(x: float, metric: str) -> str:
    return f"{100 * x:.1f}%" if metric == "mfu" else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def markdown(
    rows: list[dict[str, Any]],
    summ: dict[str, Any],
    cal: dict[str, Any],
    command: str,
    measured: dict[str, Any] | None,
) -> str:
    c = cal["coefficients"]
    lines = [
        "# Throughput law vs published runs",
        "",
        f"Command: `{command}`",
        "",
        "| case | source | GPUs | layout | metric | published | predicted | error | LOO | LOSO | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = []
        if r["derived"]:
            notes.append("derived")
        if not r["in_target"]:
            notes.append("out of scope")
        if not r["memory_fits"]:
            notes.append(f"memory model: {r['memory_gb']:.0f} GB, does not fit")
        if r["note"]:
            notes.append(r["note"])
        lines.append(
            f"| {r['id']} | {r['source']} | {r['gpus']:,} x {r['gpu']} | {r['layout']} | {r['metric']} | "
            f"{_val(r['published'], r['metric'])} | {_val(r['predicted'], r['metric'])} | {_pct(r['error'])} | "
            f"{_pct(r['loo_error'])} | {_pct(r['loso_error'])} | {'; '.join(notes)} |"
        )
    lines += [
        "",
        f"**In-target cases: {summ['n_cases']}** ({summ['n_out_of_scope']} more replayed but out of scope). "
        f"Target: median |error| <= {100 * summ['target']['median_abs_error']:.0f}%, max <= "
        f"{100 * summ['target']['max_abs_error']:.0f}%.",
        "",
        "| errors | median abs | max abs | worst case |",
        "|---|---|---|---|",
        f"| in-sample (coefficients fitted over all in-target cases) | {100 * summ['median_abs_error']:.1f}% | "
        f"{100 * summ['max_abs_error']:.1f}% | {summ['worst_case']} |",
    ]
    if "loo_median_abs_error" in summ:
        lines.append(
            f"| leave-one-case-out | {100 * summ['loo_median_abs_error']:.1f}% | "
            f"{100 * summ['loo_max_abs_error']:.1f}% | {summ['loo_worst_case']} |"
        )
    if "loso_median_abs_error" in summ:
        lines.append(
            f"| leave-one-source-out (a paper's rows predicted from the other papers) | "
            f"{100 * summ['loso_median_abs_error']:.1f}% | {100 * summ['loso_max_abs_error']:.1f}% | "
            f"{summ['loso_worst_case']} |"
        )
    lines += [
        "",
        f"Target met (in-sample and leave-one-out): **{'yes' if summ['meets_target'] and summ.get('loo_meets_target', True) else 'no'}**.",
        "",
        f"Fitted once over all in-target cases (least squares on log(predicted/published)): matmul efficiency "
        f"e_mm = {c['e_mm']:.3f} of the dense peak, memory-bound traffic {c['mem_bytes']:.0f} bytes per token per layer "
        f"per unit of per-GPU width (at each chip's HBM bandwidth). Fixed, not fitted: overlap {c['overlap']:g}, "
        f"NVLink/ICI busbw {c['intra_bw_eff']:g} and NIC busbw {c['inter_bw_eff']:g} of nominal, straggler cv "
        f"{c['straggler_cv']:g}. Hardware: one datasheet constant set per accelerator (hardware_specs.py).",
        "",
        "Memory: the memory model (Korthikanti et al. 2022 activations, ZeRO states) is reported, not enforced, "
        f"for these runs that did happen; it rejects: {', '.join(summ['memory_model_rejects']) or 'none'}.",
        "",
        "Caveat: the law's structure (ZeRO-3 gathers as flat rings, TP traffic on the critical path, torchtitan's "
        "op-level recomputation, the scope excluding unfused eager kernels) was settled while looking at these "
        "cases, so even the held-out errors are not a clean out-of-sample test; leave-one-source-out is the "
        "closest to one. Layout details a paper does not give are assumptions listed per group in "
        "harness/data/published_runs.yaml.",
    ]
    if measured:
        lines += ["", "## This harness's measured runs (leave-largest-GPU-count-out)", ""]
        if "error" in measured:
            lines.append(measured["error"])
        else:
            lines.append(
                f"Held out: world size {measured['held_out_world_size']}; median |error| grey-box "
                f"{_pct(measured.get('median_abs_greybox_error'))}, USL {_pct(measured.get('median_abs_usl_error'))}."
            )
            lines += [
                "",
                "| model | tokens/device/step | measured tokens/s | grey-box | error | USL | error |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in measured["rows"]:
                lines.append(
                    f"| {r['model']} | {r['tokens_per_device_per_step']} | {r['measured_tokens_per_s']:.4g} | "
                    f"{r.get('greybox_tokens_per_s', float('nan')):.4g} | {_pct(r.get('greybox_error'))} | "
                    f"{r.get('usl_tokens_per_s', float('nan')):.4g} | {_pct(r.get('usl_error'))} |"
                )
    return "\n".join(lines) + "\n"


def run(opts: dict[str, Any], command: str) -> tuple[dict[str, Any], str]:
    from harness.analysis import published

    cases = published.load_cases()
    cal = published.calibrate(cases, n_bootstrap=int(opts["bootstrap"]))
    rows = published.replay(cases, cal)
    summ = published.summary(rows)
    measured = None
    if opts["results"]:
        from harness.analysis.throughput import leave_largest_out
        from harness.core.records import records_table

        table = records_table(opts["results"])
        try:
            measured = (
                leave_largest_out(table) if not table.empty else {"error": "no completed training records"}
            )
        except (ValueError, KeyError) as e:
            measured = {"error": f"leave-largest-out not possible: {e}"}
    doc = {
        "command": command,
        "summary": summ,
        "calibration": cal.to_dict(),
        "rows": rows,
        "citations": {k.source: k.citation for k in cases},
        "measured_leave_largest_out": measured,
    }
    return doc, markdown(rows, summ, cal.to_dict(), command, measured)


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
    except ValueError as e:
        print(f"harness validate: {e}", file=sys.stderr)
        return 2
    if opts is None:
        print(__doc__)
        return 0
    command = "harness validate " + " ".join(argv)
    doc, md = run(opts, command.strip())
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "validate.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(doc["rows"])
    (out / "validate.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    (out / "validate.md").write_text(md)
    print(md)
    print(f"wrote {out / 'validate.csv'}, {out / 'validate.json'} and {out / 'validate.md'}")
    s = doc["summary"]
    return 0 if s["meets_target"] and s.get("loo_meets_target", True) else 1
