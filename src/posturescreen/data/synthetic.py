"""Synthetic cohort: side-view photos of seated office workers whose labels come from
posture through a documented risk model, so models and CAMs can be checked against truth.

Per worker: body size and proportions, clothing/skin/hair colours, facing direction, site,
and clinical posture angles. Per photo: small posture changes, camera distance/height/tilt,
lighting, noise, blur and JPEG quality. Each photo comes with a region mask (head/neck,
trunk, upper limbs, lower body) drawn from the same geometry, landmarks, and every
generating parameter in generator.json. See docs/synthetic.md.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from scipy.optimize import linear_sum_assignment

REGIONS = {"background": 0, "head_neck": 1, "trunk": 2, "upper_limbs": 3, "lower_body": 4}
LANDMARKS = ("ear", "eye", "nose", "c7", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
LANDMARK_REGION = {
    "ear": "head_neck",
    "eye": "head_neck",
    "nose": "head_neck",
    "c7": "head_neck",
    "shoulder": "upper_limbs",
    "elbow": "upper_limbs",
    "wrist": "upper_limbs",
    "hip": "trunk",
    "knee": "lower_body",
    "ankle": "lower_body",
}

# The paper's cohort (design.md §1): workers per (CH, NSP) cell.
PAPER_CELLS = {(1, 1): 108, (1, 0): 27, (0, 1): 257, (0, 0): 139}
PAPER_PHOTOS = 904


@dataclass(frozen=True)
class Site:
    name: str
    wall: tuple[int, int, int]
    floor: tuple[int, int, int]
    scale: float  # pixels per cm at 384 px, before per-photo jitter
    height: float  # camera height offset (fraction of the frame)
    noise: float  # sensor noise SD (0-255 scale)
    light: float  # mean brightness factor


SITES = (
    Site("A", (214, 209, 196), (150, 128, 104), 2.25, 0.00, 3.0, 1.00),
    Site("B", (180, 196, 210), (96, 96, 104), 2.05, 0.04, 6.0, 0.90),
    Site("C", (222, 214, 170), (120, 84, 60), 2.45, -0.03, 4.5, 1.08),
)

# Posture parameters: (mean, SD, clinical meaning). Angles in degrees, lengths in cm.
POSTURE = {
    "cva": (50.0, 7.0, "craniovertebral angle: C7-tragus line above horizontal; <48 forward head"),
    "head_flexion": (8.0, 8.0, "head pitched down relative to the neck line"),
    "kyphosis": (38.0, 10.0, "thoracic curve, degrees of bend along the thoracic spine"),
    "protraction": (3.0, 2.5, "shoulder forward of C7 (cm)"),
    "trunk_lean": (-4.0, 8.0, "trunk from vertical; negative leans back into the chair"),
    "pelvic_tilt": (5.0, 9.0, "posterior pelvic tilt (slump), degrees"),
    "hip_angle": (98.0, 10.0, "trunk-thigh angle"),
    "knee_angle": (100.0, 14.0, "thigh-shank angle; >90 puts the feet forward"),
}

# Risk model (standardised posture z-scores -> log-odds weight). CH: head and neck;
# NSP: mainly lower body and trunk.
CH_WEIGHTS = {"cva": -1.9, "head_flexion": 1.0, "protraction": 0.35}
NSP_WEIGHTS = {
    "pelvic_tilt": 1.0,
    "hip_angle": 0.7,
    "knee_angle": -0.5,
    "trunk_lean": -0.6,
    "crossed_legs": 0.6,
    "kyphosis": 0.3,
}
BOTH_INTERACTION = 0.8  # CH and NSP co-occur more than chance (108 vs ~93 expected)
DEFAULT_NOISE = 1.4  # Gumbel scale of the label noise: tuned for the oracle AUC bands


@dataclass
class Worker:
    subject_id: str
    site: str
    facing: str  # "right" or "left"
    height_scale: float
    trunk_len: float
    neck_len: float
    head_len: float
    upper_arm: float
    forearm: float
    thigh: float
    shank: float
    girth: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    crossed_legs: int
    age: int
    sex: str
    posture: dict[str, float]
    ch: int = 0
    nsp: int = 0


def _colour(
    rng: np.random.Generator, base: tuple[int, int, int], spread: int
) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in base)


def _new_worker(i: int, rng: np.random.Generator) -> Worker:
    sex = "F" if rng.random() < 0.45 else "M"
    size = rng.normal(1.0 if sex == "M" else 0.93, 0.05)
    skins = [(241, 204, 170), (224, 172, 130), (190, 140, 100), (141, 93, 62), (96, 64, 44)]
    hairs = [(30, 24, 20), (70, 48, 30), (120, 90, 50), (160, 150, 140), (200, 170, 110)]
    shirts = [
        (40, 70, 130),
        (170, 40, 50),
        (60, 120, 80),
        (230, 230, 225),
        (90, 90, 95),
        (200, 150, 60),
        (120, 80, 140),
    ]
    trousers = [(35, 38, 50), (70, 70, 75), (50, 60, 90), (110, 95, 70)]
    posture = {k: float(rng.normal(m, s)) for k, (m, s, _) in POSTURE.items()}
    return Worker(
        subject_id=f"W{i:04d}",
        site="",
        facing="right" if rng.random() < 0.5 else "left",
        height_scale=size,
        trunk_len=52 * size * rng.normal(1, 0.04),
        neck_len=11 * size * rng.normal(1, 0.06),
        head_len=22 * size * rng.normal(1, 0.04),
        upper_arm=30 * size * rng.normal(1, 0.04),
        forearm=26 * size * rng.normal(1, 0.04),
        thigh=44 * size * rng.normal(1, 0.04),
        shank=44 * size * rng.normal(1, 0.04),
        girth=size * rng.normal(1, 0.1),
        skin=_colour(rng, skins[rng.integers(len(skins))], 8),
        hair=_colour(rng, hairs[rng.integers(len(hairs))], 10),
        shirt=_colour(rng, shirts[rng.integers(len(shirts))], 20),
        trousers=_colour(rng, trousers[rng.integers(len(trousers))], 12),
        crossed_legs=int(rng.random() < 0.25),
        age=int(rng.integers(22, 60)),
        sex=sex,
        posture=posture,
    )


def _z(worker: Worker, key: str) -> float:
    if key == "crossed_legs":
        return (worker.crossed_legs - 0.25) / 0.433
    mean, sd, _ = POSTURE[key]
    return (worker.posture[key] - mean) / sd


def risk_scores(worker: Worker) -> tuple[float, float]:
    ch = sum(w * _z(worker, k) for k, w in CH_WEIGHTS.items())
    nsp = sum(w * _z(worker, k) for k, w in NSP_WEIGHTS.items())
    return ch, nsp


def assign_labels(
    workers: list[Worker],
    cells: dict[tuple[int, int], int],
    rng: np.random.Generator,
    noise: float = DEFAULT_NOISE,
) -> None:
    """Labels with exactly the requested cell counts, drawn in proportion to each worker's
    risk: Gumbel-perturbed cell log-odds, then an assignment to cell slots (a draw from the
    risk model conditioned on the margins)."""
    if sum(cells.values()) != len(workers):
        raise ValueError(f"cell counts {cells} do not add up to {len(workers)} workers")
    slots = [cell for cell, n in cells.items() for _ in range(n)]
    score = np.zeros((len(workers), len(cells)))
    cell_list = list(cells)
    for i, w in enumerate(workers):
        r_ch, r_nsp = risk_scores(w)
        for j, (c, n) in enumerate(cell_list):
            score[i, j] = c * r_ch + n * r_nsp + c * n * BOTH_INTERACTION
    score += noise * rng.gumbel(size=score.shape)
    slot_cell = np.array([cell_list.index(c) for c in slots])
    _, cols = linear_sum_assignment(-score[:, slot_cell])
    for i, col in enumerate(cols):
        workers[i].ch, workers[i].nsp = slots[col]


def _photo_counts(n_workers: int, n_photos: int, rng: np.random.Generator) -> np.ndarray:
    """1-3 photos per worker adding up to n_photos."""
    extra = n_photos - n_workers
    if not 0 <= extra <= 2 * n_workers:
        raise ValueError(
            f"{n_photos} photos cannot be spread 1-3 per worker over {n_workers} workers"
        )
    n3 = min(extra // 2, max(0, round(extra * 0.16)))
    counts = np.ones(n_workers, dtype=int)
    idx = rng.permutation(n_workers)
    counts[idx[:n3]] = 3
    counts[idx[n3 : n3 + extra - 2 * n3]] = 2
    return counts


# ---------------------------------------------------------------- geometry (world, cm)
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


# ---------------------------------------------------------------- drawing
SUPERSAMPLE = 2


class _Canvas:
    """Draws world-space shapes on the photo and, with region ids, on its mask."""

    def __init__(self, size: int, wall, floor_rgb, transform):
        big = size * SUPERSAMPLE
        self.size, self.big = size, big
        self.img = Image.new("RGB", (big, big), wall)
        self.mask = Image.new("L", (big, big), 0)
        self.draw = ImageDraw.Draw(self.img)
        self.mdraw = ImageDraw.Draw(self.mask)
        self.t = transform  # world (n, 2) -> big-pixel (n, 2)
        self.floor_rgb = floor_rgb

    def px(self, pts) -> list[tuple[float, float]]:
        arr = self.t(np.atleast_2d(np.asarray(pts, dtype=float)))
        return [tuple(p) for p in arr]

    def scale(self) -> float:
        a, b = self.t(np.array([[0.0, 0.0], [1.0, 0.0]]))
        return float(np.linalg.norm(b - a))

    def polygon(self, pts, fill, region: int | None = None) -> None:
        xy = self.px(pts)
        self.draw.polygon(xy, fill=fill)
        if region is not None:
            self.mdraw.polygon(xy, fill=region)

    def capsule(self, a, b, radius_cm: float, fill, region: int | None = None) -> None:
        (pa, pb), r = self.px([a, b]), radius_cm * self.scale()
        for d, val in ((self.draw, fill), (self.mdraw, region)):
            if val is None:
                continue
            d.line([pa, pb], fill=val, width=max(1, round(2 * r)))
            for c in (pa, pb):
                d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=val)

    def ellipse(
        self, centre, rx_cm: float, ry_cm: float, angle_deg: float, fill, region: int | None = None
    ) -> None:
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        local = np.stack([rx_cm * np.cos(t), ry_cm * np.sin(t)], 1)
        r = math.radians(angle_deg)
        rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        self.polygon(np.asarray(centre) + local @ rot.T, fill, region)


def _shade(c, f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)


def _trunk_outline(sk: Skeleton, w: Worker) -> np.ndarray:
    """Body around the spine: the back just behind it, the front a depth ahead."""
    back, front = [], []
    n = len(sk.spine)
    for i, pt in enumerate(sk.spine):
        a = sk.spine_angle[min(i, n - 2)]
        fwd = _dir(a - 90)  # perpendicular, pointing to the front of the body
        f = i / (n - 1)
        depth = (
            22 - 6 * math.sin(math.pi * min(f / 0.6, 1.0)) + 5 * max(0, f - 0.55) / 0.45
        ) * w.girth
        if f > 0.92:
            depth *= 1 - (f - 0.92) * 4  # taper into the neck
        back.append(pt - 2.5 * fwd)
        front.append(pt + depth * fwd)
    return np.array(back + front[::-1])


def _draw_leg(cv: _Canvas, hip, thigh_dir, shank_dir, w: Worker, shade: float, region: int) -> None:
    knee = hip + w.thigh * _dir(thigh_dir)
    ankle = knee + w.shank * _dir(shank_dir)
    tr = _shade(w.trousers, shade)
    cv.capsule(hip, knee, 7.5 * w.girth, tr, region)
    cv.capsule(knee, ankle, 5.2 * w.girth, tr, region)
    toe = ankle + 22 * w.height_scale * _dir(max(-25.0, min(15.0, shank_dir + 90)))
    cv.capsule(ankle, toe, 3.5, _shade((35, 30, 30), shade), region)


def _draw_arm(cv: _Canvas, shoulder, elbow, wrist, w: Worker, shade: float, region: int) -> None:
    cv.capsule(shoulder, elbow, 5.0 * w.girth, _shade(w.shirt, 0.92 * shade), region)
    cv.capsule(elbow, wrist, 3.8 * w.girth, _shade(w.skin, shade), region)
    hand_dir = (wrist - elbow) / max(1e-6, np.linalg.norm(wrist - elbow))
    cv.capsule(wrist, wrist + 8 * hand_dir, 3.2, _shade(w.skin, 0.96 * shade), region)
    cv.ellipse(
        shoulder, 6.0 * w.girth, 6.8 * w.girth, 0, _shade(w.shirt, 0.95 * shade), region
    )  # deltoid


def render_photo(
    w: Worker,
    p: dict[str, float],
    camera: dict[str, float],
    site: Site,
    size: int,
    rng: np.random.Generator,
) -> tuple[Image.Image, Image.Image, dict[str, tuple[float, float]]]:
    """One photo: RGB image, region mask (values of REGIONS) and landmark pixels."""
    sk = pose_skeleton(w, p)
    P = sk.points
    s = camera["scale"] * size / 384 * SUPERSAMPLE
    big = size * SUPERSAMPLE
    anchor = np.array([camera["anchor_x"], camera["anchor_y"]]) * big
    tilt = math.radians(camera["tilt"])
    rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])

    def transform(pts: np.ndarray) -> np.ndarray:
        q = pts @ rot.T * s
        return np.stack([anchor[0] + q[:, 0], anchor[1] - q[:, 1]], 1)

    cv = _Canvas(size, site.wall, site.floor, transform)
    seat_y = -9.0
    foot_y = min(P["ankle"][1], (P["knee"] + w.shank * _dir(sk.far_shank_dir))[1]) - 4.0
    floor_top = transform(np.array([[0.0, foot_y]]))[0, 1]
    cv.draw.rectangle([0, min(floor_top, big - 1), big, big], fill=site.floor)
    # desk and screen (behind the worker's near side)
    desk_top = P["wrist"][1] - 3.0
    desk_front = min(P["knee"][0], P["wrist"][0] - 10) - 4.0
    wood = (150, 110, 75) if camera["desk"] < 0.5 else (205, 200, 190)
    cv.polygon(
        [
            [desk_front, desk_top],
            [desk_front + 90, desk_top],
            [desk_front + 90, desk_top - 3.5],
            [desk_front, desk_top - 3.5],
        ],
        wood,
    )
    cv.polygon(
        [
            [desk_front + 80, desk_top - 3.5],
            [desk_front + 85, desk_top - 3.5],
            [desk_front + 85, foot_y],
            [desk_front + 80, foot_y],
        ],
        _shade(wood, 0.7),
    )
    mx = desk_front + 38 + 10 * camera["monitor"]
    cv.polygon(
        [[mx, desk_top], [mx + 3, desk_top], [mx + 3, desk_top + 12], [mx, desk_top + 12]],
        (50, 50, 55),
    )
    cv.polygon(
        [
            [mx - 6, desk_top],
            [mx + 9, desk_top],
            [mx + 9, desk_top + 1.5],
            [mx - 6, desk_top + 1.5],
        ],
        (50, 50, 55),
    )  # monitor foot
    cv.polygon(
        [
            [mx - 3, desk_top + 10],
            [mx + 2, desk_top + 10],
            [mx + 2, desk_top + 46],
            [mx - 3, desk_top + 46],
        ],
        (25, 25, 30),
    )
    cv.polygon(
        [
            [P["wrist"][0] - 2, desk_top],
            [P["wrist"][0] + 30, desk_top],
            [P["wrist"][0] + 30, desk_top + 2],
            [P["wrist"][0] - 2, desk_top + 2],
        ],
        (60, 60, 65),
    )  # keyboard
    R = REGIONS
    # far limbs (shaded) first
    far_sh = P["shoulder"] + np.array([-1.5, 1.0])
    _draw_arm(
        cv,
        far_sh,
        _elbow(far_sh, P["wrist"] + [4, 0], w.upper_arm, w.forearm),
        P["wrist"] + [4, 0],
        w,
        0.72,
        R["upper_limbs"],
    )
    _draw_leg(
        cv, np.array([-1.0, 0.5]), sk.far_thigh_dir, sk.far_shank_dir, w, 0.75, R["lower_body"]
    )
    # chair: seat, post, base, backrest behind the pelvis
    chair = (45, 45, 50) if camera["chair"] < 0.5 else (90, 40, 35)
    cv.polygon(
        [[-22, seat_y], [0.55 * w.thigh, seat_y], [0.55 * w.thigh, seat_y - 6], [-22, seat_y - 6]],
        chair,
    )
    cv.polygon([[-4, seat_y - 6], [0, seat_y - 6], [0, foot_y + 6], [-4, foot_y + 6]], (70, 70, 75))
    cv.polygon(
        [[-30, foot_y + 6], [26, foot_y + 6], [26, foot_y + 2], [-30, foot_y + 2]], (60, 60, 65)
    )
    back_x = min(sk.spine[:6, 0].min(), 0.0) - 6.0
    cv.polygon(
        [
            [back_x - 4, seat_y + 4],
            [back_x, seat_y + 4],
            [back_x - 8, seat_y + 52],
            [back_x - 12, seat_y + 52],
        ],
        chair,
    )
    # trunk, near leg, pelvis
    cv.polygon(_trunk_outline(sk, w), w.shirt, R["trunk"])
    _draw_leg(cv, P["hip"], sk.near_thigh_dir, sk.near_shank_dir, w, 1.0, R["lower_body"])
    cv.ellipse(
        P["hip"] + np.array([1.0, 1.0]),
        9.5 * w.girth,
        8.0 * w.girth,
        sk.spine_angle[0] - 90,
        w.trousers,
        R["trunk"],
    )
    # neck and head: hair over the back and top of the skull, the face in front
    ear, pitch, hs = P["ear"], sk.head_pitch, w.height_scale
    head_base = ear + 1.5 * _dir(pitch - 90) + 1.5 * _dir(pitch)
    cv.capsule(
        P["c7"] + 1.5 * _dir(sk.spine_angle[-1] - 90),
        head_base,
        4.8 * w.girth**0.5,
        _shade(w.skin, 0.93),
        R["head_neck"],
    )
    centre = ear + hs * (2.6 * _dir(pitch) + 3.2 * _dir(pitch + 90))
    cv.ellipse(
        centre + 1.8 * hs * _dir(pitch + 140), 10.2 * hs, 11.0 * hs, pitch, w.hair, R["head_neck"]
    )
    cv.ellipse(
        centre + 2.2 * hs * _dir(pitch - 35), 8.8 * hs, 9.6 * hs, pitch, w.skin, R["head_neck"]
    )
    cv.ellipse(ear, 1.4, 2.2, sk.head_pitch, _shade(w.skin, 0.8), R["head_neck"])
    cv.ellipse(P["eye"], 0.9, 0.6, sk.head_pitch, (30, 25, 25), R["head_neck"])
    nose_tip = P["nose"] + 1.8 * _dir(sk.head_pitch - 10)
    cv.polygon(
        [
            P["nose"] + 1.5 * _dir(sk.head_pitch + 90),
            nose_tip,
            P["nose"] - 1.5 * _dir(sk.head_pitch + 90),
        ],
        _shade(w.skin, 0.97),
        R["head_neck"],
    )
    # near arm on top
    _draw_arm(cv, P["shoulder"], P["elbow"], P["wrist"], w, 1.0, R["upper_limbs"])

    img = cv.img.reduce(SUPERSAMPLE)
    mask = cv.mask.resize((size, size), Image.Resampling.NEAREST)
    landmarks = {
        k: tuple(float(v) for v in transform(P[k][None])[0] / SUPERSAMPLE) for k in LANDMARKS
    }
    img = _camera_effects(img, camera, site, rng)
    if w.facing == "left":
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        landmarks = {k: (size - 1 - x, y) for k, (x, y) in landmarks.items()}
    return img, mask, landmarks


def _camera_effects(
    img: Image.Image, camera: dict[str, float], site: Site, rng: np.random.Generator
) -> Image.Image:
    if camera["blur"] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(camera["blur"]))
    arr = np.asarray(img, dtype=np.float32)
    h, w_ = arr.shape[:2]
    # uneven lighting: a gentle gradient from the window side
    grad = camera["light"] * (1.0 + camera["gradient"] * np.linspace(-0.5, 0.5, w_))[None, :, None]
    arr = arr * grad + rng.normal(0.0, site.noise, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------- the cohort
def balanced_cells(n_subjects: int) -> dict[tuple[int, int], int]:
    """Equal workers in the four (CH, NSP) cells: the two labels independent."""
    base, extra = divmod(n_subjects, 4)
    return {c: base + (k < extra) for k, c in enumerate([(1, 1), (1, 0), (0, 1), (0, 0)])}


def scaled_cells(n_subjects: int) -> dict[tuple[int, int], int]:
    """The paper's cell proportions for any cohort size (exact at 531)."""
    total = sum(PAPER_CELLS.values())
    raw = {c: n * n_subjects / total for c, n in PAPER_CELLS.items()}
    cells = {c: max(1, math.floor(v)) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - math.floor(raw[c]), reverse=True):
        if sum(cells.values()) >= n_subjects:
            break
        cells[c] += 1
    while sum(cells.values()) > n_subjects:
        biggest = max(cells, key=cells.get)
        cells[biggest] -= 1
    return cells


