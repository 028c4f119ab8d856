"""Class activation maps from each out-of-fold model, mean maps per outcome class, and the
share of CAM energy per body region — checked against known truth on the synthetic cohort.

CAMs come from pytorch-grad-cam (Grad-CAM by default). They explain the positive-class
logit of the single-logit head, use each architecture's target layer (models.py), and are
computed inside the library's context manager so hooks are always released.

Region shares: CAM energy in each region divided by the total (background included, so
shares sum to 1); enrichment = share / the region's area share (above 1: more attention
than the region's size explains). Regions come from the manifest's region masks when
present, else from landmarks with the geometry in `regions_from_landmarks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from posturescreen.models import Preprocessing
from posturescreen.training import Normalizer, to_unit_float

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
}
REGION_NAMES = ("background", "head_neck", "trunk", "upper_limbs", "lower_body")
OUTCOMES = ("TP", "TN", "FP", "FN")


class PositiveLogit:
    """pytorch-grad-cam target: the positive-class logit of a single-logit binary head."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output.reshape(-1)[0]


def compute_cams(
    model: nn.Module, images: np.ndarray, prep: Preprocessing, layer: nn.Module,
    method: str = "gradcam", batch_size: int = 8, device: torch.device | None = None,
    channels_last: bool = False, logits_out: list[float] | None = None,
) -> np.ndarray:
    """Float (N, S, S) maps in [0, 1] for uint8 (N, 3, S, S) images. The model's logits
    from the same forward pass are appended to `logits_out` when given (no second pass)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(CAM_METHODS)}")
    device = device or next(model.parameters()).device
    model.to(device).eval()
    norm = Normalizer(prep, device)
    out = np.zeros((len(images), images.shape[2], images.shape[3]), dtype=np.float32)
    with CAM_METHODS[method](model=model, target_layers=[layer]) as cam:
        for start in range(0, len(images), batch_size):
            x = norm(to_unit_float(images[start:start + batch_size], device))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            maps = cam(input_tensor=x, targets=[PositiveLogit() for _ in range(len(x))])
            out[start:start + len(x)] = np.nan_to_num(maps, nan=0.0)
            if logits_out is not None:
                logits_out.extend(cam.outputs.detach().float().reshape(-1).cpu().tolist())
    model.zero_grad(set_to_none=True)
    return out


def overlay(image_chw: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """RGB uint8 (H, W, 3): the photo under a jet-coloured CAM (RGB order, not OpenCV's
    BGR default)."""
    rgb = image_chw.transpose(1, 2, 0).astype(np.float32) / 255.0
    return show_cam_on_image(rgb, cam, use_rgb=True, image_weight=weight)


# ------------------------------------------------------------------ regions
def _capsule(draw: ImageDraw.ImageDraw, a, b, r: float, value: int) -> None:
    draw.line([tuple(a), tuple(b)], fill=value, width=max(1, round(2 * r)))
    for c in (a, b):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=value)


def regions_from_landmarks(points: dict[str, np.ndarray], size: int) -> np.ndarray | None:
    """Region map (size x size, values = index in REGION_NAMES) from landmarks already in
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
    lb = REGION_NAMES.index("lower_body")
    if "knee" in points:
        _capsule(d, hip, points["knee"], 0.14 * L, lb)
        if "ankle" in points:
            _capsule(d, points["knee"], points["ankle"], 0.14 * L, lb)
    else:
        forward = 1.0 if ear[0] >= c7[0] else -1.0
        r = 0.55 * L
        box = [hip[0] - r, hip[1] - r, hip[0] + r, hip[1] + r]
        d.pieslice(box, 0 if forward > 0 else 90, 90 if forward > 0 else 180, fill=lb)
    tr = REGION_NAMES.index("trunk")
    _capsule(d, c7, hip, 0.24 * L, tr)
    if "upper_back" in points:
        _capsule(d, c7, points["upper_back"], 0.14 * L, tr)
    if all(k in points for k in ("shoulder", "elbow", "wrist")):
        ul = REGION_NAMES.index("upper_limbs")
        _capsule(d, points["shoulder"], points["elbow"], 0.09 * L, ul)
        _capsule(d, points["elbow"], points["wrist"], 0.09 * L, ul)
    hn = REGION_NAMES.index("head_neck")
    _capsule(d, c7, ear, 0.16 * L, hn)
    d.ellipse([ear[0] - 0.26 * L, ear[1] - 0.26 * L, ear[0] + 0.26 * L, ear[1] + 0.26 * L],
              fill=hn)
    return np.asarray(img, dtype=np.uint8)


