"""How well measured landmarks agree with the annotator's, the way clinicians report it:
per point the error in pixels and as a share of the person's height (PCK at 2% and 5%),
and whether the model's confidence tracks its error; per angle bias, MAE, Bland–Altman
limits and ICC(2,1) with a 95% CI from a bootstrap over workers (a worker's photos are not
independent). The learned model's points and the pose estimator's are tabled side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from posturescreen.posture.agreement import agreement_table, comparable_pairs, icc_2_1
from posturescreen.stats.resampling import resample_counts

PCK_LEVELS = (0.02, 0.05)


def icc_interval(hand: np.ndarray, other: np.ndarray, groups: np.ndarray, *,
                 n_resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile CI of ICC(2,1) over resamples of workers (all photos of a drawn worker
    go together)."""
    counts, codes = resample_counts(groups, n_resamples, seed)
    pairs = np.column_stack([hand, other])
    values = []
    for row in counts:
        idx = np.repeat(np.arange(len(codes)), row[codes].astype(int))
        values.append(icc_2_1(pairs[idx]))
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def angle_agreement(hand: pd.DataFrame, measured: pd.DataFrame, groups: pd.Series, *,
                    source: str, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """agreement_table (hand vs `measured`, aligned on the index) with the ICC's worker
    bootstrap CI and the source's name."""
    table = agreement_table(hand, measured)
    lows, highs = [], []
    pairs = {label: (h, m) for label, h, m in comparable_pairs(hand, measured)}
    for label in table["angle"]:
        h, m = pairs[label]
        both = pd.DataFrame({"hand": h, "other": m}).dropna()
        low, high = icc_interval(both["hand"].to_numpy(), both["other"].to_numpy(),
                                 groups.loc[both.index].astype(str).to_numpy(),
                                 n_resamples=n_resamples, seed=seed)
        lows.append(low)
        highs.append(high)
    table.insert(0, "source", source)
    table.insert(table.columns.get_loc("icc_2_1") + 1, "icc_low", lows)
    table.insert(table.columns.get_loc("icc_low") + 1, "icc_high", highs)
    return table


def point_errors(hand: pd.DataFrame, measured: pd.DataFrame, names: list[str], *,
                 heights: pd.Series) -> pd.DataFrame:
    """Per landmark (tables indexed alike, `<name>_x/_y` in photo pixels; `<name>_conf` in
    `measured` when it has one): n, mean and median error in pixels, mean error as a share
    of the person's height, PCK at 2% and 5% of it, Spearman of confidence vs error."""
    rows = []
    for n in names:
        error = np.hypot(measured[f"{n}_x"] - hand[f"{n}_x"], measured[f"{n}_y"] - hand[f"{n}_y"])
        ok = error.notna() & heights.notna() & (heights > 0)
        e, rel = error[ok], (error[ok] / heights[ok])
        row = {"landmark": n, "n": int(ok.sum()), "mean_px": float(e.mean()),
               "median_px": float(e.median()), "mean_share_of_height": float(rel.mean())}
        for level in PCK_LEVELS:
            row[f"pck_{round(level * 100)}"] = float((rel < level).mean())
        conf = measured.get(f"{n}_conf")
        row["confidence_vs_error_spearman"] = (
            float(spearmanr(conf[ok], e).statistic) if conf is not None and ok.sum() > 2
            else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)
