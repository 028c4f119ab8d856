"""Metrics with CIs, as pure functions over arrays, at two units of analysis.

Levels: `photo` (each photo a case) and `worker` (a worker's photos aggregated into one
case, the screening unit). Both are always computed; `metrics.primary_level` says which the
printed tables lead with.

Two interval kinds, both reported and labelled:
- `bootstrap`: primary. Pooled out-of-fold predictions, percentile interval over
  subject-level bootstrap resamples (all photos of a resampled worker go together).
- `fold_t`: the paper's style. Mean of the per-fold values ± t(q, k-1)·SD/√k, q from the
  configured level.

A fold or resample holding a single class has no AUC (and maybe no Sen/Spe): that value is
NaN with a warning, never a crash.
"""

from __future__ import annotations

import warnings
from typing import Literal, Protocol

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_curve

from posturescreen.stats.links import logit, sigmoid
from posturescreen.stats.resampling import METRICS, bootstrap_ci, weighted_metrics

LEVELS = ("worker", "photo")


def auc_score(y_true: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity; ties count one half. NaN with one
    class."""
    y_true = np.asarray(y_true)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(prob)
    return float((ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, pred: np.ndarray,
                   *, strata: np.ndarray | None = None) -> dict[str, float]:
    """AUC from probabilities (fold-stratified with `strata`); the rest from 0/1 decisions
    at the chosen threshold."""
    y_true = np.asarray(y_true).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row = weighted_metrics(y_true, prob, pred, W=np.ones((1, len(y_true))), strata=strata)[0]
    out = dict(zip(METRICS, map(float, row), strict=True))
    if strata is None:
        out["AUC"] = auc_score(y_true, prob)  # exact rank formula for the point estimate
    return out


def youden_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity − 1, at the midpoint of the
    optimal interval (between the score that starts it and the next lower score), so
    neither class is favoured; ties between optimal intervals go to the one nearest 0.5."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        warnings.warn("Youden threshold undefined with one class; using 0.5", stacklevel=2)
        return 0.5
    fpr, tpr, thr = roc_curve(y_true, prob, drop_intermediate=False)
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max()))
    scores = np.unique(np.asarray(prob, dtype=float))  # ascending
    mids = []
    for b in best:
        upper = min(float(thr[b]), 1.0)
        lower_scores = scores[scores < upper]
        lower = float(lower_scores[-1]) if len(lower_scores) else 0.0
        mids.append((upper + lower) / 2)
    mids = np.asarray(mids)
    return float(mids[np.argmin(np.abs(mids - 0.5))])


def binormal_youden_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Youden's optimal cutoff under an equal-variance binormal model of the logit scores:
    the midpoint of the two classes' mean logits (Fluss, Faraggi & Reiser, Biom J
    2005;47:458-72, "normal method", with the common variance it assumes there). On a small
    validation split the empirical cutoff jumps to an end of the score range whenever the
    model barely discriminates there, and so does the unequal-variance cutoff when the class
    means are close (the densities then cross in a tail); either way every test photo falls
    on one side. The midpoint moves smoothly with the class means and favours neither class.
    Fewer than two photos of a class: the empirical cutoff."""
    y = np.asarray(y_true).astype(int)
    if min(int((y == 0).sum()), int((y == 1).sum())) < 2:
        return youden_threshold(y_true, prob)
    z = logit(prob)
    return float(sigmoid((z[y == 0].mean() + z[y == 1].mean()) / 2))


class ThresholdRule(Protocol):
    """How a threshold is chosen (the config's `threshold` section is one)."""

    rule: Literal["youden", "fixed"]
    estimate: Literal["binormal", "empirical"]  # how Youden's cutoff is estimated
    value: float  # the threshold when rule is fixed


def youden_text(rule: ThresholdRule) -> str:
    """How the rule's Youden cutoff is estimated, in words (report, bundle)."""
    if rule.estimate == "empirical":
        return "Youden's J, the midpoint of the optimal interval"
    return ("Youden's J, its cutoff estimated under an equal-variance binormal model of the "
            "logit scores (the midpoint of the class means; Fluss et al. 2005)")


def rule_threshold(rule: ThresholdRule, y_true: np.ndarray, prob: np.ndarray) -> float:
    """The threshold the config's rule gives on these (validation) predictions."""
    if rule.rule == "fixed":
        return rule.value
    if rule.estimate == "empirical":
        return youden_threshold(y_true, prob)
    return binormal_youden_threshold(y_true, prob)


def t_interval(
    values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and mean ± t(level, k-1)·SD/√k over the finite values (NaN folds dropped),
    optionally clipped to `bounds` (proportions cannot leave [0, 1])."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, float(lo), float(hi)


def per_fold_metrics(predictions: pd.DataFrame, level: str = "photo",
                     score_column: str = "prob") -> pd.DataFrame:
    """One row per task × model × fold × metric. Expects columns task, model, fold, label,
    pred and the score column (AUC)."""
    rows = []
    for (task, model, fold), g in predictions.groupby(["task", "model", "fold"], sort=False):
        m = binary_metrics(g["label"].to_numpy(), g[score_column].to_numpy(),
                           g["pred"].to_numpy())
        for name, value in m.items():
            if np.isnan(value):
                warnings.warn(f"{task}/{model} fold {fold} ({level} level): {name} undefined "
                              "(NaN)", stacklevel=2)
            rows.append({"task": task, "model": model, "level": level, "fold": int(fold),
                         "metric": name, "value": value})
    return pd.DataFrame(rows)


def summarize(
    levels: dict[str, pd.DataFrame],
    *, subject_column: str,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
    stratified_auc: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics (task, model, level, metric, estimate, ci_low, ci_high, ci_kind) and the
    per-fold table, for each level's predictions (level name -> table with task, model,
    fold, label, prob, pred and the subject column). Resamples use one seed per task, so
    models of a task are compared on the same resampled subjects. Every metric of a level
    reads its one score, `prob` (at the photo level a recalibration is monotone within a
    fold, so the fold-stratified AUC is that of the raw scores; at the worker level the
    average of recalibrated photo probabilities is what is thresholded, so it is what is
    ranked)."""
    rows, fold_tables = [], []
    for level_name, predictions in levels.items():
        score = "prob"
        folds = per_fold_metrics(predictions, level_name, score)
        fold_tables.append(folds)
        task_names = list(dict.fromkeys(predictions["task"]))
        for (task, model), g in predictions.groupby(["task", "model"], sort=False):
            y, p, d = g["label"].to_numpy(), g[score].to_numpy(), g["pred"].to_numpy()
            strata = g["fold"].to_numpy() if stratified_auc else None
            pooled = binary_metrics(y, p, d, strata=strata)
            ci = bootstrap_ci(y, p, d, groups=g[subject_column].to_numpy(), n_resamples=n_resamples,
                              seed=seed + task_names.index(task), level=level, strata=strata)
            fm = folds[(folds["task"] == task) & (folds["model"] == model)]
            for name in METRICS:
                base = {"task": task, "model": model, "level": level_name, "metric": name}
                rows.append({**base, "estimate": pooled[name], "ci_low": ci[name][0],
                             "ci_high": ci[name][1], "ci_kind": "bootstrap"})
                mean, tlo, thi = t_interval(
                    fm.loc[fm["metric"] == name, "value"].to_numpy(), level, bounds=(0.0, 1.0))
                rows.append({**base, "estimate": mean, "ci_low": tlo, "ci_high": thi,
                             "ci_kind": "fold_t"})
    return pd.DataFrame(rows), pd.concat(fold_tables, ignore_index=True)


def format_estimate(estimate: float, low: float, high: float) -> str:
    """`0.782 (0.770–0.793)`, the paper's style."""
    if np.isnan(estimate):
        return "n/a"
    if np.isnan(low) or np.isnan(high):
        return f"{estimate:.3f}"
    return f"{estimate:.3f} ({low:.3f}–{high:.3f})"


def format_p(p: float) -> str:
    """A p-value as printed: four decimals, `<0.0001` below that."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def paper_table(metrics: pd.DataFrame, ci_kind: str, level: str | None = None) -> pd.DataFrame:
    """Task × model rows, metric columns, formatted estimates with CIs (one level, or every
    level with a level column)."""
    sel = metrics[metrics["ci_kind"] == ci_kind]
    if level is not None and "level" in sel:
        sel = sel[sel["level"] == level]
    keys = ["task", "model"] + (["level"] if level is None and "level" in sel else [])
    table = {}
    for key, g in sel.groupby(keys, sort=False):
        table[key] = {r.metric: format_estimate(r.estimate, r.ci_low, r.ci_high)
                      for r in g.itertuples()}
    out = pd.DataFrame.from_dict(table, orient="index")[list(METRICS)]
    out.index = pd.MultiIndex.from_tuples(out.index, names=keys)
    return out.reset_index()


__all__ = ["LEVELS", "METRICS", "auc_score", "binary_metrics", "bootstrap_ci",
           "format_estimate", "format_p", "paper_table", "per_fold_metrics", "summarize",
           "binormal_youden_threshold", "rule_threshold", "t_interval",
           "youden_text", "youden_threshold"]
