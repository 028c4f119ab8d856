"""Model bundles: a finished study's fold models for one task × model, packed with
everything needed to use them on new photos and to know what they are (and are not) for.

A bundle is a folder (or the same folder zipped):
    fold0.safetensors ... foldK.safetensors   the out-of-fold models' weights
    metadata.json                             `BundleMetadata`: versions, preprocessing,
                                              the decision rule and how it was chosen,
                                              intended use, training cohort, the study's
                                              metrics with CIs

A bundle may come from someone else: its metadata is validated field by field on load, its
files must sit inside it, a zip's size and entry count are limited before anything is
extracted, and every weights file must match its checksum and the architecture.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from posturescreen import __version__
from posturescreen.errors import PostureScreenError
from posturescreen.models.cnn import Preprocessing, UnknownModelError, build_model, sha256_file
from posturescreen.models.kinds import LinearParts, ModelKind, kind_of
from posturescreen.models.landmarks import LandmarkNet
from posturescreen.models.linear import AngleModel, FusionModel
from posturescreen.posture.estimator import POSE_DRAFT
from posturescreen.screening.bundle_landmarks import (
    BundleLandmarks,
    LandmarkBundleError,
    load_landmark_nets,
)
from posturescreen.screening.bundle_zip import BundleZipError, extract_zip
from posturescreen.stats.links import logit, sigmoid

BUNDLE_FORMAT = 3  # 3: learned landmark models
READABLE_FORMATS = (1, 2, 3)  # 1: CNN bundles of earlier versions (no crop, no angles)
METADATA = "metadata.json"
MAX_METADATA_BYTES = 16 * 2**20
INTENDED_USE = (
    "Research tool. Estimates, from one side-view photo of habitual sitting posture, the "
    "probability that the photographed worker belongs to the positive class of the task it "
    "was trained for, as defined in the training study; it decides per photo (for a worker "
    "with several photos, the study's worker level averaged their probabilities). Not a "
    "diagnostic device; not validated for clinical decisions, for other populations, camera "
    "set-ups or views than the training cohort's. Decisions use the threshold chosen on the "
    "study's inner validation splits."
)


class BundleError(PostureScreenError):
    """A bundle that cannot be written or read; the message names the file."""


class _Meta(BaseModel):
    # a number in a bundle is never NaN or infinite (NaN >= threshold is False: "negative")
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class BundlePreprocessing(_Meta):
    input_size: int = Field(ge=16, le=2048)
    mean: tuple[_Finite, _Finite, _Finite]
    std: tuple[_Positive, _Positive, _Positive]
    interpolation: Literal["bicubic", "bilinear", "nearest", "lanczos"]
    resize: str = "letterbox (aspect kept, padded to square)"
    decode_size: int | None = Field(None, ge=16, le=4096)
    channels_last: bool = False
    precision: Literal["fp32"] = "fp32"


class BundleThreshold(_Meta):
    value: float = Field(ge=0.0, le=1.0)
    per_fold: list[_Share] = Field(default_factory=list)
    rule: str
    how: str


class FoldCalibration(_Meta):
    """The fold's Platt recalibration: p = sigmoid(slope · logit(p_model) + intercept)."""

    slope: float = Field(1.0, ge=0, le=1e3)
    intercept: float = Field(0.0, ge=-1e3, le=1e3)


class OperatingPoint(_Meta):
    """The decision rules a bundle applies — each fold model's own (its recalibrated
    probability against its own threshold) — and how they did on the study's out-of-fold
    photos: exactly the study's photo-level decisions, with their CIs."""

    rule: str
    threshold: float = Field(ge=0.0, le=1.0)  # the mean rule that breaks a tied vote
    level: Literal["photo"] = "photo"
    n: int = Field(ge=0)
    Sen: _Share | None = None
    Spe: _Share | None = None
    PPV: _Share | None = None
    NPV: _Share | None = None
    ACC: _Share | None = None
    ci: dict[str, tuple[_Share, _Share]] = Field(default_factory=dict)  # metric -> (low, high)


class BundleFold(_Meta):
    fold: int = Field(ge=0)
    calibration: FoldCalibration = Field(default_factory=FoldCalibration)
    # a CNN's weights (cnn and fusion bundles)
    file: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+\.safetensors$", max_length=128)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # an angle model and the fusion (angles and fusion bundles)
    angles: AngleModel | None = None
    fusion: FusionModel | None = None
    # learned landmarks: the models whose mean points this fold's angles come from
    landmark_models: list[str] = Field(default_factory=list, max_length=64)
    threshold: float = Field(ge=0.0, le=1.0)
    best_epoch: int | None = None


class BundlePose(_Meta):
    """How the study found the person: the CNN's crop and where angles came from."""

    crop: bool = False
    crop_margin: float = Field(0.1, ge=0, le=1)
    min_visibility: float = Field(0.5, ge=0, le=1)
    landmark_source: Literal["estimator", "learned", "manifest", "none"] = "none"
    decode_size: int | None = Field(None, ge=16, le=4096)  # the estimator's photo size
    # which way learned points are read as facing: the estimator's person (its face in front
    # of its ear), or the points' own (bundles of studies before that rule)
    facing: Literal["estimator", "points"] = "points"


