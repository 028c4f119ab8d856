"""Drawing one photo of a seated worker at a desk: the scene, the body with volume, a region
mask from the same shapes, landmark pixels, and camera effects (blur, lighting, noise)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from posturescreen.data.body import REGION_IDS
from posturescreen.data.synthetic.population import Site, Worker
from posturescreen.data.synthetic.skeleton import Skeleton, _dir, _elbow, pose_skeleton

LANDMARKS = ("ear", "eye", "nose", "c7", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
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

    def capsule(self, a, b, radius_cm: float, *, fill, region: int | None = None) -> None:
        (pa, pb), r = self.px([a, b]), radius_cm * self.scale()
        for d, val in ((self.draw, fill), (self.mdraw, region)):
            if val is None:
                continue
            d.line([pa, pb], fill=val, width=max(1, round(2 * r)))
            for c in (pa, pb):
                d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=val)

    def ellipse(
        self,
        centre,
        rx_cm: float,
        ry_cm: float,
        *,
        angle_deg: float,
        fill,
        region: int | None = None,
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
    cv.capsule(hip, knee, 7.5 * w.girth, fill=tr, region=region)
    cv.capsule(knee, ankle, 5.2 * w.girth, fill=tr, region=region)
    toe = ankle + 22 * w.height_scale * _dir(max(-25.0, min(15.0, shank_dir + 90)))
    cv.capsule(ankle, toe, 3.5, fill=_shade((35, 30, 30), shade), region=region)


def _draw_arm(cv: _Canvas, shoulder, elbow, wrist, w: Worker, shade: float, region: int) -> None:
    cv.capsule(shoulder, elbow, 5.0 * w.girth, fill=_shade(w.shirt, 0.92 * shade), region=region)
    cv.capsule(elbow, wrist, 3.8 * w.girth, fill=_shade(w.skin, shade), region=region)
    hand_dir = (wrist - elbow) / max(1e-6, np.linalg.norm(wrist - elbow))
    cv.capsule(wrist, wrist + 8 * hand_dir, 3.2, fill=_shade(w.skin, 0.96 * shade), region=region)
    cv.ellipse(
        shoulder,
        6.0 * w.girth,
        6.8 * w.girth,
        angle_deg=0,
        fill=_shade(w.shirt, 0.95 * shade),
        region=region,
    )  # deltoid


def render_photo(
    w: Worker,
    p: dict[str, float],
    camera: dict[str, float],
    *,
    site: Site,
    size: int,
    rng: np.random.Generator,
) -> tuple[Image.Image, Image.Image, dict[str, tuple[float, float]]]:
    """One photo: RGB image, region mask (values of body.REGION_IDS) and landmark pixels."""
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
    _draw_desk(cv, P, camera, foot_y)
    _draw_far_limbs(cv, sk, w)
    _draw_chair(cv, sk, w, camera, seat_y, foot_y)
    _draw_body(cv, sk, w)
    _draw_head(cv, sk, w)
    # near arm on top
    _draw_arm(cv, P["shoulder"], P["elbow"], P["wrist"], w, 1.0, REGION_IDS["upper_limbs"])

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


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _draw_desk(
    cv: _Canvas, P: dict[str, np.ndarray], camera: dict[str, float], foot_y: float
) -> None:
    """Desk, monitor and keyboard, behind the worker's near side."""
    desk_top = P["wrist"][1] - 3.0
    desk_front = min(P["knee"][0], P["wrist"][0] - 10) - 4.0
    wood = (150, 110, 75) if camera["desk"] < 0.5 else (205, 200, 190)
    cv.polygon(_rect(desk_front, desk_top, desk_front + 90, desk_top - 3.5), wood)
    cv.polygon(_rect(desk_front + 80, desk_top - 3.5, desk_front + 85, foot_y), _shade(wood, 0.7))
    mx = desk_front + 38 + 10 * camera["monitor"]
    cv.polygon(_rect(mx, desk_top, mx + 3, desk_top + 12), (50, 50, 55))
    cv.polygon(_rect(mx - 6, desk_top, mx + 9, desk_top + 1.5), (50, 50, 55))  # monitor foot
    cv.polygon(_rect(mx - 3, desk_top + 10, mx + 2, desk_top + 46), (25, 25, 30))
    cv.polygon(
        _rect(P["wrist"][0] - 2, desk_top, P["wrist"][0] + 30, desk_top + 2), (60, 60, 65)
    )  # keyboard


