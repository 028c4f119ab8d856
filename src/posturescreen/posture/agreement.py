"""Agreement between the pose estimator's angles and hand-placed landmarks' angles: bias,
mean absolute error, Bland–Altman limits of agreement and ICC(2,1).

Like is compared with like: an angle is measured on the hand-placed points the estimator
also finds (ear, shoulder, hip, ...) whenever the manifest has them. Where it does not (a
manifest with C7 but no shoulder), the hand-placed angle on C7 is compared with the
estimator's angle on the shoulder — the CVA with its ear–shoulder proxy — and the row says
so: that difference is part definition, part estimator error. Photos of one worker are
treated as independent here, and no intervals are given for the limits or the ICC.

ICC(2,1) — two-way random effects, absolute agreement, single measurement (Shrout & Fleiss
1979; McGraw & Wong's ICC(A,1)) — has no implementation in scipy or statsmodels; it is the
ANOVA formula below, tested against Shrout & Fleiss's own worked example.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from posturescreen.config.data import DataConfig
from posturescreen.data.decode import decode_photos
from posturescreen.data.landmarks import landmark_names, row_points
from posturescreen.data.manifest import load_manifest
from posturescreen.files import atomic_write, atomic_write_csv
from posturescreen.posture.angles import measure
from posturescreen.posture.estimator import POINTS, POSE_DRAFT, PoseHook
from posturescreen.posture.tables import PoseRecorder, pose_row_points, pose_table

ALL_POINTS = "@all"  # suffix: an angle on every hand-placed point (C7, upper back too)
# the estimator's angle -> the hand-placed angle it stands for when the points differ
STANDS_FOR = {"ear_shoulder_angle": "cva"}


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) of an (n targets, k raters) matrix without missing values."""
    y = np.asarray(ratings, dtype=float)
    n, k = y.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    ms_rows = k * ((y.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((y.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand
    ms_err = (resid ** 2).sum() / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denom) if denom > 0 else float("nan")


def comparable_pairs(hand: pd.DataFrame, estimator: pd.DataFrame
                     ) -> list[tuple[str, pd.Series, pd.Series]]:
    """(label, hand values, estimator values) for each angle measured both ways."""
    out = []
    for a in estimator.columns:
        est = estimator[a]
        if est.notna().sum() < 3:
            continue
        if a in hand and hand[a].notna().sum() >= 3:
            out.append((a, hand[a], est))
            continue
        other = STANDS_FOR.get(a, a) + ALL_POINTS
        if other in hand and hand[other].notna().sum() >= 3:
            name = other.removesuffix(ALL_POINTS)
            label = (f"{name} (hand, on C7) vs {a} (estimator, proxy)" if name != a
                     else f"{a} (hand on C7, estimator on the shoulder)")
            out.append((label, hand[other], est))
    return out


def agreement_table(hand: pd.DataFrame, estimator: pd.DataFrame) -> pd.DataFrame:
    """One row per angle measured both ways on the same photos (aligned on the index): n,
    bias (estimator − hand), MAE, 95% limits of agreement, ICC(2,1), Pearson r."""
    rows = []
    for label, h, e in comparable_pairs(hand, estimator):
        both = pd.DataFrame({"hand": h, "estimator": e}).dropna()
        if len(both) < 3:
            continue
        d = both["estimator"] - both["hand"]
        sd = float(d.std(ddof=1))
        rows.append({
            "angle": label, "n": len(both),
            "bias": float(d.mean()), "mae": float(d.abs().mean()),
            "loa_low": float(d.mean() - 1.96 * sd), "loa_high": float(d.mean() + 1.96 * sd),
            "icc_2_1": icc_2_1(both[["hand", "estimator"]].to_numpy()),
            "pearson_r": float(np.corrcoef(both["hand"], both["estimator"])[0, 1]),
        })
    return pd.DataFrame(rows, columns=["angle", "n", "bias", "mae", "loa_low", "loa_high",
                                       "icc_2_1", "pearson_r"])


def bland_altman_pairs(hand: pd.DataFrame, estimator: pd.DataFrame
                       ) -> dict[str, pd.DataFrame]:
    """Per angle measured both ways: the mean of the two measurements and their difference."""
    out = {}
    for label, h, e in comparable_pairs(hand, estimator):
        both = pd.DataFrame({"hand": h, "estimator": e}).dropna()
        if len(both) >= 3:
            out[label.split(" (")[0]] = pd.DataFrame({
                "mean": (both["hand"] + both["estimator"]) / 2,
                "difference": both["estimator"] - both["hand"]})
    return out


def estimator_angles(pose: pd.DataFrame, min_visibility: float) -> pd.DataFrame:
    """Angles from pose.csv's points (index: manifest row)."""
    rows = {}
    for _, p in pose.iterrows():
        rows[int(p["row"])] = measure(pose_row_points(p, min_visibility))
    return pd.DataFrame.from_dict(rows, orient="index")


def hand_angles(table: pd.DataFrame) -> pd.DataFrame:
    """Angles from a manifest's landmark columns (index: manifest row): on the points the
    estimator also finds (same definitions), and on every point (`<angle>@all`)."""
    names = landmark_names(list(table.columns))
    rows = {}
    for _, r in table.iterrows():
        points = row_points(r, names)
        same = {k: v for k, v in points.items() if k in POINTS}
        rows[int(r["row"])] = {**measure(same),
                               **{a + ALL_POINTS: v for a, v in measure(points).items()}}
    return pd.DataFrame.from_dict(rows, orient="index")


def bland_altman_figure(pairs: dict[str, pd.DataFrame], *, source: str = "estimator"
                        ) -> Figure:
    fig = Figure(figsize=(3.6 * max(1, len(pairs)), 3.4))
    axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
    for ax, (name, d) in zip(axes, pairs.items(), strict=False):
        bias, sd = d["difference"].mean(), d["difference"].std(ddof=1)
        ax.scatter(d["mean"], d["difference"], s=8, alpha=0.6)
        for v, style in ((bias, "-"), (bias - 1.96 * sd, ":"), (bias + 1.96 * sd, ":")):
            ax.axhline(v, color="black", ls=style, lw=1)
        ax.set(title=name, xlabel="mean of the two", ylabel=f"{source} − hand")
    fig.tight_layout()
    return fig


def measure_agreement(manifest: Path, data: DataConfig, *, min_visibility: float = 0.5,
                      progress: Callable[[int], None] | None = None,
                      total: Callable[[int], None] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the estimator on every photo of a manifest with landmark columns; returns the
    agreement table and the per-photo angles both ways. `total(n)` hears the photo count
    before the work starts, `progress(k)` each photo done."""
    m = load_manifest(manifest, data, required_labels=False)
    if total is not None:
        total(len(m.table))
    recorder = PoseRecorder()
    decode_photos([Path(p) for p in m.table["image_path"]], {},
                  hook=PoseHook(crop=False, margin=0.1), draft_size=POSE_DRAFT,
                  workers=data.decode_workers, progress=progress, collect=recorder.record)
    pose = pose_table(m.table, data.image_column, recorder)
    hand = hand_angles(m.table)
    est = estimator_angles(pose, min_visibility)
    return agreement_table(hand, est), hand, est


def formatted_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """The agreement table as printed: one text cell per value (with the landmarks' source
    and the ICC's CI when the table has them)."""
    cells = {}
    if "source" in table:
        cells["source"] = table["source"]
    cells.update({
        "angle": table["angle"], "n": table["n"].astype(str),
        "bias": table["bias"].map("{:+.2f}".format), "MAE": table["mae"].map("{:.2f}".format),
        "LoA": [f"{lo:+.1f} to {hi:+.1f}"
                for lo, hi in zip(table["loa_low"], table["loa_high"], strict=True)],
        "ICC(2,1)": table["icc_2_1"].map("{:.3f}".format)})
    if "icc_low" in table:
        cells["ICC(2,1)"] = [f"{v:.3f} ({lo:.3f}–{hi:.3f})" for v, lo, hi in zip(
            table["icc_2_1"], table["icc_low"], table["icc_high"], strict=True)]
    cells["r"] = table["pearson_r"].map("{:.3f}".format)
    return pd.DataFrame(cells)


def write_agreement(
    out: Path, *, table: pd.DataFrame, hand: pd.DataFrame, estimator: pd.DataFrame,
    source: str = "estimator",
) -> None:
    """agreement.csv, the per-photo angles both ways (angles_hand.csv, angles_<source>.csv)
    and bland_altman.png in `out`."""
    atomic_write_csv(out / "agreement.csv", table)
    atomic_write_csv(out / "angles_hand.csv", hand.rename_axis("row").reset_index())
    atomic_write_csv(out / f"angles_{source}.csv", estimator.rename_axis("row").reset_index())
    fig = bland_altman_figure(bland_altman_pairs(hand, estimator))
    atomic_write(out / "bland_altman.png", lambda p: fig.savefig(p, format="png", dpi=110))
