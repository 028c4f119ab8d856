"""Clinical posture angles from side-view landmarks, as a physiotherapist's protractor reads
them off a photo.

Landmarks are pixel positions in the photo (x to the right, y down). Every angle is measured
in the worker's own frame: "forward" is the way the face points (the photo is read as if the
worker faced right), "up" is the top of the photo. Angles against the horizontal or vertical
therefore assume a level camera; a tilted camera adds its tilt to them.

- `cva`: craniovertebral angle, the C7→tragus (ear) line above the horizontal; smaller =
  more forward head (tension-type headache 45.3 ± 7.6° vs controls 54.1 ± 6.3°:
  Fernández-de-las-Peñas et al., Cephalalgia 2006).
- `ear_shoulder_angle`: the CVA **proxy** a pose estimator allows (it finds shoulders, not
  C7): the shoulder→ear line above the horizontal.
- `head_tilt`: the ear→eye (else nose) line against the horizontal; negative = head pitched
  down (the tragus–canthus line).
- `shoulder_angle`: forward shoulder angle, the shoulder→C7 line above the horizontal seen
  from behind the shoulder; smaller = more protracted shoulder.
- `head_forward`: how far the ear sits in front of C7 (else the shoulder), in trunk lengths.
- `trunk_lean`: the hip→C7 (else shoulder) line from the vertical; positive = forward.
- `upper_back_angle`: the angle at the upper back's most posterior point between C7 and hip;
  smaller = rounder back.
- `hip_angle`: trunk–thigh angle at the hip; `knee_angle`: thigh–shank angle at the knee
  (> 90° puts the feet forward).

docs/pose.md has the table with references and the agreement with hand-placed landmarks.
An angle whose points are missing is NaN, never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Points = Mapping[str, tuple[float, float] | np.ndarray]

ANGLES = ("cva", "ear_shoulder_angle", "head_tilt", "shoulder_angle", "head_forward",
          "trunk_lean", "upper_back_angle", "hip_angle", "knee_angle")
DESCRIPTIONS = {
    "cva": "craniovertebral angle (C7→ear above horizontal), degrees",
    "ear_shoulder_angle": "CVA proxy from pose-estimator points (shoulder→ear above "
                          "horizontal), degrees",
    "head_tilt": "ear→eye line against the horizontal (negative: looking down), degrees",
    "shoulder_angle": "forward shoulder angle (shoulder→C7 above horizontal, from behind), "
                      "degrees",
    "head_forward": "ear in front of C7 (or shoulder), in trunk lengths",
    "trunk_lean": "hip→C7 (or shoulder) from vertical (positive: forward), degrees",
    "upper_back_angle": "angle at the upper back between C7 and hip, degrees",
    "hip_angle": "trunk–thigh angle at the hip, degrees",
    "knee_angle": "thigh–shank angle at the knee, degrees",
}
# How a change of each angle is said in words ("raise CVA by 8°"): the unit and a short name.
UNITS = {name: ("" if name == "head_forward" else "°") for name in ANGLES}
SHORT_NAMES = {"cva": "CVA", "ear_shoulder_angle": "ear–shoulder angle",
               "head_tilt": "head tilt", "shoulder_angle": "shoulder angle",
               "head_forward": "forward head distance", "trunk_lean": "trunk lean",
               "upper_back_angle": "upper-back angle", "hip_angle": "hip angle",
               "knee_angle": "knee angle"}


def _get(points: Points, name: str) -> np.ndarray | None:
    p = points.get(name)
    if p is None:
        return None
    arr = np.asarray(p, dtype=float)
    return arr if arr.shape == (2,) and np.isfinite(arr).all() else None


def facing(points: Points) -> float | None:
    """+1 when the worker faces right in the photo, -1 when left, None when the landmarks
    cannot tell. Reads, in order: the face in front of the ear (eye or nose), the ear in
    front of the upper back, the knee in front of the hip (seated), the ear in front of C7."""
    pairs = (("eye", "ear"), ("nose", "ear"), ("ear", "upper_back"), ("knee", "hip"),
             ("ear", "c7"), ("ear", "shoulder"))
    for front, back in pairs:
        a, b = _get(points, front), _get(points, back)
        if a is not None and b is not None and abs(a[0] - b[0]) > 1e-6:
            return 1.0 if a[0] > b[0] else -1.0
    return None


def _forward_up(a: np.ndarray, b: np.ndarray, sign: float) -> tuple[float, float]:
    """The vector a→b as (forward, up) components in the worker's frame."""
    return sign * (b[0] - a[0]), -(b[1] - a[1])


def _elevation(a: np.ndarray, b: np.ndarray, sign: float) -> float:
    """Angle of a→b above the forward horizontal, degrees in (-180, 180]."""
    f, u = _forward_up(a, b, sign)
    return math.degrees(math.atan2(u, f))


def _inner_angle(a: np.ndarray, vertex: np.ndarray, c: np.ndarray) -> float:
    """The angle a–vertex–c in degrees, 0..180 (independent of facing)."""
    u, v = a - vertex, c - vertex
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu < 1e-9 or nv < 1e-9:
        return float("nan")
    return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (nu * nv), -1.0, 1.0))))


def measure(points: Points, *, known_facing: float | None = None) -> dict[str, float]:
    """Every angle of ANGLES the points allow (NaN for the others). `known_facing` (+1 right,
    -1 left) replaces the facing the points would give, e.g. the face's for learned points
    (docs/pose.md: a misplaced upper back must not mirror every angle)."""
    out = dict.fromkeys(ANGLES, float("nan"))
    sign = known_facing if known_facing is not None else facing(points)
    if sign is None:
        return out
    p = {name: _get(points, name) for name in ("ear", "eye", "nose", "c7", "shoulder",
                                               "upper_back", "hip", "knee", "ankle")}
    ear, c7, shoulder, hip = p["ear"], p["c7"], p["shoulder"], p["hip"]
    neck = c7 if c7 is not None else shoulder  # the base of the neck the landmarks give
    if ear is not None and c7 is not None:
        out["cva"] = _elevation(c7, ear, sign)
    if ear is not None and shoulder is not None:
        out["ear_shoulder_angle"] = _elevation(shoulder, ear, sign)
    face = p["eye"] if p["eye"] is not None else p["nose"]
    if ear is not None and face is not None:
        out["head_tilt"] = _elevation(ear, face, sign)
    if c7 is not None and shoulder is not None:
        f, u = _forward_up(shoulder, c7, sign)
        out["shoulder_angle"] = math.degrees(math.atan2(u, -f))
    if hip is not None and neck is not None:
        f, u = _forward_up(hip, neck, sign)
        out["trunk_lean"] = math.degrees(math.atan2(f, u))
        trunk = float(np.linalg.norm(neck - hip))
        if ear is not None and trunk > 1e-9:
            out["head_forward"] = _forward_up(neck, ear, sign)[0] / trunk
        if p["knee"] is not None:
            out["hip_angle"] = _inner_angle(neck, hip, p["knee"])
    if c7 is not None and p["upper_back"] is not None and hip is not None:
        out["upper_back_angle"] = _inner_angle(c7, p["upper_back"], hip)
    if hip is not None and p["knee"] is not None and p["ankle"] is not None:
        out["knee_angle"] = _inner_angle(hip, p["knee"], p["ankle"])
    return out
