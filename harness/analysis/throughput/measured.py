"""The step-time law fitted to this harness's own (data-parallel) runs, and its held-out check.

``fit_measured`` fits compute rate, overlap, straggler jitter and the all-reduce's alpha and
busbw to the run records (``harness.core.records.records_table``); ``leave_largest_out``
fits it and the USL baseline below the largest world size and predicts the largest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from harness.analysis.throughput import usl
from harness.analysis.throughput.collectives import fit_alpha_beta
from harness.core import collectives

if TYPE_CHECKING:
    import pandas as pd

# The law's inputs per run: world size, FLOPs per device and step, gradient bytes, ring steps, bus factor.
Inputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
MEASURED_PARAMS = ("rate", "overlap", "straggler_cv", "alpha", "busbw")


@dataclass
class MeasuredFit:
    """Coefficients of the step-time law fitted to this harness's own (data-parallel) runs.

    T(n) = c/R + max(0, T_dp(n) - overlap * (2/3) c/R) + cv * c/R * sqrt(2 ln n),
    c = tokens per device per step x FLOPs per token, T_dp = ring all-reduce of the
    gradients (alpha, busbw of the one tier the runs used: fit single-node and multi-node
    runs separately).
    """

    params: dict[str, float]
    boot: np.ndarray  # (n_ok, 5) in MEASURED_PARAMS order
    n_points: int
    rel_rmse: float
    grad_bytes: float
    comm_source: str
    world_sizes: list[int]

    def predict(
        self,
        n: npt.ArrayLike,
        tokens_per_device: npt.ArrayLike,
        flops_per_token: npt.ArrayLike,
        n_params: npt.ArrayLike,
        q: tuple[float, float] = (0.05, 0.95),
    ) -> dict[str, np.ndarray]:
        """Step time (s) with a bootstrap interval that also carries the fit's residual scatter."""
        x = _measured_inputs(n, tokens_per_device, flops_per_token, n_params, self.grad_bytes)
        point = _measured_model(np.array([self.params[k] for k in MEASURED_PARAMS]), *x)
        out = {"value": point}
        if len(self.boot):
            draws = np.array([_measured_model(b, *x) for b in self.boot])
            rng = np.random.default_rng(0)
            draws = draws * np.exp(rng.normal(0.0, self.rel_rmse, draws.shape))
            out["lo"], out["hi"] = np.quantile(draws, q[0], axis=0), np.quantile(draws, q[1], axis=0)
        return out

    def to_dict(self) -> dict[str, Any]:
        ci = {}
        for i, k in enumerate(MEASURED_PARAMS):
            col = self.boot[:, i] if len(self.boot) else np.array([self.params[k]])
            ci[k] = [float(np.quantile(col, 0.05)), float(np.quantile(col, 0.95))]
        return {
            "form": "T = c/R + max(0, T_dp - overlap*(2/3)c/R) + cv*(c/R)*sqrt(2 ln n)",
            "params": self.params,
            "intervals_90": ci,
            "n_points": self.n_points,
            "rel_rmse": self.rel_rmse,
            "comm_source": self.comm_source,
            "world_sizes": self.world_sizes,
            "n_bootstrap_ok": len(self.boot),
        }


def _grad_bytes(d: pd.DataFrame) -> np.ndarray:
    """Bytes per gradient element each run reduced: DDP keeps fp32 parameters (so fp32
    gradients, autocast or not); DeepSpeed in bf16/fp16 reduces half-precision gradients."""
    eng, dt = d.get("engine"), d.get("dtype")
    out = np.full(len(d), 4.0)
    if eng is not None and dt is not None:
        half = (eng.to_numpy() == "deepspeed") & np.isin(dt.to_numpy(), ["bf16", "fp16"])
        out[half] = 2.0
    return out


def _measured_inputs(
    n: npt.ArrayLike, tok: npt.ArrayLike, fpt: npt.ArrayLike, npar: npt.ArrayLike, grad_bytes: npt.ArrayLike
) -> Inputs:
    n = np.asarray(n, float)
    work = np.asarray(tok, float) * np.asarray(fpt, float)
    nbytes = np.asarray(npar, float) * grad_bytes
    steps = np.array([collectives.latency_steps("all_reduce", int(k)) for k in np.atleast_1d(n)], float)
    factor = np.array([collectives.bus_factor("all_reduce", int(k)) for k in np.atleast_1d(n)], float)
    return n, work, nbytes, steps.reshape(n.shape), factor.reshape(n.shape)


