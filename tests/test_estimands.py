"""The between-worker AUC and its pairs, calibration-in-the-large and slope with worker
bootstrap CIs, the cross-fitted choice of recalibration, and the worker level's label check —
each against a computation from its definition."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from posturescreen.stats.calibration import calibration_ci, calibration_measures
from posturescreen.stats.estimands import auc_estimands
from posturescreen.stats.levels import (
    Calibrator,
    choose_calibrator,
    label_agreement,
    level_predictions,
    log_loss,
    logit,
)
from posturescreen.stats.metrics import summarize
from posturescreen.stats.resampling import (
    between_cluster_auc,
    pair_counts,
    resample_weights,
    stratified_auc,
)


def _mixed_cohort(rng, n_clusters=30, folds=3):
    """Clusters (sessions) nested in folds, holding photos of both classes, tied scores."""
    cluster = np.repeat(np.arange(n_clusters), rng.integers(1, 7, n_clusters))
    fold = (cluster % folds)
    y = (rng.random(len(cluster)) < 0.3 + 0.4 * (cluster % 2)).astype(int)
    score = np.round(rng.normal(size=len(cluster)) + 0.8 * y + 0.3 * (cluster % 5), 1)
    return y, score, fold, cluster.astype(str)


def _definition(y, s, w, fold, cluster, *, between):
    """Σ w_i w_j ([s_i > s_j] + ½[s_i = s_j]) / Σ w_i w_j over positive i, negative j of one
    fold (and, between, of different clusters): an O(n²) loop."""
    num = den = 0.0
    for i in np.flatnonzero(y == 1):
        for j in np.flatnonzero(y == 0):
            if fold[i] != fold[j] or (between and cluster[i] == cluster[j]):
                continue
            pair = w[i] * w[j]
            num += pair * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
            den += pair
    return num / den if den else np.nan


def test_between_cluster_auc_equals_its_definition_with_and_without_resampling():
    rng = np.random.default_rng(3)
    y, s, fold, cluster = _mixed_cohort(rng)
    W = np.vstack([np.ones(len(y)), resample_weights(cluster, 4, seed=1)])
    fast = between_cluster_auc(y, s, W, strata=fold, clusters=cluster)
    within = stratified_auc(y, s, W, strata=fold)
    for b in range(len(W)):
        assert fast[b] == pytest.approx(_definition(y, s, W[b], fold, cluster, between=True),
                                        rel=1e-12)
        assert within[b] == pytest.approx(_definition(y, s, W[b], fold, cluster,
                                                      between=False), rel=1e-12)
    assert not np.allclose(fast, within)  # the clusters hold both classes: it matters


def test_pair_counts_from_their_definition():
    rng = np.random.default_rng(4)
    y, _, fold, cluster = _mixed_cohort(rng)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    same_fold = sum(fold[i] == fold[j] for i in pos for j in neg)
    between = sum(fold[i] == fold[j] and cluster[i] != cluster[j] for i in pos for j in neg)
    assert pair_counts(y, strata=fold, clusters=cluster) == {
        "total": len(pos) * len(neg), "within_fold": same_fold, "between_cluster": between}


def test_between_equals_within_when_every_cluster_has_one_label():
    rng = np.random.default_rng(5)
    cluster = np.repeat(np.arange(40), 2)
    y = (cluster % 2).astype(int)
    s = rng.normal(size=80) + y
    fold = cluster % 4
    W = resample_weights(cluster.astype(str), 20, seed=0)
    np.testing.assert_allclose(between_cluster_auc(y, s, W, strata=fold, clusters=cluster),
                               stratified_auc(y, s, W, strata=fold))


def _levels(rng):
    y, s, fold, cluster = _mixed_cohort(rng, n_clusters=40)
    photo = pd.DataFrame({"task": "T", "model": "m", "fold": fold, "subject_id": cluster,
                          "label": y, "prob": 1 / (1 + np.exp(-s)), "pred": (s > 0.5) * 1})
    return {"photo": photo}


def test_estimands_share_the_metrics_resamples_and_state_their_pairs():
    levels = _levels(np.random.default_rng(6))
    kw = {"subject_column": "subject_id", "n_resamples": 300, "seed": 2}
    table = auc_estimands(levels, **kw).set_index("estimand")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, _ = summarize(levels, **kw, stratified_auc=True)
    auc = metrics[(metrics.metric == "AUC") & (metrics.ci_kind == "bootstrap")].iloc[0]
    # the within-fold AUC is the metrics' AUC, its CI drawn from the same resamples
    assert table.at["within_fold", "auc"] == pytest.approx(auc.estimate, rel=1e-12)
    assert (table.at["within_fold", "ci_low"], table.at["within_fold", "ci_high"]) == \
        pytest.approx((auc.ci_low, auc.ci_high), rel=1e-12)
    g = levels["photo"]
    pairs = pair_counts(g.label, strata=g.fold, clusters=g.subject_id)
    assert table.at["between_workers", "pairs"] == pairs["between_cluster"]
    assert table.at["between_workers", "pairs_share"] == pairs["between_cluster"] / pairs["total"]
    assert table.at["between_workers", "ci_low"] <= table.at["between_workers", "auc"] \
        <= table.at["between_workers", "ci_high"]


def test_calibration_measures_match_statsmodels_weighted_fits():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 300)
    y = (rng.random(300) < p**1.5).astype(float)
    w = rng.integers(0, 3, 300).astype(float)
    z = logit(p)
    citl, slope, brier = calibration_measures(y, p, w[None, :])[0]
    joint = sm.GLM(y, sm.add_constant(z), family=sm.families.Binomial(),
                   freq_weights=w).fit(tol=1e-12)
    offset = sm.GLM(y, np.ones((300, 1)), family=sm.families.Binomial(), offset=z,
                    freq_weights=w).fit(tol=1e-12)
    assert slope == pytest.approx(joint.params[1], rel=1e-6)
    assert citl == pytest.approx(offset.params[0], rel=1e-6)
    assert citl != pytest.approx(joint.params[0], abs=0.05)  # not the joint fit's intercept
    assert brier == pytest.approx(np.sum(w * (p - y) ** 2) / w.sum(), rel=1e-12)


def test_calibration_slope_fits_scores_at_the_clipped_extremes():
    """Plain Newton overshoots here (many probabilities at 1e-7 and 1 − 1e-7)."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 8, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z / 4))).astype(float)
    p = np.clip(1 / (1 + np.exp(-z)), 0, 1)
    slope = calibration_measures(y, p, np.ones((1, 400)))[0, 1]
    ref = sm.GLM(y, sm.add_constant(logit(p)), family=sm.families.Binomial()).fit(tol=1e-12)
    assert slope == pytest.approx(ref.params[1], rel=1e-6)


