"""The gradient-noise-scale estimator (McCandlish et al. 2018) against exact values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.worker.noise_scale import NoiseScaleEMA, two_batch_estimates

HERE = Path(__file__).resolve().parent


def test_two_batch_estimates_invert_the_expectations():
    g2, trace = 3.0, 120.0
    small, big = 8, 32
    e_small, e_big = g2 + trace / small, g2 + trace / big  # E|g_B|^2 = |G|^2 + tr(Sigma)/B
    assert two_batch_estimates(e_small, e_big, small, big) == pytest.approx((g2, trace))
    with pytest.raises(ValueError, match="B_big > B_small"):
        two_batch_estimates(1.0, 1.0, 8, 8)


def test_ema_ratio():
    ema = NoiseScaleEMA(decay=0.5)
    assert ema.update(2.0, 10.0) == pytest.approx(5.0)
    assert ema.update(4.0, 10.0) == pytest.approx(10.0 / 3.0)


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_hook_recovers_known_gradient_noise(tmp_path, world):
    out = tmp_path / "noise.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(world),
        str(HERE / "dist_noise_check.py"),
        str(out),
    ]
    proc = subprocess.run(
        cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    # 1500 steps: the estimates' standard errors are a few percent; 10% is the stated tolerance.
    assert r["g2"] == pytest.approx(r["g2_true"], rel=0.10)
    assert r["trace"] == pytest.approx(r["trace_true"], rel=0.10)
