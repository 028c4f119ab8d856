"""The fusion kind: a CNN's score and the angle model's together, stacked. The angle model
is the angle kind's own (fitted on all training photos, `C` chosen inside the fold), and on
the inner validation split — where the CNN's scores are out-of-sample — its scores come from
a grouped cross-fit over the training photos, so both inputs of the fusion are out-of-sample
there. The fusion is fitted on that split in one of three modes (both scores with one shared
weight, the CNN alone, the angles alone): the angles alone unless a grouped cross-validation
on the same split shows another mode significantly better, so a CNN that only looks good on
the photos that chose its checkpoint does not dilute the angles. Its threshold comes from
cross-validated fusion scores, never from photos it was fitted on."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import GroupKFold

from posturescreen.config.study import ModelConfig
from posturescreen.models.kinds.angles import (
    angle_columns,
    cross_validated_logits,
    fit_angle_model,
)
from posturescreen.models.kinds.base import FoldFit, FoldInputs, LinearParts, ModelKind
from posturescreen.models.linear import FUSION_MODES, FusionModel
from posturescreen.stats.links import sigmoid
from posturescreen.stats.metrics import rule_threshold

# The stacker's L2 penalty: one weight on standardised scores, prior SD 1. The angle model's
# own C (often 0.01, chosen for many angles) shrank this one weight to ~0.03: a near-constant
# fusion whose thresholds put whole test folds on one side (measured on the demo).
FUSION_C = 1.0
MODE_ALPHA = 0.05  # a mode other than the angles alone must beat them at this level


def cross_validated_fusion(cnn: np.ndarray, angle_logit: np.ndarray, y: np.ndarray, *,
                           groups: np.ndarray, C: float, mode: str) -> np.ndarray:
    """Fusion scores, each from a fusion fitted without its subject's photos (grouped k-fold,
    k <= 5); NaN when there are too few subjects."""
    k = min(5, len(np.unique(groups)))
    out = np.full(len(y), np.nan)
    if k < 2:
        return out
    for fit, held in GroupKFold(n_splits=k).split(cnn, y, groups):
        m = FusionModel.fit(cnn[fit], angle_logit[fit], y[fit], C=C, mode=mode)
        out[held] = m.predict(cnn[held], angle_logit[held])
    return out


def _photo_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def choose_mode(cnn: np.ndarray, angle_logit: np.ndarray, y: np.ndarray, *,
                groups: np.ndarray, C: float) -> tuple[str, dict[str, float], float | None]:
    """The fusion's mode, every mode's grouped cross-validated log-loss, and the one-sided
    p-value of the best mode against the angles alone.

    The angles alone unless another mode lowers the log-loss significantly (paired over
    subjects, one-sided t-test, 5%): on the validation split the angle scores are honest
    (cross-fitted) while the CNN's are flattered by the checkpoint chosen on these very
    photos, so the CNN must show more than that to be used (measured on the full-size
    synthetic cohort: choosing by the lower loss alone took the CNN, alone or beside the
    angles, in every NSP fold while it was the weaker part: fusion 0.567 against the angles'
    0.655). The angles alone, too, when the split allows no cross-validation."""
    y = np.asarray(y, int)
    per_photo = {}
    for mode in FUSION_MODES:
        p = cross_validated_fusion(cnn, angle_logit, y, groups=groups, C=C, mode=mode)
        if not np.isfinite(p).all() or len(np.unique(y)) < 2:
            return "angles", {}, None
        per_photo[mode] = _photo_log_loss(y, p)
    losses = {m: float(v.mean()) for m, v in per_photo.items()}
    best = min(FUSION_MODES, key=lambda m: (losses[m], FUSION_MODES.index(m)))
    if best == "angles":
        return "angles", losses, None
    gain = pd.Series(per_photo["angles"] - per_photo[best]).groupby(groups).mean().to_numpy()
    if len(gain) < 3 or np.std(gain) == 0:
        return "angles", losses, None
    p_value = float(stats.ttest_1samp(gain, 0.0, alternative="greater").pvalue)
    return (best if p_value < MODE_ALPHA else "angles"), losses, p_value


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
        train = np.concatenate([split.train, split.val])
        y = np.concatenate([split.y_train, split.y_val])
        groups = inputs.groups.loc[train].astype(str).to_numpy()
        angle_model = fit_angle_model(angles, train, y, C=C, groups=groups)
        # the validation photos' angle scores from models that did not see their subject
        a_cv = cross_validated_logits(angles, train, y, groups=groups, C=C)
        a_val = a_cv[len(split.train):]
        a_test = angle_model.logit(angle_model.matrix(angle_columns(angles, split.test)))
        cnn_val = inputs.scores(inputs.model.cnn, "val", split.val)
        cnn_test = inputs.scores(inputs.model.cnn, "test", split.test)
        val_groups = groups[len(split.train):]
        mode, losses, p_value = choose_mode(cnn_val, a_val, split.y_val, groups=val_groups,
                                            C=FUSION_C)
        if mode == "angles":  # the angle model itself: its scores, validation and threshold
            fusion = FusionModel.angle_model_alone()
            test_prob = angle_model.predict(angle_model.matrix(angle_columns(angles, split.test)))
            val_idx, y_val, val_prob = train, y, sigmoid(a_cv)
            how = "cross-validated (the angle model's, over all training photos)"
            fitted_on = ("the angle model alone: all training photos (its validation scores "
                         "cross-fitted)")
        else:
            fusion = FusionModel.fit(cnn_val, a_val, split.y_val, C=FUSION_C, mode=mode)
            test_prob = fusion.predict(cnn_test, a_test)
            # the validation scores written (and the threshold) are cross-validated
            val_idx, y_val = split.val, split.y_val
            val_prob = cross_validated_fusion(cnn_val, a_val, y_val, groups=val_groups,
                                              C=FUSION_C, mode=mode)
            how = "cross-validated"
            fitted_on = ("angles: all training photos (their validation scores cross-fitted); "
                         "fusion: inner validation split")
            if not np.isfinite(val_prob).all():
                warnings.warn(f"{inputs.model.name}: too few subjects in the inner validation "
                              "split to cross-validate the fusion; its threshold uses "
                              "in-sample scores", stacklevel=2)
                val_prob, how = fusion.predict(cnn_val, a_val), "in-sample"
        threshold = rule_threshold(inputs.threshold, y_val, val_prob)
        info = {"threshold": threshold, "threshold_rule": inputs.threshold.rule,
                "threshold_scores": how, "features": angle_model.features,
                "coefficients_per_sd": angle_model.importance(), "C": angle_model.C,
                "fusion_mode": mode, "fusion_mode_log_loss": losses,
                "fusion_mode_p_vs_angles": p_value,
                "fusion_weights": {"cnn": fusion.coef[0], "angles": fusion.coef[1]},
                "fitted_on": fitted_on}
        return FoldFit(info, val_prob, test_prob, val_idx=val_idx, y_val=y_val,
                       linear_model={"angles": angle_model.to_dict(),
                                     "fusion": fusion.to_dict()})

    def probability(self, cnn_prob: float | None, parts: LinearParts,
                    angles: dict[str, float]) -> float:
        a = parts.angles
        return float(parts.fusion.predict([cnn_prob], a.logit(a.matrix(angles)))[0])