def test_no_fit_is_counted_never_a_crash():
    p = np.linspace(0.05, 0.95, 40)
    separated = (p > 0.5).astype(float)
    citl, slope, _ = calibration_measures(separated, p, np.ones((1, 40)))[0]
    assert np.isfinite(citl) and np.isnan(slope)  # the slope runs off to infinity
    out = calibration_ci(np.r_[separated], p, groups=np.arange(40), n_resamples=50, seed=0)
    assert out["slope"][3] == 50 and np.isnan(out["slope"][1])
    assert np.isnan(calibration_measures(np.ones(40), p, np.ones((1, 40)))[0, 0])


def test_recalibration_needs_three_validation_workers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    cal, losses = choose_calibrator(y, rng.uniform(0.1, 0.9, 60), np.repeat(["a", "b"], 30))
    assert cal.method == "none" and losses == {} and "too few" in cal.note
    np.testing.assert_array_equal(cal.apply(np.array([0.2, 0.7])), [0.2, 0.7])


def _scores(rng, n_workers, *, shift):
    worker = np.repeat(np.arange(n_workers), 2)
    true_logit = rng.normal(0, 1.5, n_workers)[worker]
    y = (rng.random(len(worker)) < 1 / (1 + np.exp(-true_logit))).astype(int)
    return y, 1 / (1 + np.exp(-(true_logit + shift))), worker.astype(str)


