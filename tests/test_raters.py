"""Two raters' agreement on hand-computed cases: distances per point, angle differences,
ICC(2,1) and its bootstrap interval over workers."""

import math

import numpy as np
import pandas as pd
import pytest

from posturescreen.posture.agreement import icc_2_1
from posturescreen.posture.raters import (
    angle_agreement,
    angles_of,
    formatted_angles,
    formatted_points,
    icc_interval,
    point_agreement,
    rater_agreement,
)


def _points(rows: dict[str, dict[str, tuple[float, float]]]) -> pd.DataFrame:
    return pd.DataFrame({img: {f"{n}_{a}": xy[k] for n, xy in pts.items()
                               for k, a in enumerate("xy")} for img, pts in rows.items()}).T


def test_point_agreement_by_hand():
    a = _points({"p1": {"ear": (100, 50), "c7": (80, 90)},
                 "p2": {"ear": (110, 40), "c7": (85, 95)},
                 "p3": {"ear": (90, 45), "c7": (np.nan, np.nan)}})
    b = _points({"p1": {"ear": (103, 54), "c7": (80, 90)},   # 5 px apart
                 "p2": {"ear": (110, 40), "c7": (85, 83)},   # 0 px, 12 px
                 "p3": {"ear": (90, 35), "c7": (70, 70)},    # 10 px; c7 by B only
                 "p4": {"ear": (1, 1), "c7": (1, 1)}})       # A did not annotate p4
    t = point_agreement(a, b, heights=pd.Series({"p1": 100, "p2": 200, "p3": 100})
                        ).set_index("landmark")
    assert t.loc["ear", "n"] == 3 and t.loc["ear", "mean_px"] == pytest.approx(5.0)
    assert t.loc["ear", "median_px"] == pytest.approx(5.0)
    assert t.loc["ear", "mean_pct_height"] == pytest.approx((5 + 0 + 10) / 3)
    assert t.loc["c7", "n"] == 2 and t.loc["c7", "mean_px"] == pytest.approx(6.0)
    assert t.loc["c7", "one_rater_only"] == 1 and t.loc["ear", "one_rater_only"] == 0
    shown = formatted_points(t.reset_index())
    assert list(shown.iloc[0]) == ["ear", "3", "5.0", "5.0", "9.5", "5.00", "0"]


def test_angle_agreement_by_hand():
    # C7 at the origin, the ear 100 px away at the CVA each rater saw (worker faces right)
    cva_a = [40.0, 45.0, 50.0, 55.0, 48.0, 52.0]
    cva_b = [42.0, 46.0, 53.0, 55.0, 47.0, 55.0]

    def pts(cvas):
        return _points({f"p{k}": {"c7": (200.0, 200.0),
                                  "ear": (200 + 100 * math.cos(math.radians(c)),
                                          200 - 100 * math.sin(math.radians(c)))}
                        for k, c in enumerate(cvas)})

    a, b = angles_of(pts(cva_a)), angles_of(pts(cva_b))
    assert a["cva"].tolist() == pytest.approx(cva_a)
    t = angle_agreement(a, b, n_resamples=500).set_index("angle")
    d = np.array(cva_b) - np.array(cva_a)
    row = t.loc["cva"]
    assert row["n"] == 6 and row["unit"] == "°"
    assert row["bias"] == pytest.approx(d.mean()) and row["mae"] == pytest.approx(
        np.abs(d).mean())
    assert row["loa_high"] - row["loa_low"] == pytest.approx(2 * 1.96 * d.std(ddof=1))
    assert row["icc_2_1"] == pytest.approx(icc_2_1(np.column_stack([cva_a, cva_b])))
    assert row["icc_low"] <= row["icc_2_1"] <= row["icc_high"]
    assert row["resampled"] == "6 photos"
    assert "head_tilt" not in t.index  # no eye: not measured, not guessed
    shown = formatted_angles(t.reset_index()).iloc[0]
    assert shown["angle"] == "cva (°)" and shown["bias"] == f"{d.mean():+.2f}"


def test_icc_interval_resamples_workers():
    rng = np.random.default_rng(1)
    truth = rng.normal(50, 8, 40)
    pairs = np.column_stack([truth + rng.normal(0, 1, 40), truth + rng.normal(0, 1, 40)])
    workers = np.repeat(np.arange(10), 4)
    low, high = icc_interval(pairs, workers, n_resamples=400, seed=3)
    assert 0.8 < low < icc_2_1(pairs) < high <= 1.0
    assert icc_interval(pairs, workers, n_resamples=400, seed=3) == (low, high)  # seeded
    assert all(math.isnan(v) for v in icc_interval(pairs, np.repeat([0, 1], 20)))


def test_rater_agreement_uses_the_workers_it_is_given():
    rng = np.random.default_rng(0)
    rows_a, rows_b = {}, {}
    for k in range(12):
        c7 = (300.0 + rng.normal(0, 5), 300.0)
        ear = (c7[0] + 60 + rng.normal(0, 15), 220.0 + rng.normal(0, 15))
        rows_a[f"p{k}"] = {"c7": c7, "ear": ear, "hip": (280.0, 500.0)}
        rows_b[f"p{k}"] = {"c7": (c7[0] + rng.normal(0, 2), c7[1] + rng.normal(0, 2)),
                           "ear": (ear[0] + rng.normal(0, 2), ear[1]), "hip": (282.0, 497.0)}
    groups = pd.Series({f"p{k}": f"W{k // 3}" for k in range(12)})
    points, angles = rater_agreement(_points(rows_a), _points(rows_b), groups=groups,
                                     n_resamples=300)
    assert set(points["landmark"]) == {"c7", "ear", "hip"}
    assert points.set_index("landmark").loc["hip", "mean_px"] == pytest.approx(math.hypot(2, 3))
    cva = angles.set_index("angle").loc["cva"]
    assert cva["resampled"] == "4 workers" and cva["icc_2_1"] > 0.8
    assert {"trunk_lean", "head_forward"} <= set(angles["angle"])
