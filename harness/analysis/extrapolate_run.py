"""The extrapolation as one call: options in, the result dict out (what ``harness extrapolate`` writes).

``build(options)`` loads the cluster and model presets (``harness/configs/{cluster,model}/``),
calibrates the throughput law once on the published runs, takes a loss law (fitted to the
completed runs under ``results`` when they suffice, else to the bundled Chinchilla points;
the result says which) and runs ``extrapolate.extrapolate`` on the target cluster. With
``critical_batch`` set, the critical batch B_crit(L) is evaluated at the predicted loss and
the extrapolation is run again with the global batch capped there. Options are a dict of
the keys of ``default_options()`` (absent ones take their defaults): ``harness extrapolate``
composes them as ``harness.core.config_jobs.ExtrapolateConfig``. A setting the user can fix
raises ``UsageError`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from harness.analysis import critical_batch as CB
from harness.analysis import extrapolate as X
from harness.analysis import losslaw
from harness.analysis.throughput import calibration, measured
from harness.core import flops, hardware_specs, shapes
from harness.core.config import CONFIG_DIR, available
from harness.core.config_jobs import CRITICAL_BATCH_LAWS, LOSS_LAWS, ExtrapolateConfig, positive_number
from harness.core.paths import DATA_DIR, SOURCE_ROOT
from harness.core.records import records_table

if TYPE_CHECKING:
    import pandas as pd

CHINCHILLA_FILE = "chinchilla_epoch_svg_extracted.csv"
MIN_LOSS_RUNS = 6
# Beyond this many orders of magnitude of compute past the data, a fitted loss law is reported but
# not used as the answer (Hoffmann et al. and Besiroglu et al. fit over ~3-4 decades themselves).
MAX_TRUSTED_OOM_C = 3.0
FROM_RESULTS = "fitted to the --results runs"


class UsageError(ValueError):
    """A setting that cannot be extrapolated from; the message says which and why."""


# The presets build loads by name (ExtrapolateConfig composes them; build takes their names).
PRESET_DEFAULTS = {"cluster": "colossus", "model": "gpt3-175b"}


def default_options() -> dict[str, Any]:
    """Every key ``build`` reads, with its default: the two presets by name, then the keys of
    ``harness.core.config_jobs.ExtrapolateConfig`` (the schema ``harness extrapolate`` composes)."""
    rest = {f.name: f.default for f in fields(ExtrapolateConfig) if f.name not in PRESET_DEFAULTS}
    return {**PRESET_DEFAULTS, **rest}


def options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults updated by opts; UsageError for an unknown key, or a loss law, critical
    batch or preset that is not allowed."""
    o = default_options()
    unknown = sorted(set(opts) - set(o))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(o)}")
    o.update(opts)
    if o["loss_law"] not in LOSS_LAWS:
        raise UsageError(f"--loss-law {o['loss_law']!r}; allowed: {', '.join(LOSS_LAWS)}")
    cb = o["critical_batch"]
    if cb is not None and cb not in CRITICAL_BATCH_LAWS and not positive_number(cb):
        raise UsageError(f"--critical-batch {cb!r}; allowed: auto, kaplan, fit, or a number of tokens > 0")
    for group in PRESET_DEFAULTS:
        if o[group] not in available(group):
            raise UsageError(f"{group}={o[group]!r} is not a preset; allowed: {', '.join(available(group))}")
    return o


def load_preset(group: str, name: str) -> DictConfig:
    path = CONFIG_DIR / group / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise UsageError(f"{path} is not a mapping of settings")
    return cfg


# --------------------------------------------------------------------------- loss laws


@dataclass
class SourcedLossFit:
    """A fitted loss law and the sentence that says what it was fitted to (``X.LossFit``)."""

    fit: losslaw.ChinchillaFit
    source: str

    @property
    def data(self) -> dict[str, np.ndarray]:
        return self.fit.data

    def optimal(self, C: float, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, Any]:
        return self.fit.optimal(C, q)


def chinchilla_path() -> Path:
    here = DATA_DIR / CHINCHILLA_FILE
    shared = SOURCE_ROOT.parent / "shared" / "data" / CHINCHILLA_FILE
    for p in (here, shared):
        if p.exists():
            return p
    raise FileNotFoundError(f"{CHINCHILLA_FILE} not found in harness/data/ (nor ../shared/data/)")


def chinchilla_loss_fit(n_bootstrap: int, seed: int) -> SourcedLossFit:
    """Epoch's refit protocol on the bundled Chinchilla points, the 5 highest-loss points dropped."""
    import pandas as pd

    df = pd.read_csv(chinchilla_path()).sort_values("loss").iloc[:-5]
    n = df["Model Size"].to_numpy(float)
    d = flops.tokens_from_6nd(df["Training FLOP"].to_numpy(float), n)
    fit = losslaw.fit_chinchilla(n, d, df["loss"].to_numpy(float), n_bootstrap=n_bootstrap, seed=seed)
    return SourcedLossFit(
        fit,
        f"Chinchilla (Hoffmann et al. 2022) points as extracted by Besiroglu et al. 2024, "
        f"{len(df)} runs (5 highest-loss dropped), Chinchilla form, N = total parameters",
    )


def results_loss_fit(table: pd.DataFrame, n_bootstrap: int, seed: int) -> SourcedLossFit:
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
    return SourcedLossFit(
        fit, f"this harness's measured runs ({len(d)} runs), Chinchilla form, N = non-embedding parameters"
    )