def test_a_shifted_score_is_recalibrated_a_calibrated_one_is_not():
    rng = np.random.default_rng(11)
    y, p, g = _scores(rng, 150, shift=2.0)  # like a class-weighted loss on a rare class
    cal, losses = choose_calibrator(y, p, g)
    assert cal.method in ("intercept", "platt")
    assert losses[cal.method] < losses["none"] - 0.02
    assert log_loss(y, cal.apply(p)) < log_loss(y, p)
    # calibrated scores: mostly left alone, and any change chosen by chance buys little
    chosen = [choose_calibrator(*_scores(rng, 150, shift=0.0)) for _ in range(6)]
    assert sum(c.method == "none" for c, _ in chosen) >= 4
    assert all(c.note.startswith("not recalibrated") for c, _ in chosen if c.method == "none")
    assert all(lo[c.method] > lo["none"] - 0.01 for c, lo in chosen)


def test_intercept_shift_is_the_offset_maximum_likelihood():
    rng = np.random.default_rng(8)
    y, p, _ = _scores(rng, 100, shift=1.0)
    cal = Calibrator.shift(y, p)
    ref = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(),
                 offset=logit(p)).fit(tol=1e-12)
    assert cal.slope == 1.0 and cal.intercept == pytest.approx(ref.params[0], rel=1e-6)


def test_label_agreement_finds_workers_holding_both_classes():
    frame = pd.DataFrame({"task": ["A"] * 6 + ["B"] * 2, "row": [1, 2, 3, 4, 5, 6, 1, 2],
                          "s": ["w1", "w1", "w2", "w2", "w3", "w3", "w1", "w1"],
                          "label": [1, 0, 1, 1, 0, 0, 1, 1]})
    out = label_agreement(pd.concat([frame, frame]), "s").set_index("task")  # two models
    assert out.at["A", "workers"] == 3 and out.at["A", "mixed"] == 1
    assert out.at["A", "examples"] == "w1" and out.at["A", "mixed_photos_share"] == 2 / 6
    assert out.at["B", "mixed"] == 0


class _Youden:
    rule, estimate, value = "youden", "binormal", 0.5


def _demo_like_folds(seed):
    """Four fold models whose raw probabilities are shifted (as the class-weighted loss
    leaves them) by a fold-specific amount, validation splits of ~20% of the training
    workers."""
    rng = np.random.default_rng(seed)
    n = 160
    y_w = rng.random(n) < 0.5
    fold_w = rng.integers(0, 4, n)
    rows = [(i, int(y_w[i]), fold_w[i], 0.8 * (2 * y_w[i] - 1) + rng.normal(0, 1.2))
            for i in range(n) for _ in range(1 + i % 2)]
    df = pd.DataFrame(rows, columns=["worker", "label", "fold", "z"])
    test, val = [], []
    for k in range(4):
        shift, scale = 0.8 + rng.normal(0, 0.5), np.exp(rng.normal(0, 0.3))
        train = df[df.fold != k]
        held = rng.choice(train.worker.unique(), int(0.2 * train.worker.nunique()), False)
        for frame, out in ((df[df.fold == k], test), (train[train.worker.isin(held)], val)):
            out.append(pd.DataFrame({
                "task": "T", "model": "m", "fold": k, "row": frame.index,
                "subject_id": frame.worker.astype(str), "image": "x", "label": frame.label,
                "prob": 1 / (1 + np.exp(-(scale * frame.z + shift)))}))
    return pd.concat(test), pd.concat(val)


@pytest.mark.parametrize("seed", range(4))
def test_recalibration_does_not_worsen_the_calibration_slope(seed):
    """On demo-like folds: the pooled out-of-fold slope after recalibration is no further
    from 1 than its before-interval allows (the interval of log slope, half its width), and
    calibration-in-the-large moves towards 0 wherever a fold was recalibrated."""
    from posturescreen.stats.calibration import calibration_table

    test, val = _demo_like_folds(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        photo, worker, cal = level_predictions(test, val, subject_column="subject_id",
                                               rule=_Youden())
        table = calibration_table({"photo": photo}, subject_column="subject_id",
                                  n_resamples=400, seed=0).set_index("scores")
    if (cal.method == "none").all():
        assert cal.note.str.startswith("not recalibrated").all()
        return
    before, after = table.loc["raw"], table.loc["recalibrated"]
    half = (np.log(before.slope_high) - np.log(before.slope_low)) / 2
    assert abs(np.log(after.slope)) <= abs(np.log(before.slope)) + half
    assert abs(after.citl) < abs(before.citl)
