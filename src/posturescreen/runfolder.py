"""The run folder: the contract every stage shares. This module is the README's run-folder
listing as code — every file name, the job directories, loading, and the check that a
folder belongs to this config and these data. It imports no stage; every stage imports it.

```
runs/<name>/
  config.yaml            resolved config + versions, config fingerprint, data hash
  cohort.csv             validated manifest + label_<task>, fold_<task> per photo
  class_counts.csv       subjects and photos per class per task
  skipped_images.csv     photos left out: unreadable (--skip-bad-images) or repeated (keep_first)
  pose.csv, angles.csv   estimator points and boxes; posture angles (landmark source named)
  no_person.csv          photos where no person was found (kept: whole scene, NaN angles)
  landmarks/             learned landmark models and the points each fold's models see
  landmark_points.csv    out-of-fold learned points (each photo by the models of its fold)
  landmark_agreement.csv, landmark_errors.csv   those angles and points vs the annotations
  annotation_qc.json     the annotation QC summary found beside the manifest (`annotate --export`)
  <task>/<model>/fold<k>/
      checkpoint.safetensors, train_log.csv, val_predictions.csv, fold.json,
      predictions.csv    written last = job done
  predictions.csv        out-of-fold photos: raw and recalibrated probability, decision
  worker_predictions.csv the same per worker (photos aggregated)
  calibration.csv        per fold: recalibration chosen (and why), photo and worker thresholds
  calibration_summary.csv  calibration-in-the-large, slope, Brier with CIs, raw and recalibrated
  worker_level.csv       per task: workers whose photos hold both classes; worker level ok/refused
  metrics.csv            per task × model × level (worker, photo) × metric, both CI kinds
  auc_estimands.csv      which pairs each AUC uses (within fold, between workers), their share
  subgroups.csv, misclassified.csv   performance by site/subject/person found; wrong photos
  reference_standard.csv each angle's AUC against each task's label (incorporation bias)
  metrics_per_fold.csv, auc_pooling.csv, comparisons.csv, metrics.md
  cams/                  after `explain`
  sensitivity/<override>/  each sensitivity analysis, a run folder of its own
  report.html, results.json
```
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from posturescreen import __version__
from posturescreen.config.names import safe_name
from posturescreen.config.study import StudyConfig, results_fields
from posturescreen.errors import PostureScreenError

__all__ = ["safe_name"]  # task and model names as folder names (config.names)

CONFIG = "config.yaml"
COHORT = "cohort.csv"
CLASS_COUNTS = "class_counts.csv"
SKIPPED_IMAGES = "skipped_images.csv"
POSE = "pose.csv"  # the pose estimator's points and boxes per photo
ANGLES = "angles.csv"  # posture angles per photo, and where their landmarks came from
NO_PERSON = "no_person.csv"  # photos where the estimator found no person
LANDMARKS = "landmarks"  # learned landmarks: models/<name>/, fold<k>/ (study/landmarks.py)
LANDMARK_POINTS = "landmark_points.csv"  # out-of-fold learned points per photo
LANDMARK_AGREEMENT = "landmark_agreement.csv"  # their angles vs the annotations' (and the
# estimator's), with ICC CIs over workers
LANDMARK_ERRORS = "landmark_errors.csv"  # their points vs the annotations: pixels, PCK
ANNOTATION_QC = "annotation_qc.json"  # copied from beside the manifest (annotate --export)
PREDICTIONS = "predictions.csv"  # run level (all jobs) and job level (its test fold)
WORKER_PREDICTIONS = "worker_predictions.csv"  # a worker's photos aggregated, per task × model
CALIBRATION = "calibration.csv"  # per fold: Platt recalibration and thresholds (both levels)
AUC_POOLING = "auc_pooling.csv"  # raw, recalibrated and fold-stratified pooled AUCs
COMPARISONS = "comparisons.csv"  # DeLong (clustered at photo level), Holm-adjusted
CALIBRATION_SUMMARY = "calibration_summary.csv"  # CITL, slope, Brier with CIs, before/after
WORKER_LEVEL = "worker_level.csv"  # per task: label agreement within workers; ok or refused
AUC_ESTIMANDS = "auc_estimands.csv"  # which pairs each AUC uses, with CIs and pair shares
SUBGROUPS = "subgroups.csv"  # performance by site, subject group, person found
MISCLASSIFIED = "misclassified.csv"  # photos decided wrongly, with probability and threshold
REFERENCE_STANDARD = "reference_standard.csv"  # single-angle AUCs against each task's label
METRICS = "metrics.csv"
METRICS_PER_FOLD = "metrics_per_fold.csv"
METRICS_MD = "metrics.md"
REPORT_HTML = "report.html"
RESULTS_JSON = "results.json"
CAMS = "cams"
SENSITIVITY = "sensitivity"  # <override>/ : a sensitivity analysis's own run folder
# per job
CHECKPOINT = "checkpoint.safetensors"  # a CNN's weights
LINEAR_MODEL = "linear_model.json"  # an angle or fusion model's coefficients
TRAIN_LOG = "train_log.csv"
VAL_PREDICTIONS = "val_predictions.csv"
FOLD_JSON = "fold.json"


class RunFolderError(PostureScreenError):
    """A folder that cannot be used as this study's run folder."""


