"""The logistic link, one implementation for the whole package: every logit and sigmoid of a
probability (recalibration, angle and fusion models, bundles) goes through here.

`sigmoid` is 1 / (1 + exp(−z)) with numpy's overflow silenced: for z below about −709,
exp(−z) is inf and the result the correct limit 0.0 (never an OverflowError or a NaN, as
`math.exp` gave). scipy's `expit` is as stable but differs from this formula in the last bit
for about 2% of inputs (measured on 10⁶ normal draws), which would change every published
predictions.csv; this form keeps them byte-identical. `logit` clips to [eps, 1 − eps] first,
so 0 and 1 stay finite."""

from __future__ import annotations

import numpy as np

LOGIT_EPS = 1e-7  # recalibration, bundles: p clipped to [1e-7, 1 − 1e-7]


def logit(p: np.ndarray | float, eps: float = LOGIT_EPS) -> np.ndarray:
    """log(p / (1 − p)) in float64, p clipped to [eps, 1 − eps]."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """1 / (1 + exp(−z)) in float64: 0.0 and 1.0 at the extremes, NaN only for NaN."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))
