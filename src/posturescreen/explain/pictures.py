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
