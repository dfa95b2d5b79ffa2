"""The IsoFLOP planner (harness plan) and the per-size LR / batch rules."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from harness.analysis.best_lr import select_best_lr
from harness.analysis.losslaw import EPOCH_REFIT
from harness.commands import plan as plan_cmd
from harness.core import config as C
from harness.core import flops, shapes
from harness.core.records import write_record
from harness.driver import lr_rules, planner, walltime

FAMILY = shapes.Family(aspect=32, head_dim=32, vocab_size=256, seq_len=128)


@pytest.fixture(scope="module")
def plan():
    return planner.make_plan([1e11, 1e12, 1e13, 1e15], planner.epoch_prior(), FAMILY, nproc=2)


# --------------------------------------------------------------------------- the plan


def test_prior_is_epochs_refit_and_its_optimum_spends_the_budget():
    p = planner.epoch_prior()
    assert (p.E, p.A, p.B, p.alpha, p.beta) == tuple(EPOCH_REFIT[k] for k in ("E", "A", "B", "alpha", "beta"))
    assert "Besiroglu" in p.source
    for c in (1e12, 1e20):
        n, d = p.optimum(c)
        assert 6 * n * d == pytest.approx(c, rel=1e-9)
        # the optimum minimises the prior's loss along the IsoFLOP line
        assert p.loss(n, d) < min(p.loss(n * 1.3, d / 1.3), p.loss(n / 1.3, d * 1.3))


def test_every_run_spends_its_budget_and_the_sizes_bracket_the_optimum(plan):
    budgets = sorted({r.budget for r in plan.runs})
    assert budgets == [1e11, 1e12, 1e13, 1e15]
    for c in budgets:
        runs = [r for r in plan.runs if r.budget == c]
        n_star, _ = plan.optima[c]
        ns = [r.n for r in runs]
        assert len(ns) >= 5 and ns == sorted(set(ns))  # distinct, increasing
        assert ns[0] < n_star < ns[-1]
        assert ns[-1] / ns[0] > 8  # spread 4 either side, minus the width grid's rounding
        for r in runs:
            step_tokens = r.settings.global_batch_seqs * r.shape.seq_len
            assert r.tokens == r.steps * step_tokens  # D is whole optimizer steps
            assert r.n == flops.params_nonembedding(r.shape)
            # C = 6ND within the rounding of D to whole steps (half a step either way)
            assert abs(6 * r.n * r.tokens - c) <= 6 * r.n * step_tokens / 2 + 1
            assert r.steps >= 20
    assert plan.total_compute == pytest.approx(sum(6 * r.n * r.tokens for r in plan.runs))


def test_family_makes_any_size_with_valid_heads():
    for target in (1e4, 3e4, 2e5, 1e6, 3e7, 1e9, 7e10):
        for fam in (FAMILY, shapes.Family()):
            s = fam.shape(target)
            assert s.d_model % s.n_head == 0
            assert flops.params_nonembedding(s) == pytest.approx(target, rel=0.35)
    big = shapes.Family().shape(1e10)
    assert big.d_model % 64 == 0 and big.d_model / big.n_layer == pytest.approx(64, rel=0.5)


def test_bad_plans_are_refused_with_the_allowed_values():
    prior = planner.epoch_prior()
    with pytest.raises(planner.PlanError, match=">= 5"):
        planner.plan_budget(1e12, prior, FAMILY, sizes=3)
    with pytest.raises(planner.PlanError, match="> 1"):
        planner.plan_budget(1e12, prior, FAMILY, spread=1.0)
    with pytest.raises(planner.PlanError, match="budget"):
        planner.plan_budget(-1.0, prior, FAMILY)


def test_lr_sweep_multiplies_the_rule_and_tags_each_run():
    runs = planner.plan_budget(1e12, planner.epoch_prior(), FAMILY, lr_multipliers=(0.5, 1.0, 2.0))
    assert len(runs) == 15
    first = runs[:3]
    assert len({(r.n, r.tokens) for r in first}) == 1
    assert [r.settings.lr_rule for r in first] == [
        "deepseek-llm-2024*0.5",
        "deepseek-llm-2024",
        "deepseek-llm-2024*2",
    ]
    assert first[0].settings.lr == pytest.approx(0.5 * first[1].settings.lr)


def test_prior_from_a_harness_fit_json(tmp_path):
    params = {"E": 0.5, "A": 20.0, "B": 30.0, "alpha": 0.3, "beta": 0.2}
    f = tmp_path / "fit.json"
    f.write_text(__import__("json").dumps({"groups": {"all": {"forms": {"chinchilla": {"params": params}}}}}))
    p = planner.load_prior(f)
    assert p.alpha == 0.3 and str(f) in p.source
    two = tmp_path / "two.json"
    two.write_text(
        __import__("json").dumps(
            {"groups": {g: {"forms": {"chinchilla": {"params": params}}} for g in ("a", "b")}}
        )
    )
    with pytest.raises(planner.PlanError, match="--prior-group"):
        planner.load_prior(two)
    assert planner.load_prior(two, "b").B == 30.0
    with pytest.raises(planner.PlanError, match="not a readable"):
        planner.load_prior(tmp_path / "missing.json")


# --------------------------------------------------------------------------- wall-time estimate


def _rate_record(root, i, shape, tokens_per_s, world=1, cluster="cpu"):
    write_record(
        root / f"r{i}",
        {
            "status": "completed",
            "kind": "train",
            "run_id": f"r{i}",
            "cluster": {"name": cluster},
            "model": {
                "name": f"m{i}",
                "flops_per_token": flops.flops_per_token(shape),
                "params_nonembedding": flops.params_nonembedding(shape),
            },
            "parallel": {"world_size": world},
            "training": {"tokens_trained": 100_000},
            "throughput": {"tokens_per_s": tokens_per_s, "tokens_per_s_wall": tokens_per_s / 1.25},
            "timing": {"train_wall_s": 10.0},
            "duration_s": 12.0,
        },
    )


def test_rate_model_recovers_a_per_token_overhead_and_a_flop_rate(tmp_path):
    t0, R = 4e-6, 2e11
    for i, d in enumerate((32, 64, 96, 160)):
        s = flops.Shape(2, d, 2, 256, 128)
        _rate_record(tmp_path, i, s, 1.0 / (t0 + flops.flops_per_token(s) / R))
    m = walltime.rate_from_records(tmp_path, "cpu", 1, "cpu")
    assert m.t0 == pytest.approx(t0, rel=1e-6) and m.flops_per_s == pytest.approx(R, rel=1e-6)
    assert m.wall_factor == pytest.approx(1.25) and m.overhead_s == pytest.approx(2.0)
    s = flops.Shape(3, 96, 3, 256, 128)
    assert m.seconds(s, 1e6) == pytest.approx(1e6 * (t0 + flops.flops_per_token(s) / R) * 1.25 + 2.0)
    assert "measured" in m.source
    # one size measured at 2 processes: the 1-process size dependence, rescaled to it
    _rate_record(
        tmp_path,
        9,
        flops.Shape(2, 64, 2, 256, 128),
        2 / (t0 + flops.flops_per_token(flops.Shape(2, 64, 2, 256, 128)) / R),
        world=2,
    )
    m2 = walltime.rate_from_records(tmp_path, "cpu", 2, "cpu")
    assert m2.flops_per_s == pytest.approx(2 * R, rel=1e-6) and "scaled x2.00" in m2.source
    assert walltime.rate_from_records(tmp_path, "colossus", 8, "cuda") is None


def test_no_records_on_a_gpu_cluster_is_a_labelled_assumption():
    from omegaconf import OmegaConf

    m = walltime.rate_assumed(OmegaConf.load(C.CONFIG_DIR / "cluster" / "h100-node.yaml"), nproc=8)
    assert m.flops_per_s == pytest.approx(8 * 989.4e12 * walltime.DEFAULT_MFU)
    assert m.source.startswith("assumed")


# --------------------------------------------------------------------------- the emitted preset


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A copy of the config tree, so a planned preset can be composed by name without touching the repo's."""
    d = tmp_path / "configs"
    shutil.copytree(C.CONFIG_DIR, d)
    monkeypatch.setattr(C, "CONFIG_DIR", d)
    # Presets go to <results>/plans/ by default; here into the copy, to be composed by name.
    monkeypatch.setattr(planner, "preset_path", lambda results, name: d / "sweep" / f"{name}.yaml")
    return d


