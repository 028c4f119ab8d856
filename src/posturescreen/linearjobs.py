"""Fitting the angle and fusion models of one fold (no test-fold information enters a fit):

- angles: needs no early stopping, so it is fitted on all of the fold's training photos
  (inner train and inner validation); its out-of-sample scores on those photos, for the
  threshold and the recalibration, come from a grouped 5-fold cross-validation over them;
- fusion: the CNN's and the angle model's scores are out-of-sample on the inner validation
  split, so the fusion is fitted there; its threshold comes from cross-validated fusion scores
  on that split (grouped by subject), never from photos it was fitted on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from posturescreen import runfolder as rf
from posturescreen.anglemodel import AngleModel, FusionModel
from posturescreen.angles import ANGLES
from posturescreen.config import ThresholdConfig
from posturescreen.errors import PostureScreenError
from posturescreen.metrics import rule_threshold
from posturescreen.poses import angle_features
from posturescreen.splits import FoldSplit


class MissingCNNError(PostureScreenError):
    """A fusion job ran before the CNN it fuses."""


@dataclass
class FittedLinear:
    info: dict  # for fold.json
    val_prob: np.ndarray  # out-of-sample scores of the photos in `val_idx`
    test_prob: np.ndarray
    model_json: dict  # linear_model.json: every number needed to predict
    val_idx: np.ndarray | None = None  # default: the inner validation split
    y_val: np.ndarray | None = None



def _angle_model(angles: pd.DataFrame, idx: np.ndarray, y: np.ndarray,
                 C: float) -> AngleModel:
    names = angle_features(angles)
    if not names:
        raise PostureScreenError("no posture angle could be measured on any photo: check the "
                                 "landmark columns or the pose estimator's output (pose.csv)")
    return AngleModel.fit(angles.loc[idx, names].to_numpy(dtype=float), names, y, C)


def _cross_validated_angles(angles: pd.DataFrame, idx: np.ndarray, y: np.ndarray,
                            groups: np.ndarray, C: float) -> np.ndarray:
    """Angle-model scores for the training photos, each from a model fitted without its
    subject's photos (grouped k-fold, k <= 5)."""
    out = np.full(len(idx), np.nan)
    k = min(5, len(np.unique(groups)))
    for fit, held in GroupKFold(n_splits=k).split(idx, y, groups):
        m = _angle_model(angles, idx[fit], y[fit], C)
        out[held] = m.predict(m.matrix(_columns(angles, idx[held])))
    return out


def fit_angle_job(angles: pd.DataFrame, split: FoldSplit, C: float, rule: ThresholdConfig,
                  cohort: pd.DataFrame, subject_column: str) -> FittedLinear:
    train = np.concatenate([split.train, split.val])
    y = np.concatenate([split.y_train, split.y_val])
    model = _angle_model(angles, train, y, C)
    groups = cohort.loc[train, subject_column].astype(str).to_numpy()
    cv_prob = _cross_validated_angles(angles, train, y, groups, C)
    test_prob = model.predict(model.matrix(_columns(angles, split.test)))
    threshold = rule_threshold(rule, y, cv_prob)
    info = {"threshold": threshold, "threshold_rule": rule.rule,
            "features": model.features, "coefficients_per_sd": model.importance(),
            "fitted_on": "all training photos (inner train and validation); threshold and "
                         "validation scores cross-validated over them (5 folds, by subject)"}
    return FittedLinear(info, cv_prob, test_prob, {"angles": model.to_dict()}, train, y)


def _columns(angles: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    sub = angles.loc[idx]
    return {c: sub[c].to_numpy(dtype=float) for c in ANGLES if c in sub}


def _cnn_scores(cnn_dir: Path, cohort: pd.DataFrame, idx: np.ndarray,
                file: str) -> np.ndarray:
    path = cnn_dir / file
    if not path.is_file():
        raise MissingCNNError(f"{cnn_dir}: the CNN's job is not finished; fusion jobs run "
                              "after their CNN's (rerun the study to finish it)")
    table = pd.read_csv(path).set_index("row")["prob"]
    rows = cohort.loc[idx, "row"].to_numpy()
    missing = set(rows) - set(table.index)
    if missing:
        raise AssertionError(f"{path}: the CNN did not score rows {sorted(missing)[:5]} of "
                             "this split; fusion needs the same split as its CNN")
    return table.loc[rows].to_numpy(dtype=float)


def _cross_validated_fusion(cnn: np.ndarray, angle_logit: np.ndarray, y: np.ndarray,
                            groups: np.ndarray, C: float) -> np.ndarray:
    """Fusion scores for the inner validation photos, each from a fusion fitted without its
    subject's photos (grouped k-fold, k <= 5)."""
    k = min(5, len(np.unique(groups)))
    out = np.full(len(y), np.nan)
    if k < 2:
        return out
    for fit, held in GroupKFold(n_splits=k).split(cnn, y, groups):
        m = FusionModel.fit(cnn[fit], angle_logit[fit], y[fit], C)
        out[held] = m.predict(cnn[held], angle_logit[held])
    return out


def fit_fusion_job(angles: pd.DataFrame, split: FoldSplit, C: float, rule: ThresholdConfig,
                   cnn_dir: Path, cohort: pd.DataFrame, subject_column: str) -> FittedLinear:
    # the angle part on inner train only: its scores on inner validation stay out-of-sample
    angle_model = _angle_model(angles, split.train, split.y_train, C)
    cnn_val = _cnn_scores(cnn_dir, cohort, split.val, rf.VAL_PREDICTIONS)
    cnn_test = _cnn_scores(cnn_dir, cohort, split.test, rf.PREDICTIONS)
    a_val = angle_model.logit(angle_model.matrix(_columns(angles, split.val)))
    a_test = angle_model.logit(angle_model.matrix(_columns(angles, split.test)))
    fusion = FusionModel.fit(cnn_val, a_val, split.y_val, C)
    test_prob = fusion.predict(cnn_test, a_test)
    groups = cohort.loc[split.val, subject_column].astype(str).to_numpy()
    # the validation scores written (and the threshold) are cross-validated: out-of-sample
    val_prob = _cross_validated_fusion(cnn_val, a_val, split.y_val, groups, C)
    how = "cross-validated"
    if not np.isfinite(val_prob).all():
        warnings.warn(f"{cnn_dir}: too few subjects in the inner validation split to "
                      "cross-validate the fusion; its threshold uses in-sample scores",
                      stacklevel=2)
        val_prob, how = fusion.predict(cnn_val, a_val), "in-sample"
    threshold = rule_threshold(rule, split.y_val, val_prob)
    info = {"threshold": threshold, "threshold_rule": rule.rule,
            "threshold_scores": how, "features": angle_model.features,
            "coefficients_per_sd": angle_model.importance(),
            "fusion_weights": {"cnn": fusion.coef[0], "angles": fusion.coef[1]},
            "fitted_on": "angles: inner train split; fusion: inner validation split"}
    return FittedLinear(info, val_prob, test_prob,
                        {"angles": angle_model.to_dict(), "fusion": fusion.to_dict()})
