"""Plots for ``harness fit``: loss vs compute, IsoFLOP curves, N*/D* vs compute, residuals.

matplotlib is imported inside each function (``harness fit --no-plots`` never pays for it),
and figures are built with the object API on the Agg canvas, so no display and no global
pyplot state are involved.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.analysis.losslaw.chinchilla import ChinchillaFit
from harness.analysis.losslaw.forms import chinchilla_optimum
from harness.analysis.losslaw.isoflop import AllocationFit
from harness.analysis.losslaw.laws import LawFit
from harness.core.flops import training_flops_6nd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from harness.analysis.losslaw.fit_runs import GroupFit


def _figure(width: float = 6.4, height: float = 4.6) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def _compute_grid(c_lo: float, c_hi: float, n: int = 200) -> np.ndarray:
    return np.logspace(np.log10(c_lo), np.log10(c_hi), n)


def _band(
    ax: Axes, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, label: str | None = None
) -> None:
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0, label=label)


def plot_loss_vs_compute(
    path: Path,
    data: dict[str, np.ndarray],
    *,
    chinchilla: ChinchillaFit | None = None,
    saturating: LawFit | None = None,
    frontier: np.ndarray | None = None,
    targets: tuple[float, ...] = (),
    q: tuple[float, float] = (0.05, 0.95),
    title: str = "",
) -> Path:
    """Runs coloured by model size, the Chinchilla compute-optimal frontier with its band, L(C)."""
    fig = _figure()
    ax = fig.add_subplot()
    C = training_flops_6nd(data["N"], data["D"])
    sc = ax.scatter(C, data["loss"], c=np.log10(data["N"]), s=12, cmap="viridis", label="runs")
    fig.colorbar(sc, ax=ax, label="log10 N")
    if frontier is not None and frontier.any():
        ax.scatter(
            C[frontier],
            data["loss"][frontier],
            s=30,
            facecolors="none",
            edgecolors="k",
            label="lower envelope",
        )
    grid = _compute_grid(C.min(), max([C.max(), *targets]))
    if chinchilla is not None:
        point = chinchilla_optimum(chinchilla.param_array[None], grid)["loss"][0]
        ax.plot(grid, point, color="C3", label="Chinchilla L(N*, D*)")
        if len(chinchilla.boot) > 1:
            lo, hi = np.quantile(chinchilla_optimum(chinchilla.boot, grid)["loss"], q, axis=0)
            _band(ax, grid, lo, hi, "C3", f"{round(100 * (q[1] - q[0]))}% bootstrap band")
    if saturating is not None:
        b = saturating.predict_band(q, C=grid)
        ax.plot(grid, b["value"], color="C1", ls="--", label="E + A C^-gamma")
        _band(ax, grid, b["lo"], b["hi"], "C1")
    ax.axvline(C.max(), color="grey", lw=0.8, ls=":", label="largest budget in data")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="compute C = 6ND (FLOP)",
        ylabel="loss",
        title=title or "loss vs compute",
    )
    ax.legend(fontsize=7)
    fig.savefig(path)
    return path


def plot_isoflop(path: Path, data: dict[str, np.ndarray], isoflop: AllocationFit, *, title: str = "") -> Path:
    """Loss against model size for each compute budget used, with its parabola and minimum."""
    from matplotlib import colormaps

    fig = _figure()
    ax = fig.add_subplot()
    cmap = colormaps["plasma"]
    pts = isoflop.points
    for i, p in enumerate(pts):
        color = cmap(i / max(len(pts) - 1, 1) * 0.9)
        runs = np.asarray(p["runs"])
        ax.scatter(data["N"][runs], data["loss"][runs], s=10, color=color)
        lo, hi = p["log10N_range"]
        x = np.linspace(lo, hi, 100)
        ax.plot(10**x, np.polyval(p["parabola_log10N"], x), color=color, lw=1, label=f"C={p['C']:.1e}")
        ax.plot(p["N_opt"], p["loss_min"], marker="*", color=color, ms=9, mec="k", mew=0.5)
    ax.set(
        xscale="log", xlabel="parameters N", ylabel="loss", title=title or "IsoFLOP curves (stars: optima)"
    )
    if len(pts) <= 12:
        ax.legend(fontsize=6, ncol=2)
    fig.savefig(path)
    return path


def plot_allocation(
    path: Path,
    c_range: tuple[float, float],
    *,
    chinchilla: ChinchillaFit | None = None,
    isoflop: AllocationFit | None = None,
    envelope: AllocationFit | None = None,
    targets: tuple[float, ...] = (),
    q: tuple[float, float] = (0.05, 0.95),
    title: str = "",
) -> Path:
    """N* and D* against compute from each approach, with bootstrap bands, out to the targets."""
    fig = _figure(10, 4.4)
    axes = fig.subplots(1, 2)
    grid = _compute_grid(c_range[0], max([c_range[1], *targets]))
    for ax, key in zip(axes, ("N_opt", "D_opt"), strict=True):
        if chinchilla is not None:
            ax.plot(
                grid,
                chinchilla_optimum(chinchilla.param_array[None], grid)[key][0],
                color="C3",
                label="Approach 3 (Chinchilla form)",
            )
            if len(chinchilla.boot) > 1:
                lo, hi = np.quantile(chinchilla_optimum(chinchilla.boot, grid)[key], q, axis=0)
                _band(ax, grid, lo, hi, "C3")
        for fit, color, label in (
            (isoflop, "C0", "Approach 2 (IsoFLOP)"),
            (envelope, "C2", "Approach 1 (envelope)"),
        ):
            if fit is None:
                continue
            b = fit.band(grid, q)[key]
            ax.plot(grid, b["value"], color=color, ls="--", label=label)
            _band(ax, grid, b["lo"], b["hi"], color)
            # IsoFLOP points are fitted optima (N_opt, D_opt); envelope points are runs (N, D)
            pc = np.array([p["C"] for p in fit.points])
            pv = np.array([p.get(key, p.get(key[0])) for p in fit.points])
            ax.scatter(pc, pv, s=10, color=color)
        ax.axvline(c_range[1], color="grey", lw=0.8, ls=":")
        for t in targets:
            ax.axvline(t, color="k", lw=0.5, ls="--", alpha=0.4)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="compute C (FLOP)",
            ylabel="N* (parameters)" if key == "N_opt" else "D* (tokens)",
        )
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "compute-optimal allocation (bands: bootstrap)")
    fig.savefig(path)
    return path


def plot_residuals(path: Path, chinchilla: ChinchillaFit, *, title: str = "") -> Path:
    """log(observed / predicted) of the Chinchilla fit against compute and model size."""
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2, sharey=True)
    r = chinchilla.residuals()
    N, D = chinchilla.data["N"], chinchilla.data["D"]
    for ax, x, label in (
        (axes[0], training_flops_6nd(N, D), "compute C (FLOP)"),
        (axes[1], N, "parameters N"),
    ):
        sc = ax.scatter(x, r, s=8, c=np.log10(D / N), cmap="coolwarm")
        ax.axhline(0, color="k", lw=0.8)
        for s in (-1, 1):
            ax.axhline(s * chinchilla.delta, color="grey", lw=0.6, ls=":")
        ax.set(xscale="log", xlabel=label)
    axes[0].set_ylabel("log(observed / predicted)")
    fig.colorbar(sc, ax=axes, label="log10 tokens per parameter")
    fig.suptitle(title or "Chinchilla-fit residuals (dotted: Huber delta)")
    fig.savefig(path)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_group(out: Path, g: GroupFit, q: tuple[float, float], single: bool) -> list[str]:
    """Every plot ``harness fit`` makes for one group of runs; file names carry the group unless single."""
    data, targets = g.data, tuple(g.targets)
    chinchilla, isoflop = g.get("chinchilla", ChinchillaFit), g.get("isoflop", AllocationFit)
    suffix = "" if single else f"_{_safe(g.group)}"
    title = "" if single else f" ({g.group})"
    paths = [
        plot_loss_vs_compute(
            out / f"loss_vs_compute{suffix}.png",
            data,
            chinchilla=chinchilla,
            saturating=g.get("saturating", LawFit),
            frontier=g.frontier,
            targets=targets,
            q=q,
            title=f"loss vs compute{title}",
        )
    ]
    if isoflop is not None:
        paths.append(
            plot_isoflop(out / f"isoflop{suffix}.png", data, isoflop, title=f"IsoFLOP curves{title}")
        )
    if any(k in g.fits for k in ("chinchilla", "isoflop", "envelope")):
        paths.append(
            plot_allocation(
                out / f"optimal_allocation{suffix}.png",
                (float(data["C"].min()), float(data["C"].max())),
                chinchilla=chinchilla,
                isoflop=isoflop,
                envelope=g.get("envelope", AllocationFit),
                targets=targets,
                q=q,
                title=f"compute-optimal N* and D*{title}",
            )
        )
    if chinchilla is not None:
        paths.append(
            plot_residuals(
                out / f"residuals{suffix}.png", chinchilla, title=f"Chinchilla-fit residuals{title}"
            )
        )
    return [str(p) for p in paths]
