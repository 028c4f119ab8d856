"""The learned landmarks of a study (`pose.landmarks: learned`): landmark models trained on
the manifest's annotations, cross-fitted so that no angle an outer fold's angle or fusion
model sees — for its test photos or its training photos — comes from a model that saw the
annotations of that fold's test workers, or of the photo itself.

With K outer folds (shared by every task, study/folds.py):
- test photos of fold k: the model trained on the annotated photos of every other fold
  (`without_k`, the one a bundle carries for fold k, as a CNN bundle carries fold k's CNN);
- training photos of fold k: the angle and fusion models fit and choose thresholds on them,
  so their points must be as out-of-sample as a new photo's. With K ≥ 3, a training photo
  in fold j gets the model trained on neither fold j nor fold k (`without_j_k`, shared by
  folds j and k); with K = 2 each fold's training photos are halved by worker and each half
  scored by a model trained on the other.
K + K(K−1)/2 models in all (10 for 4 folds). Models are written under
landmarks/models/<name>/ (points.csv last: its presence marks the model done, so a killed
study resumes); each fold's points under landmarks/fold<k>/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.model_selection import GroupKFold

from posturescreen import runfolder as rf
from posturescreen.config.pose import LandmarkModelConfig
from posturescreen.config.study import StudyConfig
from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.models.landmark_training import fit_landmarks
from posturescreen.models.landmarks import LandmarkSpec, load_landmark_net, predict_points
from posturescreen.models.weights_file import atomic_write_safetensors
from posturescreen.posture.agreement import estimator_angles, hand_angles
from posturescreen.posture.estimator import POINTS, POSE_DRAFT
from posturescreen.posture.landmark_agreement import angle_agreement, point_errors
from posturescreen.posture.landmark_inputs import (
    FACING_COLUMN,
    angles_from_points,
    annotated_points,
    photo_points,
    points_from_columns,
    points_table,
    read_landmark_inputs,
)
from posturescreen.posture.tables import (
    annotated_names,
    person_boxes,
    pose_facing,
    pose_points,
)
from posturescreen.progress import progress_bar
from posturescreen.study.prepare import StudyContext

PLAN_FILE = "plan.json"  # the spec, and which models each outer fold's test photos average
MODEL_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
POINTS_FILE = "points.csv"  # a model's predictions (written last), a fold's points
TRAIN_LOG = "train_log.csv"
LEARNED_WITH_PERSON = "learned, person found"  # agreement rows on the photos a bundle scores


class LandmarkError(PostureScreenError):
    """Learned landmarks cannot be trained as configured (too few annotations, ...)."""


@dataclass
class CrossFit:
    """Which model trains on which photos, and which model's points each fold uses."""

    train: dict[str, np.ndarray]  # model name -> positions of the photos it trains on
    test: dict[int, list[str]] = field(default_factory=dict)  # fold -> models averaged
    held_out: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    # fold k -> {model: positions of fold k's training photos it scores}

    def predicts(self, name: str, fold: np.ndarray) -> np.ndarray:
        """Positions of every photo the model scores for some fold."""
        serve = [np.flatnonzero(fold == k) for k, models in self.test.items() if name in models]
        serve += [idx[n] for idx in self.held_out.values() for n in idx if n == name]
        return np.unique(np.concatenate(serve)) if serve else np.zeros(0, dtype=int)


def crossfit_plan(fold: np.ndarray, groups: np.ndarray, *, test_only: bool = False
                  ) -> CrossFit:
    """The cross-fit of the module docstring over photo positions (fold -1: in no task);
    `test_only`: only the models of the test photos (out-of-fold points, no angle models)."""
    folds = sorted(int(k) for k in np.unique(fold[fold >= 0]))
    plan = CrossFit(train={})
    in_study = fold >= 0
    for k in folds:
        plan.train[f"without_{k}"] = np.flatnonzero(in_study & (fold != k))
        plan.test[k] = [f"without_{k}"]
        plan.held_out[k] = {}
    if test_only:
        return plan
    if len(folds) >= 3:
        for a, b in ((a, b) for a in folds for b in folds if a < b):
            name = f"without_{a}_{b}"
            plan.train[name] = np.flatnonzero(in_study & (fold != a) & (fold != b))
            plan.held_out[a][name] = np.flatnonzero(fold == b)
            plan.held_out[b][name] = np.flatnonzero(fold == a)
        return plan
    for k in folds:
        training = np.flatnonzero(in_study & (fold != k))
        halves = GroupKFold(n_splits=2).split(training, groups=groups[training])
        for h, (fit, held) in enumerate(halves):
            name = f"fold{k}_part{h}"
            plan.train[name] = training[fit]
            plan.held_out[k][name] = training[held]
    return plan


