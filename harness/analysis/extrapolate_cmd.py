"""``harness extrapolate cluster=colossus [model=gpt3-175b] [days=90] [checkpoint_s=30] [restart_s=300]
[batch_tokens=16777216] [critical_batch_tokens=...] [seq_len=2048] [gpus=...] [straggler_cv=...]
[n_bootstrap=100] [loss_bootstrap=1000] [--results DIR] [--out DIR] [--loss-law auto|chinchilla|results]
[--critical-batch auto|kaplan|fit|TOKENS]``

Prints a Markdown summary and writes ``extrapolate.json`` and ``extrapolate.md`` under --out
(default ``results/extrapolate/``). Cluster and model presets are the YAML files under
``harness/configs/{cluster,model}/``. The loss law is fitted to the completed runs under
--results when they suffice (auto), else to the bundled Chinchilla points; the output says which.
``--critical-batch`` evaluates the critical batch B_crit(L) at the predicted loss (auto: fitted to
the --results runs' gradient noise scales when the loss law is theirs too, else Kaplan et al.
2020's published constants, labelled; or a fixed number of tokens), caps the global batch there,
and reports how many GPUs pure data parallelism can use and the model-parallel degree the rest needs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.core import shapes
from harness.core.config import CONFIG_DIR, available
from harness.core.io import write_json
from harness.core.paths import DATA_DIR, SOURCE_ROOT

DEFAULTS: dict[str, Any] = {
    "cluster": "colossus",
    "model": "gpt3-175b",
    "days": 90.0,
    "checkpoint_s": 30.0,
    "restart_s": 300.0,
    "batch_tokens": 16 * 2**20,
    "critical_batch_tokens": None,
    "seq_len": 2048,
    "gpus": None,
    "n_bootstrap": 100,
    "loss_bootstrap": 1000,
    "seed": 0,
    "straggler_cv": None,
}
INT_KEYS = ("seq_len", "gpus", "n_bootstrap", "loss_bootstrap", "seed")
FLAGS = {
    "--results": "results",
    "--out": "out",
    "--loss-law": "loss_law",
    "--critical-batch": "critical_batch",
}
CHINCHILLA_FILE = "chinchilla_epoch_svg_extracted.csv"
MIN_LOSS_RUNS = 6


class UsageError(ValueError):
    pass


class HelpRequested(Exception):
    pass


def parse_args(argv: list[str]) -> dict[str, Any]:
    """key=value settings and --flag value / --flag=value options; unknown keys are errors."""
    opts: dict[str, Any] = {
        **DEFAULTS,
        "results": None,
        "out": "results/extrapolate",
        "loss_law": "auto",
        "critical_batch": None,
    }
    it = iter(argv)
    for tok in it:
        if tok in ("-h", "--help"):
            raise HelpRequested
        if tok.startswith("--"):
            key, _, val = tok.partition("=")
            if key not in FLAGS:
                raise UsageError(f"unknown option {key!r}; allowed: {', '.join(FLAGS)}")
            if not val:
                val = next(it, None)
                if val is None:
                    raise UsageError(f"{key} needs a value")
            opts[FLAGS[key]] = val
            continue
        key, eq, val = tok.partition("=")
        if not eq or key not in DEFAULTS:
            raise UsageError(f"unknown argument {tok!r}; allowed keys: {', '.join(DEFAULTS)} (as key=value)")
        opts[key] = _convert(key, val)
    if opts["loss_law"] not in ("auto", "chinchilla", "results"):
        raise UsageError(f"--loss-law {opts['loss_law']!r}; allowed: auto, chinchilla, results")
    cb = opts["critical_batch"]
    if cb is not None and cb not in ("auto", "kaplan", "fit") and not _positive_number(cb):
        raise UsageError(f"--critical-batch {cb!r}; allowed: auto, kaplan, fit, or a number of tokens > 0")
    for group, key in (("cluster", "cluster"), ("model", "model")):
        if opts[key] not in available(group):
            raise UsageError(f"{key}={opts[key]!r} is not a preset; allowed: {', '.join(available(group))}")
    return opts


def _positive_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


def _convert(key: str, val: str) -> Any:
    if isinstance(DEFAULTS[key], str):
        return val
    if val.lower() in ("none", "null"):
        return None
    try:
        return int(float(val)) if key in INT_KEYS else float(val)
    except ValueError:
        raise UsageError(f"{key}={val!r} is not a number") from None


def load_preset(group: str, name: str):
    return OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml")


def chinchilla_path() -> Path:
    here = DATA_DIR / CHINCHILLA_FILE
    shared = SOURCE_ROOT.parent / "shared" / "data" / CHINCHILLA_FILE
    for p in (here, shared):
        if p.exists():
            return p
    raise FileNotFoundError(f"{CHINCHILLA_FILE} not found in harness/data/ (nor ../shared/data/)")


def chinchilla_loss_fit(n_bootstrap: int, seed: int):
    """Epoch's refit protocol on the bundled Chinchilla points, the 5 highest-loss points dropped."""
    import pandas as pd

    from harness.analysis import losslaw

    df = pd.read_csv(chinchilla_path()).sort_values("loss").iloc[:-5]
    n = df["Model Size"].to_numpy(float)
    d = df["Training FLOP"].to_numpy(float) / (6.0 * n)
    fit = losslaw.fit_chinchilla(n, d, df["loss"].to_numpy(float), n_bootstrap=n_bootstrap, seed=seed)
    fit.source = (
        f"Chinchilla (Hoffmann et al. 2022) points as extracted by Besiroglu et al. 2024, "
        f"{len(df)} runs (5 highest-loss dropped), Chinchilla form, N = total parameters"
    )
    return fit


