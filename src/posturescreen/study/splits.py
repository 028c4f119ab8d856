"""The split of one (task, fold) that every model of the task shares: the test fold, and the
training folds cut into inner train and inner validation, grouped by subject and seeded per
(task, fold). Disjointness is asserted at run time."""

from __future__ import annotations

import numpy as np

from posturescreen.models.kinds import FoldSplit
from posturescreen.runfolder import Job
from posturescreen.study.folds import assert_disjoint, describe_inner_split, inner_split
from posturescreen.study.prepare import StudyContext


def fold_split(ctx: StudyContext, job: Job) -> FoldSplit:
    """The split every model of (task, fold) shares, its disjointness asserted."""
    cfg, cohort = ctx.cfg, ctx.cohort
    label_col, fold_col = f"label_{job.task}", f"fold_{job.task}"
    in_task = cohort[cohort[label_col].notna()]
    subjects = in_task[cfg.data.subject_column].astype(str).to_numpy()
    labels = in_task[label_col].astype(int).to_numpy()
    is_test = in_task[fold_col].to_numpy() == job.fold
    inner_train, inner_val = inner_split(
        labels[~is_test],
        subjects[~is_test],
        val_fraction=cfg.cv.inner_val_fraction,
        seed=job.split_seed(cfg.seed),
        what=f"{job}",
    )
    idx = in_task.index.to_numpy()
    split = FoldSplit(
        idx[~is_test][inner_train],
        idx[~is_test][inner_val],
        idx[is_test],
        labels[~is_test][inner_train],
        labels[~is_test][inner_val],
        labels[is_test],
    )
    # the disjointness of every split, asserted at run time
    assert_disjoint(subjects, is_test.astype(int))
    all_subjects = cohort[cfg.data.subject_column].astype(str)
    leaked = set(all_subjects[split.val]) & set(all_subjects[split.train])
    if leaked:  # not `assert`: this check must survive python -O
        raise AssertionError(
            f"{job}: subjects in both inner train and validation: {sorted(leaked)[:5]}"
        )
    return split


def describe_split(ctx: StudyContext, split: FoldSplit) -> dict:
    """The inner split as fold.json records it (folds.describe_inner_split): its size
    against cv.inner_val_fraction, its subjects per class, and what falls short."""
    cfg = ctx.cfg
    idx = np.r_[split.train, split.val]
    groups = ctx.cohort.loc[idx, cfg.data.subject_column].astype(str).to_numpy()
    is_val = np.r_[np.zeros(len(split.train), bool), np.ones(len(split.val), bool)]
    return describe_inner_split(np.r_[split.y_train, split.y_val], groups, is_val,
                                val_fraction=cfg.cv.inner_val_fraction,
                                unit=cfg.data.subject_unit)
