"""Critical batch size vs loss: Kaplan's B_crit(L) = B* / L^(1/alpha_B), fitted to measured noise scales.

Input: the gradient noise scale B_simple = tr(Sigma) / |G|^2 of McCandlish et al. 2018 ("An
Empirical Model of Large-Batch Training", arXiv:1812.06162, Sec. 2.2 and App. A.1), in tokens,
which the trainer measures at world size > 1 and records as ``training.noise_scale.b_simple_tokens``
(the ``b_simple`` column of ``records_table``; smoothed over the run, read at its end) and per step
as ``b_simple`` in metrics.jsonl. McCandlish et al. found B_crit ~ B_noise and B_simple a fair
proxy for it (equal when the Hessian is a multiple of the identity); we use B_simple as B_crit.

Fit: Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", arXiv:2001.08361, Sec. 5.1,
summarised as eq. 1.4) found B_crit depends on the model only through its loss,
B_crit(L) = B* / L^(1/alpha_B) with B* ~ 2e8 tokens and alpha_B ~ 0.21, for L in nats per GPT-2
BPE token on WebText2. Here log B = log B* - (1/alpha_B) log L is fitted by least squares across
runs, with a pairs bootstrap (runs resampled) for intervals on B*, alpha_B and every prediction.

Units: B* is the critical batch at L = 1 nat, so it depends on what a "token" is. Our CPU runs
are byte-level (nats per byte); Kaplan's constants are per BPE token. Every result names its unit.

Torch-free, like all of ``harness.analysis``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd

# Kaplan et al. 2020, Sec. 5.1 (eq. 1.4 in their summary): B_crit(L) = B*/L^(1/alpha_B); they call B*
# tokenization-dependent.
KAPLAN_B_STAR = 2.0e8  # tokens (GPT-2 BPE)
KAPLAN_ALPHA_B = 0.21
KAPLAN_SOURCE = (
    "Kaplan et al. 2020 (arXiv:2001.08361, Sec. 5.1, eq. 1.4): published B* = 2e8 tokens, alpha_B = 0.21, "
    "fitted on GPT-2 BPE tokens of WebText2 with L in nats per BPE token; no interval published"
)
RECORD_COLUMN = "b_simple"  # records_table column: training.noise_scale.b_simple_tokens
RECORD_FIELDS = (
    "training.noise_scale.b_simple_tokens",
    "training.noise_scale_b_simple",
)  # current, brief's name
METRICS_FIELD = "b_simple"
MIN_POINTS = 3


class CriticalBatchError(ValueError):
    """Data a critical-batch law cannot be fitted to; the message says what is missing."""


@dataclass
class CriticalBatchFit:
    """B_crit(L) = B* / L^(1/alpha_B); ``boot`` rows are (log B*, 1/alpha_B) of each bootstrap refit."""

    B_star: float
    alpha_B: float
    n_points: int
    loss_range: tuple[float, float]
    resid_sd: float  # standard deviation of log B residuals (the scatter of one run about the law)
    source: str
    loss_unit: str
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False)
    n_bootstrap_failed: int = 0
    data: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def predict_array(self, loss: ArrayLike) -> np.ndarray:
        L = np.asarray(loss, dtype=float)
        return self.B_star / L ** (1.0 / self.alpha_B)

    def predict(
        self, loss: float, q: tuple[float, float] = (0.05, 0.95), *, scatter: bool = False, seed: int = 0
    ) -> dict[str, Any]:
        """B_crit at ``loss`` with a bootstrap interval (of the law; ``scatter`` adds one run's scatter).

        ``extrapolated`` says whether the loss lies outside the fitted runs' losses, and by what factor.
        """
        L = float(loss)
        if not (math.isfinite(L) and L > 0):
            raise CriticalBatchError(f"loss {loss!r}; allowed: finite > 0")
        value = float(self.predict_array(L))
        out: dict[str, Any] = {
            "loss": L,
            "value": value,
            "lo": value,
            "hi": value,
            "unit": "tokens",
            "loss_unit": self.loss_unit,
        }
        if len(self.boot):
            draws = np.exp(self.boot[:, 0] - self.boot[:, 1] * math.log(L))
            if scatter and self.resid_sd > 0:
                draws = draws * np.exp(np.random.default_rng(seed).normal(0.0, self.resid_sd, len(draws)))
            out["lo"], out["hi"] = (float(x) for x in np.quantile(draws, q))
        lo, hi = self.loss_range
        if not (math.isfinite(lo) and math.isfinite(hi)):  # published constants: no data range known
            out["extrapolated"], out["loss_factor_beyond_data"] = None, None
            return out
        out["extrapolated"] = not lo <= L <= hi
        out["loss_factor_beyond_data"] = max(lo / L, L / hi, 1.0) if out["extrapolated"] else 1.0
        return out

    def interval(self, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, dict[str, float]]:
        if not len(self.boot):
            return {
                "B_star": {"value": self.B_star, "lo": self.B_star, "hi": self.B_star},
                "alpha_B": {"value": self.alpha_B, "lo": self.alpha_B, "hi": self.alpha_B},
            }
        b = np.exp(np.quantile(self.boot[:, 0], q))
        k = self.boot[:, 1]
        a = 1.0 / np.quantile(k[k > 0], q[::-1]) if (k > 0).any() else np.array([math.nan, math.nan])
        return {
            "B_star": {"value": self.B_star, "lo": float(b[0]), "hi": float(b[1])},
            "alpha_B": {"value": self.alpha_B, "lo": float(a[0]), "hi": float(a[1])},
        }

    def to_dict(self, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, Any]:
        return {
            "form": "B_crit(L) = B* / L^(1/alpha_B)",
            "B_star_tokens": self.B_star,
            "alpha_B": self.alpha_B,
            "intervals": self.interval(q),
            "quantiles": list(q),
            "n_points": self.n_points,
            "loss_range": list(self.loss_range),
            "resid_sd_log": self.resid_sd,
            "source": self.source,
            "loss_unit": self.loss_unit,
            "n_bootstrap": len(self.boot),
            "n_bootstrap_failed": self.n_bootstrap_failed,
        }


def kaplan_published() -> CriticalBatchFit:
    """Kaplan et al. 2020's constants as a law object (no interval: none was published)."""
    return CriticalBatchFit(
        KAPLAN_B_STAR,
        KAPLAN_ALPHA_B,
        0,
        (math.nan, math.nan),
        0.0,
        KAPLAN_SOURCE,
        "nats per GPT-2 BPE token (WebText2)",
    )


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise least squares y = a + s x for (K, n) arrays: (a, s); s is NaN where x has no spread."""
    xm, ym = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=1)
    s = np.where(sxx > 0, ((x - xm) * (y - ym)).sum(axis=1) / np.where(sxx > 0, sxx, 1.0), np.nan)
    return ym[:, 0] - s * xm[:, 0], s


def fit_critical_batch(
    loss: ArrayLike,
    b_tokens: ArrayLike,
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
    source: str = "",
    loss_unit: str = "nats per token of the runs' vocabulary",
) -> CriticalBatchFit:
    """Least squares of log B_simple on log L across runs, pairs bootstrap for the intervals."""
    L, B = np.asarray(loss, dtype=float).ravel(), np.asarray(b_tokens, dtype=float).ravel()
    if L.shape != B.shape:
        raise CriticalBatchError(f"loss has {L.size} values and b_tokens {B.size}; allowed: one pair per run")
    ok = np.isfinite(L) & np.isfinite(B) & (L > 0) & (B > 0)
    L, B = L[ok], B[ok]
    if L.size < MIN_POINTS or np.unique(np.round(np.log(L), 9)).size < 2:
        raise CriticalBatchError(
            f"{L.size} usable (loss > 0, noise scale > 0) point(s) with "
            f"{np.unique(L).size} distinct losses; need >= {MIN_POINTS} with 2+ distinct losses"
        )
    x, y = np.log(L), np.log(B)
    a, s = (v[0] for v in _ols(x[None], y[None]))
    k = -s  # 1/alpha_B
    if not k > 0:
        raise CriticalBatchError(
            f"the noise scale does not grow as the loss falls (slope d log B / d log L = {s:.3g} "
            ">= 0): Kaplan's form needs alpha_B > 0; the runs span losses "
            f"{L.min():.3g}..{L.max():.3g}"
        )
    resid = y - (a + s * x)
    resid_sd = float(np.std(resid, ddof=2)) if L.size > 2 else 0.0
    boot, failed = np.zeros((0, 2)), 0
    if n_bootstrap > 0:
        idx = np.random.default_rng(seed).integers(0, L.size, size=(n_bootstrap, L.size))
        ab, sb = _ols(x[idx], y[idx])
        good = np.isfinite(sb)
        failed = int((~good).sum())  # resamples with a single distinct loss: no slope
        boot = np.column_stack([ab[good], -sb[good]])
    return CriticalBatchFit(
        float(math.exp(a)),
        float(1.0 / k),
        int(L.size),
        (float(L.min()), float(L.max())),
        resid_sd,
        source,
        loss_unit,
        boot,
        failed,
        {"loss": L, "b_tokens": B},
    )


# --------------------------------------------------------------------------- from run records


def records_points(root: str | Path, loss_col: str = "heldout_loss") -> pd.DataFrame:
    """One row per completed run with a measured noise scale: records_table plus ``b_simple`` (tokens)."""
    from harness.core.records import read_record, records_table

    t = records_table(root)
    if t.empty:
        return t.assign(b_simple=[])
    if (
        RECORD_COLUMN not in t.columns or t[RECORD_COLUMN].isna().all()
    ):  # an older results.py: read it ourselves
        vals = []
        for path in t["path"]:
            rec, v = read_record(path), None
            for dotted in RECORD_FIELDS:
                cur: Any = rec
                for part in dotted.split("."):
                    cur = cur.get(part) if isinstance(cur, dict) else None
                if isinstance(cur, (int, float)):
                    v = float(cur)
                    break
            vals.append(v)
        t[RECORD_COLUMN] = vals
    if loss_col not in t.columns:
        raise CriticalBatchError(
            f"loss column {loss_col!r} not in the records table; columns: {list(t.columns)}"
        )
    t = t[t[RECORD_COLUMN].notna() & t[loss_col].notna()]
    return t[(t[RECORD_COLUMN].astype(float) > 0) & (t[loss_col].astype(float) > 0)].reset_index(drop=True)


def trajectory_points(rows: list[dict], n_bins: int = 5, skip_frac: float = 0.2) -> list[tuple[float, float]]:
    """(loss, b_simple) along one run from its metrics.jsonl rows: after the first ``skip_frac`` of steps
    (warm-up, and the EMA still filling), ``n_bins`` consecutive windows, each its median loss and
    median (already EMA-smoothed) b_simple. Kaplan measured B_crit along training the same way."""
    pts = [
        (float(r["loss"]), float(r[METRICS_FIELD]))
        for r in rows
        if r.get(METRICS_FIELD) is not None and r.get("loss") is not None and "heldout_loss" not in r
    ]
    pts = [(lo, b) for lo, b in pts if math.isfinite(lo) and math.isfinite(b) and lo > 0 and b > 0]
    pts = pts[int(len(pts) * skip_frac) :]
    if len(pts) < n_bins:
        return []
    return [
        (float(np.median([p[0] for p in chunk])), float(np.median([p[1] for p in chunk])))
        for chunk in np.array_split(np.array(pts), n_bins)
    ]


def _loss_unit(table: pd.DataFrame) -> str:
    from harness.core.records import read_record

    vocab = set()
    for path in table["path"]:
        vocab.add((read_record(path).get("model") or {}).get("vocab_size"))
    if vocab == {256}:
        return "nats per byte (byte-level vocabulary of 256)"
    return f"nats per token (vocabulary sizes {sorted(v for v in vocab if v)})"


def fit_from_records(
    root: str | Path,
    *,
    loss_col: str = "heldout_loss",
    trajectories: bool = False,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> CriticalBatchFit:
    """Fit the law to the runs under ``root`` that measured the noise scale (world size > 1).

    Default: one point per run, its end-of-run noise scale against ``loss_col``. ``trajectories``:
    several points per run from metrics.jsonl (train loss along training); the bootstrap still
    resamples points, so its interval is optimistic when a run's points are correlated.
    """
    from harness.core.records import METRICS_FILE

    t = records_points(root, loss_col)
    if t.empty:
        raise CriticalBatchError(
            f"no completed run under {root} records a gradient noise scale "
            f"({RECORD_FIELDS[0]}); it is measured only at world size > 1"
        )
    unit = _loss_unit(t)
    if trajectories:
        pts: list[tuple[float, float]] = []
        for path in t["path"]:
            f = Path(path) / METRICS_FILE
            if f.exists():
                rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
                pts += trajectory_points(rows)
        loss, b = [p[0] for p in pts], [p[1] for p in pts]
        how = f"{len(pts)} points along {len(t)} runs' training (metrics.jsonl b_simple vs train loss)"
    else:
        loss, b = t[loss_col].astype(float).to_numpy(), t[RECORD_COLUMN].astype(float).to_numpy()
        how = f"{len(t)} runs' end-of-run noise scale ({RECORD_FIELDS[0]}) vs {loss_col}"
    return fit_critical_batch(
        loss,
        b,
        n_bootstrap=n_bootstrap,
        seed=seed,
        loss_unit=unit,
        source=f"fitted to this harness's runs under {root}: {how}; B_simple (McCandlish et al. "
        "2018) taken as B_crit, Kaplan et al. 2020's form",
    )


def choose_law(
    spec: str, results: str | None, loss_from_results: bool, *, n_bootstrap: int = 2000, seed: int = 0
) -> tuple[CriticalBatchFit, str]:
    """The critical-batch law for ``harness extrapolate --critical-batch auto|kaplan|fit``, and why.

    auto: this harness's fit when --results runs measured the noise scale and the loss law was
    fitted to the same runs (the same loss unit), else Kaplan's published constants, labelled.
    """
    if spec not in ("auto", "kaplan", "fit"):
        raise CriticalBatchError(
            f"--critical-batch {spec!r}; allowed: auto, kaplan, fit, or a number of tokens"
        )
    why = ""
    if spec in ("auto", "fit"):
        try:
            if not results:
                raise CriticalBatchError("no --results folder given")
            law = fit_from_records(results, n_bootstrap=n_bootstrap, seed=seed)
            if loss_from_results or spec == "fit":
                mismatch = (
                    ""
                    if loss_from_results
                    else (
                        "; WARNING: the loss law is not fitted to these runs, so the predicted loss is in another unit"
                    )
                )
                return law, f"fitted to the --results runs' noise scales{mismatch}"
            why = (
                "the loss law is the Chinchilla one (nats per token) while the measured noise scales belong to "
                f"losses in {law.loss_unit}, so "
            )
        except CriticalBatchError as e:
            if spec == "fit":
                raise
            why = f"no fitted law ({e}), so "
    note = "Kaplan's published constants are used: they are for GPT-2 BPE tokens (nats per BPE token); " + (
        "the loss here is nats per byte of a byte-level corpus, not comparable"
        if loss_from_results
        else "the Chinchilla loss is nats per SentencePiece token on MassiveText, comparable only roughly"
    )
    return kaplan_published(), (why + note) if why else note