def region_shares(cam: np.ndarray, regions: np.ndarray) -> pd.DataFrame:
    """Per region: CAM share (sums to 1), area share and enrichment = share / area share."""
    total = float(cam.sum())
    area_total = regions.size
    rows = []
    for idx, name in enumerate(REGION_NAMES):
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


def outcome(label: int, pred: int) -> str:
    return {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}[(int(label), int(pred))]


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


# ------------------------------------------------------------------ a whole run
def _landmark_names(columns: Sequence[str]) -> list[str]:
    return [c[:-2] for c in columns if c.endswith("_x") and f"{c[:-2]}_y" in columns]


def _frame_points(row: pd.Series, names: list[str], original: tuple[int, int] | None,
                  size: int) -> dict[str, np.ndarray]:
    from posturescreen.data.images import letterbox_geometry

    if original is None:
        return {}
    scale, ox, oy = letterbox_geometry(original[0], original[1], size)
    pts = {}
    for n in names:
        x, y = row.get(f"{n}_x"), row.get(f"{n}_y")
        if x is not None and y is not None and np.isfinite(x) and np.isfinite(y):
            pts[n] = np.array([x * scale + ox, y * scale + oy], dtype=np.float64)
    return pts


def _heatmap_png(values: np.ndarray, path: Path) -> None:
    from matplotlib import colormaps

    v = values / values.max() if values.max() > 0 else values
    Image.fromarray((colormaps["jet"](v)[..., :3] * 255).astype(np.uint8)).save(path)


class _TopK:
    """The k most confident cases, overlays kept only for them."""

    def __init__(self, k: int):
        self.k, self.items = k, []

    def offer(self, score: float, make) -> None:
        if len(self.items) < self.k or score > self.items[-1][0]:
            self.items.append((score, make()))
            self.items.sort(key=lambda t: -t[0])
            del self.items[self.k:]


