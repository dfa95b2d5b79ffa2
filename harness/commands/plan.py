"""``harness plan --budgets C1,C2,... [FLAGS] [KEY=VALUE ...]``: an IsoFLOP sweep around a prior's optimum.

For each budget C (FLOPs, C = 6 N D with N the non-embedding parameters) the prior law's
optimum N*(C) is the centre; ``--sizes`` model sizes are log-spaced from N*/spread to
N* x spread (``harness.driver.planner``), each run gets D = C / (6 N) tokens rounded to whole
optimizer steps, and peak LR and batch come from a cited rule (``--rule``). The plan is
printed with its total compute and estimated wall time, then written as a sweep preset
(default ``<results>/plans/<name>.yaml``) that ``harness sweep sweep=<preset>`` runs.
The flags are the ``plan`` section's keys (``--sizes 7`` is ``plan.sizes=7``) and four run keys
(--cluster, --nproc, --seq-len, --vocab-size); every other KEY=VALUE is a run override that
goes into the preset's common overrides. Prior: Epoch's refit of Chinchilla (Besiroglu et al.
2024) unless ``--prior fit.json`` (written by ``harness fit``).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.commands._hydra import Command, Flag, Invocation, literal
from harness.core.compose import key_of
from harness.core.config_jobs import validate_plan
from harness.core.io import atomic_write_text
from harness.core.shapes import Family
from harness.driver import lr_rules, planner, walltime

# Run keys the plan reads itself and writes into every point's overrides.
RUN_KEYS = ("cluster", "nproc", "train.seq_len", "model.vocab_size")


def _plan(flag: str, key: str, help: str, metavar: str = "N") -> Flag:
    return Flag(flag, help, key=f"plan.{key}", metavar=metavar)


COMMAND = Command(
    "plan",
    "Plan an IsoFLOP sweep centred on a prior law's compute-optimal model size; write it as a sweep preset.",
    config="plan",
    flags=[
        _plan("--budgets", "budgets", "compute budgets in FLOPs (C = 6ND), e.g. 1e13,3e13,1e14", "C,..."),
        _plan("--name", "name", "sweep name (default: the --out file's stem, else isoflop)", "NAME"),
        _plan("--out", "out", "YAML path (default <results>/plans/<name>.yaml)", "PATH"),
        _plan("--description", "description", "the preset's description", "TEXT"),
        _plan("--prior", "prior", "fit.json from harness fit (default: Epoch's Chinchilla refit)", "FIT"),
        _plan("--prior-group", "prior_group", "which group of a multi-group fit.json", "GROUP"),
        _plan("--spread", "spread", "sizes from N*/spread to N* x spread", "F"),
        _plan("--sizes", "sizes", f"model sizes per budget (>= {planner.MIN_SIZES})"),
        Flag(
            "--rule", "LR/batch rule", key="plan.rule", choices=tuple(sorted(lr_rules.RULES)), metavar="RULE"
        ),
        _plan("--lr-sweep", "lr_sweep", "LR multipliers per size, e.g. 0.5,1,2 (1: none)", "M,..."),
        _plan("--batch", "batch", "global batch (sequences) for rules that set none"),
        _plan("--max-micro-batch", "max_micro_batch", "sequences per rank per micro-step, at most"),
        _plan("--min-steps", "min_steps", "cap the batch so every run has this many steps"),
        Flag("--cluster", "cluster preset (the time estimate and the runs)", key="cluster", metavar="NAME"),
        Flag("--nproc", "processes (GPUs) per run", key="nproc", metavar="N"),
        Flag("--seq-len", "sequence length of every run", key="train.seq_len", metavar="N"),
        Flag("--vocab-size", "the data's vocabulary (256: bytes)", key="model.vocab_size", metavar="N"),
        _plan("--aspect", "aspect", "d_model / n_layer of the family", "F"),
        _plan("--head-dim", "head_dim", "target head width (n_head = d_model / head_dim)"),
        _plan("--min-layers", "min_layers", "fewest layers of a planned shape"),
        _plan(
            "--results",
            "results",
            "records whose tokens/s time the plan; presets go to <results>/plans/",
            "DIR",
        ),
        _plan("--assume-mfu", "assume_mfu", "utilisation assumed when nothing was measured", "U"),
        _plan("--parallel", "parallel", "runs at once (the sweep's parallel)"),
        Flag("--dry-run", "print the plan; write nothing", switch=True),
        Flag("--run", "after writing, run it (harness sweep sweep=<preset>)", switch=True),
    ],
    errors=(planner.PlanError, lr_rules.RuleError),
    epilog="example: harness plan --budgets 1e13,3e13,1e14 --name isoflop-x --lr-sweep 0.5,1,2",
)


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


def run(inv: Invocation) -> int:
    cfg, p = inv.cfg, inv.cfg.plan
    validate_plan(cfg)
    rule = p.rule or lr_rules.DEFAULT_RULE
    budgets, mults = [float(b) for b in p.budgets], tuple(float(m) for m in p.lr_sweep)
    name = p.name or (Path(p.out).stem if p.out else "isoflop")
    out = Path(p.out) if p.out else planner.preset_path(p.results, name)
    prior = planner.load_prior(p.prior, p.prior_group) if p.prior else planner.epoch_prior()
    family = Family(p.aspect, p.head_dim, cfg.model.vocab_size, cfg.train.seq_len, 4, p.min_layers)
    plan = planner.make_plan(
        budgets,
        prior,
        family,
        spread=p.spread,
        sizes=p.sizes,
        rule=rule,
        nproc=cfg.nproc,
        max_micro=p.max_micro_batch,
        min_steps=p.min_steps,
        lr_multipliers=mults,
        default_batch_seqs=p.batch,
    )
    rate = walltime.rate_from_records(
        p.results, cfg.cluster.name, cfg.nproc, str(cfg.cluster.device)
    ) or walltime.rate_assumed(cfg.cluster, cfg.nproc, mfu=p.assume_mfu)
    for r in plan.runs:
        r.est_s = rate.seconds(r.shape, r.tokens)
    common = [
        f"cluster={cfg.cluster.name}",
        f"nproc={cfg.nproc}",
        f"train.seq_len={cfg.train.seq_len}",
        f"model.vocab_size={cfg.model.vocab_size}",
        *(o for o in inv.positional if not key_of(o).startswith("plan.") and key_of(o) not in RUN_KEYS),
    ]
    planner.check_points(plan, common)
    lines = planner.summary(plan, rate, p.parallel)
    print(planner.table(plan))
    print("\n".join(lines))
    desc = p.description or (
        f"IsoFLOP sweep planned by harness plan: {len(budgets)} budgets x {p.sizes} sizes"
        + (f" x {len(mults)} LRs" if len(mults) > 1 else "")
    )
    header = [
        f"Generated by: harness plan {shlex.join(inv.argv)}",
        *lines,
        "",
        *planner.table(plan).splitlines(),
    ]
    text = planner.to_yaml(planner.sweep_dict(plan, name, desc, common, p.parallel), header)
    if inv.args.dry_run:
        print(f"\n(dry run: {out} not written)")
        return 0
    atomic_write_text(out, text)
    print(f"\nwrote {out}; run it with: harness sweep sweep={planner.sweep_spec(out)}")
    if inv.args.run:
        from harness.commands import sweep

        return sweep.main([f"sweep={literal(planner.sweep_spec(out))}"])
    return 0
