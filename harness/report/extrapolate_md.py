"""The Markdown summary of an extrapolation (``harness extrapolate``'s extrapolate.md and stdout).

``markdown(res)`` renders the result dict of ``harness.analysis.extrapolate_run.build``:
the headline table with intervals and extrapolation distances, the scaling table, and the
critical-batch and measured-runs sections when the result has them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _fmt(x: float | None, unit: str = "", pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    if abs(x) >= 1e4 or (abs(x) < 1e-2 and x != 0):
        return f"{x:.3g}{unit}"
    return f"{x:,.3g}{unit}" if abs(x) < 100 else f"{x:,.0f}{unit}"


def _iv(d: dict[str, float] | None, unit: str = "", pct: bool = False) -> tuple[str, str]:
    if not d:
        return "n/a", ""
    return _fmt(d["value"], unit, pct), f"{_fmt(d['lo'], unit, pct)} to {_fmt(d['hi'], unit, pct)}"


def _oom(x: float | None, what: str) -> str:
    return "" if x is None else f"{x:+.1f} OOM vs {what}"


def _measured_law_lines(m: dict[str, Any] | None) -> list[str]:
    if not m:
        return []
    return [
        f"The measured runs' own law ({m['source']}) would say: N* {_fmt(m['N_opt']['value'])}, "
        f"D* {_fmt(m['D_opt']['value'])}, loss {_fmt(m['loss']['value'])}, from "
        f"{m['extrapolation_oom_C']:.1f} orders of magnitude beyond its largest run: not trusted."
    ]


def markdown(res: Mapping[str, Any], opts: Mapping[str, Any] | None = None) -> str:
    """The summary; ``opts`` (default: the result's own ``inputs``) names the model and cluster presets."""
    opts = res["inputs"] if opts is None else opts
    q = res["quantiles"]
    lvl = f"{round(100 * (q[1] - q[0]))}%"
    thr, ll, gp, ttt = res["throughput"], res["loss_law"], res["goodput"], res["time_to_train"]
    n = res["cluster"]["n_gpus"]
    lines = [
        f"# Extrapolation: {opts['model']} on {opts['cluster']} ({n:,} x {res['cluster']['gpu']}), {res['days']:g} days",
        "",
        *([f"Command: `{res['command']}`", ""] if res.get("command") else []),
        f"| quantity | value | {lvl} interval | extrapolation |",
        "|---|---|---|---|",
    ]

    def row(name: str, d: dict | None, unit: str = "", pct: bool = False, ext: str = "") -> None:
        v, iv = _iv(d, unit, pct)
        lines.append(f"| {name} | {v} | {iv} | {ext} |")

    ext = [
        _oom(thr["extrapolation_oom_gpus_vs_published"], "largest published run"),
        _oom(thr["extrapolation_oom_gpus_vs_measured"], "largest measured run"),
    ]
    row(f"MFU at {n:,} GPUs", thr["mfu"], pct=True, ext="; ".join(e for e in ext if e))
    row("tokens/s (cluster)", thr["tokens_per_s"])
    row("tokens/s per GPU", thr["tokens_per_s_per_gpu"])
    row(f"FLOP budget, {res['days']:g} days at that MFU", res["budget_flops"])
    lines.append(
        f"| goodput (MTBF {gp['mtbf_s'] / 60:.0f} min, checkpoint every {gp['checkpoint_interval_s'] / 60:.1f} "
        f"min) | {_fmt(gp['goodput'], pct=True)} | checkpoint {gp['checkpoint_s']:g} s, restart "
        f"{gp['restart_s']:g} s (assumed) | |"
    )
    row("delivered FLOPs (budget x goodput) = C", res["delivered_flops"])
    row("compute-optimal N*", ll["N_opt"], ext=_oom(ll["extrapolation_oom_N"], "largest N fitted"))
    row("compute-optimal D* (tokens)", ll["D_opt"], ext=_oom(ll["extrapolation_oom_D"], "largest D fitted"))
    row("predicted loss at N*, D*", ll["loss"], ext=_oom(ll["extrapolation_oom_C"], "largest C fitted"))
    if "days" in ttt:
        row(f"time to train N* on D* ({ttt['layout']})", ttt["days"], unit=" d")
    lines += [
        "",
        f"Assumed layout at {n:,} GPUs: {thr['explanation']}.",
        "",
        f"Compute rate: {res['compute_rate_source']}.",
        f"Straggler jitter cv = {res['calibration']['coefficients']['straggler_cv']:g} "
        f"({'given' if opts.get('straggler_cv') is not None else 'the published replays show no straggler signal; set straggler_cv= to add one'}).",
        f"Loss law ({ll.get('selection', '')}): {ll['source']}; loss interval from the loss law's bootstrap at the point budget "
        f"(at the budget's interval ends: {ll['loss_at_budget_interval']['lo_budget']:.3f} / "
        f"{ll['loss_at_budget_interval']['hi_budget']:.3f}).",
        *_measured_law_lines(res.get("loss_law_measured")),
        f"Failures: {gp['failure_rate_source']}: {gp['failure_rate_per_gpu_hour']:.2e} per GPU-hour; "
        "Young/Daly interval, goodput = 1 - delta/tau - tau/(2 MTBF) - R/MTBF.",
        "",
        f"## Scaling ({res['scaling']['kind']}, {res['scaling']['global_batch_tokens_requested']:.3g} tokens per step)",
        "",
    ]
    sc = res["scaling"]
    ref = sc["reference_gpus"]
    lines.append(
        f"Efficiency relative to {ref} GPUs (the smallest count with a feasible layout); first count below "
        f"90%: {sc['first_below_90pct'] or 'none'}."
    )
    lines += [
        "",
        f"| GPUs | layout | tokens/GPU/step | MFU ({lvl}) | efficiency ({lvl}, coefficients only) | bubble | "
        "exposed DP | exposed TP+PP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sc["rows"]:
        if not r["feasible"]:
            lines.append(f"| {r['n_gpus']:,} | infeasible: {r['explanation'].split('; ')[0]} | | | | | | |")
            continue
        mv, mi = _iv(r["mfu"], pct=True)
        ev, ei = _iv(r["efficiency"], pct=True)
        sh = r["shares"]
        idle = f" ({r['idle_gpus']:,} idle)" if r.get("idle_gpus") else ""
        lines.append(
            f"| {r['n_gpus']:,} | {r['layout']}{idle} | {r['tokens_per_gpu_per_step']:.0f} | {mv} ({mi}) | "
            f"{ev} ({ei}) | {100 * sh['bubble']:.0f}% | {100 * sh['dp']:.0f}% | "
            f"{100 * (sh['tp'] + sh['pp']):.0f}% |"
        )
    if res.get("critical_batch"):
        lines += _critical_batch_lines(res["critical_batch"])
    m = res.get("measured")
    if m:
        lines += ["", "## This harness's measured runs", ""]
        if "fit" in m:
            p = m["fit"]["params"]
            lines.append(
                f"Step-time law fitted to {m['fit']['n_points']} runs (world sizes {m['fit']['world_sizes']}): "
                f"rate {p['rate']:.3g} FLOP/s per device, overlap {p['overlap']:.2f}, straggler cv "
                f"{p['straggler_cv']:.3f}, alpha {p['alpha']:.3g} s, busbw {p['busbw']:.3g} B/s "
                f"({m['fit']['comm_source']}); rel. RMSE {m['fit']['rel_rmse']:.3f}."
            )
        if "leave_largest_out" in m:
            llo = m["leave_largest_out"]
            lines.append(
                f"Leave-largest-out (n = {llo['held_out_world_size']}): median |error| grey-box "
                f"{_fmt(llo.get('median_abs_greybox_error'), pct=True)}, USL "
                f"{_fmt(llo.get('median_abs_usl_error'), pct=True)}."
            )
        if "note" in m:
            lines.append(m["note"])
    return "\n".join(lines) + "\n"


def _critical_batch_lines(cb: dict[str, Any]) -> list[str]:
    p = cb["critical_batch"]
    iv = f"{p['lo']:.3g} to {p['hi']:.3g}" if p["hi"] > p["lo"] else "no interval"
    ends = cb.get("at_loss_interval_ends")
    lines = [
        "",
        "## Critical batch",
        "",
        f"B_crit at the predicted loss {cb['at_loss']:.4g}: {p['value']:.3g} tokens ({iv}"
        + (f"; {ends['lo']:.3g} / {ends['hi']:.3g} at the loss interval's ends" if ends else "")
        + f"); source: {cb['source']}.",
    ]
    if cb.get("law"):
        law = cb["law"]
        lines.append(
            f"Law: {law['form']}, B* = {law['B_star_tokens']:.3g} tokens, alpha_B = {law['alpha_B']:.3g}; "
            f"{law['source']}; L in {law['loss_unit']}."
            + (
                f" The loss lies outside the fitted runs' losses (x{p['loss_factor_beyond_data']:.2f})."
                if p.get("extrapolated") and law["n_points"]
                else ""
            )
        )
    lines += [
        f"Useful global batch: {cb['useful_global_batch_tokens']:,} tokens ({cb['useful_global_batch_seqs']:,} "
        f"sequences); requested {cb['requested_batch_tokens']:.3g}, used {cb['global_batch_tokens_used']:.3g}.",
        f"Pure data parallelism can use at most {cb['max_pure_dp_gpus']:,} GPUs (one sequence each); "
        + (
            "that covers the cluster."
            if cb["pure_dp_suffices"]
            else f"the {cb['n_gpus']:,} GPUs need a model-parallel degree (TP x PP) of at least "
            f"{cb['model_parallel_degree']:,}."
        ),
    ]
    return lines
