"""Loss scaling laws: the published Chinchilla refit, synthetic recovery, optimiser and error paths."""

from __future__ import annotations

import json
import math
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis import losslaw as ll
from harness.analysis.losslaw import LossLawError, fitting
from harness.analysis.losslaw import isoflop as iso

# A law in the Chinchilla family with unequal exponents, so a != 0.5 is testable.
TRUE = {"E": 1.7, "A": 400.0, "B": 1100.0, "alpha": 0.34, "beta": 0.29}


def chinchilla_points() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 240 runs of Epoch's refit: the package CSV without the five highest losses."""
    with (files("harness") / "data" / "chinchilla_epoch_svg_extracted.csv").open() as f:
        d = pd.read_csv(f)
    d = d.drop(d.nlargest(5, "loss").index)
    N = d["Model Size"].to_numpy()
    C = d["Training FLOP"].to_numpy()
    return N, C / (6 * N), d["loss"].to_numpy()


def law(p: dict[str, float], N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


def isoflop_sweep(
    p: dict[str, float], *, noise: float = 0.0, seed: int = 0, n_budgets: int = 7, sizes: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An IsoFLOP design around the law's own optimum, with log-normal noise on the loss."""
    rng = np.random.default_rng(seed)
    budgets = np.logspace(17, 21, n_budgets)
    opt = ll.chinchilla_optimum(np.array([[p[k] for k in ll.PARAM_NAMES]]), budgets)["N_opt"][0]
    N = (opt[:, None] * np.logspace(-0.8, 0.8, sizes)[None, :]).ravel()
    C = np.repeat(budgets, sizes)
    D = C / (6 * N)
    return N, D, law(p, N, D) * np.exp(noise * rng.standard_normal(N.size))


@pytest.fixture(scope="module")
def chin() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return chinchilla_points()


@pytest.fixture(scope="module")
def chin_fit(chin) -> ll.ChinchillaFit:
    # 1,000 resamples: the SE comparison needs them (Epoch used 4,000); the batch takes seconds
    return ll.fit_chinchilla(*chin, n_bootstrap=1000, seed=0)


# ------------------------------------------------------------------ the published refit


def test_package_copy_of_the_data_is_the_shared_file(chin):
    N, D, loss = chin
    assert len(loss) == 240
    assert (files("harness") / "data" / "README.md").is_file()


def test_reproduces_epoch_refit(chin_fit):
    p, ref = chin_fit.params, ll.EPOCH_REFIT
    for k in ("E", "alpha", "beta"):
        assert p[k] == pytest.approx(ref[k], rel=0.01), k
    for k in ("A", "B"):
        assert p[k] == pytest.approx(ref[k], rel=0.05), k
    assert chin_fit.objective == pytest.approx(1.018e-3, rel=2e-3)
    assert chin_fit.n_points == 240
    assert chin_fit.grad_max <= ll.FINAL_GTOL
    assert chin_fit.n_starts_at_optimum >= 10  # the optimum is reached from many starts, not one lucky one


def test_bootstrap_se_within_25pct_of_published(chin_fit):
    assert chin_fit.n_bootstrap_ok + chin_fit.n_bootstrap_failed == 1000
    assert chin_fit.n_bootstrap_failed <= 10
    for k, ref in ll.EPOCH_REFIT_SE.items():
        assert chin_fit.se[k] == pytest.approx(ref, rel=0.25), k


def test_from_hoffmann_values_does_not_stall(chin, chin_fit):
    fit = ll.fit_chinchilla(*chin, n_bootstrap=0, init=ll.HOFFMANN_APPROACH3)
    for k in ll.PARAM_NAMES:
        assert fit.params[k] == pytest.approx(chin_fit.params[k], rel=1e-5), k
    assert fit.objective == pytest.approx(chin_fit.objective, rel=1e-9)
    assert fit.se == {} and fit.n_bootstrap_ok == 0


def test_default_tolerances_do_stall_from_hoffmann(chin):
    """Negative control: scipy's defaults on the averaged loss stop next to Hoffmann's values."""
    from scipy.optimize import minimize
    from scipy.special import huber, logsumexp

    N, D, loss = chin
    lN, lD, lL = np.log(N), np.log(D), np.log(loss)
    h = ll.HOFFMANN_APPROACH3

    def mean_huber(t: np.ndarray) -> float:
        pred = logsumexp([t[0] - t[3] * lN, t[1] - t[4] * lD, np.full_like(lN, t[2])], axis=0)
        return float(np.mean(huber(1e-3, pred - lL)))

    x0 = np.array([math.log(h["A"]), math.log(h["B"]), math.log(h["E"]), h["alpha"], h["beta"]])
    r = minimize(mean_huber, x0, method="L-BFGS-B")
    assert abs(r.x[4] - h["beta"]) < 0.02  # stalled: beta stays near 0.28, the refit has 0.367


def test_derived_quantities_are_consistent(chin_fit):
    C = 5.76e23
    o = chin_fit.optimal(C)
    N, D = o["N_opt"]["value"], o["D_opt"]["value"]
    assert pytest.approx(C, rel=1e-9) == 6 * N * D
    assert o["a"]["value"] + o["b"]["value"] == pytest.approx(1.0)
    assert o["tokens_per_param"]["value"] == pytest.approx(D / N)
    assert o["loss"]["value"] == pytest.approx(float(chin_fit.predict(N, D)))
    # N* minimises the loss along the iso-compute line
    for f in (0.9, 1.1):
        assert float(chin_fit.predict(N * f, D / f)) > o["loss"]["value"]
    for k in ("N_opt", "D_opt", "loss", "tokens_per_param", "a", "b"):
        assert o[k]["lo"] <= o[k]["value"] <= o[k]["hi"], k
    assert o["extrapolation_oom"] == pytest.approx(math.log10(C / chin_fit.c_max))
    assert o["a"]["value"] == pytest.approx(0.513, abs=0.01)  # published a ~ 0.513
    at_data = chin_fit.optimal(chin_fit.c_max)
    assert 15 < at_data["tokens_per_param"]["value"] < 25  # "about 20 tokens per parameter"
    assert at_data["extrapolation_oom"] == pytest.approx(0.0)


def test_to_dict_is_strict_json(chin_fit, chin):
    d = chin_fit.to_dict(targets=[1e24])
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["params"]["E"] == pytest.approx(chin_fit.params["E"])
    assert back["optimal"][0]["C"] == 1e24
    no_boot = ll.fit_chinchilla(*chin, n_bootstrap=0, init=ll.HOFFMANN_APPROACH3)
    assert (
        json.loads(json.dumps(no_boot.to_dict([1e24]), allow_nan=False))["optimal"][0]["N_opt"]["lo"] is None
    )


def test_leave_largest_out_on_chinchilla(chin, chin_fit):
    v = ll.leave_largest_out(*chin, full_fit=chin_fit)
    assert v["n_test"] >= 24 and v["n_train"] + v["n_test"] == 240
    assert v["c_min_test"] > v["c_max_train"] and v["extrapolation_oom"] > 0
    assert 0 < v["errors"]["mean_abs_pct"] < 3
    assert set(v["in_sample_errors"]) == set(v["errors"])


# ------------------------------------------------------------------ recovery on synthetic data


def test_recovers_exact_law():
    N, D, loss = isoflop_sweep(TRUE)
    fit = ll.fit_chinchilla(N, D, loss, n_bootstrap=0)
    for k in ll.PARAM_NAMES:
        assert fit.params[k] == pytest.approx(TRUE[k], rel=1e-4), k
    assert fit.objective < 1e-12


@pytest.mark.parametrize("seed", [1, 2])
def test_recovers_noisy_law_within_its_intervals(seed):
    N, D, loss = isoflop_sweep(TRUE, noise=0.005, seed=seed)
    fit = ll.fit_chinchilla(N, D, loss, n_bootstrap=200, seed=seed)
    assert fit.n_bootstrap_failed == 0
    for k in ll.PARAM_NAMES:
        assert abs(fit.params[k] - TRUE[k]) < 4 * fit.se[k], (k, fit.params[k], fit.se[k])
    assert fit.params["E"] == pytest.approx(TRUE["E"], rel=0.03)
    o = fit.optimal(1e23)
    truth = ll.chinchilla_optimum(np.array([[TRUE[k] for k in ll.PARAM_NAMES]]), 1e23)
    assert o["a"]["value"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.04)
    assert o["N_opt"]["lo"] / 2 < truth["N_opt"][0, 0] < 2 * o["N_opt"]["hi"]


def test_isoflop_and_envelope_recover_allocation_exponent():
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    N, D, loss = isoflop_sweep(TRUE, noise=0.002, seed=3)
    fit = iso.fit_isoflop(N, D, loss, n_bootstrap=200)
    assert len(fit.points) == 7 and fit.n_bootstrap_failed == 0
    assert fit.a == pytest.approx(a_true, abs=0.03)
    assert fit.a + fit.b == pytest.approx(1.0)
    o = fit.optimal(1e22)
    assert o["N_opt"]["lo"] <= o["N_opt"]["value"] <= o["N_opt"]["hi"]
    env = iso.fit_envelope(N, D, loss, n_bootstrap=200)
    assert env.a == pytest.approx(a_true, abs=0.08)


def test_kaplan_and_saturating_recovery():
    rng = np.random.default_rng(4)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 200))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 200))
    p = {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}
    loss = ll.law_predict("kaplan_ND", p, {"N": N, "D": D}) * np.exp(0.003 * rng.standard_normal(200))
    fit = ll.fit_law("kaplan_ND", N=N, D=D, loss=loss, n_bootstrap=100)
    for k in ("alpha_N", "alpha_D"):
        assert fit.params[k] == pytest.approx(p[k], rel=0.05), k
    for k in ("N_c", "D_c"):
        assert fit.params[k] == pytest.approx(p[k], rel=0.3), k
    # L(N) alone, data with plenty of tokens
    lossN = (8.8e13 / N) ** 0.076 * np.exp(0.003 * rng.standard_normal(200))
    fN = ll.fit_law("kaplan_N", N=N, loss=lossN, n_bootstrap=50)
    assert fN.params["alpha_N"] == pytest.approx(0.076, rel=0.03)
    C = np.logspace(17, 22, 40)
    lossC = (1.7 + 300 * C**-0.12) * np.exp(0.002 * rng.standard_normal(40))
    fs = ll.fit_law("saturating", C=C, loss=lossC, n_bootstrap=100)
    assert fs.params["E"] == pytest.approx(1.7, rel=0.02)
    assert fs.params["gamma"] == pytest.approx(0.12, rel=0.05)
    band = fs.predict_band(C=[1e24])
    assert band["lo"][0] <= band["value"][0] <= band["hi"][0]


