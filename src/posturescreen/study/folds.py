"""Cross-validation folds grouped by subject: no worker's photos on both sides, ever.

Outer folds: StratifiedGroupKFold (stratified by the task label, grouped by subject,
seeded) or leave-one-site-out, and one assignment shared by every task of a study
(`shared_outer_folds`: stratified by the combination of the tasks' labels), so a worker is in
the same fold for every task and whatever a fold fits once (a landmark model) serves every
task. Inner split: one subject-grouped holdout of the training folds, for early stopping,
checkpoint choice, recalibration and the threshold, chosen to hold `val_fraction` of the
training photos with the class balance of the whole, at least two subjects of each class
(when the training folds have three or more) and never a subject too big for it when smaller
ones exist; `describe_inner_split` says how near it came, and why not.
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


INNER_DRAWS = 200  # random orders of the subjects tried per pass
OVERSHOOT = 1.25  # no subject may push the split past this multiple of its target size
SHARE_TOLERANCE = 1.5  # a split outside [target / 1.5, target · 1.5] is reported


def _needs(groups_with_class: int) -> tuple[int, int]:
    """(validation, training) subjects of a class asked for, from the number there are."""
    return (2 if groups_with_class >= 3 else 1), (2 if groups_with_class >= 4 else 1)


def _choose_val_groups(size: np.ndarray, n_pos: np.ndarray, *, target: float,
                       seed: int) -> np.ndarray:
    """Indices of the subjects held out: over seeded random orders, subjects are added while
    they fit under OVERSHOOT · target (in a second pass, if that cannot meet the class
    requirements, any subject may be added); the best split meets the requirements
    (`_needs`) and then minimises |size − target| / target + 2·|prevalence − overall| +
    ¼·(the largest subject's share of it): near the size asked, the class balance of the
    whole, spread over several subjects."""
    has_pos, has_neg = n_pos > 0, (size - n_pos) > 0
    (vp, tp), (vn, tn) = _needs(int(has_pos.sum())), _needs(int(has_neg.sum()))
    total, prevalence = size.sum(), n_pos.sum() / size.sum()
    rng = np.random.default_rng(seed)
    best_key, best = None, np.zeros(0, dtype=int)
    for relaxed in (False, True):
        for _ in range(INNER_DRAWS):
            chosen, s, p, cp, cn, largest = [], 0, 0, 0, 0, 0
            for g in rng.permutation(len(size)):
                if not relaxed and s + size[g] > max(OVERSHOOT * target, 1):
                    continue
                chosen.append(g)
                s, p, largest = s + size[g], p + n_pos[g], max(largest, size[g])
                cp, cn = cp + has_pos[g], cn + has_neg[g]
                meets = (cp >= vp and cn >= vn and has_pos.sum() - cp >= tp
                         and has_neg.sum() - cn >= tn and s < total)
                key = (not meets, abs(s - target) / target + 2 * abs(p / s - prevalence)
                       + 0.25 * largest / s)
                if best_key is None or key < best_key:
                    best_key, best = key, np.array(chosen)
                if meets and s >= target:
                    break
        if best_key is not None and not best_key[0]:
            break
    return best


def inner_split(
    labels: np.ndarray, groups: np.ndarray, *, val_fraction: float, seed: int, what: str = "fold"
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, val) over the given training photos, grouped by subject: the
    validation subjects chosen by `_choose_val_groups` (seeded) to hold `val_fraction` of
    the photos. A subject whose photos hold both classes counts for both."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    _check_classes(labels, groups, 2, f"{what} (inner validation split)")
    codes, _ = pd.factorize(groups)
    size = np.bincount(codes)
    n_pos = np.bincount(codes, weights=(labels == 1).astype(float)).astype(int)
    val = _choose_val_groups(size, n_pos, target=val_fraction * len(labels), seed=seed)
    val_mask = np.isin(codes, val)
    assert_disjoint(groups, val_mask.astype(int))
    return ~val_mask, val_mask


def describe_inner_split(labels: np.ndarray, groups: np.ndarray, val_mask: np.ndarray,
                         *, val_fraction: float, unit: str = "subject") -> dict:
    """What fold.json records of an inner split: its size against the target, its subjects
    per class, a warning for each way it falls short (`degenerate` when any does), and
    notes (one subject holding most of it)."""
    labels, groups, val_mask = np.asarray(labels), np.asarray(groups), np.asarray(val_mask)
    share = float(val_mask.mean()) if len(val_mask) else float("nan")
    per_class = {c: int(pd.unique(groups[val_mask & (labels == c)]).size) for c in (0, 1)}
    train_class = {c: int(pd.unique(groups[~val_mask & (labels == c)]).size) for c in (0, 1)}
    sizes = pd.Series(groups[val_mask]).value_counts()
    warnings = []
    if not val_fraction / SHARE_TOLERANCE <= share <= val_fraction * SHARE_TOLERANCE:
        warnings.append(f"the inner validation split holds {share:.0%} of the training "
                        f"photos, not the {val_fraction:.0%} asked for (cv.inner_val_fraction)")
    for c, word in ((1, "positives"), (0, "negatives")):
        if per_class[c] < 2:
            warnings.append(f"its {word} come from {per_class[c]} {unit}(s): validation scores, "
                            f"threshold and recalibration rest on one {unit}")
        if train_class[c] < 2:
            warnings.append(f"inner training {word} come from {train_class[c]} {unit}(s)")
    notes = []
    if len(sizes) > 1 and sizes.iloc[0] > 0.5 * val_mask.sum():
        notes.append(f"one {unit} holds {sizes.iloc[0] / val_mask.sum():.0%} of its photos")
    return {"target_share": val_fraction, "val_share": share,
            "val_photos": int(val_mask.sum()), "train_photos": int((~val_mask).sum()),
            "val_subjects": int(len(sizes)), "val_subjects_with_positives": per_class[1],
            "val_subjects_with_negatives": per_class[0], "degenerate": bool(warnings),
            "warnings": warnings, "notes": notes}


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
