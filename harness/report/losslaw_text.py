"""Text and Markdown for the loss-law commands: ``harness fit``, ``compare-fits``, ``critical-batch``."""

from __future__ import annotations

import math
from typing import Any

from harness.analysis.compare_fits import QUANTITIES
from harness.analysis.critical_batch import CriticalBatchFit
from harness.analysis.losslaw import EPOCH_REFIT, EPOCH_REFIT_SE, PARAM_NAMES, ChinchillaFit


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def fit_table(rows: list[dict]) -> str:
    """Aligned text table of ``harness fit``'s rows: form, quantity, C, value [lo, hi], se, extrapolation."""
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


def epoch_reference(fit: ChinchillaFit) -> list[str]:
    """Fitted vs Epoch's published refit (shown for ``harness fit --example chinchilla``)."""
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


def compare_markdown(res: dict[str, Any]) -> str:
    """``harness compare-fits``'s two tables: the sweeps, then every interval with its width ratio."""
    first = next(iter(res["sweeps"]))
    lines = ["| sweep | runs | total compute (6ND) | largest run C |", "|---|---|---|---|"]
    lines += [
        f"| {n} | {s['runs']} | {s['total_compute_6nd']:.3g} | {s['c_max']:.3g} |"
        for n, s in res["sweeps"].items()
    ]
    lines += [
        "",
        f"| C | quantity | sweep | value | 90% interval | width | width / {first}'s | orders of C beyond data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["C"], QUANTITIES.index(r["quantity"]))):
        unit = " dec" if r["quantity"] in ("N_opt", "D_opt") else ""
        if r["lo"] is not None and math.isfinite(r["lo"]):
            iv = f"[{r['lo']:.3g}, {r['hi']:.3g}]"
        else:  # too many resamples without an interior optimum: no finite interval
            iv = (
                f"unbounded ({r['undefined_frac']:.0%} of resamples undefined)"
                if r.get("undefined_frac")
                else "n/a"
            )
        lines.append(
            f"| {r['C']:.3g} | {r['quantity']} | {r['sweep']} | {r['value']:.3g} | {iv} | "
            f"{r['width']:.3g}{unit} | {r['width_vs_' + first]:.2f} | {r['extrapolation_oom']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def critical_batch_lines(law: CriticalBatchFit, predictions: list[dict[str, Any]]) -> list[str]:
    """The fitted B_crit(L) with its 90% intervals, then one line per predicted loss."""
    iv = law.interval()
    lines = [
        f"B_crit(L) = B* / L^(1/alpha_B): B* = {law.B_star:.3g} tokens [{iv['B_star']['lo']:.3g}, "
        f"{iv['B_star']['hi']:.3g}], alpha_B = {law.alpha_B:.3g} [{iv['alpha_B']['lo']:.3g}, {iv['alpha_B']['hi']:.3g}]"
        f" (90%), L in {law.loss_unit}; {law.source}"
    ]
    for pr in predictions:
        lines.append(
            f"  L = {pr['loss']:.4g}: B_crit = {pr['value']:.4g} tokens [{pr['lo']:.4g}, {pr['hi']:.4g}]"
            + (
                f" (extrapolated x{pr['loss_factor_beyond_data']:.2f} beyond the fitted losses)"
                if pr["extrapolated"]
                else ""
            )
        )
    return lines
