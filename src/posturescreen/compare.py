"""Model comparisons on the same photos: DeLong's test for two correlated AUCs, with Holm's
correction across the comparisons of a task.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with the
placement-value formulation of Sun & Xu (2014), IEEE Signal Process. Lett. 21:1389-1393.
pROC (the reference implementation) is R; on PyPI only small, young packages offer it
(MLstatkit, rocauc-comparison). The computation is twenty lines, so it lives here, tested
against pROC's own reference values on its aSAH data (Z, p, AUCs and DeLong variances, to
1e-10) and against an O(m·n) computation from the definition.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def placements(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(V10 per positive, V01 per negative, AUC): the structural components of DeLong."""
    y_true = np.asarray(y_true).astype(bool)
    pos, neg = scores[y_true], scores[~y_true]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("DeLong needs positives and negatives")
    r_all = _midrank(np.concatenate([pos, neg]))
    r_pos, r_neg = _midrank(pos), _midrank(neg)
    v10 = (r_all[:m] - r_pos) / n  # share of negatives below each positive (ties 1/2)
    v01 = 1.0 - (r_all[m:] - r_neg) / m  # share of positives above each negative
    return v10, v01, float(v10.mean())


@dataclass(frozen=True)
class DeLongResult:
    auc1: float
    auc2: float
    difference: float
    se: float  # of the difference
    z: float
    p_value: float
    var1: float  # DeLong variance of AUC1
    var2: float


def delong_test(y_true: np.ndarray, scores1: np.ndarray, scores2: np.ndarray) -> DeLongResult:
    """Two-sided test of AUC1 = AUC2 for two scores of the same cases."""
    s1, s2 = np.asarray(scores1, float), np.asarray(scores2, float)
    a10, a01, auc1 = placements(y_true, s1)
    b10, b01, auc2 = placements(y_true, s2)
    m, n = len(a10), len(a01)
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auc1 - auc2
    if var <= 0:  # identical (or perfectly tied) scores
        var = 0.0
    z = diff / np.sqrt(var) if var > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
    p = float(2 * stats.norm.sf(abs(z)))
    return DeLongResult(
        auc1, auc2, diff, float(np.sqrt(var)), float(z), p, float(cov[0, 0]), float(cov[1, 1])
    )


def compare_models(predictions: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of models within each task, on the photos both predicted (pooled
    out-of-fold), with Holm-adjusted p-values per task."""
    rows = []
    for task, g in predictions.groupby("task", sort=False):
        wide = g.pivot_table(index="row", columns="model", values="prob")
        labels = g.drop_duplicates("row").set_index("row")["label"].loc[wide.index]
        pairs = list(itertools.combinations(list(dict.fromkeys(g["model"])), 2))
        task_rows = []
        for a, b in pairs:
            both = wide[[a, b]].dropna()
            r = delong_test(labels.loc[both.index].to_numpy(), both[a].to_numpy(),
                            both[b].to_numpy())
            task_rows.append({"task": task, "model_a": a, "model_b": b, "n": len(both),
                              "auc_a": r.auc1, "auc_b": r.auc2, "difference": r.difference,
                              "se": r.se, "z": r.z, "p_value": r.p_value})
        if task_rows:
            adjusted = multipletests([r["p_value"] for r in task_rows], alpha=alpha,
                                     method="holm")[1]
            for r, p in zip(task_rows, adjusted, strict=True):
                r["p_holm"] = float(p)
        rows += task_rows
    columns = ["task", "model_a", "model_b", "n", "auc_a", "auc_b", "difference", "se", "z",
               "p_value", "p_holm"]
    return pd.DataFrame(rows, columns=columns)