def _measured_model(
    p: np.ndarray, n: np.ndarray, work: np.ndarray, nbytes: np.ndarray, steps: np.ndarray, factor: np.ndarray
) -> np.ndarray:
    rate, overlap, cv, alpha, busbw = p
    tc = work / rate
    tdp = steps * alpha + factor * nbytes / busbw
    strag = cv * tc * np.sqrt(2.0 * np.log(np.maximum(n, 1.0)))
    return tc + np.maximum(0.0, tdp - overlap * (2.0 / 3.0) * tc) + strag


def _fit_measured_once(
    x: Inputs, t: np.ndarray, comm: np.ndarray | None, fixed_comm: tuple[float, float] | None, p0: np.ndarray
) -> np.ndarray:
    from scipy.optimize import least_squares

    n, work, nbytes, steps, factor = x

    # Parameters in log space where they are scales (rate, alpha, busbw); overlap, cv bounded.
    def unpack(z: np.ndarray) -> np.ndarray:
        rate, ov, cv = math.exp(z[0]), z[1], z[2]
        alpha, busbw = fixed_comm if fixed_comm else (math.exp(z[3]), math.exp(z[4]))
        return np.array([rate, ov, cv, alpha, busbw])

    def resid(z: np.ndarray) -> np.ndarray:
        p = unpack(z)
        r = np.log(_measured_model(p, *x)) - np.log(t)
        if comm is not None and fixed_comm is None:
            ok = np.isfinite(comm) & (comm > 0) & (n > 1)
            if ok.any():
                tdp = steps[ok] * p[3] + factor[ok] * nbytes[ok] / p[4]
                r = np.concatenate([r, np.log(tdp) - np.log(comm[ok])])
        return r

    # Log-space bounds keep scales physical (and exp() finite) where the data cannot pin them.
    z0 = [math.log(p0[0]), p0[1], p0[2]]
    lo, hi = [math.log(1e3), 0.0, 0.0], [math.log(1e18), 1.0, 1.0]
    if fixed_comm is None:
        z0 += [math.log(p0[3]), math.log(p0[4])]
        lo += [math.log(1e-9), math.log(1e3)]
        hi += [math.log(10.0), math.log(1e13)]
    z0 = list(np.clip(z0, lo, hi))
    sol = least_squares(
        resid, np.array(z0), bounds=(lo, hi), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12
    )
    return unpack(sol.x)


def fit_measured(
    df: pd.DataFrame,
    comm_df: pd.DataFrame | None = None,
    *,
    grad_bytes: float | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> MeasuredFit:
    """Fit the step-time law to measured runs (``harness.core.records.records_table``).

    Needs columns world_size, tokens_per_device_per_step, flops_per_token, N_total (or N)
    and step_time_s; comm_time_s (measured gradient all-reduce time) pins alpha and busbw
    when present, and a commbench table (``collectives.load_commbench``) fixes them outright.
    Case bootstrap (runs resampled) for intervals.
    """
    need = ["world_size", "tokens_per_device_per_step", "flops_per_token", "step_time_s"]
    d = df.dropna(subset=need)
    d = d[d["step_time_s"] > 0]
    if len(d) < 4 or d["world_size"].nunique() < 2:
        raise ValueError(
            f"need >= 4 runs over >= 2 world sizes with step times to fit the throughput law; "
            f"got {len(d)} runs, world sizes {sorted(d['world_size'].unique().tolist())}"
        )
    npar_col = "N_total" if "N_total" in d and d["N_total"].notna().all() else "N"
    gb = _grad_bytes(d) if grad_bytes is None else np.full(len(d), float(grad_bytes))
    x = _measured_inputs(
        d["world_size"].to_numpy(),
        d["tokens_per_device_per_step"].to_numpy(),
        d["flops_per_token"].to_numpy(),
        d[npar_col].to_numpy(),
        gb,
    )
    t = d["step_time_s"].to_numpy(float)
    comm = d["comm_time_s"].to_numpy(float) if "comm_time_s" in d else None

    fixed = None
    source = "fitted from step times"
    if comm_df is not None and len(comm_df):
        try:
            ab = fit_alpha_beta(comm_df, "all_reduce", n_bootstrap=0)
            fixed = (ab["alpha_s"], ab["busbw_Bps"])
            source = f"commbench all_reduce fit ({ab['tier']}, {ab['n_points']} points)"
        except ValueError:
            fixed = None
    if fixed is None and comm is not None and np.isfinite(comm[x[0] > 1]).any():
        source = "fitted from step times and measured comm times"

    one = x[0] == x[0].min()
    rate0 = float(np.median(x[1][one] / t[one]))
    p0 = np.array([rate0, 0.5, 0.01, 1e-5, 1e9])
    p = _fit_measured_once(x, t, comm, fixed, p0)
    pred = _measured_model(p, *x)
    rel_rmse = float(np.sqrt(np.mean((np.log(pred) - np.log(t)) ** 2)))

    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(t), len(t))
        if len(np.unique(x[0][idx])) < 2:
            continue
        xi = cast(Inputs, tuple(a[idx] for a in x))
        try:
            boot.append(_fit_measured_once(xi, t[idx], None if comm is None else comm[idx], fixed, p))
        except (ValueError, FloatingPointError, OverflowError):
            continue
    return MeasuredFit(
        dict(zip(MEASURED_PARAMS, map(float, p), strict=True)),
        np.array(boot) if boot else np.zeros((0, 5)),
        len(t),
        rel_rmse,
        float(np.median(gb)),
        source,
        sorted(int(k) for k in np.unique(x[0])),
    )