class RunFolderConflict(RunFolderError):
    """The output folder holds a study made with another config or other data."""


class NotARunFolder(RunFolderError):
    """The folder is not (yet) a posturescreen run folder."""


@dataclass(frozen=True)
class Job:
    """One (task, model, outer fold) of the study grid."""

    task: str
    model: str
    fold: int

    def directory(self, run_dir: Path) -> Path:
        return Path(run_dir) / safe_name(self.task) / safe_name(self.model) / f"fold{self.fold}"

    def is_done(self, run_dir: Path) -> bool:
        return (self.directory(run_dir) / PREDICTIONS).exists()

    def seed(self, base: int) -> int:
        """The job's own seed: model initialisation, batch order, augmentation."""
        digest = hashlib.sha256(f"{base}/{self.task}/{self.model}/{self.fold}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def split_seed(self, base: int) -> int:
        """The inner train/validation split's seed: one per (task, fold), so every model of a
        task trains and validates on the same photos (paired comparisons, fusion)."""
        digest = hashlib.sha256(f"{base}/{self.task}/split/{self.fold}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def __str__(self) -> str:
        return f"{self.task} / {self.model} / fold {self.fold}"


def model_dir(run_dir: Path, task: str, model: str) -> Path:
    return Path(run_dir) / safe_name(task) / safe_name(model)


def fold_numbers(run_dir: Path, task: str, model: str) -> list[int]:
    """The outer folds that have a job directory for (task, model), in order."""
    found = []
    for p in model_dir(run_dir, task, model).glob("fold*"):
        if p.is_dir() and p.name[4:].isdigit():
            found.append(int(p.name[4:]))
    return sorted(found)


def cam_dir(run_dir: Path, task: str | None = None, model: str | None = None) -> Path:
    d = Path(run_dir) / CAMS
    if task is not None:
        d = d / safe_name(task)
    if model is not None:
        d = d / safe_name(model)
    return d


def sensitivity_dir(run_dir: Path, override: str) -> Path:
    """Where a sensitivity analysis (one override of the study) keeps its own run folder."""
    return Path(run_dir) / SENSITIVITY / safe_name(override)


def library_versions() -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "posturescreen": __version__,
    }
    for pkg in ("torch", "torchvision", "timm", "kornia", "numpy", "pandas", "scikit-learn",
                "scipy", "pillow", "grad-cam"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def source_revision() -> dict[str, str | bool | None]:
    """The git commit of the posturescreen source running, when it runs from a git checkout
    (None otherwise, e.g. an installed wheel), and whether tracked files were changed."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head or None, "git_dirty": bool(dirty)}


def config_record(cfg: StudyConfig, data_hash: str, decode_size: int | None = None) -> dict:
    """What config.yaml holds: the resolved config under a header that identifies the run
    (decode_size: the JPEG draft size photos were decoded at, for explain and export)."""
    return {
        "posturescreen_run": {
            "fingerprint": cfg.fingerprint(),
            "data_hash": data_hash,
            "decode_size": decode_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions(),
            "code": {"posturescreen": __version__, **source_revision()},
        },
        **cfg.model_dump(mode="json"),
    }


def read_record(run_dir: Path) -> dict:
    """config.yaml as a mapping (the run header under `posturescreen_run`)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise NotARunFolder(f"{run_dir} is not a posturescreen run folder (no {CONFIG})")
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path} is not a readable posturescreen config ({e})") from e
    if not isinstance(record, dict):
        raise RunFolderError(f"{path} is not a posturescreen config (not a mapping)")
    return record


def check_run_folder(run_dir: Path, cfg: StudyConfig, data_hash: str | None) -> None:
    """Refuse a folder made with another config (or, given data_hash, other data)."""
    if not (Path(run_dir) / CONFIG).exists():
        return
    try:
        old = read_record(run_dir)
    except RunFolderError as e:
        raise RunFolderConflict(f"{e}; use another --out") from e
    meta = old.get("posturescreen_run")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("fingerprint") != cfg.fingerprint():
        diffs = _diff_keys(
            results_fields({k: v for k, v in old.items() if k != "posturescreen_run"}),
            results_fields(cfg.model_dump(mode="json")))
        raise RunFolderConflict(
            f"{run_dir} holds a study made with a different config (differs in: "
            f"{', '.join(diffs[:8]) or 'unknown keys'}). Results are never mixed: choose "
            "another --out, or delete that folder to start over."
        )
    if data_hash is not None and meta.get("data_hash") != data_hash:
        raise RunFolderConflict(
            f"{run_dir} holds a study made on different data (manifest or photos changed). "
            "Results are never mixed: choose another --out, or delete that folder."
        )


def check_training_precision(run_dir: Path, done: list[Job], resolved: str) -> None:
    """Refuse to finish a run in another training precision than its done jobs used (e.g.
    `precision: auto` resolving to bf16 here, fp32 where the run began)."""
    for job in done:
        path = job.directory(run_dir) / FOLD_JSON
        try:
            used = json.loads(path.read_text()).get("training_precision")
        except (OSError, ValueError):
            continue
        if used and used != resolved:
            raise RunFolderConflict(
                f"{run_dir}: {job} trained in {used}, and train.precision would train the "
                f"rest in {resolved} here. Results are never mixed: add --set "
                f"train.precision={used} to finish the run as it began, or choose another "
                "--out.")


def _diff_keys(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [prefix]


def read_predictions(path: Path, subject_column: str) -> pd.DataFrame:
    """A predictions CSV with subject ids kept as text (`001` stays `001`)."""
    return pd.read_csv(path, dtype={"fold": int, subject_column: str, "image": str},
                       keep_default_na=False, na_values=[""])


def load_run(run_dir: Path) -> tuple[StudyConfig, pd.DataFrame]:
    """The config and cohort of a finished (or partly finished) run folder."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    record.pop("posturescreen_run", None)
    try:
        cfg = StudyConfig.model_validate(record)
    except ValidationError as e:
        raise RunFolderError(f"{run_dir / CONFIG} is not a valid study config "
                             f"({e.error_count()} problem(s), e.g. {e.errors()[0]['msg']})") from e
    path = run_dir / COHORT
    if not path.is_file():
        raise NotARunFolder(f"{run_dir} has no {COHORT}: the study never got past its checks")
    cohort = pd.read_csv(path, keep_default_na=False, na_values=[""],
                         dtype={cfg.data.subject_column: str, cfg.data.image_column: str})
    return cfg, cohort


def decode_size(run_dir: Path) -> int | None:
    """The JPEG draft size the study decoded its photos at (None for runs of earlier
    versions, which decoded at their largest input size)."""
    meta = read_record(run_dir).get("posturescreen_run") or {}
    size = meta.get("decode_size") if isinstance(meta, dict) else None
    return int(size) if isinstance(size, int) else None


def read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    """One of the run folder's per-photo tables (pose, angles), or None when absent."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"image": str,
                                                                           "sha256": str})
