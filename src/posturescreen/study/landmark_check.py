"""`posturescreen agreement --source learned`: how well landmark models learned from a
manifest's own annotations place its points, out-of-fold, before any study is run — the
same cross-fitted models, folds and tables a study with `pose.landmarks: learned` makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.model_selection import GroupKFold

from posturescreen.config.study import ConfigError, StudyConfig
from posturescreen.data.decode import decode_photos
from posturescreen.data.manifest import load_manifest
from posturescreen.posture.estimator import POSE_DRAFT, PoseHook
from posturescreen.posture.landmark_inputs import angles_from_points, points_from_columns
from posturescreen.posture.tables import PoseRecorder, pose_table
from posturescreen.progress import progress_bar
from posturescreen.study.folds import FoldError, shared_outer_folds
from posturescreen.study.landmarks import agreement_tables, crossfit_landmarks, out_of_fold
from posturescreen.study.tasks import all_task_labels


def agreement_folds(table: pd.DataFrame, cfg: StudyConfig) -> tuple[np.ndarray, str]:
    """The study's own outer folds when the config's tasks can be read off the manifest;
    else folds grouped by subject alone. Returns them and how they were made."""
    groups = table[cfg.data.subject_column].astype(str)
    try:
        labels = all_task_labels(table, cfg)
        fold = shared_outer_folds(labels, groups, n_folds=cfg.cv.folds, seed=cfg.seed,
                                  scheme=cfg.cv.scheme)
        return fold.reindex(table.index).fillna(-1).to_numpy(dtype=int), "the study's folds"
    except (ConfigError, FoldError, KeyError):
        fold = np.full(len(table), -1)
        for k, (_, test) in enumerate(GroupKFold(n_splits=cfg.cv.folds).split(
                table, groups=groups)):
            fold[test] = k
        return fold, f"{cfg.cv.folds} folds grouped by {cfg.data.subject_column}"


def learned_agreement(manifest: Path, cfg: StudyConfig, *, out: Path,
                      console: Console | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """Train each fold's landmark model on the other folds' annotations (under out/
    landmarks; the study's models of the same name, without the pair models only its angle
    models need) and return the angle agreement (learned and estimator), the point errors,
    the hand and learned angles per photo (index: manifest row), and how the folds were
    made."""
    console = console or Console(stderr=True)
    table = load_manifest(manifest, cfg.data, required_labels=False).table
    recorder = PoseRecorder()
    with progress_bar(console) as progress:
        bar = progress.add_task("finding the persons", total=len(table))
        decode_photos([Path(p) for p in table["image_path"]], {},
                      hook=PoseHook(crop=True, margin=cfg.pose.crop_margin),
                      draft_size=POSE_DRAFT, workers=cfg.data.decode_workers,
                      progress=lambda n: progress.advance(bar, n), collect=recorder.record)
    pose = pose_table(table, cfg.data.image_column, recorder)
    fold, how = agreement_folds(table, cfg)
    per_fold, names = crossfit_landmarks(table, pose, fold, cfg=cfg, out=out / "landmarks",
                                         decode_size=POSE_DRAFT, console=console,
                                         test_only=True)
    oof = out_of_fold(per_fold)
    angles, errors = agreement_tables(table, pose, oof, names=names, cfg=cfg)
    rows = oof["row"].to_numpy()
    hand = angles_from_points(points_from_columns(table.set_index("row").loc[rows], names),
                              names)
    learned = angles_from_points(oof.set_index("row"), names)
    return angles, errors, hand, learned, how