def _draw_far_limbs(cv: _Canvas, sk: Skeleton, w: Worker) -> None:
    """The far arm and leg, shaded, drawn first so the body covers them."""
    P = sk.points
    far_sh = P["shoulder"] + np.array([-1.5, 1.0])
    far_wrist = P["wrist"] + [4, 0]
    _draw_arm(
        cv,
        far_sh,
        _elbow(far_sh, far_wrist, w.upper_arm, w.forearm),
        far_wrist,
        w,
        0.72,
        REGION_IDS["upper_limbs"],
    )
    _draw_leg(
        cv,
        np.array([-1.0, 0.5]),
        sk.far_thigh_dir,
        sk.far_shank_dir,
        w,
        0.75,
        REGION_IDS["lower_body"],
    )


def _draw_chair(
    cv: _Canvas, sk: Skeleton, w: Worker, camera: dict[str, float], seat_y: float, foot_y: float
) -> None:
    """Seat, post, base and a backrest behind the pelvis."""
    chair = (45, 45, 50) if camera["chair"] < 0.5 else (90, 40, 35)
    cv.polygon(_rect(-22, seat_y, 0.55 * w.thigh, seat_y - 6), chair)
    cv.polygon(_rect(-4, seat_y - 6, 0, foot_y + 6), (70, 70, 75))
    cv.polygon(_rect(-30, foot_y + 6, 26, foot_y + 2), (60, 60, 65))
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


def _draw_body(cv: _Canvas, sk: Skeleton, w: Worker) -> None:
    """Trunk, near leg and pelvis."""
    P = sk.points
    cv.polygon(_trunk_outline(sk, w), w.shirt, REGION_IDS["trunk"])
    _draw_leg(cv, P["hip"], sk.near_thigh_dir, sk.near_shank_dir, w, 1.0, REGION_IDS["lower_body"])
    cv.ellipse(
        P["hip"] + np.array([1.0, 1.0]),
        9.5 * w.girth,
        8.0 * w.girth,
        angle_deg=sk.spine_angle[0] - 90,
        fill=w.trousers,
        region=REGION_IDS["trunk"],
    )


def _draw_head(cv: _Canvas, sk: Skeleton, w: Worker) -> None:
    """Neck and head: hair over the back and top of the skull, the face in front."""
    P, hn = sk.points, REGION_IDS["head_neck"]
    ear, pitch, hs = P["ear"], sk.head_pitch, w.height_scale
    head_base = ear + 1.5 * _dir(pitch - 90) + 1.5 * _dir(pitch)
    cv.capsule(
        P["c7"] + 1.5 * _dir(sk.spine_angle[-1] - 90),
        head_base,
        4.8 * w.girth**0.5,
        fill=_shade(w.skin, 0.93),
        region=hn,
    )
    centre = ear + hs * (2.6 * _dir(pitch) + 3.2 * _dir(pitch + 90))
    cv.ellipse(
        centre + 1.8 * hs * _dir(pitch + 140),
        10.2 * hs,
        11.0 * hs,
        angle_deg=pitch,
        fill=w.hair,
        region=hn,
    )
    cv.ellipse(
        centre + 2.2 * hs * _dir(pitch - 35),
        8.8 * hs,
        9.6 * hs,
        angle_deg=pitch,
        fill=w.skin,
        region=hn,
    )
    cv.ellipse(ear, 1.4, 2.2, angle_deg=pitch, fill=_shade(w.skin, 0.8), region=hn)
    cv.ellipse(P["eye"], 0.9, 0.6, angle_deg=pitch, fill=(30, 25, 25), region=hn)
    nose_tip = P["nose"] + 1.8 * _dir(pitch - 10)
    cv.polygon(
        [P["nose"] + 1.5 * _dir(pitch + 90), nose_tip, P["nose"] - 1.5 * _dir(pitch + 90)],
        _shade(w.skin, 0.97),
        hn,
    )


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


def camera_for_photo(site: Site, rng: np.random.Generator) -> dict[str, float]:
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