def explain_run(
    run_dir: Path, tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
    method: str = "gradcam", write_overlays: bool = True, console=None,
) -> pd.DataFrame:
    """CAMs for every photo from the fold model that did not train on it; writes cams/ and
    returns the region summary (task, model, outcome, region, share, enrichment, n)."""
    from rich.console import Console
    from safetensors.torch import load_file

    from posturescreen.data.images import build_image_cache, letterbox_labels
    from posturescreen.data.manifest import resolve_image_path
    from posturescreen.files import atomic_write_csv
    from posturescreen.models import build_model, preprocessing_for, target_layer
    from posturescreen.progress import progress_bar
    from posturescreen.study import Job, decode_sizes, load_run, safe_name

    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    cfg, cohort = load_run(run_dir)
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {sorted(CAM_METHODS)}")
    manifest_dir = Path(cfg.data.manifest).parent
    image_col = cfg.data.image_column
    paths = [resolve_image_path(manifest_dir, v) for v in cohort[image_col]]
    position = {int(r): i for i, r in enumerate(cohort["row"])}
    names = _landmark_names(list(cohort.columns))
    has_mask = "mask" in cohort.columns
    cache = None  # decoded once, at every study input size, exactly as the study did
    share_frames = []
    for task in cfg.tasks:
        if tasks and task.name not in tasks:
            continue
        for mcfg in cfg.models:
            if models and mcfg.name not in models:
                continue
            prep = preprocessing_for(mcfg.name, mcfg.image_size)
            size = prep.input_size
            if cache is None:
                cache = build_image_cache(paths, decode_sizes(cfg))
            out = run_dir / "cams" / safe_name(task.name) / safe_name(mcfg.name)
            (out / "overlays").mkdir(parents=True, exist_ok=True)
            sums = {o: np.zeros((128, 128), np.float64) for o in OUTCOMES}
            counts = dict.fromkeys(OUTCOMES, 0)
            most_confident = {o: _TopK(2) for o in OUTCOMES}
            folds = sorted(int(p.name[4:]) for p in (run_dir / safe_name(task.name) /
                                                     safe_name(mcfg.name)).glob("fold*"))
            with progress_bar(console) as progress:
                bar = progress.add_task(f"CAMs {task.name} / {mcfg.name}", total=len(folds))
                for k in folds:
                    job_dir = Job(task.name, mcfg.name, k).directory(run_dir)
                    if not (job_dir / "predictions.csv").exists():
                        console.print(f"[yellow]skipping unfinished {job_dir}[/yellow]")
                        continue
                    preds = pd.read_csv(job_dir / "predictions.csv")
                    model, _ = build_model(mcfg.name, "none")
                    model.load_state_dict(load_file(str(job_dir / "checkpoint.safetensors")))
                    pos = np.array([position[int(r)] for r in preds["row"]])
                    images = cache.arrays[size][pos]
                    cams = compute_cams(model, images, prep, target_layer(model, mcfg.name),
                                        method)
                    for j, p in enumerate(preds.itertuples(index=False)):
                        i = pos[j]
                        row = cohort.iloc[i]
                        pts = _frame_points(row, names, cache.original_sizes[i], size)
                        regions = None
                        if has_mask and isinstance(row["mask"], str):
                            regions = letterbox_labels(
                                Image.open(resolve_image_path(manifest_dir, row["mask"])), size)
                        if regions is None:
                            regions = regions_from_landmarks(pts, size)
                        o = outcome(p.label, p.pred)
                        sums[o] += align_to_body(cams[j], pts or None)
                        counts[o] += 1
                        if regions is not None:
                            shares = region_shares(cams[j], regions)
                            shares.insert(0, "outcome", o)
                            shares.insert(0, "prob", p.prob)
                            shares.insert(0, "image", p.image)
                            shares.insert(0, "row", int(p.row))
                            shares.insert(0, "fold", k)
                            shares.insert(0, "model", mcfg.name)
                            shares.insert(0, "task", task.name)
                            share_frames.append(shares)
                        confidence = abs(float(p.prob) - 0.5)
                        caption = f"{o} p={p.prob:.2f} row {int(p.row)}"

                        def make(j=j, images=images, cams=cams):
                            return overlay(images[j], cams[j])

                        if write_overlays:
                            Image.fromarray(make()).save(out / "overlays" /
                                                         f"row{int(p.row)}.png")
                        most_confident[o].offer(
                            confidence, lambda make=make, caption=caption: (make(), caption))
                    progress.advance(bar)
            for o in OUTCOMES:
                if counts[o]:
                    mean = sums[o] / counts[o]
                    np.save(out / f"mean_cam_{o}.npy", mean.astype(np.float32))
                    _heatmap_png(mean, out / f"mean_cam_{o}.png")
            # the most confident correct (TP, TN) and wrong (FP, FN) cases, two of each
            tiles = [t for o in OUTCOMES for _, t in most_confident[o].items]
            if tiles:
                gallery(tiles).save(out / "gallery.png")
    shares = pd.concat(share_frames, ignore_index=True) if share_frames else pd.DataFrame(
        columns=["task", "model", "fold", "row", "image", "prob", "outcome", "region",
                 "share", "area_share", "enrichment"])
    atomic_write_csv(run_dir / "cams" / "region_shares.csv", shares)
    summary = summarize_shares(shares)
    atomic_write_csv(run_dir / "cams" / "region_summary.csv", summary)
    return summary


def summarize_shares(shares: pd.DataFrame) -> pd.DataFrame:
    """Mean share and enrichment per task × model × outcome (and 'all') × region."""
    if shares.empty:
        return pd.DataFrame(columns=["task", "model", "outcome", "region", "share",
                                     "enrichment", "n"])
    both = pd.concat([shares, shares.assign(outcome="all")])
    g = both.groupby(["task", "model", "outcome", "region"], sort=False)
    return g.agg(share=("share", "mean"), enrichment=("enrichment", "mean"),
                 n=("row", "nunique")).reset_index()
