"""Model comparisons on the same photos: DeLong's test for two correlated AUCs — clustered by
worker when a worker has several photos — with Holm's correction.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with the
placement-value formulation of Sun & Xu (2014), IEEE Signal Process. Lett. 21:1389-1393.
pROC (the reference implementation) is R; on PyPI only small, young packages offer it
(MLstatkit, rocauc-comparison), and none the clustered form. So it lives here, tested
against pROC's own reference values on its aSAH data (Z, p, AUCs and DeLong variances, to
1e-10) and against an O(m·n) computation from the definition.

Clustered (Obuchowski 1997, Biometrics 53:567-578): a worker's photos are not independent,
so the placement values are summed per worker and their variance taken over workers. The
small-sample factor is applied per class (workers with positive photos, workers with negative
photos), which makes the estimator equal DeLong's exactly when every worker has one photo;
a worker bootstrap of the AUC difference agrees with it (tests/test_compare.py).
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


class VarianceNotEstimable(ValueError):
    """DeLong's variance needs at least two units (workers, or photos when unclustered) on
    each side, positives and negatives, in every fold: with one, that side's spread is zero
    by construction and the test would be falsely precise (e.g. a fold that is one capture
    session). `aucs`: the two (fold-weighted) AUCs, which stand without a variance."""

    def __init__(self, message: str, aucs: tuple[float, float] = (np.nan, np.nan)):
        super().__init__(message)
        self.aucs = aucs


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


def _cluster_sums(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the sum of `values` (rows: values per score) and the count."""
    codes, uniques = pd.factorize(clusters)
    counts = np.bincount(codes, minlength=len(uniques)).astype(float)
    sums = np.vstack([np.bincount(codes, weights=v, minlength=len(uniques)) for v in values])
    return sums, counts