class BundleStudy(_Meta):
    name: str
    fingerprint: str
    data_hash: str | None = None
    seed: int
    folds: int
    cv_scheme: str


class BundleMetadata(_Meta):
    """metadata.json, validated on load (extra keys from newer writers are kept)."""

    format: Literal[1, 2, 3]
    task: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    kind: Literal["cnn", "angles", "fusion"] = "cnn"
    cnn: str | None = Field(None, max_length=200, description="fusion: the CNN architecture")
    pose: BundlePose = Field(default_factory=BundlePose)
    positive: str
    negative: str
    intended_use: str
    versions: dict[str, Any] = Field(default_factory=dict)
    study: BundleStudy
    preprocessing: BundlePreprocessing | None = None  # the CNN's (cnn and fusion bundles)
    threshold: BundleThreshold
    operating_point: OperatingPoint | None = None  # format 1 bundles have none
    landmarks: BundleLandmarks | None = None  # learned landmark models (format 3)
    training_cohort: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    folds: list[BundleFold] = Field(min_length=1, max_length=50)

    @field_validator("folds")
    @classmethod
    def _distinct_folds(cls, folds: list[BundleFold]) -> list[BundleFold]:
        files = [f.file for f in folds if f.file is not None]
        if len({f.fold for f in folds}) < len(folds) or len(set(files)) < len(files):
            raise ValueError("each fold (number and file) may appear once")
        return folds

    @model_validator(mode="after")
    def _parts_for_kind(self) -> BundleMetadata:
        kind = kind_of(self.kind)
        article = "an" if self.kind[0] in "aeiou" else "a"
        if kind.uses_pixels and self.preprocessing is None:
            raise ValueError(f"{article} {self.kind} bundle needs `preprocessing`")
        if kind.uses_pixels and not self.architecture:
            raise ValueError(f"{article} {self.kind} bundle needs `cnn`, its CNN's "
                             "architecture")
        for f in self.folds:
            if kind.uses_pixels and (f.file is None or f.sha256 is None):
                raise ValueError(f"fold {f.fold}: {article} {self.kind} bundle needs a "
                                 "weights `file` and its `sha256`")
            for part in kind.linear_parts:
                if getattr(f, part) is None:
                    raise ValueError(f"fold {f.fold}: {article} {self.kind} bundle needs "
                                     f"`{part}`")
        if kind.uses_angles and self.pose.landmark_source not in ("estimator", "learned"):
            raise ValueError("angles on a new photo come from the pose estimator or learned "
                             "landmark models: pose.landmark_source must be one of them")
        if kind.uses_angles and self.pose.landmark_source == "learned":
            known = {m.name for m in self.landmarks.models} if self.landmarks else set()
            for f in self.folds:
                if not f.landmark_models or set(f.landmark_models) - known:
                    raise ValueError(f"fold {f.fold}: learned landmarks need `landmark_models` "
                                     "naming models listed in `landmarks`")
        return self

    @property
    def architecture(self) -> str | None:
        """The CNN architecture to build (None for an angle model)."""
        return kind_of(self.kind).architecture(self.model, self.cnn)


@dataclass
class Bundle:
    path: Path
    metadata: BundleMetadata
    models: list[nn.Module]  # one CNN per fold (empty for an angle model)
    preprocessing: Preprocessing | None
    angle_models: list[AngleModel] = field(default_factory=list)  # one per fold
    fusions: list[FusionModel] = field(default_factory=list)
    landmark_nets: dict[str, LandmarkNet] = field(default_factory=dict)  # learned landmarks

    @property
    def name(self) -> str:
        return f"{self.metadata.task} / {self.metadata.model}"

    @property
    def threshold(self) -> float:
        return float(self.metadata.threshold.value)

    @property
    def kind(self) -> ModelKind:
        return kind_of(self.metadata.kind)

    def linear_parts(self, k: int) -> LinearParts:
        """Fold k's linear models (none for a CNN bundle)."""
        return LinearParts(self.angle_models[k] if self.angle_models else None,
                           self.fusions[k] if self.fusions else None)

    @property
    def decode_size(self) -> int:
        """The size the study decoded JPEGs at (its largest input size, at least the pose
        estimator's when it ran)."""
        p = self.metadata.preprocessing
        if p is not None:
            return int(p.decode_size or p.input_size)
        return int(self.metadata.pose.decode_size or POSE_DRAFT)

    def only_fold(self, k: int) -> Bundle:
        """The bundle cut to its k-th fold model: what scored that fold's test photos."""
        meta = self.metadata.model_copy(update={"folds": [self.metadata.folds[k]]})
        return Bundle(self.path, meta, self.models[k:k + 1], self.preprocessing,
                      self.angle_models[k:k + 1], self.fusions[k:k + 1], self.landmark_nets)

    def fold_decisions(self, calibrated: list[float]) -> list[str]:
        """Each fold rule's decision: its recalibrated probability against its threshold."""
        return ["positive" if p >= f.threshold else "negative"
                for p, f in zip(calibrated, self.metadata.folds, strict=True)]

    def decide(self, calibrated: list[float]) -> str:
        """The fold rules' majority; a tie: the mean probability against the mean threshold
        (operating_point.rule says the same)."""
        positive = self.fold_decisions(calibrated).count("positive")
        if 2 * positive != len(calibrated):
            return "positive" if 2 * positive > len(calibrated) else "negative"
        return "positive" if float(np.mean(calibrated)) >= self.threshold else "negative"

    def calibrate(self, fold_probs: list[float]) -> list[float]:
        """Each fold model's probability through that fold's recalibration (the study's
        Calibrator: the same link, so a slope of 487 saturates instead of overflowing)."""
        folds = self.metadata.folds
        if len(fold_probs) != len(folds):
            raise ValueError(f"{len(fold_probs)} probabilities for {len(folds)} folds")
        slope = np.array([f.calibration.slope for f in folds])
        intercept = np.array([f.calibration.intercept for f in folds])
        return sigmoid(slope * logit(np.asarray(fold_probs, dtype=float)) + intercept).tolist()

    @property
    def needs_pose(self) -> bool:
        return self.metadata.pose.crop or self.kind.uses_angles

    @property
    def needs_person(self) -> bool:
        """No score without a person: angles (and a fusion's) are measured on one, and a
        CNN with the person crop was trained on people cut from the scene."""
        return self.needs_pose


