"""Agreement between two raters' hand-placed landmarks on the same photos: per point (how far
apart they put it) and per angle (bias, MAE, Bland–Altman limits of agreement, ICC(2,1) with
a bootstrap confidence interval).

The ICC's interval resamples workers (all photos of a worker together) when their ids are
given, else photos, with replacement (percentile interval). The limits of agreement are
bias ± 1.96 SD of the differences, photos treated as independent (as `agreement` does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from posturescreen.data.landmarks import row_points
from posturescreen.posture.agreement import icc_2_1
from posturescreen.posture.angles import ANGLES, UNITS, measure

POINT_COLUMNS = ["landmark", "n", "mean_px", "median_px", "p95_px", "mean_pct_height",
                 "one_rater_only"]
ANGLE_COLUMNS = ["angle", "unit", "n", "bias", "mae", "loa_low", "loa_high", "icc_2_1",
                 "icc_low", "icc_high", "resampled"]


def _names(points: pd.DataFrame) -> list[str]:
    return [c[:-2] for c in points.columns if c.endswith("_x") and f"{c[:-2]}_y" in points]


def point_agreement(a: pd.DataFrame, b: pd.DataFrame, *,
                    heights: pd.Series | None = None) -> pd.DataFrame:
    """One row per landmark both tables have: photos where both raters placed it (n), the
    distance between their placements (mean, median, 95th percentile, in pixels; mean as a
    percentage of the photo's height when `heights` is given) and the photos where only one
    of them placed it (the other marked it not visible or has not placed it). `a`, `b`: one
    row per photo (same index), `<name>_x`, `<name>_y` in pixels, NaN where not placed."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    rows = []
    for n in _names(a):
        if f"{n}_x" not in b:
            continue
        has_a = a[[f"{n}_x", f"{n}_y"]].notna().all(axis=1)
        has_b = b[[f"{n}_x", f"{n}_y"]].notna().all(axis=1)
        both = has_a & has_b
        d = np.hypot(a.loc[both, f"{n}_x"] - b.loc[both, f"{n}_x"],
                     a.loc[both, f"{n}_y"] - b.loc[both, f"{n}_y"])
        pct = (100 * d / heights.reindex(d.index)).mean() if heights is not None else np.nan
        rows.append({"landmark": n, "n": int(both.sum()),
                     "mean_px": float(d.mean()) if len(d) else np.nan,
                     "median_px": float(d.median()) if len(d) else np.nan,
                     "p95_px": float(np.percentile(d, 95)) if len(d) else np.nan,
                     "mean_pct_height": float(pct),
                     "one_rater_only": int((has_a ^ has_b).sum())})
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def angles_of(points: pd.DataFrame) -> pd.DataFrame:
    """Every posture angle each photo's points allow (index kept; NaN otherwise)."""
    names = _names(points)
    return pd.DataFrame([measure(row_points(r, names)) for _, r in points.iterrows()],
                        index=points.index, columns=list(ANGLES), dtype=float)


def icc_interval(pairs: np.ndarray, groups: np.ndarray, *, n_resamples: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ICC(2,1) over resamples of `groups` (with replacement) of an
    (n, 2) matrix of two raters' values."""
    codes, uniques = pd.factorize(pd.Series(groups).astype(str))
    if len(uniques) < 3:
        return float("nan"), float("nan")
    members = [np.flatnonzero(codes == g) for g in range(len(uniques))]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniques), (n_resamples, len(uniques)))
    values = np.array([icc_2_1(pairs[np.concatenate([members[g] for g in row])])
                       for row in draws])
    finite = values[np.isfinite(values)]
    if len(finite) < n_resamples / 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def angle_agreement(a: pd.DataFrame, b: pd.DataFrame, *, groups: pd.Series | None = None,
                    n_resamples: int = 2000, seed: int = 0,
                    group_label: str = "workers") -> pd.DataFrame:
    """One row per angle measured by both raters on at least three photos: n, bias (b − a),
    MAE, 95% limits of agreement, ICC(2,1) with its bootstrap 95% interval, and what the
    interval resampled. `a`, `b`: angles per photo (same index); `groups`: the worker of
    each photo (index as theirs; `group_label` names them), else photos are resampled."""
    common = a.index.intersection(b.index)
    rows = []
    for angle in ANGLES:
        if angle not in a or angle not in b:
            continue
        both = pd.DataFrame({"a": a.loc[common, angle], "b": b.loc[common, angle]}).dropna()
        if len(both) < 3:
            continue
        d = both["b"] - both["a"]
        sd = float(d.std(ddof=1))
        pairs = both[["a", "b"]].to_numpy()
        g = (groups.reindex(both.index).fillna("").astype(str).to_numpy()
             if groups is not None else both.index.astype(str).to_numpy())
        low, high = icc_interval(pairs, g, n_resamples=n_resamples, seed=seed)
        rows.append({"angle": angle, "unit": UNITS[angle] or "trunk lengths", "n": len(both),
                     "bias": float(d.mean()), "mae": float(d.abs().mean()),
                     "loa_low": float(d.mean() - 1.96 * sd),
                     "loa_high": float(d.mean() + 1.96 * sd),
                     "icc_2_1": icc_2_1(pairs), "icc_low": low, "icc_high": high,
                     "resampled": (f"{len(set(g))} {group_label}" if groups is not None
                                   else f"{len(both)} photos")})
    return pd.DataFrame(rows, columns=ANGLE_COLUMNS)


