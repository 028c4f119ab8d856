"""The angle model (a protractor with a logistic regression behind it) and the fusion of a
CNN's score with it — both small linear models whose every number can be written to JSON
and read back: a bundle carries them as data, never as pickled code.

- `AngleModel`: median imputation (training medians), standardisation (training mean/SD) and
  an L2-regularised logistic regression on the angles (scikit-learn fits it).
- `FusionModel`: the CNN's logit and the angle model's logit, each standardised, summed
  with one shared weight and recalibrated by a logistic regression on the inner validation
  split (photos neither model trained on; the CNN's checkpoint was chosen there, which is
  why the two weights are not fitted separately).
- `lower_risk_change`: which single angle change, within the range seen in training, lowers
  the predicted risk most: a property of the model, not medical advice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.linear_model import LogisticRegression

from posturescreen.errors import PostureScreenError
from posturescreen.posture.angles import ANGLES, SHORT_NAMES, UNITS
from posturescreen.stats.links import logit, sigmoid

MIN_OBSERVED = 0.5  # an angle measured in fewer training photos than this share is dropped


# the fusion's CNN logit clips at 1e-6, not links' 1e-7: exported fusion bundles standardised
# the logit clipped there, so another value would change what their numbers mean
CNN_LOGIT_EPS = 1e-6


def _cnn_logit(p: np.ndarray) -> np.ndarray:
    """A CNN's probability is a float32 (training.predict_probs): reading it as exactly that
    float32, whether it comes from a CSV's text or a fresh forward pass, makes a fusion give
    the same number in the study and in a bundle."""
    return logit(np.asarray(p, dtype=np.float32).astype(np.float64), eps=CNN_LOGIT_EPS)


def _fit_logistic(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    if len(np.unique(y)) < 2:  # one class: a constant model at the observed rate
        return np.zeros(X.shape[1]), float(logit(y.mean(), eps=1e-3))
    lr = LogisticRegression(C=C, max_iter=5000)
    lr.fit(X, y)
    return lr.coef_[0].astype(float), float(lr.intercept_[0])


# bounds far beyond any fitted model's, tight enough that no sum of products overflows:
# a bundle's numbers then always give a finite probability
_Finite = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
_Scale = Annotated[float, Field(ge=1e-9, le=1e6, allow_inf_nan=False)]


class _Numbers(BaseModel):
    """Plain numbers, checked on construction (a bundle's metadata.json is read into these):
    finite, scales positive; keys a newer writer added are ignored."""

    model_config = ConfigDict(extra="ignore")

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        return cls.model_validate(d)


class AngleModel(_Numbers):
    features: list[str] = Field(min_length=1, max_length=len(ANGLES))
    medians: list[_Finite]
    means: list[_Finite]
    scales: list[_Scale]
    coef: list[_Finite]  # per standardised feature
    intercept: _Finite
    low: list[_Finite]  # 5th and 95th percentiles in training: the plausible range of changes
    high: list[_Finite]
    C: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> AngleModel:
        unknown = set(self.features) - set(ANGLES)
        if unknown:
            raise ValueError(f"unknown angles {sorted(unknown)}")
        n = len(self.features)
        if any(len(v) != n for v in (self.medians, self.means, self.scales, self.coef,
                                     self.low, self.high)):
            raise ValueError("every per-feature list must have one value per feature")
        return self

    @classmethod
    def fit(cls, angles: np.ndarray, names: Sequence[str], y: np.ndarray,
            *, C: float = 1.0) -> AngleModel:
        """angles: (n, k) with NaN where an angle could not be measured."""
        angles = np.asarray(angles, dtype=float)
        observed = np.isfinite(angles).mean(axis=0) if len(angles) else np.zeros(len(names))
        keep = [j for j in range(len(names)) if observed[j] >= MIN_OBSERVED]
        if not keep:
            raise PostureScreenError(
                f"no posture angle was measured in at least {MIN_OBSERVED:.0%} of the "
                f"{len(angles)} training photos: check the landmark columns or the pose "
                "estimator's output (pose.csv, no_person.csv)")
        X = angles[:, keep]
        medians = np.array([np.nanmedian(X[:, j]) for j in range(len(keep))])
        X = np.where(np.isfinite(X), X, medians)
        means, scales = X.mean(axis=0), X.std(axis=0)
        scales = np.where(scales > 1e-9, scales, 1.0)
        coef, intercept = _fit_logistic((X - means) / scales, np.asarray(y, int), C)
        return cls(features=[names[j] for j in keep], medians=medians.tolist(),
                   means=means.tolist(), scales=scales.tolist(), coef=coef.tolist(),
                   intercept=intercept, low=np.percentile(X, 5, axis=0).tolist(),
                   high=np.percentile(X, 95, axis=0).tolist(), C=C)

    def matrix(self, angles: dict[str, np.ndarray] | dict[str, float]) -> np.ndarray:
        """The model's features from a name → values mapping, medians for missing values."""
        cols = [np.atleast_1d(np.asarray(angles.get(f, np.nan), dtype=float))
                for f in self.features]
        n = max((len(c) for c in cols), default=1)
        X = np.column_stack([np.broadcast_to(c, (n,)) for c in cols]) if cols \
            else np.zeros((n, 0))
        return np.where(np.isfinite(X), X, np.asarray(self.medians))

    def logit(self, X: np.ndarray) -> np.ndarray:
        z = (X - np.asarray(self.means)) / np.asarray(self.scales)
        return z @ np.asarray(self.coef) + self.intercept

    def predict(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(X))

    def importance(self) -> dict[str, float]:
        """Coefficient per standard deviation of each angle (log-odds)."""
        return dict(zip(self.features, self.coef, strict=True))


FUSION_MODES = ("both", "cnn", "angles")
# which standardised scores a mode sums (the others get weight 0)
_MODE_PARTS = {"both": (1.0, 1.0), "cnn": (1.0, 0.0), "angles": (0.0, 1.0)}


class FusionModel(_Numbers):
    """p = sigmoid(w·z(cnn logit) + w·z(angle logit) + b) in mode `both`: the two standardised
    scores with one shared weight; in mode `cnn` the CNN's alone; in mode `angles` the angle
    model itself (`angle_model_alone`: the study's choice unless a grouped cross-validation
    shows another mode significantly better). The weight is never negative (non-negative
    stacking, Breiman 1996): both parts were trained to score positives higher, and a few
    validation photos that rank the other way give the fusion no weight (a constant) rather
    than an inverted part. The two weights are never learned separately: the inner
    validation photos the fusion is fitted on also chose the CNN's checkpoint, so the CNN's
    scores there flatter it, and a free weight would favour it (measured on the demo: the
    CNN got the larger weight in every CH fold while its test AUC was 0.54)."""

    means: list[_Finite] = Field(min_length=2, max_length=2)
    scales: list[_Scale] = Field(min_length=2, max_length=2)
    coef: list[_Finite] = Field(min_length=2, max_length=2)
    intercept: _Finite
    mode: Literal["both", "cnn", "angles"] = "both"

    @classmethod
    def fit(cls, cnn_prob: np.ndarray, angle_logit: np.ndarray, y: np.ndarray,
            *, C: float = 1.0, mode: str = "both") -> FusionModel:
        X = np.column_stack([_cnn_logit(cnn_prob), np.asarray(angle_logit, dtype=float)])
        means, scales = X.mean(axis=0), X.std(axis=0)
        scales = np.where(scales > 1e-9, scales, 1.0)
        parts = np.asarray(_MODE_PARTS[mode])
        summed = ((X - means) / scales) @ parts
        y = np.asarray(y, int)
        coef, intercept = _fit_logistic(summed[:, None], y, C)
        if coef[0] < 0:  # never turned against the training: no weight instead
            coef, intercept = np.zeros(1), float(logit(y.mean(), eps=1e-3))
        return cls(means=means.tolist(), scales=scales.tolist(),
                   coef=(float(coef[0]) * parts).tolist(), intercept=intercept, mode=mode)

    @classmethod
    def angle_model_alone(cls) -> FusionModel:
        """The fusion that is the angle model: its logit passed through unchanged (the CNN's
        weight 0), so its probability is exactly the angle model's."""
        return cls(means=[0.0, 0.0], scales=[1.0, 1.0], coef=[0.0, 1.0], intercept=0.0,
                   mode="angles")

    def predict(self, cnn_prob: np.ndarray, angle_logit: np.ndarray) -> np.ndarray:
        X = np.column_stack([_cnn_logit(cnn_prob), np.asarray(angle_logit, dtype=float)])
        z = (X - np.asarray(self.means)) / np.asarray(self.scales)
        return sigmoid(z @ np.asarray(self.coef) + self.intercept)


@dataclass(frozen=True)
class RiskChange:
    angle: str
    before: float  # the angle as measured (NaN: not measured, the training median assumed)
    after: float
    risk_before: float
    risk_after: float

    def sentence(self) -> str:
        verb = "raise" if self.after > self.before else "lower"
        unit = UNITS.get(self.angle, "")
        return (f"{verb} {SHORT_NAMES.get(self.angle, self.angle)} by "
                f"{abs(self.after - self.before):.1f}{unit} → risk {self.risk_before:.2f} → "
                f"{self.risk_after:.2f}")


def lower_risk_change(models: Sequence[AngleModel], values: dict[str, float],
                      risk: Callable[[dict[str, float]], float]) -> RiskChange | None:
    """The single angle change that lowers `risk(angles)` most: each angle the fold models
    use, in turn, moved by one training standard deviation either way, never beyond the range
    seen in training (5th–95th percentile). A missing angle starts at the training median.
    None when no such change lowers the risk."""
    base = float(risk(values))
    best: RiskChange | None = None
    names = list(dict.fromkeys(f for m in models for f in m.features))
    for name in names:
        rows = [(m, m.features.index(name)) for m in models if name in m.features]
        sd = float(np.mean([m.scales[j] for m, j in rows]))
        low = float(np.mean([m.low[j] for m, j in rows]))
        high = float(np.mean([m.high[j] for m, j in rows]))
        now = values.get(name, math.nan)
        start = now if math.isfinite(now) else float(np.mean([m.medians[j] for m, j in rows]))
        for direction in (1.0, -1.0):
            target = float(np.clip(start + direction * sd, min(low, start), max(high, start)))
            if abs(target - start) < 1e-9:
                continue
            after = float(risk({**values, name: target}))
            if after < base - 1e-9 and (best is None or after < best.risk_after):
                best = RiskChange(name, start, target, base, after)
    return best
