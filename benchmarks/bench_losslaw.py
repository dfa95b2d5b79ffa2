"""Benchmark: the full Chinchilla Approach 3 fit with 1,000 bootstrap resamples on the 240 points.

    python benchmarks/bench_losslaw.py [--bootstrap 1000] [--repeat 1]

Target: under 30 s on 2 cores. Prints wall and CPU seconds per stage, the ratio to the
target, and the fitted parameters and standard errors next to Epoch's published refit.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.losslaw import EPOCH_REFIT, EPOCH_REFIT_SE, PARAM_NAMES, fit_chinchilla

TARGET_S = 30.0


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with (files("harness") / "data" / "chinchilla_epoch_svg_extracted.csv").open() as f:
        d = pd.read_csv(f)
    d = d.drop(d.nlargest(5, "loss").index)
    N = d["Model Size"].to_numpy()
    return N, d["Training FLOP"].to_numpy() / (6 * N), d["loss"].to_numpy()


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float, float]:
    """Result, wall seconds, CPU seconds (CPU > wall means numpy used more than one core)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    N, D, loss = load()
    print(f"{len(loss)} points; {os.cpu_count()} CPU(s) visible; load average {os.getloadavg()[0]:.2f}")
    for r in range(args.repeat):
        _, w0, c0 = timed(fit_chinchilla, N, D, loss, n_bootstrap=0, seed=args.seed)
        fit, wall, cpu = timed(fit_chinchilla, N, D, loss, n_bootstrap=args.bootstrap, seed=args.seed)
        print(
            f"run {r + 1}: grid fit alone {w0:.2f} s wall ({c0:.2f} s CPU); "
            f"full fit + {args.bootstrap} bootstrap resamples {wall:.2f} s wall ({cpu:.2f} s CPU)"
        )
        print(
            f"  ratio to the {TARGET_S:.0f} s target: {wall / TARGET_S:.3f} (wall), {cpu / TARGET_S:.3f} (CPU)"
        )
        print(
            f"  bootstrap: {fit.n_bootstrap_ok} converged, {fit.n_bootstrap_failed} failed, "
            f"{fit.n_bootstrap_multimodal} found a better optimum than the warm start"
        )
    print(f"  objective {fit.objective:.6g} (published about 1.018e-3); max |grad| {fit.grad_max:.2g}")
    print(f"  {'param':<6} {'fitted':>10} {'published':>10} {'SE':>10} {'pub SE':>10}")
    for k in PARAM_NAMES:
        print(
            f"  {k:<6} {fit.params[k]:>10.4g} {EPOCH_REFIT[k]:>10.4g} {fit.se[k]:>10.4g} {EPOCH_REFIT_SE[k]:>10.4g}"
        )


if __name__ == "__main__":
    main()
