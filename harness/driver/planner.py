"""An IsoFLOP sweep centred on a prior law's compute-optimal model size (``harness plan``:
``harness.commands.plan``).

For each budget C (FLOPs, C = 6 N D with N the non-embedding parameters) the prior law's
optimum N*(C) is the centre; ``--sizes`` model sizes are log-spaced from N*/spread to
N* x spread, each shape generated from a GPT family with a fixed aspect ratio (so any size
can be planned, passed as ``model.n_layer/d_model/n_head/name`` overrides), and each run gets
D = C / (6 N) tokens, rounded to whole optimizer steps. Peak LR and batch come from a cited
rule (``harness/driver/lr_rules.py``) and the record names it (``train.lr_rule``). The plan is
printed with its total compute and estimated wall time (``walltime``) before anything runs,
then written as a sweep preset, ``<results>/plans/<name>.yaml`` unless ``--out`` says, that
``harness sweep sweep=<that file>`` runs (``--run`` starts it at once).
Trailing ``KEY=VALUE`` Hydra overrides go into the sweep's common overrides.

Prior: Epoch's refit of Chinchilla (Besiroglu et al. 2024, arXiv:2404.10102: E 1.817, A 482,
B 2085, alpha 0.348, beta 0.366; ``losslaw.EPOCH_REFIT``) unless ``--prior fit.json`` (written
by ``harness fit``) gives the user's own Chinchilla-form fit. The published law was fitted in
nats per token on MassiveText with total parameters; here it only centres the grid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import flops
from harness.core.shapes import Family
from harness.driver import lr_rules
from harness.driver.walltime import RateModel

DEFAULT_SPREAD = 4.0  # sizes from N*/4 to 4 N*: wide enough that the IsoFLOP minimum is inside
MIN_SIZES = 5  # a parabola needs 3; 5 let the fit see curvature on both sides


class PlanError(ValueError):
    """A plan that cannot be made; the message names the value and what is allowed."""


# --------------------------------------------------------------------------- prior law


@dataclass(frozen=True)
class Prior:
    """A Chinchilla-form law L = E + A/N^alpha + B/D^beta used to centre the grid."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def optimum(self, c: float) -> tuple[float, float]:
        """(N*, D*) under C = 6ND (Hoffmann et al. 2022 eq. 4; ``losslaw.chinchilla_optimum``)."""
        from harness.analysis.losslaw import chinchilla_optimum

        o = chinchilla_optimum(np.array([[self.E, self.A, self.B, self.alpha, self.beta]]), c)
        return float(o["N_opt"][0, 0]), float(o["D_opt"][0, 0])

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta


def epoch_prior() -> Prior:
    from harness.analysis.losslaw import EPOCH_REFIT

    return Prior(
        **EPOCH_REFIT,
        source="Chinchilla law as refitted by Epoch (Besiroglu et al. 2024, "
        "arXiv:2404.10102): E 1.817, A 482, B 2085, alpha 0.348, beta 0.366; nats/token, "
        "total parameters, MassiveText (it only centres the grid here)",
    )


