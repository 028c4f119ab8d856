"""What a landmark model sees and learns from: each photo cut to the person the pose
estimator found (the whole photo when it found none) and letterboxed to a square, the
annotated points mapped into that square, and predicted points mapped back to the photo."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from posturescreen.data.images import (
    Box,
    Frame,
    ImageReadError,
    crop_region,
    letterbox,
    read_image_file,
)
from posturescreen.data.landmarks import row_points
from posturescreen.posture.angles import measure

# A points table's column with the way each person faces (+1 right, -1 left), when known
# from elsewhere than the points: learned points take the pose estimator's (the face in
# front of the ear; a learned upper back placed in front of the body would mirror every
# angle). NaN or absent: the facing the points give.
FACING_COLUMN = "facing"


def landmark_input(image: Image.Image, full_size: tuple[int, int], box: Box | None, *,
                   size: int) -> tuple[np.ndarray, Frame]:
    """The uint8 (3, size, size) input for one upright photo (decoded at any scale) and the
    frame that maps its pixels to the photo's."""
    view, region = crop_region(image, full_size, box)
    return letterbox(view, size, "bilinear"), Frame(region, size)


def read_landmark_inputs(paths: Sequence[Path], boxes: Sequence[Box | None], size: int, *,
                         decode_size: int, progress: Callable[[int], None] | None = None
                         ) -> tuple[np.ndarray, list[Frame | None]]:
    """Inputs for many photos (an unreadable photo: zeros and no frame)."""
    images = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    frames: list[Frame | None] = [None] * len(paths)
    for i, (path, box) in enumerate(zip(paths, boxes, strict=True)):
        try:
            image, full_size, _ = read_image_file(Path(path), draft_size=decode_size)
        except ImageReadError:
            pass  # the study stops on, or leaves out, unreadable photos before this
        else:
            images[i], frames[i] = landmark_input(image, full_size, box, size=size)
        if progress is not None:
            progress(1)
    return images, frames


def annotated_points(table: pd.DataFrame, names: Sequence[str],
                     frames: Sequence[Frame | None]) -> np.ndarray:
    """(N, P, 2) annotated points in input pixels; NaN where a point was left out."""
    out = np.full((len(table), len(names), 2), np.nan)
    for i, ((_, row), frame) in enumerate(zip(table.iterrows(), frames, strict=True)):
        if frame is None:
            continue
        for j, name in enumerate(names):
            found = row_points(row, [name]).get(name)
            if found is not None:
                out[i, j] = frame.point(*found)
    return out


def points_from_columns(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """A manifest's `<name>_x/_y` annotations as numbers (NaN where left out), index kept."""
    return pd.DataFrame({f"{n}_{c}": pd.to_numeric(table[f"{n}_{c}"], errors="coerce")
                         for n in names for c in ("x", "y")}, index=table.index)


def photo_points(points: np.ndarray, frames: Sequence[Frame | None]) -> np.ndarray:
    """(N, P, 2) input-pixel points → photo pixels (NaN without a frame)."""
    out = np.full(points.shape, np.nan)
    for i, frame in enumerate(frames):
        if frame is not None:
            for j in range(points.shape[1]):
                out[i, j] = frame.photo_point(*points[i, j])
    return out


def point_columns(names: Sequence[str]) -> list[str]:
    """The columns of a points table: `<name>_x`, `<name>_y`, `<name>_conf` per landmark."""
    return [f"{n}_{c}" for n in names for c in ("x", "y", "conf")]


def points_table(rows: Sequence[int], names: Sequence[str], points: np.ndarray, *,
                 confidence: np.ndarray) -> pd.DataFrame:
    """Per photo (manifest row): every landmark's photo-pixel point and confidence."""
    data = {"row": list(rows)}
    for j, n in enumerate(names):
        data[f"{n}_x"] = points[:, j, 0]
        data[f"{n}_y"] = points[:, j, 1]
        data[f"{n}_conf"] = confidence[:, j]
    return pd.DataFrame(data)


def angles_from_points(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Every angle the points of each row of a points table allow (index kept), in the
    facing of its `facing` column where that column has one (FACING_COLUMN)."""
    records = {}
    known = (table[FACING_COLUMN] if FACING_COLUMN in table.columns
             else pd.Series(np.nan, index=table.index))
    for (i, row), sign in zip(table.iterrows(), known, strict=True):
        pts = {n: (row[f"{n}_x"], row[f"{n}_y"]) for n in names
               if np.isfinite(row[f"{n}_x"]) and np.isfinite(row[f"{n}_y"])}
        records[i] = measure(pts, known_facing=float(sign) if np.isfinite(sign) else None)
    return pd.DataFrame.from_dict(records, orient="index")
