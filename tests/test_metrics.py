import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from posturescreen.stats.links import logit, sigmoid
from posturescreen.stats.metrics import (
    auc_score,
    binary_metrics,
    binormal_youden_threshold,
    bootstrap_ci,
    format_estimate,
    t_interval,
    youden_threshold,
)
from posturescreen.stats.resampling import METRICS, resample_weights, weighted_metrics


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    prob = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    prob[:20] = 0.5  # ties
    pred = (prob >= 0.5).astype(int)
    m = binary_metrics(y, prob, pred)
    assert m["AUC"] == pytest.approx(roc_auc_score(y, prob))
    assert m["ACC"] == pytest.approx(accuracy_score(y, pred))
    assert m["Sen"] == pytest.approx(recall_score(y, pred))
    assert m["Spe"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["PPV"] == pytest.approx(precision_score(y, pred))
    assert m["NPV"] == pytest.approx(precision_score(1 - y, 1 - pred))
    assert m["F1"] == pytest.approx(f1_score(y, pred))


def test_binary_metrics_hand_computed():
    # tp=2, fn=1, tn=3, fp=1
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 0, 1])
    prob = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.4, 0.6])
    m = binary_metrics(y, prob, pred)
    assert m["ACC"] == pytest.approx(5 / 7)
    assert m["Sen"] == pytest.approx(2 / 3)
    assert m["Spe"] == pytest.approx(3 / 4)
    assert m["PPV"] == pytest.approx(2 / 3)
    assert m["NPV"] == pytest.approx(3 / 4)
    assert m["F1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # pairs (pos, neg) ordered correctly: 0.9, 0.8 beat all 4; 0.3 beats 0.2 and 0.1 -> 10/12
    assert m["AUC"] == pytest.approx(10 / 12)


def test_one_class_gives_nan_not_crash():
    y = np.ones(5, dtype=int)
    m = binary_metrics(y, np.linspace(0, 1, 5), np.ones(5))
    assert np.isnan(m["AUC"]) and np.isnan(m["Spe"]) and m["Sen"] == 1.0
    assert np.isnan(auc_score(np.zeros(3), np.zeros(3)))


def test_t_interval_known_numbers():
    # values 0.7, 0.8, 0.9, 0.8: mean 0.8, sd 0.08165, t(0.975, 3) = 3.18245
    mean, lo, hi = t_interval(np.array([0.7, 0.8, 0.9, 0.8]))
    half = 3.182446305 * 0.0816496581 / 2
    assert mean == pytest.approx(0.8)
    assert lo == pytest.approx(0.8 - half, abs=1e-6)
    assert hi == pytest.approx(0.8 + half, abs=1e-6)


def test_t_interval_drops_nan_folds_and_clips():
    mean, lo, hi = t_interval(np.array([0.99, np.nan, 0.5, 0.98]), bounds=(0, 1))
    assert mean == pytest.approx((0.99 + 0.5 + 0.98) / 3)
    assert hi == 1.0 and lo < mean
    assert np.isnan(t_interval(np.array([0.5]))[1])


def _cohort(n_subjects, rng):
    """Two photos per subject sharing label and score (a worker's photos are alike)."""
    groups = np.repeat(np.arange(n_subjects), 2)
    y = np.repeat(rng.integers(0, 2, n_subjects), 2)
    prob = np.repeat(np.clip(0.4 + 0.2 * y[::2] + rng.normal(0, 0.25, n_subjects), 0, 1), 2)
    return y, prob, (prob >= 0.5).astype(int), groups


def test_bootstrap_contains_estimate_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400):
        y, p, d, g = _cohort(n, rng)
        ci = bootstrap_ci(y, p, d, groups=g, n_resamples=400, seed=3)
        est = binary_metrics(y, p, d)
        for name, (lo, hi) in ci.items():
            assert lo <= est[name] <= hi, name
        widths.append(ci["AUC"][1] - ci["AUC"][0])
    assert widths[1] < widths[0] * 0.5  # about 1/sqrt(10) expected


def test_bootstrap_is_seeded_and_resamples_subjects():
    rng = np.random.default_rng(5)
    y, p, d, g = _cohort(30, rng)
    assert bootstrap_ci(y, p, d, groups=g, n_resamples=100, seed=1) == bootstrap_ci(
        y, p, d, groups=g, n_resamples=100, seed=1
    )
    # a worker's two photos are not independent evidence: photo-level resampling would
    # pretend they are and give a narrower interval
    ci_subject = bootstrap_ci(y, p, d, groups=g, n_resamples=500, seed=1)["AUC"]
    ci_photo = bootstrap_ci(y, p, d, groups=np.arange(len(y)), n_resamples=500, seed=1)["AUC"]
    assert ci_subject[1] - ci_subject[0] > ci_photo[1] - ci_photo[0]


def test_bootstrap_single_class_resamples_warn():
    y = np.array([1, 0, 0, 0, 0, 0])
    p = np.linspace(0, 1, 6)
    with pytest.warns(UserWarning, match="single class"):
        ci = bootstrap_ci(y, p, (p > 0.5).astype(int), groups=np.arange(6), n_resamples=200, seed=0)
    assert all(np.isfinite(ci["ACC"]))


