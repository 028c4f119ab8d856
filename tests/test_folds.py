import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posturescreen.study.folds import (
    FoldError,
    assert_disjoint,
    describe_inner_split,
    inner_split,
    outer_folds,
    shared_outer_folds,
)


@st.composite
def cohorts(draw):
    n_subjects = draw(st.integers(16, 80))
    photos = draw(st.lists(st.integers(1, 3), min_size=n_subjects, max_size=n_subjects))
    prevalence = draw(st.floats(0.2, 0.8))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    subject_label = (rng.random(n_subjects) < prevalence).astype(int)
    subject_label[:4] = [0, 0, 1, 1]
    subject_label[4:8] = [0, 1, 0, 1]
    groups = np.repeat(np.arange(n_subjects), photos)
    return subject_label[groups], groups.astype(str), seed


@settings(max_examples=40, deadline=None)
@given(cohorts(), st.integers(2, 4))
def test_outer_folds_are_disjoint_complete_and_stratified(cohort, k):
    y, groups, seed = cohort
    fold = outer_folds(y, groups, n_folds=k, seed=seed)
    assert set(fold) == set(range(k))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    # stratified: every fold holds both classes and its positive rate stays near the total
    overall = y.mean()
    for f in range(k):
        assert set(y[fold == f]) == {0, 1}
        assert abs(y[fold == f].mean() - overall) < 0.3


@settings(max_examples=40, deadline=None)
@given(cohorts())
def test_inner_split_is_subject_disjoint_with_both_classes(cohort):
    y, groups, seed = cohort
    train, val = inner_split(y, groups, val_fraction=0.2, seed=seed)
    assert not set(groups[train]) & set(groups[val])
    assert (train | val).all() and not (train & val).any()
    assert set(y[val]) == {0, 1} and set(y[train]) == {0, 1}


def test_folds_are_seeded():
    y = np.array([0, 1] * 20)
    g = np.arange(40).astype(str)
    assert (outer_folds(y, g, n_folds=4, seed=7) == outer_folds(y, g, n_folds=4, seed=7)).all()
    assert (outer_folds(y, g, n_folds=4, seed=7) != outer_folds(y, g, n_folds=4, seed=8)).any()


def test_too_few_subjects_and_one_class_are_errors():
    with pytest.raises(FoldError, match="only 1 subject"):
        outer_folds(np.array([1, 1, 0, 0, 0, 0, 0]), np.array(list("aabcdef")), n_folds=4, seed=0)
    with pytest.raises(FoldError, match="only one class"):
        outer_folds(np.zeros(10, int), np.arange(10), n_folds=4, seed=0)


def test_leave_site_out():
    y = np.array([0, 1, 0, 1, 0, 1])
    g = np.array(list("abcdef"))
    sites = np.array(["x", "x", "y", "y", "z", "z"])
    fold = outer_folds(y, g, n_folds=4, seed=0, scheme="leave_site_out", sites=sites)
    assert list(fold) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(FoldError, match="more than one site"):
        outer_folds(
            y,
            np.array(list("aacdef")),
            n_folds=4,
            seed=0,
            scheme="leave_site_out",
            sites=np.array(["x", "y", "y", "y", "z", "z"]),
        )
    with pytest.raises(FoldError, match="site column"):
        outer_folds(y, g, n_folds=4, seed=0, scheme="leave_site_out", sites=None)


def test_assert_disjoint_catches_leak():
    with pytest.raises(AssertionError, match="subject 'a'"):
        assert_disjoint(np.array(["a", "a", "b"]), np.array([0, 1, 1]))


def _paper_cells(n_workers: int, rng) -> pd.DataFrame:
    """Workers with (ch, nsp) in the paper's four cells, one to three photos each."""
    cells = [(0, 0), (1, 0), (0, 1), (1, 1)]
    rows = []
    for w in range(n_workers):
        ch, nsp = cells[w % 4]
        rows += [{"worker": f"W{w}", "ch": ch, "nsp": nsp}] * int(rng.integers(1, 4))
    return pd.DataFrame(rows)