def load_prior(path: str | Path, group: str | None = None) -> Prior:
    """The Chinchilla fit in a ``harness fit`` fit.json (one group, or ``group``), or a bare params dict."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PlanError(f"--prior {path}: not a readable JSON file ({e})") from None
    params = None
    if isinstance(doc.get("params"), dict):  # ChinchillaFit.to_dict() or a hand-written prior
        params, where = doc["params"], str(path)
    elif isinstance(doc.get("groups"), dict):
        groups = {g: v for g, v in doc["groups"].items() if "chinchilla" in (v.get("forms") or {})}
        if not groups:
            raise PlanError(
                f"--prior {path}: no Chinchilla fit in any group; run harness fit with --forms chinchilla"
            )
        if group is None and len(groups) > 1:
            raise PlanError(
                f"--prior {path} has several groups {sorted(groups)}; pick one with --prior-group"
            )
        g = group if group is not None else next(iter(groups))
        if g not in groups:
            raise PlanError(f"--prior-group {g!r} not in {path}; allowed: {', '.join(sorted(groups))}")
        params, where = groups[g]["forms"]["chinchilla"]["params"], f"{path} (group {g})"
    if not params:
        raise PlanError(
            f"--prior {path}: neither a harness fit.json nor a {{'params': {{E, A, B, alpha, beta}}}} file"
        )
    try:
        p = {k: float(params[k]) for k in ("E", "A", "B", "alpha", "beta")}
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(f"--prior {path}: params need E, A, B, alpha, beta as numbers ({e})") from None
    if not all(p[k] > 0 for k in ("A", "B", "alpha", "beta")):
        raise PlanError(f"--prior {path}: A, B, alpha, beta must be > 0, got {p}")
    return Prior(
        **p,
        source=f"the user's Chinchilla-form fit in {where}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in p.items()),
    )


# --------------------------------------------------------------------------- the plan


@dataclass
class PlannedRun:
    budget: float
    shape: flops.Shape
    n: int  # non-embedding parameters
    tokens: int  # D, a whole number of optimizer steps
    steps: int
    settings: lr_rules.Settings
    nproc: int
    est_s: float = math.nan

    @property
    def compute(self) -> float:
        return flops.training_flops_6nd(self.n, self.tokens)

    def overrides(self) -> list[str]:
        s = self.shape
        return [
            f"model.name={Family.name(s)}",
            f"model.n_layer={s.n_layer}",
            f"model.d_model={s.d_model}",
            f"model.n_head={s.n_head}",
            f"train.tokens={self.tokens}",
            *self.settings.overrides(),
        ]


@dataclass
class Plan:
    runs: list[PlannedRun]
    prior: Prior
    optima: dict[float, tuple[float, float]]  # budget -> (N*, D*)
    rule: str
    notes: list[str] = field(default_factory=list)

    @property
    def total_compute(self) -> float:
        return sum(r.compute for r in self.runs)


def plan_budget(
    c: float,
    prior: Prior,
    family: Family,
    *,
    spread: float = DEFAULT_SPREAD,
    sizes: int = MIN_SIZES,
    rule: str = lr_rules.DEFAULT_RULE,
    nproc: int = 1,
    max_micro: int = 32,
    min_steps: int = 20,
    lr_multipliers: tuple[float, ...] = (1.0,),
    default_batch_seqs: int = 16,
) -> list[PlannedRun]:
    """The runs of one IsoFLOP budget: ``sizes`` log-spaced sizes from N*/spread to N* x spread."""
    if not (math.isfinite(c) and c > 0):
        raise PlanError(f"budget {c!r}; allowed: finite FLOPs > 0")
    if sizes < MIN_SIZES:
        raise PlanError(
            f"--sizes {sizes}; allowed: >= {MIN_SIZES} (an IsoFLOP minimum needs points on both sides)"
        )
    if not spread > 1:
        raise PlanError(f"--spread {spread}; allowed: > 1 (the factor either side of N*)")
    n_star, _ = prior.optimum(c)
    shapes: list[flops.Shape] = []
    for t in n_star * spread ** np.linspace(-1.0, 1.0, sizes):
        s = family.shape(float(t))
        while shapes and flops.params_nonembedding(s) <= flops.params_nonembedding(shapes[-1]):
            s = family._shape(
                s.n_layer, s.d_model + family.grid_step(s)
            )  # discrete widths collided: next one up
        shapes.append(s)
    ns = [flops.params_nonembedding(s) for s in shapes]
    if not ns[0] < n_star < ns[-1]:
        raise PlanError(
            f"budget {c:.3g}: sizes {ns[0]:,}..{ns[-1]:,} do not bracket N* = {n_star:,.0f}; "
            "allowed: a larger --spread"
        )
    runs = []
    for s, n in zip(shapes, ns, strict=True):
        d_ideal = c / flops.training_flops_6nd(n, 1.0)  # D with C = 6 N D
        for m in lr_multipliers:
            st = lr_rules.settings(
                rule,
                s,
                d_ideal,
                world=nproc,
                max_micro=max_micro,
                lr_multiplier=m,
                default_batch_seqs=default_batch_seqs,
            )
            # Keep at least min_steps optimizer steps: a batch as big as the run is not a training run.
            if d_ideal / (st.global_batch_seqs * s.seq_len) < min_steps:
                cap = max(nproc, int(d_ideal // (min_steps * s.seq_len)))
                micro, accum, g = lr_rules.split_batch(cap, nproc, max_micro)
                st = lr_rules.Settings(
                    st.lr, micro, accum, g, st.warmup_frac, st.min_lr_ratio, st.lr_rule, st.batch_tokens_rule
                )
            step_tokens = st.global_batch_seqs * s.seq_len
            steps = max(1, round(d_ideal / step_tokens))
            runs.append(PlannedRun(c, s, n, steps * step_tokens, steps, st, nproc))
    return runs


def make_plan(budgets: list[float], prior: Prior, family: Family, **kw: Any) -> Plan:
    runs: list[PlannedRun] = []
    for c in sorted(budgets):
        runs += plan_budget(c, prior, family, **kw)
    return Plan(
        runs, prior, {c: prior.optimum(c) for c in sorted(budgets)}, kw.get("rule", lr_rules.DEFAULT_RULE)
    )


# --------------------------------------------------------------------------- output


def sweep_dict(
    plan: Plan, name: str, description: str, common: list[str], parallel: int = 1
) -> dict[str, Any]:
    """The sweep preset (the keys of ``config.SweepConfig``): explicit points, shared overrides."""
    return {
        "name": name,
        "description": description,
        "models": [],
        "tokens": [],
        "nproc": [plan.runs[0].nproc],
        "points": [" ".join(r.overrides()) for r in plan.runs],
        "overrides": list(common),
        "parallel": parallel,
    }


def table(plan: Plan) -> str:
    """One line per planned run, columns aligned to their widest cell."""
    head = ("budget C", "model", "N", "D tokens", "D/N", "C=6ND", "steps", "batch tok", "lr", "est")
    rows = [
        (
            f"{r.budget:.3g}",
            Family.name(r.shape),
            f"{r.n:,}",
            f"{r.tokens:,}",
            f"{r.tokens / r.n:.1f}",
            f"{r.compute:.4g}",
            f"{r.steps:,}",
            f"{r.settings.global_batch_seqs * r.shape.seq_len:,}",
            f"{r.settings.lr:.3g}",
            _dur(r.est_s),
        )
        for r in plan.runs
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(head), *(fmt(row) for row in rows)])


def _dur(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def summary(plan: Plan, rate: RateModel, parallel: int) -> list[str]:
    total_s = sum(r.est_s for r in plan.runs)
    lo = sum(rate.seconds(r.shape, r.tokens, max(1.0, rate.wall_factor_iqr[0])) for r in plan.runs)
    hi = sum(rate.seconds(r.shape, r.tokens, max(1.0, rate.wall_factor_iqr[1])) for r in plan.runs)
    dev = max(abs(r.compute / r.budget - 1.0) for r in plan.runs)
    out = [
        f"{len(plan.runs)} runs over {len(plan.optima)} budgets; total compute (6ND) {plan.total_compute:.4g} FLOPs "
        f"(each run within {dev:.2%} of its budget: D rounded to whole steps)",
        f"estimated wall time {_dur(total_s / parallel)} at {parallel} run(s) at once "
        f"(wall-factor quartiles: {_dur(lo / parallel)} to {_dur(hi / parallel)})",
        f"rate: {rate.source}",
        f"prior: {plan.prior.source}",
        f"rule: {lr_rules.describe(plan.rule)}",
    ]
    out += [
        f"  C = {c:.3g}: prior optimum N* = {n:,.0f}, D* = {d:,.0f} ({d / n:.1f} tokens/param)"
        for c, (n, d) in plan.optima.items()
    ]
    return out + plan.notes


PLANS_DIR = "plans"  # under the results folder: a plan is the user's file, not the package's


def preset_path(results: str | Path, name: str) -> Path:
    """Where a planned sweep preset goes unless --out says otherwise: ``<results>/plans/<name>.yaml``."""
    return Path(results) / PLANS_DIR / f"{name}.yaml"


def sweep_spec(path: Path) -> str:
    """What ``harness sweep sweep=...`` takes to run the preset at path: its name when it is one of
    the package's presets, else the file's path."""
    from harness.core import config as C

    if path.resolve().parent == (C.CONFIG_DIR / "sweep").resolve():
        return path.stem
    return str(path) if "/" in str(path) else f"./{path}"


def to_yaml(sweep: dict[str, Any], header: list[str]) -> str:
    import yaml

    head = ["# @package sweep", *(f"# {h}".rstrip() for h in header)]
    return (
        "\n".join(head)
        + "\n"
        + yaml.safe_dump(sweep, sort_keys=False, width=10_000, default_flow_style=False)
    )


# --------------------------------------------------------------------------- checks


def check_points(plan: Plan, common: list[str]) -> None:
    """Compose and validate every point now (no hardware check: a GPU plan is made on a laptop)."""
    from harness.core import config as C

    for r in plan.runs:
        cfg = C.compose([*common, *r.overrides()])
        C.validate(cfg)
        if C.total_steps(cfg) != r.steps:  # the trainer's step count must match the planned D exactly
            raise PlanError(
                f"{Family.name(r.shape)}: planned {r.steps} steps, the config gives {C.total_steps(cfg)}"
            )