def _delong_cov(y: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two AUCs and their (clustered) DeLong covariance matrix."""
    a10, a01, auc1 = placements(y, s1)
    b10, b01, auc2 = placements(y, s2)
    aucs = np.array([auc1, auc2])
    n_pos, n_neg = len(a10), len(a01)
    sum10, m = _cluster_sums(np.vstack([a10, b10]), clusters[y])
    sum01, n = _cluster_sums(np.vstack([a01, b01]), clusters[~y])
    d10 = sum10 - m * aucs[:, None]  # (2, clusters with positives)
    d01 = sum01 - n * aucs[:, None]
    i10, i01 = d10.shape[1], d01.shape[1]
    if min(i10, i01) < 2:
        side = "positives" if i10 < 2 else "negatives"
        raise VarianceNotEstimable(f"its {side} come from a single worker/cluster",
                                   (auc1, auc2))
    cov = (i10 / (i10 - 1)) * (d10 @ d10.T) / n_pos**2
    cov += (i01 / (i01 - 1)) * (d01 @ d01.T) / n_neg**2
    # workers with photos of both classes add a cross term (none when labels are per worker)
    both = sorted(set(clusters[y]) & set(clusters[~y]))
    if both:
        pi = {c: k for k, c in enumerate(pd.unique(clusters[y]))}
        ni = {c: k for k, c in enumerate(pd.unique(clusters[~y]))}
        c10 = d10[:, [pi[c] for c in both]]
        c01 = d01[:, [ni[c] for c in both]]
        n_clusters = len(pd.unique(clusters))
        cross = (n_clusters / (n_clusters - 1)) * (c10 @ c01.T) / (n_pos * n_neg)
        cov += cross + cross.T
    return aucs, cov


def delong_test(y_true: np.ndarray, scores1: np.ndarray, scores2: np.ndarray,
                *, clusters: np.ndarray | None = None,
                strata: np.ndarray | None = None) -> DeLongResult:
    """Two-sided test of AUC1 = AUC2 for two scores of the same cases; `clusters` (e.g.
    worker ids) makes it the clustered test (Obuchowski 1997); `strata` (the outer folds)
    compares fold-stratified AUCs, Σ w_k AUC_k with w_k ∝ n₊ₖn₋ₖ, whose variance is
    Σ w_k² var_k (folds hold disjoint workers)."""
    y = np.asarray(y_true).astype(bool)
    s1, s2 = np.asarray(scores1, float), np.asarray(scores2, float)
    clusters = np.arange(len(y)) if clusters is None else np.asarray(clusters)
    strata = np.zeros(len(y), dtype=int) if strata is None else np.asarray(strata)
    parts, untestable = [], []
    for k in pd.unique(strata):
        m = strata == k
        pairs = int(y[m].sum()) * int((~y[m]).sum())
        if pairs:
            try:
                parts.append((pairs, *_delong_cov(y[m], s1[m], s2[m], clusters[m])))
            except VarianceNotEstimable as e:  # keep its AUCs for the weighted estimate
                parts.append((pairs, np.array(e.aucs), np.full((2, 2), np.nan)))
                where = f"fold {k}" if len(pd.unique(strata)) > 1 else "the data"
                untestable.append(f"{where}: {e}")
    if not parts:  # e.g. a worker level where every fold holds one class
        raise VarianceNotEstimable("no fold holds both positives and negatives, so the AUCs "
                                   "are undefined")
    total = sum(w for w, _, _ in parts)
    aucs = sum((w / total) * a for w, a, _ in parts)
    if untestable:
        raise VarianceNotEstimable(
            f"{untestable[0]}, so the DeLong variance cannot be estimated",
            (float(aucs[0]), float(aucs[1])))
    cov = sum((w / total) ** 2 * c for w, _, c in parts)
    auc1, auc2 = float(aucs[0]), float(aucs[1])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auc1 - auc2
    if var <= 0:  # identical (or perfectly tied) scores
        var = 0.0
    z = diff / np.sqrt(var) if var > 0 else (0.0 if diff == 0 else float(np.sign(diff) * np.inf))
    p = float(2 * stats.norm.sf(abs(z)))
    return DeLongResult(
        auc1, auc2, diff, float(np.sqrt(var)), float(z), p, float(cov[0, 0]), float(cov[1, 1])
    )


def compare_models(predictions: pd.DataFrame, *, alpha: float = 0.05,
                   cluster_column: str | None = None, unit_column: str = "row",
                   family: str = "task", stratified: bool = False,
                   score_column: str = "prob") -> pd.DataFrame:
    """Every pair of models within each task, on the units (photos or workers) both
    predicted (pooled out-of-fold), clustered by `cluster_column` when given, comparing
    fold-stratified AUCs when `stratified`, with Holm-adjusted p-values per task
    (`family="task"`) or over all tasks (`"study"`)."""
    rows = []
    for task, g in predictions.groupby("task", sort=False):
        wide = g.pivot_table(index=unit_column, columns="model", values=score_column)
        first = g.drop_duplicates(unit_column).set_index(unit_column)
        labels = first["label"].loc[wide.index]
        clusters = first[cluster_column].loc[wide.index] if cluster_column else None
        folds = first["fold"].loc[wide.index] if stratified else None
        for a, b in itertools.combinations(list(dict.fromkeys(g["model"])), 2):
            both = wide[[a, b]].dropna()
            y = labels.loc[both.index].to_numpy()
            row = {"task": task, "model_a": a, "model_b": b, "n": len(both)}
            try:
                r = delong_test(y, both[a].to_numpy(), both[b].to_numpy(),
                                clusters=clusters.loc[both.index].to_numpy() if clusters is not None
                                else None,
                                strata=folds.loc[both.index].to_numpy() if folds is not None
                                else None)
            except VarianceNotEstimable as e:  # the AUCs stand; no test, and why
                auc_a, auc_b = e.aucs
                rows.append(row | {"auc_a": auc_a, "auc_b": auc_b, "difference": auc_a - auc_b,
                                   "se": np.nan, "z": np.nan, "p_value": np.nan,
                                   "note": f"no test: {e}"})
                continue
            rows.append(row | {"auc_a": r.auc1, "auc_b": r.auc2, "difference": r.difference,
                               "se": r.se, "z": r.z, "p_value": r.p_value, "note": ""})
    out = pd.DataFrame(rows, columns=["task", "model_a", "model_b", "n", "auc_a", "auc_b",
                                      "difference", "se", "z", "p_value", "note"])
    out["p_holm"] = np.nan
    groups = [out.index] if family == "study" else [g.index for _, g in out.groupby(
        "task", sort=False)]
    for idx in groups:
        tested = out.loc[idx, "p_value"].dropna().index  # Holm over the tests made
        if len(tested):
            out.loc[tested, "p_holm"] = multipletests(out.loc[tested, "p_value"], alpha=alpha,
                                                      method="holm")[1]
    return out