# Beyond this many orders of magnitude of compute past the data, a fitted loss law is reported but
# not used as the answer (Hoffmann et al. and Besiroglu et al. fit over ~3-4 decades themselves).
MAX_TRUSTED_OOM_C = 3.0


def results_loss_fit(table, n_bootstrap: int, seed: int):
    from harness.analysis import losslaw

    d = table.dropna(subset=["N", "D", "loss"])
    d = d[(d["N"] > 0) & (d["D"] > 0) & (d["loss"] > 0)]
    if len(d) < MIN_LOSS_RUNS:
        raise losslaw.LossLawError(f"{len(d)} completed runs with N, D and loss; need >= {MIN_LOSS_RUNS}")
    fit = losslaw.fit_chinchilla(
        d["N"].to_numpy(float),
        d["D"].to_numpy(float),
        d["loss"].to_numpy(float),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    fit.source = (
        f"this harness's measured runs ({len(d)} runs), Chinchilla form, N = non-embedding parameters"
    )
    return fit


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


def markdown(res: dict[str, Any], opts: dict[str, Any]) -> str:
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


def measured_section(results_dir: str | None) -> tuple[dict[str, Any] | None, Any, int | None]:
    """Fit and validate the step-time law on --results records, if there are enough of them."""
    if not results_dir:
        return None, None, None
    from harness.analysis import throughput as T
    from harness.core.records import records_table

    table = records_table(results_dir)
    if table.empty:
        return {"note": f"no completed training records under {results_dir}"}, table, None
    out: dict[str, Any] = {"runs": len(table)}
    max_n = int(table["world_size"].max()) if table["world_size"].notna().any() else None
    try:
        out["fit"] = T.fit_measured(table).to_dict()
        out["leave_largest_out"] = T.leave_largest_out(table)
    except ValueError as e:
        out["note"] = f"throughput law not fitted to measured runs: {e}"
    return out, table, max_n


def select_loss_fit(opts: dict[str, Any], table) -> tuple[Any, str]:
    """The measured runs' loss law when they suffice (or were asked for), else the bundled
    Chinchilla fit; with a sentence saying which and why."""
    from harness.analysis.losslaw import LossLawError

    if opts["loss_law"] in ("auto", "results") and table is not None and not table.empty:
        try:
            return results_loss_fit(
                table, opts["loss_bootstrap"], opts["seed"]
            ), "fitted to the --results runs"
        except LossLawError as e:
            if opts["loss_law"] == "results":
                raise UsageError(f"--loss-law results: {e}") from None
            why = f"the --results runs do not suffice for a loss law ({e}), so the bundled Chinchilla data is used"
    elif opts["loss_law"] == "results":
        raise UsageError("--loss-law results needs --results DIR with completed runs")
    elif opts["loss_law"] == "chinchilla":
        why = "--loss-law chinchilla"
    else:
        why = "no --results runs given, so the bundled Chinchilla data is used"
    return chinchilla_loss_fit(opts["loss_bootstrap"], opts["seed"]), why


def build(opts: dict[str, Any], loss_fit: Any = None) -> dict[str, Any]:
    """The extrapolation result dict for parsed options (``parse_args``); the report calls this too.

    ``loss_fit``: any object with ``optimal(C, q)`` (default: chosen by ``select_loss_fit``).
    """
    from harness.analysis import extrapolate as X
    from harness.analysis import published
    from harness.core import hardware_specs

    cluster = load_preset("cluster", opts["cluster"])
    model = load_preset("model", opts["model"])
    try:
        hw = hardware_specs.from_cluster(OmegaConf.to_container(cluster))
    except ValueError as e:
        raise UsageError(str(e)) from None
    n_gpus = int(opts["gpus"] or cluster.gpus_per_node * cluster.num_nodes)
    s = shapes.from_model(model, opts["seq_len"])

    measured, table, measured_max = measured_section(opts["results"])
    why = "given by the caller"
    if loss_fit is None:
        loss_fit, why = select_loss_fit(opts, table)

    cases = published.load_cases()
    cal = published.calibrate(cases, n_bootstrap=opts["n_bootstrap"], seed=opts["seed"])
    if opts["straggler_cv"] is not None:
        cal = X.with_straggler(cal, opts["straggler_cv"])

    def run(batch_tokens: float, critical_batch_tokens: float | None) -> dict[str, Any]:
        return X.extrapolate(
            s,
            hw,
            cal,
            loss_fit,
            n_gpus=n_gpus,
            days=opts["days"],
            checkpoint_s=opts["checkpoint_s"],
            restart_s=opts["restart_s"],
            batch_tokens=batch_tokens,
            critical_batch_tokens=critical_batch_tokens,
            calibration_max_gpus=max(k.gpus for k in cases),
            measured_max_gpus=measured_max,
            seed=opts["seed"],
        )

    try:
        res = run(opts["batch_tokens"], opts["critical_batch_tokens"])
        oom = res["loss_law"].get("extrapolation_oom_C")
        if (
            opts["loss_law"] == "auto"
            and why == "fitted to the --results runs"
            and oom
            and oom > MAX_TRUSTED_OOM_C
        ):
            # A small sweep's law asked about a 100k-GPU budget: report it, but answer with a law
            # fitted at relevant scale (Chinchilla), and say so.
            measured_law = res["loss_law"]
            loss_fit = chinchilla_loss_fit(opts["loss_bootstrap"], opts["seed"])
            why = (
                f"the --results runs' loss law would extrapolate {oom:.1f} orders of magnitude in compute (more "
                f"than {MAX_TRUSTED_OOM_C:g}), so the bundled Chinchilla law, fitted nearer this scale, is used; "
                f"the measured law's answer is kept under loss_law_measured"
            )
            res = run(opts["batch_tokens"], opts["critical_batch_tokens"])
            res["loss_law_measured"] = measured_law
        if opts.get("critical_batch"):
            res = with_critical_batch(
                res, opts, run, n_gpus, s.seq_len, why == "fitted to the --results runs"
            )
    except ValueError as e:  # no feasible layout, or nothing delivered: say why, do not predict
        raise UsageError(str(e)) from None
    res["inputs"] = dict(opts)
    res["loss_law"]["selection"] = why
    if measured:
        res["measured"] = measured
    return res


def with_critical_batch(
    res: dict[str, Any], opts: dict[str, Any], run: Any, n_gpus: int, seq_len: int, loss_from_results: bool
) -> dict[str, Any]:
    """Evaluate B_crit at the first pass's predicted loss, then extrapolate again with the global batch
    capped there (the budget, hence the loss, moves a little with the batch: both losses are reported)."""
    from harness.analysis import critical_batch as CB
    from harness.analysis import extrapolate as X

    loss = res["loss_law"]["loss"]
    spec = str(opts["critical_batch"])
    law = None
    if _positive_number(spec):
        pred = {"value": float(spec), "lo": float(spec), "hi": float(spec), "loss": loss["value"]}
        note = "given (--critical-batch)"
    else:
        law, note = CB.choose_law(spec, opts["results"], loss_from_results, seed=opts["seed"])
        pred = law.predict(loss["value"])
    lim = X.data_parallel_limit(pred["value"], seq_len, n_gpus, opts["batch_tokens"])
    out = run(lim["global_batch_tokens_used"], pred["value"])
    section: dict[str, Any] = {
        "source": note,
        "law": law.to_dict() if law else None,
        "at_loss": loss["value"],
        "critical_batch": pred,
        **lim,
    }
    if law is not None:
        section["at_loss_interval_ends"] = {k: law.predict(loss[k])["value"] for k in ("lo", "hi")}
        section["at_final_loss"] = law.predict(out["loss_law"]["loss"]["value"])["value"]
    out["critical_batch"] = section
    return out


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


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
        res = build(opts)
    except HelpRequested:
        print(__doc__)
        return 0
    except UsageError as e:
        print(f"harness extrapolate: {e}", file=sys.stderr)
        return 2
    res["command"] = " ".join(["harness extrapolate", *argv])
    md = markdown(res, opts)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "extrapolate.json", res)
    (out / "extrapolate.md").write_text(md)
    print(md)
    print(f"wrote {out / 'extrapolate.json'} and {out / 'extrapolate.md'}")
    return 0
