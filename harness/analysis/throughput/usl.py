"""Universal Scalability Law baseline (Gunther): X(n) = lambda n / (1 + sigma (n-1) + kappa n (n-1)).

sigma is contention (serial fraction), kappa coherency (pairwise exchange cost); a
black-box curve with no notion of bytes or FLOPs, kept as the baseline the grey-box
throughput law must beat in leave-largest-out validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class USLFit:
    lam: float
    sigma: float
    kappa: float
    boot: np.ndarray  # (n_ok, 3)
    n_points: int
    rel_rmse: float

    def predict(self, n: Any) -> np.ndarray:
        return usl(np.asarray(n, float), self.lam, self.sigma, self.kappa)

    def interval(self, n: Any, q: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        point = self.predict(n)
        if not len(self.boot):
            return {"value": point, "lo": point, "hi": point}
        draws = np.array([usl(np.asarray(n, float), *b) for b in self.boot])
        return {
            "value": point,
            "lo": np.quantile(draws, q[0], axis=0),
            "hi": np.quantile(draws, q[1], axis=0),
        }

    def peak_n(self) -> float:
        """n of maximum throughput: sqrt((1 - sigma)/kappa) (infinite without coherency cost)."""
        return math.inf if self.kappa <= 0 else math.sqrt(max(0.0, 1.0 - self.sigma) / self.kappa)

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": "X(n) = lambda n / (1 + sigma (n-1) + kappa n (n-1))",
            "lambda": self.lam,
            "sigma": self.sigma,
            "kappa": self.kappa,
            "n_points": self.n_points,
            "rel_rmse": self.rel_rmse,
            "peak_n": self.peak_n(),
            "n_bootstrap_ok": len(self.boot),
        }


def usl(n: np.ndarray, lam: float, sigma: float, kappa: float) -> np.ndarray:
    return lam * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))


def _fit_once(n: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    from scipy.optimize import least_squares

    lam0 = float(np.median(x[n == n.min()] / n[n == n.min()]))

    def resid(z: np.ndarray) -> np.ndarray:
        return np.log(usl(n, math.exp(z[0]), z[1], z[2])) - np.log(x)

    sol = least_squares(
        resid,
        [math.log(lam0), 0.01, 1e-4],
        bounds=([-np.inf, 0.0, 0.0], [np.inf, 1.0, 1.0]),
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
    )
    return math.exp(sol.x[0]), float(sol.x[1]), float(sol.x[2])


def fit_usl(n: Any, x: Any, *, n_bootstrap: int = 200, seed: int = 0) -> USLFit:
    """Least squares on log X (sigma, kappa in [0, 1]); case bootstrap for intervals."""
    n = np.asarray(n, float).reshape(-1)
    x = np.asarray(x, float).reshape(-1)
    if len(n) != len(x):
        raise ValueError(f"n and X differ in length ({len(n)} vs {len(x)})")
    ok = np.isfinite(n) & np.isfinite(x) & (n >= 1) & (x > 0)
    n, x = n[ok], x[ok]
    if len(np.unique(n)) < 3:
        raise ValueError(f"the USL has 3 parameters and needs >= 3 distinct n; got {sorted(set(n.tolist()))}")
    lam, sig, kap = _fit_once(n, x)
    rel = float(np.sqrt(np.mean((np.log(usl(n, lam, sig, kap)) - np.log(x)) ** 2)))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(n), len(n))
        if len(np.unique(n[idx])) < 3:
            continue
        boot.append(_fit_once(n[idx], x[idx]))
    return USLFit(lam, sig, kap, np.array(boot) if boot else np.zeros((0, 3)), len(n), rel)
