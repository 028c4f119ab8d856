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
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from posturescreen import __version__
from posturescreen import runfolder as rf
from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write
from posturescreen.models import (
    Preprocessing,
    UnknownModelError,
    build_model,
    decode_sizes,
    sha256_file,
)

BUNDLE_FORMAT = 1
METADATA = "metadata.json"
MAX_ZIP_ENTRIES = 64
MAX_ZIP_BYTES = 8 * 2**30  # uncompressed; the paper's largest grid (VGG19 × 4) is ~2.2 GB
MAX_METADATA_BYTES = 16 * 2**20
INTENDED_USE = (
    "Research tool. Estimates, from one side-view photo of habitual sitting posture, the "
    "probability that a worker belongs to the positive class of the task it was trained "
    "for, as defined in the training study. Not a diagnostic device; not validated for "
    "clinical decisions, for other populations, camera set-ups or views than the training "
    "cohort's. Decisions use the threshold chosen on the study's inner validation splits."
)


class BundleError(PostureScreenError):
    """A bundle that cannot be written or read; the message names the file."""


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow")


_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


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
    per_fold: list[float] = Field(default_factory=list)
    rule: str
    how: str


class BundleFold(_Meta):
    fold: int = Field(ge=0)
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.safetensors$", max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    threshold: float = Field(ge=0.0, le=1.0)
    best_epoch: int | None = None


class BundleStudy(_Meta):
    name: str
    fingerprint: str
    data_hash: str | None = None
    seed: int
    folds: int
    cv_scheme: str


class BundleMetadata(_Meta):
    """metadata.json, validated on load (extra keys from newer writers are kept)."""

    format: Literal[1]
    task: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    positive: str
    negative: str
    intended_use: str
    versions: dict[str, Any] = Field(default_factory=dict)
    study: BundleStudy
    preprocessing: BundlePreprocessing
    threshold: BundleThreshold
    training_cohort: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    folds: list[BundleFold] = Field(min_length=1, max_length=50)

    @field_validator("folds")
    @classmethod
    def _distinct_folds(cls, folds: list[BundleFold]) -> list[BundleFold]:
        if len({f.fold for f in folds}) < len(folds) or len({f.file for f in folds}) < len(folds):
            raise ValueError("each fold (number and file) may appear once")
        return folds


