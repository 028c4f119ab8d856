"""From the jobs' raw out-of-fold scores to what the metrics count, at two units of analysis.

Per (task, model, fold), using only that fold's inner validation predictions (never its test
fold):
1. **Recalibration, only where it earns its place**: three candidates — none, an intercept
   shift (slope 1: the level moved to the validation prevalence) and Platt (a logistic
   regression of the label on the logit of the score) — are compared by cross-fitting on the
   validation scores: grouped K-fold over the validation workers (K = min(5, workers)), each
   candidate fitted on K−1 parts and scored on the held-out part by log loss. The lowest
   held-out loss wins (ties go to the simpler one), refitted on all the validation scores.
   With fewer than three validation workers nothing can be shown, and nothing is
   recalibrated. The class-weighted loss and each fold model's own scale can leave raw
   probabilities shifted; Platt fitted on a few dozen photos of one session can make them
   far worse (docs/results.md measures both). A Platt fit whose slope is <= 0 keeps the
   fold's ranking: only its level is shifted. calibration.csv says what each fold got, why,
   and the held-out losses.
2. **Thresholds**: Youden's J (its binormal or empirical cutoff) on the (re)calibrated
   validation scores — per photo, and per worker after aggregating a worker's photos (mean
   by default).
3. **Worker level**: one score per worker — the aggregate of its photos' (re)calibrated
   probabilities — ranked (AUC, DeLong), thresholded and calibrated alike. It needs workers
   whose photos share one label: `label_agreement` finds, per task, the workers whose
   photos hold both classes (then the worker level is refused, study.results).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from posturescreen.stats.links import logit, sigmoid
from posturescreen.stats.metrics import ThresholdRule, auc_score, rule_threshold
from posturescreen.stats.resampling import stratified_auc

__all__ = ["Calibrator", "auc_pooling", "level_predictions", "logit"]

RECALIBRATIONS = ("none", "intercept", "platt")  # simplest first: ties go to the simpler
MIN_CROSSFIT_GROUPS = 3


@dataclass(frozen=True)
class Calibrator:
    """p_calibrated = sigmoid(slope · logit(p) + intercept)."""

    slope: float
    intercept: float
    note: str = "Platt"
    method: str = "platt"  # none | intercept | platt (RECALIBRATIONS)

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
    def shift(cls, y: np.ndarray, prob: np.ndarray) -> Calibrator:
        """The intercept-only recalibration (slope 1): the maximum-likelihood intercept with
        the score's logit as offset, which makes the mean probability the prevalence."""
        return cls._shift(np.asarray(y, dtype=int), logit(prob), "intercept shift")

    @classmethod
    def identity(cls, note: str) -> Calibrator:
        return cls(1.0, 0.0, note, "none")

    @classmethod
    def _shift(cls, y: np.ndarray, z: np.ndarray, note: str) -> Calibrator:
        """Slope 1, the intercept that makes the mean probability the prevalence."""
        rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3)) if len(y) else 0.5
        if not len(z):
            return cls(1.0, 0.0, note, "intercept")
        b = brentq(lambda b: float(np.mean(sigmoid(z + b))) - rate, -50, 50)
        return cls(1.0, float(b), note, "intercept")

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * logit(prob) + self.intercept)

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """The recalibrated probabilities; with no recalibration, the scores as they are."""
        if self.method == "none":
            return np.asarray(prob, dtype=np.float64)
        return self(prob)


def fit_recalibration(method: str, y: np.ndarray, prob: np.ndarray) -> Calibrator:
    """One of RECALIBRATIONS fitted on these (validation) labels and scores."""
    if method == "platt":
        return Calibrator.fit(y, prob)
    if method == "intercept":
        return Calibrator.shift(y, prob)
    return Calibrator.identity("not recalibrated")


