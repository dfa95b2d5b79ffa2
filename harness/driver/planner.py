"""``harness plan``: an IsoFLOP sweep centred on a prior law's compute-optimal model size.

    harness plan --budgets 1e13,3e13,1e14 --name isoflop-x [--prior fit.json] [--spread 4] [--sizes 5]
                 [--rule deepseek-llm-2024] [--lr-sweep 0.5,1,2] [--cluster cpu] [--nproc 1] [--seq-len 128]
                 [--results results] [--out PATH] [--dry-run] [--run] [KEY=VALUE ...]

For each budget C (FLOPs, C = 6 N D with N the non-embedding parameters) the prior law's
optimum N*(C) is the centre; ``--sizes`` model sizes are log-spaced from N*/spread to
N* x spread, each shape generated from a GPT family with a fixed aspect ratio (so any size
can be planned, passed as ``model.n_layer/d_model/n_head/name`` overrides), and each run gets
D = C / (6 N) tokens, rounded to whole optimizer steps. Peak LR and batch come from a cited
rule (``harness/lr_rules.py``) and the record names it (``train.lr_rule``). The plan is
printed with its total compute and estimated wall time before anything runs, then written
as a sweep preset that ``harness sweep sweep=<name>`` runs (``--run`` starts it at once).
Trailing ``KEY=VALUE`` Hydra overrides go into the sweep's common overrides.

Prior: Epoch's refit of Chinchilla (Besiroglu et al. 2024, arXiv:2404.10102: E 1.817, A 482,
B 2085, alpha 0.348, beta 0.366; ``losslaw.EPOCH_REFIT``) unless ``--prior fit.json`` (written
by ``harness fit``) gives the user's own Chinchilla-form fit. The published law was fitted in
nats per token on MassiveText with total parameters; here it only centres the grid.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.core import flops
from harness.core.shapes import Family
from harness.driver import lr_rules

DEFAULT_SPREAD = 4.0  # sizes from N*/4 to 4 N*: wide enough that the IsoFLOP minimum is inside
MIN_SIZES = 5  # a parabola needs 3; 5 let the fit see curvature on both sides
DEFAULT_MFU = 0.4  # assumed only when no record measured the rate (labelled as such)
DEFAULT_CPU_UTILISATION = 0.3  # of an on-the-spot matmul peak, assumed (labelled as such)
GPU_OVERHEAD_S = 30.0  # assumed launch + evaluation per run on GPU clusters (no records)


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


# --------------------------------------------------------------------------- model family


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
        d_ideal = c / (6.0 * n)
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


# --------------------------------------------------------------------------- wall time


@dataclass(frozen=True)
class RateModel:
    """Seconds per run = tokens x (t0 + flops_per_token / R) x wall_factor + overhead.

    t0 is the per-token cost that does not scale with model FLOPs (data, optimizer, kernel
    launches: it dominates tiny models), R the effective model FLOP/s, wall_factor the measured
    ratio of a run's training wall time to its median-step time (evaluation, logging and
    whatever else shared the machine), overhead the launch and record writing per run.
    """

    t0: float
    flops_per_s: float
    wall_factor: float
    wall_factor_iqr: tuple[float, float]
    overhead_s: float
    source: str

    def seconds(self, s: flops.Shape, tokens: float, wall_factor: float | None = None) -> float:
        f = self.wall_factor if wall_factor is None else wall_factor
        return tokens * (self.t0 + flops.flops_per_token(s) / self.flops_per_s) * f + self.overhead_s


def _fit_rate(rows: list[dict]) -> tuple[float, float, int]:
    """(t0, 1/R, sizes): per shape the median of the runs' median-step tokens/s (robust to a run
    slowed by a neighbour), then 1/rate = t0 + fpt/R by non-negative least squares in relative error."""
    from scipy.optimize import nnls

    by_fpt: dict[float, list[float]] = {}
    for x in rows:
        by_fpt.setdefault(float(x["fpt"]), []).append(float(x["rate"]))
    fpt = np.array(sorted(by_fpt))
    rate = np.array([np.median(by_fpt[f]) for f in fpt])
    if len(fpt) == 1:
        return 0.0, 1.0 / (rate[0] * fpt[0]), 1
    (t0, k), _ = nnls(np.column_stack([rate, rate * fpt]), np.ones(len(fpt)))
    if k <= 0:  # no size dependence resolved: charge the median cost per token, all as overhead
        return float(np.median(1.0 / rate)), 1e-30, len(fpt)
    return float(t0), float(k), len(fpt)


def rate_from_records(root: str | Path, cluster: str, world: int, device: str) -> RateModel | None:
    """Fit t0 and R across model sizes on the completed records of this cluster and world size.

    With records at the planned world size for one size only, the 1-process fit across sizes
    is scaled to match them; with none, a CPU takes the 1-process rate as the machine's total
    (its processes share the same cores) and a GPU cluster scales it by the world size. Each
    fallback is stated in the source.
    """
    from harness.core.records import iter_records

    if not Path(root).is_dir():
        return None
    rows = []
    for _, r in iter_records(root, warn=False):
        if r.get("status") != "completed" or r.get("kind", "train") != "train":
            continue
        th, tm, tr = r.get("throughput") or {}, r.get("timing") or {}, r.get("training") or {}
        fpt = (r.get("model") or {}).get("flops_per_token")
        if (r.get("cluster") or {}).get("name") != cluster or not th.get("tokens_per_s") or not fpt:
            continue
        rows.append(
            {
                "world": (r.get("parallel") or {}).get("world_size"),
                "fpt": fpt,
                "rate": th["tokens_per_s"],
                "wall_rate": th.get("tokens_per_s_wall"),
                "tokens": tr.get("tokens_trained"),
                "overhead": (r.get("duration_s") or math.nan) - (tm.get("train_wall_s") or math.nan),
            }
        )
    same = [x for x in rows if x["world"] == world]
    one = [x for x in rows if x["world"] == 1]
    if not same and not one:
        return None
    n_same_sizes = len({x["fpt"] for x in same})
    if n_same_sizes >= 2 or (same and len({x["fpt"] for x in one}) < 2):
        t0, k, sizes = _fit_rate(same)
        how = f"{len(same)} records at {world} process(es), {sizes} size(s)"
        used = same
    elif same:  # one size measured at this world size: the 1-process size dependence, rescaled to it
        t0, k, sizes = _fit_rate(one)
        pred = [1.0 / (t0 + x["fpt"] * k) for x in same]
        scale = float(np.median([x["rate"] / p for x, p in zip(same, pred, strict=True)]))
        t0, k = t0 / scale, k / scale
        how = (
            f"{len(one)} 1-process records over {sizes} sizes, scaled x{scale:.2f} to match {len(same)} "
            f"record(s) of one size at {world} processes"
        )
        used = same
    else:
        t0, k, sizes = _fit_rate(one)
        used = one
        if device == "cpu" or world == 1:
            how = (
                f"{len(one)} 1-process records over {sizes} sizes; none at {world} processes, so the 1-process "
                "rate is taken as the machine's total (processes share its cores: assumed, not measured)"
            )
        else:
            t0, k = t0 / world, k / world
            how = (
                f"{len(one)} 1-process records over {sizes} sizes, x{world} for {world} devices "
                "(linear scaling assumed, not measured)"
            )
    ratios = [x["rate"] / x["wall_rate"] for x in used if x.get("wall_rate")]
    wf = float(np.median(ratios)) if ratios else 1.0
    iqr = (float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))) if ratios else (1.0, 1.0)
    over = [x["overhead"] for x in used if math.isfinite(x["overhead"])]
    ov = float(np.median(over)) if over else 0.0
    src = (
        f"measured: completed records under {root} (cluster {cluster}): {how}; median-step tokens/s per shape "
        f"fitted as 1/rate = t0 + flops_per_token/R: t0 = {t0 * 1e6:.2f} us/token, R = {1 / k:.3g} model FLOP/s; "
        f"wall/step-time factor {wf:.2f} (median, quartiles {iqr[0]:.2f}-{iqr[1]:.2f}); {ov:.1f} s launch "
        "overhead per run"
    )
    return RateModel(t0, 1.0 / k, max(1.0, wf), iqr, ov, src)


def rate_assumed(cluster_cfg: Any, nproc: int, nnodes: int = 1, mfu: float | None = None) -> RateModel:
    """No records: the cluster's dense peak x an assumed MFU; on a CPU a matmul peak measured now."""
    devices = nproc * nnodes
    peak = cluster_cfg.get("peak_flops_bf16") or cluster_cfg.get("peak_flops_fp32")
    if peak:
        u = DEFAULT_MFU if mfu is None else mfu
        return RateModel(
            0.0,
            peak * u * devices,
            1.0,
            (1.0, 1.0),
            GPU_OVERHEAD_S,
            f"assumed: {devices} x {cluster_cfg.get('gpu_type')} dense peak {peak:.4g} FLOP/s x an "
            f"assumed MFU of {u:.0%} (no measured records), {GPU_OVERHEAD_S:.0f} s assumed per-run overhead",
        )
    from harness.driver import preflight

    u = DEFAULT_CPU_UTILISATION if mfu is None else mfu
    measured = preflight.measure_matmul_peak("fp32", n=512, seconds=0.5)
    return RateModel(
        0.0,
        measured * u,
        1.0,
        (1.0, 1.0),
        3.0,
        f"assumed: fp32 matmul peak measured now ({measured:.3g} FLOP/s, the whole machine) x an "
        f"assumed utilisation of {u:.0%}, 3 s assumed per-run overhead (no measured records)",
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


def to_yaml(sweep: dict[str, Any], header: list[str]) -> str:
    import yaml

    head = ["# @package sweep", *(f"# {h}".rstrip() for h in header)]
    return (
        "\n".join(head)
        + "\n"
        + yaml.safe_dump(sweep, sort_keys=False, width=10_000, default_flow_style=False)
    )


# --------------------------------------------------------------------------- command


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PlanError(f"{what} {text!r}; allowed: comma-separated numbers, e.g. 1e13,3e13,1e14") from None
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise PlanError(f"{what} {text!r}; allowed: positive finite numbers")
    return vals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="harness plan",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides shared by every run (the sweep's overrides)")
    p.add_argument("--budgets", required=True, help="compute budgets in FLOPs (C = 6ND), e.g. 1e13,3e13,1e14")
    p.add_argument("--name", default=None, help="sweep name (default: the --out file's stem, else 'isoflop')")
    p.add_argument("--out", default=None, help="YAML path (default harness/configs/sweep/<name>.yaml)")
    p.add_argument("--description", default=None)
    p.add_argument(
        "--prior", default=None, help="fit.json from harness fit (default: Epoch's Chinchilla refit)"
    )
    p.add_argument("--prior-group", default=None, help="which group of a multi-group fit.json")
    p.add_argument(
        "--spread", type=float, default=DEFAULT_SPREAD, help="sizes from N*/spread to N* x spread (4)"
    )
    p.add_argument("--sizes", type=int, default=MIN_SIZES, help=f"model sizes per budget (>= {MIN_SIZES})")
    p.add_argument(
        "--rule", default=lr_rules.DEFAULT_RULE, choices=sorted(lr_rules.RULES), help="LR/batch rule"
    )
    p.add_argument("--lr-sweep", default="1", help="LR multipliers per size, e.g. 0.5,1,2 (default 1: none)")
    p.add_argument("--batch", type=int, default=16, help="global batch (sequences) for rules that set none")
    p.add_argument(
        "--max-micro-batch", type=int, default=32, help="sequences per rank per micro-step, at most"
    )
    p.add_argument("--min-steps", type=int, default=20, help="cap the batch so every run has this many steps")
    p.add_argument("--cluster", default="cpu", help="cluster preset (for the time estimate and the runs)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per run")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=256, help="the data's vocabulary (256: bytes)")
    p.add_argument("--aspect", type=float, default=64.0, help="d_model / n_layer of the family (64)")
    p.add_argument("--head-dim", type=int, default=64, help="target head width (n_head = d_model / head_dim)")
    p.add_argument("--min-layers", type=int, default=1)
    p.add_argument("--results", default="results", help="records whose measured tokens/s time the plan")
    p.add_argument(
        "--assume-mfu", type=float, default=None, help="utilisation assumed when nothing was measured"
    )
    p.add_argument("--parallel", type=int, default=1, help="runs at once (the sweep's parallel)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--run", action="store_true", help="after writing, run it (harness sweep sweep=<name>)")
    return p


def main(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from harness.core import config as C

    args = _parser().parse_args(argv)
    try:
        budgets = _floats(args.budgets, "--budgets")
        mults = tuple(_floats(args.lr_sweep, "--lr-sweep"))
        if args.cluster not in C.available("cluster"):
            raise PlanError(f"--cluster {args.cluster!r}; allowed: {', '.join(C.available('cluster'))}")
        if min(args.nproc, args.seq_len, args.vocab_size, args.head_dim, args.min_layers, args.parallel) < 1:
            raise PlanError(
                "--nproc, --seq-len, --vocab-size, --head-dim, --min-layers, --parallel must be >= 1"
            )
        name = args.name or (Path(args.out).stem if args.out else "isoflop")
        out = Path(args.out) if args.out else C.CONFIG_DIR / "sweep" / f"{name}.yaml"
        prior = load_prior(args.prior, args.prior_group) if args.prior else epoch_prior()
        family = Family(args.aspect, args.head_dim, args.vocab_size, args.seq_len, 4, args.min_layers)
        plan = make_plan(
            budgets,
            prior,
            family,
            spread=args.spread,
            sizes=args.sizes,
            rule=args.rule,
            nproc=args.nproc,
            max_micro=args.max_micro_batch,
            min_steps=args.min_steps,
            lr_multipliers=mults,
            default_batch_seqs=args.batch,
        )
        cluster_cfg = OmegaConf.load(C.CONFIG_DIR / "cluster" / f"{args.cluster}.yaml")
        rate = rate_from_records(
            args.results, args.cluster, args.nproc, str(cluster_cfg.device)
        ) or rate_assumed(cluster_cfg, args.nproc, mfu=args.assume_mfu)
        for r in plan.runs:
            r.est_s = rate.seconds(r.shape, r.tokens)
        common = [
            f"cluster={args.cluster}",
            f"nproc={args.nproc}",
            f"train.seq_len={args.seq_len}",
            f"model.vocab_size={args.vocab_size}",
            *args.overrides,
        ]
        _check_points(plan, common)
    except (PlanError, lr_rules.RuleError, C.ConfigError) as e:
        print(f"harness plan: {e}", file=sys.stderr)
        return 2
    lines = summary(plan, rate, args.parallel)
    print(table(plan))
    print("\n".join(lines))
    command = "harness plan " + shlex.join(argv)
    desc = args.description or (
        f"IsoFLOP sweep planned by harness plan: {len(budgets)} budgets x {args.sizes} sizes"
        + (f" x {len(mults)} LRs" if len(mults) > 1 else "")
    )
    header = [f"Generated by: {command}", *lines, "", *table(plan).splitlines()]
    text = to_yaml(sweep_dict(plan, name, desc, common, args.parallel), header)
    if args.dry_run:
        print(f"\n(dry run: {out} not written)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nwrote {out}; run it with: harness sweep sweep={name}")
    if args.run:
        if out.resolve().parent != (C.CONFIG_DIR / "sweep").resolve():
            print(f"harness plan: --run needs the preset under {C.CONFIG_DIR / 'sweep'}", file=sys.stderr)
            return 2
        from harness.driver import sweep

        return sweep.main([f"sweep={name}"])
    return 0


def _check_points(plan: Plan, common: list[str]) -> None:
    """Compose and validate every point now (no hardware check: a GPU plan is made on a laptop)."""
    from harness.core import config as C

    for r in plan.runs:
        cfg = C.compose([*common, *r.overrides()])
        C.validate(cfg)
        if C.total_steps(cfg) != r.steps:  # the trainer's step count must match the planned D exactly
            raise PlanError(
                f"{Family.name(r.shape)}: planned {r.steps} steps, the config gives {C.total_steps(cfg)}"
            )
