"""Landmarks from manifest columns: `<name>_x`, `<name>_y` in pixels of the original photo,
and their position in a letterboxed model frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from posturescreen.data.images import letterbox_geometry


def landmark_names(columns: Sequence[str]) -> list[str]:
    """Names with both an `_x` and a `_y` column."""
    cols = set(columns)
    return [c[:-2] for c in columns if c.endswith("_x") and f"{c[:-2]}_y" in cols]


def frame_points(row: pd.Series, names: Sequence[str], original: tuple[int, int] | None,
                 size: int) -> dict[str, np.ndarray]:
    """A row's landmarks in the size × size letterboxed frame (missing points left out)."""
    if original is None:
        return {}
    scale, ox, oy = letterbox_geometry(original[0], original[1], size)
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
            pts[n] = np.array([x * scale + ox, y * scale + oy], dtype=np.float64)
    return pts
