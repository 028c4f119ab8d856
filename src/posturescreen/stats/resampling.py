"""The subject-level bootstrap, vectorised: a resample of workers is a vector of weights (how
many times each worker was drawn), so every metric of every resample is a weighted count —
thousands of resamples cost one matrix product, not a Python loop.

All photos of a resampled worker go together (at the worker level each worker is one row).
AUC uses the Mann–Whitney count with ties as one half; `strata` (the outer folds) gives the
fold-stratified AUC, Σ n₊ₖ n₋ₖ AUCₖ / Σ n₊ₖ n₋ₖ, which counts only pairs of photos scored by
the same fold model; `between_cluster_auc` keeps, of those, the pairs of photos of different
workers (the between-people estimand when a worker holds photos of both classes).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

METRICS = ("AUC", "ACC", "Sen", "Spe", "PPV", "NPV", "F1")
CHUNK_CELLS = 20_000_000


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _auc_parts(y: np.ndarray, score: np.ndarray, W: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of weights W (B, n): Σ w_i w_j ([s_i > s_j] + ½[s_i = s_j]) over positive i,
    negative j (the concordant pair weight), and Σ w_pos · Σ w_neg (the pair weight)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score, float)[order]
    Ws, ys = W[:, order], y[order]
    if not len(s):
        return np.zeros(W.shape[0]), np.zeros(W.shape[0])
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups
    pos = np.add.reduceat(Ws * ys, starts, axis=1)
    neg = np.add.reduceat(Ws * ~ys, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    return num, pos.sum(axis=1) * neg.sum(axis=1)


def weighted_auc(y: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AUC for each row of weights W (B, n): Σ w_i w_j [s_i > s_j] (+½ ties) over positive i,
    negative j, divided by (Σ w_pos)(Σ w_neg). NaN where a row has one class."""
    return _ratio(*_auc_parts(y, score, W))


def _stratified_parts(y: np.ndarray, score: np.ndarray, W: np.ndarray,
                      strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concordant and total pair weights of pairs within one stratum, summed."""
    y, strata = np.asarray(y).astype(bool), np.asarray(strata)
    num = np.zeros(W.shape[0])
    den = np.zeros(W.shape[0])
    for k in np.unique(strata):
        m = strata == k
        a, b = _auc_parts(y[m], np.asarray(score)[m], W[:, m])
        num += a
        den += b
    return num, den


def stratified_auc(y: np.ndarray, score: np.ndarray, W: np.ndarray,
                   *, strata: np.ndarray) -> np.ndarray:
    """Σ_k P_k N_k AUC_k / Σ_k P_k N_k over strata k (weighted positives P, negatives N)."""
    return _ratio(*_stratified_parts(y, score, W, strata))


def between_cluster_auc(y: np.ndarray, score: np.ndarray, W: np.ndarray,
                        *, strata: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """The AUC over positive–negative pairs within one stratum (fold) from *different*
    clusters (workers): the within-fold pairs less the pairs inside one cluster. A cluster's
    photos share one weight (a resampled worker goes whole), so a within-cluster pair weighs
    w_g². Clusters lie within strata (folds are grouped by them). NaN where no such pair."""
    y, clusters = np.asarray(y).astype(bool), np.asarray(clusters)
    num, den = _stratified_parts(y, score, W, strata)
    codes, uniques = pd.factorize(clusters)
    mixed = [g for g in range(len(uniques))
             if y[codes == g].any() and not y[codes == g].all()]  # clusters with both classes
    for g in mixed:
        m = codes == g
        a, b = _auc_parts(y[m], np.asarray(score)[m], np.ones((1, int(m.sum()))))
        w2 = W[:, np.flatnonzero(m)[0]] ** 2
        num -= w2 * a[0]
        den -= w2 * b[0]
    return _ratio(num, den)  # integer weights: sums of pair counts are exact


def pair_counts(y: np.ndarray, *, strata: np.ndarray, clusters: np.ndarray) -> dict[str, int]:
    """Positive–negative pairs: all of them (`total`), those within one stratum (fold:
    `within_fold`), and those within one stratum from different clusters
    (`between_cluster`)."""
    y = np.asarray(y).astype(bool)
    frame = pd.DataFrame({"y": y, "k": np.asarray(strata), "g": np.asarray(clusters)})

    def pairs(by: str) -> int:
        c = frame.groupby(by, sort=False)["y"].agg(["sum", "size"])
        return int((c["sum"] * (c["size"] - c["sum"])).sum())

    within = pairs("k")
    return {"total": int(y.sum()) * int((~y).sum()), "within_fold": within,
            "between_cluster": within - pairs("g")}


def weighted_metrics(y: np.ndarray, prob: np.ndarray, pred: np.ndarray, *, W: np.ndarray,
                     strata: np.ndarray | None = None) -> np.ndarray:
    """(B, len(METRICS)) metrics for each row of weights."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp, fn = W @ (y & pred), W @ (y & ~pred)
    tn, fp = W @ (~y & ~pred), W @ (~y & pred)
    auc = weighted_auc(y, prob, W) if strata is None else stratified_auc(y, prob, W, strata=strata)
    return np.column_stack([
        auc, _ratio(tp + tn, tp + tn + fp + fn), _ratio(tp, tp + fn), _ratio(tn, tn + fp),
        _ratio(tp, tp + fp), _ratio(tn, tn + fn), _ratio(2 * tp, 2 * tp + fp + fn)])


def resample_counts(groups: np.ndarray, n_resamples: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(B, groups) counts of how often each group was drawn (with replacement), and each
    row's group code."""
    codes, uniques = pd.factorize(np.asarray(groups))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniques), (n_resamples, len(uniques)))
    counts = np.zeros((n_resamples, len(uniques)))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), len(uniques)), draws.ravel()), 1.0)
    return counts, codes


def resample_weights(groups: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(B, n) weights: how often each row's group was drawn."""
    counts, codes = resample_counts(groups, n_resamples, seed)
    return counts[:, codes]


def bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    pred: np.ndarray,
    *, groups: np.ndarray,
    n_resamples: int = 5000,
    seed: int = 0,
    level: float = 0.95,
    strata: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile CI per metric over resamples of subjects (with replacement)."""
    # the resamples in chunks: a (chunk, photos) weight matrix stays under ~160 MB
    chunk = max(1, CHUNK_CELLS // max(1, len(np.asarray(y_true))))
    counts, codes = resample_counts(groups, n_resamples, seed)
    draws = np.vstack([weighted_metrics(y_true, prob, pred, W=counts[i:i + chunk][:, codes],
                                        strata=strata) for i in range(0, n_resamples, chunk)])
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
