"""ICC(2,1) against Shrout & Fleiss's worked example, and the agreement table."""

import numpy as np
import pandas as pd
import pytest

from posturescreen.posture.agreement import agreement_table, hand_angles, icc_2_1

# Shrout & Fleiss (1979), Psychol Bull 86:420, Table 2: 6 targets rated by 4 judges;
# their ICC(2,1) = 0.29 (pingouin, irr::icc: 0.290)
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6],
                          [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_2_1_matches_shrout_and_fleiss():
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(0.2898, abs=5e-4)
    same = np.column_stack([np.arange(10.0), np.arange(10.0)])
    assert icc_2_1(same) == pytest.approx(1.0)
    # a constant offset between raters lowers absolute agreement
    assert icc_2_1(same + [0.0, 3.0]) < 0.9


def test_agreement_table_bias_mae_and_limits():
    rng = np.random.default_rng(0)
    # a manifest with C7 but no shoulder: its CVA is compared with the estimator's proxy
    hand = pd.DataFrame({"cva@all": rng.normal(50, 7, 200),
                         "trunk_lean": rng.normal(0, 5, 200)})
    est = pd.DataFrame({"ear_shoulder_angle": hand["cva@all"] + 10 + rng.normal(0, 2, 200),
                        "trunk_lean": hand["trunk_lean"] + rng.normal(0, 1, 200)})
    est.loc[:9, "trunk_lean"] = np.nan  # not measured on some photos: left out of that row
    t = agreement_table(hand, est).set_index("angle")
    proxy = t.loc["cva (hand, on C7) vs ear_shoulder_angle (estimator, proxy)"]
    assert proxy["bias"] == pytest.approx(10, abs=0.5) and proxy["n"] == 200
    assert proxy["loa_high"] - proxy["loa_low"] == pytest.approx(2 * 1.96 * 2, rel=0.15)
    lean = t.loc["trunk_lean"]  # the same points both ways: like with like
    assert lean["n"] == 190 and lean["mae"] < 1.2 and lean["icc_2_1"] > 0.9


def test_hand_angles_use_the_estimators_points_when_the_manifest_has_them():
    row = {"row": 2, "ear_x": 110.0, "ear_y": 80.0, "eye_x": 118.0, "eye_y": 80.0,
           "c7_x": 100.0, "c7_y": 100.0, "shoulder_x": 104.0, "shoulder_y": 108.0,
           "hip_x": 95.0, "hip_y": 200.0}
    angles = hand_angles(pd.DataFrame([row])).iloc[0]
    # same points as the estimator: no C7, so no CVA there, but the ear-shoulder angle
    assert np.isnan(angles["cva"]) and np.isfinite(angles["ear_shoulder_angle"])
    assert np.isfinite(angles["cva@all"])  # every point: the CVA itself