def read_plan(run_dir: Path) -> tuple[LandmarkSpec, dict[int, list[str]], dict[str, Path],
                                      Literal["estimator", "points"]]:
    """A finished study's landmark spec, each fold's test models, their weights files, and
    which way it read its learned points as facing: as the pose estimator saw the person, or
    (studies before that rule) as the points give."""
    out = Path(run_dir) / rf.LANDMARKS
    record = json.loads((out / PLAN_FILE).read_text())
    test = {int(k): list(v) for k, v in record["test"].items()}
    files = {n: out / "models" / n / MODEL_FILE for names in test.values() for n in names}
    facing = "estimator" if record.get("facing") == "estimator" else "points"
    return LandmarkSpec.from_dict(record["spec"]), test, files, facing


def _seed(base: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{base}/landmarks/{name}".encode()).digest()[:4],
                          "little")


@dataclass
class LandmarkData:
    """A study's landmark inputs, annotations and folds, in cohort order."""

    rows: np.ndarray  # manifest row per photo
    images: np.ndarray  # uint8 (N, 3, S, S)
    frames: list
    points: np.ndarray  # (N, P, 2) annotated points in input pixels, NaN if left out
    fold: np.ndarray  # shared outer fold per photo (-1: in no task)
    groups: np.ndarray  # subject ids


def shared_fold(cohort: pd.DataFrame, task_names: list[str]) -> np.ndarray:
    """The outer fold of each cohort photo (the tasks share them; -1: in no task)."""
    fold = pd.Series(-1, index=cohort.index)
    for t in task_names:
        col = cohort[f"fold_{t}"]
        fold = fold.where(col.isna() | (fold >= 0), col.fillna(-1).astype(int))
    return fold.to_numpy(dtype=int)


def landmark_data(cohort: pd.DataFrame, pose: pd.DataFrame | None, *, names: list[str],
                  spec: LandmarkSpec, fold: np.ndarray, subject_column: str,
                  decode_size: int, progress: Callable[[int], None] | None = None
                  ) -> LandmarkData:
    boxes = person_boxes(pose) if pose is not None else {}
    rows = cohort["row"].to_numpy(dtype=int)
    images, frames = read_landmark_inputs(
        [Path(p) for p in cohort["image_path"]], [boxes.get(int(r)) for r in rows],
        spec.input_size, decode_size=decode_size, progress=progress)
    return LandmarkData(rows, images, frames, annotated_points(cohort, names, frames), fold,
                        cohort[subject_column].astype(str).to_numpy())


def _train_one(out: Path, name: str, positions: np.ndarray, serve: np.ndarray,
               data: LandmarkData, *, spec: LandmarkSpec, cfg: LandmarkModelConfig,
               seed: int, precision: str, threads: int | None) -> pd.DataFrame:
    """Train one model (or read it back when done) and return its points for `serve`."""
    folder = out / "models" / name
    if (folder / POINTS_FILE).is_file():
        return pd.read_csv(folder / POINTS_FILE)
    annotated = positions[np.isfinite(data.points[positions]).all(-1).any(-1)]
    if len(annotated) < cfg.min_photos:
        raise LandmarkError(
            f"landmark model {name}: {len(annotated)} annotated training photo(s), fewer than "
            f"pose.learned.min_photos = {cfg.min_photos}; annotate more photos, or use "
            "pose.landmarks: estimator")
    fit = fit_landmarks(data.images[annotated], data.points[annotated], spec=spec,
                        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                        seed=_seed(seed, name), pretrained=cfg.pretrained, precision=precision,
                        threads=threads)
    from_net = _predict(fit.state_dict, spec, data, serve)
    atomic_write_safetensors(folder / MODEL_FILE, fit.state_dict)
    atomic_write_text(folder / SPEC_FILE, json.dumps(
        {**spec.to_dict(), "trained_on": int(len(annotated)), "weights": fit.weights.__dict__,
         "training_precision": fit.precision}, indent=2))
    atomic_write_csv(folder / TRAIN_LOG, fit.history)
    atomic_write_csv(folder / POINTS_FILE, from_net)
    return from_net