def test_emitted_yaml_composes_and_expands_into_valid_runs(tmp_path, config_dir, capsys):
    from harness.driver.sweep import expand

    res = tmp_path / "res"
    for i, d in enumerate((32, 64, 128)):
        s = flops.Shape(2, d, 2, 256, 128)
        _rate_record(res, i, s, 1.0 / (4e-6 + flops.flops_per_token(s) / 2e11), world=2)
    argv = [
        "--budgets",
        "3e11,1e12",
        "--name",
        "iso-test",
        "--aspect",
        "32",
        "--head-dim",
        "32",
        "--nproc",
        "2",
        "--results",
        str(res),
        "train.eval_tokens=16384",
    ]
    assert plan_cmd.main(argv) == 0
    out = capsys.readouterr().out
    assert "total compute" in out and "estimated wall time" in out and "deepseek-llm-2024" in out
    text = (config_dir / "sweep" / "iso-test.yaml").read_text()
    assert text.startswith("# @package sweep\n# Generated by: harness plan --budgets 3e11,1e12")
    sweep = C.compose(["sweep=iso-test"]).sweep
    assert sweep.name == "iso-test" and len(sweep.points) == 10
    points = expand(sweep, [f"results_dir={tmp_path / 'runs'}"])
    assert all(p.cfg is not None for p in points), [p.error for p in points if p.cfg is None]
    for p in points:
        cfg = p.cfg
        assert cfg.nproc == 2 and cfg.train.lr_rule == "deepseek-llm-2024" and cfg.train.eval_tokens == 16384
        n = flops.params_nonembedding(
            flops.Shape(cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, 256, 128)
        )
        c = 6 * n * cfg.train.tokens
        assert min(abs(c / b - 1) for b in (3e11, 1e12)) < 0.01
        assert C.total_steps(cfg) * C.global_batch(cfg) * cfg.train.seq_len == cfg.train.tokens
    # --dry-run writes nothing
    assert plan_cmd.main([*argv[:3], "iso-dry", *argv[4:], "--dry-run"]) == 0
    assert not (config_dir / "sweep" / "iso-dry.yaml").exists()
    assert plan_cmd.main(["--budgets", "1e12", "--sizes", "2", "--results", str(res), "--dry-run"]) == 2


