"""Exporting a finished study's fold models for one task × model as a bundle (bundle.py
describes the format). CNN bundles carry the fold weights; angle bundles the fold angle
models' numbers; fusion bundles both, plus the fusion weights — and every bundle says how the
person was found, so a new photo is read exactly as the study read its photos."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.config.study import ModelConfig, StudyConfig
from posturescreen.files import OutputError, atomic_write
from posturescreen.models.cnn import sha256_file
from posturescreen.models.kinds import LinearParts, kind_of
from posturescreen.posture.tables import recorded_landmark_source
from posturescreen.screening.bundle import (
    BUNDLE_FORMAT,
    INTENDED_USE,
    METADATA,
    BundleError,
    BundleFold,
    BundleMetadata,
    BundlePose,
    BundlePreprocessing,
    BundleStudy,
    BundleThreshold,
    FoldCalibration,
    OperatingPoint,
)
from posturescreen.stats.metrics import binary_metrics


def _finished_folds(run_dir: Path, task: str, model: str) -> list[tuple[int, Path, dict]]:
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
    return folds


def _landmark_source(run_dir: Path, mcfg: ModelConfig) -> str:
    if not kind_of(mcfg).uses_angles:
        return "none"
    source = recorded_landmark_source(rf.read_table(run_dir, rf.ANGLES)) or "none"
    if source != "estimator":
        raise BundleError(
            f"{run_dir}: the {mcfg.kind} model {mcfg.name!r} was fitted on angles from the "
            "manifest's landmark columns; a new photo has none, so a bundle must measure "
            "angles the way the study did. Rerun the study with --set "
            "pose.landmarks=estimator (into another --out) to export it")
    return source


def _fold_parts(run_dir: Path, cfg: StudyConfig, mcfg: ModelConfig, task: str, k: int,
                job_dir: Path, info: dict, calibration: pd.Series
                ) -> tuple[BundleFold, Path | None, dict | None]:
    """A fold's metadata, the CNN checkpoint to copy (if any) and the CNN's fold.json."""
    kind = kind_of(mcfg)
    weights, cnn_info = None, None
    cnn = kind.weights_of(mcfg)
    if cnn is not None:  # the CNN whose checkpoint (and fold.json) the bundle carries
        cnn_dir = rf.Job(task, cnn, k).directory(run_dir)
        weights = cnn_dir / rf.CHECKPOINT
        cnn_info = info if cnn == mcfg.name else json.loads(
            (cnn_dir / rf.FOLD_JSON).read_text())
    linear = LinearParts()
    if kind.linear_parts:
        linear = LinearParts.from_json(json.loads((job_dir / rf.LINEAR_MODEL).read_text()))
    fold = BundleFold(
        fold=k, calibration=FoldCalibration(slope=float(calibration["slope"]),
                                            intercept=float(calibration["intercept"])),
        file=f"fold{k}.safetensors" if weights else None,
        sha256=sha256_file(weights) if weights else None,
        angles=linear.angles, fusion=linear.fusion,
        threshold=float(calibration["threshold_photo"]),
        best_epoch=(cnn_info or {}).get("best_epoch"))
    return fold, weights, cnn_info


def operating_point(run_dir: Path, cfg: StudyConfig, *, task: str, model: str,
                    threshold: float) -> OperatingPoint:
    """The bundle's rule — each fold model's probability recalibrated on its fold's inner
    validation split, averaged over the folds, positive at or above `threshold` (the mean of
    the folds' photo thresholds) — applied to the study's out-of-fold photos."""
    preds = rf.read_predictions(run_dir / rf.PREDICTIONS, cfg.data.subject_column)
    g = preds[(preds.task == task) & (preds.model == model)]
    m = binary_metrics(g["label"].to_numpy(), g["prob"].to_numpy(),
                       (g["prob"].to_numpy() >= threshold).astype(int))
    how = ("Youden's J (midpoint) on the fold's recalibrated inner-validation probabilities"
           if cfg.threshold.rule == "youden" else f"fixed at {cfg.threshold.value}")
    rule = (f"a photo is positive when the mean over the fold models of their recalibrated "
            f"probabilities (each fold's Platt recalibration fitted on its inner validation "
            f"split) is at least {threshold:.6f}, the mean of the folds' photo thresholds "
            f"({how}). Sen, Spe, PPV, NPV and ACC here are that threshold applied to the "
            "study's out-of-fold photos, each scored by the one fold model that did not "
            "train on it: an out-of-fold approximation of the averaged rule (no photo has "
            "an out-of-fold score from every fold model), and the threshold averages every "
            "fold's, so for a given photo it is not fully nested")
    return OperatingPoint(rule=rule, threshold=threshold, n=len(g),
                          **{k: (None if not np.isfinite(m[k]) else m[k])
                             for k in ("Sen", "Spe", "PPV", "NPV", "ACC")})


def export_bundle(run_dir: Path, *, task: str, model: str, out: Path) -> Path:
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
    mcfg = next((m for m in cfg.models if m.name == model), None)
    if mcfg is None:
        raise BundleError(f"model {model!r} is not in {run_dir} (models: "
                          f"{[m.name for m in cfg.models]})")
    source = _landmark_source(run_dir, mcfg)
    folds = _finished_folds(run_dir, task, model)
    if not (run_dir / rf.METRICS).exists():
        raise BundleError(f"{run_dir}: no {rf.METRICS}; finish the study first")
    calibration = pd.read_csv(run_dir / rf.CALIBRATION)
    calibration = calibration[(calibration.task == task) & (calibration.model == model)]
    calibration = calibration.set_index("fold")
    parts = [_fold_parts(run_dir, cfg, mcfg, task, k, d, info, calibration.loc[k])
             for k, d, info in folds]
    metrics = pd.read_csv(run_dir / rf.METRICS)
    metrics = metrics[(metrics["task"] == task) & (metrics["model"] == model)]
    counts = pd.read_csv(run_dir / rf.CLASS_COUNTS)
    counts = counts[counts["task"] == task]
    run_meta = rf.read_record(run_dir).get("posturescreen_run", {})
    task_cfg = next(t for t in cfg.tasks if t.name == task)
    thresholds = [float(calibration.at[k, "threshold_photo"]) for k, _, _ in folds]
    op = operating_point(run_dir, cfg, task=task, model=model, threshold=float(np.mean(thresholds)))
    cnn_info = parts[0][2]
    metadata = BundleMetadata(
        format=BUNDLE_FORMAT, task=task, model=model, kind=mcfg.kind, cnn=mcfg.cnn,
        pose=BundlePose(crop=cfg.pose.crop and kind_of(mcfg).uses_pixels,
                        crop_margin=cfg.pose.crop_margin,
                        min_visibility=cfg.pose.min_visibility, landmark_source=source,
                        decode_size=rf.decode_size(run_dir)),
        positive=task_cfg.positive, negative=cfg.negative_query(task_cfg),
        intended_use=INTENDED_USE,
        versions={**rf.library_versions(), "trained_with": run_meta.get("versions", {})},
        study=BundleStudy(name=cfg.name, fingerprint=cfg.fingerprint(),
                          data_hash=run_meta.get("data_hash"), seed=cfg.seed,
                          folds=len(folds), cv_scheme=cfg.cv.scheme),
        # the study decoded JPEGs once at one size; doing the same here gives its pixels
        preprocessing=BundlePreprocessing(
            **cnn_info["preprocessing"], decode_size=rf.decode_size(run_dir),
            channels_last=cfg.train.channels_last) if cnn_info else None,
        threshold=BundleThreshold(value=op.threshold, per_fold=thresholds,
                                  rule=cfg.threshold.rule, how=op.rule),
        operating_point=op,
        training_cohort=counts.drop(columns="task").to_dict(orient="records"),
        metrics=metrics.drop(columns=["task", "model"]).to_dict(orient="records"),
        folds=[fold for fold, _, _ in parts])
    try:
        _write(out, metadata, [(fold, weights) for fold, weights, _ in parts])
    except OutputError:
        raise
    except OSError as e:  # a full disk, a read-only folder: the staged copy is gone already
        raise OutputError(e.errno, f"cannot write {out}: {e.strerror or e}") from e
    return out


def _write(out: Path, metadata: BundleMetadata,
           weights: list[tuple[BundleFold, Path | None]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the target, then renamed into place: a bundle appears whole or not at all
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        for fold, path in weights:
            if path is not None:
                shutil.copyfile(path, stage / str(fold.file))
        (stage / METADATA).write_text(metadata.model_dump_json(indent=2))
        if out.suffix == ".zip":
            def write_zip(path: Path) -> None:
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                    for f in sorted(stage.iterdir()):
                        z.write(f, f.name)
            atomic_write(out, write_zip)
        else:
            stage.rename(out)
