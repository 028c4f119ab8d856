"""Screening new photos with exported bundles: the fold-model ensemble's probability (mean
over fold models, with their range), the decision at the bundle's threshold, and a CAM
overlay (mean of the fold models' Grad-CAMs). The same functions serve the CLI and the
web page."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from posturescreen.bundle import Bundle
from posturescreen.data.images import ImageReadError, letterbox, read_image_file
from posturescreen.explain import compute_cams, overlay
from posturescreen.files import atomic_write, atomic_write_text
from posturescreen.models import target_layer
from posturescreen.runfolder import safe_name
from posturescreen.training import predict_probs

T = TypeVar("T")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class PredictionResult(BaseModel):
    """What a prediction reports: the CLI's CSV/JSON rows and the web API's results."""

    task: str
    model: str
    probability: float  # mean over the fold models
    fold_min: float
    fold_max: float
    fold_probabilities: list[float]
    threshold: float
    decision: Literal["positive", "negative"]


class Prediction(PredictionResult):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    cam_overlay: np.ndarray | None = Field(default=None, exclude=True, repr=False)  # RGB uint8

    @property
    def positive(self) -> bool:
        return self.decision == "positive"

    def as_dict(self) -> dict:
        return self.model_dump()


def predict_image(bundle: Bundle, image: Image.Image, with_cam: bool = True) -> Prediction:
    """`image` must be upright RGB (as read_image_file / decode_image return it)."""
    prep = bundle.preprocessing
    batch = letterbox(image, prep.input_size, prep.interpolation)[None]
    device = next(bundle.models[0].parameters()).device
    cl = bundle.metadata.preprocessing.channels_last
    cam = None
    if with_cam:  # one forward+backward per fold model gives both the CAM and the logit
        logits: list[float] = []
        maps = [compute_cams(m, batch, prep, target_layer(m, bundle.metadata.model),
                             channels_last=cl, logits_out=logits)[0] for m in bundle.models]
        probs = [float(1.0 / (1.0 + np.exp(-v))) for v in logits]
        cam = overlay(batch[0], np.mean(maps, axis=0))
    else:
        probs = [float(predict_probs(m, batch, prep, device, 1, "fp32", cl)[0])
                 for m in bundle.models]
    p = float(np.mean(probs))
    return Prediction(task=bundle.metadata.task, model=bundle.metadata.model,
                      probability=p, fold_min=min(probs), fold_max=max(probs),
                      fold_probabilities=probs, threshold=bundle.threshold,
                      decision="positive" if p >= bundle.threshold else "negative",
                      cam_overlay=cam)


def decode_for_bundles(bundles: Sequence[Bundle], decode: Callable[[int], T]) -> dict[int, T]:
    """decode(size) once per distinct study decode size among the bundles."""
    decoded: dict[int, T] = {}
    for b in bundles:
        if b.decode_size not in decoded:
            decoded[b.decode_size] = decode(b.decode_size)
    return decoded


def collect_photos(inputs: Sequence[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (sorted, not recursive)."""
    photos = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            photos += sorted(p for p in item.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            photos.append(item)
    return photos


def predict_files(
    photos: Sequence[Path], bundles: Sequence[Bundle], out_dir: Path | None = None,
    with_cam: bool = True, progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """One row per photo × bundle; unreadable photos get an `error` instead of a result.
    Overlays go to out_dir/<photo stem>_<path hash>__<task>__<model>.png: one file per
    input photo, even for photos with the same name in other folders or formats."""
    rows = []
    for path in photos:
        try:
            decoded = decode_for_bundles(
                bundles, lambda size, path=path: read_image_file(Path(path), draft_size=size)[0])
        except ImageReadError as e:
            rows.append({"photo": str(path), "error": str(e)})
            if progress:
                progress(1)
            continue
        for b in bundles:
            pred = predict_image(b, decoded[b.decode_size], with_cam)
            row = {"photo": str(path), **pred.as_dict(), "error": ""}
            row["fold_probabilities"] = " ".join(f"{v:.6f}" for v in pred.fold_probabilities)
            if with_cam and out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                name = f"{overlay_stem(Path(path))}__{safe_name(pred.task)}__" \
                       f"{safe_name(pred.model)}.png"
                atomic_write(out_dir / name,
                             lambda p, pred=pred: Image.fromarray(pred.cam_overlay).save(
                                 p, format="PNG"))
                row["cam_overlay"] = str(out_dir / name)
            rows.append(row)
        if progress:
            progress(1)
    return pd.DataFrame(rows)


def overlay_stem(photo: Path) -> str:
    """A file stem unique to this photo's resolved path: `x.jpg` and `x.png`, or two `x.png`
    in different folders, never share an overlay file."""
    digest = hashlib.sha256(str(Path(photo).resolve()).encode()).hexdigest()[:8]
    return f"{safe_name(Path(photo).stem)}_{digest}"


def write_predictions(table: pd.DataFrame, out_dir: Path, fmt: Literal["csv", "json"]) -> Path:
    """predictions.csv or .json in out_dir, written atomically."""
    target = Path(out_dir) / f"predictions.{fmt}"
    if fmt == "csv":
        atomic_write_text(target, table.to_csv(index=False))
    else:
        atomic_write_text(target, table.to_json(orient="records", indent=2))
    return target