def test_format_estimate():
    assert format_estimate(0.782, 0.770, 0.793) == "0.782 (0.770–0.793)"
    assert format_estimate(float("nan"), 0, 1) == "n/a"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert format_estimate(0.5, float("nan"), float("nan")) == "0.500"


def test_youden_threshold_is_the_midpoint_of_the_optimal_interval():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    # J = 2/3 for any threshold in (0.35, 0.8] and in (0.2, 0.3]; midpoints 0.575 and 0.25;
    # the tie goes to the one nearest 0.5
    assert youden_threshold(y, p) == pytest.approx(0.575)
    assert ((p >= youden_threshold(y, p)) == (p >= 0.8)).all()
    # perfect separation: anywhere in (0.2, 0.7]; the midpoint favours neither class
    assert youden_threshold(
        np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])
    ) == pytest.approx(0.45)
    with pytest.warns(UserWarning, match="one class"):
        assert youden_threshold(np.ones(3), np.array([0.2, 0.5, 0.9])) == 0.5


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 2.0])
def test_binormal_youden_cutoff_maximises_j_of_equal_variance_normals(shift):
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(-1, 1.5, 4000), rng.normal(-1 + shift, 1.5, 4000)
    y, p = np.r_[np.zeros(4000), np.ones(4000)], sigmoid(np.r_[z0, z1])
    cut = float(logit(binormal_youden_threshold(y, p)))
    assert cut == pytest.approx((z0.mean() + z1.mean()) / 2, abs=1e-9)
    if shift > 0:  # the cutoff that maximises J of the population normals, numerically
        best = optimize.minimize_scalar(
            lambda c: stats.norm.cdf(c, -1 + shift, 1.5) - stats.norm.cdf(c, -1, 1.5),
            bounds=(-1, -1 + shift), method="bounded").x
        assert cut == pytest.approx(best, abs=0.1)


def test_binormal_youden_cutoff_rarely_puts_a_test_fold_on_one_side():
    # a weak model, validation splits of 20 photos: the empirical optimum often sits at an
    # end of the score range, and then nearly every test photo falls on one side
    rng = np.random.default_rng(0)
    y, y_test = np.r_[np.zeros(10), np.ones(10)], np.r_[np.zeros(200), np.ones(200)]
    one_sided = {"empirical": 0, "binormal": 0}
    for _ in range(400):
        p = sigmoid(rng.normal(0, 1, 20) + 0.3 * y)
        p_test = sigmoid(rng.normal(0, 1, 400) + 0.3 * y_test)
        for name, rule in (("empirical", youden_threshold),
                           ("binormal", binormal_youden_threshold)):
            t = rule(y, p)
            sen, spe = (p_test[y_test == 1] >= t).mean(), (p_test[y_test == 0] < t).mean()
            one_sided[name] += bool((sen > 0.9 and spe < 0.2) or (spe > 0.9 and sen < 0.2))
    assert one_sided["empirical"] >= 20  # 26 of 400 measured
    assert one_sided["binormal"] * 3 < one_sided["empirical"]  # 0 of 400 measured
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    p = np.array([.10, .41, .12, .43, .44, .45, .46, .47, .48, .49, .50, .42])
    # the positives score lower on average (no cutoff has J > 0): still the midpoint
    y_rev = 1 - y
    z = logit(p)
    mid = (z[y_rev == 0].mean() + z[y_rev == 1].mean()) / 2
    assert binormal_youden_threshold(y_rev, p) == pytest.approx(float(sigmoid(mid)))
    # fewer than two photos of a class: the empirical cutoff
    y1 = np.array([0, 0, 0, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.9])
    assert binormal_youden_threshold(y1, p1) == youden_threshold(y1, p1)


def test_vectorised_bootstrap_equals_a_loop_over_resamples():
    rng = np.random.default_rng(2)
    y, p, d, g = _cohort(60, rng)
    W = resample_weights(g, 50, seed=9)
    fast = weighted_metrics(y, p, d, W=W)
    codes = pd.factorize(g)[0]
    for b in range(50):
        idx = np.repeat(np.arange(len(y)), W[b].astype(int))
        slow = binary_metrics(y[idx], p[idx], d[idx])
        assert fast[b] == pytest.approx([slow[m] for m in METRICS], nan_ok=True)
    assert (W[:, codes == codes[0]] == W[:, [0]]).all()  # a worker's photos go together


def test_fold_stratified_auc_counts_pairs_within_folds_only():
    # two folds, each ranking perfectly, on different scales: pooled < 1, stratified = 1
    y = np.array([0, 1, 0, 1])
    p = np.array([0.6, 0.9, 0.1, 0.4])
    fold = np.array([0, 0, 1, 1])
    assert binary_metrics(y, p, p > 0.5)["AUC"] == pytest.approx(0.75)
    assert binary_metrics(y, p, p > 0.5, strata=fold)["AUC"] == pytest.approx(1.0)