def leave_largest_out(df: pd.DataFrame, *, n_bootstrap: int = 100, seed: int = 0) -> dict[str, Any]:
    """Fit the grey-box law and the USL on runs below the largest world size; predict the largest.

    The USL is fitted per weak-scaling series (same model and tokens per device); the
    grey-box law on all smaller runs at once. Errors are (predicted - measured)/measured of
    tokens/s at the held-out world size.
    """
    d = df.dropna(subset=["world_size", "step_time_s", "tokens_per_device_per_step", "flops_per_token"])
    n_max = int(d["world_size"].max())
    train = d[d["world_size"] < n_max]
    out: dict[str, Any] = {"held_out_world_size": n_max, "rows": []}
    try:
        gf = fit_measured(train, n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as e:
        out["greybox_fit_failed"] = str(e)
        gf = None
    npar_col = "N_total" if "N_total" in d and d["N_total"].notna().all() else "N"
    for key, series in d.groupby(["model", "tokens_per_device_per_step"], dropna=False):
        held = series[series["world_size"] == n_max]
        small = series[series["world_size"] < n_max]
        if held.empty:
            continue
        x_meas = (
            float(held["tokens_per_s"].median())
            if "tokens_per_s" in held
            else float(held["tokens_per_device_per_step"].iloc[0] * n_max / held["step_time_s"].median())
        )
        row: dict[str, Any] = {
            "model": key[0],
            "tokens_per_device_per_step": key[1],
            "measured_tokens_per_s": x_meas,
        }
        if gf is not None:
            t_pred = gf.predict(n_max, key[1], held["flops_per_token"].iloc[0], held[npar_col].iloc[0])
            x_pred = key[1] * n_max / float(np.squeeze(t_pred["value"]))
            row["greybox_tokens_per_s"] = x_pred
            row["greybox_error"] = x_pred / x_meas - 1.0
        per_n = small.groupby("world_size")["tokens_per_s"].median() if "tokens_per_s" in small else None
        if per_n is not None and len(per_n) >= 3:
            try:
                u = usl.fit_usl(per_n.index.to_numpy(), per_n.to_numpy(), n_bootstrap=0)
                row["usl_tokens_per_s"] = float(u.predict(n_max))
                row["usl_error"] = row["usl_tokens_per_s"] / x_meas - 1.0
            except ValueError as e:
                row["usl_note"] = str(e)
        else:
            row["usl_note"] = "fewer than 3 smaller world sizes in this series"
        out["rows"].append(row)
    for k in ("greybox_error", "usl_error"):
        errs = [abs(r[k]) for r in out["rows"] if k in r]
        out[f"median_abs_{k}"] = float(np.median(errs)) if errs else None
    return out
