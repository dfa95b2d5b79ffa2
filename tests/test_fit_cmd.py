"""``harness fit``: the built-in example, CSV and run-record inputs, outputs and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis import losslaw as ll
from harness.commands import fit as fit_cmd
from harness.core.records import write_record

TRUE = {"E": 1.7, "A": 400.0, "B": 1100.0, "alpha": 0.34, "beta": 0.29}
PLOTS = {"loss_vs_compute.png", "isoflop.png", "optimal_allocation.png", "residuals.png"}


def sweep(seed: int = 0, noise: float = 0.004) -> pd.DataFrame:
    """An IsoFLOP sweep drawn from TRUE: 6 budgets x 7 sizes around the optimum."""
    rng = np.random.default_rng(seed)
    budgets = np.logspace(17, 20.5, 6)
    opt = ll.chinchilla_optimum(np.array([[TRUE[k] for k in ll.PARAM_NAMES]]), budgets)["N_opt"][0]
    N = (opt[:, None] * np.logspace(-0.7, 0.7, 7)[None, :]).ravel()
    C = np.repeat(budgets, 7)
    D = C / (6 * N)
    loss = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    loss = loss * np.exp(noise * rng.standard_normal(N.size))
    return pd.DataFrame({"params": N, "flop": C, "final loss": loss})


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = fit_cmd.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def strict_json(path: Path) -> dict:
    def no_nan(x: str) -> None:
        raise AssertionError(f"non-strict JSON constant {x}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_example_chinchilla_end_to_end(tmp_path, capsys):
    code, out, err = run(["--example", "chinchilla", "--bootstrap", "200", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert {p.name for p in tmp_path.glob("*.png")} >= PLOTS
    d = strict_json(tmp_path / "fit.json")
    g = d["groups"]["all"]
    assert g["n_points"] == 240 and d["dropped_highest_loss"] == 5
    p = g["forms"]["chinchilla"]["params"]
    assert p["alpha"] == pytest.approx(ll.EPOCH_REFIT["alpha"], rel=0.01)
    assert g["forms"]["chinchilla"]["n_bootstrap_ok"] + g["forms"]["chinchilla"]["n_bootstrap_failed"] == 200
    opt = g["forms"]["chinchilla"]["optimal"]
    assert [o["extrapolation_oom"] for o in opt] == pytest.approx([0.0, 1.0, 2.0])
    assert {"kaplan_N", "kaplan_D", "kaplan_ND", "saturating", "isoflop", "envelope"} <= set(g["forms"])
    assert g["validation"]["n_test"] > 0
    table = pd.read_csv(tmp_path / "fit_table.csv")
    assert {"group", "form", "quantity", "C", "value", "se", "lo", "hi", "extrapolation_oom"} <= set(
        table.columns
    )
    assert "leave_largest_out" in set(table["form"])
    assert "chinchilla" in out and "Epoch's published refit" in out


def test_csv_with_column_mapping_and_targets(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    sweep().to_csv(csv, index=False)
    out_dir = tmp_path / "fit"
    code, out, err = run(
        [
            "--csv",
            str(csv),
            "--columns",
            "N=params,C=flop,loss=final loss",
            "--bootstrap",
            "100",
            "--target-compute",
            "1e22",
            "--target-compute",
            "1e23",
            "--forms",
            "chinchilla,isoflop",
            "--out",
            str(out_dir),
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    d = strict_json(out_dir / "fit.json")
    forms = d["groups"]["all"]["forms"]
    assert set(forms) == {"chinchilla", "isoflop"}
    assert [o["C"] for o in forms["chinchilla"]["optimal"]] == [1e22, 1e23]
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert forms["chinchilla"]["optimal"][0]["a"]["value"] == pytest.approx(a_true, abs=0.05)
    assert not list(out_dir.glob("*.png"))


def test_group_by_fits_each_group(tmp_path, capsys):
    a, b = sweep(seed=1), sweep(seed=2)
    a["dataset"], b["dataset"] = "web", "code"
    csv = tmp_path / "runs.csv"
    pd.concat([a, b]).to_csv(csv, index=False)
    code, _, err = run(
        [
            "--csv",
            str(csv),
            "--columns",
            "N=params,C=flop,loss=final loss,group=dataset",
            "--bootstrap",
            "50",
            "--forms",
            "chinchilla,envelope",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    d = strict_json(tmp_path / "o" / "fit.json")
    assert set(d["groups"]) == {"web", "code"}
    assert (tmp_path / "o" / "loss_vs_compute_web.png").is_file()


def test_unsupported_form_is_skipped_with_reason(tmp_path, capsys):
    # one model size per budget: no IsoFLOP curve can be drawn, the parametric forms still fit
    rng = np.random.default_rng(3)
    N = np.logspace(7, 9.5, 12)
    D = 20 * N * 10 ** rng.uniform(-0.5, 0.5, 12)
    loss = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    csv = tmp_path / "runs.csv"
    pd.DataFrame({"N": N, "D": D, "loss": loss}).to_csv(csv, index=False)
    code, out, err = run(
        [
            "--csv",
            str(csv),
            "--bootstrap",
            "20",
            "--forms",
            "chinchilla,isoflop",
            "--out",
            str(tmp_path / "o"),
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err
    d = strict_json(tmp_path / "o" / "fit.json")
    assert "IsoFLOP needs at least 3 compute budgets" in d["groups"]["all"]["skipped"]["isoflop"]
    assert "isoflop" in out and "skipped" in out


@pytest.mark.parametrize(
    ("mutate", "columns", "pattern"),
    [
        (
            lambda f: f.drop(columns=["flop"]),
            "N=params,C=flop,loss=final loss",
            r"mapped column\(s\) C='flop' not found; columns found: \['params', 'final loss'\]; expected: N, loss",
        ),
        (lambda f: f, "N=params,loss=final loss", r"no column for D or C; columns found: .*expected"),
        (
            lambda f: f.assign(**{"final loss": f["final loss"].where(f.index != 4)}),
            "N=params,C=flop,loss=final loss",
            r"column 'final loss' \(loss\)\[4\] is NaN",
        ),
        (
            lambda f: f.assign(params=f["params"].where(f.index != 2, -1.0)),
            "N=params,C=flop,loss=final loss",
            r"column 'params' \(N\)\[2\] = -1.0 is not allowed.*allowed: finite values > 0",
        ),
        (
            lambda f: f,
            "N=params,X=flop",
            r"--columns key 'X' is not known; allowed keys: N, D, C, loss, group",
        ),
    ],
)
def test_bad_csv_is_one_line_exit_2(tmp_path, capsys, mutate, columns, pattern):
    import re

    csv = tmp_path / "runs.csv"
    mutate(sweep()).to_csv(csv, index=False)
    code, out, err = run(["--csv", str(csv), "--columns", columns, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("harness fit: error: ")
    assert "Traceback" not in err
    assert re.search(pattern, err), err


def test_all_forms_unsupported_exits_2(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    # every run at one compute budget with two model sizes: no form has enough to go on
    N = np.array([1e8, 1e9, 1e8, 1e9])
    pd.DataFrame({"N": N, "C": 1e18, "loss": [3.0, 2.8, 2.9, 2.85]}).to_csv(csv)
    code, _, err = run(
        ["--csv", str(csv), "--bootstrap", "0", "--out", str(tmp_path / "o"), "--no-plots"], capsys
    )
    assert code == 2
    assert "no requested form could be fitted" in err and "chinchilla" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        ([], "one of the arguments"),
        (
            ["--example", "chinchilla", "--forms", "chinchilla,bogus"],
            r"unknown \['bogus'\]; allowed: chinchilla",
        ),
        (["--csv", "/nonexistent/runs.csv"], "no such file"),
        (["/nonexistent/results"], "does not exist"),
        (["--example", "chinchilla", "--target-compute", "-1"], "--target-compute -1.0 is not allowed"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, pattern, tmp_path):
    import re

    code, _, err = run([*argv, "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and re.search(pattern, err), err


def test_help_exits_0(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "--target-compute" in out


def _write_runs(root: Path, frame: pd.DataFrame, heldout: bool = True) -> None:
    for i, row in frame.iterrows():
        N, C, loss = float(row["params"]), float(row["flop"]), float(row["final loss"])
        write_record(
            root / "sweep" / f"run{i}",
            {
                "kind": "train",
                "status": "completed",
                "run_id": f"run{i}",
                "sweep": "sweep",
                "model": {"name": f"m{i}", "params_nonembedding": N, "params_total": 1.1 * N},
                "training": {
                    "tokens_trained": C / (6 * N),
                    "compute_6nd": C,
                    "final_train_loss": loss * 1.01,
                    "heldout_loss": loss if heldout else None,
                },
            },
        )


def test_results_folder_reads_records(tmp_path, capsys):
    _write_runs(tmp_path / "results", sweep(seed=4))
    code, out, err = run(
        [str(tmp_path / "results"), "--bootstrap", "50", "--out", str(tmp_path / "fit")], capsys
    )
    assert code == 0, err
    d = strict_json(tmp_path / "fit" / "fit.json")
    assert d["columns"]["loss"] == "heldout_loss" and d["n_runs"] == 42
    assert math.isclose(d["groups"]["all"]["forms"]["chinchilla"]["params"]["E"], TRUE["E"], rel_tol=0.05)


def test_records_without_heldout_loss_name_the_run(tmp_path, capsys):
    _write_runs(tmp_path / "results", sweep(seed=5).head(10), heldout=False)
    code, _, err = run([str(tmp_path / "results"), "--out", str(tmp_path / "fit")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "run " in err and "heldout_loss = None" in err and "try --loss-column loss" in err
    code, _, err = run(
        [
            str(tmp_path / "results"),
            "--loss-column",
            "loss",
            "--bootstrap",
            "0",
            "--forms",
            "chinchilla",
            "--out",
            str(tmp_path / "fit"),
            "--no-plots",
        ],
        capsys,
    )
    assert code == 0, err


def test_console_dispatch(tmp_path, capsys):
    from harness.cli import main

    code = main(
        [
            "fit",
            "--example",
            "chinchilla",
            "--bootstrap",
            "0",
            "--forms",
            "envelope",
            "--out",
            str(tmp_path),
            "--no-plots",
        ]
    )
    assert code == 0
    assert "envelope" in capsys.readouterr().out