def test_shipped_isoflop_cpu_preset_is_planner_made_and_valid():
    path = C.CONFIG_DIR / "sweep" / "isoflop-cpu.yaml"
    text = path.read_text()
    assert "# Generated by: harness plan " in text and "deepseek-llm-2024" in text
    sweep = C.compose(["sweep=isoflop-cpu"]).sweep
    assert len(sweep.points) >= 15
    cfgs = [C.compose([*sweep.overrides, *p.split()]) for p in sweep.points]
    by_budget: dict[float, list[int]] = {}
    for cfg in cfgs:
        C.validate(cfg)
        assert cfg.train.lr_rule.startswith("deepseek-llm-2024")
        n = flops.params_nonembedding(
            flops.Shape(
                cfg.model.n_layer,
                cfg.model.d_model,
                cfg.model.n_head,
                cfg.model.vocab_size,
                cfg.train.seq_len,
            )
        )
        by_budget.setdefault(round(math.log10(6 * n * cfg.train.tokens), 1), []).append(n)
    assert len(by_budget) >= 3 and all(len(v) >= 5 for v in by_budget.values())
    prior = planner.epoch_prior()
    for logc, ns in by_budget.items():
        assert min(ns) < prior.optimum(10**logc)[0] < max(ns)


# --------------------------------------------------------------------------- LR / batch rules


def test_deepseek_rule_values_and_citation():
    # DeepSeek LLM's own 7B run: M ~ 4.3e10 FLOPs/token... at C = 1e20: eta = 0.3118 * 10^-2.5, B = 0.292 * 10^6.542
    assert lr_rules.deepseek_lr(1e20) == pytest.approx(0.3118 * 10**-2.5, rel=1e-12)
    assert lr_rules.deepseek_batch_tokens(1e20) == pytest.approx(0.2920 * 1e20**0.3271, rel=1e-12)
    assert lr_rules.deepseek_batch_tokens(1e20) == pytest.approx(1.017e6, rel=1e-3)
    s = flops.Shape(4, 128, 4, 256, 128)
    assert lr_rules.deepseek_m(s) == 72 * 4 * 128**2 + 6 * 4 * 128 * 128
    r = lr_rules.get("deepseek-llm-2024")
    assert "arXiv:2401.02954" in r.citation and "0.3118" in r.formula
    st = lr_rules.settings("deepseek-llm-2024", s, 1e6, world=2)
    assert st.lr == pytest.approx(lr_rules.deepseek_lr(lr_rules.deepseek_m(s) * 1e6))
    assert st.warmup_frac <= lr_rules.WARMUP_FRAC and st.min_lr_ratio == 0.1
    assert st.global_batch_seqs % 2 == 0 and st.global_batch_seqs == st.micro_batch * st.grad_accum * 2
    assert "train.lr_rule=deepseek-llm-2024" in st.overrides()
    assert "Hoffmann" in lr_rules.describe("deepseek-llm-2024")