# ------------------------------------------------------------------ optimiser internals


@pytest.mark.parametrize("name", ["chinchilla", "kaplan_N", "kaplan_ND", "saturating"])
def test_analytic_gradients_match_finite_differences(name):
    rng = np.random.default_rng(5)
    N, D, loss = isoflop_sweep(TRUE, noise=0.01, seed=5)
    if name == "chinchilla":
        centre = (float(np.log(N).mean()), float(np.log(D).mean()))
        form = ll.chinchilla_form(centre)
        X = {"cN": np.log(N) - centre[0], "cD": np.log(D) - centre[1]}
        theta = np.array([0.3, -0.5, 0.5, 0.35, 0.3])
    else:
        form, X, starts = ll.law_setup(name, {"N": N, "D": D, "C": 6 * N * D})
        theta = starts[len(starts) // 2]
    theta = theta + 0.01 * rng.standard_normal(theta.size)
    w = rng.integers(0, 3, size=(1, len(loss))).astype(float)
    fg = ll.huber_objective(form, X, np.log(loss), 1e-3, w)
    row = np.zeros(1, dtype=int)
    _, g = fg(theta[None], row)
    for i in range(theta.size):
        e = np.zeros(theta.size)
        e[i] = 1e-6
        num = (fg((theta + e)[None], row)[0][0] - fg((theta - e)[None], row)[0][0]) / 2e-6
        assert num == pytest.approx(g[0, i], rel=1e-4, abs=1e-6), i


def test_batched_lbfgs_solves_independent_problems():
    rng = np.random.default_rng(6)
    K = 50
    target = rng.normal(size=(K, 2))
    scale = 10 ** rng.uniform(0, 3, size=(K, 1))  # condition numbers up to 1e3

    def fg(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Rosenbrock-like valley shifted to each problem's target, scaled per problem
        t, s = target[rows], scale[rows]
        u, v = x[:, 0] - t[:, 0], x[:, 1] - t[:, 1]
        f = (1 - u) ** 2 + s[:, 0] * (v - u**2) ** 2
        g = np.column_stack([-2 * (1 - u) - 4 * s[:, 0] * u * (v - u**2), 2 * s[:, 0] * (v - u**2)])
        return f, g

    r = ll.batched_lbfgs(fg, np.zeros((K, 2)), gtol=1e-9)
    assert r.converged.all()
    np.testing.assert_allclose(r.x, target + 1.0, atol=1e-6)


def test_budget_groups_and_frontier():
    rng = np.random.default_rng(7)
    budgets = np.repeat([1e18, 1e19, 1e20], 5) * 10 ** rng.uniform(-0.03, 0.03, 15)
    labels = ll.budget_groups(budgets, 0.1)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 5))
    C = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([3.0, 3.5, 2.5, 2.6, 2.0])
    np.testing.assert_array_equal(iso.pareto_frontier(C, loss), [True, False, True, False, True])