def _photo_posture(
    w: Worker, rng: np.random.Generator, contrast: float = 1.0
) -> dict[str, float]:
    """A worker's habitual posture, varied a little from photo to photo; `contrast` > 1
    draws every deviation from the population mean that many times larger."""
    jitter = {
        "cva": 1.5,
        "head_flexion": 3.0,
        "kyphosis": 2.0,
        "protraction": 0.6,
        "trunk_lean": 2.0,
        "pelvic_tilt": 2.0,
        "hip_angle": 3.0,
        "knee_angle": 4.0,
    }
    drawn = {k: v + float(rng.normal(0, jitter[k])) for k, v in w.posture.items()}
    if contrast == 1.0:
        return drawn
    return {k: POSTURE[k][0] + contrast * (v - POSTURE[k][0]) for k, v in drawn.items()}


def _camera(site: Site, rng: np.random.Generator) -> dict[str, float]:
    return {
        "scale": site.scale * float(rng.uniform(0.93, 1.07)),
        "anchor_x": 0.36 + float(rng.uniform(-0.03, 0.03)),
        "anchor_y": 0.58 + site.height + float(rng.uniform(-0.03, 0.03)),
        "tilt": float(rng.normal(0, 1.5)),
        "light": site.light * float(rng.normal(1.0, 0.06)),
        "gradient": float(rng.normal(0, 0.12)),
        "blur": float(rng.uniform(0.0, 0.8)),
        "jpeg_quality": int(rng.integers(72, 96)),
        "desk": float(rng.random()),
        "chair": float(rng.random()),
        "monitor": float(rng.random()),
    }


