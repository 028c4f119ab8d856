"""Calibration of out-of-fold probabilities, with worker-bootstrap CIs, before and after the
per-fold recalibration (levels.py).

- **Calibration-in-the-large** (CITL): α in logit P(y = 1) = α + logit(p), the probability's
  logit as an offset — 0 when the predicted risks are right on average (Van Calster et al.
  2019, J Clin Epidemiol 74:167). Not the intercept of the joint fit below.
- **Calibration slope**: β in logit P(y = 1) = a + β·logit(p) — 1 when the spread of the
  risks is right, < 1 when they are too extreme (overfitted), > 1 when too timid.
- **Brier score**: the mean squared error of the probability.

A bootstrap resample is a vector of worker weights (resampling.py), so each fit is a
weighted logistic regression with one covariate: solved by Newton's method for every
resample at once. A resample whose fit does not exist (one class; perfectly separated
scores, where the slope runs off to infinity) gives NaN and is counted, never a crash.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from posturescreen.stats.links import logit, sigmoid
from posturescreen.stats.resampling import CHUNK_CELLS, resample_counts

MEASURES = ("citl", "slope", "brier")
MAX_SLOPE = 1e4  # beyond this the scores separate the classes: no finite fit
_ITERATIONS = 100


def _loglik(y: np.ndarray, x: np.ndarray, w: np.ndarray, a: np.ndarray,
            b: np.ndarray) -> np.ndarray:
    eta = a[:, None] + b[:, None] * x[None, :]
    return (w * (y[None, :] * eta - np.logaddexp(0.0, eta))).sum(axis=1)


def _newton(y: np.ndarray, x: np.ndarray, W: np.ndarray, *, with_slope: bool,
            start: tuple[float, float] = (0.0, 1.0),
            line_search: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weighted maximum-likelihood (a, b) of logit P(y) = a + b·x (with_slope) or a + x (x as
    an offset), for each row of weights W (B, n); NaN where the fit does not converge. Newton
    steps from `start`, halved until the likelihood does not fall (plain Newton can
    overshoot when some scores sit at the clipped extremes); without `line_search`, plain
    Newton (for resamples started at the full data's estimate: half the work)."""
    B = W.shape[0]
    a = np.full(B, float(start[0]))
    b = np.full(B, float(start[1]) if with_slope else 1.0)
    done = np.zeros(B, dtype=bool)
    pos, neg = W @ y, W @ (1 - y)
    failed = (pos <= 0) | (neg <= 0)  # one class: no finite maximum
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        a[:], b[:] = 0.0, 1.0
    current = _loglik(y, x, W, a, b) if line_search else np.zeros(B)
    for _ in range(_ITERATIONS):
        idx = np.flatnonzero(~failed & ~done)
        if not len(idx):
            break
        w = W[idx]
        mu = sigmoid(a[idx, None] + b[idx, None] * x[None, :])
        r = w * (y[None, :] - mu)
        v = w * mu * (1 - mu)
        g_a, h_aa = r.sum(axis=1), v.sum(axis=1)
        if with_slope:
            g_b, h_ab, h_bb = (r * x).sum(axis=1), (v * x).sum(axis=1), (v * x * x).sum(axis=1)
            det = h_aa * h_bb - h_ab**2
            ok = det > 1e-12 * np.maximum(h_aa * h_bb, 1e-300)
            safe = np.where(ok, det, 1.0)
            step_a = np.where(ok, (h_bb * g_a - h_ab * g_b) / safe, 0.0)
            step_b = np.where(ok, (h_aa * g_b - h_ab * g_a) / safe, 0.0)
        else:
            ok = h_aa > 0
            step_a = np.where(ok, g_a / np.where(ok, h_aa, 1.0), 0.0)
            step_b = np.zeros(len(idx))
        t = np.ones(len(idx))
        trial = _loglik(y, x, w, a[idx] + step_a, b[idx] + step_b) if line_search else \
            np.zeros(len(idx))
        for _ in range(30 if line_search else 0):  # halve the step where the likelihood falls
            worse = ~(trial >= current[idx] - 1e-9 * np.abs(current[idx]))
            if not worse.any():
                break
            t[worse] /= 2
            k = np.flatnonzero(worse)
            trial[k] = _loglik(y, x, w[k], a[idx[k]] + t[k] * step_a[k],
                               b[idx[k]] + t[k] * step_b[k])
        a[idx] += t * step_a
        b[idx] += t * step_b
        current[idx] = trial
        bad = ~ok | ~np.isfinite(a[idx]) | (np.abs(b[idx]) > MAX_SLOPE) \
            | (np.abs(a[idx]) > MAX_SLOPE)
        failed[idx[bad]] = True
        done[idx] |= (np.abs(t * step_a) + np.abs(t * step_b)) < 1e-9
    failed |= ~done
    a[failed] = np.nan
    b[failed] = np.nan
    return a, (b if with_slope else np.ones(B))