def read_metadata(path: Path, shown: Path) -> BundleMetadata:
    """metadata.json validated; errors name the bundle and the field."""
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise BundleError(f"{shown}: {METADATA} is larger than {MAX_METADATA_BYTES >> 20} MB")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BundleError(f"{shown}: {METADATA} is not UTF-8 text") from e
    except (RecursionError, ValueError) as e:  # JSONDecodeError, a 5000-digit number, ...
        raise BundleError(f"{shown}: {METADATA} is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise BundleError(f"{shown}: {METADATA} must be a JSON object")
    if raw.get("format") not in READABLE_FORMATS:
        raise BundleError(f"{shown}: bundle format {str(raw.get('format'))[:20]!r} is not "
                          f"supported by posturescreen {__version__} (reads "
                          f"{', '.join(map(str, READABLE_FORMATS))}); re-export it")
    try:
        return BundleMetadata.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleError(f"{shown}: {METADATA} field {where}: {first['msg']}"
                          + (f" ({e.error_count() - 1} more problem(s))"
                             if e.error_count() > 1 else "")) from e


def _load_fold_model(folder: Path, fold: BundleFold, meta: BundleMetadata, shown: Path,
                     device: torch.device) -> nn.Module:
    f = folder / str(fold.file)
    if not f.is_file() or f.is_symlink():
        raise BundleError(f"{shown}: {fold.file} is missing")
    if sha256_file(f) != fold.sha256:
        raise BundleError(f"{shown}: {fold.file} does not match its checksum")
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{shown}: {fold.file} is not a readable safetensors file "
                          f"({e})") from e
    broken = [k for k, t in state.items()
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise BundleError(f"{shown}: {fold.file} holds NaN or infinite weights (in "
                          f"{broken[0]}{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}"
                          "); re-export it from a finished study")
    try:
        model, _ = build_model(meta.architecture, "none")
    except UnknownModelError as e:
        raise BundleError(f"{shown}: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BundleError(f"{shown}: {fold.file} does not fit architecture "
                          f"{meta.architecture!r} "
                          f"({str(e).splitlines()[0]})") from e
    model.to(device).eval()
    if meta.preprocessing is not None and meta.preprocessing.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def load_bundle(path: Path, device: torch.device | None = None) -> Bundle:
    """Read a bundle folder or zip; checks every weights file against its sha256."""
    path = Path(path)
    device = device or torch.device("cpu")
    if not path.exists():
        raise BundleError(f"bundle not found: {path}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise BundleError(f"{path}: not a bundle (neither a folder nor a zip file)")
            try:
                extract_zip(path, Path(tmp), metadata=METADATA)
            except BundleZipError as e:
                raise BundleError(str(e)) from e
            folder = Path(tmp)
        meta_path = folder / METADATA
        if not meta_path.is_file():
            raise BundleError(f"{path}: not a posturescreen bundle (no {METADATA})")
        metadata = read_metadata(meta_path, path)
        models = [_load_fold_model(folder, fold, metadata, path, device)
                  for fold in metadata.folds] if metadata.architecture else []
        try:
            nets = (load_landmark_nets(folder, metadata.landmarks, path)
                    if metadata.landmarks is not None else {})
        except LandmarkBundleError as e:
            raise BundleError(str(e)) from e
    p = metadata.preprocessing
    prep = Preprocessing.from_record(p.model_dump()) if p is not None else None
    angle_models = [f.angles for f in metadata.folds if f.angles is not None]
    fusions = [f.fusion for f in metadata.folds if f.fusion is not None]
    return Bundle(path, metadata, models, prep, angle_models, fusions, nets)

