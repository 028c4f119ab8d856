"""Cross-validation folds grouped by subject: no worker's photos on both sides, ever.

Outer folds: StratifiedGroupKFold (stratified by the task label, grouped by subject,
seeded) or leave-one-site-out. Inner split: one subject-grouped stratified holdout of the
training folds, for early stopping, checkpoint choice and the threshold.
"""

from __future__ import annotations

import numpy as np
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
) -> np.ndarray:
    """Fold index (0..k-1) per photo."""
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
        _check_classes(labels, groups, n_folds, what)
        cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold = np.full(len(labels), -1)
        for k, (_, test) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
            fold[test] = k
    assert_disjoint(groups, fold)
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
