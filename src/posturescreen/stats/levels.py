"""From the jobs' raw out-of-fold scores to what the metrics count, at two units of analysis.

Per (task, model, fold), using only that fold's inner validation predictions (never its test
fold):
1. **Recalibration** (Platt): a logistic regression of the label on the logit of the score.
   The class-weighted loss and each fold model's own scale leave raw probabilities that do
   not mean the same thing from fold to fold; pooled together they can rank worse than any
   single fold. After recalibration a fold's probabilities estimate the risk on its own
   inner validation photos, so they can be pooled, averaged over folds (bundles) and read
   as risks. A fold whose inner validation ranks worse than chance (a fitted slope <= 0, on
   a few dozen photos mostly noise) keeps its ranking: only its level is shifted to the
   validation prevalence (slope 1), and calibration.csv says so.
2. **Thresholds**: Youden's J (midpoint) on the calibrated validation scores — per photo,
   and per worker after aggregating a worker's photos (mean by default).
3. **Worker level**: a worker's test photos aggregated the same way, decided at the worker
   threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from sklearn.linear_model import LogisticRegression

from posturescreen.stats.links import logit, sigmoid
from posturescreen.stats.metrics import ThresholdRule, auc_score, rule_threshold
from posturescreen.stats.resampling import stratified_auc

__all__ = ["Calibrator", "auc_pooling", "level_predictions", "logit"]


@dataclass(frozen=True)
class Calibrator:
    """p_calibrated = sigmoid(slope · logit(p) + intercept)."""

    slope: float
    intercept: float
    note: str = "Platt"

    @classmethod
    def fit(cls, y: np.ndarray, prob: np.ndarray) -> Calibrator:
        y = np.asarray(y, dtype=int)
        z = logit(prob)
        if len(np.unique(y)) < 2 or np.ptp(z) == 0:
            return cls._shift(y, z, "one class or one score: level shift only")
        # unpenalised (C large): a calibration, not a shrinkage
        lr = LogisticRegression(C=1e6, max_iter=5000)
        lr.fit(z[:, None], y)
        slope = float(lr.coef_[0, 0])
        if slope <= 0:  # never flip or flatten a fold's ranking on a few dozen photos
            return cls._shift(y, z, "validation ranked worse than chance: level shift only")
        return cls(slope, float(lr.intercept_[0]))

    @classmethod
    def _shift(cls, y: np.ndarray, z: np.ndarray, note: str) -> Calibrator:
        """Slope 1, the intercept that makes the mean probability the prevalence."""
        rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3)) if len(y) else 0.5
        if not len(z):
            return cls(1.0, 0.0, note)
        b = brentq(lambda b: float(np.mean(sigmoid(z + b))) - rate, -50, 50)
        return cls(1.0, float(b), note)

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * logit(prob) + self.intercept)

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)



def _workers(frame: pd.DataFrame, subject_column: str, aggregate: str) -> pd.DataFrame:
    g = frame.groupby(subject_column, sort=False)
    out = pd.DataFrame({"label": g["label"].first(), "prob": g["prob"].agg(aggregate),
                        "n_photos": g.size()})
    if "prob_raw" in frame:
        out["prob_raw"] = g["prob_raw"].agg(aggregate)
    return out.reset_index()


def level_predictions(test: pd.DataFrame, val: pd.DataFrame, *, subject_column: str,
                      rule: ThresholdRule, aggregate: str = "mean"
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Photo-level and worker-level out-of-fold predictions (calibrated), and per fold its
    calibrator and thresholds. `test`/`val`: the jobs' predictions.csv / val_predictions.csv
    rows (task, model, fold, row, subject, image, label, prob)."""
    photos, workers, folds = [], [], []
    for (task, model, fold), t in test.groupby(["task", "model", "fold"], sort=False):
        v = val[(val.task == task) & (val.model == model) & (val.fold == fold)]
        cal = Calibrator.fit(v["label"].to_numpy(), v["prob"].to_numpy())
        v_cal = v.assign(prob=cal(v["prob"].to_numpy()))
        t_photo = rule_threshold(rule, v_cal["label"].to_numpy(), v_cal["prob"].to_numpy())
        vw = _workers(v_cal, subject_column, aggregate)
        t_worker = rule_threshold(rule, vw["label"].to_numpy(), vw["prob"].to_numpy())
        photo = t.assign(prob_raw=t["prob"].astype(np.float64),
                         prob=cal(t["prob"].to_numpy()), threshold=t_photo)
        photo["pred"] = (photo["prob"] >= t_photo).astype(int)
        photos.append(photo)
        w = _workers(photo, subject_column, aggregate)
        w.insert(0, "fold", fold)
        w.insert(0, "model", model)
        w.insert(0, "task", task)
        w["threshold"] = t_worker
        w["pred"] = (w["prob"] >= t_worker).astype(int)
        workers.append(w)
        folds.append({"task": task, "model": model, "fold": int(fold), **cal.to_dict(),
                      "threshold_photo": t_photo, "threshold_worker": t_worker,
                      "n_val_photos": len(v), "n_val_workers": len(vw)})
    return (pd.concat(photos, ignore_index=True), pd.concat(workers, ignore_index=True),
            pd.DataFrame(folds))


def auc_pooling(levels: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task × model × level: the AUC of the raw scores pooled over folds, of the
    recalibrated ones, the fold-stratified AUC (pairs within a fold only), and the range of
    the folds' own AUCs — how much pooling fold models with different scales costs."""
    rows = []
    for level, table in levels.items():
        for (task, model), g in table.groupby(["task", "model"], sort=False):
            y = g["label"].to_numpy()
            # each fold's own ranking, before recalibration (which can flatten a fold)
            fold_aucs = [auc_score(f["label"], f["prob_raw"]) for _, f in g.groupby("fold")]
            ones = np.ones((1, len(g)))
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "level": level,
                    "raw_pooled": auc_score(y, g["prob_raw"]),
                    "recalibrated_pooled": auc_score(y, g["prob"]),
                    "fold_stratified": float(
                        stratified_auc(
                            y, g["prob_raw"].to_numpy(), ones, strata=g["fold"].to_numpy()
                        )[0]
                    ),
                    "fold_min": float(np.nanmin(fold_aucs)),
                    "fold_max": float(np.nanmax(fold_aucs)),
                }
            )
    return pd.DataFrame(rows)
