"""Metrics with 95% CIs, as pure functions over arrays.

Two interval kinds, both reported and labelled:
- `bootstrap`: primary. Pooled out-of-fold predictions, percentile interval over
  subject-level bootstrap resamples (all photos of a resampled worker go together).
- `fold_t`: the paper's style. Mean of the per-fold values ± t(0.975, k-1)·SD/√k.

A fold or resample holding a single class has no AUC (and maybe no Sen/Spe): that value is
NaN with a warning, never a crash.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("AUC", "ACC", "Sen", "Spe", "PPV", "NPV", "F1")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


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


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """AUC from probabilities; the rest from 0/1 decisions at the chosen threshold."""
    y_true = np.asarray(y_true).astype(int)
    pred = np.asarray(pred).astype(int)
    tp = int(((pred == 1) & (y_true == 1)).sum())
    tn = int(((pred == 0) & (y_true == 0)).sum())
    fp = int(((pred == 1) & (y_true == 0)).sum())
    fn = int(((pred == 0) & (y_true == 1)).sum())
    ppv, sen = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "AUC": auc_score(y_true, prob),
        "ACC": _ratio(tp + tn, len(y_true)),
        "Sen": sen,
        "Spe": _ratio(tn, tn + fp),
        "PPV": ppv,
        "NPV": _ratio(tn, tn + fn),
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


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


def bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile CI per metric over resamples of subjects (with replacement)."""
    y_true, prob, pred = np.asarray(y_true), np.asarray(prob), np.asarray(pred)
    codes, uniques = pd.factorize(np.asarray(groups))
    members = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    rng = np.random.default_rng(seed)
    draws = np.empty((n_resamples, len(METRICS)))
    for b in range(n_resamples):
        chosen = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in chosen])
        m = binary_metrics(y_true[idx], prob[idx], pred[idx])
        draws[b] = [m[k] for k in METRICS]
    alpha = (1 - level) / 2
    out = {}
    for j, name in enumerate(METRICS):
        col = draws[:, j]
        finite = col[np.isfinite(col)]
        if len(finite) < len(col):
            warnings.warn(
                f"{name}: {len(col) - len(finite)} of {len(col)} bootstrap resamples "
                "had a single class and were left out",
                stacklevel=2,
            )
        if len(finite) == 0:
            out[name] = (float("nan"), float("nan"))
        else:
            out[name] = (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
    return out


def per_fold_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per task × model × fold × metric. Expects columns task, model, fold, label,
    prob, pred."""
    rows = []
    for (task, model, fold), g in predictions.groupby(["task", "model", "fold"], sort=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = binary_metrics(g["label"].to_numpy(), g["prob"].to_numpy(), g["pred"].to_numpy())
        for name, value in m.items():
            if np.isnan(value):
                warnings.warn(f"{task}/{model} fold {fold}: {name} undefined (NaN)", stacklevel=2)
            rows.append(
                {"task": task, "model": model, "fold": int(fold), "metric": name, "value": value}
            )
    return pd.DataFrame(rows)


def summarize(
    predictions: pd.DataFrame,
    subject_column: str,
    n_resamples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics (task, model, metric, estimate, ci_low, ci_high, ci_kind) and the
    per-fold table. Bootstrap resamples use one seed per task, so models of a task are
    compared on the same resampled subjects."""
    folds = per_fold_metrics(predictions)
    rows = []
    task_names = list(dict.fromkeys(predictions["task"]))
    for (task, model), g in predictions.groupby(["task", "model"], sort=False):
        y, p, d = g["label"].to_numpy(), g["prob"].to_numpy(), g["pred"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pooled = binary_metrics(y, p, d)
        ci = bootstrap_ci(
            y, p, d, g[subject_column].to_numpy(), n_resamples, seed + task_names.index(task), level
        )
        fm = folds[(folds["task"] == task) & (folds["model"] == model)]
        for name in METRICS:
            lo, hi = ci[name]
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "metric": name,
                    "estimate": pooled[name],
                    "ci_low": lo,
                    "ci_high": hi,
                    "ci_kind": "bootstrap",
                }
            )
            mean, tlo, thi = t_interval(
                fm.loc[fm["metric"] == name, "value"].to_numpy(), level, bounds=(0.0, 1.0)
            )
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "metric": name,
                    "estimate": mean,
                    "ci_low": tlo,
                    "ci_high": thi,
                    "ci_kind": "fold_t",
                }
            )
    return pd.DataFrame(rows), folds


def format_estimate(estimate: float, low: float, high: float) -> str:
    """`0.782 (0.770–0.793)`, the paper's style."""
    if np.isnan(estimate):
        return "n/a"
    if np.isnan(low) or np.isnan(high):
        return f"{estimate:.3f}"
    return f"{estimate:.3f} ({low:.3f}–{high:.3f})"


def paper_table(metrics: pd.DataFrame, ci_kind: str) -> pd.DataFrame:
    """Task × model rows, metric columns, formatted estimates with CIs."""
    sel = metrics[metrics["ci_kind"] == ci_kind]
    table = {}
    for (task, model), g in sel.groupby(["task", "model"], sort=False):
        table[(task, model)] = {
            r.metric: format_estimate(r.estimate, r.ci_low, r.ci_high) for r in g.itertuples()
        }
    out = pd.DataFrame.from_dict(table, orient="index")[list(METRICS)]
    out.index = pd.MultiIndex.from_tuples(out.index, names=["task", "model"])
    return out.reset_index()