def select_loss_fit(o: Mapping[str, Any], table: pd.DataFrame | None) -> tuple[X.LossFit, str]:
    """The measured runs' loss law when they suffice (or were asked for), else the bundled
    Chinchilla fit; with a sentence saying which and why."""
    if o["loss_law"] in ("auto", "results") and table is not None and not table.empty:
        try:
            return results_loss_fit(table, o["loss_bootstrap"], o["seed"]), FROM_RESULTS
        except losslaw.LossLawError as e:
            if o["loss_law"] == "results":
                raise UsageError(f"--loss-law results: {e}") from None
            why = f"the --results runs do not suffice for a loss law ({e}), so the bundled Chinchilla data is used"
    elif o["loss_law"] == "results":
        raise UsageError("--loss-law results needs --results DIR with completed runs")
    elif o["loss_law"] == "chinchilla":
        why = "--loss-law chinchilla"
    else:
        why = "no --results runs given, so the bundled Chinchilla data is used"
    return chinchilla_loss_fit(o["loss_bootstrap"], o["seed"]), why


# --------------------------------------------------------------------------- measured runs


def measured_section(
    results_dir: str | None,
) -> tuple[dict[str, Any] | None, pd.DataFrame | None, int | None]:
    """Fit and validate the step-time law on --results records, if there are enough of them."""
    if not results_dir:
        return None, None, None
    table = records_table(results_dir)
    if table.empty:
        return {"note": f"no completed training records under {results_dir}"}, table, None
    out: dict[str, Any] = {"runs": len(table)}
    max_n = int(table["world_size"].max()) if table["world_size"].notna().any() else None
    try:
        out["fit"] = measured.fit_measured(table).to_dict()
        out["leave_largest_out"] = measured.leave_largest_out(table)
    except ValueError as e:
        out["note"] = f"throughput law not fitted to measured runs: {e}"
    return out, table, max_n


# --------------------------------------------------------------------------- the entry point

Run = Callable[[float, float | None], dict[str, Any]]  # (batch tokens, critical batch) -> result


def build(opts: Mapping[str, Any], loss_fit: X.LossFit | None = None) -> dict[str, Any]:
    """The extrapolation result dict (JSON-ready) for the options; the report calls this too.

    ``loss_fit``: any object with ``optimal(C, q)`` (default: chosen by ``select_loss_fit``).
    """
    o = options(opts)
    cluster = load_preset("cluster", o["cluster"])
    model = load_preset("model", o["model"])
    try:
        hw = hardware_specs.from_cluster(OmegaConf.to_container(cluster))
    except ValueError as e:
        raise UsageError(str(e)) from None
    n_gpus = int(o["gpus"] or cluster.gpus_per_node * cluster.num_nodes)
    s = shapes.from_model(model, o["seq_len"])

    measured_runs, table, measured_max = measured_section(o["results"])
    fit: X.LossFit
    if loss_fit is None:
        fit, why = select_loss_fit(o, table)
    else:
        fit, why = loss_fit, "given by the caller"

    cases = calibration.load_cases()
    cal = calibration.calibrate(cases, n_bootstrap=o["n_bootstrap"], seed=o["seed"])
    if o["straggler_cv"] is not None:
        cal = X.with_straggler(cal, o["straggler_cv"])

    def run(batch_tokens: float, critical_batch_tokens: float | None) -> dict[str, Any]:
        return X.extrapolate(
            s,
            hw,
            cal,
            fit,
            n_gpus=n_gpus,
            days=o["days"],
            checkpoint_s=o["checkpoint_s"],
            restart_s=o["restart_s"],
            batch_tokens=batch_tokens,
            critical_batch_tokens=critical_batch_tokens,
            calibration_max_gpus=max(k.gpus for k in cases),
            measured_max_gpus=measured_max,
            seed=o["seed"],
        )

    try:
        res = run(o["batch_tokens"], o["critical_batch_tokens"])
        oom = res["loss_law"].get("extrapolation_oom_C")
        if o["loss_law"] == "auto" and why == FROM_RESULTS and oom and oom > MAX_TRUSTED_OOM_C:
            # A small sweep's law asked about a 100k-GPU budget: report it, but answer with a law
            # fitted at relevant scale (Chinchilla), and say so.
            measured_law = res["loss_law"]
            fit = chinchilla_loss_fit(o["loss_bootstrap"], o["seed"])
            why = (
                f"the --results runs' loss law would extrapolate {oom:.1f} orders of magnitude in compute (more "
                f"than {MAX_TRUSTED_OOM_C:g}), so the bundled Chinchilla law, fitted nearer this scale, is used; "
                f"the measured law's answer is kept under loss_law_measured"
            )
            res = run(o["batch_tokens"], o["critical_batch_tokens"])
            res["loss_law_measured"] = measured_law
        if o["critical_batch"]:
            res = with_critical_batch(res, o, run, n_gpus, s.seq_len, why == FROM_RESULTS)
    except ValueError as e:  # no feasible layout, or nothing delivered: say why, do not predict
        raise UsageError(str(e)) from None
    res["inputs"] = o
    res["loss_law"]["selection"] = why
    if measured_runs:
        res["measured"] = measured_runs
    return res


def with_critical_batch(
    res: dict[str, Any], o: Mapping[str, Any], run: Run, n_gpus: int, seq_len: int, loss_from_results: bool
) -> dict[str, Any]:
    """Evaluate B_crit at the first pass's predicted loss, then extrapolate again with the global batch
    capped there (the budget, hence the loss, moves a little with the batch: both losses are reported)."""
    loss = res["loss_law"]["loss"]
    spec = str(o["critical_batch"])
    law = None
    if positive_number(spec):
        pred = {"value": float(spec), "lo": float(spec), "hi": float(spec), "loss": loss["value"]}
        note = "given (--critical-batch)"
    else:
        law, note = CB.choose_law(spec, o["results"], loss_from_results, seed=o["seed"])
        pred = law.predict(loss["value"])
    lim = X.data_parallel_limit(pred["value"], seq_len, n_gpus, o["batch_tokens"])
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
