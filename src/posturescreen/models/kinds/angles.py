"""The angle kind: a logistic regression on posture angles (a protractor with a model behind
it). It needs no early stopping, so it is fitted on all of the fold's training photos (inner
train and inner validation); its out-of-sample scores on those photos, for the threshold and
the recalibration, come from a grouped 5-fold cross-validation over them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold

from posturescreen.config.study import ModelConfig
from posturescreen.errors import PostureScreenError
from posturescreen.models.kinds.base import FoldFit, FoldInputs, LinearParts, ModelKind
from posturescreen.models.linear import AngleModel
from posturescreen.posture.angles import ANGLES
from posturescreen.posture.tables import angle_features
from posturescreen.stats.links import sigmoid
from posturescreen.stats.metrics import rule_threshold

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 penalties `C: auto` chooses among


def fit_angle_model(angles: pd.DataFrame, idx: np.ndarray, y: np.ndarray, *,
                    C: float | str, groups: np.ndarray | None = None) -> AngleModel:
    """An angle model on the photos `idx`; `C: auto` is chosen among C_GRID by a grouped
    cross-validation over these photos only (`groups`: their subjects)."""
    names = angle_features(angles)
    if not names:
        raise PostureScreenError("no posture angle could be measured on any photo: check the "
                                 "landmark columns or the pose estimator's output (pose.csv)")
    if C == "auto":
        C = choose_C(angles, idx, y, groups=groups)
    return AngleModel.fit(angles.loc[idx, names].to_numpy(dtype=float), names, y, C=C)


def angle_columns(angles: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    sub = angles.loc[idx]
    return {c: sub[c].to_numpy(dtype=float) for c in ANGLES if c in sub}


def cross_validated_logits(angles: pd.DataFrame, idx: np.ndarray, y: np.ndarray, *,
                           groups: np.ndarray, C: float | str) -> np.ndarray:
    """Angle-model logits for the photos `idx`, each from a model fitted without its
    subject's photos (grouped k-fold, k <= 5; `C: auto` chosen inside each fit)."""
    out = np.full(len(idx), np.nan)
    k = min(5, len(np.unique(groups)))
    for fit, held in GroupKFold(n_splits=k).split(idx, y, groups):
        m = fit_angle_model(angles, idx[fit], y[fit], C=C, groups=groups[fit])
        out[held] = m.logit(m.matrix(angle_columns(angles, idx[held])))
    return out


def choose_C(angles: pd.DataFrame, idx: np.ndarray, y: np.ndarray, *,
             groups: np.ndarray | None) -> float:
    """The C of C_GRID with the lowest grouped cross-validated log-loss (ties: the stronger
    penalty); 1.0 when the photos allow no such cross-validation."""
    if groups is None or len(np.unique(groups)) < 3 or len(np.unique(y)) < 2:
        return 1.0
    losses = []
    for C in C_GRID:
        z = cross_validated_logits(angles, idx, y, groups=groups, C=C)
        losses.append(log_loss(y, sigmoid(z), labels=[0, 1]))
    return C_GRID[int(np.argmin(losses))]


class AnglesKind(ModelKind):
    name = "angles"
    summary = "a logistic regression on posture angles"
    uses_angles = True
    linear_parts = ("angles",)

    def describe(self, model: ModelConfig) -> str:
        return "angle model"

    def fit(self, inputs: FoldInputs) -> FoldFit:
        split, angles, C = inputs.split, inputs.angles, inputs.model.C
        train = np.concatenate([split.train, split.val])
        y = np.concatenate([split.y_train, split.y_val])
        groups = inputs.groups.loc[train].astype(str).to_numpy()
        model = fit_angle_model(angles, train, y, C=C, groups=groups)
        cv_prob = sigmoid(cross_validated_logits(angles, train, y, groups=groups, C=C))
        test_prob = model.predict(model.matrix(angle_columns(angles, split.test)))
        threshold = rule_threshold(inputs.threshold, y, cv_prob)
        info = {"threshold": threshold, "threshold_rule": inputs.threshold.rule,
                "features": model.features, "coefficients_per_sd": model.importance(),
                "C": model.C,
                "fitted_on": "all training photos (inner train and validation); threshold and "
                             "validation scores cross-validated over them (5 folds, by subject)"}
        return FoldFit(info, cv_prob, test_prob, val_idx=train, y_val=y,
                       linear_model={"angles": model.to_dict()})

    def probability(self, cnn_prob: float | None, parts: LinearParts,
                    angles: dict[str, float]) -> float:
        return float(parts.angles.predict(parts.angles.matrix(angles))[0])
