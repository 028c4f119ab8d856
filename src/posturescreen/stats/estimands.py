"""Which positive–negative pairs each pooled AUC rests on, and the between-worker AUC.

A screening tool ranks different people, so the estimand is an AUC between workers. Out of
fold, only pairs scored by the same fold model are comparable (fold-stratified pooling), so:

- photo level, **within fold**: every positive–negative pair of photos scored by one fold
  model — including, when a worker holds photos of both classes, pairs of one worker's
  photos (within-person discrimination, which a screening between people does not need);
- photo level, **between workers**: the same pairs less those of one worker's photos
  (`resampling.between_cluster_auc`); equal to within fold when every worker's photos
  share a label;
- worker level: one score per worker, pairs of workers within a fold — between workers by
  construction.

Each row gives the pairs it uses, the share of all positive–negative pairs (across folds)
they are, and a worker-bootstrap CI drawn with the metrics' resamples (seed + task index).
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pandas as pd

from posturescreen.stats.resampling import (
    CHUNK_CELLS,
    between_cluster_auc,
    pair_counts,
    resample_counts,
    stratified_auc,
)

ESTIMANDS = {
    "within_fold": "pairs of photos scored by the same fold model (any workers)",
    "between_workers": "pairs of photos of different workers scored by the same fold model",
    "workers": "pairs of workers (one score each) scored by the same fold model",
}


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if not len(finite):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def _draws(auc, n: int, counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    chunk = max(1, CHUNK_CELLS // max(1, n))
    return np.concatenate([auc(counts[i:i + chunk][:, codes])
                           for i in range(0, len(counts), chunk)])


def auc_estimands(levels: dict[str, pd.DataFrame], *, subject_column: str,
                  n_resamples: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """One row per level × task × model × estimand: AUC, bootstrap CI, the pairs it uses,
    all pairs, their share and what they are."""
    rows = []
    for level_name, table in levels.items():
        task_names = list(dict.fromkeys(table["task"]))
        for (task, model), g in table.groupby(["task", "model"], sort=False):
            y, s = g["label"].to_numpy(), g["prob"].to_numpy()
            strata, clusters = g["fold"].to_numpy(), g[subject_column].astype(str).to_numpy()
            pairs = pair_counts(y, strata=strata, clusters=clusters)
            counts, codes = resample_counts(clusters, n_resamples, seed + task_names.index(task))

            within = partial(stratified_auc, y, s, strata=strata)
            between = partial(between_cluster_auc, y, s, strata=strata, clusters=clusters)
            if level_name == "photo":
                kinds = [("within_fold", within, pairs["within_fold"]),
                         ("between_workers", between, pairs["between_cluster"])]
            else:
                kinds = [("workers", within, pairs["within_fold"])]
            for name, auc, used in kinds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    point = float(auc(np.ones((1, len(y))))[0])
                    low, high = _interval(_draws(auc, len(y), counts, codes), level)
                rows.append({"task": task, "model": model, "level": level_name,
                             "estimand": name, "auc": point, "ci_low": low, "ci_high": high,
                             "pairs": used, "pairs_total": pairs["total"],
                             "pairs_share": used / pairs["total"] if pairs["total"] else np.nan,
                             "pairs_used": ESTIMANDS[name]})
    return pd.DataFrame(rows, columns=["task", "model", "level", "estimand", "auc", "ci_low",
                                       "ci_high", "pairs", "pairs_total", "pairs_share",
                                       "pairs_used"])