def _predict(state: dict, spec: LandmarkSpec, data: LandmarkData,
             serve: np.ndarray) -> pd.DataFrame:
    pts, conf = predict_points(load_landmark_net(spec, state), data.images[serve])
    photo = photo_points(pts, [data.frames[i] for i in serve])
    return points_table(data.rows[serve], spec.names, photo, confidence=conf)


def _mean_points(tables: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """The mean of several models' points (and confidences) per photo."""
    both = pd.concat(tables).groupby("row", sort=False)
    return both[[f"{n}_{c}" for n in names for c in ("x", "y", "conf")]].mean().reset_index()


def fold_points(plan: CrossFit, k: int, predictions: dict[str, pd.DataFrame], *,
                data: LandmarkData, names: list[str]) -> pd.DataFrame:
    """Every photo's points as outer fold k's models see them: its test photos from the
    mean of its test models, each training photo from the model that did not train on it."""
    test_rows = set(data.rows[data.fold == k])
    test = _mean_points([predictions[m][predictions[m]["row"].isin(test_rows)]
                         for m in plan.test[k]], names)
    parts = [test.assign(role="test", model="+".join(plan.test[k]))]
    for name, positions in plan.held_out[k].items():
        rows = set(data.rows[positions])
        parts.append(predictions[name][predictions[name]["row"].isin(rows)].assign(
            role="train", model=name))
    return pd.concat(parts, ignore_index=True).sort_values("row", kind="stable")


def crossfit_landmarks(cohort: pd.DataFrame, pose: pd.DataFrame | None, fold: np.ndarray,
                       *, cfg: StudyConfig, out: Path, decode_size: int,
                       console: Console, test_only: bool = False
                       ) -> tuple[dict[int, pd.DataFrame], list[str]]:
    """Train (or resume) the cross-fitted landmark models of photos in `fold` (per photo of
    `cohort`; -1: none) under `out`; returns per outer fold every photo's points as its
    models see them (column `role`: test or train, `test_only`: test), and the landmarks'
    names."""
    names = annotated_names(cohort)
    if not names:
        raise LandmarkError(f"{cfg.data.manifest}: learned landmarks need annotations, and "
                            "the manifest has no <name>_x, <name>_y columns with points")
    learned = cfg.pose.learned
    spec = LandmarkSpec.for_backbone(tuple(names), learned.backbone, learned.input_size,
                                     frozen_blocks=learned.frozen_blocks)
    with progress_bar(console, elapsed=True) as progress:
        bar = progress.add_task("cutting photos for the landmark models", total=len(fold))
        data = landmark_data(cohort, pose, names=names, spec=spec, fold=fold,
                             subject_column=cfg.data.subject_column, decode_size=decode_size,
                             progress=lambda n: progress.advance(bar, n))
        plan = crossfit_plan(fold, data.groups, test_only=test_only)
        bar = progress.add_task(f"landmark models ({', '.join(names)})", total=len(plan.train))
        predictions = {}
        for name, positions in plan.train.items():
            predictions[name] = _train_one(
                out, name, positions, plan.predicts(name, fold), data, spec=spec,
                cfg=learned, seed=cfg.seed, precision=cfg.train.precision,
                threads=cfg.train.threads)
            progress.advance(bar)
    # the estimator's facing (NaN where it found no person: the points' own)
    faces = (pose_facing(pose, cfg.pose.min_visibility) if pose is not None
             else pd.Series(dtype=float))
    atomic_write_text(out / PLAN_FILE, json.dumps(
        {"spec": spec.to_dict(), "test": {str(k): v for k, v in plan.test.items()},
         "facing": "estimator" if pose is not None else "points"}, indent=2))
    per_fold = {}
    for k in sorted(plan.test):
        points = fold_points(plan, k, predictions, data=data, names=names)
        per_fold[k] = points.assign(**{FACING_COLUMN: faces.reindex(points["row"]).to_numpy()})
        atomic_write_csv(out / f"fold{k}" / POINTS_FILE, per_fold[k])
    return per_fold, names


def out_of_fold(per_fold: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Each photo's points from the models of the fold it is a test photo of."""
    return pd.concat([p[p.role == "test"].assign(fold=k) for k, p in per_fold.items()],
                     ignore_index=True).sort_values("row", kind="stable")


def learn_landmarks(ctx: StudyContext, console: Console | None = None
                    ) -> dict[int, pd.DataFrame]:
    """Train (or resume) the study's landmark models; returns per outer fold the angles its
    models see (indexed like the cohort) and writes landmarks/, landmark_points.csv (the
    out-of-fold points), angles.csv (the out-of-fold angles) and their agreement with the
    annotations."""
    console = console or Console(stderr=True)
    cohort, cfg, run_dir = ctx.cohort, ctx.cfg, Path(ctx.run_dir)
    fold = shared_fold(cohort, [t.name for t in cfg.tasks])
    per_fold, names = crossfit_landmarks(
        cohort, ctx.pose, fold, cfg=cfg, out=run_dir / rf.LANDMARKS,
        decode_size=rf.decode_size(run_dir) or POSE_DRAFT, console=console)
    by_row = pd.Series(cohort.index, index=cohort["row"].to_numpy())
    fold_angles = {}
    for k, points in per_fold.items():
        angles = angles_from_points(points, names)
        angles.index = by_row[points["row"].to_numpy()].to_numpy()
        fold_angles[k] = angles.reindex(cohort.index)
    oof_points = out_of_fold(per_fold)
    atomic_write_csv(run_dir / rf.LANDMARK_POINTS, oof_points)
    table = pd.DataFrame({"row": oof_points["row"].to_numpy(),
                          "image": cohort.set_index("row").loc[
                              oof_points["row"], cfg.data.image_column].to_numpy(),
                          "landmark_source": "learned", "landmarks_found": True})
    atomic_write_csv(run_dir / rf.ANGLES, pd.concat(
        [table, angles_from_points(oof_points, names).reset_index(drop=True)], axis=1))
    angle_table, errors = agreement_tables(cohort, ctx.pose, oof_points, names=names, cfg=cfg)
    atomic_write_csv(run_dir / rf.LANDMARK_AGREEMENT, angle_table)
    atomic_write_csv(run_dir / rf.LANDMARK_ERRORS, errors)
    return fold_angles


def agreement_tables(cohort: pd.DataFrame, pose: pd.DataFrame | None,
                     oof_points: pd.DataFrame, *, names: list[str], cfg: StudyConfig
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The out-of-fold learned points (and the pose estimator's, side by side) against the
    manifest's annotations: per angle (landmark_agreement.csv) and per point
    (landmark_errors.csv)."""
    rows = oof_points["row"].to_numpy()
    cohort = cohort.set_index("row", drop=False).loc[rows]
    hand = points_from_columns(cohort, names)
    learned = oof_points.set_index("row")
    groups = cohort[cfg.data.subject_column].astype(str)
    pose = pose.set_index("row").loc[rows] if pose is not None else None
    # the person's height: the estimator's person box (no person found: not counted)
    heights = ((pose["person_y1"] - pose["person_y0"]).where(pose["person_found"].astype(bool))
               if pose is not None else pd.Series(np.nan, index=rows))
    by_hand, by_model = angles_from_points(hand, names), angles_from_points(learned, names)
    tables = [angle_agreement(by_hand, by_model, groups, source="learned",
                              seed=cfg.seed)]
    errors = [point_errors(hand, learned, names, heights=heights).assign(source="learned")]
    if pose is not None:
        # what a bundle measures (it gives no score without a person), on the photos of the
        # estimator's rows: like for like
        found = pose["person_found"].astype(bool).to_numpy()
        if found.any() and not found.all():
            tables.append(angle_agreement(by_hand[found], by_model[found],
                                          groups[found], source=LEARNED_WITH_PERSON,
                                          seed=cfg.seed))
        estimator = estimator_angles(pose.reset_index(), cfg.pose.min_visibility).loc[rows]
        tables.append(angle_agreement(hand_angles(cohort), estimator, groups,
                                      source="estimator", seed=cfg.seed))
        common = [n for n in names if n in POINTS]
        if common:
            seen = pose_points(pose, common, cfg.pose.min_visibility)
            errors.append(point_errors(hand, seen, common, heights=heights).assign(
                source="estimator"))
    return pd.concat(tables, ignore_index=True), pd.concat(errors, ignore_index=True)