def test_isoflop_on_chinchilla(chin):
    fit = iso.fit_isoflop(*chin, n_bootstrap=200)
    assert len(fit.points) >= 9  # the nine Chinchilla IsoFLOP budgets at least
    assert 0.45 < fit.a < 0.55
    assert "skipped" in fit.note


# ------------------------------------------------------------------ errors


def test_nan_loss_is_named():
    N, D, loss = isoflop_sweep(TRUE)
    loss[3] = np.nan
    with pytest.raises(LossLawError, match=r"loss\[3\] is NaN.*allowed: finite values > 0"):
        ll.fit_chinchilla(N, D, loss, n_bootstrap=0)


@pytest.mark.parametrize("bad", [0.0, -5.0, np.inf])
def test_non_positive_values_are_named(bad):
    N, D, loss = isoflop_sweep(TRUE)
    N[7] = bad
    with pytest.raises(LossLawError, match=r"N\[7\] = .* is not allowed.*allowed: finite values > 0"):
        ll.fit_chinchilla(N, D, loss, n_bootstrap=0)


def test_too_few_sizes():
    N = np.array([1e8, 1e8, 1e9, 1e9, 1e8, 1e9, 1e8])
    D = np.logspace(9, 11, 7)
    with pytest.raises(LossLawError, match=r"at least 3 distinct values of N.*has 2"):
        ll.fit_chinchilla(N, D, law(TRUE, N, D), n_bootstrap=0)
    with pytest.raises(LossLawError, match="needs at least 6 points; got 3"):
        ll.fit_chinchilla(N[:3], D[:3], law(TRUE, N[:3], D[:3]), n_bootstrap=0)
    with pytest.raises(LossLawError, match="IsoFLOP needs at least 3 compute budgets"):
        iso.fit_isoflop(N, D, law(TRUE, N, D), n_bootstrap=0)