def make_workers(
    n_subjects: int,
    seed: int,
    noise: float = DEFAULT_NOISE,
    cells: dict[tuple[int, int], int] | None = None,
) -> list[Worker]:
    rng = np.random.default_rng(seed)
    workers = [_new_worker(i, rng) for i in range(n_subjects)]
    site_p = np.array([0.45, 0.35, 0.20])
    for w in workers:
        w.site = SITES[int(rng.choice(len(SITES), p=site_p))].name
    assign_labels(workers, cells or scaled_cells(n_subjects), rng, noise)
    return workers


def generate_cohort(
    out: Path | str,
    n_subjects: int = 531,
    seed: int = 0,
    size: int = 384,
    n_photos: int | None = None,
    noise: float = DEFAULT_NOISE,
    progress=None,
    contrast: float = 1.0,
    cells: dict[tuple[int, int], int] | None = None,
) -> Path:
    """Write photos, masks, manifest.csv and generator.json into `out`; returns the
    manifest path. The same arguments give the same bytes.

    `contrast` exaggerates how posture is drawn (labels are unchanged): 1 is the realistic
    cohort; about 2.5 gives a cohort small CPU-trained models can learn, used to check
    that CAMs land on the region that drives each label. `cells` sets the workers per
    (CH, NSP) cell instead of the paper's proportions (equal cells make CH and NSP
    independent)."""
    if not 0.0 < contrast <= 4.0:
        raise ValueError(f"posture contrast must be in (0, 4], got {contrast}")
    if noise < 0:
        raise ValueError(f"label noise must be >= 0, got {noise}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if n_photos is None:
        n_photos = n_subjects if n_subjects == 0 else round(n_subjects * PAPER_PHOTOS / 531)
    cells = cells or scaled_cells(n_subjects)
    workers = make_workers(n_subjects, seed, noise, cells)
    counts = _photo_counts(n_subjects, n_photos, np.random.default_rng([seed, 1]))
    sites = {s.name: s for s in SITES}
    rows, records = [], []
    for i, w in enumerate(workers):
        for k in range(int(counts[i])):
            rng = np.random.default_rng([seed, 2, i, k])
            posture = _photo_posture(w, rng, contrast)
            camera = _camera(sites[w.site], rng)
            img, mask, landmarks = render_photo(w, posture, camera, sites[w.site], size, rng)
            stem = f"{w.subject_id}_{k + 1}"
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=camera["jpeg_quality"])
            (out / "images" / f"{stem}.jpg").write_bytes(buf.getvalue())
            mask.save(out / "masks" / f"{stem}.png", optimize=False)
            row = {
                "subject_id": w.subject_id,
                "image": f"images/{stem}.jpg",
                "ch": w.ch,
                "nsp": w.nsp,
                "site": w.site,
                "age": w.age,
                "sex": w.sex,
                "facing": w.facing,
                "mask": f"masks/{stem}.png",
            }
            for name, (x, y) in landmarks.items():
                row[f"{name}_x"], row[f"{name}_y"] = round(x, 1), round(y, 1)
            rows.append(row)
            records.append(
                {
                    "image": row["image"],
                    "subject_id": w.subject_id,
                    "posture": {k2: round(v, 3) for k2, v in posture.items()},
                    "camera": {
                        k2: round(v, 4) if isinstance(v, float) else v for k2, v in camera.items()
                    },
                }
            )
            if progress is not None:
                progress(1)
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    worker_records = []
    for w in workers:
        d = asdict(w)
        d["posture"] = {k: round(v, 3) for k, v in d["posture"].items()}
        for key in (
            "height_scale",
            "trunk_len",
            "neck_len",
            "head_len",
            "upper_arm",
            "forearm",
            "thigh",
            "shank",
            "girth",
        ):
            d[key] = round(d[key], 3)
        worker_records.append(d)
    generator = {
        "generator": "posturescreen.data.synthetic",
        "seed": seed,
        "size": size,
        "n_subjects": n_subjects,
        "n_photos": n_photos,
        "label_noise": noise,
        "posture_contrast": contrast,
        "cells": {f"ch={c},nsp={n}": v for (c, n), v in cells.items()},
        "risk_model": {"CH": CH_WEIGHTS, "NSP": NSP_WEIGHTS, "both_interaction": BOTH_INTERACTION},
        "posture_parameters": {
            k: {"mean": m, "sd": s, "meaning": t} for k, (m, s, t) in POSTURE.items()
        },
        "regions": REGIONS,
        "landmark_regions": LANDMARK_REGION,
        "sites": [asdict(s) for s in SITES],
        "workers": worker_records,
        "photos": records,
    }
    (out / "generator.json").write_text(json.dumps(generator, indent=1))
    return out / "manifest.csv"


def contact_sheet(
    manifest: Path | str, out: Path | str, n: int = 12, columns: int = 4, tile: int = 256
) -> Path:
    """A PNG grid of the first photo of n workers, labelled with their diagnoses."""
    manifest = Path(manifest)
    table = pd.read_csv(manifest).drop_duplicates("subject_id").head(n)
    rows = math.ceil(len(table) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 18)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(table.itertuples()):
        img = Image.open(manifest.parent / r.image).convert("RGB").resize((tile, tile))
        x, y = (k % columns) * tile, (k // columns) * (tile + 18)
        sheet.paste(img, (x, y))
        label = {(1, 1): "CH+NSP", (1, 0): "CH", (0, 1): "NSP", (0, 0): "control"}[(r.ch, r.nsp)]
        draw.text((x + 4, y + tile + 3), f"{r.subject_id}  site {r.site}  {label}", fill=(0, 0, 0))
    out = Path(out)
    sheet.save(out)
    return out
