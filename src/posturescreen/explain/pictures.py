"""Pictures of a run's CAMs: mean maps as heat maps and a gallery of the most confident
right and wrong cases."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw


def gallery(tiles: Sequence[tuple[np.ndarray, str]], columns: int = 4, tile: int = 192
            ) -> Image.Image:
    rows = max(1, math.ceil(len(tiles) / columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (rgb, caption) in enumerate(tiles):
        x, y = (k % columns) * tile, (k // columns) * (tile + 16)
        sheet.paste(Image.fromarray(rgb).resize((tile, tile)), (x, y))
        draw.text((x + 3, y + tile + 2), caption, fill=(0, 0, 0))
    return sheet




def heatmap_png(values: np.ndarray, path: Path) -> None:
    v = values / values.max() if values.max() > 0 else values
    Image.fromarray((colormaps["jet"](v)[..., :3] * 255).astype(np.uint8)).save(path)


class TopK:
    """The k most confident cases; a case's picture is made only when it enters the top k."""

    def __init__(self, k: int):
        self.k, self.items = k, []

    def offer(self, score: float, make: Callable[[], object]) -> None:
        if len(self.items) < self.k or score > self.items[-1][0]:
            self.items.append((score, make()))
            self.items.sort(key=lambda t: -t[0])
            del self.items[self.k:]


_SKELETON = (("ear", "eye"), ("ear", "c7"), ("ear", "shoulder"), ("c7", "shoulder"),
             ("c7", "upper_back"), ("upper_back", "hip"), ("c7", "hip"), ("shoulder", "hip"),
             ("hip", "knee"), ("knee", "ankle"))


def pose_overlay(image_chw: np.ndarray, points: dict[str, tuple[float, float]]) -> np.ndarray:
    """RGB uint8 (H, W, 3): the photo with the landmarks the angles were measured from, the
    lines between them, and a horizontal through the neck's base (the CVA's reference)."""
    img = Image.fromarray(image_chw.transpose(1, 2, 0).copy())
    draw = ImageDraw.Draw(img)
    r = max(2, img.width // 90)
    for a, b in _SKELETON:
        if a in points and b in points:
            draw.line([points[a], points[b]], fill=(255, 214, 0), width=max(1, r // 2 + 1))
    base = points.get("c7") or points.get("shoulder")
    if base is not None:
        draw.line([(base[0] - 6 * r, base[1]), (base[0] + 6 * r, base[1])], fill=(0, 200, 255),
                  width=1)
    for x, y in points.values():
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 80, 40))
    return np.asarray(img).copy()