def test_length_mismatch_and_bad_init():
    N, D, loss = isoflop_sweep(TRUE)
    with pytest.raises(LossLawError, match="differ in length"):
        ll.fit_chinchilla(N[:-1], D, loss)
    with pytest.raises(LossLawError, match=r"init is missing \['beta'\]"):
        ll.fit_chinchilla(N, D, loss, init={k: v for k, v in TRUE.items() if k != "beta"})


def test_fit_that_does_not_converge_raises(monkeypatch):
    N, D, loss = isoflop_sweep(TRUE, noise=0.01)
    monkeypatch.setattr(fitting, "FINAL_GTOL", -1.0)  # no gradient is small enough: the check must fire
    with pytest.raises(LossLawError, match="did not converge: max |gradient|"):
        ll.fit_chinchilla(N, D, loss, n_bootstrap=0, init=TRUE)


# ------------------------------------------------------------------ properties

_logC = st.lists(st.floats(15, 24, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(_logC, st.floats(0.02, 0.5))
def test_budget_groups_properties(logc, span):
    C = 10 ** np.array(logc)
    labels = ll.budget_groups(C, span)
    assert set(labels) == set(range(labels.max() + 1))  # every label used, numbered from 0
    x = np.log10(C)
    medians = [np.median(x[labels == g]) for g in range(labels.max() + 1)]
    assert all(np.diff(medians) >= 0)
    for g in range(labels.max() + 1):
        assert np.ptp(x[labels == g]) <= span * (1 + 1e-9) + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 1e6), st.floats(0.5, 10)), min_size=1, max_size=40))
def test_pareto_frontier_properties(pairs):
    comp, loss = (np.array(v) for v in zip(*pairs, strict=True))
    front = iso.pareto_frontier(comp, loss)
    assert front.any() and loss[front].min() == loss.min()
    order = np.argsort(comp[front], kind="stable")
    assert all(np.diff(loss[front][order]) < 0)  # cheaper frontier runs always have higher loss
    for i in np.flatnonzero(~front):  # every run off the frontier is beaten by a run no dearer
        assert np.any((comp <= comp[i]) & (loss <= loss[i]) & (np.arange(len(comp)) != i))