def calibration_measures(y: np.ndarray, prob: np.ndarray, W: np.ndarray,
                         *, start: np.ndarray | None = None) -> np.ndarray:
    """(B, len(MEASURES)) calibration-in-the-large, slope and Brier score for each row of
    weights W (B, n). `start`: the fits' starting point (citl, slope, joint intercept),
    e.g. the estimates on all the data when W are bootstrap weights."""
    y = np.asarray(y, dtype=float)
    prob = np.asarray(prob, dtype=float)
    z = logit(prob)
    if start is None:
        citl, _ = _newton(y, z, W, with_slope=False)
        _, slope = _newton(y, z, W, with_slope=True)
    else:  # plain Newton from the given start; where that fails, the safe way from scratch
        citl, _ = _newton(y, z, W, with_slope=False, start=(start[0], 1.0), line_search=False)
        _, slope = _newton(y, z, W, with_slope=True, start=(start[2], start[1]),
                           line_search=False)
        for values, with_slope in ((citl, False), (slope, True)):
            again = np.flatnonzero(np.isnan(values))
            if len(again):
                redo = _newton(y, z, W[again], with_slope=with_slope)
                values[again] = redo[1] if with_slope else redo[0]
    total = W.sum(axis=1)
    brier = (W @ (prob - y) ** 2) / np.where(total > 0, total, np.nan)
    return np.column_stack([citl, slope, brier])


def _point(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The measures on all the data, and the starting point they give the resamples' fits."""
    z = logit(prob)
    ones = np.ones((1, len(y)))
    citl, _ = _newton(y, z, ones, with_slope=False)
    intercept, slope = _newton(y, z, ones, with_slope=True)
    brier = float(np.mean((np.asarray(prob, float) - y) ** 2))
    start = np.array([citl[0], slope[0], intercept[0]])
    return np.array([citl[0], slope[0], brier]), np.where(np.isfinite(start), start,
                                                          [0.0, 1.0, 0.0])


def calibration_ci(y: np.ndarray, prob: np.ndarray, *, groups: np.ndarray,
                   n_resamples: int, seed: int,
                   level: float = 0.95) -> dict[str, tuple[float, float, float, int]]:
    """Per measure: (estimate, CI low, CI high, resamples without a fit), the interval a
    percentile one over worker resamples (all of a worker's photos together)."""
    y = np.asarray(y, dtype=float)
    point, start = _point(y, prob)
    counts, codes = resample_counts(groups, n_resamples, seed)
    chunk = max(1, CHUNK_CELLS // max(1, len(y)))
    draws = np.vstack([calibration_measures(y, prob, counts[i:i + chunk][:, codes],
                                            start=start)
                       for i in range(0, n_resamples, chunk)])
    alpha = (1 - level) / 2
    out = {}
    for j, name in enumerate(MEASURES):
        col = draws[:, j]
        finite = col[np.isfinite(col)]
        low, high = ((float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
                     if len(finite) else (np.nan, np.nan))
        out[name] = (float(point[j]), low, high, int(len(col) - len(finite)))
    return out


def calibration_table(levels: dict[str, pd.DataFrame], *, subject_column: str,
                      n_resamples: int, seed: int, level: float = 0.95) -> pd.DataFrame:
    """Per level × task × model × scores (`raw`: the fold models' own probabilities;
    `recalibrated`: after the per-fold recalibration, the level's one score): prevalence,
    mean probability, and each measure with its worker-bootstrap CI. Resamples use the seed
    of the task's metrics (seed + task index), so they are the metrics' resamples."""
    rows = []
    for level_name, table in levels.items():
        task_names = list(dict.fromkeys(table["task"]))
        for (task, model), g in table.groupby(["task", "model"], sort=False):
            y = g["label"].to_numpy()
            for scores, column in (("raw", "prob_raw"), ("recalibrated", "prob")):
                p = g[column].to_numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ci = calibration_ci(y, p, groups=g[subject_column].to_numpy(),
                                        n_resamples=n_resamples,
                                        seed=seed + task_names.index(task), level=level)
                row = {"task": task, "model": model, "level": level_name, "scores": scores,
                       "n": len(g), "prevalence": float(np.mean(y)),
                       "mean_prob": float(np.mean(p))}
                for name, (est, low, high, failed) in ci.items():
                    row |= {name: est, f"{name}_low": low, f"{name}_high": high,
                            f"{name}_no_fit": failed}
                rows.append(row)
    return pd.DataFrame(rows)
