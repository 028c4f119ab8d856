"""Posture angles on hand-computed cases, both facing directions."""

import math

import numpy as np
import pytest

from posturescreen.posture.angles import ANGLES, facing, measure


def _mirror(points: dict, width: float = 400.0) -> dict:
    return {k: (width - x, y) for k, (x, y) in points.items()}


# A worker facing right (y grows downwards in photos). Hand-computed:
# ear 60° above the horizontal from C7; eye level with the ear; shoulder 10 px forward and
# 10 px below C7 (shoulder→C7 rises 45° seen from behind); hip straight below... leaning 10°.
C7 = (100.0, 100.0)
EAR = (100.0 + 20 * math.cos(math.radians(60)), 100.0 - 20 * math.sin(math.radians(60)))
HIP = (100.0 - 100 * math.tan(math.radians(10)), 200.0)
RIGHT = {
    "c7": C7,
    "ear": EAR,
    "eye": (EAR[0] + 8.0, EAR[1]),
    "shoulder": (110.0, 110.0),
    "hip": HIP,
    "knee": (HIP[0] + 50.0, HIP[1]),  # thigh horizontal
    "ankle": (HIP[0] + 50.0, HIP[1] + 45.0),  # shank vertical
}


@pytest.mark.parametrize("points", [RIGHT, _mirror(RIGHT)], ids=["facing right", "facing left"])
def test_hand_computed_angles(points):
    a = measure(points)
    assert a["cva"] == pytest.approx(60.0)
    assert a["head_tilt"] == pytest.approx(0.0, abs=1e-9)
    assert a["shoulder_angle"] == pytest.approx(45.0)
    assert a["trunk_lean"] == pytest.approx(10.0)  # C7 in front of the hip: leaning forward
    # trunk (hip→C7) is 10° forward of vertical, the thigh horizontal: 90 + 10
    assert a["hip_angle"] == pytest.approx(80.0)
    assert a["knee_angle"] == pytest.approx(90.0)
    assert a["ear_shoulder_angle"] == pytest.approx(
        math.degrees(math.atan2(110.0 - EAR[1], EAR[0] - 110.0)))
    # ear 10 px in front of C7; trunk length |C7 − hip|
    trunk = math.dist(C7, HIP)
    assert a["head_forward"] == pytest.approx(10.0 / trunk)
    assert math.isnan(a["upper_back_angle"])  # no upper-back point: not measured


def test_facing_is_read_from_the_face_then_the_body():
    assert facing(RIGHT) == 1.0 and facing(_mirror(RIGHT)) == -1.0
    # posturecoach's four points: ear in front of the upper back
    pc = {"ear": (300, 100), "c7": (280, 160), "upper_back": (250, 220), "hip": (270, 330)}
    assert facing(pc) == 1.0 and facing(_mirror(pc)) == -1.0
    assert facing({"hip": (1, 1)}) is None


def test_forward_head_lowers_cva_and_looking_down_is_negative_tilt():
    down = dict(RIGHT, eye=(RIGHT["ear"][0] + 8, RIGHT["ear"][1] + 8))
    assert measure(down)["head_tilt"] == pytest.approx(-45.0)
    forward = dict(RIGHT, ear=(C7[0] + 20, C7[1] - 10), eye=(C7[0] + 28, C7[1] - 10))
    assert measure(forward)["cva"] < measure(RIGHT)["cva"]
    assert measure(forward)["head_forward"] > measure(RIGHT)["head_forward"]


def test_upper_back_angle_and_missing_points():
    pc = {"ear": (300, 100), "c7": (280, 160), "upper_back": (250, 220), "hip": (250, 330)}
    a = measure(pc)
    # vectors upper_back→c7 = (30, -60), upper_back→hip = (0, 110)
    expected = math.degrees(math.acos(-60 * 110 / (math.hypot(30, 60) * 110)))
    assert a["upper_back_angle"] == pytest.approx(expected)
    assert math.isnan(a["knee_angle"]) and math.isnan(a["head_tilt"])
    nothing = measure({})
    assert set(nothing) == set(ANGLES) and all(math.isnan(v) for v in nothing.values())
    assert all(math.isnan(v) for v in measure({"ear": (np.nan, 1.0), "c7": (1, 1)}).values())
