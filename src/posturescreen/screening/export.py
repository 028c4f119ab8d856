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
from pydantic import ValidationError

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
from posturescreen.screening.bundle_landmarks import (
    BundleLandmarks,
    LandmarkModelFile,
    model_file,
)
from posturescreen.stats.metrics import youden_text
from posturescreen.study.landmarks import read_plan


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
    if source not in ("estimator", "learned"):
        raise BundleError(
            f"{run_dir}: the {mcfg.kind} model {mcfg.name!r} was fitted on angles from the "
            "manifest's landmark columns; a new photo has none, so a bundle must measure "
            "angles the way the study did. Rerun the study with --set "
            "pose.landmarks=learned (a landmark model learned from those columns) or "
            "estimator, into another --out, to export it")
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
    slope, intercept = float(calibration["slope"]), float(calibration["intercept"])
    try:
        recalibration = FoldCalibration(slope=slope, intercept=intercept)
    except ValidationError as e:  # a Platt fit on a perfectly separated or tiny split
        problem = e.errors()[0]
        raise BundleError(
            f"{run_dir}: fold {k} of {task} / {mcfg.name} recalibrates with slope {slope:.4g} "
            f"and intercept {intercept:.4g}, beyond what a bundle accepts ({problem['loc'][0]}: "
            f"{problem['msg']}): its inner validation split separated the classes perfectly "
            "or was too small; a bundle needs a finite recalibration (more photos, or a "
            "larger cv.inner_val_fraction)") from e
    fold = BundleFold(
        fold=k, calibration=recalibration,
        file=f"fold{k}.safetensors" if weights else None,
        sha256=sha256_file(weights) if weights else None,
        angles=linear.angles, fusion=linear.fusion,
        threshold=float(calibration["threshold_photo"]),
        best_epoch=(cnn_info or {}).get("best_epoch"))
    return fold, weights, cnn_info


RULE_METRICS = ("Sen", "Spe", "PPV", "NPV", "ACC")


def operating_point(run_dir: Path, cfg: StudyConfig, *, task: str, model: str,
                    threshold: float) -> OperatingPoint:
    """The bundle's rules — each fold model's recalibrated probability against that fold's
    own threshold — and their out-of-fold performance: the study's own photo-level
    decisions (each photo by the one fold rule that did not train on it) with the study's
    worker-bootstrap CIs. `threshold`: the mean rule that breaks a tied vote."""
    preds = rf.read_predictions(run_dir / rf.PREDICTIONS, cfg.data.subject_column)
    g = preds[(preds.task == task) & (preds.model == model)]
    metrics = pd.read_csv(run_dir / rf.METRICS)
    rows = metrics[(metrics.task == task) & (metrics.model == model)
                   & (metrics.level == "photo") & (metrics.ci_kind == "bootstrap")
                   ].set_index("metric")
    how = (f"{youden_text(cfg.threshold)}, on its recalibrated inner-validation probabilities"
           if cfg.threshold.rule == "youden" else f"fixed at {cfg.threshold.value}")
    rule = ("each fold model decides by its own rule: its probability, recalibrated on its "
            f"fold's inner validation split, at or above its own threshold ({how}); a photo "
            "is positive when most fold rules say so (a tie: when the mean recalibrated "
            f"probability is at least {threshold:.6f}, the mean threshold). Sen, Spe, PPV, NPV "
            "and ACC are the fold rules' out-of-fold decisions in the study, each photo by "
            "the one fold rule that did not train on it, with worker-bootstrap 95% CIs: "
            "exactly what this bundle cut to that fold gives on those photos. The vote of "
            "all fold rules was not evaluated itself (no study photo has an out-of-fold "
            "decision from every fold)")

    def value(name: str, column: str) -> float | None:
        v = float(rows.at[name, column]) if name in rows.index else float("nan")
        return v if np.isfinite(v) else None

    ci = {k: (value(k, "ci_low"), value(k, "ci_high")) for k in RULE_METRICS}
    return OperatingPoint(rule=rule, threshold=threshold, n=len(g),
                          ci={k: v for k, v in ci.items() if None not in v},
                          **{k: value(k, "estimate") for k in RULE_METRICS})


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
    files = {str(fold.file): weights for fold, weights, _ in parts if weights is not None}
    landmarks, facing = None, "points"
    if source == "learned":  # each fold measures angles with the models its study used
        spec, test, paths, facing = read_plan(run_dir)
        landmarks = BundleLandmarks.describe(spec, [
            LandmarkModelFile(name=n, file=model_file(n), sha256=sha256_file(p))
            for n, p in paths.items()])
        files.update({model_file(n): p for n, p in paths.items()})
        for fold, _, _ in parts:
            fold.landmark_models = test[fold.fold]
    thresholds = [float(calibration.at[k, "threshold_photo"]) for k, _, _ in folds]
    op = operating_point(run_dir, cfg, task=task, model=model, threshold=float(np.mean(thresholds)))
    cnn_info = parts[0][2]
    metadata = BundleMetadata(
        format=BUNDLE_FORMAT, task=task, model=model, kind=mcfg.kind, cnn=mcfg.cnn,
        pose=BundlePose(crop=cfg.pose.crop and kind_of(mcfg).uses_pixels,
                        crop_margin=cfg.pose.crop_margin,
                        min_visibility=cfg.pose.min_visibility, landmark_source=source,
                        decode_size=rf.decode_size(run_dir),
                        facing=facing),
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
        folds=[fold for fold, _, _ in parts], landmarks=landmarks)
    try:
        _write(out, metadata, files)
    except OutputError:
        raise
    except OSError as e:  # a full disk, a read-only folder: the staged copy is gone already
        raise OutputError(e.errno, f"cannot write {out}: {e.strerror or e}") from e
    return out


def _write(out: Path, metadata: BundleMetadata, files: dict[str, Path]) -> None:
    """The bundle: metadata.json and `files` (name in the bundle -> file to copy)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the target, then renamed into place: a bundle appears whole or not at all
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        for name, path in files.items():
            shutil.copyfile(path, stage / name)
        (stage / METADATA).write_text(metadata.model_dump_json(indent=2))
        if out.suffix == ".zip":
            def write_zip(path: Path) -> None:
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                    for f in sorted(stage.iterdir()):
                        z.write(f, f.name)
            atomic_write(out, write_zip)
        else:
            stage.rename(out)
