"""Landmarks from manifest columns: `<name>_x`, `<name>_y` in pixels of the original photo,
and their position in a letterboxed model frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from posturescreen.data.images import Frame


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