def log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-7, 1 − 1e-7]."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def choose_calibrator(y: np.ndarray, prob: np.ndarray,
                      groups: np.ndarray) -> tuple[Calibrator, dict[str, float]]:
    """The recalibration that cross-fitting on these (validation) scores shows to help most,
    refitted on all of them, and each candidate's held-out log loss (module docstring)."""
    y, prob, groups = np.asarray(y, dtype=int), np.asarray(prob, float), np.asarray(groups)
    n_groups = len(pd.unique(groups))
    if len(np.unique(y)) < 2:
        return Calibrator.identity("not recalibrated: one class in validation"), {}
    if n_groups < MIN_CROSSFIT_GROUPS:
        return Calibrator.identity(
            f"not recalibrated: {n_groups} validation worker(s), too few to show by "
            "cross-fitting that recalibrating helps"), {}
    k = min(5, n_groups)
    held_out = {m: np.zeros(len(y)) for m in RECALIBRATIONS}
    for fit, test in GroupKFold(n_splits=k).split(prob, y, groups):
        for m in RECALIBRATIONS:
            held_out[m][test] = fit_recalibration(m, y[fit], prob[fit]).apply(prob[test])
    losses = {m: log_loss(y, held_out[m]) for m in RECALIBRATIONS}
    best = min(RECALIBRATIONS, key=lambda m: (losses[m], RECALIBRATIONS.index(m)))
    chosen = fit_recalibration(best, y, prob)
    why = (f"held-out log loss {losses[best]:.3f} ({k} grouped folds of the validation "
           f"scores; none {losses['none']:.3f})")
    note = f"{chosen.note}; {why}" if best != "none" else f"not recalibrated: {why}"
    return Calibrator(chosen.slope, chosen.intercept, note, chosen.method), losses


def label_agreement(frame: pd.DataFrame, subject_column: str) -> pd.DataFrame:
    """Per task: workers, the workers whose photos hold both classes (`mixed`, with up to
    five of their ids), and the share of the task's photos those workers hold. `frame`: one
    row per photo and model (task, label, the subject column; `row` de-duplicates)."""
    keys = ["task", "row"] if "row" in frame else ["task", subject_column, "label"]
    photos = frame.drop_duplicates(keys)
    rows = []
    for task, g in photos.groupby("task", sort=False):
        classes = g.groupby(subject_column, sort=False)["label"].nunique()
        mixed = classes[classes > 1].index.astype(str).tolist()
        rows.append({"task": task, "workers": int(len(classes)), "mixed": len(mixed),
                     "mixed_photos_share": float(g[subject_column].isin(mixed).mean()),
                     "examples": ", ".join(mixed[:5])})
    return pd.DataFrame(rows, columns=["task", "workers", "mixed", "mixed_photos_share",
                                       "examples"])



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
    calibrator, the held-out losses that chose it, and thresholds. `test`/`val`: the jobs'
    predictions.csv / val_predictions.csv rows (task, model, fold, row, subject, image,
    label, prob). `prob` is the one score of each level: the (re)calibrated photo probability,
    and its aggregate over a worker's photos."""
    photos, workers, folds = [], [], []
    for (task, model, fold), t in test.groupby(["task", "model", "fold"], sort=False):
        v = val[(val.task == task) & (val.model == model) & (val.fold == fold)]
        cal, losses = choose_calibrator(v["label"].to_numpy(), v["prob"].to_numpy(),
                                        v[subject_column].astype(str).to_numpy())
        v_cal = v.assign(prob=cal.apply(v["prob"].to_numpy()))
        t_photo = rule_threshold(rule, v_cal["label"].to_numpy(), v_cal["prob"].to_numpy())
        vw = _workers(v_cal, subject_column, aggregate)
        t_worker = rule_threshold(rule, vw["label"].to_numpy(), vw["prob"].to_numpy())
        photo = t.assign(prob_raw=t["prob"].astype(np.float64),
                         prob=cal.apply(t["prob"].to_numpy()), threshold=t_photo)
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
                      **{f"heldout_logloss_{m}": losses.get(m, np.nan) for m in RECALIBRATIONS},
                      "threshold_photo": t_photo, "threshold_worker": t_worker,
                      "n_val_photos": len(v), "n_val_workers": len(vw)})
    return (pd.concat(photos, ignore_index=True), pd.concat(workers, ignore_index=True),
            pd.DataFrame(folds))


def auc_pooling(levels: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task × model × level: the AUC of the raw scores pooled over folds, of the level's
    scores (recalibrated) pooled, the fold-stratified AUC (pairs within a fold only), and the
    range of the folds' own AUCs — how much pooling fold models with different scales costs.
    Every AUC but the raw one ranks the level's one score (`prob`)."""
    rows = []
    for level, table in levels.items():
        for (task, model), g in table.groupby(["task", "model"], sort=False):
            y = g["label"].to_numpy()
            fold_aucs = [auc_score(f["label"], f["prob"]) for _, f in g.groupby("fold")]
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
                            y, g["prob"].to_numpy(), ones, strata=g["fold"].to_numpy()
                        )[0]
                    ),
                    "fold_min": float(np.nanmin(fold_aucs)),
                    "fold_max": float(np.nanmax(fold_aucs)),
                }
            )
    return pd.DataFrame(rows)
