"""Body regions in a model's frame and the share of CAM energy per region.

share(region) = CAM energy inside the region / all CAM energy (background included, so the
shares sum to 1); enrichment = share / the region's area share (above 1: more attention than
the region's size explains). Regions come from a region mask (the synthetic cohort's) or from
landmarks with the geometry in `regions_from_landmarks`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from posturescreen.data.body import REGIONS


def _capsule(draw: ImageDraw.ImageDraw, a, b, r: float, value: int) -> None:
    draw.line([tuple(a), tuple(b)], fill=value, width=max(1, round(2 * r)))
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=value)


def regions_from_landmarks(points: dict[str, np.ndarray], size: int) -> np.ndarray | None:
    """Region map (size x size, values = index in REGIONS) from landmarks already in
    the letterboxed frame. Needs ear, c7 and hip; with L = |c7 - hip|:

    - lower body: capsules hip-knee-ankle (radius 0.14 L) when those exist, else the disk of
      radius 0.55 L around the hip below the hip's level, in front of it
    - trunk: capsule c7-hip, radius 0.24 L (+ c7-upper_back, radius 0.14 L, if present)
    - upper limbs: capsules shoulder-elbow-wrist, radius 0.09 L (only when all exist)
    - head/neck: capsule c7-ear, radius 0.16 L, and a disk of radius 0.26 L at the ear
    Later items overwrite earlier ones.
    """
    if not all(k in points for k in ("ear", "c7", "hip")):
        return None
    ear, c7, hip = points["ear"], points["c7"], points["hip"]
    L = float(np.linalg.norm(c7 - hip))
    if not math.isfinite(L) or L < 2:
        return None
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    lb = REGIONS.index("lower_body")
    if "knee" in points:
        _capsule(d, hip, points["knee"], 0.14 * L, lb)
        if "ankle" in points:
            _capsule(d, points["knee"], points["ankle"], 0.14 * L, lb)
    else:
        forward = 1.0 if ear[0] >= c7[0] else -1.0
        r = 0.55 * L
        box = [hip[0] - r, hip[1] - r, hip[0] + r, hip[1] + r]
        d.pieslice(box, 0 if forward > 0 else 90, 90 if forward > 0 else 180, fill=lb)
    tr = REGIONS.index("trunk")
    _capsule(d, c7, hip, 0.24 * L, tr)
    if "upper_back" in points:
        _capsule(d, c7, points["upper_back"], 0.14 * L, tr)
    if all(k in points for k in ("shoulder", "elbow", "wrist")):
        ul = REGIONS.index("upper_limbs")
        _capsule(d, points["shoulder"], points["elbow"], 0.09 * L, ul)
        _capsule(d, points["elbow"], points["wrist"], 0.09 * L, ul)
    hn = REGIONS.index("head_neck")
    _capsule(d, c7, ear, 0.16 * L, hn)
    d.ellipse([ear[0] - 0.26 * L, ear[1] - 0.26 * L, ear[0] + 0.26 * L, ear[1] + 0.26 * L],
              fill=hn)
    return np.asarray(img, dtype=np.uint8)


def region_shares(cam: np.ndarray, regions: np.ndarray) -> pd.DataFrame:
    """Per region: CAM share (sums to 1), area share and enrichment = share / area share."""
    total = float(cam.sum())
    area_total = regions.size
    rows = []
    for idx, name in enumerate(REGIONS):
        inside = regions == idx
        area = inside.sum() / area_total
        share = float(cam[inside].sum()) / total if total > 0 else float("nan")
        rows.append({"region": name, "share": share, "area_share": float(area),
                     "enrichment": share / area if area > 0 else float("nan")})
    return pd.DataFrame(rows)


def align_to_body(cam: np.ndarray, points: dict[str, np.ndarray] | None,
                  out_size: int = 128) -> np.ndarray:
    """A CAM in a common frame: facing right, hip at (0.45, 0.70) of the frame, |c7 - hip|
    = 0.35 of it. Without landmarks, the image frame (resized)."""
    src = torch.from_numpy(cam)[None, None]
    if not points or not all(k in points for k in ("ear", "c7", "hip")):
        return torch.nn.functional.interpolate(src, size=(out_size, out_size),
                                               mode="bilinear", align_corners=False)[0, 0].numpy()
    size = cam.shape[0]
    hip, c7, ear = points["hip"], points["c7"], points["ear"]
    flip = -1.0 if ear[0] < c7[0] else 1.0
    scale = (0.35 * out_size) / max(float(np.linalg.norm(c7 - hip)), 1.0)
    # output pixel (u, v) -> source pixel: x = hip_x + flip*(u - 0.45 S)/scale, y likewise
    u = torch.arange(out_size, dtype=torch.float32)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    x = hip[0] + flip * (uu - 0.45 * out_size) / scale
    y = hip[1] + (vv - 0.70 * out_size) / scale
    grid = torch.stack([2 * x / (size - 1) - 1, 2 * y / (size - 1) - 1], dim=-1)[None]
    return torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=True)[0, 0].numpy()




def summarize_shares(shares: pd.DataFrame) -> pd.DataFrame:
    """Mean share and enrichment per task × model × outcome (and 'all') × region."""
    if shares.empty:
        return pd.DataFrame(columns=["task", "model", "outcome", "region", "share",
                                     "enrichment", "n"])
    both = pd.concat([shares, shares.assign(outcome="all")])
    g = both.groupby(["task", "model", "outcome", "region"], sort=False)
    return g.agg(share=("share", "mean"), enrichment=("enrichment", "mean"),
                 n=("row", "nunique")).reset_index()


def enrichment_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task × model (all photos): `share (enrichment×)` per body region, as text."""
    s = summary[summary["outcome"] == "all"] if not summary.empty else summary
    if s.empty:
        return pd.DataFrame()
    regions = [r for r in dict.fromkeys(s["region"]) if r != "background"]
    rows = []
    for (task, model), g in s.groupby(["task", "model"], sort=False):
        g = g.set_index("region")
        rows.append({"task": task, "model": model, **{
            r: "n/a (no area)" if np.isnan(g.at[r, "enrichment"])
            else f"{g.at[r, 'share']:.2f} ({g.at[r, 'enrichment']:.1f}x)" for r in regions}})
    return pd.DataFrame(rows)