def export_bundle(run_dir: Path, task: str, model: str, out: Path) -> Path:
    """Pack the fold models of (task, model) from a finished run; `out` ending in .zip
    gives a zip file, anything else a folder. Never replaces an existing file or folder."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; choose another --out (a bundle never "
                          "replaces a file)")
    cfg, _ = rf.load_run(run_dir)
    if task not in [t.name for t in cfg.tasks]:
        raise BundleError(f"task {task!r} is not in {run_dir} (tasks: "
                          f"{[t.name for t in cfg.tasks]})")
    if next((m for m in cfg.models if m.name == model), None) is None:
        raise BundleError(f"model {model!r} is not in {run_dir} (models: "
                          f"{[m.name for m in cfg.models]})")
    folds = []
    for k in rf.fold_numbers(run_dir, task, model):
        job = rf.Job(task, model, k)
        if not job.is_done(run_dir):
            raise BundleError(f"{job.directory(run_dir)}: fold {k} is unfinished; finish the "
                              "study first")
        folds.append((k, job.directory(run_dir),
                      json.loads((job.directory(run_dir) / rf.FOLD_JSON).read_text())))
    if not folds:
        raise BundleError(f"{run_dir}: no finished folds for {task} / {model}")
    if not (run_dir / rf.METRICS).exists():
        raise BundleError(f"{run_dir}: no {rf.METRICS}; finish the study first")
    metrics = pd.read_csv(run_dir / rf.METRICS)
    metrics = metrics[(metrics["task"] == task) & (metrics["model"] == model)]
    counts = pd.read_csv(run_dir / rf.CLASS_COUNTS)
    counts = counts[counts["task"] == task]
    run_meta = rf.read_record(run_dir).get("posturescreen_run", {})
    task_cfg = next(t for t in cfg.tasks if t.name == task)
    thresholds = [info["threshold"] for _, _, info in folds]
    metadata = BundleMetadata(
        format=BUNDLE_FORMAT, task=task, model=model,
        positive=task_cfg.positive, negative=cfg.negative_query(task_cfg),
        intended_use=INTENDED_USE,
        versions={**rf.library_versions(), "trained_with": run_meta.get("versions", {})},
        study=BundleStudy(name=cfg.name, fingerprint=cfg.fingerprint(),
                          data_hash=run_meta.get("data_hash"), seed=cfg.seed,
                          folds=len(folds), cv_scheme=cfg.cv.scheme),
        preprocessing=BundlePreprocessing(
            **folds[0][2]["preprocessing"],
            # the study decoded JPEGs once at its largest input size; doing the same here
            # gives the study's pixels exactly
            decode_size=max(decode_sizes(cfg.models)),
            channels_last=cfg.train.channels_last),
        threshold=BundleThreshold(
            value=float(sum(thresholds) / len(thresholds)), per_fold=thresholds,
            rule=cfg.threshold.rule,
            how=("mean of the fold models' thresholds, each chosen by Youden's J on its "
                 "fold's inner validation split (never a test fold); the decision "
                 "compares the mean fold probability with it")
            if cfg.threshold.rule == "youden" else f"fixed at {cfg.threshold.value}"),
        training_cohort=counts.drop(columns="task").to_dict(orient="records"),
        metrics=metrics.drop(columns=["task", "model"]).to_dict(orient="records"),
        folds=[BundleFold(fold=k, file=f"fold{k}.safetensors",
                          sha256=sha256_file(job_dir / rf.CHECKPOINT),
                          threshold=info["threshold"], best_epoch=info["best_epoch"])
               for k, job_dir, info in folds])
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the target, then renamed into place: a bundle appears whole or not at all
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        for (_, job_dir, _), fold in zip(folds, metadata.folds, strict=True):
            shutil.copyfile(job_dir / rf.CHECKPOINT, stage / fold.file)
        (stage / METADATA).write_text(metadata.model_dump_json(indent=2))
        if out.suffix == ".zip":
            def write_zip(path: Path) -> None:
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                    for f in sorted(stage.iterdir()):
                        z.write(f, f.name)
            atomic_write(out, write_zip)
        else:
            stage.rename(out)
    return out


@dataclass
class Bundle:
    path: Path
    metadata: BundleMetadata
    models: list[nn.Module]
    preprocessing: Preprocessing

    @property
    def name(self) -> str:
        return f"{self.metadata.task} / {self.metadata.model}"

    @property
    def threshold(self) -> float:
        return float(self.metadata.threshold.value)

    @property
    def decode_size(self) -> int:
        """The size the study decoded JPEGs at (its largest input size)."""
        return int(self.metadata.preprocessing.decode_size or self.preprocessing.input_size)


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
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{shown}: bundle format {str(raw.get('format'))[:20]!r} is not "
                          f"supported by posturescreen {__version__} (expects "
                          f"{BUNDLE_FORMAT})")
    try:
        return BundleMetadata.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BundleError(f"{shown}: {METADATA} field {where}: {first['msg']}"
                          + (f" ({e.error_count() - 1} more problem(s))"
                             if e.error_count() > 1 else "")) from e


def _extract_zip(path: Path, dest: Path) -> None:
    """Extract a bundle zip with limits checked on the declared sizes first and on the bytes
    actually written (a zip can lie about its sizes)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise BundleError(f"{path}: {len(infos)} entries; a bundle has at most "
                                  f"{MAX_ZIP_ENTRIES}")
            names = {i.filename for i in infos}
            if METADATA not in names or any("/" in n or "\\" in n or n.startswith(".")
                                             for n in names):
                raise BundleError(f"{path}: not a posturescreen bundle (expects "
                                  f"{METADATA} and weights files at the top level)")
            if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                raise BundleError(f"{path}: unpacks to more than {MAX_ZIP_BYTES >> 30} GB")
            written = 0
            for info in infos:
                with z.open(info) as src, open(dest / info.filename, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_BYTES:
                            raise BundleError(f"{path}: unpacks to more than "
                                              f"{MAX_ZIP_BYTES >> 30} GB")
                        dst.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise BundleError(f"{path}: damaged or unsupported zip ({e})") from e


def _load_fold_model(folder: Path, fold: BundleFold, meta: BundleMetadata, shown: Path,
                     device: torch.device) -> nn.Module:
    f = folder / fold.file
    if not f.is_file() or f.is_symlink():
        raise BundleError(f"{shown}: {fold.file} is missing")
    if sha256_file(f) != fold.sha256:
        raise BundleError(f"{shown}: {fold.file} does not match its checksum")
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{shown}: {fold.file} is not a readable safetensors file "
                          f"({e})") from e
    try:
        model, _ = build_model(meta.model, "none")
    except UnknownModelError as e:
        raise BundleError(f"{shown}: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BundleError(f"{shown}: {fold.file} does not fit architecture {meta.model!r} "
                          f"({str(e).splitlines()[0]})") from e
    model.to(device).eval()
    if meta.preprocessing.channels_last:
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
            _extract_zip(path, Path(tmp))
            folder = Path(tmp)
        meta_path = folder / METADATA
        if not meta_path.is_file():
            raise BundleError(f"{path}: not a posturescreen bundle (no {METADATA})")
        metadata = read_metadata(meta_path, path)
        models = [_load_fold_model(folder, fold, metadata, path, device)
                  for fold in metadata.folds]
    p = metadata.preprocessing
    prep = Preprocessing(p.input_size, tuple(p.mean), tuple(p.std), p.interpolation)
    return Bundle(path, metadata, models, prep)

