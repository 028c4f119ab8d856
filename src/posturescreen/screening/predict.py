"""Screening new photos with exported bundles: the fold-model ensemble's probability (mean
over fold models, with their range), the decision at the bundle's threshold, an overlay
(the fold CNNs' mean Grad-CAM, or the measured landmarks for an angle model), the angles
measured, and for angle and fusion models the single angle change that would lower the
predicted risk most. Faces are blurred in every picture unless asked otherwise. The same
functions serve the CLI and the web page."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from posturescreen.data.images import (
    Frame,
    ImageReadError,
    crop_region,
    letterbox,
    read_image_file,
)
from posturescreen.explain import compute_cams, overlay
from posturescreen.explain.pictures import pose_overlay
from posturescreen.files import atomic_write, atomic_write_text
from posturescreen.models.cnn import target_layer
from posturescreen.models.linear import RiskChange, lower_risk_change
from posturescreen.models.training import predict_probs
from posturescreen.posture.estimator import PoseEstimator, PoseResult
from posturescreen.posture.faces import FaceFinder, Faces, deidentify
from posturescreen.runfolder import safe_name
from posturescreen.screening.batch import spreadsheet_safe
from posturescreen.screening.bundle import Bundle
from posturescreen.screening.measure import (
    finite_angles,
    fold_points,
    mean_angles,
    photo_facing,
    shifted,
)

T = TypeVar("T")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
ANGLE_PICTURE = 256  # the side of an angle model's overlay


Status = Literal["ok", "no_person", "error"]


class PredictionResult(BaseModel):
    """What a prediction reports: the CLI's CSV/JSON rows and the web API's results. Only
    status `ok` has a probability, a decision and advice: `no_person` (the bundle needs a
    person and none was found) and `error` (`error` says why) have none."""

    task: str
    model: str
    kind: Literal["cnn", "angles", "fusion"] = "cnn"
    status: Status = "ok"
    probability: float | None = None  # mean over the fold models
    fold_min: float | None = None
    fold_max: float | None = None
    fold_probabilities: list[float] = Field(default_factory=list)
    threshold: float
    decision: Literal["positive", "negative"] | None = None  # the fold rules' majority
    # each fold model's own rule (recalibrated probability >= its own threshold): the
    # decisions the study evaluated out-of-fold
    fold_decisions: list[Literal["positive", "negative"]] = Field(default_factory=list)
    person_found: bool | None = None  # None: the bundle does not look for a person
    angles: dict[str, float] = Field(default_factory=dict)  # the angles measured
    lower_risk: str | None = None  # "raise CVA by 8.0° → risk 0.61 → 0.42" (a model property)
    lower_risk_angle: str | None = None
    lower_risk_to: float | None = None
    lower_risk_probability: float | None = None
    error: str = ""  # why, when status is error


class Prediction(PredictionResult):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    cam_overlay: np.ndarray | None = Field(default=None, exclude=True, repr=False)  # RGB uint8

    @property
    def positive(self) -> bool:
        return self.decision == "positive"

    def as_dict(self) -> dict:
        return self.model_dump()


def read_pose(bundle: Bundle, image: Image.Image, full_size: tuple[int, int],
              *, estimator: PoseEstimator | None) -> PoseResult | None:
    """The person in the photo, for bundles that crop, measure angles or blur faces."""
    if estimator is None:
        with PoseEstimator() as own:
            return own(image, full_size, bundle.metadata.pose.crop_margin)
    return estimator(image, full_size, bundle.metadata.pose.crop_margin)


def find_faces(image: Image.Image, full_size: tuple[int, int], pose: PoseResult | None,
               *, estimator: PoseEstimator | None) -> Faces:
    """Every face in the photo (a temporary finder, on `estimator` when given)."""
    with FaceFinder(estimator) as finder:
        return finder(image, full_size, first=pose)


def _shown(faces: Faces | None) -> Callable[[np.ndarray, Frame], np.ndarray]:
    """How a picture of the photo is shown: with `faces` blurred (all of it when they are
    not every face), or as it is when blurring is off (None)."""
    if faces is None:
        return lambda picture, frame: picture
    return lambda picture, frame: deidentify(picture, faces, frame)


def _cnn_probs(bundle: Bundle, view: Image.Image, shown: Callable[[np.ndarray, Frame],
               np.ndarray], frame: Frame, with_cam: bool) -> tuple[list[float],
                                                                     np.ndarray | None]:
    prep = bundle.preprocessing
    batch = letterbox(view, prep.input_size, prep.interpolation)[None]
    cl = bundle.metadata.preprocessing.channels_last
    if not with_cam:
        device = next(bundle.models[0].parameters()).device
        return [
            float(
                predict_probs(
                    m, batch, prep, device=device, batch_size=1, precision="fp32", channels_last=cl
                )[0]
            )
            for m in bundle.models
        ], None
    # one forward+backward per fold model gives both the CAM and the logit
    logits: list[float] = []
    maps = [
        compute_cams(
            m,
            batch,
            prep,
            layer=target_layer(m, bundle.metadata.architecture),
            channels_last=cl,
            logits_out=logits,
        )[0]
        for m in bundle.models
    ]
    # sigmoid in float32, as the study's predictions were computed
    probs = torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).tolist()
    return probs, overlay(shown(batch[0], frame), np.mean(maps, axis=0))


def _risk(bundle: Bundle, cnn_probs: list[float]
          ) -> Callable[[list[dict[str, float]]], list[float]]:
    """Fold probabilities as a function of each fold's angles (the CNN's scores held
    fixed)."""

    def fold_probs(per_fold: list[dict[str, float]]) -> list[float]:
        return [
            bundle.kind.probability(
                cnn_probs[k] if cnn_probs else None, bundle.linear_parts(k), per_fold[k]
            )
            for k in range(len(bundle.metadata.folds))
        ]

    return fold_probs


def predict_image(
    bundle: Bundle,
    image: Image.Image,
    full_size: tuple[int, int] | None = None,
    *,
    with_cam: bool = True,
    blur_faces: bool = True,
    pose: PoseResult | None = None,
    estimator: PoseEstimator | None = None,
    faces: Faces | None = None,
) -> Prediction:
    """`image` must be upright RGB (as read_image_file / decode_image return it), decoded at
    `bundle.decode_size`; `full_size` is the photo's full resolution (default: the image's).
    `pose` is found with `estimator` (or a temporary one) when the bundle or the blur needs
    it and none is given; so are `faces` (every face, for the blur). A bundle that needs a
    person (`needs_person`) gives status `no_person` and nothing else when none is found;
    a probability that is not finite gives status `error`."""
    full_size = full_size or image.size
    meta = bundle.metadata
    if pose is None and (bundle.needs_pose or (blur_faces and with_cam)):
        pose = read_pose(bundle, image, full_size, estimator=estimator)
    found = pose is not None and pose.found
    if bundle.needs_person and not found:
        return Prediction(task=meta.task, model=meta.model, kind=meta.kind,
                          status="no_person", threshold=bundle.threshold, person_found=False)
    if blur_faces and with_cam and faces is None:
        faces = find_faces(image, full_size, pose, estimator=estimator)
    shown = _shown(faces if blur_faces else None)
    box = pose.box(meta.pose.crop_margin) if found and meta.pose.crop else None
    view, region = crop_region(image, full_size, box)
    cnn_probs, picture = [], None
    if bundle.kind.uses_pixels:
        frame = Frame(region, bundle.preprocessing.input_size)
        cnn_probs, picture = _cnn_probs(bundle, view, shown, frame, with_cam)
    angles: dict[str, float] = {}
    change: RiskChange | None = None
    if not bundle.kind.uses_angles:
        probs = cnn_probs
    else:
        per_fold_points = fold_points(bundle, image, full_size, pose=pose)
        sign = photo_facing(bundle, pose)
        per_fold = [finite_angles(p, known_facing=sign) for p in per_fold_points]
        angles = mean_angles(per_fold)
        move = shifted(per_fold, angles)
        fold_probs = _risk(bundle, cnn_probs)
        probs = fold_probs(per_fold)
        change = lower_risk_change(
            bundle.angle_models, angles,
            lambda v: float(np.mean(bundle.calibrate(fold_probs(move(v))))))
        points = {n: tuple(np.mean([p[n] for p in per_fold_points if n in p], axis=0))
                  for n in dict.fromkeys(n for p in per_fold_points for n in p)}
        if with_cam and not bundle.kind.uses_pixels:  # the landmarks are the picture
            frame = Frame(region, ANGLE_PICTURE)
            pic = letterbox(view, ANGLE_PICTURE, "bilinear")
            picture = pose_overlay(
                shown(pic, frame), {k: frame.point(*v) for k, v in points.items()}
            )
    probs = bundle.calibrate(probs)  # the study's per-fold recalibration
    p = float(np.mean(probs))
    if not np.isfinite(probs).all():  # never a decision: NaN >= threshold reads "negative"
        return Prediction(task=meta.task, model=meta.model, kind=meta.kind, status="error",
                          threshold=bundle.threshold, person_found=found if pose else None,
                          error="the model gave no finite probability for this photo (a "
                                "damaged bundle?)")
    return Prediction(
        task=meta.task,
        model=meta.model,
        kind=meta.kind,
        probability=p,
        fold_min=min(probs),
        fold_max=max(probs),
        fold_probabilities=probs,
        threshold=bundle.threshold,
        decision=bundle.decide(probs),
        fold_decisions=bundle.fold_decisions(probs),
        person_found=found if pose is not None else None,
        angles=angles,
        lower_risk=change.sentence() if change else None,
        lower_risk_angle=change.angle if change else None,
        lower_risk_to=change.after if change else None,
        lower_risk_probability=change.risk_after if change else None,
        cam_overlay=picture,
    )


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
            photos += sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            photos.append(item)
    return photos


def predict_files(
    photos: Sequence[Path],
    bundles: Sequence[Bundle],
    *,
    out_dir: Path | None = None,
    with_cam: bool = True,
    progress: Callable[[int], None] | None = None,
    blur_faces: bool = True,
) -> pd.DataFrame:
    """One row per photo × bundle, with its `status` (ok, no_person, error); an unreadable
    photo gets one `error` row, a photo × bundle that fails its own, and the batch goes on.
    Overlays go to out_dir/<photo stem>_<path hash>__<task>__<model>.png: one file per input
    photo, even for photos with the same name in other folders or formats."""
    rows = []
    pictures = with_cam and out_dir is not None
    needs_pose = any(b.needs_pose for b in bundles) or (blur_faces and pictures)
    estimator = PoseEstimator() if needs_pose else None
    finder = FaceFinder(estimator) if blur_faces and pictures else None
    try:
        for path in photos:
            rows += _predict_photo(Path(path), bundles, estimator=estimator, finder=finder,
                                   out_dir=out_dir if pictures else None,
                                   blur_faces=blur_faces)
            if progress:
                progress(1)
    finally:
        if finder is not None:
            finder.close()
        if estimator is not None:
            estimator.close()
    return pd.DataFrame(rows)


def _predict_photo(path: Path, bundles: Sequence[Bundle], *, estimator: PoseEstimator | None,
                   finder: FaceFinder | None, out_dir: Path | None,
                   blur_faces: bool) -> list[dict]:
    """The rows of one photo: one per bundle, or one error row when it cannot be read."""
    try:
        decoded = decode_for_bundles(
            bundles, lambda size: read_image_file(path, draft_size=size))
    except ImageReadError as e:
        return [{"photo": str(path), "status": "error", "error": str(e)}]
    poses: dict[int, PoseResult] = {}
    faces: dict[int, Faces] = {}
    rows = []
    for b in bundles:
        image, full_size, _ = decoded[b.decode_size]
        try:
            if estimator is not None and b.decode_size not in poses:
                poses[b.decode_size] = estimator(image, full_size, b.metadata.pose.crop_margin)
            if finder is not None and b.decode_size not in faces:
                faces[b.decode_size] = finder(image, full_size, first=poses[b.decode_size])
            pred = predict_image(b, image, full_size, with_cam=out_dir is not None,
                                 blur_faces=blur_faces, pose=poses.get(b.decode_size),
                                 estimator=estimator, faces=faces.get(b.decode_size))
        except Exception as e:  # one photo's failure never ends the batch
            rows.append({"photo": str(path), "task": b.metadata.task, "model": b.metadata.model,
                         "kind": b.metadata.kind, "status": "error",
                         "error": f"{path}: could not be scored ({type(e).__name__}: {e})"})
            continue
        row = {"photo": str(path), **pred.as_dict()}
        row["fold_probabilities"] = " ".join(f"{v:.6f}" for v in pred.fold_probabilities)
        row["fold_decisions"] = " ".join(pred.fold_decisions)
        row["angles"] = " ".join(f"{k}={v:.1f}" for k, v in pred.angles.items())
        if out_dir is not None:
            row["cam_overlay"] = None  # no picture unless scored
        if out_dir is not None and pred.cam_overlay is not None:
            name = f"{overlay_stem(path)}__{safe_name(pred.task)}__{safe_name(pred.model)}.png"
            atomic_write(out_dir / name,
                         lambda p, pred=pred: Image.fromarray(pred.cam_overlay).save(p, "PNG"))
            row["cam_overlay"] = str(out_dir / name)
        rows.append(row)
    return rows


def overlay_stem(photo: Path) -> str:
    """A file stem unique to this photo's resolved path: `x.jpg` and `x.png`, or two `x.png`
    in different folders, never share an overlay file."""
    digest = hashlib.sha256(str(Path(photo).resolve()).encode()).hexdigest()[:8]
    return f"{safe_name(Path(photo).stem)}_{digest}"


def write_predictions(table: pd.DataFrame, out_dir: Path, fmt: Literal["csv", "json"]) -> Path:
    """predictions.csv or .json in out_dir, written atomically."""
    target = Path(out_dir) / f"predictions.{fmt}"
    if fmt == "csv":
        atomic_write_text(target, spreadsheet_safe(table).to_csv(index=False))
    else:
        atomic_write_text(target, table.to_json(orient="records", indent=2))
    return target
