"""A seated worker's skeleton in world coordinates (cm; x the way the worker faces, y up,
the hip joint at the origin), from body sizes and posture angles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posturescreen.data.synthetic.population import Worker

# x points the way the worker faces, y points up; the hip joint is the origin.


def _dir(deg: float) -> np.ndarray:
    """Unit vector at `deg` counter-clockwise from +x."""
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


@dataclass
class Skeleton:
    spine: np.ndarray  # (n, 2) hip -> C7
    spine_angle: np.ndarray  # direction of each spine segment, degrees from +x
    points: dict[str, np.ndarray]
    head_pitch: float  # degrees, negative = looking down
    near_thigh_dir: float
    near_shank_dir: float
    far_thigh_dir: float
    far_shank_dir: float


def pose_skeleton(w: Worker, p: dict[str, float]) -> Skeleton:
    hip = np.zeros(2)
    # Spine as an arc from the hip: the lumbar third turns backward by the lordosis (which
    # a posterior pelvic tilt flattens), the thoracic part turns forward by the kyphosis.
    lordosis = max(0.0, 25.0 - 0.7 * p["pelvic_tilt"])
    lean0 = p["trunk_lean"] - 0.5 * p["pelvic_tilt"] + 0.5 * lordosis
    n = 14
    seg = w.trunk_len / n
    angles = np.empty(n)
    pts = [hip]
    for i in range(n):
        f = (i + 0.5) / n
        if f < 0.35:
            lean = lean0 - lordosis * f / 0.35
        else:
            lean = lean0 - lordosis + p["kyphosis"] * (f - 0.35) / 0.65
        angles[i] = 90.0 - lean
        pts.append(pts[-1] + seg * _dir(angles[i]))
    spine = np.array(pts)
    c7 = spine[-1]
    trunk_dir = math.degrees(math.atan2(*(c7 - hip)[::-1]))
    # a forward head both lowers the CVA and lengthens the C7-tragus distance (the head
    # protrudes), which is what makes it visible from the side
    protrusion = 1.0 + 0.03 * max(-8.0, 50.0 - p["cva"])
    ear = c7 + w.neck_len * 1.25 * protrusion * _dir(p["cva"])
    head_pitch = -p["head_flexion"] + (p["cva"] - 50.0) * 0.3
    face = _dir(head_pitch)
    up = _dir(head_pitch + 90)
    eye = ear + 8.0 * face * w.height_scale + 3.2 * up * w.height_scale
    nose = ear + 10.2 * face * w.height_scale + 0.6 * up * w.height_scale
    shoulder_axis = _dir(angles[-1])
    shoulder = (
        c7 - 0.15 * w.trunk_len * shoulder_axis + (2.0 + p["protraction"]) * _dir(angles[-1] - 90)
    )
    # hands on the keyboard: desk height and distance follow the body size
    wrist = np.array([0.86 * w.thigh + 6.0, 0.42 * w.trunk_len + 2.0])
    elbow = _elbow(shoulder, wrist, w.upper_arm, w.forearm)
    thigh_dir = trunk_dir - p["hip_angle"]
    shank_dir = thigh_dir - (180.0 - p["knee_angle"])
    knee = hip + w.thigh * _dir(thigh_dir)
    ankle = knee + w.shank * _dir(shank_dir)
    far_thigh, far_shank = thigh_dir, shank_dir
    if w.crossed_legs:
        # near leg crossed over the far knee: thigh raised, shank hanging nearly vertical
        thigh_dir += 16.0
        shank_dir = thigh_dir - 180.0 + 95.0
        knee = hip + w.thigh * _dir(thigh_dir)
        ankle = knee + w.shank * 0.95 * _dir(shank_dir)
    return Skeleton(
        spine,
        angles,
        {
            "hip": hip,
            "c7": c7,
            "ear": ear,
            "eye": eye,
            "nose": nose,
            "shoulder": shoulder,
            "elbow": elbow,
            "wrist": wrist,
            "knee": knee,
            "ankle": ankle,
        },
        head_pitch,
        thigh_dir,
        shank_dir,
        far_thigh,
        far_shank,
    )


def _elbow(shoulder: np.ndarray, wrist: np.ndarray, a: float, b: float) -> np.ndarray:
    """Two-link arm, elbow down; an out-of-reach target straightens the arm toward it."""
    d_vec = wrist - shoulder
    d = float(np.linalg.norm(d_vec))
    d_clamped = min(max(d, abs(a - b) + 1e-3), a + b - 1e-3)
    cos_a = (a * a + d_clamped * d_clamped - b * b) / (2 * a * d_clamped)
    ang = math.atan2(d_vec[1], d_vec[0]) - math.acos(max(-1.0, min(1.0, cos_a)))
    return shoulder + a * np.array([math.cos(ang), math.sin(ang)])
