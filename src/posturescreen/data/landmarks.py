"""Landmarks from manifest columns: `<name>_x`, `<name>_y` in pixels of the original photo,
and their position in a letterboxed model frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from posturescreen.data.images import Frame
from posturescreen.errors import PostureScreenError


def landmark_names(columns: Sequence[str]) -> list[str]:
    """Names with both an `_x` and a `_y` column."""
    cols = set(columns)
    return [c[:-2] for c in columns if c.endswith("_x") and f"{c[:-2]}_y" in cols]


def row_points(row: pd.Series, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """A row's landmarks in photo pixels (missing or non-numeric points left out)."""
    pts = {}
    for n in names:
        x, y = row.get(f"{n}_x"), row.get(f"{n}_y")
        if x is None or y is None:
            continue
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            continue
        if np.isfinite(x) and np.isfinite(y):
            pts[n] = (x, y)
    return pts


def frame_points(row: pd.Series, names: Sequence[str], frame: Frame | None
                 ) -> dict[str, np.ndarray]:
    """A row's landmarks in a model's letterboxed frame (missing points left out)."""
    if frame is None:
        return {}
    return {n: np.array(frame.point(x, y), dtype=np.float64)
            for n, (x, y) in row_points(row, names).items()}


# Every landmark name the tool reads (the posture angles' and the pose estimator's), with
# where a rater places it on a side-view photo. Annotation asks for these names only.
LANDMARKS = {
    "ear": "the tragus (the cartilage in front of the ear canal): the CVA's upper point",
    "eye": "the eye, seen from the side (its outer corner)",
    "nose": "the tip of the nose",
    "c7": "the spinous process of C7, the most prominent bump at the base of the neck",
    "shoulder": "the acromion, the tip of the shoulder",
    "elbow": "the lateral epicondyle, the outer point of the elbow",
    "wrist": "the wrist's outer bump (ulnar styloid)",
    "upper_back": "the most posterior point of the upper back",
    "hip": "the greater trochanter",
    "knee": "the knee joint's outer line (lateral femoral epicondyle)",
    "ankle": "the lateral malleolus",
}
# names raters use for a landmark that has another name here
LANDMARK_HINTS = {"tragus": "ear", "acromion": "shoulder", "trochanter": "hip",
                  "malleolus": "ankle"}


class LandmarkNameError(PostureScreenError, ValueError):
    """A landmark name the tool does not know, or one given twice."""


def check_landmark_names(names: Sequence[str]) -> list[str]:
    """The names, stripped and lower-cased, each known and given once; raises
    LandmarkNameError naming the first problem."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name in out:
            raise LandmarkNameError(f"landmark {name!r} is listed twice")
        if name not in LANDMARKS:
            hint = (f" (here the {name} is {LANDMARK_HINTS[name]!r})"
                    if name in LANDMARK_HINTS else "")
            raise LandmarkNameError(f"unknown landmark {raw.strip()!r}{hint}; known: "
                                    + ", ".join(LANDMARKS))
        out.append(name)
    if not out:
        raise LandmarkNameError("no landmark names given; known: " + ", ".join(LANDMARKS))
    return out