def rater_agreement(a: pd.DataFrame, b: pd.DataFrame, *, groups: pd.Series | None = None,
                    heights: pd.Series | None = None, n_resamples: int = 2000,
                    seed: int = 0, group_label: str = "workers"
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per point and per angle agreement of two raters' points tables (see
    point_agreement and angle_agreement)."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    points = point_agreement(a, b, heights=heights)
    angles = angle_agreement(angles_of(a), angles_of(b), groups=groups,
                             n_resamples=n_resamples, seed=seed, group_label=group_label)
    return points, angles


def _f(fmt: str, v: float) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    out = fmt.format(v)
    if out.startswith("-") and float(out) == 0:  # no "-0.00"
        out = ("+" if "+" in fmt else "") + out[1:]
    return out


def formatted_points(table: pd.DataFrame) -> pd.DataFrame:
    """The per-point table as printed: one text cell per value."""
    return pd.DataFrame({
        "landmark": table["landmark"], "n": table["n"].astype(str),
        "mean px": [_f("{:.1f}", v) for v in table["mean_px"]],
        "median px": [_f("{:.1f}", v) for v in table["median_px"]],
        "95th pct px": [_f("{:.1f}", v) for v in table["p95_px"]],
        "% of height": [_f("{:.2f}", v) for v in table["mean_pct_height"]],
        "one rater only": table["one_rater_only"].astype(str)})


def formatted_angles(table: pd.DataFrame) -> pd.DataFrame:
    """The per-angle table as printed: one text cell per value."""
    return pd.DataFrame({
        "angle": [f"{a} ({u})" for a, u in zip(table["angle"], table["unit"], strict=True)],
        "n": table["n"].astype(str),
        "bias": [_f("{:+.2f}", v) for v in table["bias"]],
        "MAE": [_f("{:.2f}", v) for v in table["mae"]],
        "LoA": [f"{_f('{:+.1f}', lo)} to {_f('{:+.1f}', hi)}"
                for lo, hi in zip(table["loa_low"], table["loa_high"], strict=True)],
        "ICC(2,1) (95% CI)": [f"{_f('{:.3f}', v)} ({_f('{:.3f}', lo)}–{_f('{:.3f}', hi)})"
                              for v, lo, hi in zip(table["icc_2_1"], table["icc_low"],
                                                   table["icc_high"], strict=True)],
        "CI resamples": table["resampled"]})
