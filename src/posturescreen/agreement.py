"""Agreement between the pose estimator's angles and hand-placed landmarks' angles: bias,
mean absolute error, Bland–Altman limits of agreement and ICC(2,1).

The estimator finds shoulders, not C7: its CVA is the ear–shoulder proxy, compared here with
the hand-placed CVA as what it stands in for (their difference is part of what is measured).

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

from posturescreen.angles import measure
from posturescreen.config import DataConfig
from posturescreen.data.images import build_image_cache
from posturescreen.data.manifest import load_manifest
from posturescreen.files import atomic_write, atomic_write_csv
from posturescreen.landmarks import landmark_names, row_points
from posturescreen.pose import POINTS, POSE_DRAFT, PoseEstimator
from posturescreen.poses import PoseRecorder, pose_table

# (hand-placed angle, the estimator's angle that stands for it)
COMPARABLE = (("cva", "ear_shoulder_angle"), ("trunk_lean", "trunk_lean"),
              ("head_forward", "head_forward"), ("head_tilt", "head_tilt"),
              ("hip_angle", "hip_angle"), ("knee_angle", "knee_angle"))


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


def agreement_table(hand: pd.DataFrame, estimator: pd.DataFrame) -> pd.DataFrame:
    """One row per comparable angle measured both ways on the same photos (aligned on the
    index): n, bias (estimator − hand), MAE, 95% limits of agreement, ICC(2,1), Pearson r."""
    rows = []
    for h, e in COMPARABLE:
        if h not in hand or e not in estimator:
            continue
        both = pd.DataFrame({"hand": hand[h], "estimator": estimator[e]}).dropna()
        if len(both) < 3:
            continue
        d = both["estimator"] - both["hand"]
        sd = float(d.std(ddof=1))
        rows.append({
            "angle": h if h == e else f"{h} vs {e} (proxy)", "n": len(both),
            "bias": float(d.mean()), "mae": float(d.abs().mean()),
            "loa_low": float(d.mean() - 1.96 * sd), "loa_high": float(d.mean() + 1.96 * sd),
            "icc_2_1": icc_2_1(both[["hand", "estimator"]].to_numpy()),
            "pearson_r": float(np.corrcoef(both["hand"], both["estimator"])[0, 1]),
        })
    return pd.DataFrame(rows, columns=["angle", "n", "bias", "mae", "loa_low", "loa_high",
                                       "icc_2_1", "pearson_r"])


def bland_altman_pairs(hand: pd.DataFrame, estimator: pd.DataFrame
                       ) -> dict[str, pd.DataFrame]:
    """Per comparable angle: the mean of the two measurements and their difference."""
    out = {}
    for h, e in COMPARABLE:
        if h in hand and e in estimator:
            both = pd.DataFrame({"hand": hand[h], "estimator": estimator[e]}).dropna()
            if len(both) >= 3:
                out[h if h == e else f"{h} vs {e}"] = pd.DataFrame({
                    "mean": (both["hand"] + both["estimator"]) / 2,
                    "difference": both["estimator"] - both["hand"]})
    return out


def estimator_angles(pose: pd.DataFrame, min_visibility: float) -> pd.DataFrame:
    """Angles from pose.csv's points (index: manifest row)."""
    rows = {}
    for _, p in pose.iterrows():
        points = {}
        if bool(p["person_found"]):
            points = {n: (float(p[f"{n}_x"]), float(p[f"{n}_y"])) for n in POINTS
                      if float(p[f"{n}_vis"]) >= min_visibility}
        rows[int(p["row"])] = measure(points)
    return pd.DataFrame.from_dict(rows, orient="index")


def hand_angles(table: pd.DataFrame) -> pd.DataFrame:
    """Angles from a manifest's landmark columns (index: manifest row)."""
    names = landmark_names(list(table.columns))
    return pd.DataFrame.from_dict(
        {int(r["row"]): measure(row_points(r, names)) for _, r in table.iterrows()},
        orient="index")


def bland_altman_figure(pairs: dict[str, pd.DataFrame]) -> Figure:
    fig = Figure(figsize=(3.6 * max(1, len(pairs)), 3.4))
    axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
    for ax, (name, d) in zip(axes, pairs.items(), strict=False):
        bias, sd = d["difference"].mean(), d["difference"].std(ddof=1)
        ax.scatter(d["mean"], d["difference"], s=8, alpha=0.6)
        for v, style in ((bias, "-"), (bias - 1.96 * sd, ":"), (bias + 1.96 * sd, ":")):
            ax.axhline(v, color="black", ls=style, lw=1)
        ax.set(title=name, xlabel="mean of the two", ylabel="estimator − hand")
    fig.tight_layout()
    return fig


def measure_agreement(manifest: Path, data: DataConfig, min_visibility: float = 0.5,
                      progress: Callable[[int], None] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the estimator on every photo of a manifest with landmark columns; returns the
    agreement table and the per-photo angles both ways."""
    m = load_manifest(manifest, data, required_labels=False)
    recorder = PoseRecorder(PoseEstimator(), crop=False, margin=0.1)
    build_image_cache([Path(p) for p in m.table["image_path"]], {}, progress, POSE_DRAFT,
                      recorder)
    recorder.estimator.close()
    pose = pose_table(m.table, data.image_column, recorder)
    hand = hand_angles(m.table)
    est = estimator_angles(pose, min_visibility)
    return agreement_table(hand, est), hand, est


def formatted_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """The agreement table as printed: one text cell per value."""
    return pd.DataFrame({
        "angle": table["angle"], "n": table["n"].astype(str),
        "bias": table["bias"].map("{:+.2f}".format), "MAE": table["mae"].map("{:.2f}".format),
        "LoA": [f"{lo:+.1f} to {hi:+.1f}" for lo, hi in zip(table["loa_low"],
                                                           table["loa_high"], strict=True)],
        "ICC(2,1)": table["icc_2_1"].map("{:.3f}".format),
        "r": table["pearson_r"].map("{:.3f}".format)})


def write_agreement(out: Path, table: pd.DataFrame, hand: pd.DataFrame,
                    estimator: pd.DataFrame) -> None:
    """agreement.csv, the per-photo angles both ways and bland_altman.png in `out`."""
    atomic_write_csv(out / "agreement.csv", table)
    atomic_write_csv(out / "angles_hand.csv", hand.rename_axis("row").reset_index())
    atomic_write_csv(out / "angles_estimator.csv", estimator.rename_axis("row").reset_index())
    fig = bland_altman_figure(bland_altman_pairs(hand, estimator))
    atomic_write(out / "bland_altman.png", lambda p: fig.savefig(p, format="png", dpi=110))
