"""compare-fits: the same law fitted to two sweeps, interval widths side by side."""

import numpy as np

from harness.analysis.compare_fits import compare
from harness.commands.compare_fits import main
from harness.core.records import write_record


def synthetic_sweep(root, points, seed):
    rng = np.random.default_rng(seed)
    for i, (n, d) in enumerate(points):
        loss = (1.8 + 400 / n**0.34 + 2000 / d**0.37) * np.exp(rng.normal(0, 0.005))
        write_record(
            root / f"r{i}",
            {
                "kind": "train",
                "run_id": f"r{i}",
                "status": "completed",
                "model": {"params_nonembedding": n},
                "training": {"tokens_trained": d, "compute_6nd": 6 * n * d, "heldout_loss": loss},
            },
        )


def test_compare_two_sweeps(tmp_path, capsys):
    grid = [(n, d) for n in np.geomspace(1e6, 3e8, 6) for d in np.geomspace(1e8, 1e10, 5)]
    iso = [
        (n, c / (6 * n)) for c in (1e17, 1e18, 1e19) for n in np.geomspace(1e6, 1e9, 7) if c / (6 * n) > 1e6
    ]
    synthetic_sweep(tmp_path / "grid", grid, 0)
    synthetic_sweep(tmp_path / "iso", iso, 1)
    res = compare({"grid": tmp_path / "grid", "iso": tmp_path / "iso"}, [1e19], "heldout_loss", 100, 0)
    assert res["sweeps"]["grid"]["runs"] == 30 and res["sweeps"]["iso"]["runs"] == len(iso)
    a = {r["sweep"]: r for r in res["rows"] if r["quantity"] == "a"}
    for r in a.values():
        assert abs(r["value"] - 0.37 / (0.34 + 0.37)) < 0.1 and r["width"] > 0
    assert a["grid"]["width_vs_grid"] == 1.0
    assert (
        main(
            [
                "grid=" + str(tmp_path / "grid"),
                "--target-compute",
                "1e19",
                "--bootstrap",
                "50",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert (tmp_path / "o" / "compare.md").exists() and "| a | grid |" in capsys.readouterr().out


def test_bad_sweep_argument(capsys):
    assert main(["nosuchdir", "--target-compute", "1e12"]) == 2
    assert "NAME=RESULTS_DIR" in capsys.readouterr().err