def test_kaplan_rule_and_unknown_rules():
    assert lr_rules.kaplan_lr(1e8) == pytest.approx(0.003239 - 0.0001395 * math.log(1e8))
    assert "arXiv:2001.08361" in lr_rules.get("kaplan-2020").citation
    st = lr_rules.settings("kaplan-2020", flops.Shape(2, 64, 2, 256, 128), 1e6, default_batch_seqs=24)
    assert st.global_batch_seqs == 24 and st.batch_tokens_rule is None
    with pytest.raises(lr_rules.RuleError, match="<= 0"):
        lr_rules.kaplan_lr(1e12)
    with pytest.raises(lr_rules.RuleError, match="allowed"):
        lr_rules.get("adam-folklore")


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_split_batch_keeps_the_global_batch_valid(world):
    for seqs in (1, 5, 19, 64, 100, 1000):
        micro, accum, g = lr_rules.split_batch(seqs, world, max_micro=16)
        assert 1 <= micro <= 16 and accum >= 1 and g == micro * accum * world
        assert g >= world and abs(g - seqs) <= max(world, accum * world)


def test_select_best_lr_keeps_each_sizes_best_run_and_flags_the_edge():
    rows = []
    for n, losses in ((1e5, (3.0, 2.8, 2.9)), (1e6, (2.6, 2.5, 2.4))):
        for m, loss in zip((0.5, 1.0, 2.0), losses, strict=True):
            tag = "deepseek-llm-2024" if m == 1.0 else f"deepseek-llm-2024*{m:g}"
            rows.append({"N": n, "D": 1e7, "heldout_loss": loss, "lr_rule": tag, "lr": 1e-3 * m})
    rows.append({"N": 1e7, "D": 1e7, "heldout_loss": 2.2, "lr_rule": "manual", "lr": 1e-3})
    best = select_best_lr(pd.DataFrame(rows)).sort_values("N")
    assert list(best["heldout_loss"]) == [2.8, 2.4, 2.2]
    assert list(best["lr_multiplier"]) == [1.0, 2.0, 1.0]
    assert list(best["lr_at_edge"]) == [False, True, False]
    assert list(best["lr_candidates"]) == [3, 3, 1]
    assert np.isclose(best.iloc[1]["lr"], 2e-3)


def test_records_table_carries_the_lr_rule_and_best_lr_selection(tmp_path):
    from harness.core.records import records_table

    for i, (tag, loss) in enumerate((("deepseek-llm-2024", 2.5), ("deepseek-llm-2024*2", 2.4), (None, 2.6))):
        train = {"lr": 0.01 * (i + 1)} | (
            {"lr_rule": tag} if tag else {}
        )  # None: a record from before lr_rule
        write_record(
            tmp_path / f"r{i}",
            {
                "status": "completed",
                "kind": "train",
                "run_id": f"r{i}",
                "config": {"train": train},
                "model": {"name": "m", "params_nonembedding": 1000},
                "training": {"tokens_trained": 5000, "heldout_loss": loss},
            },
        )
    t = records_table(tmp_path).sort_values("lr")
    assert list(t["lr_rule"].fillna("manual")) == ["deepseek-llm-2024", "deepseek-llm-2024*2", "manual"]
    best = select_best_lr(t)
    assert sorted(best["heldout_loss"]) == [2.4, 2.6]  # the rule's sweep keeps its best; the manual run stays


def test_preset_goes_to_the_results_folder_and_sweep_runs_it_by_path(tmp_path):
    """The plan is the user's file (``<results>/plans/<name>.yaml``), never the package's, and
    ``harness sweep sweep=<that path>`` reads it as it reads a preset name."""
    from harness.driver.sweep import expand, load_sweep

    res = tmp_path / "res"
    argv = ["--budgets", "3e11", "--name", "iso-file", "--aspect", "32", "--head-dim", "32"]
    assert plan_cmd.main([*argv, "--results", str(res), "--assume-mfu", "0.3"]) == 0
    path = res / "plans" / "iso-file.yaml"
    assert path.read_text().startswith("# @package sweep\n# Generated by: harness plan --budgets 3e11")
    assert not (C.CONFIG_DIR / "sweep" / "iso-file.yaml").exists()
    sweep = load_sweep(str(path))
    assert sweep.name == "iso-file" and len(sweep.points) == 5 and sweep.parallel == 1
    points = expand(sweep, [f"results_dir={tmp_path / 'runs'}"])
    assert len(points) == 5 and all(p.cfg is not None for p in points), [p.error for p in points]
    assert load_sweep("smoke") == C.compose(["sweep=smoke"]).sweep
    with pytest.raises(C.ConfigError, match="no such preset file"):
        load_sweep(str(tmp_path / "missing.yaml"))
