"""The fusion kind: a CNN's score and the angle model's together. The CNN's and the angle
model's scores are out-of-sample on the inner validation split, so the fusion is fitted
there; its threshold comes from cross-validated fusion scores on that split (grouped by
subject), never from photos it was fitted on."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import GroupKFold

from posturescreen.config.study import ModelConfig
from posturescreen.models.kinds.angles import angle_columns, fit_angle_model
from posturescreen.models.kinds.base import FoldFit, FoldInputs, LinearParts, ModelKind
from posturescreen.models.linear import FusionModel
from posturescreen.stats.metrics import rule_threshold


def _cross_validated(cnn: np.ndarray, angle_logit: np.ndarray, y: np.ndarray,
                     groups: np.ndarray, C: float) -> np.ndarray:
    """Fusion scores for the inner validation photos, each from a fusion fitted without its
    subject's photos (grouped k-fold, k <= 5)."""
    k = min(5, len(np.unique(groups)))
    out = np.full(len(y), np.nan)
    if k < 2:
        return out
    for fit, held in GroupKFold(n_splits=k).split(cnn, y, groups):
        m = FusionModel.fit(cnn[fit], angle_logit[fit], y[fit], C=C)
        out[held] = m.predict(cnn[held], angle_logit[held])
    return out


class FusionKind(ModelKind):
    name = "fusion"
    summary = "a CNN's score and the angle model's together"
    uses_pixels = True
    uses_angles = True
    linear_parts = ("angles", "fusion")

    def reads(self, model: ModelConfig) -> str | None:
        return model.cnn

    def weights_of(self, model: ModelConfig) -> str | None:
        return model.cnn

    def architecture(self, model: str, cnn: str | None) -> str | None:
        return cnn

    def describe(self, model: ModelConfig) -> str:
        return f"fusion of {model.cnn} with the angle model"

    def fit(self, inputs: FoldInputs) -> FoldFit:
        split, angles, C = inputs.split, inputs.angles, inputs.model.C
        # the angle part on inner train only: its scores on inner validation stay
        # out-of-sample
        angle_model = fit_angle_model(angles, split.train, split.y_train, C=C)
        cnn_val = inputs.scores(inputs.model.cnn, "val", split.val)
        cnn_test = inputs.scores(inputs.model.cnn, "test", split.test)
        a_val = angle_model.logit(angle_model.matrix(angle_columns(angles, split.val)))
        a_test = angle_model.logit(angle_model.matrix(angle_columns(angles, split.test)))
        fusion = FusionModel.fit(cnn_val, a_val, split.y_val, C=C)
        test_prob = fusion.predict(cnn_test, a_test)
        groups = inputs.groups.loc[split.val].astype(str).to_numpy()
        # the validation scores written (and the threshold) are cross-validated
        val_prob = _cross_validated(cnn_val, a_val, split.y_val, groups, C)
        how = "cross-validated"
        if not np.isfinite(val_prob).all():
            warnings.warn(f"{inputs.model.name}: too few subjects in the inner validation "
                          "split to cross-validate the fusion; its threshold uses in-sample "
                          "scores", stacklevel=2)
            val_prob, how = fusion.predict(cnn_val, a_val), "in-sample"
        threshold = rule_threshold(inputs.threshold, split.y_val, val_prob)
        info = {"threshold": threshold, "threshold_rule": inputs.threshold.rule,
                "threshold_scores": how, "features": angle_model.features,
                "coefficients_per_sd": angle_model.importance(),
                "fusion_weights": {"cnn": fusion.coef[0], "angles": fusion.coef[1]},
                "fitted_on": "angles: inner train split; fusion: inner validation split"}
        return FoldFit(info, val_prob, test_prob,
                       linear_model={"angles": angle_model.to_dict(),
                                     "fusion": fusion.to_dict()})

    def probability(self, cnn_prob: float | None, parts: LinearParts,
                    angles: dict[str, float]) -> float:
        a = parts.angles
        return float(parts.fusion.predict([cnn_prob], a.logit(a.matrix(angles)))[0])
