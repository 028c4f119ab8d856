"""Cross-validation folds grouped by subject: no worker's photos on both sides, ever.

Outer folds: StratifiedGroupKFold (stratified by the task label, grouped by subject,
seeded) or leave-one-site-out, and one assignment shared by every task of a study
(`shared_outer_folds`: stratified by the combination of the tasks' labels), so a worker is in
the same fold for every task and whatever a fold fits once (a landmark model) serves every
task. Inner split: one subject-grouped stratified holdout of the training folds, for early
stopping, checkpoint choice and the threshold.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from posturescreen.errors import PostureScreenError


class FoldError(PostureScreenError, ValueError):
    """Folds cannot be built as asked (too few subjects, one class, no site column)."""


def _check_classes(labels: np.ndarray, groups: np.ndarray, n_splits: int, what: str) -> None:
    classes = np.unique(labels)
    if len(classes) < 2:
        raise FoldError(
            f"{what}: only one class present (label {classes.tolist()}); "
            "a task needs positives and negatives"
        )
    for cls in classes:
        n_subjects = len(np.unique(groups[labels == cls]))
        if n_subjects < n_splits:
            raise FoldError(
                f"{what}: only {n_subjects} subject(s) with label {cls}, "
                f"fewer than the {n_splits} splits asked for"
            )


def outer_folds(
    labels: np.ndarray,
    groups: np.ndarray,
    *, n_folds: int,
    seed: int,
    scheme: str = "stratified_group",
    sites: np.ndarray | None = None,
    what: str = "task",
    check_classes: bool = True,
) -> np.ndarray:
    """Fold index (0..k-1) per photo. `labels` may be strata of any kind (strings too);
    `check_classes` asks for enough subjects of each of them."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if scheme == "leave_site_out":
        if sites is None:
            raise FoldError(f"{what}: leave_site_out needs a site column in the manifest")
        sites = np.asarray(sites).astype(str)
        per_subject = {g: set(sites[groups == g]) for g in np.unique(groups)}
        split = [g for g, s in per_subject.items() if len(s) > 1]
        if split:
            raise FoldError(f"{what}: subjects photographed at more than one site: {split[:5]}")
        names = sorted(set(sites))
        if len(names) < 2:
            raise FoldError(f"{what}: leave_site_out needs at least 2 sites, found {names}")
        fold = np.array([names.index(s) for s in sites])
    else:
        if check_classes:
            _check_classes(labels, groups, n_folds, what)
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold = np.full(len(labels), -1)
        with warnings.catch_warnings():  # a rare stratum is spread as evenly as it can be
            warnings.filterwarnings("ignore", message="The least populated class")
            for k, (_, test) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
                fold[test] = k
    assert_disjoint(groups, fold)
    return fold


def shared_outer_folds(
    labels: dict[str, pd.Series], groups: pd.Series, *, n_folds: int, seed: int,
    scheme: str = "stratified_group", sites: pd.Series | None = None,
) -> pd.Series:
    """One fold per photo for every task (index: the photos of any task, in table order):
    grouped by subject, stratified by the combination of the tasks' labels (a single task:
    exactly `outer_folds` of its labels). Every task's every fold must hold both of its
    classes."""
    index = groups.index[groups.index.isin(
        pd.Index([]).append([y.index for y in labels.values()]))]
    if scheme != "leave_site_out":
        for name, y in labels.items():
            _check_classes(y.to_numpy(), groups[y.index].to_numpy(), n_folds, f"task {name!r}")
    strata = pd.Series("", index=index)
    for y in labels.values():
        strata += "|" + y.reindex(index).map(lambda v: "-" if pd.isna(v) else str(int(v)))
    if len(labels) == 1:  # one task: its own labels (the same folds as before sharing)
        strata = next(iter(labels.values())).reindex(index)
    fold = pd.Series(outer_folds(
        strata.to_numpy(), groups[index].to_numpy(), n_folds=n_folds, seed=seed,
        scheme=scheme, sites=sites[index].to_numpy() if sites is not None else None,
        what="the study's tasks", check_classes=False), index=index)
    for name, y in labels.items():
        for k in sorted(fold.unique()):
            classes = set(y[fold[y.index] == k])
            for cls, word in ((1, "positives"), (0, "negatives")):
                if cls not in classes:
                    raise FoldError(
                        f"task {name!r}: fold {k} of the folds the tasks share holds no "
                        f"{word}; use fewer folds (cv.folds) or run this task in a study "
                        "of its own")
    return fold


def inner_split(
    labels: np.ndarray, groups: np.ndarray, *, val_fraction: float, seed: int, what: str = "fold"
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) over the given training photos, grouped by subject."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_splits = max(2, round(1 / val_fraction))
    minority = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    n_splits = min(n_splits, minority)  # fewer, larger splits when subjects are scarce
    _check_classes(labels, groups, max(2, n_splits), f"{what} (inner validation split)")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(cv.split(np.zeros(len(labels)), labels, groups))
    val_mask = np.zeros(len(labels), dtype=bool)
    val_mask[val] = True
    assert_disjoint(groups, val_mask.astype(int))
    return ~val_mask, val_mask


def assert_disjoint(groups: np.ndarray, fold: np.ndarray) -> None:
    """Raise if any subject has photos in more than one fold."""
    groups, fold = np.asarray(groups), np.asarray(fold)
    seen: dict[object, int] = {}
    for g, f in zip(groups, fold, strict=True):
        if seen.setdefault(g, f) != f:
            raise AssertionError(
                f"subject {str(g)!r} appears in folds {seen[g]} and {f}: "
                "folds must be grouped by subject"
            )