def test_shared_folds_put_a_worker_in_one_fold_for_every_task():
    table = _paper_cells(80, np.random.default_rng(0))
    controls = (table.ch == 0) & (table.nsp == 0)
    labels = {"CH": pd.Series(1, index=table.index[table.ch == 1]),
              "NSP": pd.Series(1, index=table.index[table.nsp == 1])}
    for name in labels:
        labels[name] = pd.concat([labels[name], pd.Series(0, index=table.index[controls])]
                                 ).sort_index()
    fold = shared_outer_folds(labels, table.worker, n_folds=4, seed=1)
    assert set(fold.index) == set(labels["CH"].index) | set(labels["NSP"].index)
    assert_disjoint(table.worker[fold.index].to_numpy(), fold.to_numpy())
    for y in labels.values():  # each task stratified: its classes in every fold
        share = y.groupby(fold[y.index]).mean()
        assert len(share) == 4 and share.between(0.35, 0.8).all(), share
    # one task alone: exactly the per-task folds
    alone = shared_outer_folds({"CH": labels["CH"]}, table.worker, n_folds=4, seed=1)
    per_task = outer_folds(labels["CH"].to_numpy(), table.worker[labels["CH"].index].to_numpy(),
                           n_folds=4, seed=1)
    assert (alone.to_numpy() == per_task).all()


def test_shared_folds_refuse_a_fold_without_a_class(monkeypatch):
    import posturescreen.study.folds as F

    table = pd.DataFrame({"worker": [f"W{i}" for i in range(16)]})
    common = pd.Series([0, 1] * 8, index=table.index)
    rare = pd.Series([1, 0, 0, 0] * 4, index=table.index)
    # an assignment that spreads the common task's classes but puts every positive of the
    # rare task in folds 0 and 1
    planted = np.array([0, 1, 2, 3] * 2 + [1, 0, 3, 2] * 2)
    monkeypatch.setattr(F, "outer_folds", lambda *a, **k: planted)
    with pytest.raises(FoldError, match="task 'rare': fold 2 .* holds no positives"):
        shared_outer_folds({"common": common, "rare": rare}, table.worker, n_folds=4, seed=0)


def _sessions(sizes, positives):
    """Photos of sessions with these sizes and positives each (labels vary within one)."""
    groups = np.repeat([f"s{k}" for k in range(len(sizes))], sizes)
    labels = np.concatenate([[1] * p + [0] * (n - p) for n, p in zip(sizes, positives,
                                                                       strict=True)])
    return labels, groups


def test_inner_split_never_takes_a_giant_group_when_smaller_ones_exist():
    # a posturecoach training fold: one session holds half the photos
    sizes = [111, 34, 14, 11, 10, 8, 6, 5, 5, 4, 4, 3, 3, 1, 1, 1]
    positives = [80, 24, 5, 4, 4, 6, 3, 1, 3, 4, 4, 3, 3, 0, 1, 1]
    y, g = _sessions(sizes, positives)
    for seed in range(5):
        train, val = inner_split(y, g, val_fraction=0.2, seed=seed)
        assert "s0" not in set(g[val])
        info = describe_inner_split(y, g, val, val_fraction=0.2)
        assert 0.2 / 1.5 <= info["val_share"] <= 0.2 * 1.5
        assert info["val_subjects_with_positives"] >= 2
        assert info["val_subjects_with_negatives"] >= 2
        assert not info["degenerate"] and info["warnings"] == []


@settings(max_examples=40, deadline=None)
@given(cohorts())
def test_inner_split_holds_the_share_asked_with_two_subjects_of_each_class(cohort):
    y, groups, seed = cohort
    train, val = inner_split(y, groups, val_fraction=0.2, seed=seed)
    info = describe_inner_split(y, groups, val, val_fraction=0.2)
    assert 0.2 / 1.5 <= info["val_share"] <= 0.2 * 1.5
    assert info["val_subjects_with_positives"] >= 2
    assert info["val_subjects_with_negatives"] >= 2
    assert not info["degenerate"]


def test_an_inner_split_that_cannot_be_what_was_asked_says_so():
    # two sessions hold every negative: the validation split gets one of them
    y, g = _sessions([40, 40, 5, 5, 5, 5], [20, 20, 5, 5, 5, 5])
    train, val = inner_split(y, g, val_fraction=0.2, seed=0)
    assert set(y[val]) == {0, 1} and set(y[train]) == {0, 1}
    info = describe_inner_split(y, g, val, val_fraction=0.2, unit="session")
    assert info["degenerate"]
    assert any("negatives come from 1 session" in w for w in info["warnings"])
    with pytest.raises(FoldError, match="only 1 subject"):
        inner_split(*_sessions([40, 5, 5], [20, 5, 5]), val_fraction=0.2, seed=0)


def test_inner_split_is_seeded():
    y, g = _sessions([6] * 20, [3, 0, 6, 1] * 5)
    a = inner_split(y, g, val_fraction=0.2, seed=1)[1]
    assert (a == inner_split(y, g, val_fraction=0.2, seed=1)[1]).all()
    assert any((a != inner_split(y, g, val_fraction=0.2, seed=s)[1]).any() for s in (2, 3))
