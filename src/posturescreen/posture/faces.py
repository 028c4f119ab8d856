"""Every face in a picture, for de-identification that fails closed.

The pose estimator finds one person; a photo may hold more. `FaceFinder` asks it again with
each person found painted over (up to MAX_PEOPLE people), takes each person's face box, and
adds every face MediaPipe's BlazeFace detector finds (both of its models: short range,
within about 2 m, and full range, up to about 5 m; they ship in the mediapipe wheel, so it
runs offline). `Faces.complete` is False when a face may have been missed: no person found
at all (a profile head-and-shoulders photo, a person cut off by the frame, an empty scene),
a person whose face cannot be placed, or more people than it looks for. Pictures then blur
the whole picture (data/deid.py), never just the faces it found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from posturescreen.data.deid import deidentify_chw, face_in_frame
from posturescreen.data.images import Box, Frame
from posturescreen.posture.estimator import (
    PoseEstimator,
    PoseResult,
    _import_mediapipe,
    _quiet_stderr,
)

MAX_PEOPLE = 3  # people looked for per photo; one more found means "too many to be sure"
FACE_MARGIN = 0.3  # BlazeFace's box is tight (brows to chin): grown by this share per side
MIN_FACE_CONFIDENCE = 0.3  # low on purpose: a false face only blurs a little more


@dataclass(frozen=True)
class Faces:
    """The face boxes found in a photo (full-resolution pixels), and whether they are all
    of them; `why` says what made the search incomplete."""

    boxes: tuple[Box, ...] = ()
    complete: bool = False
    why: str = "not searched"


class FaceDetector:
    """BlazeFace, both models, reused over many photos."""

    def __init__(self, min_confidence: float = MIN_FACE_CONFIDENCE):
        fd = _import_mediapipe().solutions.face_detection
        with _quiet_stderr():
            self._models = [fd.FaceDetection(model_selection=m,
                                             min_detection_confidence=min_confidence)
                            for m in (0, 1)]

    def close(self) -> None:
        for m in self._models:
            m.close()

    def __call__(self, image: Image.Image, full_size: tuple[int, int]) -> list[Box]:
        """Every face in `image` (upright RGB, possibly reduced), in pixels of the
        full-resolution photo of size `full_size`."""
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        w, h = full_size
        boxes: list[Box] = []
        for model in self._models:
            with _quiet_stderr():
                found = model.process(rgb).detections or []
            for d in found:
                b = d.location_data.relative_bounding_box
                pad = FACE_MARGIN * max(b.width * w, b.height * h)
                x0, y0 = b.xmin * w - pad, b.ymin * h - pad
                x1, y1 = (b.xmin + b.width) * w + pad, (b.ymin + b.height) * h + pad
                box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
                if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                    boxes.append(box)
        return boxes


def _paint_over(image: Image.Image, full_size: tuple[int, int], box: Box) -> Image.Image:
    """`image` with `box` (full-resolution pixels) filled grey: that person is not found
    again."""
    rx, ry = image.width / full_size[0], image.height / full_size[1]
    out = image.copy()
    ImageDraw.Draw(out).rectangle([box[0] * rx, box[1] * ry, box[2] * rx, box[3] * ry],
                                  fill=(128, 128, 128))
    return out


class FaceFinder:
    """People (pose estimator, asked again with each person painted over) and faces
    (BlazeFace) in a photo. Uses `estimator` when given (its owner closes it)."""

    def __init__(self, estimator: PoseEstimator | None = None):
        self._own = estimator is None
        self.estimator = estimator or PoseEstimator()
        self.detector = FaceDetector()

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.detector.close()
        if self._own:
            self.estimator.close()

    def __call__(self, image: Image.Image, full_size: tuple[int, int],
                 first: PoseResult | None = None) -> Faces:
        """Every face in `image` (upright RGB, possibly reduced; boxes in pixels of the
        full-resolution photo). `first`: the estimator's answer on `image`, if known."""
        people: list[PoseResult] = []
        pose = first if first is not None else self.estimator(image, full_size)
        view = image
        while pose.found and len(people) < MAX_PEOPLE:
            people.append(pose)
            if pose.person_box is None:
                break
            view = _paint_over(view, full_size, pose.person_box)
            pose = self.estimator(view, full_size)
        boxes = [p.face_box for p in people if p.face_box is not None]
        boxes += self.detector(image, full_size)
        if not people:
            why = "no person found"
        elif pose.found and len(people) == MAX_PEOPLE:
            why = f"more than {MAX_PEOPLE} people"
        elif any(p.face_box is None for p in people):
            why = "a person's face could not be placed"
        else:
            why = ""
        return Faces(tuple(boxes), complete=not why, why=why)


def deidentify(picture_chw: np.ndarray, faces: Faces, frame: Frame | None) -> np.ndarray:
    """A model's square picture of the photo (`frame`: the region it shows) with every face
    blurred, or all of it when `faces` is not complete or the frame is unknown."""
    boxes = [face_in_frame(b, frame) for b in faces.boxes]
    return deidentify_chw(picture_chw, [b for b in boxes if b is not None],
                          complete=faces.complete and frame is not None)
